//! Snapshots, rollback, clones (read-through, copy-up, overlap, flatten),
//! diffs, space reclamation, O(1) clones, multi-client visibility.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use quarry_common::Errno;
use quarry_rbd::*;

async fn open(e: &Env, io: &IoCtx, name: &str) -> Image {
    e.rbd.open(io, name, &OpenOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_data() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 16 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(&e, &e.io, "img").await;
    let v1 = pattern((16 * MIB) as usize, 1);
    img.write(0, v1.clone()).await.unwrap();
    let s1 = img.snap_create("s1").await.unwrap();
    assert_eq!(errno(img.snap_create("s1").await), Errno::EEXIST);

    // Overwrite, discard, shrink: the snapshot keeps its data and size.
    img.write(MIB, pattern(MIB as usize, 2)).await.unwrap();
    img.discard(4 * MIB, 4 * MIB).await.unwrap();
    img.resize(6 * MIB).await.unwrap();
    let s2 = img.snap_create("s2").await.unwrap();
    assert!(s2 > s1);
    img.write(0, pattern(100, 3)).await.unwrap();

    let list = img.snap_list().await.unwrap();
    assert_eq!(
        list.iter()
            .map(|s| (s.name.as_str(), s.size))
            .collect::<Vec<_>>(),
        vec![("s1", 16 * MIB), ("s2", 6 * MIB)]
    );
    assert!(list.iter().all(|s| !s.protected && s.timestamp_ns > 0));
    assert_eq!(img.snap_info("s2").await.unwrap().id, s2);

    let at1 = e
        .rbd
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("s1".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!(at1.size(), 16 * MIB);
    assert_eq!(at1.read(0, 16 * MIB).await.unwrap(), v1);

    let mut m2 = v1[..(6 * MIB) as usize].to_vec();
    m2[MIB as usize..(2 * MIB) as usize].copy_from_slice(&pattern(MIB as usize, 2));
    m2[(4 * MIB) as usize..].fill(0);
    img.set_snap(Some(SnapSpec::Name("s2".into())))
        .await
        .unwrap();
    assert_eq!(img.size(), 6 * MIB);
    assert_eq!(img.read(0, 6 * MIB).await.unwrap().as_ref(), &m2[..]);
    assert_eq!(errno(img.write(0, pattern(1, 1)).await), Errno::EROFS);
    img.set_snap(None).await.unwrap();
    assert_eq!(img.read(0, 100).await.unwrap(), pattern(100, 3));

    // Rename, protect, remove.
    img.snap_rename("s2", "two").await.unwrap();
    assert_eq!(errno(img.snap_rename("two", "s1").await), Errno::EEXIST);
    assert!(img.snap_exists("two").await.unwrap() && !img.snap_exists("s2").await.unwrap());
    img.snap_protect("two").await.unwrap();
    assert_eq!(errno(img.snap_protect("two").await), Errno::EBUSY);
    assert!(img.snap_is_protected("two").await.unwrap());
    assert_eq!(errno(img.snap_remove("two").await), Errno::EBUSY);
    img.snap_unprotect("two").await.unwrap();
    assert_eq!(errno(img.snap_unprotect("two").await), Errno::EINVAL);
    img.snap_remove("two").await.unwrap();
    img.snap_remove("s1").await.unwrap();
    assert!(img.snap_list().await.unwrap().is_empty());
    assert_eq!(img.read(0, 100).await.unwrap(), pattern(100, 3));
    assert_eq!(img.read(MIB, MIB).await.unwrap(), pattern(MIB as usize, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_data_and_size() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(&e, &e.io, "img").await;
    let v1 = pattern((4 * MIB) as usize, 5);
    img.write(0, v1.clone()).await.unwrap();
    img.snap_create("s").await.unwrap();
    img.write(0, pattern(4096, 6)).await.unwrap();
    img.write(5 * MIB, pattern(4096, 7)).await.unwrap(); // object created after the snapshot
    img.resize(20 * MIB).await.unwrap();
    img.write(18 * MIB, pattern(4096, 8)).await.unwrap();
    img.snap_rollback("s").await.unwrap();
    assert_eq!(img.size(), 8 * MIB);
    let r = img.read(0, 8 * MIB).await.unwrap();
    assert_eq!(&r[..(4 * MIB) as usize], &v1[..]);
    assert!(r[(4 * MIB) as usize..].iter().all(|&b| b == 0));
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        1
    );
    img.resize(20 * MIB).await.unwrap();
    assert!(img
        .read(8 * MIB, 12 * MIB)
        .await
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    // The snapshot is intact and a fresh handle agrees.
    let fresh = open(&e, &e.io, "img").await;
    assert_eq!(fresh.read(0, 4 * MIB).await.unwrap(), v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_read_through_copy_up_flatten() {
    let e = env().await;
    e.rbd
        .create(&e.io, "parent", 12 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let parent = open(&e, &e.io, "parent").await;
    let pdata = pattern((12 * MIB) as usize, 11);
    parent.write(0, pdata.clone()).await.unwrap();
    parent.snap_create("gold").await.unwrap();
    assert_eq!(
        errno(
            e.rbd
                .clone(
                    &e.io,
                    "parent",
                    "gold",
                    &e.io,
                    "child",
                    &CreateOptions::default()
                )
                .await
        ),
        Errno::EINVAL
    );
    assert_eq!(
        errno(
            e.rbd
                .clone(
                    &e.io,
                    "parent",
                    "nosnap",
                    &e.io,
                    "child",
                    &CreateOptions::default()
                )
                .await
        ),
        Errno::ENOENT
    );
    parent.snap_protect("gold").await.unwrap();
    // Without deep-flatten: flatten leaves the child's snapshot linked
    // (see `deep_flatten_*` for the default).
    let shallow = CreateOptions {
        order: 0,
        features: Some(FEATURES_DEFAULT & !FEATURE_DEEP_FLATTEN),
    };
    e.rbd
        .clone(&e.io, "parent", "gold", &e.io, "child", &shallow)
        .await
        .unwrap();
    assert_eq!(
        errno(
            e.rbd
                .clone(
                    &e.io,
                    "parent",
                    "gold",
                    &e.io,
                    "child",
                    &CreateOptions::default()
                )
                .await
        ),
        Errno::EEXIST
    );
    let no_layering = CreateOptions {
        order: 0,
        features: Some(FEATURE_EXCLUSIVE_LOCK),
    };
    assert_eq!(
        errno(
            e.rbd
                .clone(&e.io, "parent", "gold", &e.io, "c2", &no_layering)
                .await
        ),
        Errno::EINVAL
    );

    // Writing the parent head after the snapshot does not affect the child.
    parent.write(0, pattern(MIB as usize, 99)).await.unwrap();

    let child = open(&e, &e.io, "child").await;
    assert!(data_objects(e.rados.as_ref(), e.io.pool_id, child.id())
        .await
        .is_empty());
    assert_eq!(child.size(), 12 * MIB);
    assert_eq!(child.overlap().unwrap(), 12 * MIB);
    let pi = child.parent_info().await.unwrap();
    assert_eq!(
        (
            pi.pool_name.as_str(),
            pi.image_name.as_str(),
            pi.snap_name.as_str()
        ),
        ("rbd", "parent", "gold")
    );
    assert_eq!(pi.overlap, 12 * MIB);
    assert_eq!(child.stat().parent_pool, e.io.pool_id);
    assert_eq!(child.stat().parent_name, "parent");
    assert_eq!(child.read(0, 12 * MIB).await.unwrap(), pdata);

    let kids = e.rbd.children(&e.io, "parent", "gold").await.unwrap();
    assert_eq!(
        kids.iter()
            .map(|c| c.image_name.as_str())
            .collect::<Vec<_>>(),
        vec!["child"]
    );
    assert_eq!(errno(parent.snap_unprotect("gold").await), Errno::EBUSY);
    assert_eq!(errno(parent.snap_remove("gold").await), Errno::EBUSY);

    // Copy-up: a 4 KiB write in the middle of object 1 keeps the rest of
    // the object's parent data, in one object of the child.
    let mut model = pdata.to_vec();
    child
        .write(4 * MIB + 4096, pattern(4096, 42))
        .await
        .unwrap();
    model[(4 * MIB + 4096) as usize..(4 * MIB + 8192) as usize].copy_from_slice(&pattern(4096, 42));
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, child.id())
            .await
            .len(),
        1
    );
    assert_eq!(child.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);
    let fresh = open(&e, &e.io, "child").await;
    assert_eq!(fresh.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);

    // Discard inside the overlap must not let the parent show through.
    child.discard(0, 4 * MIB).await.unwrap();
    child.discard(8 * MIB + 100, 1000).await.unwrap();
    model[..(4 * MIB) as usize].fill(0);
    model[(8 * MIB + 100) as usize..(8 * MIB + 1100) as usize].fill(0);
    assert_eq!(child.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);

    // A snapshot of the child keeps reading through to the parent.
    child.snap_create("cs").await.unwrap();

    // Shrink reduces the overlap, growing back exposes zeros, not parent data.
    child.resize(6 * MIB).await.unwrap();
    assert_eq!(child.overlap().unwrap(), 6 * MIB);
    child.resize(12 * MIB).await.unwrap();
    assert_eq!(child.overlap().unwrap(), 6 * MIB);
    model[(6 * MIB) as usize..].fill(0);
    assert_eq!(child.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);

    // Flatten: all parent data copied, parent detached, progress reported.
    let mut calls = Vec::new();
    child.flatten(|d, t| calls.push((d, t))).await.unwrap();
    assert_eq!(calls.first(), Some(&(0, 2)));
    assert_eq!(calls.last(), Some(&(2, 2)));
    assert_eq!(errno(child.parent_info().await), Errno::ENOENT);
    assert_eq!(child.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);
    let fresh = open(&e, &e.io, "child").await;
    assert_eq!(errno(fresh.overlap()), Errno::ENOENT);
    assert_eq!(fresh.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);

    // The child's snapshot still references the parent: the link stays.
    assert_eq!(
        e.rbd.children(&e.io, "parent", "gold").await.unwrap().len(),
        1
    );
    assert_eq!(errno(parent.snap_unprotect("gold").await), Errno::EBUSY);
    let at_cs = e
        .rbd
        .open(
            &e.io,
            "child",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("cs".into())),
            },
        )
        .await
        .unwrap();
    let mut cs_model = pdata.to_vec();
    cs_model[(4 * MIB + 4096) as usize..(4 * MIB + 8192) as usize]
        .copy_from_slice(&pattern(4096, 42));
    cs_model[..(4 * MIB) as usize].fill(0);
    cs_model[(8 * MIB + 100) as usize..(8 * MIB + 1100) as usize].fill(0);
    assert_eq!(
        at_cs.read(0, 12 * MIB).await.unwrap().as_ref(),
        &cs_model[..]
    );
    drop(at_cs);
    child.snap_remove("cs").await.unwrap();
    assert!(e
        .rbd
        .children(&e.io, "parent", "gold")
        .await
        .unwrap()
        .is_empty());
    parent.snap_unprotect("gold").await.unwrap();
    parent.snap_remove("gold").await.unwrap();
    // The flattened child no longer needs the parent at all.
    let fresh = open(&e, &e.io, "child").await;
    assert_eq!(fresh.read(0, 12 * MIB).await.unwrap().as_ref(), &model[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_across_pools_namespaces_and_chains() {
    let e = env().await;
    e.rados.pool_create("other").await.unwrap();
    let other = e.rbd.ioctx("other", "").await.unwrap();
    let ns = e.rbd.ioctx("other", "tenant").await.unwrap();
    e.rbd.namespace_create(&ns).await.unwrap();

    e.rbd
        .create(&e.io, "base", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let base = open(&e, &e.io, "base").await;
    let data = pattern((8 * MIB) as usize, 21);
    base.write(0, data.clone()).await.unwrap();
    base.snap_create("s").await.unwrap();
    base.snap_protect("s").await.unwrap();
    // Different order in the child.
    e.rbd
        .clone(
            &e.io,
            "base",
            "s",
            &ns,
            "mid",
            &CreateOptions {
                order: 20,
                features: None,
            },
        )
        .await
        .unwrap();
    let mid = open(&e, &ns, "mid").await;
    assert_eq!(mid.stat().order, 20);
    assert_eq!(mid.read(0, 8 * MIB).await.unwrap(), data);
    mid.write(3 * MIB, pattern(MIB as usize, 22)).await.unwrap();
    mid.snap_create("m").await.unwrap();
    mid.snap_protect("m").await.unwrap();
    // Clone of a clone, in a third location.
    e.rbd
        .clone(&ns, "mid", "m", &other, "leaf", &CreateOptions::default())
        .await
        .unwrap();
    let leaf = open(&e, &other, "leaf").await;
    let mut model = data.to_vec();
    model[(3 * MIB) as usize..(4 * MIB) as usize].copy_from_slice(&pattern(MIB as usize, 22));
    assert_eq!(leaf.read(0, 8 * MIB).await.unwrap().as_ref(), &model[..]);
    leaf.write(7 * MIB, pattern(10, 23)).await.unwrap();
    model[(7 * MIB) as usize..(7 * MIB + 10) as usize].copy_from_slice(&pattern(10, 23));
    assert_eq!(leaf.read(0, 8 * MIB).await.unwrap().as_ref(), &model[..]);
    let kids = e.rbd.children(&ns, "mid", "m").await.unwrap();
    assert_eq!(
        (
            kids[0].pool_name.as_str(),
            kids[0].namespace.as_str(),
            kids[0].image_name.as_str()
        ),
        ("other", "", "leaf")
    );
    let kids = e.rbd.children(&e.io, "base", "s").await.unwrap();
    assert_eq!(
        (kids[0].pool_name.as_str(), kids[0].namespace.as_str()),
        ("other", "tenant")
    );
    let pi = leaf.parent_info().await.unwrap();
    assert_eq!(
        (
            pi.namespace.as_str(),
            pi.image_name.as_str(),
            pi.snap_name.as_str()
        ),
        ("tenant", "mid", "m")
    );

    // Removing a clone removes its child link.
    leaf.close().await.unwrap();
    drop(leaf);
    e.rbd.remove(&other, "leaf").await.unwrap();
    assert!(e.rbd.children(&ns, "mid", "m").await.unwrap().is_empty());
    mid.snap_unprotect("m").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_iterate_semantics() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 32 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(&e, &e.io, "img").await;
    let all = DiffOptions::default();
    let whole = DiffOptions {
        whole_object: true,
        ..Default::default()
    };
    assert!(img.diff(0, 32 * MIB, &all).await.unwrap().is_empty());

    img.write(0, pattern(64 * 1024, 1)).await.unwrap();
    img.write(5 * MIB, pattern(8192, 2)).await.unwrap();
    img.write(20 * MIB, pattern(4096, 3)).await.unwrap();
    let ext = |o, l, x| DiffExtent {
        offset: o,
        len: l,
        exists: x,
    };
    // Exact: objects without history report [0, object size on disk).
    assert_eq!(
        img.diff(0, 32 * MIB, &all).await.unwrap(),
        vec![
            ext(0, 65536, true),
            ext(4 * MIB, MIB + 8192, true),
            ext(20 * MIB, 4096, true)
        ]
    );
    assert_eq!(
        img.diff(0, 32 * MIB, &whole).await.unwrap(),
        vec![
            ext(0, 4 * MIB, true),
            ext(4 * MIB, 4 * MIB, true),
            ext(20 * MIB, 4 * MIB, true)
        ]
    );
    // Clipped to the requested range.
    assert_eq!(
        img.diff(5 * MIB + 100, 4096, &whole).await.unwrap(),
        vec![ext(5 * MIB + 100, 4096, true)]
    );

    img.snap_create("s1").await.unwrap();
    let since = |w| DiffOptions {
        from_snap: Some("s1".into()),
        whole_object: w,
        include_parent: false,
    };
    assert!(img
        .diff(0, 32 * MIB, &since(false))
        .await
        .unwrap()
        .is_empty());
    assert!(img
        .diff(0, 32 * MIB, &since(true))
        .await
        .unwrap()
        .is_empty());

    img.write(5 * MIB + 4096, pattern(4096, 4)).await.unwrap(); // change inside object 1
    img.discard(20 * MIB, 4 * MIB).await.unwrap(); // object 5 removed
    img.write(28 * MIB, pattern(512, 5)).await.unwrap(); // new object 7
    assert_eq!(
        img.diff(0, 32 * MIB, &since(false)).await.unwrap(),
        vec![
            ext(5 * MIB + 4096, 4096, true),
            ext(20 * MIB, 4 * MIB, false),
            ext(28 * MIB, 512, true)
        ]
    );
    assert_eq!(
        img.diff(0, 32 * MIB, &since(true)).await.unwrap(),
        vec![
            ext(4 * MIB, 4 * MIB, true),
            ext(20 * MIB, 4 * MIB, false),
            ext(28 * MIB, 4 * MIB, true)
        ]
    );
    // A second snapshot; changes since s1 span both epochs, even after s2 is removed.
    img.snap_create("s2").await.unwrap();
    img.write(0, pattern(10, 6)).await.unwrap();
    let got = img.diff(0, 32 * MIB, &since(true)).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 4 * MIB, 20 * MIB, 28 * MIB]
    );
    img.snap_remove("s2").await.unwrap();
    assert_eq!(img.diff(0, 32 * MIB, &since(true)).await.unwrap(), got);
    assert_eq!(img.diff(0, 32 * MIB, &since(false)).await.unwrap().len(), 4);

    // Diff of a snapshot view against an older snapshot.
    img.snap_create("s3").await.unwrap();
    img.write(12 * MIB, pattern(10, 7)).await.unwrap();
    img.set_snap(Some(SnapSpec::Name("s3".into())))
        .await
        .unwrap();
    assert_eq!(img.diff(0, 32 * MIB, &since(true)).await.unwrap(), got);
    let bad = DiffOptions {
        from_snap: Some("s3".into()),
        ..Default::default()
    };
    assert_eq!(errno(img.diff(0, 32 * MIB, &bad).await), Errno::EINVAL);
    let missing = DiffOptions {
        from_snap: Some("zz".into()),
        ..Default::default()
    };
    assert_eq!(errno(img.diff(0, 32 * MIB, &missing).await), Errno::ENOENT);
    img.set_snap(None).await.unwrap();

    // Callback order and early stop.
    let mut seen = Vec::new();
    let r = img
        .diff_iterate(0, 32 * MIB, &whole, |o, l, x| {
            seen.push((o, l, x));
            if seen.len() == 2 {
                -9000
            } else {
                0
            }
        })
        .await
        .unwrap();
    assert_eq!(r, -9000);
    assert_eq!(seen.len(), 2);
    assert!(seen[0].0 + seen[0].1 <= seen[1].0);
    let mut n = 0;
    assert_eq!(
        img.diff_iterate(0, 32 * MIB, &whole, |_, _, _| {
            n += 1;
            0
        })
        .await
        .unwrap(),
        0
    );
    assert_eq!(n, 4);
    assert_eq!(img.disk_usage().await.unwrap(), 16 * MIB);

    // Images without an object map take the slow path with the same answers.
    let nomap = CreateOptions {
        order: 0,
        features: Some(FEATURE_LAYERING),
    };
    e.rbd
        .create(&e.io, "plain", 32 * MIB, &nomap)
        .await
        .unwrap();
    let p = open(&e, &e.io, "plain").await;
    p.write(0, pattern(65536, 1)).await.unwrap();
    p.write(5 * MIB, pattern(8192, 2)).await.unwrap();
    p.snap_create("s1").await.unwrap();
    p.write(5 * MIB + 4096, pattern(4096, 4)).await.unwrap();
    p.write(28 * MIB, pattern(512, 5)).await.unwrap();
    assert_eq!(
        p.diff(0, 32 * MIB, &since(false)).await.unwrap(),
        vec![ext(5 * MIB + 4096, 4096, true), ext(28 * MIB, 512, true)]
    );
    assert_eq!(
        p.diff(0, 32 * MIB, &all).await.unwrap(),
        vec![
            ext(0, 65536, true),
            ext(4 * MIB, MIB + 8192, true),
            ext(28 * MIB, 512, true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_include_parent() {
    let e = env().await;
    e.rbd
        .create(&e.io, "p", 16 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let p = open(&e, &e.io, "p").await;
    p.write(0, pattern(4096, 1)).await.unwrap();
    p.write(8 * MIB, pattern(4096, 1)).await.unwrap();
    p.snap_create("s").await.unwrap();
    p.snap_protect("s").await.unwrap();
    e.rbd
        .clone(&e.io, "p", "s", &e.io, "c", &CreateOptions::default())
        .await
        .unwrap();
    let c = open(&e, &e.io, "c").await;
    let whole = |inc| DiffOptions {
        from_snap: None,
        include_parent: inc,
        whole_object: true,
    };
    assert!(c.diff(0, 16 * MIB, &whole(false)).await.unwrap().is_empty());
    let got = c.diff(0, 16 * MIB, &whole(true)).await.unwrap();
    assert_eq!(
        got.iter().map(|x| (x.offset, x.len)).collect::<Vec<_>>(),
        vec![(0, 4 * MIB), (8 * MIB, 4 * MIB)]
    );
    c.write(12 * MIB, pattern(10, 2)).await.unwrap();
    c.write(8 * MIB + 100, pattern(10, 2)).await.unwrap();
    let got = c.diff(0, 16 * MIB, &whole(true)).await.unwrap();
    assert_eq!(
        got.iter().map(|x| x.offset).collect::<Vec<_>>(),
        vec![0, 8 * MIB, 12 * MIB]
    );
    let exact = DiffOptions {
        from_snap: None,
        include_parent: true,
        whole_object: false,
    };
    let got = c.diff(0, 16 * MIB, &exact).await.unwrap();
    assert_eq!(
        got[0],
        DiffExtent {
            offset: 0,
            len: 4096,
            exists: true
        }
    );
    assert!(got
        .windows(2)
        .all(|w| w[0].offset + w[0].len <= w[1].offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_is_reclaimed() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 64 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(&e, &e.io, "img").await;
    // Data in every object (1 MiB each, to keep the debug-build store fast),
    // two snapshots, overwrites in between.
    for o in 0..16 {
        img.write(o * 4 * MIB + 1000, pattern(MIB as usize, o as u8))
            .await
            .unwrap();
    }
    img.snap_create("a").await.unwrap();
    for o in 0..8 {
        img.write(o * 4 * MIB, pattern(MIB as usize, 100))
            .await
            .unwrap();
    }
    img.snap_create("b").await.unwrap();
    for o in 4..12 {
        img.write(o * 4 * MIB + 2 * MIB, pattern(MIB as usize, 101))
            .await
            .unwrap();
    }
    let full = e.emb.store().usage().unwrap();
    assert!(full.stored_bytes >= 32 * MIB, "{full:?}");

    img.discard(0, 64 * MIB).await.unwrap();
    img.snap_remove("a").await.unwrap();
    img.snap_remove("b").await.unwrap();
    let st = e.rados.pool_stat(e.io.pool_id).await.unwrap();
    let usage = e.emb.store().usage().unwrap();
    println!("after discard + snap removal: {usage:?}, pool {st:?}");
    assert!(usage.stored_bytes < 64 * 1024, "{usage:?}");
    assert!(data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
        .await
        .is_empty());
    assert_eq!(img.disk_usage().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_of_golden_image_is_o1() {
    let e = env().await;
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    rbd.create(&e.io, "golden", 10 << 30, &CreateOptions::default())
        .await
        .unwrap();
    let g = rbd
        .open(&e.io, "golden", &OpenOptions::default())
        .await
        .unwrap();
    for i in 0..16u64 {
        g.write(i * 640 * MIB, pattern(MIB as usize, i as u8))
            .await
            .unwrap();
    }
    let t = Instant::now();
    g.snap_create("base").await.unwrap();
    println!("snapshot of a 10 GiB image: {:?}", t.elapsed());
    g.snap_protect("base").await.unwrap();

    let n = 20;
    let before = counting.data_ops();
    let ops_before = counting.ops();
    let t = Instant::now();
    for i in 0..n {
        rbd.clone(
            &e.io,
            "golden",
            "base",
            &e.io,
            &format!("vm{i}"),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    }
    let el = t.elapsed();
    println!(
        "{n} clones of a 10 GiB image: {el:?} ({:?} each), {} object ops each",
        el / n,
        (counting.ops() - ops_before) / n as u64
    );
    assert_eq!(counting.data_ops(), before, "clone touched data objects");
    let vm = rbd
        .open(&e.io, "vm7", &OpenOptions::default())
        .await
        .unwrap();
    assert!(data_objects(e.rados.as_ref(), e.io.pool_id, vm.id())
        .await
        .is_empty());
    assert_eq!(vm.size(), 10 << 30);
    assert_eq!(
        vm.read(640 * MIB * 3, MIB).await.unwrap(),
        pattern(MIB as usize, 3)
    );
    assert_eq!(
        rbd.children(&e.io, "golden", "base").await.unwrap().len(),
        n as usize
    );
}

/// Removing an image with an object map removes the objects the map names
/// without listing the pool (so removing a clone does not grow with the
/// pool) and leaves nothing of the image; without a valid map the pool
/// listing still finds every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_follows_the_object_map() {
    let e = env().await;
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    let opts = CreateOptions::default();
    rbd.create(&e.io, "golden", 10 << 30, &opts).await.unwrap();
    let g = rbd
        .open(&e.io, "golden", &OpenOptions::default())
        .await
        .unwrap();
    g.write(0, pattern(MIB as usize, 1)).await.unwrap();
    g.snap_create("base").await.unwrap();
    g.snap_protect("base").await.unwrap();
    let mut ids = vec![];
    for name in ["a", "b"] {
        rbd.clone(&e.io, "golden", "base", &e.io, name, &opts)
            .await
            .unwrap();
        let c = rbd
            .open(&e.io, name, &OpenOptions::default())
            .await
            .unwrap();
        for i in 0..3u64 {
            // The first write copies up from the parent (object 0).
            c.write(i * (1 << 30), pattern(4096, 7)).await.unwrap();
        }
        ids.push(c.id().to_string());
        c.close().await.unwrap();
    }
    let of = |id: &str, names: &[String]| -> Vec<String> {
        names.iter().filter(|n| n.contains(id)).cloned().collect()
    };
    let all = objects(e.rados.as_ref(), e.io.pool_id).await;
    assert_eq!(of(&ids[0], &all).len(), 5, "{all:?}"); // header, map, 3 data

    let lists = counting.lists();
    rbd.remove(&e.io, "a").await.unwrap();
    assert_eq!(
        counting.lists(),
        lists,
        "removal with a valid map listed the pool"
    );
    let all = objects(e.rados.as_ref(), e.io.pool_id).await;
    assert!(of(&ids[0], &all).is_empty(), "{all:?}");

    // "b" loses its object map: removal falls back to the listing.
    let map = quarry_rados::ObjectId::new(e.io.pool_id, format!("rbd_object_map.{}", ids[1]));
    e.rados
        .operate(quarry_rados::OpRequest::new(map).op(quarry_rados::Op::Remove))
        .await
        .unwrap();
    rbd.remove(&e.io, "b").await.unwrap();
    assert_eq!(counting.lists(), lists + 1);
    let all = objects(e.rados.as_ref(), e.io.pool_id).await;
    assert!(of(&ids[1], &all).is_empty(), "{all:?}");
    assert!(rbd
        .children(&e.io, "golden", "base")
        .await
        .unwrap()
        .is_empty());
}

/// A handle whose view still lists a snapshot another client removed can
/// take a snapshot of that name again (its view is not the authority).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_name_freed_by_another_client_is_reusable() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open(&e, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let b = rbd_b
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    let first = a.snap_create("s").await.unwrap();
    assert_eq!(errno(a.snap_create("s").await), Errno::EEXIST);
    b.snap_remove("s").await.unwrap();
    let second = a.snap_create("s").await.unwrap();
    assert!(second > first);
    let snaps = b.snap_list().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].id), ("s", second));
}

/// A snapshot taken by a client that does not own the exclusive lock (`rbd
/// snap create` while a VM writes) marks the head object map clean without
/// undoing an entry the owner set meanwhile: the owner's new object must
/// still read back, through its own handle and a fresh one (both trust the
/// stored map and skip objects it calls absent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_by_another_client_keeps_the_owners_map_updates() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 16 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open(&e, &e.io, "img").await; // the VM: owns the lock
    a.write(0, pattern(4096, 1)).await.unwrap();
    let counting = Counting::new(e.emb.client());
    let rbd_b = Rbd::new(counting.clone());
    let b = rbd_b
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    *counting.pause_head_map_write.lock().unwrap() = Some((arrived_tx, go_rx));
    let mut snap = tokio::spawn(async move { b.snap_create("s").await.map(|_| b) });
    // Since the proxy the owner takes the snapshot and this client writes
    // no map (the pause never comes); an owner of an older version leaves
    // it to this client, which then must not undo the owner's update.
    let b = tokio::select! {
        r = &mut snap => {
            a.write(8 * MIB, pattern(4096, 2)).await.unwrap();
            r.unwrap().unwrap()
        }
        arrived = arrived_rx => {
            arrived.expect("pause dropped");
            // The VM creates object 2 between the snapshot's map read and its marks.
            a.write(8 * MIB, pattern(4096, 2)).await.unwrap();
            go_tx.send(()).unwrap();
            snap.await.unwrap().unwrap()
        }
    };
    let fresh = open(&e, &e.io, "img").await;
    let want = pattern(4096, 2);
    for (who, h) in [
        ("a fresh handle", &fresh),
        ("the owner", &a),
        ("the snapshotter", &b),
    ] {
        let got = h.read(8 * MIB, 4096).await.unwrap();
        assert!(
            got == want,
            "{who} lost the owner's new object (reads zeros: {})",
            got.iter().all(|&x| x == 0)
        );
    }
    assert!(a.read(0, 4096).await.unwrap() == pattern(4096, 1));
}

/// 4 KiB holding `step` (little-endian) in its first 8 bytes.
fn step_block(step: u64) -> bytes::Bytes {
    let mut v = pattern(4096, 3).to_vec();
    v[..8].copy_from_slice(&step.to_le_bytes());
    bytes::Bytes::from(v)
}

/// A snapshot requested by a client that does not own the exclusive lock
/// while the owner (a VM) writes is crash-consistent for the owner: the
/// request is proxied to the owner, which takes it with its own I/O
/// quiesced. The owner's step `k` writes a new object `k` and then records
/// `k` in object 0. What is asserted, reading the snapshot through a fresh
/// handle: if object 0 says `L`, then objects 1..=L hold their data (the
/// snapshot is prefix-closed in the owner's acknowledgement order: a write
/// it contains implies every write acknowledged before that one was
/// issued), object L+2 and later are absent, `L` is at least the last step
/// acknowledged before `snap_create` was called and at most the step in
/// flight when it returned. Without the proxy the snapshotting client
/// copied the head object map itself while the owner still created objects
/// under the old snap context: with its clean marks held back (fault
/// injection) object 0 said `L` but the objects created in that window
/// read as zeros (fails on main at 8de86b7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_by_another_client_is_a_prefix_of_the_owners_writes() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    const OBJ: u64 = 4096;
    const STEPS_MAX: u64 = 4000;
    let e = env().await;
    let opts = CreateOptions {
        order: 12,
        features: None,
    };
    e.rbd
        .create(&e.io, "img", (STEPS_MAX + 16) * OBJ, &opts)
        .await
        .unwrap();
    let owner = open(&e, &e.io, "img").await; // the VM: owns the lock
    owner.write(0, step_block(0)).await.unwrap();
    assert!(owner.is_exclusive_lock_owner());
    let counting = Counting::new(e.emb.client());
    let rbd_b = Rbd::new(counting.clone());
    let b = rbd_b
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut step = 1;
            while !stop.load(SeqCst) && step < STEPS_MAX {
                owner
                    .write(step * OBJ, pattern(4096, step as u8))
                    .await
                    .unwrap();
                owner.write(0, step_block(step)).await.unwrap();
                acked.store(step, SeqCst);
                step += 1;
            }
            owner
        })
    };
    let wait_steps = |n: u64| {
        let acked = acked.clone();
        async move {
            let until = acked.load(SeqCst) + n;
            let t0 = Instant::now();
            while acked.load(SeqCst) < until && t0.elapsed().as_secs() < 30 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    wait_steps(5).await;
    // Hold back a head-map write by the snapshotting client (its clean
    // marks, after its map copy and header write) while the owner goes on:
    // without the proxy that is the window; with it that client writes no map.
    let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    *counting.pause_head_map_write.lock().unwrap() = Some((arrived_tx, go_rx));
    let before = acked.load(SeqCst);
    let writes_before = counting.writes.load(SeqCst);
    let mut snap = tokio::spawn(async move { b.snap_create("s").await.map(|_| b) });
    let b = tokio::select! {
        r = &mut snap => r.unwrap().unwrap(),
        _ = arrived_rx => {
            wait_steps(5).await;
            let _ = go_tx.send(());
            snap.await.unwrap().unwrap()
        }
    };
    let after = acked.load(SeqCst) + 1;
    let b_writes = counting.writes.load(SeqCst) - writes_before;
    stop.store(true, SeqCst);
    let owner = writer.await.unwrap();
    assert!(owner.is_exclusive_lock_owner(), "the owner kept its lock");
    let at = e
        .rbd
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("s".into())),
            },
        )
        .await
        .unwrap();
    let log = at.read(0, 4096).await.unwrap();
    let l = u64::from_le_bytes(log[..8].try_into().unwrap());
    assert_eq!(log, step_block(l), "object 0 of the snapshot");
    assert!(
        (before..=after).contains(&l),
        "the snapshot holds step {l}, outside [{before}, {after}]"
    );
    for k in 1..=l {
        let got = at.read(k * OBJ, 4096).await.unwrap();
        assert!(
            got == pattern(4096, k as u8),
            "the snapshot holds step {l} but not step {k}'s object (zeros: {}); \
             the snapshotting client issued {b_writes} writes itself",
            got.iter().all(|&x| x == 0)
        );
    }
    for k in l + 2..l + 10 {
        let got = at.read(k * OBJ, 4096).await.unwrap();
        assert!(
            got.iter().all(|&x| x == 0),
            "the snapshot holds step {l} and step {k}'s later object"
        );
    }
    assert_eq!(b_writes, 0, "the snapshot was taken by the lock owner");
    assert!(b.snap_exists("s").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_client_visibility() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = Arc::new(open(&e, &e.io, "img").await);
    let rbd_b = Rbd::new(e.emb.client());
    let b = rbd_b
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    a.write(0, pattern(4096, 1)).await.unwrap();
    // B takes a snapshot; A refreshes before writing again (documented contract).
    b.snap_create("s").await.unwrap();
    // The cached view does not know it yet; snap_list reads fresh.
    assert!(a.snap_id().is_none());
    assert_eq!(a.snap_list().await.unwrap().len(), 1);
    a.refresh().await.unwrap();
    a.write(0, pattern(4096, 2)).await.unwrap();
    b.set_snap(Some(SnapSpec::Name("s".into()))).await.unwrap();
    assert_eq!(b.read(0, 4096).await.unwrap(), pattern(4096, 1));
    b.set_snap(None).await.unwrap();
    assert_eq!(b.read(0, 4096).await.unwrap(), pattern(4096, 2));
    // Concurrent snapshot creation from both clients: CAS keeps both.
    let (r1, r2) = tokio::join!(a.snap_create("x"), b.snap_create("y"));
    r1.unwrap();
    r2.unwrap();
    a.refresh().await.unwrap();
    let mut names: Vec<String> = a
        .snap_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["s", "x", "y"]);
    let ids: Vec<u64> = a
        .snap_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Same name from both: exactly one wins.
    let (r1, r2) = tokio::join!(a.snap_create("z"), b.snap_create("z"));
    assert!(r1.is_ok() ^ r2.is_ok(), "{r1:?} {r2:?}");
    // Resize by B, seen by A after refresh, and both agree on data.
    b.resize(16 * MIB).await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.size(), 16 * MIB);
    b.write(12 * MIB, pattern(10, 3)).await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.read(12 * MIB, 10).await.unwrap(), pattern(10, 3));

    // B removes an object A believes exists; A's next write must not leave
    // the stored object map saying "absent" for the recreated object.
    a.write(4 * MIB, pattern(10, 4)).await.unwrap();
    b.refresh().await.unwrap();
    b.discard(4 * MIB, 4 * MIB).await.unwrap();
    a.write(4 * MIB + 100, pattern(10, 5)).await.unwrap();
    let c = rbd_b
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(c.read(4 * MIB + 100, 10).await.unwrap(), pattern(10, 5));
    assert!(c.read(4 * MIB, 100).await.unwrap().iter().all(|&x| x == 0));
}

/// A snapshot-create header write applied twice (a resend after a lost
/// reply, re-executed because the OSD no longer remembers it) fails its
/// version check the second time. The snapshot was recorded all the same:
/// the create must succeed and keep the snapshot's id, map and data, not
/// release the id (which would trim the snapshot's data) or report EEXIST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_create_survives_its_header_write_applied_twice() {
    let e = env().await;
    let (counting, _rbd, img) = counted_image(&e, "img", 8 * MIB).await;
    let v1 = pattern((8 * MIB) as usize, 7);
    img.write(0, v1.clone()).await.unwrap();

    counting.reexecute_next("rbd_header.");
    let id = img.snap_create("s1").await.expect("snapshot create");
    assert!(counting.reexecuted(), "the fault was never injected");
    assert_eq!(img.snap_info("s1").await.unwrap().id, id);

    // The head moves on; the snapshot keeps its bytes (its id was not
    // released to the trimmer) through a fresh handle (stored header, map).
    img.write(0, pattern((8 * MIB) as usize, 9)).await.unwrap();
    img.discard(4 * MIB, 4 * MIB).await.unwrap();
    let at1 = e
        .rbd
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("s1".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!(at1.read(0, 8 * MIB).await.unwrap(), v1);
    let names: Vec<String> = img
        .snap_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["s1".to_string()]);
}

/// The same for snapshot remove: its header write re-executed after a lost
/// reply finds the snapshot gone. The remove succeeded and must say so, and
/// release the id so the snapshot's preserved data is trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_remove_survives_its_header_write_applied_twice() {
    let e = env().await;
    let (counting, _rbd, img) = counted_image(&e, "img", 8 * MIB).await;
    img.write(0, pattern((8 * MIB) as usize, 3)).await.unwrap();
    img.snap_create("s1").await.unwrap();
    // Overwrite everything: the snapshot's bytes are now held only by
    // the objects' clones, which the trimmer frees once the id is released.
    img.write(0, pattern((8 * MIB) as usize, 4)).await.unwrap();
    let used_with_snap = e.rados.pool_stat(e.io.pool_id).await.unwrap().num_bytes;

    counting.reexecute_next("rbd_header.");
    img.snap_remove("s1").await.expect("snapshot remove");
    assert!(counting.reexecuted(), "the fault was never injected");
    assert!(img.snap_list().await.unwrap().is_empty());
    let used = e.rados.pool_stat(e.io.pool_id).await.unwrap().num_bytes;
    assert!(
        used + 8 * MIB <= used_with_snap,
        "the snapshot's clones were not trimmed: {used} bytes used, {used_with_snap} with the snapshot"
    );
}

/// Protect, unprotect and rename whose header writes are re-executed after
/// a lost reply report success (not EBUSY / ENOENT) and leave the state
/// they asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_state_changes_survive_their_header_writes_applied_twice() {
    let e = env().await;
    let (counting, _rbd, img) = counted_image(&e, "img", 8 * MIB).await;
    img.snap_create("s1").await.unwrap();
    let arm = || counting.reexecute_next("rbd_header.");
    let fired = || counting.reexecuted();

    arm();
    img.snap_protect("s1").await.expect("protect");
    assert!(fired(), "protect: the fault was never injected");
    assert!(img.snap_is_protected("s1").await.unwrap());

    arm();
    img.snap_unprotect("s1").await.expect("unprotect");
    assert!(fired(), "unprotect: the fault was never injected");
    assert!(!img.snap_is_protected("s1").await.unwrap());

    arm();
    img.snap_rename("s1", "s2").await.expect("rename");
    assert!(fired(), "rename: the fault was never injected");
    let names: Vec<String> = img
        .snap_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["s2".to_string()]);
    // Still refused when the state was not ours to begin with.
    assert_eq!(errno(img.snap_unprotect("s2").await), Errno::EINVAL);
    assert_eq!(errno(img.snap_rename("s1", "s3").await), Errno::ENOENT);
}

/// A snapshot taken through one handle while another writes is a point in
/// time for the writer too: the writer's handle re-reads the header before
/// `snap_create` returns (header-update notification), so its next write
/// preserves the snapshot's data instead of changing it. Likewise a resize,
/// a snapshot removal and a rename are seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_changes_reach_other_open_handles_at_once() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let writer = open(&e, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let admin = rbd_b
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    writer.write(0, pattern(8192, 1)).await.unwrap();
    writer.write(4 * MIB, pattern(4096, 1)).await.unwrap();
    admin.snap_create("backup").await.unwrap();
    // No refresh: the writer goes on as a running VM would.
    writer.write(0, pattern(4096, 2)).await.unwrap();
    writer.write(4 * MIB, pattern(4096, 2)).await.unwrap();
    let at = rbd_b
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("backup".into())),
            },
        )
        .await
        .unwrap();
    assert!(
        at.read(0, 8192).await.unwrap() == pattern(8192, 1)
            && at.read(4 * MIB, 4096).await.unwrap() == pattern(4096, 1),
        "the snapshot holds the data from before it, not the writer's later writes"
    );
    let mut head = pattern(4096, 2).to_vec();
    head.extend_from_slice(&pattern(8192, 1)[4096..]);
    assert!(writer.read(0, 8192).await.unwrap() == head, "head data");
    drop(at);

    admin.resize(16 * MIB).await.unwrap();
    assert_eq!(writer.size(), 16 * MIB);
    writer.write(12 * MIB, pattern(4096, 3)).await.unwrap();
    admin.snap_rename("backup", "monday").await.unwrap();
    assert_eq!(
        writer.snap_list().await.unwrap()[0].name,
        "monday",
        "snap_list reads the header"
    );
    admin.snap_remove("monday").await.unwrap();
    writer.write(4 * MIB, pattern(4096, 4)).await.unwrap();
    assert!(writer.read(4 * MIB, 4096).await.unwrap() == pattern(4096, 4));
    assert!(writer.read(12 * MIB, 4096).await.unwrap() == pattern(4096, 3));
}

/// A handle whose header watch was down while another client changed the
/// header missed that notification; when the watch is registered again it
/// is told so (`ENOTCONN`) and re-reads the header, so its next writes
/// carry the new snapshot context (and size) instead of running on the old
/// header until something else makes it refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_changes_missed_while_the_watch_was_down_are_caught_up() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let vm_client = e.emb.client();
    let vm = Rbd::new(vm_client.clone())
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    let admin = Rbd::new(e.emb.client())
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    vm.write(0, pattern(4096, 1)).await.unwrap();

    // The VM's connection to the header's primary drops: both changes'
    // notifications miss it.
    e.emb.disconnect_watches(vm_client.instance_id());
    admin.resize(16 * MIB).await.unwrap();
    admin.snap_create("gap").await.unwrap();
    assert_eq!(vm.size(), 8 * MIB, "the notification did miss the handle");
    e.emb.reconnect_watches(vm_client.instance_id());

    let start = Instant::now();
    while vm.size() != 16 * MIB {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the handle never re-read the header after its watch came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    vm.write(0, pattern(4096, 2)).await.unwrap();
    vm.write(12 * MIB, pattern(4096, 3)).await.unwrap();
    let at = Rbd::new(e.emb.client())
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("gap".into())),
            },
        )
        .await
        .unwrap();
    assert!(
        at.read(0, 4096).await.unwrap() == pattern(4096, 1),
        "the snapshot holds the data from before it, not the VM's later write"
    );
    assert!(vm.read(0, 4096).await.unwrap() == pattern(4096, 2));
    assert!(vm.read(12 * MIB, 4096).await.unwrap() == pattern(4096, 3));
}

/// A snapshot whose object map copy failed (the copy and the header write
/// go out together) still stands, and the head map gets no "clean" marks
/// relative to it: diffs across it, also after it is removed (when its map
/// cannot be folded into the next), report every object written since the
/// older snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_whose_map_copy_failed_keeps_diffs_complete() {
    let e = env().await;
    let (counting, _rbd, img) = counted_image(&e, "img", 16 * MIB).await;
    img.write(0, pattern(4096, 1)).await.unwrap(); // object 0, before s1
    img.write(4 * MIB, pattern(4096, 1)).await.unwrap(); // object 1, before s1 ...
    img.snap_create("s1").await.unwrap();
    img.write(4 * MIB, pattern(4096, 2)).await.unwrap(); // ... and between s1 and s2
    counting
        .fail_snap_map
        .store(true, std::sync::atomic::Ordering::SeqCst);
    img.snap_create("s2")
        .await
        .expect("the snapshot stands without its map");
    assert!(
        !counting
            .fail_snap_map
            .load(std::sync::atomic::Ordering::SeqCst),
        "the fault was never injected"
    );
    img.write(8 * MIB, pattern(4096, 3)).await.unwrap(); // object 2, after s2
    let since = |s: &str| DiffOptions {
        from_snap: Some(s.into()),
        whole_object: true,
        include_parent: false,
    };
    let ext = |o, l, x| DiffExtent {
        offset: o,
        len: l,
        exists: x,
    };
    let want = vec![ext(4 * MIB, 4 * MIB, true), ext(8 * MIB, 4 * MIB, true)];
    assert_eq!(img.diff(0, 16 * MIB, &since("s1")).await.unwrap(), want);
    let from_s2 = img.diff(0, 16 * MIB, &since("s2")).await.unwrap();
    assert!(
        from_s2.contains(&ext(8 * MIB, 4 * MIB, true)),
        "{from_s2:?}"
    );
    img.snap_remove("s2").await.unwrap();
    assert_eq!(img.diff(0, 16 * MIB, &since("s1")).await.unwrap(), want);
    // The data of both snapshots' epochs reads back.
    assert_eq!(img.read(4 * MIB, 4096).await.unwrap(), pattern(4096, 2));
}

/// `rbd snap limit`: a snapshot past the limit fails with EDQUOT and
/// changes nothing; a limit below the current count is ERANGE; clearing
/// it (u64::MAX) lifts it; the limit is stored in the header, so another
/// handle enforces it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_limit_is_enforced_and_stored() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(&e, &e.io, "img").await;
    assert_eq!(img.snap_limit(), u64::MAX);
    img.snap_create("a").await.unwrap();
    img.snap_create("b").await.unwrap();
    assert_eq!(errno(img.set_snap_limit(1).await), Errno::ERANGE);
    assert_eq!(img.snap_limit(), u64::MAX);
    img.set_snap_limit(2).await.unwrap();
    assert_eq!(img.snap_limit(), 2);
    assert_eq!(errno(img.snap_create("c").await), Errno::EDQUOT);
    assert_eq!(img.snap_list().await.unwrap().len(), 2);

    // Another handle reads the limit from the header and is held to it.
    let other = open(&e, &e.io, "img").await;
    assert_eq!(other.snap_limit(), 2);
    assert_eq!(errno(other.snap_create("c").await), Errno::EDQUOT);

    // Room again after a removal; then cleared altogether.
    img.snap_remove("a").await.unwrap();
    img.snap_create("c").await.unwrap();
    assert_eq!(errno(img.snap_create("d").await), Errno::EDQUOT);
    img.set_snap_limit(u64::MAX).await.unwrap();
    assert_eq!(img.snap_limit(), u64::MAX);
    img.snap_create("d").await.unwrap();
    assert_eq!(img.snap_list().await.unwrap().len(), 3);

    // A read-only handle cannot change it.
    let ro = e
        .rbd
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: true,
                snap: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(errno(ro.set_snap_limit(5).await), Errno::EROFS);
}

/// `rbd sparsify`: zeroed chunks and all-zero objects give their space
/// back; the image, its snapshot and a clone over a parent read exactly
/// what they read before (a clone's all-zero object stays, empty, so the
/// parent's data does not show through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparsify_frees_zeros_and_changes_no_byte() {
    let e = env().await;
    e.rbd
        .create(&e.io, "sp", 12 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(&e, &e.io, "sp").await;
    let mut want = pattern((12 * MIB) as usize, 5).to_vec();
    // Object 0: data, a zeroed MiB, data; object 1: all zeros, written.
    want[MIB as usize..(2 * MIB) as usize].fill(0);
    want[(4 * MIB) as usize..(8 * MIB) as usize].fill(0);
    img.write(0, bytes::Bytes::from(want.clone()))
        .await
        .unwrap();
    let used = e.rados.pool_stat(e.io.pool_id).await.unwrap().num_bytes;

    assert_eq!(errno(img.sparsify(1000, |_, _| {}).await), Errno::EINVAL);
    assert_eq!(errno(img.sparsify(2048, |_, _| {}).await), Errno::EINVAL);
    let mut calls = Vec::new();
    img.sparsify(4096, |d, t| calls.push((d, t))).await.unwrap();
    assert_eq!(calls.last(), Some(&(3, 3)));
    assert_eq!(img.read(0, 12 * MIB).await.unwrap().as_ref(), &want[..]);
    let objs = data_objects(e.rados.as_ref(), e.io.pool_id, img.id()).await;
    assert!(
        !objs.iter().any(|o| o.ends_with(&format!("{:016x}", 1))),
        "the all-zero object stayed: {objs:?}"
    );
    let after = e.rados.pool_stat(e.io.pool_id).await.unwrap().num_bytes;
    assert!(
        after + 5 * MIB <= used,
        "sparsify freed too little: {used} -> {after} bytes"
    );

    // With a snapshot: the head's new zeros go, the snapshot keeps its data.
    let snap_data = want.clone();
    img.snap_create("before").await.unwrap();
    want[(8 * MIB) as usize..(9 * MIB) as usize].fill(0);
    img.write(8 * MIB, bytes::Bytes::from(vec![0u8; MIB as usize]))
        .await
        .unwrap();
    img.sparsify(65536, |_, _| {}).await.unwrap();
    assert_eq!(img.read(0, 12 * MIB).await.unwrap().as_ref(), &want[..]);
    let at = e
        .rbd
        .open(
            &e.io,
            "sp",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("before".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!(at.read(0, 12 * MIB).await.unwrap().as_ref(), &snap_data[..]);
    assert_eq!(errno(at.sparsify(4096, |_, _| {}).await), Errno::EROFS);

    // A clone whose first object was overwritten with zeros: the object
    // stays (empty), the parent's bytes do not come back.
    img.snap_protect("before").await.unwrap();
    e.rbd
        .clone(
            &e.io,
            "sp",
            "before",
            &e.io,
            "spc",
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    let child = open(&e, &e.io, "spc").await;
    child
        .write(0, bytes::Bytes::from(vec![0u8; (4 * MIB) as usize]))
        .await
        .unwrap();
    child.sparsify(4096, |_, _| {}).await.unwrap();
    let got = child.read(0, 12 * MIB).await.unwrap();
    assert!(got[..(4 * MIB) as usize].iter().all(|&b| b == 0));
    assert_eq!(&got[(4 * MIB) as usize..], &snap_data[(4 * MIB) as usize..]);
    let cobjs = data_objects(e.rados.as_ref(), e.io.pool_id, child.id()).await;
    assert_eq!(cobjs.len(), 1, "{cobjs:?}");
}

/// Writes racing a sparsify are never undone: each object's zeroing is
/// guarded by the version sparsify read, so an object written in between
/// is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparsify_never_undoes_a_racing_write() {
    let e = env().await;
    let opts = CreateOptions {
        order: 20,
        ..CreateOptions::default()
    };
    e.rbd.create(&e.io, "race", 16 * MIB, &opts).await.unwrap();
    let img = Arc::new(open(&e, &e.io, "race").await);
    let mut model = vec![0u8; (16 * MIB) as usize];
    img.write(0, bytes::Bytes::from(model.clone()))
        .await
        .unwrap();
    for round in 0..3u8 {
        let writer = {
            let img = img.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..64u64 {
                    let off = (i * 257 + u64::from(round) * 4099) % 4096 * 4096;
                    let block = pattern(4096, round * 64 + i as u8 + 1);
                    img.write(off, block.clone()).await.unwrap();
                    done.push((off, block));
                }
                done
            })
        };
        img.sparsify(4096, |_, _| {}).await.unwrap();
        for (off, block) in writer.await.unwrap() {
            model[off as usize..off as usize + 4096].copy_from_slice(&block);
        }
        let got = img.read(0, 16 * MIB).await.unwrap();
        assert!(
            got.as_ref() == &model[..],
            "round {round}: a write was undone"
        );
    }
}
