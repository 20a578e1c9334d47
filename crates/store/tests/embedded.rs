//! The embedded `Rados` backend: pools, snapshots, watches, persistence.

use std::sync::Arc;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados, SnapContext};
use quarry_store::Embedded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_snaps_watches() {
    let emb = Embedded::open_memory().unwrap();
    let r: Arc<dyn Rados> = emb.client();
    for bad in ["", "a/b", "a@b", "a:b", "a b", &"x".repeat(256)] {
        assert_eq!(r.pool_create(bad).await.unwrap_err().errno, Errno::EINVAL);
    }
    let p = r.pool_create("rbd").await.unwrap();
    assert_eq!(r.pool_create("rbd").await.unwrap_err().errno, Errno::EEXIST);
    assert_eq!(r.pool_lookup("rbd").await.unwrap(), p);
    assert_eq!(
        r.pool_lookup("nope").await.unwrap_err().errno,
        Errno::ENOENT
    );
    let o = ObjectId::new(p, "obj");
    r.operate(OpRequest::new(o.clone()).op(Op::WriteFull(Bytes::from(vec![7u8; 1 << 20]))))
        .await
        .unwrap();
    let s1 = r.snap_create(p).await.unwrap();
    let s2 = r.snap_create(p).await.unwrap();
    assert!(s2 > s1);
    r.operate(
        OpRequest::new(o.clone())
            .with_snapc(SnapContext {
                seq: s2,
                snaps: vec![s2, s1],
            })
            .op(Op::WriteFull(Bytes::from_static(b"new"))),
    )
    .await
    .unwrap();
    let st = r.pool_stat(p).await.unwrap();
    assert_eq!((st.num_objects, st.num_bytes), (2, (1 << 20) + 3));
    r.snap_remove(p, s1).await.unwrap();
    assert_eq!(r.snap_remove(p, s1).await.unwrap_err().errno, Errno::ENOENT);
    assert_eq!(r.snap_remove(p, 99).await.unwrap_err().errno, Errno::ENOENT);
    // Still needed by s2.
    let rd = r
        .operate(OpRequest::new(o.clone()).at_snap(s2).op(Op::Stat))
        .await
        .unwrap();
    assert!(matches!(rd.outputs[0], OpOutput::Stat(s) if s.size == 1 << 20));
    r.snap_remove(p, s2).await.unwrap();
    let st = r.pool_stat(p).await.unwrap();
    assert_eq!((st.num_objects, st.num_bytes), (1, 3));

    // Watches belong to their client and go with it.
    let other = emb.client();
    assert_ne!(other.instance_id(), r.instance_id());
    let c = other.watch(&o).await.unwrap();
    assert_eq!(
        r.watch(&ObjectId::new(p, "missing"))
            .await
            .unwrap_err()
            .errno,
        Errno::ENOENT
    );
    let w = r.list_watchers(&o).await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].client, w[0].cookie), (other.instance_id(), c));
    drop(other);
    assert!(r.list_watchers(&o).await.unwrap().is_empty());
    let c2 = r.watch(&o).await.unwrap();
    r.unwatch(&o, c2).await.unwrap();
    assert_eq!(r.unwatch(&o, c2).await.unwrap_err().errno, Errno::ENOENT);

    assert_eq!(
        r.list_objects(p, None).await.unwrap().len(),
        1,
        "one head object"
    );
    r.pool_delete("rbd").await.unwrap();
    assert_eq!(r.pool_delete("rbd").await.unwrap_err().errno, Errno::ENOENT);
    assert_eq!(
        r.operate(OpRequest::new(o.clone()).op(Op::Stat))
            .await
            .unwrap_err()
            .errno,
        Errno::ENOENT
    );
    assert_eq!(emb.store().usage().unwrap().stored_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = {
        let emb = Embedded::open(dir.path()).unwrap();
        let p = emb.pool_create("data").await.unwrap();
        emb.pool_create("gone").await.unwrap();
        emb.pool_delete("gone").await.unwrap();
        let s = emb.snap_create(p).await.unwrap();
        emb.operate(OpRequest::new(ObjectId::new(p, "x")).op(Op::Create { exclusive: true }))
            .await
            .unwrap();
        (p, s)
    };
    let emb = Embedded::open(dir.path()).unwrap();
    assert_eq!(emb.pool_lookup("data").await.unwrap(), p);
    assert_eq!(
        emb.pool_lookup("gone").await.unwrap_err().errno,
        Errno::ENOENT
    );
    let q = emb.pool_create("new").await.unwrap();
    assert!(q > p + 1, "pool ids are never reused");
    assert!(emb.snap_create(p).await.unwrap() > s);
    assert_eq!(emb.list_objects(p, None).await.unwrap().len(), 1);
}
