//! Durability: checksums on disk, crash (SIGKILL) recovery, group commit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, SnapContext, NOSNAP};
use quarry_store::{Embedded, Store, StoreOptions};

fn pattern(i: u64) -> Vec<u8> {
    pattern_len(i, 4096)
}

fn pattern_len(i: u64, len: usize) -> Vec<u8> {
    let tag = format!("<quarry-ack-{i:08}>");
    tag.as_bytes().iter().copied().cycle().take(len).collect()
}

/// Crash-test writes: big enough that the acknowledged ones span several
/// write-ahead-log cycles (checkpoints and restarts at offset 0).
const CRASH_IO: u64 = 16 << 10;
const CRASH_ACKS: usize = 1200;

fn read(s: &Store, oid: &ObjectId, off: u64, len: u64) -> quarry_rados::Result<Vec<u8>> {
    let r = s.apply(&OpRequest::new(oid.clone()).op(Op::Read { off, len }))?;
    match &r.outputs[0] {
        OpOutput::Data(d) => Ok(d.to_vec()),
        o => panic!("{o:?}"),
    }
}

#[test]
fn flipped_byte_on_disk_is_eio_naming_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let oid = ObjectId::with_namespace(3, "ns", "victim");
    let marker: Vec<u8> = b"CORRUPT-ME-PLEASE:"
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    {
        let s = Store::open(dir.path()).unwrap();
        s.apply(&OpRequest::new(oid.clone()).op(Op::Write {
            off: 4096,
            data: Bytes::from(marker.clone()),
        }))
        .unwrap();
        s.apply(
            &OpRequest::new(ObjectId::new(3, "bystander")).op(Op::Write {
                off: 0,
                data: Bytes::from_static(b"fine"),
            }),
        )
        .unwrap();
    }
    // The block lives in a data log segment: flip one byte of it.
    let mut found = 0;
    for e in std::fs::read_dir(dir.path().join("log")).unwrap() {
        let path = e.unwrap().path();
        let mut file = std::fs::read(&path).unwrap();
        let needle = &marker[..64];
        let hits: Vec<usize> = file
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        for h in &hits {
            file[h + 100] ^= 0x01;
        }
        found += hits.len();
        std::fs::write(&path, &file).unwrap();
    }
    assert!(found > 0, "pattern not found in the data log");

    let s = Store::open(dir.path()).unwrap();
    let e = read(&s, &oid, 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    assert!(e.context.contains("victim"), "error names the object: {e}");
    assert!(e.context.contains("block 1"), "error names the block: {e}");
    // Reads not touching the block, and other objects, still work.
    assert_eq!(read(&s, &oid, 0, 4096).unwrap(), vec![0u8; 4096]);
    assert_eq!(
        read(&s, &ObjectId::new(3, "bystander"), 0, 0).unwrap(),
        b"fine"
    );
    // Sparse reads check too; and a partial overwrite must not launder it.
    let e = s
        .apply(&OpRequest::new(oid.clone()).op(Op::SparseRead { off: 0, len: 0 }))
        .unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    let e = s
        .apply(&OpRequest::new(oid.clone()).op(Op::Write {
            off: 4100,
            data: Bytes::from_static(b"x"),
        }))
        .unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    // A full overwrite of the block repairs it.
    s.apply(&OpRequest::new(oid.clone()).op(Op::Write {
        off: 4096,
        data: Bytes::from(vec![1u8; 4096]),
    }))
    .unwrap();
    assert_eq!(read(&s, &oid, 4096, 0).unwrap(), vec![1u8; 4096]);
}

const CRASH_ENV: &str = "QUARRY_STORE_CRASH_DIR";
/// If set: the child uses data-log segments of this many bytes and
/// overwrites the same 4 objects, so compaction runs when it is killed.
const CRASH_SEG_ENV: &str = "QUARRY_STORE_CRASH_SEG";
const COMPACT_OBJECTS: u64 = 4;
const THREADS: u64 = 4;
/// Most acknowledged writes the compaction crash test waits for
/// compaction to have copied something before it gives up.
const COMPACT_ACKS_MAX: usize = 40_000;

/// The slot (object * 64 + 16 KiB block) write `i` of the compaction
/// crash child overwrites: a fixed pseudo-random order, so that overwrites
/// leave garbage scattered over many segments and compaction has live
/// blocks to move (in index order they were a sweep, which frees whole
/// segments by itself and which the cleaner rightly leaves alone). Each
/// writer thread (`i % THREADS`) has slots of its own, so the writes to a
/// slot are applied in the order of their numbers.
fn compact_slot(i: u64) -> u64 {
    let (t, k) = (i % THREADS, i / THREADS);
    let per_thread = COMPACT_OBJECTS * 64 / THREADS;
    t + THREADS * ((k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % per_thread)
}

/// Child half of `acknowledged_writes_survive_sigkill`: writes forever,
/// printing each acknowledged write. Does nothing when run normally.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let seg = std::env::var(CRASH_SEG_ENV)
        .ok()
        .map(|v| v.parse::<u64>().unwrap());
    let dir = std::path::Path::new(&dir);
    let s = Arc::new(match seg {
        Some(segment_bytes) => Store::open_with(
            dir,
            StoreOptions {
                segment_bytes,
                ..Default::default()
            },
        )
        .unwrap(),
        None => Store::open(dir).unwrap(),
    });
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, out) = (s.clone(), out.clone());
            std::thread::spawn(move || {
                for k in 0.. {
                    let i = t + THREADS * k;
                    let slot = match seg {
                        Some(_) => compact_slot(i),
                        None => i,
                    };
                    let oid = ObjectId::new(1, format!("o{}", slot / 64));
                    s.apply(&OpRequest::new(oid).op(Op::Write {
                        off: (slot % 64) * CRASH_IO,
                        data: Bytes::from(pattern_len(i, CRASH_IO as usize)),
                    }))
                    .unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {i}").unwrap();
                    if seg.is_some() && k % 16 == 0 {
                        writeln!(o, "COMPACTED {}", s.compacted_bytes()).unwrap();
                    }
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Run the crash child (with `seg`: small segments and overwrites), kill
/// it with SIGKILL after `CRASH_ACKS` acknowledged writes (with `seg`:
/// and once its compaction copied data, see `COMPACT_ACKS_MAX`); the
/// acked ones and the bytes compaction had copied by then.
fn run_and_kill(dir: &std::path::Path, seg: Option<u64>) -> (Vec<u64>, u64) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, dir);
    if let Some(seg) = seg {
        cmd.env(CRASH_SEG_ENV, seg.to_string());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut compacted = 0u64;
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("COMPACTED ") {
            compacted = compacted.max(n.parse::<u64>().unwrap());
        }
        if let Some(i) = line.strip_prefix("ACK ") {
            acked.push(i.parse::<u64>().unwrap());
            // With compaction: killed once it has copied blocks and let
            // the first segment go (on a loaded machine the first copy
            // can come well before the first segment is reclaimed).
            let compacting = seg.is_none()
                || (compacted > 0 && !dir.join("log").join("0000000000.qseg").exists());
            if (acked.len() >= CRASH_ACKS && compacting) || acked.len() >= COMPACT_ACKS_MAX {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no clean shutdown of anything.
    child.wait().unwrap();
    assert!(acked.len() >= CRASH_ACKS, "child stopped early");
    (acked, compacted)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, _) = run_and_kill(dir.path(), None);
    let s = Store::open(dir.path()).unwrap();
    for &i in &acked {
        let oid = ObjectId::new(1, format!("o{}", i / 64));
        assert!(
            read(&s, &oid, (i % 64) * CRASH_IO, CRASH_IO).unwrap()
                == pattern_len(i, CRASH_IO as usize),
            "acknowledged write {i} lost"
        );
    }
    // The store is fully usable after recovery.
    s.apply(&OpRequest::new(ObjectId::new(1, "after")).op(Op::Create { exclusive: true }))
        .unwrap();
}

#[test]
fn acknowledged_writes_survive_sigkill_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 1 << 20;
    let (acked, compacted) = run_and_kill(dir.path(), Some(seg));
    eprintln!(
        "killed after {} acknowledged writes, {} KiB copied by compaction",
        acked.len(),
        compacted >> 10
    );
    // Killed while compacting: it had copied live blocks (a test whose
    // compaction never ran would prove nothing about crashes during it).
    assert!(
        compacted > 0,
        "compaction copied nothing in {} acknowledged writes",
        acked.len()
    );
    // The log was rolled and segments were deleted.
    let first = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .min()
        .unwrap();
    assert_ne!(first, "0000000000.qseg", "no segment was ever reclaimed");
    let s = Store::open_with(
        dir.path(),
        StoreOptions {
            segment_bytes: seg,
            ..Default::default()
        },
    )
    .unwrap();
    // Each slot holds its newest acknowledged write, or a newer one that
    // was durable but not yet acknowledged; never an older one or a mix.
    let mut newest = std::collections::HashMap::new();
    for &i in &acked {
        let e = newest.entry(compact_slot(i)).or_insert(i);
        *e = (*e).max(i);
    }
    for (&slot, &want) in &newest {
        let oid = ObjectId::new(1, format!("o{}", slot / 64));
        let got = read(&s, &oid, (slot % 64) * CRASH_IO, CRASH_IO).unwrap();
        let tag = String::from_utf8_lossy(&got[..21]).to_string();
        let j: u64 = tag
            .strip_prefix("<quarry-ack-")
            .and_then(|t| t.strip_suffix('>'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("slot {slot}: unexpected content {tag:?}"));
        assert!(
            j >= want && compact_slot(j) == slot,
            "slot {slot}: write {j}, acked {want}"
        );
        assert!(
            got == pattern_len(j, CRASH_IO as usize),
            "slot {slot}: torn write {j}"
        );
    }
    s.apply(&OpRequest::new(ObjectId::new(1, "after")).op(Op::Create { exclusive: true }))
        .unwrap();
}

#[test]
fn group_commit_many_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut versions = Vec::new();
                for k in 0..25u64 {
                    let i = t * 1000 + k;
                    let r = s
                        .apply(&OpRequest::new(ObjectId::new(1, "shared")).op(Op::Write {
                            off: i * 4096,
                            data: Bytes::from(pattern(i)),
                        }))
                        .unwrap();
                    versions.push(r.version);
                }
                versions
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "every write got its own version");
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    for t in 0..16u64 {
        for k in 0..25u64 {
            let i = t * 1000 + k;
            let got = read(&s, &ObjectId::new(1, "shared"), i * 4096, 4096).unwrap();
            assert_eq!(got, pattern(i));
        }
    }
    assert_eq!(s.pool_stat(1).unwrap().num_bytes, 400 * 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_async_writers() {
    let emb = Embedded::open_memory().unwrap();
    let r = emb.client();
    let p = r.pool_create("rbd").await.unwrap();
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.operate(
                    OpRequest::new(ObjectId::new(p, format!("obj{}", i % 8))).op(Op::Write {
                        off: i * 4096,
                        data: Bytes::from(pattern(i)),
                    }),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..64u64 {
        let r = r
            .operate(
                OpRequest::new(ObjectId::new(p, format!("obj{}", i % 8))).op(Op::Read {
                    off: i * 4096,
                    len: 4096,
                }),
            )
            .await
            .unwrap();
        assert_eq!(r.outputs[0], OpOutput::Data(Bytes::from(pattern(i))));
    }
    assert_eq!(r.list_objects(p, None).await.unwrap().len(), 8);
}

#[test]
fn apply_with_sys_is_atomic_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let w = |data: &'static [u8]| {
            OpRequest::new(ObjectId::new(1, "o")).op(Op::Write {
                off: 0,
                data: Bytes::from_static(data),
            })
        };
        s.apply_with_sys(&w(b"one"), vec![("log.1".into(), Some(b"a".to_vec()))])
            .unwrap();
        assert_eq!(s.sys_get("log.1").unwrap(), Some(b"a".to_vec()));
        // A failing request applies none of its sys updates.
        let bad = w(b"two").op(Op::RmXattr("missing".into()));
        let e = s
            .apply_with_sys(&bad, vec![("log.2".into(), Some(b"b".to_vec()))])
            .unwrap_err();
        assert_eq!(e.errno, Errno::ENODATA);
        assert_eq!(s.sys_get("log.2").unwrap(), None);
        s.apply_with_sys(
            &w(b"three"),
            vec![
                ("log.1".into(), None),
                ("log.3".into(), Some(b"c".to_vec())),
            ],
        )
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.sys_get("log.1").unwrap(), None);
    assert_eq!(s.sys_get("log.3").unwrap(), Some(b"c".to_vec()));
    assert_eq!(read(&s, &ObjectId::new(1, "o"), 0, 0).unwrap(), b"three");
}

// ---------------------------------------------------------------- extents under a crash

const EXT_CRASH_ENV: &str = "QUARRY_STORE_EXT_CRASH_DIR";
const EXT_OBJ_BLOCKS: u64 = 1024;
const EXT_ACKS: u64 = 250;

/// Write `i` of the extent crash test: (object, first block, blocks).
/// Sizes from one block to several extents (64 blocks each), at random
/// places, so later writes split, trim and cover earlier extents; and
/// whole-object overwrites of the fragmented objects (which delete
/// hundreds of small extents' index entries in one request).
fn ext_write(i: u64) -> (u64, u64, u64) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    let n = [1, 2, 7, 64, 300, EXT_OBJ_BLOCKS][(x % 6) as usize];
    let first = if n == EXT_OBJ_BLOCKS {
        0
    } else {
        (x >> 8) % (EXT_OBJ_BLOCKS - n)
    };
    (i % 2, first, n)
}

/// Content of block `blk` as written by write `i`: tagged with both.
fn ext_block(i: u64, blk: u64) -> Vec<u8> {
    let tag = format!("<ext-{i:08}-{blk:06}>");
    tag.as_bytes().iter().copied().cycle().take(4096).collect()
}

/// Child half of `extents_survive_sigkill`: one writer (so writes are
/// ordered), small segments so compaction moves trimmed extents too.
#[test]
fn ext_crash_child() {
    let Ok(dir) = std::env::var(EXT_CRASH_ENV) else {
        return;
    };
    let s = Store::open_with(
        std::path::Path::new(&dir),
        StoreOptions {
            segment_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let mut out = std::io::stdout();
    for i in 0.. {
        let (obj, first, n) = ext_write(i);
        let data: Vec<u8> = (first..first + n).flat_map(|b| ext_block(i, b)).collect();
        s.apply(
            &OpRequest::new(ObjectId::new(1, format!("x{obj}"))).op(Op::Write {
                off: first * 4096,
                data: Bytes::from(data),
            }),
        )
        .unwrap();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn extents_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ext_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EXT_CRASH_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().starts_with("ACK ") {
            acked += 1;
            if acked >= EXT_ACKS {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked >= EXT_ACKS, "child stopped early");
    // Writes 0..acked are acknowledged; `acked` itself (and, as the child
    // may have gone on meanwhile, later ones) may or may not be there, but
    // each wholly or not at all.
    let s = Store::open_with(
        dir.path(),
        StoreOptions {
            segment_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    for obj in 0..2u64 {
        let oid = ObjectId::new(1, format!("x{obj}"));
        let got = read(&s, &oid, 0, EXT_OBJ_BLOCKS * 4096).unwrap();
        // Newest acknowledged writer of each block.
        let mut want: Vec<Option<u64>> = vec![None; EXT_OBJ_BLOCKS as usize];
        for i in 0..acked {
            let (o, first, n) = ext_write(i);
            if o == obj {
                for b in first..first + n {
                    want[b as usize] = Some(i);
                }
            }
        }
        let mut seen_unacked = std::collections::BTreeMap::<u64, u64>::new();
        for b in 0..EXT_OBJ_BLOCKS {
            let blk = got.get((b * 4096) as usize..((b + 1) * 4096) as usize);
            let blk = blk.map(<[u8]>::to_vec).unwrap_or_default();
            if blk.iter().all(|&x| x == 0) {
                assert!(
                    want[b as usize].is_none(),
                    "object {obj} block {b}: acknowledged write lost"
                );
                continue;
            }
            let tag = String::from_utf8_lossy(&blk[..21]).to_string();
            let j: u64 = tag
                .strip_prefix("<ext-")
                .and_then(|t| t.get(..8))
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("object {obj} block {b}: unexpected content {tag:?}"));
            assert!(
                blk == ext_block(j, b),
                "object {obj} block {b}: torn or misplaced block of write {j}"
            );
            let (o, first, n) = ext_write(j);
            assert!(
                o == obj && (first..first + n).contains(&b),
                "block {b} of object {obj} holds write {j}, which did not cover it"
            );
            if j >= acked {
                *seen_unacked.entry(j).or_default() += 1;
            } else {
                assert_eq!(
                    Some(j),
                    want[b as usize],
                    "object {obj} block {b}: older write {j} survived"
                );
            }
        }
        // An unacknowledged write that made it is there whole, unless a
        // later (also unacknowledged) one covered part of it.
        for (&j, &count) in &seen_unacked {
            let (_, _, n) = ext_write(j);
            let later = seen_unacked.keys().any(|&k| k > j);
            assert!(
                count == n || later,
                "object {obj}: write {j} only partly there ({count} of {n} blocks)"
            );
        }
    }
    s.apply(&OpRequest::new(ObjectId::new(1, "after")).op(Op::Create { exclusive: true }))
        .unwrap();
}

/// Log bytes on disk under a store directory.
fn log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Whole-object overwrites of objects fragmented by 4 KiB writes delete
/// the small extents' index entries (a range delete of hundreds of keys
/// per request); the log space they pinned is reclaimed by compaction
/// while the store runs, and the data reads back after a reopen.
#[test]
fn full_overwrites_of_fragmented_objects_are_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || StoreOptions {
        segment_bytes: 1 << 20,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts()).unwrap();
    let objs = 4u64;
    let full = |o: u64, round: u64| -> Vec<u8> {
        (0..1024u64)
            .flat_map(|b| ext_block(round * 100 + o, b))
            .collect()
    };
    for round in 0..4u64 {
        for o in 0..objs {
            let oid = ObjectId::new(1, format!("f{o}"));
            // Fragment: every other block rewritten on its own.
            for b in (0..1024u64).step_by(2) {
                s.apply(&OpRequest::new(oid.clone()).op(Op::Write {
                    off: b * 4096,
                    data: Bytes::from(ext_block(9_000_000 + round, b)),
                }))
                .unwrap();
            }
            s.apply(&OpRequest::new(oid).op(Op::Write {
                off: 0,
                data: Bytes::from(full(o, round)),
            }))
            .unwrap();
        }
    }
    let live = objs * (4 << 20);
    // Written: 4 rounds x (2 + 4) MiB per object; live: 4 MiB per object.
    // The sweep and compaction bring the log back near the live data.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let log = log_bytes(dir.path());
        if log <= live * 2 + (4 << 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log still holds {log} bytes for {live} live after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for o in 0..objs {
        let oid = ObjectId::new(1, format!("f{o}"));
        assert!(
            read(&s, &oid, 0, 4 << 20).unwrap() == full(o, 3),
            "object {o}"
        );
    }
    assert_eq!(s.usage().unwrap().stored_bytes, live);
    drop(s);
    let s = Store::open_with(dir.path(), opts()).unwrap();
    for o in 0..objs {
        let oid = ObjectId::new(1, format!("f{o}"));
        assert!(
            read(&s, &oid, 0, 4 << 20).unwrap() == full(o, 3),
            "object {o} after reopen"
        );
    }
}

/// Small writes that each clone a whole large object (the first write
/// after a snapshot) must never make one batch's log record too large:
/// 80 objects of 4 MiB, then 80 concurrent 4 KiB writes under a newer snap
/// context. Before the record size bounded a batch, the writer put them
/// in one record of ~320 MiB, over the log's record limit, and stopped
/// (every OSD of a PG at once). Every write must succeed, every object
/// read back the new bytes at the head and the old ones at the snapshot,
/// and the store must reopen with all of it.
#[test]
fn clone_heavy_batches_stay_under_the_record_limit() {
    const OBJ: usize = 4 << 20;
    const N: usize = 80;
    let dir = tempfile::tempdir().unwrap();
    let old = Bytes::from(vec![0x5a; OBJ]);
    {
        let s = Arc::new(Store::open(dir.path()).unwrap());
        for i in 0..N {
            s.apply(
                &OpRequest::new(ObjectId::new(1, format!("obj{i}"))).op(Op::WriteFull(old.clone())),
            )
            .unwrap();
        }
        let sc = SnapContext {
            seq: 7,
            snaps: vec![7],
        };
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let s = s.clone();
                let sc = sc.clone();
                std::thread::spawn(move || {
                    s.apply(
                        &OpRequest::new(ObjectId::new(1, format!("obj{i}")))
                            .with_snapc(sc)
                            .op(Op::Write {
                                off: 0,
                                data: Bytes::from(vec![i as u8; 4096]),
                            }),
                    )
                    .map(|_| ())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().expect("write after the snapshot");
        }
    }
    let s = Store::open(dir.path()).unwrap();
    let read_at = |name: &str, snap: u64| -> Vec<u8> {
        let r = s
            .apply(
                &OpRequest::new(ObjectId::new(1, name))
                    .at_snap(snap)
                    .op(Op::Read { off: 0, len: 0 }),
            )
            .unwrap();
        match &r.outputs[0] {
            OpOutput::Data(d) => d.to_vec(),
            o => panic!("unexpected {o:?}"),
        }
    };
    for i in 0..N {
        let head = read_at(&format!("obj{i}"), NOSNAP);
        assert_eq!(&head[..4096], &vec![i as u8; 4096][..], "obj{i} head");
        assert_eq!(&head[4096..], &old[4096..], "obj{i} head tail");
        assert_eq!(
            read_at(&format!("obj{i}"), 7),
            old,
            "obj{i} at the snapshot"
        );
    }
}
