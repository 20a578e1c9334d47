//! Quick cluster benchmark: 4 KiB random writes at QD1 and QD32 through the
//! networked client against a running `quarry up --dir D` cluster, on a
//! size-3 pool. Prints IOPS, mean/p99 latency and the OSDs' CPU time per
//! write (utime+stime of the pids in `D/run/osd.*.pid`, before/after).
//!
//! Usage: `cargo run --release -p quarry-client --example cluster_bench -- D [seconds]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_rados::{ObjectId, Op, OpRequest, Rados};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const OBJECTS: u64 = 256;
const OBJECT_SIZE: u64 = 4 << 20;
const IO: u64 = 4096;

fn mon_addrs(dir: &Path) -> Res<Vec<String>> {
    let conf = std::fs::read_to_string(dir.join("ceph.conf"))?;
    let line = conf
        .lines()
        .find(|l| {
            let l = l.trim_start();
            l.starts_with("mon_host") || l.starts_with("mon host")
        })
        .ok_or("no mon_host in ceph.conf")?;
    let (_, v) = line.split_once('=').ok_or("bad mon_host line")?;
    Ok(v.split(',').map(|s| s.trim().to_string()).collect())
}

fn secret(dir: &Path) -> Res<quarry_auth::Secret> {
    let kr = std::fs::read_to_string(dir.join("ceph.client.admin.keyring"))?;
    let key = kr
        .lines()
        .find_map(|l| l.trim().strip_prefix("key = "))
        .ok_or("no key in keyring")?;
    Ok(quarry_auth::Secret::from_base64(key.trim())?)
}

fn osd_pids(dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(dir.join("run")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with("osd.") && n.ends_with(".pid")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesized command name; utime and stime are 14 and 15.
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// A small xorshift: no dependency, different stream per worker.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

async fn run(c: &Arc<ClusterClient>, pool: i64, qd: usize, secs: u64) -> Res<(u64, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..qd {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1).wrapping_mul(0x1234_5678_9abc);
            let data = Bytes::from(vec![0xA5u8; IO as usize]);
            while Instant::now() < deadline {
                let obj = next(&mut x) % OBJECTS;
                let off = (next(&mut x) % (OBJECT_SIZE / IO)) * IO;
                let req = OpRequest::new(ObjectId::new(pool, format!("bench.{obj:016x}"))).op(
                    Op::Write {
                        off,
                        data: data.clone(),
                    },
                );
                let t = Instant::now();
                c.operate(req).await?;
                lat.push(t.elapsed());
            }
            Res::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as u64, all))
}

fn report(name: &str, n: u64, mut lat: Vec<Duration>, secs: u64, cpu_us: f64) {
    lat.sort();
    let mean = lat.iter().map(|d| d.as_secs_f64()).sum::<f64>() / lat.len().max(1) as f64;
    let p99 = lat
        .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    println!(
        "{name}: {:.0} IOPS, mean {:.0} us, p99 {:.0} us, OSD CPU {:.0} us/write ({n} writes)",
        n as f64 / secs as f64,
        mean * 1e6,
        p99.as_secs_f64() * 1e6,
        cpu_us / n.max(1) as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: cluster_bench DIR [seconds]")?);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let c = ClusterClient::connect(
        mon_addrs(&dir)?,
        "client.admin",
        secret(&dir)?,
        ClientTimeouts::default(),
    )
    .await?;
    let pool = match c.pool_lookup("bench").await {
        Ok(p) => p,
        Err(_) => {
            c.monc()
                .command(quarry_monc::MonCommand::PoolCreate {
                    name: "bench".into(),
                    pg_num: Some(32),
                    size: Some(3),
                    min_size: Some(2),
                    application: None,
                })
                .await?;
            c.pool_lookup("bench").await?
        }
    };
    // Warm-up: PGs go active, connections open.
    run(&c, pool, 8, 2).await?;
    let pids = osd_pids(&dir);
    let tck = clk_tck() as f64;
    for qd in [1usize, 32] {
        let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        let (n, lat) = run(&c, pool, qd, secs).await?;
        let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        let cpu_us = (after - before) as f64 / tck * 1e6;
        report(&format!("4KiB randwrite QD{qd}"), n, lat, secs, cpu_us);
    }
    Ok(())
}
