//! Large writes marked uncached go to the data log with O_DIRECT (page-
//! aligned data after pad bytes, the rest of the record buffered): they
//! read back at once (page cache coherence), interleave with buffered
//! records and replay byte for byte after a crash, and a record whose
//! direct data did not all reach the disk is cut at recovery.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest};
use quarry_store::{Logged, Store};

const KIB: usize = 1 << 10;
const CHILD_ENV: &str = "QUARRY_DIRECT_CHILD_DIR";

/// The writes of the child: (object, offset, length, uncached, aligned
/// memory). Large uncached aligned ones go direct; the others (small,
/// cached, or in unaligned memory) are buffered, between them.
const WRITES: &[(u64, u64, usize, bool, bool)] = &[
    (0, 0, 4096 * KIB, true, true),
    (1, 0, 10 * KIB, true, true),
    (2, 0, 1024 * KIB, false, true),
    (3, 4096, 1024 * KIB, true, true),
    (4, 0, 1024 * KIB, true, false),
    (5, 0, 513 * KIB, true, true),
    (0, 1024 * KIB as u64, 512 * KIB, true, true),
    (6, 7, 300 * KIB, true, true),
    (7, 0, 2048 * KIB, true, true),
];

/// Bytes whose every byte depends on (write index, position).
fn pattern(i: usize, len: usize) -> Vec<u8> {
    let tag = format!("<write {i:03}>");
    tag.as_bytes()
        .iter()
        .enumerate()
        .cycle()
        .take(len)
        .enumerate()
        .map(|(k, (_, b))| b ^ (k / 4096) as u8)
        .collect()
}

/// `data` in a `Bytes` starting on a 4 KiB boundary of memory (as the
/// OSD's pooled receive buffers are), or one byte past it.
fn placed(data: &[u8], aligned: bool) -> Bytes {
    let mut v = vec![0u8; data.len() + 8192];
    let mis = v.as_ptr() as usize % 4096;
    let s = (4096 - mis) % 4096 + usize::from(!aligned);
    v[s..s + data.len()].copy_from_slice(data);
    Bytes::from(v).slice(s..s + data.len())
}

fn oid(o: u64) -> ObjectId {
    ObjectId::new(1, format!("obj{o}"))
}

fn read(s: &Store, oid: &ObjectId) -> quarry_rados::Result<Vec<u8>> {
    let r = s.apply(&OpRequest::new(oid.clone()).op(Op::Read { off: 0, len: 0 }))?;
    match &r.outputs[0] {
        OpOutput::Data(d) => Ok(d.to_vec()),
        o => panic!("{o:?}"),
    }
}

/// Apply write `i` with the uncached hint as the OSD gives it.
fn apply(s: &Store, rt: &tokio::runtime::Runtime, i: usize) {
    let (o, off, len, uncached, aligned) = WRITES[i];
    let req = OpRequest::new(oid(o)).op(Op::Write {
        off,
        data: placed(&pattern(i, len), aligned),
    });
    let l = Logged {
        uncached,
        ..Logged::default()
    };
    let p = s.enqueue_logged_blocking(req, l).unwrap();
    rt.block_on(p.wait()).unwrap();
}

/// What every object holds after the first `n` writes.
fn model(n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut m: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
    for (i, &(o, off, len, _, _)) in WRITES.iter().enumerate().take(n) {
        let v = m.entry(o).or_default();
        let (off, end) = (off as usize, off as usize + len);
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off..end].copy_from_slice(&pattern(i, len));
    }
    m.into_iter().collect()
}

fn check(s: &Store, n: usize) {
    for (o, want) in model(n) {
        let got = read(s, &oid(o)).unwrap();
        assert!(got == want, "object {o} differs after {n} writes");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn direct_writes_read_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let s = Store::open(dir.path()).unwrap();
    let before = quarry_store::direct_bytes();
    for i in 0..WRITES.len() {
        apply(&s, &rt, i);
        // Read through the buffered descriptor right after the direct
        // write: the page cache must not serve stale bytes.
        check(&s, i + 1);
    }
    assert!(
        quarry_store::direct_bytes() - before >= (4096 + 1024 + 512 + 2048) as u64 * KIB as u64,
        "the large aligned uncached writes went direct"
    );
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    check(&s, WRITES.len());
}

/// Child half of the crash tests: apply every write, then exit without
/// closing the store (no checkpoint: the log holds them all).
#[test]
fn direct_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = runtime();
    let s = Store::open(Path::new(&dir)).unwrap();
    for i in 0..WRITES.len() {
        apply(&s, &rt, i);
        println!("ACK {i}");
    }
    std::process::exit(0);
}

fn crashed_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "direct_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let acked = BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .filter(|l| l.contains("ACK "))
        .count();
    assert!(child.wait().unwrap().success());
    assert_eq!(acked, WRITES.len(), "child stopped early");
    dir
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.pop().unwrap()
}

/// (start, data length, redo length) of each record of a segment file.
/// Header: magic u32 | lsn u64 | data len u32 | redo len u32 | crc u32.
fn records(f: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 24 <= f.len() && f[off..off + 4] == 0x474C_5751u32.to_le_bytes() {
        let w = |i: usize| u32::from_le_bytes(f[off + i..off + i + 4].try_into().unwrap()) as usize;
        out.push((off, w(12), w(16)));
        off += 24 + w(12) + w(16);
    }
    out
}

#[test]
fn direct_and_buffered_records_replay_byte_for_byte() {
    let dir = crashed_store();
    let s = Store::open(dir.path()).unwrap();
    check(&s, WRITES.len());
}

#[test]
fn torn_direct_record_is_cut_at_recovery() {
    let dir = crashed_store();
    let seg = last_segment(dir.path());
    let mut f = std::fs::read(&seg).unwrap();
    let recs = records(&f);
    let &(start, data, _) = recs.last().unwrap();
    // The last write (2 MiB, direct) as if the power went while its data
    // was being written: header and redo on disk, the second half of the
    // page-aligned data not.
    assert!(data >= 2048 * KIB, "the last record holds the last write");
    let d0 = start + 24;
    let aligned_at = d0.next_multiple_of(4096);
    assert!(aligned_at - d0 < 4096, "data padded to the next page only");
    f[d0 + data / 2..d0 + data].fill(0);
    std::fs::write(&seg, &f).unwrap();
    let s = Store::open(dir.path()).unwrap();
    check(&s, WRITES.len() - 1);
    // The torn write is gone whole: its object never existed.
    let e = read(&s, &oid(7)).unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT);
    // The log was cut cleanly: what comes next survives a reopen.
    let rt = runtime();
    apply(&s, &rt, WRITES.len() - 1);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    check(&s, WRITES.len());
}
