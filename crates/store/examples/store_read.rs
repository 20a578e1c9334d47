//! Cached 4 KiB random reads through the OSD's inline read path
//! (`Store::try_read_cached`), for instruction counts under callgrind.
//!
//! `cargo run --release -p quarry-store --example store_read -- DIR [READS]`
//!
//! Fills 64 objects of 4 MiB (whole-object writes, as a prefilled image),
//! fragments them with 4,096 random 4 KiB overwrites, then times READS
//! random 4 KiB reads (all data in the page cache) and prints ns per read.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use quarry_rados::{ObjectId, Op, OpRequest};
use quarry_store::{CachedRead, Store};

const OBJ_SIZE: u64 = 4 << 20;
const OBJECTS: u64 = 64;

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

fn name(o: u64) -> String {
    // Image data objects' names: a long shared prefix, as in the OSDs.
    format!("rbd_data.5f2a9c3e81d4.{o:016x}")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/quarry-store-read".into()),
    );
    let reads: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let store = Store::open(&dir.join("store")).expect("open store");
    for o in 0..OBJECTS {
        store
            .apply(
                &OpRequest::new(ObjectId::new(1, name(o)))
                    .op(Op::WriteFull(Bytes::from(vec![0xA5u8; OBJ_SIZE as usize]))),
            )
            .expect("fill");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4096 {
        let o = rng.next() % OBJECTS;
        let off = (rng.next() % (OBJ_SIZE / 4096)) * 4096;
        store
            .apply(&OpRequest::new(ObjectId::new(1, name(o))).op(Op::Write {
                off,
                data: Bytes::from(vec![0x5Au8; 4096]),
            }))
            .expect("overwrite");
    }
    let reqs: Vec<OpRequest> = (0..1024)
        .map(|_| {
            let o = rng.next() % OBJECTS;
            let off = (rng.next() % (OBJ_SIZE / 4096)) * 4096;
            OpRequest::new(ObjectId::new(1, name(o))).op(Op::Read { off, len: 4096 })
        })
        .collect();
    // Warm the page cache and the index cache, then measure.
    let mut misses = 0u64;
    for r in &reqs {
        let _ = store.try_read_cached(r);
    }
    let t = Instant::now();
    for i in 0..reads {
        match store.try_read_cached(&reqs[(i % 1024) as usize]) {
            CachedRead::Done(Ok(_)) => {}
            CachedRead::Done(Err(e)) => panic!("read failed: {e}"),
            _ => misses += 1,
        }
    }
    let el = t.elapsed();
    println!(
        "{reads} reads, {misses} not served inline, {:.0} ns per read",
        el.as_nanos() as f64 / reads as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
