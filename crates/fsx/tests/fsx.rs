//! The model-based randomized test of the image engine (Ceph's rbd fsx
//! idea): thousands of random ops against the engine and a byte model.

use quarry_fsx::{run, FsxConfig};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn check(cfg: FsxConfig) {
    match rt().block_on(run(cfg)) {
        Ok(report) => {
            eprintln!(
                "{:?}, {} bytes verified",
                report.counts, report.bytes_verified
            );
            for op in ["write", "read", "snap_create", "clone", "read_snap"] {
                assert!(
                    report.counts.get(op).copied().unwrap_or(0) > 0,
                    "the run never exercised {op}: {:?}",
                    report.counts
                );
            }
        }
        Err(f) => panic!("{f}"),
    }
}

/// Seeds: QUARRY_FSX_SEED replays one; otherwise the fixed ones (CI must
/// not be flaky), plus QUARRY_FSX_EXTRA_SEEDS clock-derived ones for
/// exploration, each printed so a failure can be replayed.
fn seeds(fixed: &[u64]) -> Vec<u64> {
    if let Ok(s) = std::env::var("QUARRY_FSX_SEED") {
        return vec![s.parse().expect("QUARRY_FSX_SEED must be a number")];
    }
    let mut v = fixed.to_vec();
    let extra: u64 = std::env::var("QUARRY_FSX_EXTRA_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    for i in 0..extra {
        let seed = t.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        eprintln!("fsx: extra seed {seed}");
        v.push(seed);
    }
    v
}

#[test]
fn fsx_in_memory() {
    for seed in seeds(&[1, 2, 3]) {
        check(FsxConfig {
            seed,
            ops: 2500,
            ..FsxConfig::default()
        });
    }
}

#[test]
fn fsx_on_disk_with_crash_reopen() {
    for seed in seeds(&[11]) {
        let dir = tempfile::tempdir().expect("tempdir");
        check(FsxConfig {
            seed,
            ops: 1200,
            max_size: 3 << 20,
            dir: Some(dir.path().to_path_buf()),
            reopen_pct: 2,
            ..FsxConfig::default()
        });
    }
}
