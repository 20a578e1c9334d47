//! `rbd_image_t`: an open image with its I/O bookkeeping (bounds, the
//! write tracker that orders flushes after earlier writes, the poll queue)
//! and its effective cache settings.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quarry_common::Errno;
use quarry_rbdcache::CacheConfig;
use tokio::sync::{oneshot, Semaphore};

use crate::cached::CachedBackend;
use crate::cluster::lock;
use crate::completion::EventQueue;
use crate::config::{Config, Level};
use crate::crypto::CryptoBackend;
use crate::engine::{CError, CResult, ImageBackend};

/// Effective RBD cache settings of an open image (Ceph's option names).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    /// `rbd_cache`.
    pub enabled: bool,
    /// `rbd_cache_policy` (writethrough|writeback|writearound).
    pub policy: String,
    /// `rbd_cache_size`.
    pub size: u64,
    /// `rbd_cache_max_dirty` (0 = write-through).
    pub max_dirty: u64,
    /// `rbd_cache_target_dirty`.
    pub target_dirty: u64,
    /// `rbd_cache_max_dirty_age` in seconds.
    pub max_dirty_age: f64,
    /// `rbd_cache_writethrough_until_flush`.
    pub writethrough_until_flush: bool,
}

impl CacheSettings {
    /// Read the effective settings from a config (after per-image overrides).
    pub fn from_config(c: &Config) -> CacheSettings {
        CacheSettings {
            enabled: c.get_bool("rbd_cache"),
            policy: c
                .get("rbd_cache_policy")
                .unwrap_or_else(|_| "writearound".into()),
            size: c.get_u64("rbd_cache_size"),
            max_dirty: c.get_u64("rbd_cache_max_dirty"),
            target_dirty: c.get_u64("rbd_cache_target_dirty"),
            max_dirty_age: c.get_f64("rbd_cache_max_dirty_age"),
            writethrough_until_flush: c.get_bool("rbd_cache_writethrough_until_flush"),
        }
    }

    /// Settings of the in-memory cache for the writeback and writethrough
    /// modes (`None`: no cache, or write-around).
    pub fn cache_config(&self) -> Option<CacheConfig> {
        let max_dirty = match self.mode() {
            "writeback" => self.max_dirty,
            "writethrough" => 0,
            _ => return None,
        };
        let age = if self.max_dirty_age.is_finite() && self.max_dirty_age > 0.0 {
            Duration::from_secs_f64(self.max_dirty_age.min(1e9))
        } else {
            Duration::ZERO
        };
        Some(
            CacheConfig {
                size: self.size,
                max_dirty,
                target_dirty: self.target_dirty,
                max_dirty_age: age,
                writethrough_until_flush: self.writethrough_until_flush,
            }
            .normalized(),
        )
    }

    /// The mode QEMU users reason about: `none`, `writethrough`, `writeback`
    /// (or `writearound`), as librbd would run it.
    pub fn mode(&self) -> &'static str {
        if !self.enabled {
            "none"
        } else if self.policy == "writethrough" || self.max_dirty == 0 {
            "writethrough"
        } else if self.policy == "writearound" {
            "writearound"
        } else {
            "writeback"
        }
    }
}

/// Tracks in-flight mutations with their byte ranges:
/// * a flush completes only after every mutation submitted before it has
///   completed (and is therefore durable);
/// * a mutation is issued to the engine only after every earlier
///   overlapping one completed (so early-acknowledged writes keep order);
/// * a read waits for earlier overlapping mutations (read-your-writes).
///
/// With the write-around cache thousands of writes can be in flight, so
/// the overlap check is an index lookup (by start offset, bounded by the
/// longest range in flight) rather than a scan, and a finished mutation
/// wakes only the operations waiting for it rather than every waiter.
#[derive(Default)]
pub struct WriteTracker {
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    next: u64,
    /// ticket -> [off, end).
    inflight: BTreeMap<u64, (u64, u64)>,
    /// (off, ticket) -> end: the same ranges by start offset.
    by_off: BTreeMap<(u64, u64), u64>,
    /// Length -> how many in-flight ranges have it (the longest bounds
    /// how far before `off` an overlapping range can start).
    lens: BTreeMap<u64, usize>,
    /// ticket -> the operations waiting for it to finish.
    waiters: HashMap<u64, Vec<oneshot::Sender<()>>>,
}

impl TrackerState {
    /// The oldest ticket below `barrier` whose range overlaps `[off, end)`.
    fn first_overlap(&self, barrier: u64, off: u64, end: u64) -> Option<u64> {
        if off == 0 && end == u64::MAX {
            return self.inflight.range(..barrier).next().map(|(&t, _)| t);
        }
        let longest = self.lens.last_key_value().map_or(0, |(&l, _)| l);
        let from = off.saturating_sub(longest);
        self.by_off
            .range((from, 0)..(end, 0))
            .filter(|&(&(o, t), &e)| t < barrier && o < end && off < e)
            .map(|(&(_, t), _)| t)
            .min()
    }
}

impl WriteTracker {
    /// Register a mutation of `[off, end)` at submit time; returns its ticket.
    pub fn start(&self, off: u64, end: u64) -> u64 {
        debug_assert!(off <= end);
        let mut g = lock(&self.state);
        g.next += 1;
        let t = g.next;
        g.inflight.insert(t, (off, end));
        g.by_off.insert((off, t), end);
        *g.lens.entry(end - off).or_default() += 1;
        t
    }

    /// A mutation finished.
    pub fn end(&self, ticket: u64) {
        let waiters = {
            let mut g = lock(&self.state);
            if let Some((off, end)) = g.inflight.remove(&ticket) {
                g.by_off.remove(&(off, ticket));
                let len = end - off;
                if let Some(n) = g.lens.get_mut(&len) {
                    *n -= 1;
                    if *n == 0 {
                        g.lens.remove(&len);
                    }
                }
            }
            g.waiters.remove(&ticket)
        };
        // A waiter that gave up (its future dropped) has closed its receiver.
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    /// The ticket boundary for an operation submitted now.
    pub fn barrier(&self) -> u64 {
        lock(&self.state).next + 1
    }

    /// Wait until every mutation with a ticket below `barrier` finished.
    pub async fn wait_before(&self, barrier: u64) {
        self.wait_overlapping(barrier, 0, u64::MAX).await
    }

    /// Wait until every mutation with a ticket below `barrier` that
    /// overlaps `[off, end)` finished.
    pub async fn wait_overlapping(&self, barrier: u64, off: u64, end: u64) {
        loop {
            let rx = {
                let mut g = lock(&self.state);
                let Some(t) = g.first_overlap(barrier, off, end) else {
                    return;
                };
                let (tx, rx) = oneshot::channel();
                g.waiters.entry(t).or_default().push(tx);
                rx
            };
            // Sent when `t` ends; an error cannot happen while `t` is in
            // flight (its sender is kept until then), and either way the
            // loop looks again.
            let _ = rx.await;
        }
    }

    /// Mutations in flight (for tests and diagnostics).
    pub fn in_flight(&self) -> usize {
        lock(&self.state).inflight.len()
    }
}

/// What an `rbd_image_t` points to.
pub struct Image {
    /// The engine's handle.
    pub backend: Arc<dyn ImageBackend>,
    /// The encryption layer inside `backend` (format and load go to it).
    pub crypto: Arc<CryptoBackend>,
    /// Opened read-only (snapshot or `rbd_open_read_only`).
    pub read_only: bool,
    /// Size as last seen (refreshed by stat/resize/rollback/invalidate).
    pub size: AtomicU64,
    /// Poll-mode completion queue.
    pub events: Arc<EventQueue>,
    /// Flush ordering.
    pub writes: WriteTracker,
    /// Effective cache settings.
    pub cache: CacheSettings,
    /// Name as opened.
    pub name: String,
    /// Snapshot name as opened.
    pub snap: Option<String>,
    /// Switched to a snapshot by `rbd_snap_set` (writes refused until it
    /// is switched back to the head).
    pub at_snap: AtomicBool,
    /// Write-around: bytes that may be acknowledged before they are
    /// durable (`rbd_cache_max_dirty`); `None` = acknowledge when durable.
    pub dirty_budget: Option<Arc<Semaphore>>,
    /// Whether a flush was received (`rbd_cache_writethrough_until_flush`).
    pub flushed: AtomicBool,
    /// First error of an early-acknowledged write, reported by the next flush.
    pub deferred_error: Mutex<Option<CError>>,
    /// The configuration the handle was opened with (the client's, then
    /// the pool's and the image's overrides): `rbd_config_image_list`.
    pub conf: Config,
}

impl Image {
    /// Build the handle; logs the effective cache mode when `QUARRY_DEBUG`
    /// or `QUARRY_LOG_CACHE` is set (tests read it).
    pub fn new(
        backend: Arc<dyn ImageBackend>,
        read_only: bool,
        size: u64,
        conf: &Config,
        name: &str,
        snap: Option<&str>,
    ) -> Image {
        let cache = CacheSettings::from_config(conf);
        let mode = cache.mode();
        // writearound: writes acknowledged once in flight (below); writeback
        // and writethrough: the in-memory cache in front of the engine.
        let early = !read_only && mode == "writearound";
        let dirty_budget = early.then(|| {
            let permits = cache.max_dirty.min(Semaphore::MAX_PERMITS as u64) as usize;
            Arc::new(Semaphore::new(permits))
        });
        let backend: Arc<dyn ImageBackend> = match cache.cache_config() {
            Some(cfg) => Arc::new(CachedBackend::new(backend, cfg)),
            None => backend,
        };
        // Encryption above the cache: the cache holds what is on the disk.
        let crypto = Arc::new(CryptoBackend::new(backend));
        let backend: Arc<dyn ImageBackend> = crypto.clone();
        if std::env::var_os("QUARRY_LOG_CACHE").is_some()
            || std::env::var_os("QUARRY_DEBUG").is_some()
        {
            eprintln!(
                "quarry: image {name}: cache mode {mode} (rbd_cache={} policy={} size={} max_dirty={} target_dirty={} max_dirty_age={} writethrough_until_flush={}); {}",
                cache.enabled,
                cache.policy,
                cache.size,
                cache.max_dirty,
                cache.target_dirty,
                cache.max_dirty_age,
                cache.writethrough_until_flush,
                match mode {
                    "writeback" if cache.writethrough_until_flush =>
                        "in-memory cache; write-through until the first flush, then writes are acknowledged once cached",
                    "writeback" => "in-memory cache; writes are acknowledged once cached",
                    "writethrough" => "in-memory read cache; writes are acknowledged only when durable",
                    "writearound" => "writes are acknowledged once in flight, up to max_dirty bytes; flush waits for them",
                    _ => "no cache; writes are acknowledged only when durable",
                }
            );
        }
        Image {
            backend,
            crypto,
            read_only,
            size: AtomicU64::new(size),
            events: Arc::new(EventQueue::default()),
            writes: WriteTracker::default(),
            cache,
            name: name.to_string(),
            snap: snap.map(str::to_string),
            at_snap: AtomicBool::new(false),
            dirty_budget,
            flushed: AtomicBool::new(false),
            deferred_error: Mutex::new(None),
            conf: conf.clone(),
        }
    }

    /// Current size.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Update the cached size.
    pub fn set_size(&self, s: u64) {
        self.size.store(s, Ordering::Release);
    }

    /// Clip `[off, off+len)` to the image: `EINVAL` if it starts at/after
    /// the end (and is not empty), else the clipped length.
    pub fn clip(&self, off: u64, len: u64) -> CResult<u64> {
        if len == 0 {
            return Ok(0);
        }
        let size = self.size();
        if off >= size {
            return Err(CError::new(
                Errno::EINVAL,
                "I/O beyond the end of the image",
            ));
        }
        Ok(len.min(size - off))
    }

    /// The write-around budget if a write of `len` bytes submitted now may
    /// be acknowledged before it is durable.
    pub fn early_ack_budget(&self, len: u64) -> Option<Arc<Semaphore>> {
        let b = self.dirty_budget.as_ref()?;
        if self.cache.writethrough_until_flush && !self.flushed.load(Ordering::Acquire) {
            return None;
        }
        if len == 0 || len > self.cache.max_dirty || len > u32::MAX as u64 {
            return None;
        }
        Some(b.clone())
    }

    /// Remember the first failure of an early-acknowledged write.
    pub fn defer_error(&self, e: CError) {
        let mut g = lock(&self.deferred_error);
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// Take the deferred failure (reported by a flush).
    pub fn take_deferred_error(&self) -> CResult<()> {
        match lock(&self.deferred_error).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `EROFS` for read-only handles and handles reading a snapshot.
    pub fn check_writable(&self) -> CResult<()> {
        if self.read_only {
            Err(CError::new(Errno::EROFS, "image is read-only"))
        } else if self.at_snap.load(Ordering::Acquire) {
            Err(CError::new(
                Errno::EROFS,
                "image handle reads a snapshot (rbd_snap_set): writes go to the head",
            ))
        } else {
            Ok(())
        }
    }
}

/// Apply per-pool then per-image `rbd_*` overrides on top of the cluster
/// config, above `rados_conf_set` (librbd's `apply_metadata`). Bad values
/// are ignored, as librbd does.
pub fn apply_overrides(conf: &mut Config, pool: &[(String, String)], image: &[(String, String)]) {
    for (level, list) in [(Level::Pool, pool), (Level::Image, image)] {
        for (k, v) in list {
            if k.starts_with("rbd_") {
                let _ = conf.set(level, k, v);
            }
        }
    }
}

#[cfg(test)]
mod tracker_tests {
    use super::WriteTracker;
    use std::sync::Arc;
    use std::time::Duration;

    fn done(t: &Arc<WriteTracker>, barrier: u64, off: u64, end: u64) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_millis(20),
                t.wait_overlapping(barrier, off, end),
            )
            .await
            .is_ok()
        })
    }

    #[test]
    fn waits_only_for_earlier_overlapping_ranges() {
        let t = Arc::new(WriteTracker::default());
        let a = t.start(0, 4096);
        let b = t.start(1 << 30, (1 << 30) + 4096);
        let c = t.start(4096, 8192);
        // Disjoint: no wait; touching ends are not an overlap.
        assert!(done(&t, c, 8192, 12288));
        assert!(
            done(&t, c, 4096, 8192),
            "c's own range, barrier c: a ends at 4096"
        );
        // Overlapping an earlier one: waits, until it ends.
        assert!(!done(&t, c + 1, 4000, 4100));
        t.end(a);
        assert!(!done(&t, c + 1, 4000, 4100), "c still overlaps 4096..4100");
        t.end(c);
        assert!(done(&t, c + 1, 4000, 4100));
        // A later ticket is not waited for.
        assert!(done(&t, b, 1 << 30, 1 << 31));
        assert!(!done(&t, b + 1, 0, u64::MAX));
        t.end(b);
        assert!(done(&t, b + 1, 0, u64::MAX));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_long_range_far_before_is_found() {
        // The index is by start offset: a range that starts long before
        // `off` and covers it must still count.
        let t = Arc::new(WriteTracker::default());
        let big = t.start(0, 1 << 40);
        let small = t.start(5 << 30, (5 << 30) + 512);
        assert!(!done(&t, small + 1, (3 << 30) + 7, (3 << 30) + 8));
        t.end(big);
        assert!(done(&t, small + 1, (3 << 30) + 7, (3 << 30) + 8));
        assert!(!done(&t, small + 1, (5 << 30) + 511, 6 << 30));
        t.end(small);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_waiter_wakes_when_the_last_overlap_ends() {
        let t = Arc::new(WriteTracker::default());
        let a = t.start(0, 8192);
        let b = t.start(4096, 12288);
        let barrier = t.barrier();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let t2 = t.clone();
        let h = rt.spawn(async move { t2.wait_overlapping(barrier, 6000, 7000).await });
        std::thread::sleep(Duration::from_millis(20));
        t.end(b);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!h.is_finished(), "a still overlaps");
        t.end(a);
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("woken when a ended")
                .expect("join")
        });
    }
}
