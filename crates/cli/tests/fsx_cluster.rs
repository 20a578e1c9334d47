//! The model-based randomized image test (quarry-fsx: random ops on images,
//! every read checked byte for byte against an in-memory model) through the
//! networked client on a 3-OSD cluster of separate daemon processes.

mod common;

use std::sync::Arc;

use common::*;
use quarry_fsx::FsxConfig;
use quarry_rados::Rados;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsx_on_a_three_osd_cluster() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    for seed in fsx_seeds(&[21]) {
        let pool = format!("fsx{seed}");
        pool_create(&c, &pool, 2).await;
        wait_clean(&c).await;
        let rados: Arc<dyn Rados> = c.clone();
        let cfg = FsxConfig {
            seed,
            ops: 1200,
            max_size: 3 << 20,
            ..FsxConfig::default()
        };
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
