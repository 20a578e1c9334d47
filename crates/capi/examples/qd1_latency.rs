//! QD1 latency of 4 KiB random writes against a running `quarry up --dir D`
//! cluster, through the Rust API (`quarry_rbd::Image` on the networked
//! client) and through the C layer (`rbd_write`, and `rbd_aio_write` with a
//! completion callback as QEMU uses it) with the rbd cache off (`none`) and
//! in `writeback` mode. Same image, same offsets; prints mean/p50/p99.
//!
//! Usage: `cargo run --release -p quarry-capi --example qd1_latency -- D [seconds]`
//! (creates image `qd1bench` of 1 GiB in pool `data` if missing).

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_capi::ffi_rados::{
    rados_conf_read_file, rados_conf_set, rados_connect, rados_create, rados_ioctx_create,
    rados_ioctx_destroy, rados_shutdown, IoCtxT, RadosT,
};
use quarry_capi::ffi_rbd::{
    rbd_aio_create_completion, rbd_aio_get_return_value, rbd_aio_release, rbd_aio_write, rbd_close,
    rbd_create, rbd_flush, rbd_open, rbd_write, CompT, ImageT,
};
use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_rados::Rados;
use quarry_rbd::{IoCtx, OpenOptions, Rbd};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const IMAGE: &str = "qd1bench";
const SIZE: u64 = 1 << 30;
const IO: usize = 4096;

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn offsets(n: usize) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| (next(&mut x) % (SIZE / IO as u64)) * IO as u64)
        .collect()
}

fn report(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    let n = lat.len().max(1);
    let mean = lat.iter().map(|d| d.as_secs_f64()).sum::<f64>() / n as f64;
    let pct = |p: usize| lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1)));
    println!(
        "{name:<34} {:>6} writes  mean {:>6.1} us  p50 {:>6.1} us  p99 {:>7.1} us",
        lat.len(),
        mean * 1e6,
        pct(50).map_or(0.0, |d| d.as_secs_f64() * 1e6),
        pct(99).map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn check(r: i32, what: &str) -> Res<()> {
    if r < 0 {
        return Err(format!("{what}: {r}").into());
    }
    Ok(())
}

/// An image opened through the C API with `settings` applied by
/// `rados_conf_set`, as QEMU does.
struct CImage {
    cluster: RadosT,
    io: IoCtxT,
    image: ImageT,
}

impl CImage {
    fn open(dir: &Path, settings: &[(&str, &str)]) -> Res<CImage> {
        let conf = cstr(&dir.join("ceph.conf").to_string_lossy());
        let mut cluster: RadosT = std::ptr::null_mut();
        let mut io: IoCtxT = std::ptr::null_mut();
        let mut image: ImageT = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; C strings live across each call.
        unsafe {
            check(rados_create(&mut cluster, std::ptr::null()), "rados_create")?;
            check(
                rados_conf_read_file(cluster, conf.as_ptr()),
                "conf_read_file",
            )?;
            for (k, v) in settings {
                check(
                    rados_conf_set(cluster, cstr(k).as_ptr(), cstr(v).as_ptr()),
                    "conf_set",
                )?;
            }
            check(rados_connect(cluster), "rados_connect")?;
            check(
                rados_ioctx_create(cluster, cstr("data").as_ptr(), &mut io),
                "ioctx_create",
            )?;
            let mut order = 22;
            let r = rbd_create(io, cstr(IMAGE).as_ptr(), SIZE, &mut order);
            if r != 0 && r != -libc::EEXIST {
                check(r, "rbd_create")?;
            }
            check(
                rbd_open(io, cstr(IMAGE).as_ptr(), &mut image, std::ptr::null()),
                "rbd_open",
            )?;
        }
        Ok(CImage { cluster, io, image })
    }
}

impl Drop for CImage {
    fn drop(&mut self) {
        // SAFETY: handles from open, released once.
        unsafe {
            rbd_close(self.image);
            rados_ioctx_destroy(self.io);
            rados_shutdown(self.cluster);
        }
    }
}

unsafe extern "C" fn on_complete(c: *mut c_void, arg: *mut c_void) {
    // SAFETY: arg is the &mpsc::Sender passed at submit, alive until recv.
    let tx = unsafe { &*(arg as *const mpsc::Sender<isize>) };
    // SAFETY: live completion.
    let _ = tx.send(unsafe { rbd_aio_get_return_value(c as CompT) });
}

fn c_sync(img: &CImage, offs: &[u64], secs: u64) -> Res<Vec<Duration>> {
    let buf = vec![0x5au8; IO];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut lat = Vec::new();
    for &off in offs.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        // SAFETY: buf valid for IO bytes.
        let r = unsafe { rbd_write(img.image, off, IO, buf.as_ptr().cast()) };
        lat.push(t.elapsed());
        check(r as i32, "rbd_write")?;
    }
    Ok(lat)
}

fn c_aio(img: &CImage, offs: &[u64], secs: u64) -> Res<Vec<Duration>> {
    let buf = vec![0xa5u8; IO];
    let (tx, rx) = mpsc::channel::<isize>();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut lat = Vec::new();
    for &off in offs.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        let mut c: CompT = std::ptr::null_mut();
        // SAFETY: the sender outlives the completion (we wait for it below).
        unsafe {
            check(
                rbd_aio_create_completion(
                    (&tx as *const mpsc::Sender<isize>) as *mut c_void,
                    Some(on_complete),
                    &mut c,
                ),
                "create_completion",
            )?;
            check(
                rbd_aio_write(img.image, off, IO, buf.as_ptr().cast(), c),
                "aio_write",
            )?;
        }
        let r = rx.recv_timeout(Duration::from_secs(60))?;
        lat.push(t.elapsed());
        // SAFETY: completed; released once.
        unsafe { rbd_aio_release(c) };
        check(r as i32, "aio completion")?;
    }
    Ok(lat)
}

fn mon_addrs(dir: &Path) -> Res<Vec<String>> {
    let conf = std::fs::read_to_string(dir.join("ceph.conf"))?;
    let line = conf
        .lines()
        .find(|l| l.trim_start().starts_with("mon_host") || l.trim_start().starts_with("mon host"))
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

fn rust_api(dir: &Path, offs: &[u64], secs: u64) -> Res<Vec<Duration>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (addrs, key) = (mon_addrs(dir)?, secret(dir)?);
    let offs = offs.to_vec();
    rt.block_on(async move {
        let c =
            ClusterClient::connect(addrs, "client.admin", key, ClientTimeouts::default()).await?;
        let pool = c.pool_lookup("data").await?;
        let rbd = Rbd::new(c);
        let img = rbd
            .open(
                &IoCtx::new(pool, "data", ""),
                IMAGE,
                &OpenOptions::default(),
            )
            .await?;
        let data = Bytes::from(vec![0x3cu8; IO]);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut lat = Vec::new();
        for &off in offs.iter().cycle() {
            if Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            img.write(off, data.clone()).await?;
            lat.push(t.elapsed());
        }
        img.close().await?;
        Res::Ok(lat)
    })
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: qd1_latency DIR [seconds]")?);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let offs = offsets(1 << 16);
    // Create the image and warm up (PGs active, connections open).
    {
        let img = CImage::open(&dir, &[("rbd_cache", "false")])?;
        c_sync(&img, &offs, 2)?;
    }
    for round in 0..2 {
        println!("-- round {round}");
        report("rust api (quarry_rbd::Image)", rust_api(&dir, &offs, secs)?);
        let none = CImage::open(&dir, &[("rbd_cache", "false")])?;
        report("C rbd_write, cache none", c_sync(&none, &offs, secs)?);
        report("C rbd_aio_write+callback, none", c_aio(&none, &offs, secs)?);
        drop(none);
        let wb = CImage::open(
            &dir,
            &[("rbd_cache", "true"), ("rbd_cache_policy", "writeback")],
        )?;
        // The first flush ends writethrough_until_flush, as a guest's would.
        // SAFETY: live image.
        check(unsafe { rbd_flush(wb.image) }, "rbd_flush")?;
        report(
            "C rbd_aio_write+callback, writeback",
            c_aio(&wb, &offs, secs)?,
        );
        let t = Instant::now();
        // SAFETY: live image.
        check(unsafe { rbd_flush(wb.image) }, "rbd_flush")?;
        println!(
            "{:<34} {:>.1} ms",
            "  final flush of the dirty data",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
