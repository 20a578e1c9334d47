//! Durable 4 KiB random-write benchmark: the store vs a plain file; then
//! the store's 4 MiB whole-object writes.
//!
//! `cargo run --release -p quarry-store --example store_bench -- [DIR] [SECS]`
//!
//! For QD1 and QD32 it reports IOPS and mean/p99 latency of
//! * the store: `Store::apply(Write 4 KiB)` (durable when it returns), and
//! * a plain file in the same directory: `pwrite` 4 KiB + `fdatasync`,
//!   the durable-write floor of the disk.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_rados::{ObjectId, Op, OpRequest};
use quarry_store::Store;

const OBJ_SIZE: u64 = 4 << 20;
/// Objects in the working set (env QUARRY_BENCH_OBJECTS overrides).
fn objects() -> u64 {
    std::env::var("QUARRY_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}
const IO: usize = 4096;

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

struct Stats {
    lat_us: Vec<f64>,
    elapsed: Duration,
    cpu_s: f64,
}

/// CPU time (user + system) of this process so far, from /proc (0 if unknown).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesized command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

impl Stats {
    fn print(&mut self, what: &str) {
        self.lat_us.sort_by(|a, b| a.total_cmp(b));
        let n = self.lat_us.len().max(1);
        let mean = self.lat_us.iter().sum::<f64>() / n as f64;
        let p99 = self.lat_us[(n * 99 / 100).min(n - 1)];
        println!(
            "{what:<28} {:>9.0} IOPS   mean {:>8.1} us   p99 {:>8.1} us   cpu {:>6.1} us/op   ({} ops)",
            self.lat_us.len() as f64 / self.elapsed.as_secs_f64(),
            mean,
            p99,
            self.cpu_s * 1e6 / n as f64,
            self.lat_us.len()
        );
    }
}

/// Run `op` from `qd` threads for `secs`, collecting per-op latencies.
fn run<F>(qd: usize, secs: f64, op: F) -> Stats
where
    F: Fn(&mut Rng) + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let threads: Vec<_> = (0..qd)
        .map(|t| {
            let (op, stop) = (op.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 7919));
                let mut lat = Vec::new();
                // QUARRY_BENCH_OPS: a fixed op count per thread (for profilers).
                let max_ops: usize = std::env::var("QUARRY_BENCH_OPS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(usize::MAX);
                while !stop.load(Ordering::Relaxed) && lat.len() < max_ops {
                    let t0 = Instant::now();
                    op(&mut rng);
                    lat.push(t0.elapsed().as_secs_f64() * 1e6);
                }
                lat
            })
        })
        .collect();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline && !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat_us = Vec::new();
    for t in threads {
        lat_us.extend(t.join().expect("bench thread"));
    }
    Stats {
        lat_us,
        elapsed: start.elapsed(),
        cpu_s: cpu_seconds() - cpu0,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/quarry-store-bench".into()),
    );
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    // Optional: "file" or "store" to run one side only (for profiling).
    let only = args.next().unwrap_or_default();
    let qds: Vec<usize> = std::env::var("QUARRY_BENCH_QD")
        .ok()
        .and_then(|v| v.split(',').map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 32]);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    println!(
        "dir {}  working set {} MiB  {secs} s per run",
        dir.display(),
        (OBJ_SIZE * objects()) >> 20
    );

    if only != "store" {
        bench_file(&dir, secs, &qds);
    }
    if only != "file" {
        bench_store(&dir, secs, &qds);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Plain file: preallocate by writing, then pwrite + fdatasync.
fn bench_file(dir: &std::path::Path, secs: f64, qds: &[usize]) {
    let fpath = dir.join("plain.dat");
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&fpath)
            .expect("open plain file"),
    );
    let chunk = vec![0xA5u8; 1 << 20];
    for i in 0..((OBJ_SIZE * objects()) >> 20) {
        file.write_all_at(&chunk, i << 20).expect("prefill");
    }
    file.sync_all().expect("sync");
    let blocks = OBJ_SIZE * objects() / IO as u64;
    for &qd in qds {
        let f = file.clone();
        let buf = vec![0x5Au8; IO];
        let mut s = run(qd, secs, move |rng| {
            let off = (rng.next() % blocks) * IO as u64;
            f.write_all_at(&buf, off).expect("pwrite");
            f.sync_data().expect("fdatasync");
        });
        s.print(&format!("file pwrite+fdatasync QD{qd}"));
    }
    drop(file);
    let _ = std::fs::remove_file(&fpath);
}

/// The store: prefill objects so writes are overwrites, as for the file.
fn bench_store(dir: &std::path::Path, secs: f64, qds: &[usize]) {
    let store = Arc::new(Store::open(&dir.join("store")).expect("open store"));
    for o in 0..objects() {
        store
            .apply(
                &OpRequest::new(ObjectId::new(1, format!("obj{o}")))
                    .op(Op::WriteFull(Bytes::from(vec![0xA5u8; OBJ_SIZE as usize]))),
            )
            .expect("prefill store");
    }
    // Profilers attach after this line (the prefill's 4 MiB writes differ).
    eprintln!("prefilled {} objects", objects());
    let data = Bytes::from(vec![0x5Au8; IO]);
    for &qd in qds {
        let (st, data) = (store.clone(), data.clone());
        let nobj = objects();
        let mut s = run(qd, secs, move |rng| {
            let r = rng.next();
            let obj = r % nobj;
            let off = ((r >> 8) % (OBJ_SIZE / IO as u64)) * IO as u64;
            st.apply(
                &OpRequest::new(ObjectId::new(1, format!("obj{obj}"))).op(Op::Write {
                    off,
                    data: data.clone(),
                }),
            )
            .expect("store write");
        });
        s.print(&format!("store write QD{qd}"));
    }
    // Whole-object 4 MiB writes (sequential over the objects), as a 4 MiB
    // sequential image write sends them to each replica.
    let big = Bytes::from(vec![0x3Cu8; OBJ_SIZE as usize]);
    for qd in [1usize, 4] {
        let (st, big) = (store.clone(), big.clone());
        let nobj = objects();
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut s = run(qd, secs, move |_| {
            let obj = next.fetch_add(1, Ordering::Relaxed) % nobj;
            st.apply(
                &OpRequest::new(ObjectId::new(1, format!("obj{obj}"))).op(Op::Write {
                    off: 0,
                    data: big.clone(),
                }),
            )
            .expect("store write 4M");
        });
        s.print(&format!("store write 4M QD{qd}"));
    }
    let u = store.usage().expect("usage");
    println!(
        "store: {} objects, {} MiB stored, file {} MiB",
        u.objects,
        u.stored_bytes >> 20,
        u.file_bytes >> 20
    );
}
