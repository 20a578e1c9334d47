//! Object semantics of the local store, through `Store::apply`.

use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, SnapContext, NOSNAP};
use quarry_store::Store;

fn oid(name: &str) -> ObjectId {
    ObjectId::new(1, name)
}

fn snapc(seq: u64, snaps: &[u64]) -> SnapContext {
    SnapContext {
        seq,
        snaps: snaps.to_vec(),
    }
}

fn write(s: &Store, name: &str, off: u64, data: &[u8], sc: &SnapContext) -> u64 {
    s.apply(
        &OpRequest::new(oid(name))
            .with_snapc(sc.clone())
            .op(Op::Write {
                off,
                data: Bytes::copy_from_slice(data),
            }),
    )
    .unwrap()
    .version
}

fn read_at(s: &Store, name: &str, snap: u64) -> Result<Vec<u8>, Errno> {
    s.apply(
        &OpRequest::new(oid(name))
            .at_snap(snap)
            .op(Op::Read { off: 0, len: 0 }),
    )
    .map(|r| match &r.outputs[0] {
        OpOutput::Data(d) => d.to_vec(),
        o => panic!("unexpected {o:?}"),
    })
    .map_err(|e| e.errno)
}

fn errno(r: quarry_rados::Result<quarry_rados::OpReply>) -> Errno {
    r.unwrap_err().errno
}

#[test]
fn write_read_stat_remove() {
    let s = Store::open_memory().unwrap();
    assert_eq!(read_at(&s, "a", NOSNAP), Err(Errno::ENOENT));
    let v1 = write(&s, "a", 10, b"hello", &SnapContext::default());
    assert_eq!(
        read_at(&s, "a", NOSNAP).unwrap(),
        b"\0\0\0\0\0\0\0\0\0\0hello"
    );
    let r = s
        .apply(
            &OpRequest::new(oid("a"))
                .op(Op::Stat)
                .op(Op::Read { off: 12, len: 100 }),
        )
        .unwrap();
    match &r.outputs[0] {
        OpOutput::Stat(st) => {
            assert_eq!(st.size, 15);
            assert_eq!(st.version, v1);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(r.outputs[1], OpOutput::Data(Bytes::from_static(b"llo")));
    let v2 = write(&s, "a", 0, b"x", &SnapContext::default());
    assert!(v2 > v1);
    s.apply(&OpRequest::new(oid("a")).op(Op::Remove)).unwrap();
    assert_eq!(read_at(&s, "a", NOSNAP), Err(Errno::ENOENT));
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("a")).op(Op::Remove))),
        Errno::ENOENT
    );
    // Versions are never reused after remove + recreate.
    let v3 = write(&s, "a", 0, b"y", &SnapContext::default());
    assert!(v3 > v2);
    assert_eq!(s.pool_stat(1).unwrap().num_objects, 1);
    assert_eq!(s.pool_stat(1).unwrap().num_bytes, 1);
}

#[test]
fn version_asserts() {
    let s = Store::open_memory().unwrap();
    // Missing object has version 0.
    s.apply(&OpRequest::new(oid("v")).op(Op::AssertVersion(0)))
        .unwrap();
    let v = write(&s, "v", 0, b"a", &SnapContext::default());
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("v")).op(Op::AssertVersion(v + 1)))),
        Errno::ERANGE
    );
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("v")).op(Op::AssertVersion(v - 1)))),
        Errno::EOVERFLOW
    );
    let r = s
        .apply(
            &OpRequest::new(oid("v"))
                .op(Op::AssertVersion(v))
                .op(Op::WriteFull(Bytes::from_static(b"b"))),
        )
        .unwrap();
    assert!(r.version > v);
}

#[test]
fn compound_atomicity() {
    let s = Store::open_memory().unwrap();
    write(&s, "c", 0, b"orig", &SnapContext::default());
    let before = s.pool_stat(1).unwrap();
    let e = s.apply(
        &OpRequest::new(oid("c"))
            .op(Op::Write {
                off: 0,
                data: Bytes::from_static(b"NEW!"),
            })
            .op(Op::SetXattr("k".into(), Bytes::from_static(b"v")))
            .op(Op::OmapSetVals(
                [("o".to_string(), Bytes::from_static(b"1"))].into(),
            ))
            .op(Op::RmXattr("missing".into()))
            .op(Op::Truncate(0)),
    );
    assert_eq!(e.unwrap_err().errno, Errno::ENODATA);
    assert_eq!(read_at(&s, "c", NOSNAP).unwrap(), b"orig");
    let r = s
        .apply(
            &OpRequest::new(oid("c"))
                .op(Op::GetXattrs)
                .op(Op::OmapGetVals {
                    start_after: String::new(),
                    prefix: String::new(),
                    max: 0,
                }),
        )
        .unwrap();
    assert_eq!(r.outputs[0], OpOutput::Xattrs(BTreeMap::new()));
    assert_eq!(r.outputs[1], OpOutput::Omap(BTreeMap::new(), false));
    assert_eq!(s.pool_stat(1).unwrap(), before);
    // A failed create of a new object leaves nothing behind.
    let e = s.apply(
        &OpRequest::new(oid("new"))
            .op(Op::Write {
                off: 0,
                data: Bytes::from_static(b"x"),
            })
            .op(Op::Create { exclusive: true }),
    );
    assert_eq!(e.unwrap_err().errno, Errno::EEXIST);
    assert_eq!(read_at(&s, "new", NOSNAP), Err(Errno::ENOENT));
    assert_eq!(s.list(1, None).unwrap().len(), 1);
}

#[test]
fn scattered_writes_after_a_snapshot_keep_a_bounded_true_overlap() {
    let s = Store::open_memory().unwrap();
    let obj = 4usize << 20;
    write(&s, "o", 0, &vec![1u8; obj], &snapc(0, &[]));
    // Every third 4 KiB block rewritten after snapshot 1: 342 changed
    // ranges, each leaving a gap of two unchanged blocks.
    for blk in (0..obj / 4096).step_by(3) {
        write(&s, "o", (blk * 4096) as u64, &[2u8; 4096], &snapc(1, &[1]));
    }
    let r = s
        .apply(&OpRequest::new(oid("o")).op(Op::ListSnaps))
        .unwrap();
    let OpOutput::Snaps(ss) = &r.outputs[0] else {
        panic!()
    };
    let ov = &ss.clones[0].overlap;
    assert_eq!(ov.len(), quarry_store::MAX_OVERLAP_RANGES);
    let snap = read_at(&s, "o", 1).unwrap();
    let head = read_at(&s, "o", NOSNAP).unwrap();
    assert_eq!(snap, vec![1u8; obj]);
    // What the overlap still claims is really identical in both.
    for &(o, l) in ov {
        let (o, e) = (o as usize, (o + l) as usize);
        assert_eq!(snap[o..e], head[o..e], "overlap ({o}, {l}) differs");
    }
}

#[test]
fn snapshots_clone_on_write() {
    let s = Store::open_memory().unwrap();
    write(&s, "o", 0, &[1u8; 8192], &snapc(0, &[]));
    // snap 1 taken; write with the new context clones the head.
    write(&s, "o", 0, &[2u8; 4096], &snapc(1, &[1]));
    assert_eq!(read_at(&s, "o", 1).unwrap(), vec![1u8; 8192]);
    let mut head = vec![2u8; 4096];
    head.extend_from_slice(&[1u8; 4096]);
    assert_eq!(read_at(&s, "o", NOSNAP).unwrap(), head);
    // Second write under the same context does not clone again.
    write(&s, "o", 4096, &[3u8; 10], &snapc(1, &[1]));
    assert_eq!(read_at(&s, "o", 1).unwrap(), vec![1u8; 8192]);
    // snaps 2 and 3; a write at seq 3 makes one clone for both.
    write(&s, "o", 0, &[4u8; 1], &snapc(3, &[3, 2, 1]));
    let r = s
        .apply(&OpRequest::new(oid("o")).op(Op::ListSnaps))
        .unwrap();
    let OpOutput::Snaps(ss) = &r.outputs[0] else {
        panic!()
    };
    assert_eq!(ss.seq, 3);
    assert_eq!(ss.clones.len(), 3);
    assert_eq!(ss.clones[0].clone, 1);
    assert_eq!(ss.clones[0].snaps, vec![1]);
    assert_eq!(ss.clones[0].overlap, vec![(4106, 4086)]);
    assert_eq!(ss.clones[1].clone, 3);
    assert_eq!(ss.clones[1].snaps, vec![2, 3]);
    assert_eq!(ss.clones[1].overlap, vec![(1, 8191)]);
    assert_eq!(ss.clones[2].clone, NOSNAP);
    let mut at2 = head.clone();
    at2[4096..4106].fill(3);
    assert_eq!(read_at(&s, "o", 2).unwrap(), at2);
    assert_eq!(read_at(&s, "o", 3).unwrap(), at2);
    // Object created after a snapshot does not exist at it.
    write(&s, "late", 0, b"x", &snapc(3, &[3, 2, 1]));
    assert_eq!(read_at(&s, "late", 3), Err(Errno::ENOENT));
    assert_eq!(read_at(&s, "late", 4).unwrap(), b"x");
    // Writes at a snap are refused; bad snap contexts too.
    let e = s.apply(&OpRequest::new(oid("o")).at_snap(1).op(Op::Truncate(0)));
    assert_eq!(e.unwrap_err().errno, Errno::EROFS);
    let e = s.apply(
        &OpRequest::new(oid("o"))
            .with_snapc(snapc(1, &[1, 2]))
            .op(Op::Truncate(0)),
    );
    assert_eq!(e.unwrap_err().errno, Errno::EINVAL);
}

#[test]
fn remove_head_keeps_clones_and_trim_frees() {
    let s = Store::open_memory().unwrap();
    write(&s, "o", 0, &[9u8; 4 << 20], &snapc(0, &[]));
    assert_eq!(s.pool_stat(1).unwrap().num_bytes, 4 << 20);
    s.apply(
        &OpRequest::new(oid("o"))
            .with_snapc(snapc(1, &[1]))
            .op(Op::Remove),
    )
    .unwrap();
    assert_eq!(read_at(&s, "o", NOSNAP), Err(Errno::ENOENT));
    assert_eq!(read_at(&s, "o", 1).unwrap().len(), 4 << 20);
    assert!(s.list(1, None).unwrap().is_empty());
    // Recovery's listing keeps it: its clone must be copied.
    let all = s.list_all(1).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "o");
    let r = s
        .apply(&OpRequest::new(oid("o")).op(Op::ListSnaps))
        .unwrap();
    let OpOutput::Snaps(ss) = &r.outputs[0] else {
        panic!()
    };
    assert_eq!(ss.clones.len(), 1);
    let st = s.pool_stat(1).unwrap();
    assert_eq!((st.num_objects, st.num_bytes), (1, 4 << 20));
    assert_eq!(s.trim_snaps(1, &[1]).unwrap(), 4 << 20);
    let st = s.pool_stat(1).unwrap();
    assert_eq!((st.num_objects, st.num_bytes), (0, 0));
    assert!(s.list_all(1).unwrap().is_empty());
    let u = s.usage().unwrap();
    assert_eq!((u.objects, u.stored_bytes), (0, 0));
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("o")).op(Op::ListSnaps))),
        Errno::ENOENT
    );
}

#[test]
fn rollback() {
    let s = Store::open_memory().unwrap();
    write(&s, "r", 0, b"first", &snapc(0, &[]));
    s.apply(
        &OpRequest::new(oid("r"))
            .with_snapc(snapc(1, &[1]))
            .op(Op::WriteFull(Bytes::from_static(b"second version")))
            .op(Op::SetXattr("x".into(), Bytes::from_static(b"1"))),
    )
    .unwrap();
    s.apply(
        &OpRequest::new(oid("r"))
            .with_snapc(snapc(1, &[1]))
            .op(Op::Rollback(1)),
    )
    .unwrap();
    assert_eq!(read_at(&s, "r", NOSNAP).unwrap(), b"first");
    let e = s.apply(&OpRequest::new(oid("r")).op(Op::GetXattr("x".into())));
    assert_eq!(e.unwrap_err().errno, Errno::ENODATA);
    // Rollback to a snap where the object did not exist removes the head.
    write(&s, "n", 0, b"new", &snapc(1, &[1]));
    s.apply(
        &OpRequest::new(oid("n"))
            .with_snapc(snapc(1, &[1]))
            .op(Op::Rollback(1)),
    )
    .unwrap();
    assert_eq!(read_at(&s, "n", NOSNAP), Err(Errno::ENOENT));
}

#[test]
fn sparse_zero_truncate() {
    let s = Store::open_memory().unwrap();
    write(&s, "s", 8192, &[5u8; 100], &snapc(0, &[]));
    write(&s, "s", 100_000, &[6u8; 5000], &snapc(0, &[]));
    let r = s
        .apply(&OpRequest::new(oid("s")).op(Op::SparseRead { off: 0, len: 0 }))
        .unwrap();
    let OpOutput::Sparse(ext, data) = &r.outputs[0] else {
        panic!()
    };
    // Block granularity: the extent starts at the block holding 100_000.
    assert_eq!(ext, &vec![(8192, 100), (98304, 6696)]);
    assert_eq!(data.len(), 6796);
    assert_eq!(&data[100..100 + 1696], &[0u8; 1696][..]);
    assert_eq!(&data[100 + 1696..], &[6u8; 5000][..]);
    // Zero past end does not extend; zero frees blocks.
    s.apply(&OpRequest::new(oid("s")).op(Op::Zero {
        off: 100_000,
        len: 1 << 20,
    }))
    .unwrap();
    let r = s
        .apply(
            &OpRequest::new(oid("s"))
                .op(Op::Stat)
                .op(Op::SparseRead { off: 0, len: 0 }),
        )
        .unwrap();
    let OpOutput::Stat(st) = &r.outputs[0] else {
        panic!()
    };
    assert_eq!(st.size, 105_000);
    let OpOutput::Sparse(ext, _) = &r.outputs[1] else {
        panic!()
    };
    assert_eq!(ext, &vec![(8192, 100), (98304, 1696)]);
    // Truncate grows with a hole, shrinks freeing data.
    s.apply(&OpRequest::new(oid("s")).op(Op::Truncate(1 << 20)))
        .unwrap();
    assert_eq!(read_at(&s, "s", NOSNAP).unwrap().len(), 1 << 20);
    s.apply(&OpRequest::new(oid("s")).op(Op::Truncate(8200)))
        .unwrap();
    assert_eq!(s.pool_stat(1).unwrap().num_bytes, 8);
    let d = read_at(&s, "s", NOSNAP).unwrap();
    assert_eq!(d.len(), 8200);
    assert_eq!(&d[8192..], &[5u8; 8]);
    // Zero on a missing object is a no-op.
    s.apply(&OpRequest::new(oid("none")).op(Op::Zero { off: 0, len: 10 }))
        .unwrap();
    assert_eq!(read_at(&s, "none", NOSNAP), Err(Errno::ENOENT));
    // Overflow and size cap.
    let e = s.apply(&OpRequest::new(oid("s")).op(Op::Write {
        off: u64::MAX,
        data: Bytes::from_static(b"ab"),
    }));
    assert_eq!(e.unwrap_err().errno, Errno::EINVAL);
    let e = s.apply(&OpRequest::new(oid("s")).op(Op::Truncate(1 << 41)));
    assert_eq!(e.unwrap_err().errno, Errno::EFBIG);
}

#[test]
fn omap_and_xattrs() {
    let s = Store::open_memory().unwrap();
    let kv: BTreeMap<String, Bytes> = ["a1", "a2", "a3", "b1", "b2"]
        .iter()
        .map(|k| (k.to_string(), Bytes::from(k.as_bytes().to_vec())))
        .collect();
    s.apply(&OpRequest::new(oid("m")).op(Op::OmapSetVals(kv)))
        .unwrap();
    let get = |start_after: &str, prefix: &str, max: u64| {
        let r = s
            .apply(&OpRequest::new(oid("m")).op(Op::OmapGetVals {
                start_after: start_after.into(),
                prefix: prefix.into(),
                max,
            }))
            .unwrap();
        match &r.outputs[0] {
            OpOutput::Omap(m, more) => (m.keys().cloned().collect::<Vec<_>>(), *more),
            o => panic!("{o:?}"),
        }
    };
    assert_eq!(get("", "", 0).0.len(), 5);
    assert_eq!(get("", "a", 0).0, vec!["a1", "a2", "a3"]);
    assert_eq!(get("a1", "a", 0).0, vec!["a2", "a3"]);
    assert_eq!(get("", "", 2), (vec!["a1".into(), "a2".into()], true));
    assert_eq!(get("a3", "", 2), (vec!["b1".into(), "b2".into()], false));
    assert_eq!(get("b", "a", 0).0, Vec::<String>::new());
    // Reads within the request see its own writes.
    let r = s
        .apply(
            &OpRequest::new(oid("m"))
                .op(Op::OmapRmKeys(vec!["a1".into(), "zz".into()]))
                .op(Op::OmapSetVals([("a0".to_string(), Bytes::new())].into()))
                .op(Op::OmapGetVals {
                    start_after: String::new(),
                    prefix: "a".into(),
                    max: 2,
                })
                .op(Op::OmapGetValsByKeys(vec![
                    "a0".into(),
                    "a1".into(),
                    "b2".into(),
                ])),
        )
        .unwrap();
    let OpOutput::Omap(m, more) = &r.outputs[2] else {
        panic!()
    };
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["a0", "a2"]);
    assert!(*more);
    let OpOutput::Omap(m, _) = &r.outputs[3] else {
        panic!()
    };
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["a0", "b2"]);
    s.apply(&OpRequest::new(oid("m")).op(Op::OmapClear))
        .unwrap();
    assert_eq!(get("", "", 0).0.len(), 0);
    // xattrs.
    s.apply(&OpRequest::new(oid("x")).op(Op::SetXattr("k".into(), Bytes::from_static(b"v"))))
        .unwrap();
    let r = s
        .apply(&OpRequest::new(oid("x")).op(Op::GetXattr("k".into())))
        .unwrap();
    assert_eq!(r.outputs[0], OpOutput::Data(Bytes::from_static(b"v")));
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("x")).op(Op::GetXattr("q".into())))),
        Errno::ENODATA
    );
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("nope")).op(Op::GetXattr("q".into())))),
        Errno::ENOENT
    );
    assert_eq!(
        errno(s.apply(&OpRequest::new(oid("nope")).op(Op::OmapGetVals {
            start_after: String::new(),
            prefix: String::new(),
            max: 0
        }))),
        Errno::ENOENT
    );
}

#[test]
fn list_namespaces_and_remove_pool() {
    let s = Store::open_memory().unwrap();
    for (ns, n) in [("", "b"), ("", "a"), ("x", "a"), ("", "a\0z")] {
        s.apply(
            &OpRequest::new(ObjectId::with_namespace(1, ns, n)).op(Op::Create { exclusive: false }),
        )
        .unwrap();
    }
    s.apply(&OpRequest::new(ObjectId::new(2, "other")).op(Op::Create { exclusive: true }))
        .unwrap();
    let all = s.list(1, None).unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|e| (e.namespace.as_str(), e.name.as_str()))
        .collect();
    assert_eq!(names, vec![("", "a"), ("", "a\0z"), ("", "b"), ("x", "a")]);
    assert_eq!(s.list(1, Some("x")).unwrap().len(), 1);
    assert_eq!(s.list(1, Some("")).unwrap().len(), 3);
    s.remove_pool(1).unwrap();
    assert!(s.list(1, None).unwrap().is_empty());
    assert_eq!(s.pool_stat(1).unwrap().num_objects, 0);
    assert_eq!(s.list(2, None).unwrap().len(), 1);
}

/// Recovery's export/import: the importer ends up identical to the
/// exporter (head, clones, versions, omap, xattrs, counters), replacing
/// whatever it held, and a removal export wipes every instance.
#[test]
fn export_import_moves_clones_and_versions() {
    let a = Store::open_memory().unwrap();
    let b = Store::open_memory().unwrap();
    write(&a, "x", 0, b"old-data", &snapc(0, &[]));
    a.apply(
        &OpRequest::new(oid("x"))
            .op(Op::SetXattr("k".into(), Bytes::from_static(b"v")))
            .op(Op::OmapSetVals(BTreeMap::from([(
                "m".to_string(),
                Bytes::from_static(b"1"),
            )]))),
    )
    .unwrap();
    // Snapshot 5, then overwrite: the old state becomes a clone.
    let v = write(&a, "x", 0, b"NEW", &snapc(5, &[5]));
    // The importer holds a diverged, different version of the object.
    write(&b, "x", 100, b"stale", &snapc(0, &[]));
    let blob = a.export_object(&oid("x")).unwrap().expect("exists");
    b.import_object(&oid("x"), Some(blob.clone())).unwrap();
    assert_eq!(read_at(&b, "x", NOSNAP).unwrap(), b"NEW-data");
    assert_eq!(read_at(&b, "x", 5).unwrap(), b"old-data");
    let st = |s: &Store| {
        s.apply(
            &OpRequest::new(oid("x"))
                .op(Op::Stat)
                .op(Op::GetXattrs)
                .op(Op::OmapGetVals {
                    start_after: String::new(),
                    prefix: String::new(),
                    max: 0,
                }),
        )
        .unwrap()
    };
    assert_eq!(st(&a), st(&b));
    assert_eq!(st(&b).version, v);
    assert_eq!(b.export_object(&oid("x")).unwrap(), Some(blob));
    assert_eq!(b.pool_stat(1).unwrap(), a.pool_stat(1).unwrap());
    // Later local writes take versions above the imported ones.
    assert!(write(&b, "x", 0, b"z", &snapc(5, &[5])) > v);
    // A removal wipes head and clones.
    b.import_object(&oid("x"), None).unwrap();
    assert_eq!(read_at(&b, "x", NOSNAP), Err(Errno::ENOENT));
    assert_eq!(read_at(&b, "x", 5), Err(Errno::ENOENT));
    assert_eq!(b.export_object(&oid("x")).unwrap(), None);
    assert_eq!(b.pool_stat(1).unwrap().num_objects, 0);
    // A truncated export is refused whole.
    let blob = a.export_object(&oid("x")).unwrap().expect("exists");
    let e = b
        .import_object(&oid("x"), Some(blob[..blob.len() - 3].to_vec()))
        .unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    assert_eq!(b.export_object(&oid("x")).unwrap(), None);
}

/// A deep scrub's digest: two stores holding the same object (one by
/// import) digest alike, whatever their extents; a flipped data byte is
/// counted as a bad block and changes the digest; a malformed export is
/// an error, not a digest.
#[test]
fn export_digest_matches_in_sync_copies_and_counts_damaged_blocks() {
    let a = Store::open_memory().unwrap();
    let b = Store::open_memory().unwrap();
    // a: two writes (two extents); b: the same bytes by import.
    write(&a, "x", 0, &[7u8; 8192], &snapc(0, &[]));
    write(&a, "x", 8192, &[9u8; 4096], &snapc(0, &[]));
    let blob = a.export_object(&oid("x")).unwrap().expect("exists");
    b.import_object(&oid("x"), Some(blob.clone())).unwrap();
    let da = quarry_store::export_digest(&blob, &"x").unwrap();
    let db =
        quarry_store::export_digest(&b.export_object(&oid("x")).unwrap().unwrap(), &"x").unwrap();
    assert_eq!(da, db);
    assert_eq!(da.bad_blocks, 0);
    assert_eq!(da.len, blob.len() as u64);
    // Flip one byte inside the second block's data (the export carries
    // each block's bytes after its stored crc32c).
    let at = blob
        .windows(4096)
        .position(|w| w.iter().all(|&x| x == 9))
        .expect("third block in the export");
    let mut bad = blob.clone();
    bad[at + 17] ^= 0x40;
    let dbad = quarry_store::export_digest(&bad, &"x").unwrap();
    assert_eq!(dbad.bad_blocks, 1);
    assert_ne!(dbad.crc, da.crc);
    // A truncated export is refused.
    let e = quarry_store::export_digest(&blob[..blob.len() - 3], &"x").unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
}
