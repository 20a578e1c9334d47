//! Property test: random op sequences (with snapshots, rollbacks and
//! trims) against a trivially correct in-memory model of one object.
//!
//! The model keeps the head's full state and, for every live snapshot, a
//! copy of the head's state when the snapshot was taken. The store must
//! agree on every read, at the head and at every snapshot.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, SnapContext, SnapId, NOSNAP};
use quarry_store::{Store, StoreOptions};

#[derive(Clone, Debug, Default, PartialEq)]
struct Obj {
    data: Vec<u8>,
    xattrs: BTreeMap<String, Bytes>,
    omap: BTreeMap<String, Bytes>,
}

#[derive(Default)]
struct Model {
    head: Option<Obj>,
    snaps: BTreeMap<SnapId, Option<Obj>>,
    seq: SnapId,
    version: u64,
}

impl Model {
    fn snapc(&self) -> SnapContext {
        SnapContext {
            seq: self.seq,
            snaps: self.snaps.keys().rev().copied().collect(),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Write(u64, u64, u8),
    WriteFull(u64, u8),
    Zero(u64, u64),
    Truncate(u64),
    Remove,
    Create(bool),
    SetXattr(u8, u8),
    RmXattr(u8),
    OmapSet(u8, u8),
    OmapRm(u8),
    OmapClear,
    /// A compound write whose last op fails: nothing may change.
    FailingCompound(u64, u8),
    Snap,
    /// Remove the n-th live snap (mod count).
    RmSnap(usize),
    /// Roll back to the n-th live snap (mod count).
    Rollback(usize),
}

const MAX_OFF: u64 = 40_000;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..MAX_OFF, 0..9000u64, any::<u8>()).prop_map(|(o, l, b)| Step::Write(o, l, b)),
        1 => (0..20_000u64, any::<u8>()).prop_map(|(l, b)| Step::WriteFull(l, b)),
        2 => (0..MAX_OFF, 0..20_000u64).prop_map(|(o, l)| Step::Zero(o, l)),
        2 => (0..MAX_OFF + 10_000).prop_map(Step::Truncate),
        1 => Just(Step::Remove),
        1 => any::<bool>().prop_map(Step::Create),
        1 => (0..4u8, any::<u8>()).prop_map(|(k, v)| Step::SetXattr(k, v)),
        1 => (0..4u8).prop_map(Step::RmXattr),
        1 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Step::OmapSet(k, v)),
        1 => (0..6u8).prop_map(Step::OmapRm),
        1 => Just(Step::OmapClear),
        1 => (0..MAX_OFF, any::<u8>()).prop_map(|(o, b)| Step::FailingCompound(o, b)),
        3 => Just(Step::Snap),
        1 => any::<usize>().prop_map(Step::RmSnap),
        1 => any::<usize>().prop_map(Step::Rollback),
    ]
}

/// Steps at the scale of extents: writes of up to ~1.6 MiB (several
/// extents of at most 64 blocks), mostly block-aligned, over a 3 MiB object, so
/// extents are split, trimmed, punched and copied (snapshots) at every
/// boundary.
fn big_step() -> impl Strategy<Value = Step> {
    const B: u64 = 4096;
    let off = (0..800u64, proptest::bool::weighted(0.7), 0..B)
        .prop_map(|(blk, aligned, r)| blk * B + if aligned { 0 } else { r });
    let len = (0..400u64, proptest::bool::weighted(0.6), 0..B)
        .prop_map(|(n, whole, r)| n * B + if whole { 0 } else { r });
    prop_oneof![
        8 => (off.clone(), len.clone(), any::<u8>()).prop_map(|(o, l, b)| Step::Write(o, l, b)),
        1 => (len.clone(), any::<u8>()).prop_map(|(l, b)| Step::WriteFull(l, b)),
        3 => (off.clone(), len).prop_map(|(o, l)| Step::Zero(o, l)),
        2 => off.prop_map(Step::Truncate),
        1 => Just(Step::Remove),
        3 => Just(Step::Snap),
        1 => any::<usize>().prop_map(Step::RmSnap),
        2 => any::<usize>().prop_map(Step::Rollback),
    ]
}

/// Write data that differs at every offset (mod 251, prime to the block
/// size), so a block read from the wrong place never matches by chance.
fn pattern(b: u8, off: u64, len: u64) -> Vec<u8> {
    (off..off + len)
        .map(|p| b.wrapping_add((p % 251) as u8))
        .collect()
}

fn oid() -> ObjectId {
    ObjectId::new(7, "obj")
}

/// Read everything observable of the object at `snap`; None if ENOENT.
fn observe(s: &Store, snap: SnapId) -> Option<(Obj, u64)> {
    let req = OpRequest::new(oid())
        .at_snap(snap)
        .op(Op::Stat)
        .op(Op::Read { off: 0, len: 0 })
        .op(Op::SparseRead { off: 0, len: 0 })
        .op(Op::GetXattrs)
        .op(Op::OmapGetVals {
            start_after: String::new(),
            prefix: String::new(),
            max: 0,
        });
    let r = match s.apply(&req) {
        Ok(r) => r,
        Err(e) if e.errno == Errno::ENOENT => return None,
        Err(e) => panic!("observe failed: {e}"),
    };
    let OpOutput::Stat(st) = &r.outputs[0] else {
        panic!()
    };
    let OpOutput::Data(d) = &r.outputs[1] else {
        panic!()
    };
    let OpOutput::Sparse(ext, sd) = &r.outputs[2] else {
        panic!()
    };
    let OpOutput::Xattrs(x) = &r.outputs[3] else {
        panic!()
    };
    let OpOutput::Omap(m, more) = &r.outputs[4] else {
        panic!()
    };
    assert!(!more);
    assert_eq!(st.size as usize, d.len());
    // The sparse read must rebuild the full read, holes as zeros.
    let mut rebuilt = vec![0u8; d.len()];
    let mut pos = 0usize;
    let mut last_end = 0u64;
    for &(o, l) in ext {
        assert!(o >= last_end, "extents ascending and disjoint: {ext:?}");
        last_end = o + l;
        rebuilt[o as usize..(o + l) as usize].copy_from_slice(&sd[pos..pos + l as usize]);
        pos += l as usize;
    }
    assert_eq!(pos, sd.len());
    assert_eq!(&rebuilt[..], &d[..], "sparse read disagrees with read");
    Some((
        Obj {
            data: d.to_vec(),
            xattrs: x.clone(),
            omap: m.clone(),
        },
        st.version,
    ))
}

fn key(k: u8) -> String {
    format!("k{k}")
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Memory,
    Disk,
    /// On disk with tiny data-log segments, so that compaction runs all the
    /// time (moving head and clone blocks), and reopened every few steps.
    DiskCompacting,
}

fn open(mode: Mode, dir: &std::path::Path) -> Store {
    match mode {
        Mode::Memory => Store::open_memory().unwrap(),
        Mode::Disk => Store::open(dir).unwrap(),
        Mode::DiskCompacting => Store::open_with(
            dir,
            StoreOptions {
                segment_bytes: 16 << 10,
                ..Default::default()
            },
        )
        .unwrap(),
    }
}

fn run(steps: Vec<Step>, mode: Mode) {
    // On disk, reads right after writes go through the writer's open
    // transaction (uncommitted-to-redb changes): both paths must agree.
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(mode, dir.path());
    let mut m = Model::default();
    let mut last_version = 0u64;
    for (i, st) in steps.into_iter().enumerate() {
        if mode == Mode::DiskCompacting && i % 7 == 6 {
            drop(s);
            s = open(mode, dir.path());
        }
        let base = OpRequest::new(oid()).with_snapc(m.snapc());
        // (request, model update, expected errno)
        let mut next = m.head.clone();
        let mut expect_err = None;
        let req = match &st {
            Step::Write(off, len, b) => {
                let h = next.get_or_insert_with(Obj::default);
                let end = (off + len) as usize;
                if h.data.len() < end {
                    h.data.resize(end, 0);
                }
                let d = pattern(*b, *off, *len);
                h.data[*off as usize..end].copy_from_slice(&d);
                Some(base.op(Op::Write {
                    off: *off,
                    data: Bytes::from(d),
                }))
            }
            Step::WriteFull(len, b) => {
                let h = next.get_or_insert_with(Obj::default);
                h.data = pattern(*b, 0, *len);
                Some(base.op(Op::WriteFull(Bytes::from(pattern(*b, 0, *len)))))
            }
            Step::Zero(off, len) => {
                if let Some(h) = next.as_mut() {
                    let end = ((off + len) as usize).min(h.data.len());
                    if (*off as usize) < end {
                        h.data[*off as usize..end].fill(0);
                    }
                }
                Some(base.op(Op::Zero {
                    off: *off,
                    len: *len,
                }))
            }
            Step::Truncate(size) => {
                next.get_or_insert_with(Obj::default)
                    .data
                    .resize(*size as usize, 0);
                Some(base.op(Op::Truncate(*size)))
            }
            Step::Remove => {
                if next.take().is_none() {
                    expect_err = Some(Errno::ENOENT);
                }
                Some(base.op(Op::Remove))
            }
            Step::Create(excl) => {
                if next.is_some() && *excl {
                    expect_err = Some(Errno::EEXIST);
                }
                next.get_or_insert_with(Obj::default);
                Some(base.op(Op::Create { exclusive: *excl }))
            }
            Step::SetXattr(k, v) => {
                next.get_or_insert_with(Obj::default)
                    .xattrs
                    .insert(key(*k), Bytes::from(vec![*v]));
                Some(base.op(Op::SetXattr(key(*k), Bytes::from(vec![*v]))))
            }
            Step::RmXattr(k) => {
                match next.as_mut() {
                    None => expect_err = Some(Errno::ENOENT),
                    Some(h) => {
                        if h.xattrs.remove(&key(*k)).is_none() {
                            expect_err = Some(Errno::ENODATA);
                        }
                    }
                }
                Some(base.op(Op::RmXattr(key(*k))))
            }
            Step::OmapSet(k, v) => {
                next.get_or_insert_with(Obj::default)
                    .omap
                    .insert(key(*k), Bytes::from(vec![*v; 3]));
                Some(base.op(Op::OmapSetVals(
                    [(key(*k), Bytes::from(vec![*v; 3]))].into(),
                )))
            }
            Step::OmapRm(k) => {
                match next.as_mut() {
                    None => expect_err = Some(Errno::ENOENT),
                    Some(h) => {
                        h.omap.remove(&key(*k));
                    }
                }
                Some(base.op(Op::OmapRmKeys(vec![key(*k)])))
            }
            Step::OmapClear => {
                match next.as_mut() {
                    None => expect_err = Some(Errno::ENOENT),
                    Some(h) => h.omap.clear(),
                }
                Some(base.op(Op::OmapClear))
            }
            Step::FailingCompound(off, b) => {
                expect_err = Some(Errno::ENODATA);
                Some(
                    base.op(Op::Write {
                        off: *off,
                        data: Bytes::from(vec![*b; 5000]),
                    })
                    .op(Op::OmapSetVals([("zz".to_string(), Bytes::new())].into()))
                    .op(Op::Truncate(3))
                    .op(Op::RmXattr("never-set".into())),
                )
            }
            Step::Rollback(n) => {
                if m.snaps.is_empty() {
                    None
                } else {
                    let (&sid, state) = m.snaps.iter().nth(n % m.snaps.len()).unwrap();
                    next = state.clone();
                    Some(base.op(Op::Rollback(sid)))
                }
            }
            Step::Snap => {
                m.seq += 1;
                m.snaps.insert(m.seq, m.head.clone());
                None
            }
            Step::RmSnap(n) => {
                if !m.snaps.is_empty() {
                    let sid = *m.snaps.keys().nth(n % m.snaps.len()).unwrap();
                    m.snaps.remove(&sid);
                    s.trim_snaps(7, &[sid]).unwrap();
                }
                None
            }
        };
        if let Some(req) = req {
            match (s.apply(&req), expect_err) {
                (Ok(r), None) => {
                    let changed = m.head.is_some() || next.is_some();
                    if changed {
                        assert!(r.version > last_version, "versions strictly increase");
                        last_version = r.version;
                        m.version = r.version;
                    }
                    m.head = next;
                }
                (Err(e), Some(want)) => assert_eq!(e.errno, want, "{st:?}"),
                (got, want) => panic!("{st:?}: got {got:?}, want error {want:?}"),
            }
        }
        // Head and every live snapshot must match the model.
        let got = observe(&s, NOSNAP);
        assert_eq!(
            got.as_ref().map(|g| &g.0),
            m.head.as_ref(),
            "head after {st:?}"
        );
        if let Some((_, v)) = got {
            assert_eq!(v, m.version, "head version after {st:?}");
        }
        for (sid, state) in &m.snaps {
            let got = observe(&s, *sid).map(|g| g.0);
            assert_eq!(got.as_ref(), state.as_ref(), "snap {sid} after {st:?}");
        }
    }
    // Removing every snapshot and the head frees everything.
    let all: Vec<SnapId> = m.snaps.keys().copied().collect();
    s.trim_snaps(7, &all).unwrap();
    if m.head.is_some() {
        s.apply(&OpRequest::new(oid()).op(Op::Remove)).unwrap();
    }
    let st = s.pool_stat(7).unwrap();
    assert_eq!((st.num_objects, st.num_bytes), (0, 0));
    if mode == Mode::DiskCompacting {
        // Nothing is live: after a reopen (checkpoint) the log holds at most
        // the active segment and the few records written since, beside at
        // most four spare files (segments let go, kept for reuse; each a
        // segment plus the record that crossed its end, which may be a
        // batch or a compaction step of several MiB).
        drop(s);
        let s = open(mode, dir.path());
        let u = s.usage().unwrap();
        let (mut log, mut spares) = (0u64, Vec::new());
        for e in std::fs::read_dir(dir.path().join("log")).unwrap() {
            let e = e.unwrap();
            let len = e.metadata().unwrap().len();
            if e.file_name().to_str().unwrap().ends_with(".spare") {
                spares.push(len);
            } else {
                log += len;
            }
        }
        assert!(
            log <= 256 << 10,
            "log holds {log} bytes with nothing live: {u:?}"
        );
        assert!(
            spares.len() <= 4 && spares.iter().all(|&l| l <= 16 << 20),
            "spare files {spares:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps, Mode::Memory);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn store_on_disk_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps, Mode::Disk);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_compacting_matches_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(steps, Mode::DiskCompacting);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
    #[test]
    fn extents_match_model(steps in proptest::collection::vec(big_step(), 1..24)) {
        run(steps, Mode::DiskCompacting);
    }
}
