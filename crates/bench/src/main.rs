//! `quarry-bench [--dir D] [--seconds S] [--image-size BYTES]`
//!
//! Measures the image engine on the embedded backend (the local store, with
//! every write durable before it is acknowledged) and, as the machine's
//! limit, a plain file on the same disk written with `pwrite` +
//! `fdatasync`. Prints one table: IOPS, bandwidth, mean and p99 latency per
//! job, and the ratio of Quarry's 4 KiB QD1 durable-write latency to the
//! plain file's (issue target: within 2x).
//!
//! This is a benchmark, not a test: it asserts nothing about speed.

use std::fs::OpenOptions as FsOpen;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_fsx::Prng;
use quarry_rados::Rados;
use quarry_rbd::{CreateOptions, Image, OpenOptions, Rbd};
use quarry_store::Embedded;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    RandWrite,
    RandRead,
    SeqWrite,
    SeqRead,
}

#[derive(Clone, Copy)]
struct Job {
    name: &'static str,
    kind: Kind,
    bs: u64,
    qd: usize,
}

struct Result_ {
    ops: u64,
    bytes: u64,
    elapsed: Duration,
    lat_us: Vec<u64>,
}

impl Result_ {
    fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / (1 << 20) as f64
    }
    fn mean_us(&self) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        self.lat_us.iter().sum::<u64>() as f64 / self.lat_us.len() as f64
    }
    fn p99_us(&mut self) -> u64 {
        if self.lat_us.is_empty() {
            return 0;
        }
        self.lat_us.sort_unstable();
        let idx = (self.lat_us.len() * 99 / 100).min(self.lat_us.len() - 1);
        self.lat_us[idx]
    }
}

fn offset(kind: Kind, rng: &mut Prng, seq: &mut u64, bs: u64, size: u64) -> u64 {
    match kind {
        Kind::RandWrite | Kind::RandRead => (rng.next_u64() % (size / bs)) * bs,
        Kind::SeqWrite | Kind::SeqRead => {
            let off = *seq;
            *seq = (*seq + bs) % (size - size % bs);
            off
        }
    }
}

async fn run_image(
    img: Arc<Image>,
    job: &Job,
    size: u64,
    dur: Duration,
) -> Result<Result_, String> {
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..job.qd {
        let img = img.clone();
        let (kind, bs) = (job.kind, job.bs);
        tasks.push(tokio::spawn(async move {
            let mut rng = Prng::new(w as u64 + 1);
            let mut seq = (w as u64 * bs * 16) % size;
            let data = Bytes::from(vec![0xa5u8; bs as usize]);
            let mut lat = Vec::new();
            let mut bytes = 0;
            while Instant::now() < deadline {
                let off = offset(kind, &mut rng, &mut seq, bs, size);
                let t = Instant::now();
                let r = match kind {
                    Kind::RandWrite | Kind::SeqWrite => {
                        img.write(off, data.clone()).await.map(|n| n as usize)
                    }
                    Kind::RandRead | Kind::SeqRead => img.read(off, bs).await.map(|b| b.len()),
                };
                let n = r.map_err(|e| format!("I/O error at {off}: {e}"))?;
                lat.push(t.elapsed().as_micros() as u64);
                bytes += n as u64;
            }
            Ok::<_, String>((lat, bytes))
        }));
    }
    let mut res = Result_ {
        ops: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        lat_us: Vec::new(),
    };
    for t in tasks {
        let (lat, bytes) = t.await.map_err(|e| format!("worker panicked: {e}"))??;
        res.ops += lat.len() as u64;
        res.bytes += bytes;
        res.lat_us.extend(lat);
    }
    res.elapsed = start.elapsed();
    Ok(res)
}

/// The limit: pwrite (+ fdatasync for writes) on a plain file, `qd` threads.
fn run_file(path: &Path, job: &Job, size: u64, dur: Duration) -> Result<Result_, String> {
    let f = Arc::new(
        FsOpen::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?,
    );
    f.set_len(size).map_err(|e| format!("set_len: {e}"))?;
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut threads = Vec::new();
    for w in 0..job.qd {
        let f = f.clone();
        let (kind, bs) = (job.kind, job.bs);
        threads.push(std::thread::spawn(move || {
            let mut rng = Prng::new(w as u64 + 1);
            let mut seq = (w as u64 * bs * 16) % size;
            let mut buf = vec![0x5au8; bs as usize];
            let mut lat = Vec::new();
            let mut bytes = 0;
            while Instant::now() < deadline {
                let off = offset(kind, &mut rng, &mut seq, bs, size);
                let t = Instant::now();
                match kind {
                    Kind::RandWrite | Kind::SeqWrite => {
                        f.write_all_at(&buf, off)
                            .map_err(|e| format!("pwrite: {e}"))?;
                        f.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
                    }
                    Kind::RandRead | Kind::SeqRead => {
                        f.read_exact_at(&mut buf, off)
                            .map_err(|e| format!("pread: {e}"))?;
                    }
                }
                lat.push(t.elapsed().as_micros() as u64);
                bytes += bs;
            }
            Ok::<_, String>((lat, bytes))
        }));
    }
    let mut res = Result_ {
        ops: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        lat_us: Vec::new(),
    };
    for t in threads {
        let (lat, bytes) = t.join().map_err(|_| "worker panicked".to_string())??;
        res.ops += lat.len() as u64;
        res.bytes += bytes;
        res.lat_us.extend(lat);
    }
    res.elapsed = start.elapsed();
    Ok(res)
}

fn usage() -> ! {
    eprintln!("usage: quarry-bench [--dir DIR] [--seconds S] [--image-size BYTES]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut dir: Option<PathBuf> = None;
    let mut secs = 5u64;
    let mut size: u64 = 1 << 30;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--dir" => dir = Some(v.into()),
            "--seconds" => secs = v.parse().unwrap_or_else(|_| usage()),
            "--image-size" => size = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if let Err(e) = bench(dir, Duration::from_secs(secs), size).await {
        eprintln!("quarry-bench: {e}");
        std::process::exit(1);
    }
}

async fn bench(dir: Option<PathBuf>, dur: Duration, size: u64) -> Result<(), String> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = std::env::temp_dir().join(format!("quarry-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let jobs = [
        Job {
            name: "4k randwrite qd1",
            kind: Kind::RandWrite,
            bs: 4096,
            qd: 1,
        },
        Job {
            name: "4k randwrite qd32",
            kind: Kind::RandWrite,
            bs: 4096,
            qd: 32,
        },
        Job {
            name: "4k randread qd1",
            kind: Kind::RandRead,
            bs: 4096,
            qd: 1,
        },
        Job {
            name: "4k randread qd32",
            kind: Kind::RandRead,
            bs: 4096,
            qd: 32,
        },
        Job {
            name: "4m seqwrite qd4",
            kind: Kind::SeqWrite,
            bs: 4 << 20,
            qd: 4,
        },
        Job {
            name: "4m seqread qd4",
            kind: Kind::SeqRead,
            bs: 4 << 20,
            qd: 4,
        },
    ];

    let store_dir = dir.join("store");
    let embedded = Embedded::open(&store_dir).map_err(|e| format!("open store: {e}"))?;
    let rados: Arc<dyn Rados> = embedded.client();
    if rados.pool_lookup("rbd").await.is_err() {
        rados
            .pool_create("rbd")
            .await
            .map_err(|e| format!("pool create: {e}"))?;
    }
    let rbd = Rbd::new(rados);
    let io = rbd
        .ioctx("rbd", "")
        .await
        .map_err(|e| format!("ioctx: {e}"))?;
    let _ = rbd.remove(&io, "bench").await;
    rbd.create(&io, "bench", size, &CreateOptions::default())
        .await
        .map_err(|e| format!("create: {e}"))?;
    let img = Arc::new(
        rbd.open(&io, "bench", &OpenOptions::default())
            .await
            .map_err(|e| format!("open: {e}"))?,
    );
    // Fill the image so reads hit data, not holes.
    let fill = Bytes::from(vec![0x11u8; 4 << 20]);
    let mut off = 0;
    while off < size {
        img.write(off, fill.slice(..(size - off).min(4 << 20) as usize))
            .await
            .map_err(|e| format!("prefill: {e}"))?;
        off += 4 << 20;
    }
    let file = dir.join("plain-file");
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>8} | {:>10} {:>10} {:>10} {:>8} | {:>7}",
        "job",
        "iops",
        "MiB/s",
        "mean us",
        "p99 us",
        "file iops",
        "MiB/s",
        "mean us",
        "p99 us",
        "lat x"
    );
    for job in &jobs {
        let mut q = run_image(img.clone(), job, size, dur).await?;
        let mut f = {
            let file = file.clone();
            let job2 = Job { ..*job };
            tokio::task::spawn_blocking(move || run_file(&file, &job2, size, dur))
                .await
                .map_err(|e| format!("file bench: {e}"))??
        };
        let ratio = if f.mean_us() > 0.0 {
            q.mean_us() / f.mean_us()
        } else {
            0.0
        };
        let (qp, fp) = (q.p99_us(), f.p99_us());
        println!(
            "{:<20} {:>10.0} {:>10.1} {:>10.1} {:>8} | {:>10.0} {:>10.1} {:>10.1} {:>8} | {:>7.2}",
            job.name,
            q.iops(),
            q.mib_s(),
            q.mean_us(),
            qp,
            f.iops(),
            f.mib_s(),
            f.mean_us(),
            fp,
            ratio
        );
    }
    println!("(lat x = Quarry mean latency / plain-file mean latency; file writes are pwrite+fdatasync, reads go through the page cache)");
    let _ = std::fs::remove_file(&file);
    Ok(())
}
