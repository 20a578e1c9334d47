//! `rados bench SECONDS write|seq|rand` and `rados cleanup`: Ceph's quick
//! object-layer benchmark, with its options (`-t` ops in flight, `-b` object
//! size, `--no-cleanup`, `--run-name`) and its report (a line per second,
//! then totals, bandwidth and latency statistics).
//!
//! `write` stores objects `benchmark_data_<host>_<pid>_object<N>` and, with
//! `--no-cleanup`, a metadata object (`benchmark_last_metadata`, or the run
//! name) that `seq` and `rand` read back to know which objects to read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, PoolId};
use serde::{Deserialize, Serialize};

use super::{fail, ferr, Ctx, R};

/// Ceph's default metadata object name.
const DEFAULT_META: &str = "benchmark_last_metadata";

/// What a `write --no-cleanup` left for `seq`/`rand` and `cleanup`.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    prefix: String,
    objects: u64,
    object_size: u64,
}

/// Counters the workers update and the reporter reads.
#[derive(Default)]
struct Stats {
    started: u64,
    finished: u64,
    bytes: u64,
    lat_sum: f64,
    lat_sq_sum: f64,
    lat_min: f64,
    lat_max: f64,
    last_lat: f64,
}

impl Stats {
    fn done(&mut self, bytes: u64, lat: f64) {
        self.finished += 1;
        self.bytes += bytes;
        self.lat_sum += lat;
        self.lat_sq_sum += lat * lat;
        self.lat_min = if self.finished == 1 {
            lat
        } else {
            self.lat_min.min(lat)
        };
        self.lat_max = self.lat_max.max(lat);
        self.last_lat = lat;
    }

    fn avg_lat(&self) -> f64 {
        if self.finished == 0 {
            0.0
        } else {
            self.lat_sum / self.finished as f64
        }
    }
}

fn lock(s: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mean and (population) standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

const MB: f64 = 1024.0 * 1024.0;

fn meta_name(ctx: &Ctx) -> String {
    ctx.o
        .run_name
        .clone()
        .unwrap_or_else(|| DEFAULT_META.to_string())
}

fn object_name(prefix: &str, n: u64) -> String {
    format!("{prefix}_object{n}")
}

/// `rados bench SECONDS MODE`.
pub(super) async fn bench(ctx: &Ctx, secs: &str, mode: &str) -> R {
    let secs: u64 = secs
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| fail(format!("rados bench: invalid number of seconds '{secs}'")))?;
    let (pname, pool) = ctx.pool().await?;
    let conc = ctx.o.concurrency.unwrap_or(16);
    if conc == 0 {
        return Err(fail("rados bench: -t must be at least 1"));
    }
    match mode {
        "write" => write(ctx, &pname, pool, secs, conc).await,
        "seq" => read(ctx, &pname, pool, secs, conc, false).await,
        "rand" => read(ctx, &pname, pool, secs, conc, true).await,
        other => Err(fail(format!(
            "rados bench: unknown mode '{other}' (write, seq or rand)"
        ))),
    }
}

/// The per-second report: one line a second until `stop`; returns each
/// second's bandwidth (MB/s) and IOPS.
async fn reporter(
    stats: Arc<Mutex<Stats>>,
    start: Instant,
    conc: usize,
    op_bytes: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<f64>, Vec<f64>) {
    println!(
        "{:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}",
        "sec",
        "Cur ops",
        "started",
        "finished",
        "avg MB/s",
        "cur MB/s",
        "last lat(s)",
        "avg lat(s)"
    );
    let (mut bws, mut iopss) = (Vec::new(), Vec::new());
    let mut last_finished = 0u64;
    let mut sec = 0u64;
    loop {
        let finished = {
            let s = lock(&stats);
            let in_flight = s.started - s.finished;
            let cur_ops = s.finished - last_finished;
            let cur_mb = cur_ops as f64 * op_bytes as f64 / MB;
            let elapsed = start.elapsed().as_secs_f64().max(1e-9);
            let avg_mb = s.bytes as f64 / MB / elapsed;
            let last_lat = if s.finished == 0 {
                "-".to_string()
            } else {
                format!("{:.6}", s.last_lat)
            };
            println!(
                "{sec:>5} {:>7} {:>9} {:>9} {avg_mb:>9.3} {cur_mb:>9.3} {last_lat:>11} {:>11.6}",
                in_flight.min(conc as u64),
                s.started,
                s.finished,
                s.avg_lat()
            );
            if sec > 0 {
                bws.push(cur_mb);
                iopss.push(cur_ops as f64);
            }
            s.finished
        };
        last_finished = finished;
        sec += 1;
        let next = start + Duration::from_secs(sec);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.wait_for(|s| *s) => return (bws, iopss),
        }
    }
}

/// Totals and statistics after a run.
fn summary(
    kind: &str,
    stats: &Stats,
    elapsed: f64,
    op_bytes: u64,
    obj_size: u64,
    per_sec: (Vec<f64>, Vec<f64>),
) {
    let (bws, iopss) = per_sec;
    let (_, bw_sd) = mean_sd(&bws);
    let (_, iops_sd) = mean_sd(&iopss);
    let n = stats.finished.max(1) as f64;
    let lat_var = (stats.lat_sq_sum / n - stats.avg_lat().powi(2)).max(0.0);
    let max_of = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let min_of = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().copied().fold(f64::INFINITY, f64::min)
        }
    };
    println!("Total time run:         {elapsed:.4}");
    println!("{:<24}{}", format!("Total {kind} made:"), stats.finished);
    if kind == "writes" {
        println!("Write size:             {op_bytes}");
        println!("Object size:            {obj_size}");
    } else {
        println!("Read size:              {op_bytes}");
        println!("Object size:            {obj_size}");
    }
    println!(
        "Bandwidth (MB/sec):     {:.3}",
        stats.bytes as f64 / MB / elapsed.max(1e-9)
    );
    if kind == "writes" {
        println!("Stddev Bandwidth:       {bw_sd:.4}");
        println!("Max bandwidth (MB/sec): {:.0}", max_of(&bws));
        println!("Min bandwidth (MB/sec): {:.0}", min_of(&bws));
    }
    println!(
        "Average IOPS:           {:.0}",
        stats.finished as f64 / elapsed.max(1e-9)
    );
    println!("Stddev IOPS:            {iops_sd:.4}");
    println!("Max IOPS:               {:.0}", max_of(&iopss));
    println!("Min IOPS:               {:.0}", min_of(&iopss));
    println!("Average Latency(s):     {:.6}", stats.avg_lat());
    if kind == "writes" {
        println!("Stddev Latency(s):      {:.6}", lat_var.sqrt());
    }
    println!("Max latency(s):         {:.6}", stats.lat_max);
    println!("Min latency(s):         {:.6}", stats.lat_min);
}

async fn write(ctx: &Ctx, pname: &str, pool: PoolId, secs: u64, conc: usize) -> R {
    let size = ctx.o.block_size.unwrap_or(4 << 20);
    if size == 0 {
        return Err(fail("rados bench: -b must be at least 1 byte"));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let prefix = format!("benchmark_data_{host}_{}", std::process::id());
    println!(
        "hints = 1\nMaintaining {conc} concurrent writes of {size} bytes to objects of size {size} for up to {secs} seconds or 0 objects"
    );
    println!("Object prefix: {prefix}");
    let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let (stats, elapsed, per_sec) = drive(ctx, secs, conc, size, |i| {
        let oid = ctx.oid(pool, &object_name(&prefix, i));
        Some((oid, Op::WriteFull(data.clone())))
    })
    .await?;
    let written = stats.finished;
    summary("writes", &stats, elapsed, size, size, per_sec);
    if ctx.o.no_cleanup {
        let meta = Meta {
            prefix,
            objects: written,
            object_size: size,
        };
        let body = serde_json::to_vec(&meta).map_err(|e| fail(format!("metadata: {e}")))?;
        ctx.op(
            ctx.oid(pool, &meta_name(ctx)),
            vec![Op::WriteFull(Bytes::from(body))],
        )
        .await
        .map_err(|e| ferr(format_args!("error writing {pname}/{}", meta_name(ctx)), &e))?;
        return Ok(());
    }
    println!("Cleaning up (deleting benchmark objects)");
    let t = Instant::now();
    let removed = remove_objects(ctx, pool, &prefix, written, conc).await?;
    println!("Removed {removed} objects");
    println!(
        "Clean up completed and total clean up time :{:.6}",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Keep `conc` ops from `next` in flight until `secs` have passed or it
/// has none left, printing a line a second; returns the totals, the time
/// taken and each second's bandwidth and IOPS, or the first op's error.
async fn drive(
    ctx: &Ctx,
    secs: u64,
    conc: usize,
    op_bytes: u64,
    mut next: impl FnMut(u64) -> Option<(quarry_rados::ObjectId, Op)>,
) -> R<(Stats, f64, (Vec<f64>, Vec<f64>))> {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let rep = tokio::spawn(reporter(stats.clone(), start, conc, op_bytes, stop_rx));
    let deadline = start + Duration::from_secs(secs);
    let mut inflight = FuturesUnordered::new();
    let mut failed = None;
    let mut issued = 0u64;
    let mut exhausted = false;
    loop {
        while failed.is_none() && !exhausted && inflight.len() < conc && Instant::now() < deadline {
            let Some((oid, op)) = next(issued) else {
                exhausted = true;
                break;
            };
            issued += 1;
            lock(&stats).started += 1;
            let op = ctx.op(oid, vec![op]);
            inflight.push(async move {
                let t = Instant::now();
                (op.await, t.elapsed().as_secs_f64())
            });
        }
        let Some((r, lat)) = inflight.next().await else {
            break;
        };
        match r {
            Ok(out) => {
                // A read counts the bytes it got; a write, what it wrote.
                let bytes = match out.first() {
                    Some(OpOutput::Data(d)) => d.len() as u64,
                    _ => op_bytes,
                };
                lock(&stats).done(bytes, lat);
            }
            Err(e) => {
                lock(&stats).finished += 1;
                failed.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let per_sec = rep.await.unwrap_or_default();
    if let Some(e) = failed {
        return Err(ferr("error during benchmark", &e));
    }
    let totals = std::mem::take(&mut *lock(&stats));
    Ok((totals, elapsed, per_sec))
}

/// Remove `prefix`'s objects 0..count, `conc` at a time; returns how many
/// existed.
async fn remove_objects(ctx: &Ctx, pool: PoolId, prefix: &str, count: u64, conc: usize) -> R<u64> {
    let removals = (0..count).map(|n| {
        let oid = ctx.oid(pool, &object_name(prefix, n));
        ctx.op(oid, vec![Op::Remove])
    });
    let results: Vec<_> = futures::stream::iter(removals)
        .buffer_unordered(conc)
        .collect()
        .await;
    let mut removed = 0;
    for r in results {
        match r {
            Ok(_) => removed += 1,
            Err(e) if e.errno == Errno::ENOENT => {}
            Err(e) => return Err(ferr("error removing benchmark object", &e)),
        }
    }
    Ok(removed)
}

async fn load_meta(ctx: &Ctx, pname: &str, pool: PoolId) -> R<Meta> {
    let name = meta_name(ctx);
    let out = ctx
        .op(ctx.oid(pool, &name), vec![Op::Read { off: 0, len: 0 }])
        .await
        .map_err(|e| {
            if e.errno == Errno::ENOENT {
                fail(format!(
                    "no benchmark metadata {pname}/{name}: run 'rados bench SECONDS write --no-cleanup' first"
                ))
            } else {
                ferr(format_args!("error reading {pname}/{name}"), &e)
            }
        })?;
    let Some(OpOutput::Data(d)) = out.into_iter().next() else {
        return Err(fail(format!("{pname}/{name}: empty read")));
    };
    serde_json::from_slice(&d)
        .map_err(|e| fail(format!("{pname}/{name} is not benchmark metadata: {e}")))
}

async fn read(ctx: &Ctx, pname: &str, pool: PoolId, secs: u64, conc: usize, random: bool) -> R {
    let meta = load_meta(ctx, pname, pool).await?;
    if meta.objects == 0 {
        return Err(fail("rados bench: the write run left no objects to read"));
    }
    // xorshift: enough to spread reads; no cryptographic need.
    let mut seed = 0x9e37_79b9_7f4a_7c15
        ^ u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let (stats, elapsed, per_sec) = drive(ctx, secs, conc, meta.object_size, |i| {
        let n = if random {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % meta.objects
        } else if i < meta.objects {
            i
        } else {
            return None;
        };
        let oid = ctx.oid(pool, &object_name(&meta.prefix, n));
        Some((oid, Op::Read { off: 0, len: 0 }))
    })
    .await?;
    summary(
        "reads",
        &stats,
        elapsed,
        meta.object_size,
        meta.object_size,
        per_sec,
    );
    Ok(())
}

/// `rados cleanup [--run-name NAME]`: remove what `write --no-cleanup` left.
pub(super) async fn cleanup(ctx: &Ctx) -> R {
    let (pname, pool) = ctx.pool().await?;
    let meta = load_meta(ctx, &pname, pool).await?;
    let conc = ctx.o.concurrency.unwrap_or(16).max(1);
    let removed = remove_objects(ctx, pool, &meta.prefix, meta.objects, conc).await?;
    match ctx
        .op(ctx.oid(pool, &meta_name(ctx)), vec![Op::Remove])
        .await
    {
        Ok(_) => {}
        Err(e) if e.errno == Errno::ENOENT => {}
        Err(e) => return Err(ferr("error removing benchmark metadata", &e)),
    }
    println!("Removed {removed} objects");
    Ok(())
}
