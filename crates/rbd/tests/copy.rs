//! `Rbd::copy` (`rbd cp`) and `Rbd::deep_copy` (`rbd deep cp`): the copy
//! reads byte for byte what the source reads, at its head and at every
//! snapshot, and stays sparse; a deep copy of a clone stays a clone.

mod common;

use common::*;
use quarry_common::Errno;
use quarry_rbd::*;

const SIZE: u64 = 16 * MIB;

async fn open(e: &Env, name: &str) -> Image {
    e.rbd
        .open(&e.io, name, &OpenOptions::default())
        .await
        .unwrap()
}

async fn open_at(e: &Env, name: &str, snap: &str) -> Image {
    let o = OpenOptions {
        read_only: true,
        snap: Some(SnapSpec::Name(snap.into())),
    };
    e.rbd.open(&e.io, name, &o).await.unwrap()
}

/// Every byte of two views is the same (and so is the size).
async fn same(a: &Image, b: &Image, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: size");
    let mut off = 0;
    while off < a.size() {
        let n = (4 * MIB).min(a.size() - off);
        let (x, y) = (a.read(off, n).await.unwrap(), b.read(off, n).await.unwrap());
        if x != y {
            let i = x.iter().zip(y.iter()).position(|(p, q)| p != q).unwrap();
            panic!("{what}: first difference at byte {}", off + i as u64);
        }
        off += n;
    }
}

/// Bytes with data in a view's own objects (parent excluded).
async fn own_data(img: &Image) -> u64 {
    let o = DiffOptions {
        from_snap: None,
        include_parent: false,
        whole_object: false,
    };
    img.diff(0, img.size(), &o)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.exists)
        .map(|e| e.len)
        .sum()
}

/// An image with three snapshots and changes between them of every kind:
/// writes, a discard, zeros written over data, a shrink and a regrow.
async fn image_with_history(e: &Env, name: &str) -> Image {
    e.rbd
        .create(&e.io, name, SIZE, &CreateOptions::default())
        .await
        .unwrap();
    let img = open(e, name).await;
    img.write(0, pattern(3 * MIB as usize, 1)).await.unwrap();
    img.write(10 * MIB, pattern(MIB as usize, 2)).await.unwrap();
    img.metadata_set("conf_rbd_cache", "false").await.unwrap();
    img.metadata_set("owner", "team-a").await.unwrap();
    img.snap_create("s1").await.unwrap();
    img.write(MIB + 4096, pattern(8192, 3)).await.unwrap();
    img.discard(10 * MIB, 512 << 10).await.unwrap();
    img.write(2 * MIB, bytes::Bytes::from(vec![0u8; 65536]))
        .await
        .unwrap();
    img.snap_create("s2").await.unwrap();
    img.snap_protect("s2").await.unwrap();
    img.resize(6 * MIB).await.unwrap();
    img.resize(SIZE).await.unwrap();
    img.write(12 * MIB, pattern(4096, 4)).await.unwrap();
    img.snap_create("s3").await.unwrap();
    img.write(5 * MIB - 100, pattern(200, 5)).await.unwrap();
    img
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_reads_what_the_view_reads_and_stays_sparse() {
    let e = env().await;
    let src = image_with_history(&e, "src").await;
    src.write(8 * MIB, bytes::Bytes::from(vec![0u8; 4 * MIB as usize]))
        .await
        .unwrap();
    let mut last = (0, 0);
    e.rbd
        .copy(&src, &e.io, "dst", &CopyOptions::default(), |d, t| {
            assert!(d <= t);
            last = (d, t);
        })
        .await
        .unwrap();
    assert_eq!(last.0, last.1, "progress ends at its total");
    let dst = open(&e, "dst").await;
    same(&src, &dst, "head copy").await;
    assert!(
        dst.snap_list().await.unwrap().is_empty(),
        "cp copies no snapshots"
    );
    assert_eq!(dst.features(), src.features());
    assert_eq!(dst.stat().order, src.stat().order);
    assert_eq!(
        dst.metadata_get("owner").await.unwrap(),
        &b"team-a"[..],
        "image-meta is copied"
    );
    // Zeros are not written: the copy holds at most the source's data
    // (the 64 KiB of zeros written over data and the discard are holes).
    // Zeros are not written: object 2 of the source holds only the zeros
    // written over it below; the copy has no such object.
    let objs = |id: String| {
        let rados = e.rados.clone();
        let pool = e.io.pool_id;
        async move { data_objects(rados.as_ref(), pool, &id).await }
    };
    let name2 = |id: &str| format!("rbd_data.{id}.{:016x}", 2);
    assert!(objs(src.id().into()).await.contains(&name2(src.id())));
    assert!(!objs(dst.id().into()).await.contains(&name2(dst.id())));
    assert!(own_data(&dst).await <= own_data(&src).await);

    // A copy of a snapshot is that snapshot's content, with its size.
    let at_s1 = open_at(&e, "src", "s1").await;
    let opts = CopyOptions {
        order: 20,
        features: Some(FEATURE_LAYERING),
        flatten: false,
    };
    e.rbd
        .copy(&at_s1, &e.io, "dst1", &opts, |_, _| {})
        .await
        .unwrap();
    let dst1 = open(&e, "dst1").await;
    same(&at_s1, &dst1, "copy of s1").await;
    assert_eq!(dst1.stat().order, 20);
    assert_eq!(dst1.features(), FEATURE_LAYERING);

    // A taken name is refused and the image there is left alone.
    let before = dst1.read(0, MIB).await.unwrap();
    let r = e
        .rbd
        .copy(&src, &e.io, "dst1", &CopyOptions::default(), |_, _| {})
        .await;
    assert_eq!(errno(r), Errno::EEXIST);
    assert_eq!(dst1.read(0, MIB).await.unwrap(), before);
    let r = e
        .rbd
        .copy(
            &src,
            &e.io,
            "dst2",
            &CopyOptions {
                flatten: true,
                ..Default::default()
            },
            |_, _| {},
        )
        .await;
    assert_eq!(errno(r), Errno::EINVAL, "flatten is for deep copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_copy_keeps_every_snapshot() {
    let e = env().await;
    let src = image_with_history(&e, "src").await;
    e.rbd
        .deep_copy(&src, &e.io, "deep", &CopyOptions::default(), |_, _| {})
        .await
        .unwrap();
    let dst = open(&e, "deep").await;
    same(&src, &dst, "head").await;
    let names = |l: Vec<SnapInfo>| {
        l.into_iter()
            .map(|s| (s.name, s.size, s.protected))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(dst.snap_list().await.unwrap()),
        names(src.snap_list().await.unwrap()),
        "same snapshots, sizes and protection"
    );
    for s in ["s1", "s2", "s3"] {
        same(
            &open_at(&e, "src", s).await,
            &open_at(&e, "deep", s).await,
            s,
        )
        .await;
    }
    assert_eq!(
        dst.metadata_get("conf_rbd_cache").await.unwrap(),
        &b"false"[..]
    );
    // Each snapshot holds only what changed: the copy is no fatter than
    // the source (the whole history in data would be 3 x 4 MiB objects
    // of s1 alone copied again per snapshot).
    assert!(own_data(&dst).await <= own_data(&src).await);

    // From a handle at a snapshot: the snapshots up to it, head = it.
    let at_s2 = open_at(&e, "src", "s2").await;
    e.rbd
        .deep_copy(&at_s2, &e.io, "deep2", &CopyOptions::default(), |_, _| {})
        .await
        .unwrap();
    let dst2 = open(&e, "deep2").await;
    let l: Vec<String> = dst2
        .snap_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(l, ["s1", "s2"]);
    same(&at_s2, &dst2, "head of a copy from s2").await;
    same(
        &open_at(&e, "src", "s1").await,
        &open_at(&e, "deep2", "s1").await,
        "s1 of a copy from s2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_copy_of_a_clone_stays_a_clone_unless_flattened() {
    // With object maps (the default), and without: diffs then come from
    // the objects' snapshot sets alone.
    clone_case(None).await;
    clone_case(Some(FEATURE_LAYERING)).await;
}

async fn clone_case(features: Option<u64>) {
    let e = env().await;
    let co = CreateOptions { order: 0, features };
    e.rbd.create(&e.io, "gold", SIZE, &co).await.unwrap();
    let gold = open(&e, "gold").await;
    gold.write(0, pattern(SIZE as usize, 7)).await.unwrap();
    gold.snap_create("base").await.unwrap();
    gold.snap_protect("base").await.unwrap();
    e.rbd
        .clone(&e.io, "gold", "base", &e.io, "vm", &co)
        .await
        .unwrap();
    let vm = open(&e, "vm").await;
    vm.write(MIB, pattern(8192, 8)).await.unwrap();
    // Hide parent data: a whole object and part of another read as zeros.
    vm.discard(4 * MIB, 4 * MIB).await.unwrap();
    vm.discard(9 * MIB, 4096).await.unwrap();
    vm.snap_create("v1").await.unwrap();
    // Cut the overlap: the parent's data past 12 MiB is gone for good.
    vm.resize(12 * MIB).await.unwrap();
    vm.resize(SIZE).await.unwrap();
    vm.write(14 * MIB, pattern(4096, 9)).await.unwrap();

    e.rbd
        .deep_copy(&vm, &e.io, "vm2", &CopyOptions::default(), |_, _| {})
        .await
        .unwrap();
    let vm2 = open(&e, "vm2").await;
    let p = vm2.parent_info().await.unwrap();
    assert_eq!(
        (p.image_name.as_str(), p.snap_name.as_str()),
        ("gold", "base")
    );
    assert_eq!(p.overlap, 12 * MIB, "the cut overlap is carried over");
    same(&vm, &vm2, "clone head").await;
    same(
        &open_at(&e, "vm", "v1").await,
        &open_at(&e, "vm2", "v1").await,
        "clone snapshot",
    )
    .await;
    // Only the clone's own data was copied, not the parent's 16 MiB.
    assert!(own_data(&vm2).await <= own_data(&vm).await);

    // Flattened: no parent, same bytes.
    let flat = CopyOptions {
        flatten: true,
        ..Default::default()
    };
    e.rbd
        .deep_copy(&vm, &e.io, "vm3", &flat, |_, _| {})
        .await
        .unwrap();
    let vm3 = open(&e, "vm3").await;
    assert_eq!(errno(vm3.parent_info().await), Errno::ENOENT);
    same(&vm, &vm3, "flattened head").await;
    same(
        &open_at(&e, "vm", "v1").await,
        &open_at(&e, "vm3", "v1").await,
        "flattened snapshot",
    )
    .await;

    // The parent is still protected by its (now two) clones.
    assert_eq!(errno(gold.snap_unprotect("base").await), Errno::EBUSY);
}
