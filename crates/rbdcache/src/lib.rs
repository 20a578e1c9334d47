//! The client-side RBD cache: what librbd's `rbd_cache` (ObjectCacher) does
//! for an open image, over any [`Backend`] (the image engine).
//!
//! * Reads are served from cached bytes (clean or dirty); misses go to the
//!   backend and fill the cache; clean data is evicted least-recently-used
//!   once the cache holds more than `size` bytes.
//! * Writeback: a write is acknowledged once it is in the cache, as long as
//!   the dirty bytes stay within `max_dirty`; a writer that would exceed it
//!   waits for write-back. A background flusher writes back the oldest dirty
//!   data while more than `target_dirty` bytes are dirty, and any dirty data
//!   older than `max_dirty_age`.
//! * Write-through (`max_dirty` = 0, a write larger than `max_dirty`, or
//!   before the first flush with `writethrough_until_flush`): the write goes
//!   to the backend and is acknowledged when the backend acknowledged it;
//!   the cache keeps a clean copy.
//! * Every backend mutation takes a ticket when it is ordered (under the
//!   cache lock) and is issued only after every earlier overlapping backend
//!   mutation finished, so write-back never reorders overlapping writes.
//! * [`Cache::flush`] writes back everything dirty, waits for every earlier
//!   backend mutation, reports the first write-back error since the last
//!   flush (the failed data stays dirty and is retried), then flushes the
//!   backend.
//!
//! Callers order their own overlapping submissions (the C layer does); the
//! cache applies calls in the order they are made.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Largest single write-back request built by coalescing adjacent dirty
/// extents (one RBD object at the default order).
const MAX_JOB: u64 = 4 << 20;

/// Cache sizing and policy, in Ceph's option terms.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// `rbd_cache_size`: bytes held (clean + dirty) before clean data is evicted.
    pub size: u64,
    /// `rbd_cache_max_dirty`: dirty bytes allowed; 0 = write-through.
    pub max_dirty: u64,
    /// `rbd_cache_target_dirty`: background write-back starts above this.
    pub target_dirty: u64,
    /// `rbd_cache_max_dirty_age`: dirty data older than this is written back.
    pub max_dirty_age: Duration,
    /// `rbd_cache_writethrough_until_flush`: write-through until the first flush.
    pub writethrough_until_flush: bool,
}

impl Default for CacheConfig {
    /// Ceph 16's defaults.
    fn default() -> Self {
        CacheConfig {
            size: 32 << 20,
            max_dirty: 24 << 20,
            target_dirty: 16 << 20,
            max_dirty_age: Duration::from_secs(1),
            writethrough_until_flush: true,
        }
    }
}

impl CacheConfig {
    /// Clamp inconsistent settings as librbd does: `max_dirty <= size`,
    /// `target_dirty <= max_dirty`.
    pub fn normalized(mut self) -> CacheConfig {
        self.max_dirty = self.max_dirty.min(self.size);
        self.target_dirty = self.target_dirty.min(self.max_dirty);
        self
    }
}

/// What the cache sits on: the image's I/O, durable when `Ok`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Error type (kept to report a failed write-back at the next flush).
    type Error: Clone + Send + Sync + 'static;
    /// Read exactly `len` bytes at `off`.
    async fn read(&self, off: u64, len: u64) -> Result<Bytes, Self::Error>;
    /// Write `data` at `off`.
    async fn write(&self, off: u64, data: Bytes) -> Result<(), Self::Error>;
    /// Discard a range.
    async fn discard(&self, off: u64, len: u64) -> Result<(), Self::Error>;
    /// Zero a range.
    async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> Result<(), Self::Error>;
    /// Make completed writes durable.
    async fn flush(&self) -> Result<(), Self::Error>;
}

/// Counters for tests, logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes held (clean + dirty + being written).
    pub bytes: u64,
    /// Dirty bytes (not yet durable on the backend).
    pub dirty: u64,
    /// Number of cached extents.
    pub extents: u64,
    /// Reads served entirely from the cache.
    pub read_hits: u64,
    /// Reads that went to the backend.
    pub read_misses: u64,
    /// Writes acknowledged from the cache (writeback).
    pub writes_cached: u64,
    /// Writes acknowledged after the backend (write-through).
    pub writes_through: u64,
    /// Write-back requests issued.
    pub writebacks: u64,
    /// Writes that had to wait for dirty space.
    pub writes_blocked: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Equal to the backend.
    Clean,
    /// Newer than the backend, not yet being written back.
    Dirty,
    /// Being written back.
    Flushing,
    /// A write-through in progress (authoritative, not dirty, not evictable).
    Writing,
}

#[derive(Clone)]
struct Extent {
    data: Bytes,
    st: St,
    /// Which write produced these bytes (pieces of one write share it).
    seq: u64,
    /// LRU tick of the last use.
    used: u64,
    /// When the bytes became dirty.
    dirtied: Instant,
}

impl Extent {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn counts_dirty(&self) -> bool {
        matches!(self.st, St::Dirty | St::Flushing)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Write,
    Discard,
}

/// A backend read in flight; `tainted` once cached bytes of its range
/// change, so its (possibly older) result is not inserted as clean.
struct PendingRead {
    id: u64,
    off: u64,
    end: u64,
    tainted: bool,
}

/// One write-back request: adjacent dirty extents, coalesced.
struct Job {
    off: u64,
    data: Bytes,
    /// `(start, end, seq)` of each extent written.
    pieces: Vec<(u64, u64, u64)>,
    ticket: u64,
}

struct State<E> {
    map: BTreeMap<u64, Extent>,
    bytes: u64,
    dirty: u64,
    seq: u64,
    tick: u64,
    flushed: bool,
    next_ticket: u64,
    inflight: BTreeMap<u64, (u64, u64, OpKind)>,
    reads: Vec<PendingRead>,
    next_read: u64,
    error: Option<E>,
    waiters: u64,
    /// The flusher sleeps with no deadline: new dirty data must wake it
    /// (its age limit would otherwise never be looked at).
    flusher_idle: bool,
    closed: bool,
    stats: Stats,
}

fn overlaps(a: u64, b: u64, c: u64, d: u64) -> bool {
    a < d && c < b
}

impl<E> State<E> {
    fn new() -> Self {
        State {
            map: BTreeMap::new(),
            bytes: 0,
            dirty: 0,
            seq: 0,
            tick: 0,
            flushed: false,
            next_ticket: 0,
            inflight: BTreeMap::new(),
            reads: Vec::new(),
            next_read: 0,
            error: None,
            waiters: 0,
            flusher_idle: false,
            closed: false,
            stats: Stats::default(),
        }
    }

    fn taint(&mut self, off: u64, end: u64) {
        for r in &mut self.reads {
            if overlaps(r.off, r.end, off, end) {
                r.tainted = true;
            }
        }
    }

    fn remove_at(&mut self, start: u64) -> Option<Extent> {
        let e = self.map.remove(&start)?;
        self.bytes -= e.len();
        if e.counts_dirty() {
            self.dirty -= e.len();
        }
        self.taint(start, start + e.len());
        Some(e)
    }

    fn put(&mut self, start: u64, e: Extent) {
        if e.data.is_empty() {
            return;
        }
        self.bytes += e.len();
        if e.counts_dirty() {
            self.dirty += e.len();
        }
        self.map.insert(start, e);
    }

    /// `(start, end)` of the extents overlapping `[off, end)`, ascending.
    fn overlapping(&self, off: u64, end: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        if let Some((&s, e)) = self.map.range(..off).next_back() {
            if s + e.len() > off {
                v.push((s, s + e.len()));
            }
        }
        v.extend(self.map.range(off..end).map(|(&s, e)| (s, s + e.len())));
        v
    }

    /// Remove `[off, end)` from the cache, splitting extents at its edges;
    /// returns the removed pieces.
    fn carve(&mut self, off: u64, end: u64) -> Vec<(u64, Extent)> {
        let mut out = Vec::new();
        for (s, eend) in self.overlapping(off, end) {
            let Some(e) = self.remove_at(s) else { continue };
            if s < off {
                let mut left = e.clone();
                left.data = e.data.slice(..(off - s) as usize);
                self.put(s, left);
            }
            if eend > end {
                let mut right = e.clone();
                right.data = e.data.slice((end - s) as usize..);
                self.put(end, right);
            }
            let (a, b) = (s.max(off), eend.min(end));
            let mut mid = e;
            mid.data = mid.data.slice((a - s) as usize..(b - s) as usize);
            out.push((a, mid));
        }
        out
    }

    /// Copy cached bytes of `[off, off+buf.len())` into `buf`; returns how
    /// many bytes were covered.
    fn overlay(&mut self, off: u64, buf: &mut [u8], touch: bool) -> u64 {
        let end = off + buf.len() as u64;
        self.tick += 1;
        let tick = self.tick;
        let mut covered = 0;
        for (s, eend) in self.overlapping(off, end) {
            let Some(e) = self.map.get_mut(&s) else {
                continue;
            };
            let (a, b) = (s.max(off), eend.min(end));
            buf[(a - off) as usize..(b - off) as usize]
                .copy_from_slice(&e.data[(a - s) as usize..(b - s) as usize]);
            covered += b - a;
            if touch {
                e.used = tick;
            }
        }
        covered
    }

    /// Insert `data` (at `off`) as clean wherever nothing is cached.
    fn fill_gaps(&mut self, off: u64, data: &Bytes) {
        let end = off + data.len() as u64;
        self.tick += 1;
        let now = Instant::now();
        let mut pos = off;
        let mut gaps = Vec::new();
        for (s, eend) in self.overlapping(off, end) {
            if s > pos {
                gaps.push((pos, s));
            }
            pos = pos.max(eend);
        }
        if pos < end {
            gaps.push((pos, end));
        }
        for (a, b) in gaps {
            let e = Extent {
                data: data.slice((a - off) as usize..(b - off) as usize),
                st: St::Clean,
                seq: 0,
                used: self.tick,
                dirtied: now,
            };
            self.put(a, e);
        }
    }

    /// Evict least-recently-used clean extents down to 7/8 of `size` once
    /// above `size` (the slack amortizes the sort).
    fn evict(&mut self, size: u64) {
        if self.bytes <= size {
            return;
        }
        let goal = size - size / 8;
        let mut clean: Vec<(u64, u64)> = self
            .map
            .iter()
            .filter(|(_, e)| e.st == St::Clean)
            .map(|(&s, e)| (e.used, s))
            .collect();
        clean.sort_unstable();
        for (_, s) in clean {
            if self.bytes <= goal {
                break;
            }
            self.remove_at(s);
        }
    }

    fn ticket(&mut self, off: u64, end: u64, kind: OpKind) -> u64 {
        self.next_ticket += 1;
        self.inflight.insert(self.next_ticket, (off, end, kind));
        self.next_ticket
    }

    /// Mark the dirty extents starting at `starts` (ascending) as being
    /// written back, coalescing adjacent ones into jobs.
    fn take_dirty(&mut self, starts: &[u64]) -> Vec<Job> {
        // (start, end, data parts, pieces) of each job being built.
        type Group = (u64, u64, Vec<Bytes>, Vec<(u64, u64, u64)>);
        let mut groups: Vec<Group> = Vec::new();
        for &s in starts {
            let Some(e) = self.map.get_mut(&s) else {
                continue;
            };
            if e.st != St::Dirty {
                continue;
            }
            e.st = St::Flushing;
            let len = e.len();
            match groups.last_mut() {
                Some(g) if g.1 == s && g.1 - g.0 + len <= MAX_JOB => {
                    g.1 += len;
                    g.2.push(e.data.clone());
                    g.3.push((s, s + len, e.seq));
                }
                _ => groups.push((s, s + len, vec![e.data.clone()], vec![(s, s + len, e.seq)])),
            }
        }
        groups
            .into_iter()
            .map(|(off, end, parts, pieces)| {
                let data = if parts.len() == 1 {
                    parts.into_iter().next().unwrap_or_default()
                } else {
                    let mut b = BytesMut::with_capacity((end - off) as usize);
                    for p in parts {
                        b.extend_from_slice(&p);
                    }
                    b.freeze()
                };
                let ticket = self.ticket(off, end, OpKind::Write);
                Job {
                    off,
                    data,
                    pieces,
                    ticket,
                }
            })
            .collect()
    }

    /// Starts of dirty (not yet written back) extents, with their size and age.
    fn dirty_list(&self) -> Vec<(u64, u64, Instant)> {
        self.map
            .iter()
            .filter(|(_, e)| e.st == St::Dirty)
            .map(|(&s, e)| (s, e.len(), e.dirtied))
            .collect()
    }
}

struct Inner<B: Backend> {
    backend: B,
    cfg: CacheConfig,
    state: Mutex<State<B::Error>>,
    /// Some state changed (write-back done, op finished).
    changed: Notify,
    /// Wake the background flusher.
    kick: Notify,
}

/// The cache of one open image. Dropping it stops the background flusher
/// (call [`Cache::close`] first to write back dirty data).
pub struct Cache<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Inner<B> {
    fn lock(&self) -> MutexGuard<'_, State<B::Error>> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether a write of `len` bytes may be acknowledged from the cache.
    fn writeback_for(&self, st: &State<B::Error>, len: u64) -> bool {
        self.cfg.max_dirty > 0
            && len <= self.cfg.max_dirty
            && (st.flushed || !self.cfg.writethrough_until_flush)
    }

    /// Wait until no backend mutation with a ticket below `ticket` overlaps
    /// `[off, end)`.
    async fn wait_before(&self, ticket: u64, off: u64, end: u64) {
        loop {
            let mut notified = pin!(self.changed.notified());
            notified.as_mut().enable();
            let pending = self
                .lock()
                .inflight
                .range(..ticket)
                .any(|(_, &(o, e, _))| overlaps(o, e, off, end));
            if !pending {
                return;
            }
            notified.await;
        }
    }

    fn finish_ticket(&self, ticket: u64) {
        self.lock().inflight.remove(&ticket);
        self.changed.notify_waiters();
    }

    fn spawn_jobs(self: &Arc<Self>, jobs: Vec<Job>) {
        for job in jobs {
            let me = self.clone();
            tokio::spawn(async move { me.run_job(job).await });
        }
    }

    async fn run_job(&self, job: Job) {
        let end = job.off + job.data.len() as u64;
        self.wait_before(job.ticket, job.off, end).await;
        let r = self.backend.write(job.off, job.data).await;
        {
            let mut st = self.lock();
            st.inflight.remove(&job.ticket);
            st.stats.writebacks += 1;
            let now = Instant::now();
            for (s, e, seq) in job.pieces {
                let starts: Vec<u64> = st
                    .map
                    .range(s..e)
                    .filter(|(_, x)| x.seq == seq && x.st == St::Flushing)
                    .map(|(&k, _)| k)
                    .collect();
                for k in starts {
                    let Some(x) = st.map.get_mut(&k) else {
                        continue;
                    };
                    let len = x.len();
                    if r.is_ok() {
                        x.st = St::Clean;
                        st.dirty -= len;
                    } else {
                        // Kept dirty: retried by the flusher and the next flush.
                        x.st = St::Dirty;
                        x.dirtied = now;
                    }
                }
            }
            let mut kick = false;
            if let Err(e) = r {
                if st.error.is_none() {
                    st.error = Some(e);
                }
                // The data is dirty again: the flusher must time its retry.
                kick = std::mem::take(&mut st.flusher_idle);
            }
            let size = self.cfg.size;
            st.evict(size);
            if kick {
                self.kick.notify_one();
            }
        }
        self.changed.notify_waiters();
    }

    /// Choose background write-back: data older than `max_dirty_age`, and
    /// the oldest data while more than `target_dirty` (0 while a writer
    /// waits for space) is dirty. Returns the jobs and when to look again.
    fn pick_background(&self, st: &mut State<B::Error>) -> (Vec<Job>, Option<Instant>) {
        let now = Instant::now();
        let age = self.cfg.max_dirty_age;
        let mut list = st.dirty_list();
        let mut total: u64 = list.iter().map(|d| d.1).sum();
        // While a write-back error is outstanding only aged data is retried,
        // so a failing backend is not hammered.
        let goal = if st.error.is_some() {
            u64::MAX
        } else if st.waiters > 0 {
            0
        } else {
            self.cfg.target_dirty
        };
        list.sort_by_key(|d| d.2);
        let mut picked = Vec::new();
        let mut next = None;
        for (s, len, dirtied) in list {
            if total > goal || dirtied + age <= now {
                picked.push(s);
                total -= len;
            } else {
                let d = dirtied + age;
                next = Some(next.map_or(d, |n: Instant| n.min(d)));
            }
        }
        picked.sort_unstable();
        (st.take_dirty(&picked), next)
    }

    async fn flusher(self: Arc<Self>) {
        loop {
            let mut notified = pin!(self.kick.notified());
            notified.as_mut().enable();
            let (jobs, next) = {
                let mut st = self.lock();
                if st.closed {
                    return;
                }
                let (jobs, next) = self.pick_background(&mut st);
                st.flusher_idle = next.is_none();
                (jobs, next)
            };
            self.spawn_jobs(jobs);
            match next {
                Some(deadline) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn write_through(&self, off: u64, data: Bytes) -> Result<(), B::Error> {
        let end = off + data.len() as u64;
        let (ticket, seq) = {
            let mut st = self.lock();
            st.carve(off, end);
            st.seq += 1;
            st.tick += 1;
            let seq = st.seq;
            let e = Extent {
                data: data.clone(),
                st: St::Writing,
                seq,
                used: st.tick,
                dirtied: Instant::now(),
            };
            st.put(off, e);
            st.stats.writes_through += 1;
            (st.ticket(off, end, OpKind::Write), seq)
        };
        self.wait_before(ticket, off, end).await;
        let r = self.backend.write(off, data).await;
        {
            let mut st = self.lock();
            st.inflight.remove(&ticket);
            let starts: Vec<u64> = st
                .map
                .range(off..end)
                .filter(|(_, x)| x.seq == seq && x.st == St::Writing)
                .map(|(&k, _)| k)
                .collect();
            for k in starts {
                if r.is_ok() {
                    if let Some(x) = st.map.get_mut(&k) {
                        x.st = St::Clean;
                    }
                } else {
                    // What reached the backend is unknown: forget it.
                    st.remove_at(k);
                }
            }
            let size = self.cfg.size;
            st.evict(size);
        }
        self.changed.notify_waiters();
        r
    }
}

impl<B: Backend> Cache<B> {
    /// A cache over `backend`; its background flusher runs on `rt`.
    pub fn new(backend: B, cfg: CacheConfig, rt: &tokio::runtime::Handle) -> Cache<B> {
        let inner = Arc::new(Inner {
            backend,
            cfg: cfg.normalized(),
            state: Mutex::new(State::new()),
            changed: Notify::new(),
            kick: Notify::new(),
        });
        rt.spawn(inner.clone().flusher());
        Cache { inner }
    }

    /// The backend under the cache.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// The effective (normalized) settings.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let st = self.inner.lock();
        Stats {
            bytes: st.bytes,
            dirty: st.dirty,
            extents: st.map.len() as u64,
            ..st.stats
        }
    }

    /// Whether a small write issued now would be acknowledged from the
    /// cache (writeback) rather than after the backend (write-through).
    pub fn is_writeback(&self) -> bool {
        let st = self.inner.lock();
        self.inner.writeback_for(&st, 1)
    }

    /// Read `len` bytes at `off`: cached bytes win over the backend's.
    pub async fn read(&self, off: u64, len: u64) -> Result<Bytes, B::Error> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = off.saturating_add(len);
        let len = end - off;
        let id = {
            let mut st = self.inner.lock();
            let cached: u64 = st
                .overlapping(off, end)
                .iter()
                .map(|&(s, e)| e.min(end) - s.max(off))
                .sum();
            if cached == len {
                let mut buf = vec![0u8; len as usize];
                st.overlay(off, &mut buf, true);
                st.stats.read_hits += 1;
                return Ok(Bytes::from(buf));
            }
            st.stats.read_misses += 1;
            st.next_read += 1;
            let id = st.next_read;
            // A discard in flight may or may not be visible to this read.
            let tainted = st
                .inflight
                .values()
                .any(|&(o, e, k)| k == OpKind::Discard && overlaps(o, e, off, end));
            st.reads.push(PendingRead {
                id,
                off,
                end,
                tainted,
            });
            id
        };
        let r = self.inner.backend.read(off, len).await;
        let mut st = self.inner.lock();
        let pos = st.reads.iter().position(|r| r.id == id);
        let tainted = pos.map(|p| st.reads.swap_remove(p).tainted).unwrap_or(true);
        let data = r?;
        let mut buf = BytesMut::from(&data[..]);
        buf.resize(len as usize, 0);
        st.overlay(off, &mut buf, false);
        let data = buf.freeze();
        // Very large reads would only evict everything else.
        if !tainted && len <= self.inner.cfg.size / 4 {
            st.fill_gaps(off, &data);
            let size = self.inner.cfg.size;
            st.evict(size);
        }
        Ok(data)
    }

    /// Write `data` at `off`: acknowledged from the cache in writeback
    /// mode (waiting while `max_dirty` would be exceeded), else after the
    /// backend acknowledged it.
    pub async fn write(&self, off: u64, data: Bytes) -> Result<(), B::Error> {
        let len = data.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let end = off.saturating_add(len);
        let data = data.slice(..(end - off) as usize);
        let mut blocked = false;
        loop {
            let mut notified = pin!(self.inner.changed.notified());
            notified.as_mut().enable();
            {
                let mut st = self.inner.lock();
                if !self.inner.writeback_for(&st, len) {
                    if blocked {
                        st.waiters -= 1;
                    }
                    break;
                }
                if st.dirty + len <= self.inner.cfg.max_dirty {
                    if blocked {
                        st.waiters -= 1;
                    }
                    st.carve(off, end);
                    st.seq += 1;
                    st.tick += 1;
                    let e = Extent {
                        data: data.clone(),
                        st: St::Dirty,
                        seq: st.seq,
                        used: st.tick,
                        dirtied: Instant::now(),
                    };
                    st.put(off, e);
                    st.stats.writes_cached += 1;
                    let size = self.inner.cfg.size;
                    st.evict(size);
                    let kick = st.dirty > self.inner.cfg.target_dirty
                        || std::mem::take(&mut st.flusher_idle);
                    drop(st);
                    if kick {
                        self.inner.kick.notify_one();
                    }
                    return Ok(());
                }
                if let Some(e) = st.error.clone() {
                    // Write-back is failing: do not wait for space forever.
                    if blocked {
                        st.waiters -= 1;
                    }
                    return Err(e);
                }
                if !blocked {
                    blocked = true;
                    st.waiters += 1;
                    st.stats.writes_blocked += 1;
                }
            }
            self.inner.kick.notify_one();
            notified.await;
        }
        self.inner.write_through(off, data).await
    }

    async fn through_op(&self, off: u64, len: u64, zero: Option<bool>) -> Result<(), B::Error> {
        if len == 0 {
            return Ok(());
        }
        let end = off.saturating_add(len);
        let (jobs, ticket) = {
            let mut st = self.inner.lock();
            // Dirty bytes in the range go out first: a discard may leave
            // partial granules untouched, and they must hold the newest data.
            let starts: Vec<u64> = st.overlapping(off, end).into_iter().map(|x| x.0).collect();
            let jobs = st.take_dirty(&starts);
            st.carve(off, end);
            (jobs, st.ticket(off, end, OpKind::Discard))
        };
        self.inner.spawn_jobs(jobs);
        self.inner.wait_before(ticket, off, end).await;
        let r = match zero {
            None => self.inner.backend.discard(off, end - off).await,
            Some(thick) => self.inner.backend.write_zeroes(off, end - off, thick).await,
        };
        self.inner.finish_ticket(ticket);
        r
    }

    /// Discard: dirty data in the range is written back first, the range
    /// leaves the cache, and the call returns when the backend discarded it.
    pub async fn discard(&self, off: u64, len: u64) -> Result<(), B::Error> {
        self.through_op(off, len, None).await
    }

    /// Zero a range, as [`Cache::discard`] orders it.
    pub async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> Result<(), B::Error> {
        self.through_op(off, len, Some(thick)).await
    }

    /// Write back every dirty byte, wait for every earlier backend
    /// mutation, then flush the backend. Returns the first write-back
    /// error since the previous flush (that data stays dirty and is
    /// retried). The first flush also ends `writethrough_until_flush`.
    pub async fn flush(&self) -> Result<(), B::Error> {
        self.inner.lock().flushed = true;
        self.write_back_all().await;
        if let Some(e) = self.inner.lock().error.take() {
            return Err(e);
        }
        self.inner.backend.flush().await
    }

    /// Write back every dirty byte and wait for every earlier backend
    /// mutation.
    async fn write_back_all(&self) {
        let (jobs, barrier) = {
            let mut st = self.inner.lock();
            let starts: Vec<u64> = st.dirty_list().into_iter().map(|d| d.0).collect();
            let jobs = st.take_dirty(&starts);
            (jobs, st.next_ticket + 1)
        };
        self.inner.spawn_jobs(jobs);
        self.inner.wait_before(barrier, 0, u64::MAX).await;
    }

    /// An internal flush (before a snapshot, resize, rollback, flatten,
    /// invalidate or close): like [`Cache::flush`] but it neither ends
    /// `writethrough_until_flush` nor consumes the pending write-back
    /// error (it returns a copy, so the user's next flush still sees it).
    pub async fn sync(&self) -> Result<(), B::Error> {
        self.write_back_all().await;
        if let Some(e) = self.inner.lock().error.clone() {
            return Err(e);
        }
        self.inner.backend.flush().await
    }

    /// Drop every clean byte (dirty data stays).
    pub fn drop_clean(&self) {
        let mut st = self.inner.lock();
        let clean: Vec<u64> = st
            .map
            .iter()
            .filter(|(_, e)| e.st == St::Clean)
            .map(|(&s, _)| s)
            .collect();
        for s in clean {
            st.remove_at(s);
        }
    }

    /// `rbd_invalidate_cache`: write back dirty data, then drop clean data.
    pub async fn invalidate(&self) -> Result<(), B::Error> {
        let r = self.sync().await;
        self.drop_clean();
        r
    }

    /// Forget everything cached in `[off, end)`, dirty or not (after a
    /// shrink, for bytes that no longer exist).
    pub fn purge(&self, off: u64, end: u64) {
        self.inner.lock().carve(off, end);
    }

    /// Write back everything, stop the background flusher, and return
    /// the pending write-back error if any (then dirty data that could
    /// not be written is lost with the handle).
    pub async fn close(&self) -> Result<(), B::Error> {
        self.write_back_all().await;
        let pending = self.inner.lock().error.take();
        let r = match pending {
            Some(e) => Err(e),
            None => self.inner.backend.flush().await,
        };
        self.inner.lock().closed = true;
        self.inner.kick.notify_one();
        r
    }
}

impl<B: Backend> Drop for Cache<B> {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.kick.notify_one();
    }
}
