//! Watch-notify on the embedded backend and the exclusive lock between
//! client instances: cooperative hand-off, managed (`rbd_lock_acquire`)
//! refusal, breaking a dead owner's lock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpRequest, WatchCallback, WatchEvent};
use quarry_rbd::*;

/// Bound on every await of these tests: a hang fails.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_collects_acks_and_timeouts() {
    let e = env().await;
    let pool = e.io.pool_id;
    let oid = ObjectId::new(pool, "obj");
    e.rados
        .operate(OpRequest::new(oid.clone()).op(Op::WriteFull(Bytes::from_static(b"x"))))
        .await
        .unwrap();
    // Absent object: ENOENT; oversized payload: EINVAL.
    let absent = ObjectId::new(pool, "absent");
    let r = e
        .rados
        .notify(&absent, Bytes::new(), Duration::from_secs(1))
        .await;
    assert_eq!(r.unwrap_err().errno, Errno::ENOENT);
    let big = Bytes::from(vec![0u8; quarry_rados::NOTIFY_PAYLOAD_MAX + 1]);
    let r = e.rados.notify(&oid, big, Duration::from_secs(1)).await;
    assert_eq!(r.unwrap_err().errno, Errno::EINVAL);

    // Watcher 1 acks with "pong:<payload>"; watcher 2 never acks;
    // watcher 3 has no callback (acks at once, empty).
    let c1 = e.emb.client();
    let c1b = c1.clone();
    let cb: WatchCallback = Arc::new(move |ev: WatchEvent| {
        let WatchEvent::Notify(ev) = ev else { return };
        let c = c1b.clone();
        tokio::spawn(async move {
            let mut p = b"pong:".to_vec();
            p.extend_from_slice(&ev.payload);
            c.notify_ack(&ev.oid, ev.notify_id, ev.cookie, Bytes::from(p))
                .await
                .unwrap();
        });
    });
    let w1 = c1.watch_with(&oid, cb).await.unwrap();
    let c2 = e.emb.client();
    let silent: WatchCallback = Arc::new(|_ev: WatchEvent| {});
    let w2 = c2.watch_with(&oid, silent).await.unwrap();
    let c3 = e.emb.client();
    let w3 = c3.watch(&oid).await.unwrap();

    let res = bounded(
        "notify",
        e.rados.notify(
            &oid,
            Bytes::from_static(b"ping"),
            Duration::from_millis(500),
        ),
    )
    .await
    .unwrap();
    let a1 = res
        .acks
        .iter()
        .find(|a| a.cookie == w1 && a.client == c1.instance_id())
        .expect("ack of watcher 1");
    assert_eq!(&a1.payload[..], b"pong:ping");
    let a3 = res.acks.iter().find(|a| a.cookie == w3).expect("ack of 3");
    assert!(a3.payload.is_empty());
    assert_eq!(res.acks.len(), 2);
    assert_eq!(res.timeouts.len(), 1);
    assert_eq!(res.timeouts[0].cookie, w2);
    assert_eq!(res.timeouts[0].client, c2.instance_id());

    // After unwatch the silent watcher is gone: everyone acks.
    c2.unwatch(&oid, w2).await.unwrap();
    let res = bounded(
        "notify",
        e.rados.notify(&oid, Bytes::new(), Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert_eq!(res.acks.len(), 2);
    assert!(res.timeouts.is_empty());
}

async fn open_rw(rbd: &Rbd, io: &IoCtx, name: &str) -> Image {
    rbd.open(
        io,
        name,
        &OpenOptions {
            read_only: false,
            snap: None,
        },
    )
    .await
    .unwrap()
}

/// Two client instances writing one image take turns with the lock; each
/// reads the other's acknowledged writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_hand_off() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 16 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    assert!(!a.is_exclusive_lock_owner() && !b.is_exclusive_lock_owner());
    assert!(a.lock_owners().await.unwrap().is_empty());

    for round in 0..4u8 {
        let off = u64::from(round) * 4 * MIB + 4096;
        let data = pattern(64 << 10, round + 1);
        let (w, r) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        bounded("write", w.write(off, data.clone())).await.unwrap();
        assert!(w.is_exclusive_lock_owner());
        assert!(!r.is_exclusive_lock_owner());
        let owners = w.lock_owners().await.unwrap();
        assert_eq!(owners.len(), 1);
        // The other handle sees the write (object map re-read on acquire
        // by the writer; the reader reads the object).
        r.refresh().await.unwrap();
        assert_eq!(r.read(off, 64 << 10).await.unwrap(), data);
    }
    // Everything written is there for a fresh handle.
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert!(
        e.rbd
            .open(&e.io, "img", &OpenOptions::default())
            .await
            .unwrap()
            .lock_owners()
            .await
            .unwrap()
            .is_empty(),
        "close releases the lock"
    );
}

/// `rbd_lock_acquire` keeps the lock: the other writer gets EROFS until it
/// is released; after `rbd_lock_release` the managed handle may not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_lock_refuses_other_writers() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let b = open_rw(&rbd_b, &e.io, "img").await;

    bounded("acquire", a.lock_acquire()).await.unwrap();
    assert!(a.is_exclusive_lock_owner());
    a.write(0, pattern(4096, 1)).await.unwrap();
    assert_eq!(
        errno(bounded("write", b.write(0, pattern(4096, 2))).await),
        Errno::EROFS
    );
    assert_eq!(
        errno(bounded("acquire", b.lock_acquire()).await),
        Errno::EROFS
    );
    assert_eq!(errno(b.lock_release().await), Errno::EINVAL);
    assert_eq!(a.read(0, 4096).await.unwrap(), pattern(4096, 1));

    a.lock_release().await.unwrap();
    assert!(!a.is_exclusive_lock_owner());
    assert_eq!(errno(a.write(0, pattern(4096, 3)).await), Errno::EROFS);
    // b's failed rbd_lock_acquire switched it to the managed policy too
    // (as librbd): it writes only after taking the lock explicitly.
    assert_eq!(errno(b.write(0, pattern(4096, 4)).await), Errno::EROFS);
    bounded("acquire", b.lock_acquire()).await.unwrap();
    bounded("write", b.write(0, pattern(4096, 4)))
        .await
        .unwrap();
    assert!(b.is_exclusive_lock_owner());
    // Read-only handles cannot take it.
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
    assert_eq!(errno(ro.lock_acquire().await), Errno::EINVAL);
    // Breaking: wrong owner is EBUSY, right owner works.
    assert_eq!(errno(a.lock_break("client.999999").await), Errno::EBUSY);
    let owner = a.lock_owners().await.unwrap()[0].entity.clone();
    assert_eq!(owner, format!("client.{}", rbd_b.rados().instance_id()));
    a.lock_break(&owner).await.unwrap();
    assert!(a.lock_owners().await.unwrap().is_empty());
    assert_eq!(errno(a.lock_break(&owner).await), Errno::ENOENT);
}

/// An owner whose watch is gone (its process died) loses the lock to the
/// next writer, which then sees the dead owner's acknowledged writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_owner_lock_is_broken() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let dead_client = e.emb.client();
    let dead_id = dead_client.instance_id();
    let rbd_dead = Rbd::new(dead_client.clone());
    let dead = open_rw(&rbd_dead, &e.io, "img").await;
    dead.write(MIB, pattern(8192, 7)).await.unwrap();
    assert!(dead.is_exclusive_lock_owner());
    // "Crash": the handle never releases; its watch disappears.
    let id = dead.id().to_string();
    std::mem::forget(dead);
    let header = ObjectId::new(e.io.pool_id, format!("rbd_header.{id}"));
    for w in dead_client.list_watchers(&header).await.unwrap() {
        if w.client == dead_id {
            dead_client.unwatch(&header, w.cookie).await.unwrap();
        }
    }
    let b = open_rw(&e.rbd, &e.io, "img").await;
    assert_eq!(
        b.lock_owners().await.unwrap()[0].entity,
        format!("client.{dead_id}")
    );
    bounded("write", b.write(0, pattern(4096, 8)))
        .await
        .unwrap();
    assert!(b.is_exclusive_lock_owner());
    assert_eq!(b.read(MIB, 8192).await.unwrap(), pattern(8192, 7));
    assert_eq!(
        b.lock_owners().await.unwrap()[0].entity,
        format!("client.{}", e.rados.instance_id())
    );
}

/// Header operations by a handle that does not own the lock are run by
/// the owner (the requester writes nothing itself), and their errors come
/// back unchanged: a duplicate snapshot name is `EEXIST` with the same
/// text as a local create's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_operations_are_proxied_to_the_lock_owner() {
    use std::sync::atomic::Ordering::SeqCst;
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    a.write(0, pattern(4096, 1)).await.unwrap();
    assert!(a.is_exclusive_lock_owner());
    let counting = Counting::new(e.emb.client());
    let rbd_b = Rbd::new(counting.clone());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    let w0 = counting.writes.load(SeqCst);

    let id = bounded("snap create", b.snap_create("s")).await.unwrap();
    assert_eq!(a.snap_info("s").await.unwrap().id, id);
    let dup = bounded("snap create", b.snap_create("s"))
        .await
        .unwrap_err();
    let local = a.snap_create("s").await.unwrap_err();
    assert_eq!(dup.errno(), Errno::EEXIST);
    assert_eq!(dup, local, "the owner's error, unchanged");
    assert_eq!(dup.to_string(), local.to_string());

    bounded("protect", b.snap_protect("s")).await.unwrap();
    assert_eq!(
        errno(bounded("protect", b.snap_protect("s")).await),
        Errno::EBUSY
    );
    bounded("unprotect", b.snap_unprotect("s")).await.unwrap();
    bounded("rename", b.snap_rename("s", "t")).await.unwrap();
    assert_eq!(
        errno(bounded("rename", b.snap_rename("s", "u")).await),
        Errno::ENOENT
    );
    bounded("resize", b.resize(16 * MIB)).await.unwrap();
    assert_eq!(a.size(), 16 * MIB, "the owner's view changed at once");
    assert_eq!(b.size(), 16 * MIB, "the requester's view too");
    bounded("features", b.update_features(FEATURE_FAST_DIFF, false))
        .await
        .unwrap();
    assert_eq!(a.features() & FEATURE_FAST_DIFF, 0);
    bounded("features", b.update_features(FEATURE_FAST_DIFF, true))
        .await
        .unwrap();
    bounded("snap remove", b.snap_remove("t")).await.unwrap();
    assert!(a.snap_list().await.unwrap().is_empty());
    assert_eq!(
        errno(bounded("snap remove", b.snap_remove("t")).await),
        Errno::ENOENT
    );
    assert_eq!(
        counting.writes.load(SeqCst),
        w0,
        "the requester wrote nothing itself"
    );
    assert!(a.is_exclusive_lock_owner() && !b.is_exclusive_lock_owner());
    a.write(12 * MIB, pattern(4096, 2)).await.unwrap();
    assert_eq!(a.read(0, 4096).await.unwrap(), pattern(4096, 1));

    // A read-only handle is refused before anything is sent.
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
    assert_eq!(errno(ro.snap_create("r").await), Errno::EROFS);
    assert_eq!(errno(ro.resize(MIB).await), Errno::EROFS);

    // An owner in exclusive mode (rbd_lock_acquire) refuses: EROFS, as
    // for the requester's writes.
    a.lock_acquire().await.unwrap();
    assert_eq!(
        errno(bounded("snap create", b.snap_create("m")).await),
        Errno::EROFS
    );
    assert!(!a.snap_exists("m").await.unwrap());
}

/// A snapshot by a handle that must first take the lock gets its snap id
/// allocated while the lock is taken (one monitor commit, overlapped):
/// exactly one id is allocated and used, none released; a snapshot that
/// is proxied to a live owner allocates nothing itself; a failed snapshot
/// releases every id it allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taking_the_lock_uses_the_one_snap_id_it_allocated() {
    use std::sync::atomic::Ordering::SeqCst;
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let counting = Counting::new(e.emb.client());
    let rbd_b = Rbd::new(counting.clone());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    assert!(!b.is_exclusive_lock_owner());
    let id = bounded("snap create", b.snap_create("s")).await.unwrap();
    assert!(b.is_exclusive_lock_owner());
    assert_eq!(b.snap_info("s").await.unwrap().id, id);
    assert_eq!(counting.snap_allocs.load(SeqCst), 1);
    assert_eq!(counting.snap_releases.load(SeqCst), 0);
    // Owned now: the next one allocates its own id as before.
    let id2 = bounded("snap create", b.snap_create("t")).await.unwrap();
    assert!(id2 > id);
    assert_eq!(counting.snap_allocs.load(SeqCst), 2);
    assert_eq!(counting.snap_releases.load(SeqCst), 0);
    // A duplicate is refused without leaking an id.
    assert_eq!(
        errno(bounded("snap create", b.snap_create("s")).await),
        Errno::EEXIST
    );
    assert_eq!(
        counting.snap_allocs.load(SeqCst),
        counting.snap_releases.load(SeqCst) + 2
    );
    b.close().await.unwrap();

    // Proxied to a live owner: the requester allocates nothing.
    let a = open_rw(&e.rbd, &e.io, "img").await;
    a.write(0, pattern(4096, 1)).await.unwrap();
    assert!(a.is_exclusive_lock_owner());
    let c = open_rw(&rbd_b, &e.io, "img").await;
    let (allocs, releases) = (
        counting.snap_allocs.load(SeqCst),
        counting.snap_releases.load(SeqCst),
    );
    let id3 = bounded("snap create", c.snap_create("u")).await.unwrap();
    assert_eq!(a.snap_info("u").await.unwrap().id, id3);
    assert_eq!(counting.snap_allocs.load(SeqCst), allocs);
    assert_eq!(counting.snap_releases.load(SeqCst), releases);
}

/// The watcher list read alongside the lock record may predate the
/// owner's watch (they are separate requests): the owner must never be
/// taken for dead from it. Here the requester's first list misses the live
/// owner's watch; the owner keeps the lock and runs the snapshot for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_watcher_list_never_breaks_a_live_owners_lock() {
    use std::sync::atomic::Ordering::SeqCst;
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    a.write(0, pattern(4096, 1)).await.unwrap();
    assert!(a.is_exclusive_lock_owner());
    let counting = Counting::new(e.emb.client());
    let rbd_b = Rbd::new(counting.clone());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    counting.stale_watchers.store(1, SeqCst);
    let id = bounded("snap create", b.snap_create("s")).await.unwrap();
    assert_eq!(
        counting.stale_watchers.load(SeqCst),
        0,
        "no stale list read"
    );
    assert!(a.is_exclusive_lock_owner());
    assert!(!b.is_exclusive_lock_owner());
    assert_eq!(
        b.lock_owners().await.unwrap()[0].entity,
        format!("client.{}", e.rados.instance_id())
    );
    assert_eq!(a.snap_info("s").await.unwrap().id, id);
    bounded("owner write", a.write(4096, pattern(4096, 2)))
        .await
        .unwrap();
    // The id the requester allocated while the owner looked dead went back.
    assert_eq!(
        counting.snap_allocs.load(SeqCst),
        counting.snap_releases.load(SeqCst)
    );
}

/// A handle that finds nobody owning the lock takes it and runs the
/// operation itself; rollback takes the lock from a live owner (it is not
/// proxied, as in librbd) and the owner takes it back on its next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unowned_operations_and_rollback_take_the_lock() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    a.write(0, pattern(4096, 1)).await.unwrap();
    a.close().await.unwrap();
    bounded("snap create", b.snap_create("s")).await.unwrap();
    assert!(b.is_exclusive_lock_owner());
    b.close().await.unwrap();

    let a = open_rw(&e.rbd, &e.io, "img").await;
    let b = open_rw(&rbd_b, &e.io, "img").await;
    a.write(0, pattern(4096, 2)).await.unwrap();
    a.write(4 * MIB, pattern(4096, 2)).await.unwrap();
    assert!(a.is_exclusive_lock_owner());
    bounded("rollback", b.snap_rollback("s")).await.unwrap();
    assert!(b.is_exclusive_lock_owner() && !a.is_exclusive_lock_owner());
    assert_eq!(a.read(0, 4096).await.unwrap(), pattern(4096, 1));
    assert!(a.read(4 * MIB, 4096).await.unwrap().iter().all(|&x| x == 0));
    bounded("write", a.write(0, pattern(4096, 3)))
        .await
        .unwrap();
    assert!(a.is_exclusive_lock_owner());
    assert_eq!(b.read(0, 4096).await.unwrap(), pattern(4096, 3));
}

/// Stand in for a lock owner: a watch on the header whose callback acks
/// every notification with `answer` (`None`: never acks), named by a lock
/// record. Returns the client (keep it alive) and its cookie.
async fn fake_owner(
    e: &Env,
    image_id: &str,
    answer: Option<&'static [u8]>,
) -> (Arc<dyn quarry_rados::Rados>, u64) {
    let header = ObjectId::new(e.io.pool_id, format!("rbd_header.{image_id}"));
    let c = e.emb.client();
    let c2 = c.clone();
    let cb: WatchCallback = Arc::new(move |ev: WatchEvent| {
        let (WatchEvent::Notify(ev), Some(answer)) = (ev, answer) else {
            return;
        };
        let c = c2.clone();
        tokio::spawn(async move {
            let _ = c
                .notify_ack(&ev.oid, ev.notify_id, ev.cookie, Bytes::from_static(answer))
                .await;
        });
    });
    let cookie = c.watch_with(&header, cb).await.unwrap();
    let rec = format!(
        r#"{{"client":{},"cookie":{cookie},"managed":false,"addr":""}}"#,
        c.instance_id()
    );
    c.operate(OpRequest::new(header).op(Op::SetXattr("lock.rbd_lock".into(), Bytes::from(rec))))
        .await
        .unwrap();
    (c, cookie)
}

/// An owner that does not answer a proxied request within the request
/// timeout is treated as for a lock request: its lock is broken (its
/// client fenced where there is a cluster) and the requester runs the
/// operation as the new owner; no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_owner_loses_the_lock_to_a_proxied_request() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let b = open_rw(&e.rbd, &e.io, "img").await;
    let (_silent, _) = fake_owner(&e, b.id(), None).await;
    let id = bounded("snap create", b.snap_create("s")).await.unwrap();
    assert!(b.is_exclusive_lock_owner());
    assert_eq!(b.snap_info("s").await.unwrap().id, id);
}

/// An owner of an older version answers `unknown`: the requester runs the
/// operation itself (the behaviour before proxying), without the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_without_proxying_leaves_the_operation_to_the_requester() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let b = open_rw(&e.rbd, &e.io, "img").await;
    let (_old, _) = fake_owner(&e, b.id(), Some(br#"{"result":"unknown"}"#)).await;
    bounded("snap create", b.snap_create("s")).await.unwrap();
    assert!(b.snap_exists("s").await.unwrap());
    assert!(!b.is_exclusive_lock_owner());
    assert_eq!(
        errno(bounded("snap create", b.snap_create("s")).await),
        Errno::EEXIST
    );
}

/// A proxied request sent again with the same id (a poll, or a notify
/// resent after its answer was lost) is answered from the owner's record
/// of it: one snapshot, the same answer, never a second run (which would
/// say `EEXIST`). An op this version does not know is answered `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_proxied_request_runs_once() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    a.write(0, pattern(4096, 1)).await.unwrap();
    let header = ObjectId::new(e.io.pool_id, format!("rbd_header.{}", a.id()));
    let c = e.emb.client();
    let cookie = c.watch(&header).await.unwrap();
    let req = format!(
        r#"{{"op":"snap_create","client":{},"cookie":{cookie},"id":7,"args":{{"snap_create":{{"name":"once"}}}}}}"#,
        c.instance_id()
    );
    let owner = (
        e.rados.instance_id(),
        a.lock_owners().await.unwrap()[0].cookie.clone(),
    );
    let mut answers: Vec<String> = Vec::new();
    for _ in 0..40 {
        if answers.len() >= 3 {
            break;
        }
        let res = bounded(
            "notify",
            c.notify(&header, Bytes::from(req.clone()), Duration::from_secs(10)),
        )
        .await
        .unwrap();
        let ack = res
            .acks
            .iter()
            .find(|x| x.client == owner.0 && format!("auto {}", x.cookie) == owner.1)
            .expect("the owner answered");
        let answer = String::from_utf8(ack.payload.to_vec()).unwrap();
        // Asked again while still running: the same id, no second run.
        if answer != r#"{"result":"in_progress"}"# {
            answers.push(answer);
        }
    }
    let id = a.snap_info("once").await.unwrap().id;
    let done = format!(r#"{{"result":"done","value":{id}}}"#);
    assert!(answers.iter().all(|x| *x == done), "{answers:?} != {done}");
    assert_eq!(a.snap_list().await.unwrap().len(), 1);

    let future = format!(
        r#"{{"op":"defrag","client":{},"cookie":{cookie},"id":8,"args":{{"defrag":{{}}}}}}"#,
        c.instance_id()
    );
    let res = c
        .notify(&header, Bytes::from(future), Duration::from_secs(10))
        .await
        .unwrap();
    let ack = res
        .acks
        .iter()
        .find(|x| x.client == owner.0)
        .expect("the owner answered");
    assert_eq!(&ack.payload[..], br#"{"result":"unknown"}"#);
}

/// Advisory locks (`rbd lock add`, `rbd_lock_exclusive|shared`) follow
/// `cls_lock`'s rules and keep the exclusive-lock feature's lock out (and
/// are kept out by it), as in Ceph where both are one lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_follow_cls_lock_rules() {
    let e = env().await;
    e.rbd
        .create(&e.io, "img", 8 * MIB, &CreateOptions::default())
        .await
        .unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    let ea = format!("client.{}", e.rados.instance_id());
    let eb = format!("client.{}", rbd_b.rados().instance_id());

    a.lock_exclusive("x").await.unwrap();
    let l = a.list_lockers().await.unwrap();
    assert!(l.exclusive);
    assert_eq!(l.tag, "");
    assert_eq!(
        l.lockers,
        vec![ImageLocker {
            client: ea.clone(),
            cookie: "x".into(),
            addr: format!("127.0.0.1:0/{}", e.rados.instance_id()),
        }]
    );
    assert_eq!(errno(a.lock_exclusive("x").await), Errno::EEXIST);
    assert_eq!(errno(a.lock_shared("y", "t").await), Errno::EBUSY);
    assert_eq!(errno(b.lock_exclusive("y").await), Errno::EBUSY);
    // Only the holder unlocks; anyone breaks.
    assert_eq!(errno(b.unlock("x").await), Errno::ENOENT);
    assert_eq!(errno(b.break_lock(&ea, "nope").await), Errno::ENOENT);
    // While it is held nobody can take the exclusive lock: writes fail.
    assert_eq!(
        errno(bounded("write", b.write(0, pattern(4096, 1))).await),
        Errno::EBUSY
    );
    b.break_lock(&ea, "x").await.unwrap();
    assert!(b.list_lockers().await.unwrap().lockers.is_empty());
    bounded("write", b.write(0, pattern(4096, 1)))
        .await
        .unwrap();

    // The exclusive lock's owner is listed as librbd does and keeps
    // advisory lockers out; breaking it by its listed id works.
    let l = a.list_lockers().await.unwrap();
    assert!(l.exclusive);
    assert_eq!(l.tag, "internal");
    assert_eq!(l.lockers.len(), 1);
    assert_eq!(l.lockers[0].client, eb);
    assert!(l.lockers[0].cookie.starts_with("auto "), "{l:?}");
    assert_eq!(errno(a.lock_exclusive("z").await), Errno::EBUSY);
    assert_eq!(errno(a.lock_shared("z", "t").await), Errno::EBUSY);
    assert_eq!(errno(a.break_lock(&eb, "auto 999999").await), Errno::ENOENT);
    a.break_lock(&eb, &l.lockers[0].cookie).await.unwrap();
    assert!(a.list_lockers().await.unwrap().lockers.is_empty());

    // Shared: one tag for all holders, no exclusive holder beside them.
    a.lock_shared("s1", "t").await.unwrap();
    b.lock_shared("s2", "t").await.unwrap();
    assert_eq!(errno(b.lock_shared("s3", "u").await), Errno::EBUSY);
    assert_eq!(errno(b.lock_exclusive("e").await), Errno::EBUSY);
    let l = b.list_lockers().await.unwrap();
    assert!(!l.exclusive);
    assert_eq!(l.tag, "t");
    let mut holders: Vec<_> = l
        .lockers
        .iter()
        .map(|h| (h.client.clone(), h.cookie.clone()))
        .collect();
    holders.sort();
    let mut want = vec![
        (ea.clone(), "s1".to_string()),
        (eb.clone(), "s2".to_string()),
    ];
    want.sort();
    assert_eq!(holders, want);
    a.unlock("s1").await.unwrap();
    b.unlock("s2").await.unwrap();
    assert_eq!(errno(a.unlock("s1").await), Errno::ENOENT);
    assert!(a.list_lockers().await.unwrap().lockers.is_empty());
    bounded("write", a.write(0, pattern(4096, 2)))
        .await
        .unwrap();
}

/// Without the exclusive-lock feature an advisory lock is only advisory:
/// other clients still write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_without_exclusive_lock_feature_does_not_block_writes() {
    let e = env().await;
    let opts = CreateOptions {
        features: Some(FEATURE_LAYERING),
        ..CreateOptions::default()
    };
    e.rbd.create(&e.io, "img", 8 * MIB, &opts).await.unwrap();
    let a = open_rw(&e.rbd, &e.io, "img").await;
    let rbd_b = Rbd::new(e.emb.client());
    let b = open_rw(&rbd_b, &e.io, "img").await;
    a.lock_exclusive("mine").await.unwrap();
    bounded("write", b.write(0, pattern(4096, 3)))
        .await
        .unwrap();
    assert_eq!(a.read(0, 4096).await.unwrap(), pattern(4096, 3));
    assert_eq!(a.list_lockers().await.unwrap().lockers.len(), 1);
}

/// Object locks (`rados_lock_*`): created objects, renewal flags,
/// expiry, bad names and corrupt records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_locks() {
    use quarry_rados::objlock::{self, LockRequest, FLAG_MAY_RENEW, FLAG_MUST_RENEW};
    let e = env().await;
    let c2 = e.emb.client();
    let oid = ObjectId::new(e.io.pool_id, "lockme");
    let req = |cookie, flags, duration| LockRequest {
        exclusive: true,
        cookie,
        tag: "",
        description: "held for a test",
        duration,
        flags,
        create: true,
    };
    let no_guard = |_: &std::collections::BTreeMap<String, Bytes>| Ok(());
    // The object is created by the lock, as cls_lock does.
    objlock::lock(e.rados.as_ref(), &oid, "l", &req("c", 0, None), no_guard)
        .await
        .unwrap();
    e.rados
        .operate(OpRequest::new(oid.clone()).op(Op::Stat))
        .await
        .unwrap();
    let info = objlock::info(e.rados.as_ref(), &oid, "l").await.unwrap();
    assert_eq!(info.lockers[0].description, "held for a test");
    // Another lock name on the same object is independent.
    objlock::lock(c2.as_ref(), &oid, "other", &req("c", 0, None), no_guard)
        .await
        .unwrap();
    let r = objlock::lock(c2.as_ref(), &oid, "l", &req("c", 0, None), no_guard).await;
    assert_eq!(r.unwrap_err().errno, Errno::EBUSY);
    let r = objlock::lock(e.rados.as_ref(), &oid, "l", &req("c", 0, None), no_guard).await;
    assert_eq!(r.unwrap_err().errno, Errno::EEXIST);
    objlock::lock(
        e.rados.as_ref(),
        &oid,
        "l",
        &req("c", FLAG_MAY_RENEW, None),
        no_guard,
    )
    .await
    .unwrap();
    let r = objlock::lock(
        c2.as_ref(),
        &oid,
        "l",
        &req("d", FLAG_MUST_RENEW, None),
        no_guard,
    )
    .await;
    assert_eq!(r.unwrap_err().errno, Errno::ENOENT);
    // Renewed with a duration: it expires.
    objlock::lock(
        e.rados.as_ref(),
        &oid,
        "l",
        &req("c", FLAG_MUST_RENEW, Some(Duration::from_millis(300))),
        no_guard,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(objlock::info(c2.as_ref(), &oid, "l")
        .await
        .unwrap()
        .lockers
        .is_empty());
    objlock::lock(c2.as_ref(), &oid, "l", &req("d", 0, None), no_guard)
        .await
        .unwrap();
    // Unlock is the holder's own; an absent object holds no lock.
    let me = objlock::entity_of(e.rados.as_ref());
    let r = objlock::remove(e.rados.as_ref(), &oid, "l", &me, "d").await;
    assert_eq!(r.unwrap_err().errno, Errno::ENOENT);
    let absent = ObjectId::new(e.io.pool_id, "absent");
    let r = objlock::remove(e.rados.as_ref(), &absent, "l", &me, "d").await;
    assert_eq!(r.unwrap_err().errno, Errno::ENOENT);
    let mut no_create = req("c", 0, None);
    no_create.create = false;
    let r = objlock::lock(e.rados.as_ref(), &absent, "l", &no_create, no_guard).await;
    assert_eq!(r.unwrap_err().errno, Errno::ENOENT);
    // Bad input: empty name; a record that does not decode is EIO, named.
    let r = objlock::lock(e.rados.as_ref(), &oid, "", &req("c", 0, None), no_guard).await;
    assert_eq!(r.unwrap_err().errno, Errno::EINVAL);
    e.rados
        .operate(
            OpRequest::new(oid.clone()).op(Op::SetXattr("lock.bad".into(), Bytes::from("{no"))),
        )
        .await
        .unwrap();
    let err = objlock::info(e.rados.as_ref(), &oid, "bad")
        .await
        .unwrap_err();
    assert_eq!(err.errno, Errno::EIO);
    assert!(err.context.contains("lockme"), "{err}");
}
