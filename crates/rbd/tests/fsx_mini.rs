//! A small model-based randomized test (a mini `rbd fsx`): random writes,
//! discards, zeroes, resizes, snapshots, rollbacks, clones and flattens
//! against an in-memory model, reproducible from the seed printed on
//! failure. Small objects (order 12..=14) keep it fast in debug builds.

mod common;

use std::collections::BTreeMap;

use common::*;
use quarry_rbd::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Model {
    data: Vec<u8>,
    snaps: BTreeMap<String, Vec<u8>>,
}

fn check_diff_covers(
    exts: &[DiffExtent],
    want_changed: impl Fn(usize) -> bool,
    size: usize,
    what: &str,
) {
    let mut covered = vec![false; size];
    let mut last_end = 0;
    for e in exts {
        assert!(
            e.offset >= last_end,
            "{what}: extents not increasing: {exts:?}"
        );
        last_end = e.offset + e.len;
        assert!(last_end as usize <= size, "{what}: extent past the end");
        for c in &mut covered[e.offset as usize..last_end as usize] {
            *c = true;
        }
    }
    for (i, c) in covered.iter().enumerate() {
        if want_changed(i) {
            assert!(c, "{what}: changed byte {i} not reported in {exts:?}");
        }
    }
}

async fn run(seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let e = env().await;
    let order = rng.gen_range(12..=14u8);
    let os = 1usize << order;
    let size0 = rng.gen_range(1..=40) * os / 3 + 1;
    e.rbd
        .create(
            &e.io,
            "img0",
            size0 as u64,
            &CreateOptions {
                order,
                features: None,
            },
        )
        .await
        .unwrap();
    let mut name = "img0".to_string();
    let mut img = e
        .rbd
        .open(&e.io, &name, &OpenOptions::default())
        .await
        .unwrap();
    let mut m = Model {
        data: vec![0; size0],
        snaps: BTreeMap::new(),
    };
    let mut snap_no = 0;
    let mut clone_no = 0;
    let mut log: Vec<String> = Vec::new();

    for step in 0..ops {
        let size = m.data.len();
        let op = rng.gen_range(0..100);
        let off = if size > 0 { rng.gen_range(0..size) } else { 0 };
        let len = rng.gen_range(1..=(3 * os).min(size.max(1)));
        let ctx = format!(
            "seed {seed} step {step} op {op} off {off} len {len} image {name}; last ops: {:?}",
            &log[log.len().saturating_sub(8)..]
        );
        match op {
            0..=29 if size > 0 => {
                let d = pattern(len, rng.gen());
                let n = img.write(off as u64, d.clone()).await.expect(&ctx) as usize;
                assert_eq!(n, len.min(size - off), "{ctx}");
                m.data[off..off + n].copy_from_slice(&d[..n]);
                log.push(format!("write {off}+{len}"));
            }
            30..=39 if size > 0 => {
                let n = img.discard(off as u64, len as u64).await.expect(&ctx) as usize;
                m.data[off..off + n].fill(0);
                log.push(format!("discard {off}+{len}"));
            }
            40..=44 if size > 0 => {
                let flags = if rng.gen_bool(0.5) {
                    WRITE_ZEROES_FLAG_THICK_PROVISION
                } else {
                    0
                };
                let n = img
                    .write_zeroes(off as u64, len as u64, flags)
                    .await
                    .expect(&ctx) as usize;
                m.data[off..off + n].fill(0);
                log.push(format!("zeroes {off}+{len} {flags}"));
            }
            45..=52 => {
                let ns = rng.gen_range(0..=48) * os / 4 + rng.gen_range(0..3);
                img.resize(ns as u64).await.expect(&ctx);
                m.data.resize(ns, 0);
                log.push(format!("resize {ns}"));
            }
            53..=59 if m.snaps.len() < 4 => {
                snap_no += 1;
                let s = format!("s{snap_no}");
                img.snap_create(&s).await.expect(&ctx);
                m.snaps.insert(s.clone(), m.data.clone());
                log.push(format!("snap {s}"));
            }
            60..=63 if !m.snaps.is_empty() => {
                let s = m
                    .snaps
                    .keys()
                    .nth(rng.gen_range(0..m.snaps.len()))
                    .cloned()
                    .unwrap();
                if img.snap_is_protected(&s).await.expect(&ctx) {
                    assert_eq!(
                        img.snap_remove(&s).await.unwrap_err().errno(),
                        quarry_common::Errno::EBUSY
                    );
                } else {
                    img.snap_remove(&s).await.expect(&ctx);
                    m.snaps.remove(&s);
                    log.push(format!("snap_remove {s}"));
                }
            }
            64..=67 if !m.snaps.is_empty() => {
                let s = m
                    .snaps
                    .keys()
                    .nth(rng.gen_range(0..m.snaps.len()))
                    .cloned()
                    .unwrap();
                img.snap_rollback(&s).await.expect(&ctx);
                m.data = m.snaps[&s].clone();
                log.push(format!("rollback {s}"));
            }
            68..=75 if !m.snaps.is_empty() => {
                // Verify a snapshot through a separate read-only handle.
                let s = m
                    .snaps
                    .keys()
                    .nth(rng.gen_range(0..m.snaps.len()))
                    .cloned()
                    .unwrap();
                let h = e
                    .rbd
                    .open(
                        &e.io,
                        &name,
                        &OpenOptions {
                            read_only: true,
                            snap: Some(SnapSpec::Name(s.clone())),
                        },
                    )
                    .await
                    .expect(&ctx);
                let want = &m.snaps[&s];
                assert_eq!(h.size() as usize, want.len(), "{ctx}");
                if !want.is_empty() {
                    let got = h.read(0, want.len() as u64).await.expect(&ctx);
                    assert!(got.as_ref() == &want[..], "{ctx}: snapshot {s} differs");
                }
                // Diff since the snapshot covers every changed byte.
                let d = img
                    .diff(
                        0,
                        size as u64,
                        &DiffOptions {
                            from_snap: Some(s.clone()),
                            include_parent: false,
                            whole_object: rng.gen(),
                        },
                    )
                    .await
                    .expect(&ctx);
                check_diff_covers(
                    &d,
                    |i| want.get(i).copied().unwrap_or(0) != m.data[i],
                    size,
                    &ctx,
                );
                h.close().await.unwrap();
            }
            76..=78 if !m.snaps.is_empty() && clone_no < 3 => {
                // Clone a snapshot and continue on the child.
                let s = m.snaps.keys().next_back().cloned().unwrap();
                if !img.snap_is_protected(&s).await.unwrap() {
                    img.snap_protect(&s).await.expect(&ctx);
                }
                clone_no += 1;
                let child = format!("c{clone_no}");
                let corder = rng.gen_range(12..=14u8);
                e.rbd
                    .clone(
                        &e.io,
                        &name,
                        &s,
                        &e.io,
                        &child,
                        &CreateOptions {
                            order: corder,
                            features: None,
                        },
                    )
                    .await
                    .expect(&ctx);
                img.close().await.unwrap();
                name = child;
                img = e
                    .rbd
                    .open(&e.io, &name, &OpenOptions::default())
                    .await
                    .expect(&ctx);
                m.data = m.snaps[&s].clone();
                m.snaps.clear();
                log.push(format!("clone {s} -> {name} order {corder}"));
            }
            79..=80 if img.parent_info().await.is_ok() => {
                img.flatten(|_, _| {}).await.expect(&ctx);
                log.push("flatten".into());
            }
            _ => {
                // Read and compare a random range (or the whole image).
                if size > 0 {
                    let (o, l) = if rng.gen_bool(0.2) {
                        (0, size)
                    } else {
                        (off, len.min(size - off))
                    };
                    let got = img.read(o as u64, l as u64).await.expect(&ctx);
                    assert!(
                        got.as_ref() == &m.data[o..o + l],
                        "{ctx}: read {o}+{l} differs"
                    );
                    let d = img
                        .diff(
                            0,
                            size as u64,
                            &DiffOptions {
                                from_snap: None,
                                include_parent: true,
                                whole_object: rng.gen(),
                            },
                        )
                        .await
                        .expect(&ctx);
                    check_diff_covers(&d, |i| m.data[i] != 0, size, &ctx);
                }
            }
        }
        assert_eq!(img.size() as usize, m.data.len(), "{ctx}");
    }
    // Final full comparison through a fresh handle.
    let fresh = e
        .rbd
        .open(&e.io, &name, &OpenOptions::default())
        .await
        .unwrap();
    if !m.data.is_empty() {
        let got = fresh.read(0, m.data.len() as u64).await.unwrap();
        assert!(
            got.as_ref() == &m.data[..],
            "seed {seed}: final image differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsx_mini_seeds() {
    let base: u64 = std::env::var("QUARRY_FSX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in base..base + 6 {
        run(seed, 250).await;
    }
}
