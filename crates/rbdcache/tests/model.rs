//! The cache against a model: random writes, reads, discards, zeroing,
//! flushes and invalidations over an in-memory backend that answers after
//! random delays (so the background flusher and write-back run while the
//! next operations arrive). Every read must equal the model; after every
//! flush the backend must equal the model.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use proptest::prelude::*;
use quarry_rbdcache::{Backend, Cache, CacheConfig};

const SIZE: u64 = 256 << 10;

/// A byte array with delays and an optional write failure, standing in
/// for the image engine (the C layer's tests run the real one).
#[derive(Clone, Default)]
struct MemBackend {
    data: Arc<Mutex<Vec<u8>>>,
    fail_writes: Arc<AtomicBool>,
    rng: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

impl MemBackend {
    fn new(seed: u64) -> MemBackend {
        let b = MemBackend::default();
        *b.data.lock().unwrap() = vec![0; SIZE as usize];
        b.rng.store(seed | 1, Ordering::Relaxed);
        b
    }
    fn snapshot(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
    async fn delay(&self) {
        // xorshift: a reproducible spread of latencies, 0..400 µs.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        match x % 4 {
            0 => {}
            1 => tokio::task::yield_now().await,
            _ => tokio::time::sleep(Duration::from_micros(x % 400)).await,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Failed;

#[async_trait]
impl Backend for MemBackend {
    type Error = Failed;
    async fn read(&self, off: u64, len: u64) -> Result<Bytes, Failed> {
        self.delay().await;
        let d = self.data.lock().unwrap();
        Ok(Bytes::copy_from_slice(
            &d[off as usize..(off + len) as usize],
        ))
    }
    async fn write(&self, off: u64, data: Bytes) -> Result<(), Failed> {
        self.delay().await;
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(Failed);
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.data.lock().unwrap()[off as usize..off as usize + data.len()].copy_from_slice(&data);
        Ok(())
    }
    async fn discard(&self, off: u64, len: u64) -> Result<(), Failed> {
        self.write_zeroes(off, len, false).await
    }
    async fn write_zeroes(&self, off: u64, len: u64, _thick: bool) -> Result<(), Failed> {
        self.delay().await;
        self.data.lock().unwrap()[off as usize..(off + len) as usize].fill(0);
        Ok(())
    }
    async fn flush(&self) -> Result<(), Failed> {
        self.delay().await;
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, u64, u8),
    Read(u64, u64),
    Discard(u64, u64),
    Zero(u64, u64),
    Flush,
    Invalidate,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    // Odd offsets and lengths, sometimes crossing the small extents.
    (0..SIZE - 1).prop_flat_map(|off| (Just(off), 1..=(SIZE - off).min(40 << 10)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (range(), any::<u8>()).prop_map(|((o, l), p)| Op::Write(o, l, p)),
        4 => range().prop_map(|(o, l)| Op::Read(o, l)),
        1 => range().prop_map(|(o, l)| Op::Discard(o, l)),
        1 => range().prop_map(|(o, l)| Op::Zero(o, l)),
        1 => Just(Op::Flush),
        1 => Just(Op::Invalidate),
    ]
}

fn pattern(off: u64, len: u64, p: u8) -> Vec<u8> {
    (0..len)
        .map(|i| p ^ ((off + i) as u8).wrapping_mul(31))
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn small_config(wtuf: bool, max_dirty: u64) -> CacheConfig {
    CacheConfig {
        size: 96 << 10,
        max_dirty,
        target_dirty: max_dirty / 4,
        max_dirty_age: Duration::from_millis(3),
        writethrough_until_flush: wtuf,
    }
}

fn run_model(ops: Vec<Op>, wtuf: bool, max_dirty: u64, seed: u64) -> Result<(), TestCaseError> {
    let rt = rt();
    let backend = MemBackend::new(seed);
    let cache = Cache::new(backend.clone(), small_config(wtuf, max_dirty), rt.handle());
    let mut model = vec![0u8; SIZE as usize];
    rt.block_on(async {
        for op in ops {
            match op {
                Op::Write(o, l, p) => {
                    let d = pattern(o, l, p);
                    model[o as usize..(o + l) as usize].copy_from_slice(&d);
                    cache.write(o, Bytes::from(d)).await.unwrap();
                }
                Op::Read(o, l) => {
                    let got = cache.read(o, l).await.unwrap();
                    prop_assert!(
                        got[..] == model[o as usize..(o + l) as usize],
                        "read {o}+{l} differs from the model"
                    );
                }
                Op::Discard(o, l) => {
                    model[o as usize..(o + l) as usize].fill(0);
                    cache.discard(o, l).await.unwrap();
                }
                Op::Zero(o, l) => {
                    model[o as usize..(o + l) as usize].fill(0);
                    cache.write_zeroes(o, l, false).await.unwrap();
                }
                Op::Flush => {
                    cache.flush().await.unwrap();
                    prop_assert!(backend.snapshot() == model, "backend differs after flush");
                }
                Op::Invalidate => {
                    cache.invalidate().await.unwrap();
                    prop_assert!(
                        backend.snapshot() == model,
                        "backend differs after invalidate"
                    );
                    prop_assert_eq!(cache.stats().bytes, cache.stats().dirty);
                }
            }
            let s = cache.stats();
            prop_assert!(s.dirty <= max_dirty, "dirty {} above max_dirty", s.dirty);
            if max_dirty == 0 || (wtuf && s.writes_cached == 0) {
                prop_assert_eq!(s.dirty, 0);
            }
        }
        cache.close().await.unwrap();
        prop_assert!(backend.snapshot() == model, "backend differs after close");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn writeback_matches_model(ops in proptest::collection::vec(op(), 1..120), seed in any::<u64>()) {
        run_model(ops, false, 32 << 10, seed)?;
    }

    #[test]
    fn writethrough_until_flush_matches_model(ops in proptest::collection::vec(op(), 1..80), seed in any::<u64>()) {
        run_model(ops, true, 32 << 10, seed)?;
    }

    #[test]
    fn writethrough_matches_model(ops in proptest::collection::vec(op(), 1..80), seed in any::<u64>()) {
        run_model(ops, false, 0, seed)?;
    }
}

#[test]
fn no_dirty_data_before_the_first_flush() {
    let rt = rt();
    let backend = MemBackend::new(7);
    let cache = Cache::new(backend.clone(), CacheConfig::default(), rt.handle());
    rt.block_on(async {
        assert!(!cache.is_writeback());
        cache
            .write(4097, Bytes::from(vec![0xab; 5000]))
            .await
            .unwrap();
        // Write-through: on the backend when acknowledged.
        assert_eq!(cache.stats().dirty, 0);
        assert_eq!(backend.snapshot()[4097..9097], [0xab; 5000][..]);
        cache.flush().await.unwrap();
        assert!(cache.is_writeback());
        cache.write(1, Bytes::from(vec![0xcd; 3])).await.unwrap();
        assert_eq!(cache.stats().dirty, 3);
        // Served from the cache.
        let hits = cache.stats().read_hits;
        assert_eq!(&cache.read(1, 3).await.unwrap()[..], &[0xcd; 3]);
        assert_eq!(cache.stats().read_hits, hits + 1);
        cache.close().await.unwrap();
        assert_eq!(backend.snapshot()[1..4], [0xcd; 3]);
    });
}

#[test]
fn dirty_data_is_written_back_after_max_dirty_age_without_a_flush() {
    let rt = rt();
    let backend = MemBackend::new(9);
    let cfg = CacheConfig {
        max_dirty_age: Duration::from_millis(50),
        writethrough_until_flush: false,
        ..CacheConfig::default()
    };
    let cache = Cache::new(backend.clone(), cfg, rt.handle());
    rt.block_on(async {
        // Let the flusher go idle first: new dirty data must wake it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.write(100, Bytes::from(vec![7; 100])).await.unwrap();
        assert_eq!(cache.stats().dirty, 100);
        // Bounded wait for the age-triggered write-back (fails, never hangs).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while cache.stats().dirty != 0 {
            assert!(tokio::time::Instant::now() < deadline, "never written back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(backend.snapshot()[100..200], [7; 100][..]);
    });
}

#[test]
fn writers_block_at_max_dirty_and_lru_bounds_the_size() {
    let rt = rt();
    let backend = MemBackend::new(11);
    let cfg = CacheConfig {
        size: 64 << 10,
        max_dirty: 16 << 10,
        target_dirty: 8 << 10,
        max_dirty_age: Duration::from_secs(3600),
        writethrough_until_flush: false,
    };
    let cache = Cache::new(backend.clone(), cfg, rt.handle());
    rt.block_on(async {
        for i in 0..64u64 {
            cache
                .write(i * 4096, Bytes::from(vec![i as u8; 4096]))
                .await
                .unwrap();
            assert!(cache.stats().dirty <= 16 << 10);
        }
        for i in 0..64u64 {
            let d = cache.read(i * 4096, 4096).await.unwrap();
            assert_eq!(d[..], vec![i as u8; 4096][..]);
            assert!(cache.stats().bytes <= 64 << 10, "{:?}", cache.stats());
        }
        let s = cache.stats();
        assert!(s.writes_blocked > 0 || s.writebacks > 0, "{s:?}");
        cache.close().await.unwrap();
    });
}

#[test]
fn a_failed_write_back_is_reported_by_the_next_flush_and_retried() {
    let rt = rt();
    let backend = MemBackend::new(13);
    let cfg = CacheConfig {
        writethrough_until_flush: false,
        max_dirty_age: Duration::from_secs(3600),
        ..CacheConfig::default()
    };
    let cache = Cache::new(backend.clone(), cfg, rt.handle());
    rt.block_on(async {
        cache.write(0, Bytes::from(vec![1; 512])).await.unwrap();
        backend.fail_writes.store(true, Ordering::Relaxed);
        assert_eq!(cache.flush().await, Err(Failed));
        // Still dirty, still readable as written.
        assert_eq!(cache.stats().dirty, 512);
        assert_eq!(&cache.read(0, 512).await.unwrap()[..], &[1; 512][..]);
        backend.fail_writes.store(false, Ordering::Relaxed);
        assert_eq!(cache.flush().await, Ok(()));
        assert_eq!(cache.stats().dirty, 0);
        assert_eq!(backend.snapshot()[..512], [1; 512][..]);
    });
}

#[test]
fn write_back_coalesces_adjacent_writes() {
    let rt = rt();
    let backend = MemBackend::new(15);
    let cfg = CacheConfig {
        writethrough_until_flush: false,
        max_dirty_age: Duration::from_secs(3600),
        ..CacheConfig::default()
    };
    let cache = Cache::new(backend.clone(), cfg, rt.handle());
    rt.block_on(async {
        for i in 0..256u64 {
            cache
                .write(i * 512, Bytes::from(vec![3; 512]))
                .await
                .unwrap();
        }
        cache.flush().await.unwrap();
        assert_eq!(backend.writes.load(Ordering::Relaxed), 1);
        assert_eq!(backend.snapshot()[..128 << 10], vec![3; 128 << 10][..]);
    });
}
