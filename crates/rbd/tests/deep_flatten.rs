//! Deep flatten: copy-up with an empty snap context and flatten that also
//! detaches the clone's snapshots, so the golden snapshot can go.

mod common;

use bytes::Bytes;
use common::*;
use quarry_common::Errno;
use quarry_rbd::*;

const SIZE: u64 = 16 * MIB;

async fn open(rbd: &Rbd, io: &IoCtx, name: &str) -> Image {
    rbd.open(io, name, &OpenOptions::default()).await.unwrap()
}

async fn at_snap(rbd: &Rbd, io: &IoCtx, name: &str, snap: &str) -> Image {
    rbd.open(
        io,
        name,
        &OpenOptions {
            read_only: true,
            snap: Some(SnapSpec::Name(snap.into())),
        },
    )
    .await
    .unwrap()
}

/// A golden image of 4 objects (the last 2 MiB a hole), snapshot `s`
/// protected; returns its data.
async fn golden(e: &Env) -> Vec<u8> {
    e.rbd
        .create(&e.io, "golden", SIZE, &CreateOptions::default())
        .await
        .unwrap();
    let g = open(&e.rbd, &e.io, "golden").await;
    let mut data = pattern(SIZE as usize, 7).to_vec();
    data[(14 * MIB) as usize..].fill(0);
    g.write(0, Bytes::from(data[..(14 * MIB) as usize].to_vec()))
        .await
        .unwrap();
    g.snap_create("s").await.unwrap();
    g.snap_protect("s").await.unwrap();
    // The golden head moves on; clones must never see this.
    g.write(0, pattern(SIZE as usize, 99)).await.unwrap();
    data
}

fn put(model: &mut [u8], off: u64, data: &[u8]) {
    model[off as usize..off as usize + data.len()].copy_from_slice(data);
}

async fn clone_vm(e: &Env, features: Option<u64>) {
    let opts = CreateOptions { order: 0, features };
    e.rbd
        .clone(&e.io, "golden", "s", &e.io, "vm", &opts)
        .await
        .unwrap();
}

/// The guest's writes around snapshot `backup`: object 0 before it, objects
/// 1 and 2 after it (a write and a partial discard, both copy-ups), object
/// 1 again after `backup2`; object 3 is never written. Returns the models
/// of (head, backup, backup2).
async fn guest_writes(vm: &Image, pdata: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut head = pdata.to_vec();
    vm.write(4096, pattern(8192, 1)).await.unwrap();
    put(&mut head, 4096, &pattern(8192, 1));
    vm.snap_create("backup").await.unwrap();
    let backup = head.clone();
    vm.write(4 * MIB + 8192, pattern(4096, 2)).await.unwrap();
    put(&mut head, 4 * MIB + 8192, &pattern(4096, 2));
    vm.discard(8 * MIB + 4096, MIB).await.unwrap();
    head[(8 * MIB + 4096) as usize..(9 * MIB + 4096) as usize].fill(0);
    vm.snap_create("backup2").await.unwrap();
    let backup2 = head.clone();
    vm.write(4 * MIB, pattern(4096, 3)).await.unwrap();
    put(&mut head, 4 * MIB, &pattern(4096, 3));
    (head, backup, backup2)
}

async fn check_reads(e: &Env, models: &(Vec<u8>, Vec<u8>, Vec<u8>), what: &str) {
    let vm = open(&e.rbd, &e.io, "vm").await;
    assert!(vm.read(0, SIZE).await.unwrap() == models.0, "{what}: head");
    let b = at_snap(&e.rbd, &e.io, "vm", "backup").await;
    assert!(b.read(0, SIZE).await.unwrap() == models.1, "{what}: backup");
    let b2 = at_snap(&e.rbd, &e.io, "vm", "backup2").await;
    assert!(
        b2.read(0, SIZE).await.unwrap() == models.2,
        "{what}: backup2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_flatten_frees_the_golden_snapshot() {
    let e = env().await;
    let pdata = golden(&e).await;
    clone_vm(&e, None).await;
    let vm = open(&e.rbd, &e.io, "vm").await;
    assert_ne!(vm.features() & FEATURE_DEEP_FLATTEN, 0);
    let models = guest_writes(&vm, &pdata).await;
    check_reads(&e, &models, "before flatten").await;

    vm.flatten(|_, _| {}).await.unwrap();
    assert_eq!(errno(vm.parent_info().await), Errno::ENOENT);
    for snap in ["backup", "backup2"] {
        let s = at_snap(&e.rbd, &e.io, "vm", snap).await;
        assert_eq!(errno(s.parent_info().await), Errno::ENOENT, "{snap}");
        assert_eq!(s.stat().parent_pool, -1, "{snap}");
    }
    assert!(e
        .rbd
        .children(&e.io, "golden", "s")
        .await
        .unwrap()
        .is_empty());
    check_reads(&e, &models, "after flatten").await;

    // Ceph's workflow: the golden snapshot can go now.
    let g = open(&e.rbd, &e.io, "golden").await;
    g.snap_unprotect("s").await.unwrap();
    g.snap_remove("s").await.unwrap();
    check_reads(&e, &models, "after the golden snapshot is gone").await;
    // Writes after flatten keep the snapshots intact (plain snapshot CoW).
    vm.write(12 * MIB, pattern(4096, 4)).await.unwrap();
    let mut models = models;
    put(&mut models.0, 12 * MIB, &pattern(4096, 4));
    check_reads(&e, &models, "after a write past flatten").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_deep_flatten_the_snapshots_keep_the_parent() {
    let e = env().await;
    let pdata = golden(&e).await;
    clone_vm(&e, Some(FEATURE_LAYERING)).await;
    let vm = open(&e.rbd, &e.io, "vm").await;
    let models = guest_writes(&vm, &pdata).await;
    vm.flatten(|_, _| {}).await.unwrap();
    assert_eq!(errno(vm.parent_info().await), Errno::ENOENT);
    let b = at_snap(&e.rbd, &e.io, "vm", "backup").await;
    assert_eq!(b.parent_info().await.unwrap().snap_name, "s");
    assert_eq!(e.rbd.children(&e.io, "golden", "s").await.unwrap().len(), 1);
    let g = open(&e.rbd, &e.io, "golden").await;
    assert_eq!(errno(g.snap_unprotect("s").await), Errno::EBUSY);
    check_reads(&e, &models, "after a shallow flatten").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_deep_flatten_reruns_to_the_same_result() {
    let e = env().await;
    let pdata = golden(&e).await;
    clone_vm(&e, None).await;
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    let vm = open(&rbd, &e.io, "vm").await;
    let models = guest_writes(&vm, &pdata).await;

    // Object 3 is absent: its deep copy-up marks it in the snapshots'
    // maps first, and that write fails; the flatten stops there.
    counting
        .fail_snap_map
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(errno(vm.flatten(|_, _| {}).await), Errno::EIO);
    assert!(
        !counting
            .fail_snap_map
            .load(std::sync::atomic::Ordering::SeqCst),
        "the fault was never injected"
    );
    // Nothing was detached: head and snapshots still read through the parent.
    assert_eq!(vm.parent_info().await.unwrap().snap_name, "s");
    let b = at_snap(&e.rbd, &e.io, "vm", "backup").await;
    assert_eq!(b.parent_info().await.unwrap().snap_name, "s");
    assert_eq!(e.rbd.children(&e.io, "golden", "s").await.unwrap().len(), 1);
    check_reads(&e, &models, "after the failed flatten").await;

    vm.flatten(|_, _| {}).await.unwrap();
    assert_eq!(errno(vm.parent_info().await), Errno::ENOENT);
    let b = at_snap(&e.rbd, &e.io, "vm", "backup").await;
    assert_eq!(errno(b.parent_info().await), Errno::ENOENT);
    let g = open(&e.rbd, &e.io, "golden").await;
    g.snap_unprotect("s").await.unwrap();
    g.snap_remove("s").await.unwrap();
    check_reads(&e, &models, "after the rerun").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_still_reads_the_parent_keeps_it() {
    let e = env().await;
    let pdata = golden(&e).await;
    clone_vm(&e, None).await;
    let vm = open(&e.rbd, &e.io, "vm").await;
    vm.snap_create("before").await.unwrap();
    // Objects 1..3 leave the head's overlap but `before` still reads them
    // from the parent, and no write can put data under an older snapshot.
    vm.resize(4 * MIB).await.unwrap();
    vm.flatten(|_, _| {}).await.unwrap();
    assert_eq!(errno(vm.parent_info().await), Errno::ENOENT);
    let b = at_snap(&e.rbd, &e.io, "vm", "before").await;
    assert_eq!(b.parent_info().await.unwrap().snap_name, "s");
    assert!(b.read(0, SIZE).await.unwrap() == pdata);
    assert!(vm.read(0, 4 * MIB).await.unwrap() == pdata[..(4 * MIB) as usize]);
    let g = open(&e.rbd, &e.io, "golden").await;
    assert_eq!(errno(g.snap_unprotect("s").await), Errno::EBUSY);
    drop(b);
    vm.snap_remove("before").await.unwrap();
    g.snap_unprotect("s").await.unwrap();
    g.snap_remove("s").await.unwrap();
    assert!(vm.read(0, 4 * MIB).await.unwrap() == pdata[..(4 * MIB) as usize]);
}
