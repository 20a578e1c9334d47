//! The model-based randomized image test (quarry-fsx: random ops on images,
//! every read checked byte for byte against an in-memory model) through the
//! networked client on a 3-OSD cluster of separate daemon processes.

mod common;

use std::sync::Arc;

use common::*;
use quarry_fsx::FsxConfig;
use quarry_rados::Rados;

/// A fresh pool `fsx<seed>` (min_size 2) with every PG clean, and a model
/// run of `ops` operations on images up to 3 MiB in it.
async fn fsx_setup(
    c: &Arc<quarry_client::ClusterClient>,
    seed: u64,
    ops: u64,
) -> (String, Arc<dyn Rados>, FsxConfig) {
    let pool = format!("fsx{seed}");
    pool_create(c, &pool, 2).await;
    wait_clean(c).await;
    let cfg = FsxConfig {
        seed,
        ops,
        max_size: 3 << 20,
        ..FsxConfig::default()
    };
    (pool, c.clone(), cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsx_on_a_three_osd_cluster() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    for seed in fsx_seeds(&[21]) {
        let (pool, rados, cfg) = fsx_setup(&c, seed, 1200).await;
        eprintln!("fsx on the cluster: seed {seed}, {} ops", cfg.ops);
        let t = std::time::Instant::now();
        let report = fsx_ok(
            tokio::time::timeout(
                std::time::Duration::from_secs(300),
                quarry_fsx::run_on(cfg, rados, &pool),
            )
            .await
            .expect("fsx did not finish within 300 s"),
        );
        eprintln!(
            "{:?}, {} bytes verified in {:.1}s",
            report.counts,
            report.bytes_verified,
            t.elapsed().as_secs_f64()
        );
        for op in [
            "write",
            "read",
            "snap_create",
            "clone",
            "read_snap",
            "verify_all",
        ] {
            assert!(
                report.counts.get(op).copied().unwrap_or(0) > 0,
                "the run never exercised {op}: {:?}",
                report.counts
            );
        }
    }
}

/// The same model test while an operator reweights OSDs under it: each
/// change remaps PGs (peering, then backfill to the new members) while
/// images are written, snapshotted and cloned; every read still matches
/// the model. Ends with osd.3 drained and every PG clean without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsx_while_osd_weights_change() {
    use quarry_map::WEIGHT_ONE;
    use quarry_monc::MonCommand;
    let cl = Cluster::up(4, 1);
    let c = cl.client().await;
    let seed = fsx_seeds(&[34])[0];
    let (pool, rados, cfg) = fsx_setup(&c, seed, 4000).await;
    let pool_name = pool.clone();
    let run = tokio::spawn(async move { quarry_fsx::run_on(cfg, rados, &pool_name).await });
    let steps = [
        (3, 0),
        (0, 3 * WEIGHT_ONE),
        (3, 2 * WEIGHT_ONE),
        (0, WEIGHT_ONE),
        (3, 0),
    ];
    let mut during = 0;
    for (osd, weight) in steps {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        if run.is_finished() {
            break;
        }
        during += 1;
        eprintln!(
            "osd.{osd} -> weight {}",
            f64::from(weight) / f64::from(WEIGHT_ONE)
        );
        c.monc()
            .command(MonCommand::OsdCrushReweight { id: osd, weight })
            .await
            .expect("reweight");
    }
    let report = fsx_ok(
        tokio::time::timeout(std::time::Duration::from_secs(300), run)
            .await
            .expect("fsx did not finish within 300 s")
            .expect("fsx task"),
    );
    eprintln!(
        "{:?}; {during} weight changes during the run",
        report.counts
    );
    assert!(
        during >= 3,
        "only {during} weight changes happened during the run"
    );
    // Whatever step the run ended at, finish the drain.
    c.monc()
        .command(MonCommand::OsdCrushReweight { id: 3, weight: 0 })
        .await
        .expect("reweight");
    wait_clean(&c).await;
    let map = c.monc().refresh_map().await.expect("map");
    for pg in map
        .pool_pgs(map.pool_by_name(&pool).expect("pool").id)
        .expect("pgs")
    {
        assert!(
            !map.pg_up_set(pg).expect("up").contains(&3),
            "{pg} on osd.3"
        );
    }
}
