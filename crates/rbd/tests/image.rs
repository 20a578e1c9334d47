//! Images: create/open/list/rename/remove, I/O, bad input, read-only,
//! discard/write_zeroes, resize, metadata, namespaces, persistence,
//! concurrency.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use quarry_common::Errno;
use quarry_rbd::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stat_list_open() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 10 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    e.rbd
        .create(
            &e.io,
            "small",
            100 * MIB,
            &CreateOptions {
                order: 20,
                features: Some(FEATURE_LAYERING),
            },
        )
        .await
        .unwrap();
    let list = e.rbd.list(&e.io).await.unwrap();
    assert_eq!(
        list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        vec!["img", "small"]
    );

    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    let st = img.stat();
    assert_eq!(st.size, 10 * MIB);
    assert_eq!(st.obj_size, 4 * MIB);
    assert_eq!(st.num_objs, 3);
    assert_eq!(st.order, 22);
    assert_eq!(st.block_name_prefix, format!("rbd_data.{}", img.id()));
    assert_eq!(st.id, list[0].id);
    assert_eq!(st.features, 61);
    assert_eq!(img.features(), FEATURES_DEFAULT);
    assert_eq!(img.flags(), 0);
    assert_eq!(st.parent_pool, -1);
    assert_eq!(st.snapshot_count, 0);
    assert_eq!(errno(img.overlap()), Errno::ENOENT);
    assert_eq!(errno(img.parent_info().await), Errno::ENOENT);
    assert!(!img.is_read_only());
    assert!(img.id().len() >= 8 && img.id().chars().all(|c| c.is_ascii_hexdigit()));

    let small = e
        .rbd
        .open(&e.io, "small", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(small.stat().obj_size, MIB);
    assert_eq!(small.stat().num_objs, 100);
    assert_eq!(small.features(), FEATURE_LAYERING);

    // Size 0 images are allowed.
    e.rbd
        .create(&e.io, "empty", 0, &CreateOptions::default())
        .await
        .unwrap();
    let z = e
        .rbd
        .open(&e.io, "empty", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(z.stat().num_objs, 0);
    assert_eq!(z.read(0, 0).await.unwrap().len(), 0);
    assert_eq!(errno(z.read(0, 1).await), Errno::EINVAL);

    assert_eq!(
        errno(e.rbd.open(&e.io, "nope", &OpenOptions::default()).await),
        Errno::ENOENT
    );
    let err = e
        .rbd
        .open(&e.io, "nope", &OpenOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rbd/nope"), "{err}");
    assert_eq!(
        errno(
            e.rbd
                .open(
                    &e.io,
                    "img",
                    &OpenOptions {
                        read_only: false,
                        snap: Some(SnapSpec::Name("s".into()))
                    }
                )
                .await
        ),
        Errno::ENOENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_creates_nothing() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", MIB, &CreateOptions::default())
        .await
        .unwrap();
    let before = objects(e.rados.as_ref(), e.io.pool_id).await;

    let long = "x".repeat(MAX_IMAGE_NAME_LEN + 1);
    for name in ["", "a/b", "a@b", "tab\there", long.as_str()] {
        assert_eq!(
            errno(
                e.rbd
                    .create(&e.io, name, MIB, &CreateOptions::default())
                    .await
            ),
            Errno::EINVAL,
            "{name:?}"
        );
    }
    for order in [1, 11, 26, 64] {
        let o = CreateOptions {
            order,
            features: None,
        };
        assert_eq!(
            errno(e.rbd.create(&e.io, "o", MIB, &o).await),
            Errno::EINVAL,
            "order {order}"
        );
    }
    for size in [u64::MAX, u64::MAX - 4 * MIB, MAX_IMAGE_SIZE + 1] {
        assert_eq!(
            errno(
                e.rbd
                    .create(&e.io, "s", size, &CreateOptions::default())
                    .await
            ),
            Errno::EINVAL
        );
    }
    // Too many objects for an object map; fine without one.
    let o = CreateOptions {
        order: 12,
        features: None,
    };
    assert_eq!(
        errno(e.rbd.create(&e.io, "big", 1 << 50, &o).await),
        Errno::EINVAL
    );
    for (f, want) in [
        (FEATURE_OBJECT_MAP, Errno::EINVAL),
        (FEATURE_FAST_DIFF | FEATURE_EXCLUSIVE_LOCK, Errno::EINVAL),
        (1 << 9, Errno::EINVAL),
        (FEATURE_LAYERING | FEATURE_JOURNALING, Errno::EOPNOTSUPP),
        (FEATURE_LAYERING | FEATURE_DATA_POOL, Errno::EOPNOTSUPP),
    ] {
        let o = CreateOptions {
            order: 0,
            features: Some(f),
        };
        assert_eq!(
            errno(e.rbd.create(&e.io, "f", MIB, &o).await),
            want,
            "features {f:#x}"
        );
    }
    assert_eq!(
        errno(
            e.rbd
                .create(&e.io, "img", MIB, &CreateOptions::default())
                .await
        ),
        Errno::EEXIST
    );
    // A missing namespace.
    let ns = e.rbd.ioctx("rbd", "nons").await.unwrap();
    assert_eq!(
        errno(e.rbd.create(&ns, "x", MIB, &CreateOptions::default()).await),
        Errno::ENOENT
    );
    assert_eq!(
        objects(e.rados.as_ref(), e.io.pool_id).await,
        before,
        "a failed create left objects"
    );

    assert_eq!(errno(e.rbd.ioctx("nopool", "").await), Errno::ENOENT);
    assert_eq!(errno(e.rbd.ioctx(12345i64, "").await), Errno::ENOENT);
    assert_eq!(errno(e.rbd.ioctx("rbd", "a/b").await), Errno::EINVAL);
    assert_eq!(errno(e.rbd.remove(&e.io, "nope").await), Errno::ENOENT);
    assert_eq!(errno(e.rbd.rename(&e.io, "nope", "x").await), Errno::ENOENT);
    assert_eq!(
        errno(e.rbd.rename(&e.io, "img", "a@b").await),
        Errno::EINVAL
    );

    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(errno(img.snap_create("").await), Errno::EINVAL);
    assert_eq!(errno(img.snap_create("a@b").await), Errno::EINVAL);
    assert_eq!(errno(img.snap_remove("nope").await), Errno::ENOENT);
    assert_eq!(errno(img.snap_rollback("nope").await), Errno::ENOENT);
    assert_eq!(errno(img.snap_protect("nope").await), Errno::ENOENT);
    assert_eq!(errno(img.snap_unprotect("nope").await), Errno::ENOENT);
    assert_eq!(errno(img.snap_rename("nope", "x").await), Errno::ENOENT);
    assert_eq!(
        errno(img.set_snap(Some(SnapSpec::Name("nope".into()))).await),
        Errno::ENOENT
    );
    assert_eq!(
        errno(img.set_snap(Some(SnapSpec::Id(999))).await),
        Errno::ENOENT
    );
    assert_eq!(errno(img.flatten(|_, _| {}).await), Errno::EINVAL);
    assert_eq!(errno(img.resize(u64::MAX).await), Errno::EINVAL);
    assert_eq!(errno(img.write_zeroes(0, 10, 2).await), Errno::EINVAL);
    assert_eq!(errno(img.metadata_get("").await), Errno::EINVAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_roundtrip_sparse_and_bounds() {
    let e = env().await;
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    rbd.create(&e.io, "img", 20 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();

    // Never written: zeros, no object created, no data-object round trip
    // (the object map is trusted by the exclusive lock's owner, as librbd).
    img.lock_acquire().await.unwrap();
    let d0 = counting.data_ops();
    let r = img.read(0, 20 * MIB).await.unwrap();
    assert_eq!(r.len() as u64, 20 * MIB);
    assert!(r.iter().all(|&b| b == 0));
    assert_eq!(
        counting.data_ops(),
        d0,
        "reads of absent objects went to the object layer"
    );
    assert!(data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
        .await
        .is_empty());

    // A write crossing two object boundaries.
    let data = pattern((9 * MIB) as usize, 7);
    let off = 3 * MIB + 123;
    assert_eq!(img.write(off, data.clone()).await.unwrap(), 9 * MIB);
    assert_eq!(img.read(off, 9 * MIB).await.unwrap(), data);
    let around = img.read(off - 100, 100).await.unwrap();
    assert!(around.iter().all(|&b| b == 0));
    // [3 MiB+123, 12 MiB+123) touches objects 0..=3.
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        4
    );

    // Bounds: start at/after the end → EINVAL; crossing → clipped.
    assert_eq!(errno(img.read(20 * MIB, 1).await), Errno::EINVAL);
    assert_eq!(
        errno(img.write(20 * MIB, Bytes::from_static(b"x")).await),
        Errno::EINVAL
    );
    assert_eq!(
        errno(img.write(u64::MAX, Bytes::from_static(b"x")).await),
        Errno::EINVAL
    );
    assert_eq!(errno(img.discard(20 * MIB + 5, 1).await), Errno::EINVAL);
    assert_eq!(img.read(20 * MIB - 10, 100).await.unwrap().len(), 10);
    assert_eq!(
        img.write(20 * MIB - 4, Bytes::from_static(b"abcdefgh"))
            .await
            .unwrap(),
        4
    );
    assert_eq!(img.read(20 * MIB - 4, 4).await.unwrap().as_ref(), b"abcd");
    // Zero-length requests are always valid.
    assert_eq!(img.read(u64::MAX, 0).await.unwrap().len(), 0);
    assert_eq!(img.write(30 * MIB, Bytes::new()).await.unwrap(), 0);
    img.flush().await.unwrap();

    // A second handle (another client) sees the data.
    let other = Rbd::new(e.emb.client());
    let img2 = other
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
    assert_eq!(img2.read(off, 9 * MIB).await.unwrap(), data);
    img.close().await.unwrap();
    assert_eq!(errno(img.read(0, 1).await), Errno::ESHUTDOWN);
    img.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_handles_refuse_writes() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let rw = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    rw.write(0, pattern(4096, 1)).await.unwrap();
    rw.snap_create("s1").await.unwrap();

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
    let at = e
        .rbd
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: false,
                snap: Some(SnapSpec::Name("s1".into())),
            },
        )
        .await
        .unwrap();
    for img in [&ro, &at] {
        assert!(img.is_read_only());
        assert_eq!(errno(img.write(0, pattern(10, 1)).await), Errno::EROFS);
        assert_eq!(errno(img.discard(0, 10).await), Errno::EROFS);
        assert_eq!(errno(img.write_zeroes(0, 10, 0).await), Errno::EROFS);
        assert_eq!(errno(img.resize(MIB).await), Errno::EROFS);
        assert_eq!(errno(img.snap_create("s2").await), Errno::EROFS);
        assert_eq!(errno(img.snap_remove("s1").await), Errno::EROFS);
        assert_eq!(errno(img.snap_rollback("s1").await), Errno::EROFS);
        assert_eq!(errno(img.metadata_set("k", "v").await), Errno::EROFS);
        assert_eq!(img.read(0, 4096).await.unwrap(), pattern(4096, 1));
    }
    assert_eq!(at.snap_id(), Some(rw.snap_list().await.unwrap()[0].id));
    // Opening by snap id works too.
    let id = rw.snap_list().await.unwrap()[0].id;
    let by_id = e
        .rbd
        .open(
            &e.io,
            "img",
            &OpenOptions {
                read_only: false,
                snap: Some(SnapSpec::Id(id)),
            },
        )
        .await
        .unwrap();
    assert_eq!(by_id.snap_id(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_and_write_zeroes() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 16 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    img.write(0, pattern((16 * MIB) as usize, 3)).await.unwrap();
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        4
    );

    // Whole object 1 → removed; partial ranges zeroed; tail of object 2 truncated.
    assert_eq!(img.discard(4 * MIB, 4 * MIB).await.unwrap(), 4 * MIB);
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        3
    );
    img.discard(100, 1000).await.unwrap();
    img.discard(10 * MIB, 2 * MIB).await.unwrap();
    let mut model = pattern((16 * MIB) as usize, 3).to_vec();
    model[4 * MIB as usize..8 * MIB as usize].fill(0);
    model[100..1100].fill(0);
    model[10 * MIB as usize..12 * MIB as usize].fill(0);
    assert_eq!(img.read(0, 16 * MIB).await.unwrap().as_ref(), &model[..]);

    // write_zeroes without flags deallocates whole objects too.
    img.write_zeroes(12 * MIB, 4 * MIB, 0).await.unwrap();
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        2
    );
    // Thick provisioning writes real zeros: the object exists afterwards.
    img.write_zeroes(4 * MIB, 4 * MIB, WRITE_ZEROES_FLAG_THICK_PROVISION)
        .await
        .unwrap();
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        3
    );
    model[12 * MIB as usize..].fill(0);
    assert_eq!(img.read(0, 16 * MIB).await.unwrap().as_ref(), &model[..]);
    // Discarding never-written space creates nothing.
    img.discard(12 * MIB, 4 * MIB).await.unwrap();
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        3
    );
    // A fresh handle (reloaded object map) reads the same.
    let img2 = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(img2.read(0, 16 * MIB).await.unwrap().as_ref(), &model[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_grow_shrink() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 10 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    img.write(0, pattern((10 * MIB) as usize, 9)).await.unwrap();
    img.resize(30 * MIB).await.unwrap();
    assert_eq!(img.size(), 30 * MIB);
    assert!(img
        .read(10 * MIB, 20 * MIB)
        .await
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    img.write(25 * MIB, pattern(100, 1)).await.unwrap();

    // Shrink to mid-object, then grow: the cut bytes read as zeros.
    img.resize(5 * MIB + 7).await.unwrap();
    assert_eq!(img.stat().num_objs, 2);
    assert_eq!(
        data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
            .await
            .len(),
        2
    );
    img.resize(30 * MIB).await.unwrap();
    let r = img.read(0, 30 * MIB).await.unwrap();
    assert_eq!(
        &r[..(5 * MIB + 7) as usize],
        &pattern((10 * MIB) as usize, 9)[..(5 * MIB + 7) as usize]
    );
    assert!(r[(5 * MIB + 7) as usize..].iter().all(|&b| b == 0));
    img.resize(0).await.unwrap();
    assert!(data_objects(e.rados.as_ref(), e.io.pool_id, img.id())
        .await
        .is_empty());

    // Another client's open handle sees the resize when it returns (the
    // header-update notification).
    let other = Rbd::new(e.emb.client());
    let o = other
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    img.resize(7 * MIB).await.unwrap();
    assert_eq!(o.size(), 7 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_remove_busy() {
    let e = env().await;
    e.rbd
        .create(&e.io, "a", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    e.rbd
        .create(&e.io, "b", MIB, &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(errno(e.rbd.rename(&e.io, "a", "b").await), Errno::EEXIST);
    e.rbd.rename(&e.io, "a", "c").await.unwrap();
    assert_eq!(
        errno(e.rbd.open(&e.io, "a", &OpenOptions::default()).await),
        Errno::ENOENT
    );
    let img = e
        .rbd
        .open(&e.io, "c", &OpenOptions::default())
        .await
        .unwrap();
    img.write(0, pattern((8 * MIB) as usize, 1)).await.unwrap();
    let id = img.id().to_string();

    // Open by this client → EBUSY; by another client → EBUSY.
    assert_eq!(errno(e.rbd.remove(&e.io, "c").await), Errno::EBUSY);
    img.close().await.unwrap();
    let client2 = e.emb.client();
    let rbd2 = Rbd::new(client2.clone());
    let img2 = rbd2
        .open(
            &e.io,
            "c",
            &OpenOptions {
                read_only: true,
                snap: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(e.rbd.watchers(&e.io, "c").await.unwrap().len(), 1);
    assert_eq!(errno(e.rbd.remove(&e.io, "c").await), Errno::EBUSY);
    // Dropping the other client drops its watch.
    drop(img2);
    drop(rbd2);
    drop(client2);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(e.rbd.watchers(&e.io, "c").await.unwrap().is_empty());

    // Snapshots block removal with ENOTEMPTY.
    let img = e
        .rbd
        .open(&e.io, "c", &OpenOptions::default())
        .await
        .unwrap();
    img.snap_create("s").await.unwrap();
    img.close().await.unwrap();
    assert_eq!(errno(e.rbd.remove(&e.io, "c").await), Errno::ENOTEMPTY);
    let img = e
        .rbd
        .open(&e.io, "c", &OpenOptions::default())
        .await
        .unwrap();
    img.snap_remove("s").await.unwrap();
    drop(img);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    e.rbd.remove(&e.io, "c").await.unwrap();
    let left: Vec<String> = objects(e.rados.as_ref(), e.io.pool_id)
        .await
        .into_iter()
        .filter(|n| n.contains(&id))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(e.rbd.list(&e.io).await.unwrap().len(), 1);
    assert_eq!(errno(e.rbd.remove(&e.io, "c").await), Errno::ENOENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(errno(img.metadata_get("k").await), Errno::ENOENT);
    img.metadata_set("conf_rbd_cache", "false").await.unwrap();
    img.metadata_set("a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    img.metadata_set("b", "2").await.unwrap();
    assert_eq!(img.metadata_get("a").await.unwrap().as_ref(), b"1");
    let all = img.metadata_list("", 0).await.unwrap();
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        vec!["a", "b", "conf_rbd_cache"]
    );
    let page = img.metadata_list("a", 1).await.unwrap();
    assert_eq!(page.keys().cloned().collect::<Vec<_>>(), vec!["b"]);
    img.metadata_remove("a").await.unwrap();
    assert_eq!(errno(img.metadata_remove("a").await), Errno::ENOENT);
    assert_eq!(img.metadata_list("", 0).await.unwrap().len(), 2);
    // Metadata does not disturb the header.
    img.refresh().await.unwrap();
    assert_eq!(img.size(), MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces() {
    let e = env().await;
    let ns = e.rbd.ioctx("rbd", "ns1").await.unwrap();
    assert!(!e.rbd.namespace_exists(&ns).await.unwrap());
    assert_eq!(errno(e.rbd.namespace_exists(&e.io).await), Errno::EINVAL);
    e.rbd.namespace_create(&ns).await.unwrap();
    assert_eq!(errno(e.rbd.namespace_create(&ns).await), Errno::EEXIST);
    assert!(e.rbd.namespace_exists(&ns).await.unwrap());
    assert_eq!(e.rbd.namespace_list(&e.io).await.unwrap(), vec!["ns1"]);
    e.rbd
        .create(&ns, "img", MIB, &CreateOptions::default())
        .await
        .unwrap();
    e.rbd
        .create(&e.io, "img", MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = e
        .rbd
        .open(&ns, "img", &OpenOptions::default())
        .await
        .unwrap();
    let b = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    a.write(0, pattern(10, 1)).await.unwrap();
    assert!(b.read(0, 10).await.unwrap().iter().all(|&x| x == 0));
    assert_eq!(a.read(0, 10).await.unwrap(), pattern(10, 1));
    assert_eq!(e.rbd.list(&ns).await.unwrap().len(), 1);
    assert_eq!(errno(e.rbd.namespace_remove(&ns).await), Errno::EBUSY);
    a.close().await.unwrap();
    e.rbd.remove(&ns, "img").await.unwrap();
    e.rbd.namespace_remove(&ns).await.unwrap();
    assert!(!e.rbd.namespace_exists(&ns).await.unwrap());
    assert_eq!(errno(e.rbd.namespace_remove(&ns).await), Errno::ENOENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_io_on_one_handle() {
    let e = env().await;
    e.rbd
        .create(
            &e.io,
            "img",
            64 * MIB,
            &CreateOptions {
                order: 20,
                features: None,
            },
        )
        .await
        .unwrap();
    let img = Arc::new(
        e.rbd
            .open(&e.io, "img", &OpenOptions::default())
            .await
            .unwrap(),
    );
    // 32 concurrent writers, each owning an interleaved set of 4 KiB blocks.
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let img = img.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..32u64 {
                let blk = i * 32 + t;
                img.write(blk * 64 * 1024, pattern(4096, (blk % 251) as u8))
                    .await
                    .unwrap();
            }
        }));
    }
    // Concurrent readers and a snapshot in the middle must not break anything.
    let reader = {
        let img = img.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                img.read(0, 64 * MIB).await.unwrap();
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
    for blk in 0..1024u64 {
        let got = img.read(blk * 64 * 1024, 4096).await.unwrap();
        assert_eq!(got, pattern(4096, (blk % 251) as u8), "block {blk}");
    }
    let fresh = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(
        fresh.read(0, 64 * MIB).await.unwrap(),
        img.read(0, 64 * MIB).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((5 * MIB) as usize, 4);
    {
        let e = env_on(quarry_store::Embedded::open(dir.path()).unwrap()).await;
        e.rbd
            .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
            .await
            .unwrap();
        let img = e
            .rbd
            .open(&e.io, "img", &OpenOptions::default())
            .await
            .unwrap();
        img.write(MIB, data.clone()).await.unwrap();
        img.snap_create("s").await.unwrap();
        img.write(MIB, pattern(10, 200)).await.unwrap();
        img.metadata_set("k", "v").await.unwrap();
        img.close().await.unwrap();
    }
    let e = env_on(quarry_store::Embedded::open(dir.path()).unwrap()).await;
    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(img.read(MIB, 10).await.unwrap(), pattern(10, 200));
    assert_eq!(img.metadata_get("k").await.unwrap().as_ref(), b"v");
    img.set_snap(Some(SnapSpec::Name("s".into())))
        .await
        .unwrap();
    assert_eq!(img.read(MIB, 5 * MIB).await.unwrap(), data);
}

/// Every engine future must be `Send` so the C ABI can spawn it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_are_send() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let e = env().await;
    send(e.rbd.create(&e.io, "img", MIB, &CreateOptions::default()))
        .await
        .unwrap();
    let img = send(e.rbd.open(&e.io, "img", &OpenOptions::default()))
        .await
        .unwrap();
    send(img.write(0, pattern(10, 1))).await.unwrap();
    send(img.read(0, 10)).await.unwrap();
    send(img.discard(0, 10)).await.unwrap();
    send(img.write_zeroes(0, 10, 0)).await.unwrap();
    send(img.flush()).await.unwrap();
    send(img.resize(2 * MIB)).await.unwrap();
    send(img.snap_create("s")).await.unwrap();
    send(img.snap_list()).await.unwrap();
    send(img.snap_protect("s")).await.unwrap();
    send(
        e.rbd
            .clone(&e.io, "img", "s", &e.io, "c", &CreateOptions::default()),
    )
    .await
    .unwrap();
    let c = send(e.rbd.open(&e.io, "c", &OpenOptions::default()))
        .await
        .unwrap();
    send(c.parent_info()).await.unwrap();
    send(c.diff(0, MIB, &DiffOptions::default())).await.unwrap();
    send(c.diff_iterate(0, MIB, &DiffOptions::default(), |_, _, _| 0))
        .await
        .unwrap();
    send(c.flatten(|_, _| {})).await.unwrap();
    send(c.metadata_set("k", "v")).await.unwrap();
    send(c.refresh()).await.unwrap();
    send(c.close()).await.unwrap();
    send(e.rbd.remove(&e.io, "c")).await.unwrap();
    send(img.snap_unprotect("s")).await.unwrap();
    send(img.snap_rollback("s")).await.unwrap();
    send(img.snap_remove("s")).await.unwrap();
    send(e.rbd.list(&e.io)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_features_pool_metadata_snap_by_id() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 16 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    img.write(4 * MIB, pattern(100, 1)).await.unwrap();
    assert_eq!(
        errno(img.update_features(FEATURE_OBJECT_MAP, false).await),
        Errno::EINVAL
    ); // fast-diff needs it
    assert_eq!(
        errno(img.update_features(FEATURE_LAYERING, false).await),
        Errno::EINVAL
    );
    img.update_features(FEATURE_FAST_DIFF | FEATURE_OBJECT_MAP, false)
        .await
        .unwrap();
    assert_eq!(
        img.features(),
        FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_DEEP_FLATTEN
    );
    assert!(!objects(e.rados.as_ref(), e.io.pool_id)
        .await
        .iter()
        .any(|n| n.starts_with("rbd_object_map.")));
    img.write(12 * MIB, pattern(100, 2)).await.unwrap();
    assert_eq!(img.read(4 * MIB, 100).await.unwrap(), pattern(100, 1));
    assert_eq!(img.disk_usage().await.unwrap(), 8 * MIB);
    img.update_features(FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF, true)
        .await
        .unwrap();
    assert_eq!(img.features(), FEATURES_DEFAULT);
    assert_eq!(img.flags(), 0);
    let fresh = e
        .rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(fresh.read(12 * MIB, 100).await.unwrap(), pattern(100, 2));
    let whole = DiffOptions {
        whole_object: true,
        ..Default::default()
    };
    let d = fresh.diff(0, 16 * MIB, &whole).await.unwrap();
    assert_eq!(
        d.iter().map(|x| x.offset).collect::<Vec<_>>(),
        vec![4 * MIB, 12 * MIB]
    );

    let id = img.snap_create("s").await.unwrap();
    assert_eq!(errno(img.snap_remove_by_id(id + 100).await), Errno::ENOENT);
    img.snap_remove_by_id(id).await.unwrap();
    assert!(img.snap_list().await.unwrap().is_empty());

    assert_eq!(
        errno(e.rbd.pool_metadata_get(&e.io, "conf_rbd_cache").await),
        Errno::ENOENT
    );
    e.rbd
        .pool_metadata_set(&e.io, "conf_rbd_cache", "false")
        .await
        .unwrap();
    assert_eq!(
        e.rbd
            .pool_metadata_get(&e.io, "conf_rbd_cache")
            .await
            .unwrap()
            .as_ref(),
        b"false"
    );
    assert_eq!(e.rbd.pool_metadata_list(&e.io).await.unwrap().len(), 1);
    e.rbd
        .pool_metadata_remove(&e.io, "conf_rbd_cache")
        .await
        .unwrap();
    assert_eq!(
        errno(e.rbd.pool_metadata_remove(&e.io, "conf_rbd_cache").await),
        Errno::ENOENT
    );
    assert_eq!(e.rbd.image_id(&e.io, "img").await.unwrap(), img.id());
    let by_id = e
        .rbd
        .open_by_id(&e.io, img.id(), &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(by_id.name(), "img");
    assert_eq!(
        errno(
            e.rbd
                .open_by_id(&e.io, "ffff", &OpenOptions::default())
                .await
        ),
        Errno::ENOENT
    );
}

/// An image create whose header create, object-map create or directory
/// update is re-executed after a lost reply (an op older than the OSD's PG
/// log) meets the object or entries it made itself: the create succeeds
/// and the image is whole, instead of `EEXIST` for an image that then
/// exists half-made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_survives_its_writes_applied_twice() {
    let e = env().await;
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    for (i, prefix) in ["rbd_header.", "rbd_object_map.", "rbd_directory"]
        .into_iter()
        .enumerate()
    {
        let name = format!("img{i}");
        counting.reexecute_next(prefix);
        rbd.create(&e.io, &name, 8 * MIB, &CreateOptions::default())
            .await
            .unwrap_or_else(|err| panic!("create with {prefix} re-executed: {err}"));
        assert!(
            counting.reexecuted(),
            "{prefix}: the fault was never injected"
        );
        let img = rbd
            .open(&e.io, &name, &OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(img.size(), 8 * MIB);
        img.write(0, pattern(MIB as usize, 5)).await.unwrap();
        assert_eq!(img.read(0, MIB).await.unwrap(), pattern(MIB as usize, 5));
        img.close().await.unwrap();
    }
    let names: Vec<String> = rbd
        .list(&e.io)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["img0", "img1", "img2"]);
    // A name that is really taken is still refused.
    assert_eq!(
        errno(
            rbd.create(&e.io, "img0", MIB, &CreateOptions::default())
                .await
        ),
        Errno::EEXIST
    );
}

/// Counts wake-ups of the task it is the waker of.
struct WakeCount(std::sync::atomic::AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A write within one object must not wake its own task while it waits
/// for the object layer: in the C library the first poll runs on the
/// caller's thread, and such a wake turned every small write into a
/// runtime task plus an I/O thread woken to poll it (one thread hand-off
/// more per write than a read; `FuturesUnordered` wakes its task after
/// polling all of its futures once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_object_write_waits_for_its_reply_without_waking_itself() {
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Waker};
    let e = env().await;
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    rbd.create(&e.io, "img", 20 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let img = rbd
        .open(&e.io, "img", &OpenOptions::default())
        .await
        .unwrap();
    // The object exists and the lock is owned: the next write is one op.
    img.write(4096, pattern(4096, 1)).await.unwrap();
    for (off, len) in [(8192u64, 4096usize), (MIB - 512, 1024)] {
        let (go_on, hold) = tokio::sync::oneshot::channel();
        *counting.hold_data_write.lock().unwrap() = Some(hold);
        counting.data_write_held.store(false, Ordering::SeqCst);
        let data = pattern(len, off as u8);
        let wakes = Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut write = Box::pin(img.write(off, data.clone()));
        // Poll until the op is held (earlier awaits may wait for real).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let before = wakes.0.load(Ordering::SeqCst);
            assert!(
                write.as_mut().poll(&mut cx).is_pending(),
                "finished while held"
            );
            if counting.data_write_held.load(Ordering::SeqCst) {
                assert_eq!(
                    wakes.0.load(Ordering::SeqCst),
                    before,
                    "the write at {off} woke its own task while waiting for its reply"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "write never reached the object layer"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // Nothing but the reply can wake it now; then it completes.
        assert!(write.as_mut().poll(&mut cx).is_pending());
        go_on.send(()).unwrap();
        assert_eq!(write.await.unwrap(), len as u64);
        assert_eq!(img.read(off, len as u64).await.unwrap(), data);
    }
}

/// Access and modify timestamps: set at creation, moved forward by reads
/// and writes at most once per interval per handle (recorded in the
/// header without waiting), never by read-only handles, snapshot views,
/// or with an interval of zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_modify_timestamps_follow_io() {
    let e = env().await;
    let second = std::time::Duration::from_secs(1);
    let rbd = Rbd::new(e.rados.clone()).with_timestamp_intervals(TimestampIntervals {
        access: second,
        modify: second,
    });
    rbd.create(&e.io, "ts", MIB, &CreateOptions::default())
        .await
        .unwrap();
    let rw = OpenOptions {
        read_only: false,
        snap: None,
    };
    let img = rbd.open(&e.io, "ts", &rw).await.unwrap();
    let s0 = img.stat();
    assert_eq!(s0.access_timestamp_ns, s0.create_timestamp_ns);
    assert_eq!(s0.modify_timestamp_ns, s0.create_timestamp_ns);
    img.snap_create("before").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // A read-only handle and a snapshot view record nothing.
    let ro = rbd
        .open(
            &e.io,
            "ts",
            &OpenOptions {
                read_only: true,
                snap: None,
            },
        )
        .await
        .unwrap();
    ro.read(0, 512).await.unwrap();
    let at_snap = rbd
        .open(
            &e.io,
            "ts",
            &OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Name("before".into())),
            },
        )
        .await
        .unwrap();
    at_snap.read(0, 512).await.unwrap();
    // Nor does a handle with the intervals at zero.
    let off = Rbd::new(e.rados.clone()).with_timestamp_intervals(TimestampIntervals {
        access: std::time::Duration::ZERO,
        modify: std::time::Duration::ZERO,
    });
    let quiet = off.open(&e.io, "ts", &rw).await.unwrap();
    quiet.write(0, pattern(512, 1)).await.unwrap();
    quiet.read(0, 512).await.unwrap();
    quiet.close().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let fresh = rbd.open(&e.io, "ts", &rw).await.unwrap().stat();
    assert_eq!(fresh.access_timestamp_ns, s0.create_timestamp_ns);
    assert_eq!(fresh.modify_timestamp_ns, s0.create_timestamp_ns);

    // A write moves the modify time, a read the access time: the handle
    // knows at once, another handle once the header has it.
    img.write(0, pattern(512, 2)).await.unwrap();
    let s1 = img.stat();
    assert!(
        s1.modify_timestamp_ns >= s0.create_timestamp_ns + 1_000_000_000,
        "{s1:?}"
    );
    assert_eq!(s1.access_timestamp_ns, s0.create_timestamp_ns);
    img.read(0, 512).await.unwrap();
    let s2 = img.stat();
    assert!(s2.access_timestamp_ns >= s1.modify_timestamp_ns, "{s2:?}");
    // Within the interval nothing more is recorded.
    img.write(0, pattern(512, 3)).await.unwrap();
    assert_eq!(img.stat().modify_timestamp_ns, s1.modify_timestamp_ns);
    let mut seen = None;
    for _ in 0..50 {
        let other = rbd.open(&e.io, "ts", &rw).await.unwrap().stat();
        if other.modify_timestamp_ns == s1.modify_timestamp_ns
            && other.access_timestamp_ns == s2.access_timestamp_ns
        {
            seen = Some(other);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.is_some(),
        "the header never got the handle's timestamps"
    );
}
