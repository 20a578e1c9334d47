//! `rbd_image_t`: an open image with its I/O bookkeeping (bounds, the
//! write tracker that orders flushes after earlier writes, the poll queue)
//! and its effective cache settings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quarry_common::Errno;
use quarry_rbdcache::CacheConfig;
use tokio::sync::{Notify, Semaphore};

use crate::cached::CachedBackend;
use crate::cluster::lock;
use crate::completion::EventQueue;
use crate::config::{Config, Level};
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
#[derive(Default)]
pub struct WriteTracker {
    state: Mutex<TrackerState>,
    notify: Notify,
}

#[derive(Default)]
struct TrackerState {
    next: u64,
    inflight: BTreeMap<u64, (u64, u64)>,
}

impl WriteTracker {
    /// Register a mutation of `[off, end)` at submit time; returns its ticket.
    pub fn start(&self, off: u64, end: u64) -> u64 {
        let mut g = lock(&self.state);
        g.next += 1;
        let t = g.next;
        g.inflight.insert(t, (off, end));
        t
    }

    /// A mutation finished.
    pub fn end(&self, ticket: u64) {
        lock(&self.state).inflight.remove(&ticket);
        self.notify.notify_waiters();
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
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pending = lock(&self.state)
                .inflight
                .range(..barrier)
                .any(|(_, &(o, e))| o < end && off < e);
            if !pending {
                return;
            }
            notified.await;
        }
    }
}

/// What an `rbd_image_t` points to.
pub struct Image {
    /// The engine's handle.
    pub backend: Arc<dyn ImageBackend>,
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
    /// Write-around: bytes that may be acknowledged before they are
    /// durable (`rbd_cache_max_dirty`); `None` = acknowledge when durable.
    pub dirty_budget: Option<Arc<Semaphore>>,
    /// Whether a flush was received (`rbd_cache_writethrough_until_flush`).
    pub flushed: AtomicBool,
    /// First error of an early-acknowledged write, reported by the next flush.
    pub deferred_error: Mutex<Option<CError>>,
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
            read_only,
            size: AtomicU64::new(size),
            events: Arc::new(EventQueue::default()),
            writes: WriteTracker::default(),
            cache,
            name: name.to_string(),
            snap: snap.map(str::to_string),
            dirty_budget,
            flushed: AtomicBool::new(false),
            deferred_error: Mutex::new(None),
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

    /// `EROFS` for read-only handles.
    pub fn check_writable(&self) -> CResult<()> {
        if self.read_only {
            Err(CError::new(Errno::EROFS, "image is read-only"))
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
