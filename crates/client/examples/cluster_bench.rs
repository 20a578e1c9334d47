//! Cluster benchmark through the networked client against a running
//! `quarry up --dir D` cluster (a size-3 pool `bench` is created if
//! missing): 4 KiB random write/read at QD1 and QD32 and 4 MiB sequential
//! write/read at QD4, each with IOPS, bandwidth, mean/p99 latency and the
//! OSDs' CPU time per op (utime+stime of the pids in `D/run/osd.*.pid`,
//! before/after). Beside them the local limits: 4 KiB pwrite+fdatasync
//! QD1 on a file in D and a loopback TCP round trip; and the OSDs'
//! resident memory idle (before the load) and after it.
//!
//! Usage: `cargo run --release -p quarry-client --example cluster_bench -- D [seconds per job]`
//! (`CLUSTER_BENCH_JOBS=randread,QD32` runs only the jobs whose name contains a part).

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const OBJECTS: u64 = 256;
const OBJECT_SIZE: u64 = 4 << 20;
const IO: u64 = 4096;
/// Objects the sequential jobs cycle through (bounds the space used).
const SEQ_OBJECTS: u64 = 32;

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

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
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

/// What one job does.
#[derive(Clone, Copy, PartialEq)]
enum Job {
    RandWrite,
    RandRead,
    SeqWrite,
    SeqRead,
}

impl Job {
    fn bytes(self) -> u64 {
        match self {
            Job::RandWrite | Job::RandRead => IO,
            Job::SeqWrite | Job::SeqRead => OBJECT_SIZE,
        }
    }
}

async fn run(
    c: &Arc<ClusterClient>,
    pool: i64,
    job: Job,
    qd: usize,
    secs: u64,
) -> Res<(u64, Vec<Duration>, f64)> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..qd {
        let c = c.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1).wrapping_mul(0x1234_5678_9abc);
            let data = Bytes::from(vec![0xA5u8; job.bytes() as usize]);
            // The sequential write fills every object the reads use, even
            // if that takes longer than asked.
            let more = |seq: &std::sync::atomic::AtomicU64| {
                Instant::now() < deadline
                    || (job == Job::SeqWrite
                        && seq.load(std::sync::atomic::Ordering::Relaxed) < SEQ_OBJECTS)
            };
            while more(&seq) {
                let req = match job {
                    Job::RandWrite | Job::RandRead => {
                        // Random reads hit the objects the sequential
                        // write filled, so they read real blocks.
                        let (name, objs) = match job {
                            Job::RandWrite => ("bench", OBJECTS),
                            _ => ("seq", SEQ_OBJECTS),
                        };
                        let obj = next(&mut x) % objs;
                        let off = (next(&mut x) % (OBJECT_SIZE / IO)) * IO;
                        let oid = ObjectId::new(pool, format!("{name}.{obj:016x}"));
                        let op = if job == Job::RandWrite {
                            Op::Write {
                                off,
                                data: data.clone(),
                            }
                        } else {
                            Op::Read { off, len: IO }
                        };
                        OpRequest::new(oid).op(op)
                    }
                    Job::SeqWrite | Job::SeqRead => {
                        let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let oid = ObjectId::new(pool, format!("seq.{:016x}", n % SEQ_OBJECTS));
                        let op = if job == Job::SeqWrite {
                            Op::Write {
                                off: 0,
                                data: data.clone(),
                            }
                        } else {
                            Op::Read {
                                off: 0,
                                len: OBJECT_SIZE,
                            }
                        };
                        OpRequest::new(oid).op(op)
                    }
                };
                let reading = matches!(job, Job::RandRead | Job::SeqRead);
                let t = Instant::now();
                let reply = c.operate(req).await?;
                lat.push(t.elapsed());
                if reading {
                    // A read that returns less than asked is a broken run.
                    match reply.outputs.first() {
                        Some(OpOutput::Data(d)) if d.len() as u64 == job.bytes() => {}
                        _ => return Err("short or missing read data".into()),
                    }
                }
            }
            Res::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as u64, all, start.elapsed().as_secs_f64()))
}

fn stats(mut lat: Vec<Duration>) -> (f64, f64) {
    lat.sort();
    let mean = lat.iter().map(|d| d.as_secs_f64()).sum::<f64>() / lat.len().max(1) as f64;
    let p99 = lat
        .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    (mean * 1e6, p99.as_secs_f64() * 1e6)
}

fn report(name: &str, n: u64, lat: Vec<Duration>, secs: f64, bytes: u64, cpu_us: f64) {
    let (mean, p99) = stats(lat);
    println!(
        "{name:<22} {:>8.0} IOPS {:>8.1} MiB/s  mean {:>7.0} us  p99 {:>7.0} us  OSD CPU {:>6.0} us/op  ({n} ops)",
        n as f64 / secs,
        (n * bytes) as f64 / secs / (1 << 20) as f64,
        mean,
        p99,
        cpu_us / n.max(1) as f64,
    );
}

/// The disk's durable-write floor: 4 KiB pwrite + fdatasync at QD1 on a
/// preallocated file in `dir` (same file system as the OSDs).
fn disk_floor(dir: &Path, secs: u64) -> Res<(u64, Vec<Duration>)> {
    let path = dir.join("bench-floor.tmp");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    const SPAN: u64 = 64 << 20;
    let zeros = vec![0u8; 1 << 20];
    for i in 0..SPAN / (1 << 20) {
        f.write_all_at(&zeros, i << 20)?;
    }
    f.sync_all()?;
    let buf = vec![0x5Au8; IO as usize];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let off = (next(&mut x) % (SPAN / IO)) * IO;
        let t = Instant::now();
        f.write_all_at(&buf, off)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok((lat.len() as u64, lat))
}

/// A loopback TCP round trip of a 64-byte message (TCP_NODELAY), blocking sockets.
fn loopback_rtt(secs: u64) -> Res<(u64, Vec<Duration>)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 64];
        loop {
            if s.read_exact(&mut b).is_err() {
                return Ok(());
            }
            s.write_all(&b)?;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut b = [7u8; 64];
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        lat.push(t.elapsed());
    }
    drop(s);
    let _ = echo.join();
    Ok((lat.len() as u64, lat))
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
    let pids = osd_pids(&dir);
    if pids.is_empty() {
        return Err(format!("no OSD pid files in {}/run", dir.display()).into());
    }
    let rss = |pids: &[u32]| -> Vec<u64> { pids.iter().map(|&p| rss_kib(p) >> 10).collect() };
    println!("OSD RSS idle (MiB): {:?}", rss(&pids));
    let limit_secs = secs.clamp(1, 5);
    let (n, lat) = disk_floor(&dir, limit_secs)?;
    let (mean, p99) = stats(lat);
    println!(
        "local limit: 4KiB pwrite+fdatasync QD1: mean {mean:.0} us  p99 {p99:.0} us  ({n} ops)"
    );
    let (n, lat) = loopback_rtt(limit_secs)?;
    let (mean, p99) = stats(lat);
    println!("local limit: loopback TCP round trip: mean {mean:.1} us  p99 {p99:.1} us  ({n} ops)");
    // Warm-up: PGs go active, connections open.
    run(&c, pool, Job::RandWrite, 8, 2).await?;
    let tck = clk_tck() as f64;
    let jobs = [
        ("4KiB randwrite QD1", Job::RandWrite, 1),
        ("4KiB randwrite QD32", Job::RandWrite, 32),
        ("4MiB seqwrite QD4", Job::SeqWrite, 4),
        ("4MiB seqread QD4", Job::SeqRead, 4),
        ("4KiB randread QD1", Job::RandRead, 1),
        ("4KiB randread QD32", Job::RandRead, 32),
    ];
    // CLUSTER_BENCH_JOBS="randwrite QD32,randread" runs only the jobs whose
    // name contains one of the comma-separated parts (profiling one job).
    let only = std::env::var("CLUSTER_BENCH_JOBS").ok();
    for (name, job, qd) in jobs {
        if let Some(only) = &only {
            if !only.split(',').any(|part| name.contains(part.trim())) {
                continue;
            }
        }
        let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        let (n, lat, took) = run(&c, pool, job, qd, secs).await?;
        let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        let cpu_us = after.saturating_sub(before) as f64 / tck * 1e6;
        report(name, n, lat, took, job.bytes(), cpu_us);
    }
    println!("OSD RSS after load (MiB): {:?}", rss(&pids));
    Ok(())
}
