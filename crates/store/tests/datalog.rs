//! The data log: space comes back under overwrites (compaction), torn
//! tails and torn records after a crash, replay of records redb never
//! committed durably, and old-format directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest};
use quarry_store::{CachedRead, Store, StoreOptions};

const MIB: u64 = 1 << 20;

fn read(s: &Store, oid: &ObjectId, off: u64, len: u64) -> quarry_rados::Result<Vec<u8>> {
    let r = s.apply(&OpRequest::new(oid.clone()).op(Op::Read { off, len }))?;
    match &r.outputs[0] {
        OpOutput::Data(d) => Ok(d.to_vec()),
        o => panic!("{o:?}"),
    }
}

fn write(s: &Store, oid: &ObjectId, off: u64, data: Vec<u8>) {
    s.apply(&OpRequest::new(oid.clone()).op(Op::Write {
        off,
        data: Bytes::from(data),
    }))
    .unwrap();
}

/// A chunk whose every byte depends on (pass, chunk index).
fn chunk(pass: u64, i: u64, len: usize) -> Vec<u8> {
    let tag = format!("[pass {pass:04} chunk {i:06}]");
    tag.as_bytes().iter().copied().cycle().take(len).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn dir_bytes(dir: &Path) -> u64 {
    let log: u64 = segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    log + std::fs::metadata(dir.join("meta.redb")).unwrap().len()
}

#[test]
fn overwrites_keep_the_store_bounded() {
    // 64 MiB of live data, then 6 passes overwriting 7/8 of it (400 MiB
    // written) in 256 KiB chunks. Every eighth chunk is never overwritten,
    // so the first pass's segments stay 1/8 live for ever: only compaction
    // (copying that eighth) gets their space back.
    const LIVE: u64 = 64 * MIB;
    const CHUNK: u64 = 256 << 10;
    const SEG: u64 = 8 * MIB;
    const PASSES: u64 = 7;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        segment_bytes: SEG,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    let n = LIVE / CHUNK;
    let oid = |i: u64| ObjectId::new(1, format!("obj{}", i * CHUNK / (4 * MIB)));
    let mut peak = 0u64;
    for pass in 0..PASSES {
        for i in (0..n).filter(|i| pass == 0 || i % 8 != 0) {
            write(
                &s,
                &oid(i),
                i * CHUNK % (4 * MIB),
                chunk(pass, i, CHUNK as usize),
            );
            if i % 8 == 1 {
                peak = peak.max(s.usage().unwrap().file_bytes);
            }
        }
    }
    let u = s.usage().unwrap();
    assert_eq!(u.stored_bytes, LIVE);
    // Live data, plus garbage below the compaction threshold (half the
    // live data), the active segment, dead segments waiting for a
    // checkpoint and the metadata. Without compaction the first pass's
    // segments alone hold 56 MiB of garbage (measured: peak 147 MiB
    // without; with, 102 MiB when the threshold was a quarter of the live
    // data).
    let bound = LIVE + LIVE / 2 + 4 * SEG;
    assert!(
        peak <= bound,
        "store grew to {peak} bytes for {LIVE} live (bound {bound})"
    );
    let verify = |s: &Store| {
        for i in 0..n {
            let last = if i % 8 == 0 { 0 } else { PASSES - 1 };
            let got = read(s, &oid(i), i * CHUNK % (4 * MIB), CHUNK).unwrap();
            assert!(got == chunk(last, i, CHUNK as usize), "chunk {i} wrong");
        }
    };
    verify(&s);
    drop(s);
    let s = Store::open_with(dir.path(), opts).unwrap();
    verify(&s);
    assert!(dir_bytes(dir.path()) <= bound, "after reopen");
}

/// Random overwrites of `blocks` 4 KiB blocks each of the `objs` 4 MiB
/// objects of `oid`, `bytes` in all, 256 KiB per request (one compound op
/// per object: scattered kills without one fdatasync per write, and small
/// requests, not a sweep's). Returns the peak data log size seen.
fn random_overwrites(
    s: &Store,
    dir: &Path,
    oid: &dyn Fn(u64) -> ObjectId,
    (objs, blocks): (u64, u64),
    bytes: u64,
    seed: &mut u64,
) -> u64 {
    let mut next = || {
        // xorshift64: deterministic, no dependency.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut peak = 0;
    let len = blocks * 4096;
    for r in 0..bytes / (256 << 10) {
        let o = next() % objs;
        let mut req = OpRequest::new(oid(o));
        for _ in 0..64 / blocks {
            let b = next() % (4 * MIB / len);
            req = req.op(Op::Write {
                off: b * len,
                data: Bytes::from(chunk(1000 + r, b, len as usize)),
            });
        }
        s.apply(&req).unwrap();
        peak = peak.max(log_bytes(s, dir));
    }
    peak
}

/// The data log's size (the store's files but the metadata database,
/// whose size depends on redb's page reuse, not on compaction).
fn log_bytes(s: &Store, dir: &Path) -> u64 {
    let all = s.usage().unwrap().file_bytes;
    all.saturating_sub(std::fs::metadata(dir.join("meta.redb")).unwrap().len())
}

#[test]
fn a_sweep_over_a_fragmented_store_frees_segments_without_compaction() {
    // A store filled in order, then fragmented by random 4 KiB overwrites
    // until compaction runs (garbage at half the live data), then
    // overwritten in order (a sweep, like a guest rewriting its disk): the
    // sweep kills the fill's segments whole, so compaction must not copy
    // what it is about to kill (without pacing it copied about twice as
    // much), and the data log stays under twice the live data. Random overwrites afterwards compact again (back under 1.5x).
    const LIVE: u64 = 64 * MIB;
    const SEG: u64 = MIB;
    const OBJS: u64 = LIVE / (4 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        segment_bytes: SEG,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    let oid = |i: u64| ObjectId::new(1, format!("rbd_data.{i:016x}"));
    let sweep = |s: &Store, pass: u64, from: u64, to: u64| {
        let mut peak = 0;
        for i in from / MIB..to / MIB {
            let (o, off) = (i * MIB / (4 * MIB), i * MIB % (4 * MIB));
            write(s, &oid(o), off, chunk(pass, i, MIB as usize));
            peak = peak.max(log_bytes(s, dir.path()));
        }
        peak
    };
    // The bench's order: the image written, half of it again, 64 KiB then
    // 4 KiB random overwrites, then the sweep.
    sweep(&s, 0, 0, LIVE);
    sweep(&s, 1, 0, LIVE / 2);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    random_overwrites(&s, dir.path(), &oid, (OBJS, 16), LIVE, &mut seed);
    random_overwrites(&s, dir.path(), &oid, (OBJS, 1), LIVE / 8, &mut seed);
    let before = s.compacted_bytes();
    assert!(before > 0, "the random overwrites never compacted");
    let mut peak = 0;
    let mut q = vec![];
    for k in 0..4 {
        peak = peak.max(sweep(&s, 2, k * LIVE / 4, (k + 1) * LIVE / 4));
        q.push((s.compacted_bytes() - before) >> 10);
    }
    let copied = s.compacted_bytes() - before;
    // Measured: 6.2-6.7 MiB (cheap victims, and the first quarter before
    // the sweep is recognised); 12.2-13.2 MiB without pacing.
    assert!(
        copied <= LIVE / 6,
        "compaction copied {copied} bytes during a {LIVE}-byte sweep (KiB by quarter: {q:?})"
    );
    let bound = 2 * LIVE + 4 * SEG;
    assert!(peak <= bound, "store grew to {peak} bytes during the sweep");
    // Random overwrites again: nothing dies whole, garbage must be taken
    // back by compaction, and the files return under the usual bound.
    let before = s.compacted_bytes();
    let peak = random_overwrites(&s, dir.path(), &oid, (OBJS, 1), 2 * LIVE, &mut seed);
    assert!(peak <= bound, "store grew to {peak} bytes after the sweep");
    assert!(
        s.compacted_bytes() > before,
        "random overwrites after a sweep never compacted"
    );
    // Plus up to four spare segment files (dead segments kept for reuse).
    let usual = LIVE + LIVE / 2 + 4 * SEG + 4 * SEG;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = log_bytes(&s, dir.path());
        if now <= usual {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store still {now} bytes (bound {usual}) 60 s after random overwrites"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.usage().unwrap().stored_bytes, LIVE);
}

const CHILD_ENV: &str = "QUARRY_DATALOG_CHILD_DIR";
const OBJECTS: u64 = 40;
const OBJ_LEN: usize = 20_000;

/// Child half of the crash tests: writes `OBJECTS` objects one at a time,
/// printing each acknowledged one, then exits without closing the store
/// (no checkpoint: redb holds none of it durably, the log holds it all).
#[test]
fn datalog_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = Store::open(Path::new(&dir)).unwrap();
    // Something durable in redb first, so recovery starts mid-log.
    write(&s, &ObjectId::new(1, "base"), 0, chunk(0, 0, 10_000));
    drop(s);
    let s = Store::open(Path::new(&dir)).unwrap();
    for i in 0..OBJECTS {
        write(
            &s,
            &ObjectId::new(1, format!("o{i}")),
            0,
            chunk(1, i, OBJ_LEN),
        );
        println!("ACK {i}");
    }
    std::process::exit(0);
}

/// Run the child on a fresh directory; the acknowledged writes.
fn crashed_store() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child("datalog_child", CHILD_ENV, dir.path());
    assert_eq!(acked, OBJECTS, "child stopped early");
    (dir, acked)
}

/// Run the test `name` of this binary as a child process with `env` set to
/// `dir`; it must exit successfully. The writes it acknowledged ("ACK"
/// lines).
fn run_child(name: &str, env: &str, dir: &Path) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let acked = BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        // The harness may print its own text before the first line.
        .filter(|l| l.contains("ACK "))
        .count() as u64;
    assert!(child.wait().unwrap().success());
    acked
}

fn check(s: &Store, upto: u64) {
    assert_eq!(
        read(s, &ObjectId::new(1, "base"), 0, 0).unwrap(),
        chunk(0, 0, 10_000)
    );
    for i in 0..upto {
        let got = read(s, &ObjectId::new(1, format!("o{i}")), 0, 0).unwrap();
        assert!(got == chunk(1, i, OBJ_LEN), "write {i} lost or damaged");
    }
}

/// The store is usable after recovery, and what it writes next survives
/// another reopen (the recovered log end was cut cleanly).
fn usable_after(dir: &Path) {
    {
        let s = Store::open(dir).unwrap();
        write(&s, &ObjectId::new(1, "after"), 0, chunk(9, 9, 9000));
    }
    let s = Store::open(dir).unwrap();
    assert_eq!(
        read(&s, &ObjectId::new(1, "after"), 0, 0).unwrap(),
        chunk(9, 9, 9000)
    );
}

/// Where the records of a segment file end (the rest is preallocated
/// zeros). Record header: magic u32 | lsn u64 | data len u32 | redo len
/// u32 | crc u32.
fn log_end(f: &[u8]) -> usize {
    let mut off = 0;
    while off + 24 <= f.len() && f[off..off + 4] == 0x474C_5751u32.to_le_bytes() {
        let w = |i: usize| u32::from_le_bytes(f[off + i..off + i + 4].try_into().unwrap()) as usize;
        off += 24 + w(12) + w(16);
    }
    off
}

#[test]
fn log_records_redb_never_committed_are_replayed() {
    let (dir, acked) = crashed_store();
    let s = Store::open(dir.path()).unwrap();
    check(&s, acked);
    drop(s);
    usable_after(dir.path());
}

#[test]
fn torn_tail_after_the_last_record_is_ignored() {
    let (dir, acked) = crashed_store();
    // A record that was being appended when the power went: a valid-looking
    // start (the last record's header again) cut short, then garbage.
    let last = segments(dir.path()).pop().unwrap();
    let mut f = std::fs::read(&last).unwrap();
    let end = log_end(&f);
    assert!(
        end > 0 && f.len() >= end + 4777,
        "segment preallocated past its records"
    );
    let head: Vec<u8> = f[..4000].to_vec();
    f[end..end + 4000].copy_from_slice(&head);
    f[end + 4000..end + 4777].fill(0xA5);
    std::fs::write(&last, &f).unwrap();
    let s = Store::open(dir.path()).unwrap();
    check(&s, acked);
    drop(s);
    usable_after(dir.path());
}

#[test]
fn torn_last_record_loses_only_that_write_and_whole() {
    let (dir, acked) = crashed_store();
    // Tear the last record (the last write's): as if it was in flight.
    let last = segments(dir.path()).pop().unwrap();
    let mut f = std::fs::read(&last).unwrap();
    let end = log_end(&f);
    f[end - 100..end].fill(0);
    std::fs::write(&last, &f).unwrap();
    let s = Store::open(dir.path()).unwrap();
    check(&s, acked - 1);
    // Not a torn write: the object of the torn record does not exist at all.
    let e = read(&s, &ObjectId::new(1, format!("o{}", acked - 1)), 0, 0).unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT);
    drop(s);
    usable_after(dir.path());
}

#[test]
fn old_format_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.redb"), b"not ours").unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    assert!(e.context.contains("old format"), "{e}");
    // Nothing was created beside it.
    assert!(!dir.path().join("meta.redb").exists());
}

/// Object reads share one read view between commits: every read still
/// sees every write acknowledged before it, across commits and across
/// compaction deleting the segments an older view pointed into, while
/// other threads read concurrently.
#[test]
fn reads_see_every_acknowledged_write_across_commits_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(
        Store::open_with(
            dir.path(),
            StoreOptions {
                segment_bytes: 256 << 10,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let stable = ObjectId::new(1, "stable");
    for i in 0..16 {
        write(&s, &stable, i * 4096, chunk(0, i, 4096));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (s, stop, stable) = (s.clone(), stop.clone(), stable.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = (n * 7 + t) % 16;
                    assert_eq!(
                        read(&s, &stable, i * 4096, 4096).unwrap(),
                        chunk(0, i, 4096),
                        "stable block {i}"
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Overwrites of a small object: segments fill and are compacted away
    // while the readers hold views.
    let hot = ObjectId::new(1, "hot");
    for pass in 1..=600u64 {
        let i = pass % 8;
        write(&s, &hot, i * 4096, chunk(pass, i, 4096));
        assert_eq!(
            read(&s, &hot, i * 4096, 4096).unwrap(),
            chunk(pass, i, 4096),
            "hot block {i} right after pass {pass}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    for i in 0..8u64 {
        let last = (1..=600u64).rev().find(|p| p % 8 == i).unwrap();
        assert_eq!(
            read(&s, &hot, i * 4096, 4096).unwrap(),
            chunk(last, i, 4096)
        );
    }
}

#[test]
fn compaction_moves_only_verified_blocks_and_keeps_a_corrupt_ones_segment() {
    // Compaction reads a victim's live blocks only (not the whole record
    // under its checksum), so it must check each block it moves against
    // the index's checksum: a corrupted live block is never moved, its
    // segment is never deleted, reads of it fail with EIO, and everything
    // else (moved or not) still reads back right, also after a reopen.
    const SEG: u64 = 512 << 10;
    const K64: usize = 64 << 10;
    const PASSES: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        segment_bytes: SEG,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    let victim = ObjectId::new(1, "victim");
    let keep = ObjectId::new(1, "keep");
    let hot = ObjectId::new(1, "hot");
    let pin = |p: u64| ObjectId::new(1, format!("pin{p}"));
    // The first segment: two extents of 16 blocks that stay live and hot
    // data that dies, so it is the emptiest (the first victim).
    write(&s, &victim, 0, chunk(0, 1, K64));
    write(&s, &keep, 0, chunk(0, 2, K64));
    // Corrupt one byte of the victim's 6th block on disk.
    let needle = chunk(0, 1, K64);
    let (seg, at) = segments(dir.path())
        .into_iter()
        .find_map(|p| {
            let f = std::fs::read(&p).unwrap();
            f.windows(needle.len())
                .position(|w| w == needle.as_slice())
                .map(|i| (p, i))
        })
        .expect("victim's data in a segment");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&seg)
            .unwrap();
        let off = (at + 5 * 4096 + 100) as u64;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], off).unwrap();
    }
    // Overwrites of `hot`, and from the third pass on a never-overwritten
    // 128 KiB `pin` per pass: later segments stay about a third live, so
    // garbage builds up and compaction moves the pins.
    for pass in 1..=PASSES {
        for i in 0..4u64 {
            write(&s, &hot, i * K64 as u64, chunk(pass, i, K64));
        }
        if pass >= 3 {
            write(&s, &pin(pass), 0, chunk(pass, 9, 2 * K64));
        }
    }
    let check = |s: &Store| {
        assert_eq!(
            read(s, &keep, 0, K64 as u64).unwrap(),
            chunk(0, 2, K64),
            "keep"
        );
        let e = read(s, &victim, 5 * 4096, 4096).unwrap_err();
        assert_eq!(e.errno, Errno::EIO);
        for b in (0..16usize).filter(|&b| b != 5) {
            assert_eq!(
                read(s, &victim, b as u64 * 4096, 4096).unwrap(),
                &needle[b * 4096..(b + 1) * 4096],
                "victim block {b}"
            );
        }
        for i in 0..4u64 {
            assert_eq!(
                read(s, &hot, i * K64 as u64, K64 as u64).unwrap(),
                chunk(PASSES, i, K64)
            );
        }
        for p in 3..=PASSES {
            assert_eq!(
                read(s, &pin(p), 0, 2 * K64 as u64).unwrap(),
                chunk(p, 9, 2 * K64),
                "pin {p}"
            );
        }
    };
    check(&s);
    assert!(seg.exists(), "the corrupt block's segment was deleted");
    // Compaction did run: every segment but the first holds pins, so only
    // compaction (moving them) takes segments away. It runs while the
    // writer is idle and the files go at the next checkpoint, by the
    // housekeeper thread: on a loaded machine that can be a while after
    // the last write, so wait for it (bounded) rather than look once.
    let written = (2 * K64 as u64 + PASSES * 4 * K64 as u64 + (PASSES - 2) * 2 * K64 as u64) / SEG;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = segments(dir.path()).len() as u64;
        if left + 4 <= written {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} of {written} segments left 60 s after the last write"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check(&s);
    drop(s);
    let s = Store::open_with(dir.path(), opts).unwrap();
    check(&s);
    assert!(seg.exists());
}

#[test]
fn a_dead_segment_left_behind_is_deleted_at_open() {
    // Dead segments are unlinked by a housekeeper thread after the
    // checkpoint that lets them go: a crash in between leaves the file.
    // Put a copy of a dead segment back (as such a crash would) and
    // reopen: the data read is the newest, and the file goes away.
    const SEG: u64 = MIB;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        segment_bytes: SEG,
        ..Default::default()
    };
    let oid = ObjectId::new(1, "obj");
    let s = Store::open_with(dir.path(), opts).unwrap();
    write(&s, &oid, 0, chunk(0, 0, (2 * SEG) as usize));
    let first = segments(dir.path()).remove(0);
    let saved = std::fs::read(&first).unwrap();
    // Overwrite everything a few times: the first segment dies, is
    // checkpointed past and deleted (at the latest when the store closes).
    for pass in 1..4 {
        write(&s, &oid, 0, chunk(pass, 0, (2 * SEG) as usize));
    }
    drop(s);
    assert!(!first.exists(), "the dead first segment was not deleted");
    std::fs::write(&first, &saved).unwrap();
    let s = Store::open_with(dir.path(), opts).unwrap();
    assert_eq!(
        read(&s, &oid, 0, 2 * SEG).unwrap(),
        chunk(3, 0, (2 * SEG) as usize)
    );
    drop(s);
    assert!(
        !first.exists(),
        "the left-behind segment was not deleted at open"
    );
    let s = Store::open_with(dir.path(), opts).unwrap();
    assert_eq!(
        read(&s, &oid, 0, 2 * SEG).unwrap(),
        chunk(3, 0, (2 * SEG) as usize)
    );
}

/// Drop the clean page-cache pages of every data-log segment.
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for p in segments(dir) {
        let f = std::fs::File::open(&p).unwrap();
        // SAFETY: plain syscall on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// A read that only runs if its blocks are cached never reports a cache
/// miss as an error (the OSD would take it for a damaged block and repair
/// the object from a replica): it answers with the object's bytes, or
/// with nothing for the caller to redo where blocking is fine, and a miss
/// starts reading the blocks in.
#[test]
fn cached_only_reads_are_right_or_declined() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let oids: Vec<ObjectId> = (0..8).map(|i| ObjectId::new(1, format!("c{i}"))).collect();
    for (i, o) in oids.iter().enumerate() {
        write(&s, o, 0, chunk(0, i as u64, 64 << 10));
    }
    let req = |o: &ObjectId, off, len| OpRequest::new(o.clone()).op(Op::Read { off, len });
    let bytes = |r: quarry_rados::OpReply| match &r.outputs[0] {
        OpOutput::Data(d) => d.to_vec(),
        o => panic!("{o:?}"),
    };
    let mut declined = 0;
    for (i, o) in oids.iter().enumerate() {
        let want = chunk(0, i as u64, 64 << 10);
        evict(dir.path());
        match s.try_read_cached(&req(o, 4096, 8192)) {
            CachedRead::Miss => {
                declined += 1;
                // The miss started the kernel's readahead (the OSD waits
                // for it and tries again rather than block a worker): tries
                // alone, with no blocking read, get the bytes.
                let r = (0..100)
                    .find_map(|_| match s.try_read_cached(&req(o, 4096, 8192)) {
                        CachedRead::Done(r) => Some(r),
                        _ => {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            None
                        }
                    })
                    .expect("the miss's readahead brings the blocks in");
                assert_eq!(bytes(r.unwrap()), want[4096..12288]);
            }
            CachedRead::Done(r) => assert_eq!(bytes(r.unwrap()), want[4096..12288]),
            CachedRead::Writer => {} // not committed yet: the writer's to answer
        }
        // A blocking read brings the blocks in; now it runs.
        assert_eq!(read(&s, o, 0, 64 << 10).unwrap(), want);
        // Declined also until the write's redb commit (every 50 ms) makes
        // it readable off the writer: wait for that, not for a timing.
        let r = (0..100)
            .find_map(|_| match s.try_read_cached(&req(o, 4096, 8192)) {
                CachedRead::Done(r) => Some(r),
                _ => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                }
            })
            .expect("cached and committed now");
        assert_eq!(bytes(r.unwrap()), want[4096..12288]);
    }
    // Absent objects are answered (ENOENT) without touching the log.
    match s.try_read_cached(&req(&ObjectId::new(1, "absent"), 0, 4096)) {
        CachedRead::Done(r) => assert_eq!(r.unwrap_err().errno, Errno::ENOENT),
        o => panic!("an absent object has no block to miss: {o:?}"),
    }
    eprintln!("{declined} of {} reads declined after eviction", oids.len());
}

const ZERO_CHILD_ENV: &str = "QUARRY_DATALOG_ZERO_CHILD_DIR";
const ZERO_SEG: u64 = 3 * MIB / 2;
const ZERO_N: u64 = 1500;
const ZERO_LEN: usize = 3000;

fn zero_oid(i: u64) -> ObjectId {
    ObjectId::new(1, format!("z{}", i % 97))
}

fn zero_off(i: u64) -> u64 {
    (i / 97) * ZERO_LEN as u64
}

/// Child half of `zeros_written_ahead_of_the_log_never_touch_records`:
/// small unaligned writes one at a time (each its own small record, so the
/// writer keeps zeroing space ahead of the log, clamped at each segment's
/// end), each read back at once, then an exit without closing the store.
#[test]
fn zero_ahead_child() {
    let Ok(dir) = std::env::var(ZERO_CHILD_ENV) else {
        return;
    };
    let opts = StoreOptions {
        segment_bytes: ZERO_SEG,
        ..Default::default()
    };
    let s = Store::open_with(Path::new(&dir), opts).unwrap();
    for i in 0..ZERO_N {
        write(&s, &zero_oid(i), zero_off(i), chunk(0, i, ZERO_LEN));
        // The zeros go through the same page cache: one written over a
        // record's data would show here.
        assert!(
            read(&s, &zero_oid(i), zero_off(i), ZERO_LEN as u64).unwrap() == chunk(0, i, ZERO_LEN)
        );
        println!("ACK {i}");
    }
    std::process::exit(0);
}

#[test]
fn zeros_written_ahead_of_the_log_never_touch_records() {
    // Replay after the child's exit runs over the records the zeros were
    // written after (no checkpoint covers them): one zero written over a
    // record's header, data or redo cuts the log there and loses every
    // acknowledged write after it.
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child("zero_ahead_child", ZERO_CHILD_ENV, dir.path());
    assert_eq!(acked, ZERO_N, "child stopped early");
    assert!(segments(dir.path()).len() >= 3, "the log did not roll");
    let opts = StoreOptions {
        segment_bytes: ZERO_SEG,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    for j in 0..ZERO_N {
        assert!(
            read(&s, &zero_oid(j), zero_off(j), ZERO_LEN as u64).unwrap() == chunk(0, j, ZERO_LEN),
            "acknowledged write {j} lost after replay"
        );
    }
    drop(s);
    usable_after(dir.path());
}

const REUSE_ENV: &str = "QUARRY_DATALOG_REUSE_CHILD_DIR";
const REUSE_SEG: u64 = MIB;
const REUSE_OBJS: u64 = 3;
const REUSE_PASSES: u64 = 6;

const FRESH_LEN: usize = (2 * MIB) as usize - 333;

fn fresh_oid(i: u64) -> ObjectId {
    ObjectId::new(1, format!("fresh{i}"))
}

fn reuse_oid(o: u64) -> ObjectId {
    ObjectId::new(1, format!("r{o}"))
}

/// Whole-object overwrites with 1 MiB segments: segments die whole,
/// become spares and are reused as new segments. Odd lengths, so records
/// end inside pages.
fn reuse_passes(s: &Store, passes: std::ops::Range<u64>, ack: bool) {
    for pass in passes {
        for o in 0..REUSE_OBJS {
            let len = (2 * MIB) as usize - 1000 * (o as usize + 1);
            write(s, &reuse_oid(o), 0, chunk(pass, o, len));
            if ack {
                println!("ACK {pass} {o}");
            }
        }
    }
}

fn reuse_check(s: &Store, last: u64) {
    for o in 0..REUSE_OBJS {
        let len = (2 * MIB) as usize - 1000 * (o as usize + 1);
        let got = read(s, &reuse_oid(o), 0, 0).unwrap();
        assert!(
            got == chunk(last, o, len),
            "object {o}: not pass {last}'s data"
        );
        let got = read(s, &fresh_oid(o), 0, 0).unwrap();
        assert!(got == chunk(100, o, FRESH_LEN), "object fresh{o} lost");
    }
}

/// Child half of the reuse crash test: overwrites with segment reuse,
/// then exits without closing the store.
#[test]
fn reuse_child() {
    let Ok(dir) = std::env::var(REUSE_ENV) else {
        return;
    };
    let opts = StoreOptions {
        segment_bytes: REUSE_SEG,
        ..Default::default()
    };
    let s = Store::open_with(Path::new(&dir), opts).unwrap();
    reuse_passes(&s, 0..REUSE_PASSES, true);
    assert!(s.segment_reuses() > 0, "no segment was reused");
    // Then new objects only: nothing dies, so no checkpoint comes early,
    // and recovery replays the several (reused) segments these fill.
    for i in 0..REUSE_OBJS {
        write(&s, &fresh_oid(i), 0, chunk(100, i, FRESH_LEN));
        println!("ACK fresh {i}");
    }
    std::process::exit(0);
}

#[test]
fn reused_segments_never_give_back_their_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child("reuse_child", REUSE_ENV, dir.path());
    assert_eq!(
        acked,
        (REUSE_PASSES + 1) * REUSE_OBJS,
        "child stopped early"
    );
    // A crash may also undo the truncation that sealed a segment, leaving
    // a reused file's old records after its last one: put a valid old
    // record (a copy of its first) after the end of every sealed segment.
    let segs: Vec<PathBuf> = segments(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "qseg"))
        .collect();
    assert!(segs.len() > 1);
    for p in &segs[..segs.len() - 1] {
        let mut f = std::fs::read(p).unwrap();
        let w = |i: usize| u32::from_le_bytes(f[i..i + 4].try_into().unwrap()) as usize;
        let first = 24 + w(12) + w(16);
        let copy = f[..first].to_vec();
        f.extend_from_slice(&copy);
        std::fs::write(p, f).unwrap();
    }
    let opts = StoreOptions {
        segment_bytes: REUSE_SEG,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    reuse_check(&s, REUSE_PASSES - 1);
    // Reuse goes on in this process, and a clean reopen reads the newest.
    reuse_passes(&s, REUSE_PASSES..2 * REUSE_PASSES, false);
    assert!(s.segment_reuses() > 0);
    reuse_check(&s, 2 * REUSE_PASSES - 1);
    drop(s);
    let spares = segments(dir.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "spare"))
        .count();
    assert!(spares <= 4, "{spares} spare files kept (at most 4)");
    let s = Store::open_with(dir.path(), opts).unwrap();
    reuse_check(&s, 2 * REUSE_PASSES - 1);
    drop(s);
    usable_after(dir.path());
}

/// A writer that fails (injected ENOSPC, as a full disk gives) stops the
/// store: the failing request gets an error, `failure()` names the cause,
/// every later request fails with it, and reopening the directory keeps
/// every write acknowledged before.
#[test]
fn a_failed_writer_stops_the_store_and_names_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions {
        fail_after_batches: Some(3),
        ..Default::default()
    };
    let oid = |i: u32| ObjectId::new(1, format!("obj{i}"));
    {
        let s = Store::open_with(dir.path(), opts).expect("open");
        assert_eq!(s.failure(), None);
        let mut acked = 0;
        let mut err = None;
        for i in 0..10u32 {
            match s
                .apply(&OpRequest::new(oid(i)).op(Op::WriteFull(Bytes::from(vec![i as u8; 5000]))))
            {
                Ok(_) => acked += 1,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(acked, 3, "three batches, then the failure");
        assert!(err.is_some());
        // The writer records the failure just after the failing request's
        // answer channel closes.
        let mut why = s.failure();
        for _ in 0..100 {
            if why.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            why = s.failure();
        }
        let why = why.expect("the failure is kept");
        assert!(why.contains("No space left on device"), "{why}");
        let e = s
            .apply(&OpRequest::new(oid(0)).op(Op::Read { off: 0, len: 0 }))
            .expect_err("a stopped store serves nothing");
        assert!(e.to_string().contains("No space left on device"), "{e}");
    }
    let s = Store::open(dir.path()).expect("reopen");
    for i in 0..3u32 {
        assert_eq!(read(&s, &oid(i), 0, 0).expect("read"), vec![i as u8; 5000]);
    }
    assert_eq!(
        read(&s, &oid(3), 0, 0)
            .expect_err("never acknowledged")
            .errno,
        Errno::ENOENT
    );
}

#[test]
fn clones_share_the_heads_blocks_and_compaction_moves_them_once() {
    // 64 MiB in 256 KiB chunks; every eighth chunk goes to the two "vm"
    // objects, the rest to fourteen "tmp" objects, so each segment holds
    // 1/8 vm data. A snapshot of the vm objects, then one 4 KiB write to
    // each: their clones must take the head's blocks by reference (before,
    // each first write copied its whole 4 MiB object into the log). The
    // tmp objects are then removed and compaction empties the segments:
    // the vm blocks there are pointed at by head and clone, and must be
    // moved once, both entries to the same new bytes.
    const CHUNK: u64 = 256 << 10;
    const SEG: u64 = 8 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        segment_bytes: SEG,
        ..Default::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    let n = 64 * MIB / CHUNK;
    let place = |i: u64| -> (ObjectId, u64) {
        let (name, j) = if i.is_multiple_of(8) {
            ("vm", i / 8)
        } else {
            ("tmp", i - i / 8 - 1)
        };
        let at = j * CHUNK;
        (
            ObjectId::new(1, format!("{name}{}", at / (4 * MIB))),
            at % (4 * MIB),
        )
    };
    for i in 0..n {
        let (o, off) = place(i);
        write(&s, &o, off, chunk(0, i, CHUNK as usize));
    }
    let snapc = quarry_rados::SnapContext {
        seq: 1,
        snaps: vec![1],
    };
    let before = log_bytes(&s, dir.path());
    for v in 0..2 {
        s.apply(
            &OpRequest::new(ObjectId::new(1, format!("vm{v}")))
                .with_snapc(snapc.clone())
                .op(Op::Write {
                    off: 0,
                    data: Bytes::from(vec![0xAB; 4096]),
                }),
        )
        .unwrap();
    }
    let grew = log_bytes(&s, dir.path()) - before;
    assert!(
        grew < MIB,
        "two first writes after a snapshot grew the log by {grew} bytes (copies of the objects?)"
    );
    assert_eq!(s.usage().unwrap().objects, 16 + 2, "two clones");
    for t in 0..14 {
        s.apply(&OpRequest::new(ObjectId::new(1, format!("tmp{t}"))).op(Op::Remove))
            .unwrap();
    }
    // Each of the 8 sealed segments holds 1 MiB of vm blocks, counted
    // twice (head and clone entries), and ~6 MiB of garbage: compaction
    // copies segments until the garbage is under 16 MiB, i.e. six or
    // seven of them, 1 MiB each (measured 6.5 MiB).
    let mut moved = 0;
    for _ in 0..300 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = s.compacted_bytes();
        if now == moved && now >= 5 * MIB {
            break;
        }
        moved = now;
    }
    // Moving head and clone apart would copy twice as much (~13 MiB).
    assert!(
        (5 * MIB..=8 * MIB).contains(&moved),
        "compaction copied {moved} bytes (six or seven segments of 1 MiB of shared blocks expected)"
    );
    let verify = |s: &Store| {
        for i in (0..n).filter(|i| i.is_multiple_of(8)) {
            let (o, off) = place(i);
            let mut want = chunk(0, i, CHUNK as usize);
            let snap = s
                .apply(
                    &OpRequest::new(o.clone())
                        .at_snap(1)
                        .op(Op::Read { off, len: CHUNK }),
                )
                .unwrap();
            match &snap.outputs[0] {
                OpOutput::Data(d) => assert!(d[..] == want[..], "snapshot of vm chunk {i}"),
                other => panic!("{other:?}"),
            }
            if off == 0 {
                want[..4096].fill(0xAB);
            }
            assert!(
                read(s, &o, off, CHUNK).unwrap() == want,
                "head of vm chunk {i}"
            );
        }
    };
    verify(&s);
    drop(s);
    let s = Store::open_with(dir.path(), opts).unwrap();
    verify(&s);
    // The emptied segments are gone: 8 MiB of distinct live bytes (16
    // counted per entry), the garbage left, the active segment and spares.
    let bound = 16 * MIB + 16 * MIB + 4 * SEG;
    let have = dir_bytes(dir.path());
    assert!(
        have <= bound,
        "{have} bytes on disk after reopen (bound {bound})"
    );
}

#[test]
fn a_recovered_object_shares_what_its_source_shared() {
    // An object of 2 MiB, a snapshot, one 4 KiB write: head and clone share
    // all but one block. Its export imported into another store (what
    // recovery does) must share them too: 2 MiB appended, not 4. Then the
    // head is rewritten (its segments die, the clone's blocks stay).
    const SEG: u64 = MIB;
    let opts = StoreOptions {
        segment_bytes: SEG,
        ..Default::default()
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open_with(da.path(), opts).unwrap();
    let oid = ObjectId::new(1, "vm");
    for i in 0..8 {
        write(&a, &oid, i * (256 << 10), chunk(0, i, 256 << 10));
    }
    let orig = read(&a, &oid, 0, 2 * MIB).unwrap();
    a.apply(
        &OpRequest::new(oid.clone())
            .with_snapc(quarry_rados::SnapContext {
                seq: 1,
                snaps: vec![1],
            })
            .op(Op::Write {
                off: 4096,
                data: Bytes::from(vec![0xCD; 4096]),
            }),
    )
    .unwrap();
    let head = read(&a, &oid, 0, 2 * MIB).unwrap();
    let snap_of = |s: &Store| match &s
        .apply(
            &OpRequest::new(oid.clone())
                .at_snap(1)
                .op(Op::Read { off: 0, len: 0 }),
        )
        .unwrap()
        .outputs[0]
    {
        OpOutput::Data(d) => d.to_vec(),
        o => panic!("{o:?}"),
    };
    assert!(snap_of(&a) == orig);
    let blob = a.export_object(&oid).unwrap().expect("exported");
    let b = Store::open_with(db.path(), opts).unwrap();
    let before = log_bytes(&b, db.path());
    b.import_object(&oid, Some(blob)).unwrap();
    let grew = log_bytes(&b, db.path()) - before;
    assert!(
        grew < 3 * MIB,
        "importing 2 MiB shared by head and clone grew the log by {grew} bytes"
    );
    assert!(
        read(&b, &oid, 0, 2 * MIB).unwrap() == head,
        "head after import"
    );
    assert!(snap_of(&b) == orig, "snapshot after import");
    for pass in 1..=6 {
        for i in 0..8 {
            write(&b, &oid, i * (256 << 10), chunk(pass, i, 256 << 10));
        }
    }
    let last: Vec<u8> = (0..8).flat_map(|i| chunk(6, i, 256 << 10)).collect();
    assert!(snap_of(&b) == orig, "snapshot after the head's rewrites");
    assert!(read(&b, &oid, 0, 2 * MIB).unwrap() == last);
    drop(b);
    let b = Store::open_with(db.path(), opts).unwrap();
    assert!(snap_of(&b) == orig, "snapshot after reopen");
    assert!(read(&b, &oid, 0, 2 * MIB).unwrap() == last);
}
