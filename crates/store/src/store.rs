//! The durable local object store: redb tables, a group-commit writer
//! thread, and concurrent readers.
//!
//! Table layout (all keys order-preserving, see `codec`):
//!
//! | table     | key                                   | value                              |
//! |-----------|---------------------------------------|------------------------------------|
//! | `meta`    | object key (pool, ns, name)           | `ObjRecord` (snapset, head, clones) + crc32c |
//! | `data`    | object key + instance id + block (BE) | crc32c + up to 4 KiB of data       |
//! | `omap`    | object key + instance id + omap key   | crc32c + value                     |
//! | `snapped` | object key of objects with clones     | empty (index for snapshot trimming)|
//! | `pool_counters` | pool id (sign-flipped BE)       | `PoolCounters` + crc32c            |
//! | `sys`     | string                                | WAL checkpoint; the embedded backend's registry |
//!
//! The instance id is the clone id, or `NOSNAP` for the head.
//!
//! The `data` values are pointers into the data log (see `seglog`): the
//! block bytes live in segment files, appended once per batch together
//! with the batch's metadata redo.
//!
//! Architecture invariant: exactly one thread (the writer) opens write
//! transactions and appends to the data log; everything that mutates goes
//! through its bounded queue, so requests are serialized and many are made
//! durable with one fdatasync of the active segment. A second thread (the
//! syncer) runs that fdatasync so that applying a batch overlaps the
//! previous batch's, except when no next batch is queued: then the writer
//! runs it itself (one thread wake-up less per batch at low load). Nothing
//! a batch changed is visible to readers or answered before its log record
//! is durable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_rados::{
    ListEntry, ObjectId, OpReply, OpRequest, PoolId, PoolStat, RadosError, Result, SnapId,
};
use redb::{Database, Durability, ReadableTable};

use crate::codec::{self, ObjRecord, PoolCounters};
use crate::exec::{self, sio};
use crate::export;
use crate::extent::{self, ExtPtr};
use crate::seglog::{self, Pos, SegFile, Segments};
use crate::tables::{self, Redo, Tbl, WTables};

/// `sys` key of the checkpoint: the last LSN whose effects redb holds
/// durably (u64 LE) and the log position after its record (`Pos`).
const CHECKPOINT_KEY: &[u8] = b"log.checkpoint";
/// `sys` key of the on-disk format version.
const FORMAT_KEY: &[u8] = b"store.format";
/// 3: the data index maps extents (format 2 had one entry per block).
const FORMAT: &[u8] = b"3";
/// A checkpoint (durable redb commit) is taken after this much data log.
/// It bounds recovery time and the log kept for replay, and frees the
/// pages redb's non-durable commits released meanwhile.
const CHECKPOINT_LOG_BYTES: u64 = 256 << 20;
/// ... or this long after the first non-durable commit since the last one:
/// redb reuses freed pages only after a durable commit, so this bounds how
/// much the metadata file grows between checkpoints under small writes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Live data a compaction step copies at most (bounds the writer's pause).
const COMPACT_COPY_BYTES: u64 = 8 << 20;
/// Log a compaction step reads at most.
const COMPACT_SCAN_BYTES: u64 = 32 << 20;
/// Compaction starts when the sealed segments' garbage exceeds the live
/// data divided by this (see `WriterState::pick_victim`); while clients
/// sweep (see [`Pace`]) it then takes only cheap victims until garbage
/// reaches the live data.
const GARBAGE_DIVISOR: u64 = 2;
/// [`Pace`]'s counters are halved every time clients have written this many
/// segments' worth of data (its memory is about twice that).
const PACE_WINDOW_SEGMENTS: u64 = 2;
/// A client write of at least this many bytes counts as part of a sweep
/// (see [`Pace`]).
const SWEEP_WRITE_BYTES: u64 = 1 << 20;
/// While clients sweep, a victim below the hard bound must have at most
/// 1/this of its bytes live (copying one byte frees at least three).
const SWEEP_VICTIM_DIVISOR: u64 = 4;

/// Pending requests the writer queue holds before submitters wait.
pub const QUEUE_CAPACITY: usize = 256;
/// Most requests made durable by one log append (one fdatasync).
pub const MAX_BATCH: usize = 128;
/// Most payload bytes in one batch (bounds its memory and its log record).
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// A batch stops adding jobs to its record past this many bytes; the rest
/// wait for the next record. Payload bytes bound a batch only loosely: a
/// small write's clone-on-first-write copies its whole object into the
/// record, and 4 KiB writes to 75 freshly snapshotted 4 MiB objects made
/// one record exceed `seglog::MAX_RECORD` and stopped every OSD at once
/// (session 31). Leaves room under that limit for the one job that
/// crosses it.
const RECORD_SOFT_MAX: usize = 64 << 20;
/// How long one redb transaction stays open collecting batches. redb's
/// commit costs as much CPU as the writes it commits (tree finalization,
/// page checksums, freed-page bookkeeping, a pwrite per dirty page):
/// amortizing it over many batches is what makes a small durable write
/// cheap. 5 ms left the commit at ~10% of OSD CPU in a 4 KiB random-write
/// profile; 50 ms took cluster_bench's OSD CPU per replicated write from
/// ~1000 to ~700 us at QD1 (with buffered frame reads).
const COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// How long a transaction stays open while nothing in it was a read routed
/// to the writer (see [`Pending`]). Without readers waiting for the commit
/// to see the changes, a longer transaction only amortizes more: a
/// random 4 KiB write dirties a few redb pages wherever it lands, and every
/// commit copies and writes each dirty page once (~30 KB of page writes per
/// replicated 4 KiB write at 50 ms). 500 ms took 3-OSD QD32 daemon CPU per
/// write from 186-188 to 153-166 us (fresh clusters, fio rbd).
/// A read routed to the writer shortens the transaction back to
/// [`COMMIT_INTERVAL`]: a long one would route ever more reads through the
/// writer's queue (and their answers behind its fdatasyncs).
const COMMIT_INTERVAL_WRITES_ONLY: Duration = Duration::from_millis(500);
/// Most batches in one redb transaction.
const MAX_TXN_BATCHES: usize = 4096;
/// Batches handed to the log syncer before the writer waits.
const SYNC_QUEUE: usize = 64;
/// Log bytes handed to the log syncer before the writer waits.
const SYNC_QUEUE_BYTES: usize = 64 << 20;
/// Records at least this long are always made durable by the syncer,
/// never inline by the writer (see [`Syncer::push`]): their fdatasync
/// writes back megabytes (several ms, ~10 ms with three OSDs on one
/// disk), during which an inline writer would leave the next batch (at
/// 4 MiB QD4 it arrives within the same ms) waiting, while a hand-off
/// costs one thread wake-up (tens of us).
const INLINE_SYNC_MAX: usize = 256 << 10;
/// redb page cache size: redb holds metadata only (about 80 bytes per
/// 4 KiB block of data), so a small cache covers the hot part.
const CACHE_BYTES: usize = 32 << 20;

/// Tunables of [`Store::open_with`] (tests force compaction with small
/// segments).
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Size after which the data log rolls to a new segment file.
    pub segment_bytes: u64,
    /// Fault injection for tests: the writer fails as on a full disk
    /// (`ENOSPC`) once it has applied this many batches.
    pub fail_after_batches: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes: seglog::SEGMENT_BYTES,
            fail_after_batches: None,
        }
    }
}

/// Space accounting of the whole store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Bytes held in data blocks (sparse), all pools.
    pub stored_bytes: u64,
    /// Objects (heads and clones), all pools.
    pub objects: u64,
    /// Size of the store's files on disk: metadata database, data log
    /// segments and spare segment files (in memory: the segments).
    pub file_bytes: u64,
}

/// `sys` table updates: set (`Some`) or delete (`None`).
pub type SysUpdates = Vec<(String, Option<Vec<u8>>)>;

/// How a replicated (logged) write is applied: the `sys` records (a PG log
/// entry) committed atomically with it, and the version it takes.
#[derive(Clone, Debug, Default)]
pub struct Logged {
    /// `sys` updates committed in the same durable commit as the request,
    /// if it succeeds.
    pub sys: SysUpdates,
    /// `sys` updates committed instead when the request fails on its own
    /// terms (ENOENT, EEXIST, ...): a replicated log records every op it
    /// ordered, failed or not (marked so), so every member's log is the
    /// same sequence.
    pub sys_failed: Option<SysUpdates>,
    /// The version the object takes if the request changes it, instead of
    /// the pool's next one: replicas derive it from the PG log version so
    /// that every member gives an object the same version. Must exceed the
    /// object's current version (the caller's order guarantees it).
    pub version: Option<u64>,
    /// The modification time (ns since the epoch) the object takes if the
    /// request changes it, instead of this machine's clock: replicas take
    /// the primary's, so that every copy is identical.
    pub mtime_ns: Option<u64>,
    /// The request's data need not stay in the page cache (a replica's
    /// copy, read only if the replica becomes primary): its large aligned
    /// writes go to the data log with O_DIRECT (see `seglog`), sparing
    /// the copy into the page cache and the pages the primary's reads use.
    pub uncached: bool,
}

/// A write queued by [`Store::enqueue_logged`]; await [`PendingOp::wait`].
pub struct PendingOp(tokio::sync::oneshot::Receiver<Answer>);

impl PendingOp {
    /// The request's answer, once it is durable.
    pub async fn wait(self) -> Result<OpReply> {
        match self.0.await {
            Ok(Answer::Op(r)) => r,
            Ok(_) => Err(mismatched()),
            Err(_) => Err(RadosError::io("local store writer died before answering")),
        }
    }
}

/// Work for the writer thread.
enum JobKind {
    /// A request (a write; or a read of an object with uncommitted changes),
    /// and `sys` updates to apply atomically with it (see [`Logged`]).
    Op(Box<OpRequest>, Logged),
    /// Export an object whose state is not committed to redb yet.
    Export(ObjectId),
    /// Replace an object's whole state with an export (`None`: remove it).
    Import(ObjectId, Option<Vec<u8>>),
    Trim(PoolId, Vec<SnapId>),
    RemovePool(PoolId),
    Sys(SysUpdates),
    /// Reads routed to the writer because what they read has changes not
    /// yet committed to redb (only the writer's transaction sees them).
    /// `true`: also objects with clones but no head ([`Store::list_all`]).
    List(PoolId, Option<String>, bool),
    PoolStat(PoolId),
    Usage,
    SysGet(String),
    /// `sys` values under a key prefix ([`Store::sys_scan`]).
    SysScan(String),
}

impl JobKind {
    /// Whether this is a read a reader handed to the writer because it
    /// touches changes not yet committed to redb.
    fn is_routed_read(&self) -> bool {
        match self {
            JobKind::Op(req, _) => !req.is_write(),
            JobKind::Export(_)
            | JobKind::List(..)
            | JobKind::PoolStat(_)
            | JobKind::Usage
            | JobKind::SysGet(_)
            | JobKind::SysScan(_) => true,
            JobKind::Import(..) | JobKind::Trim(..) | JobKind::RemovePool(_) | JobKind::Sys(_) => {
                false
            }
        }
    }
}

/// A job's answer.
enum Answer {
    Op(Result<OpReply>),
    Trim(Result<u64>),
    Unit(Result<()>),
    List(Result<Vec<ListEntry>>),
    PoolStat(Result<PoolStat>),
    Usage(Result<(u64, u64)>),
    Bytes(Result<Option<Vec<u8>>>),
    Pairs(Result<Vec<(String, Vec<u8>)>>),
}

/// Where to send an answer: a blocked thread or an async task.
enum ReplyTo {
    Sync(mpsc::SyncSender<Answer>),
    Async(tokio::sync::oneshot::Sender<Answer>),
}

impl ReplyTo {
    fn send(self, a: Answer) {
        // A dropped receiver means the submitter went away; nothing to do.
        match self {
            ReplyTo::Sync(s) => {
                let _ = s.send(a);
            }
            ReplyTo::Async(s) => {
                let _ = s.send(a);
            }
        }
    }
}

struct Job {
    kind: JobKind,
    reply: ReplyTo,
}

impl Job {
    fn payload_bytes(&self) -> usize {
        match &self.kind {
            JobKind::Op(r, _) => {
                r.ops
                    .iter()
                    .map(|op| match op {
                        quarry_rados::Op::Write { data, .. }
                        | quarry_rados::Op::WriteFull(data) => data.len(),
                        _ => 64,
                    })
                    .sum()
            }
            _ => 64,
        }
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
    /// Set if the writer stopped after a storage failure: submitters get EIO.
    dead: bool,
    /// That failure, for the owner to report (see [`Store::failure`]).
    failure: Option<String>,
}

/// What the writer's open transaction changed and redb readers can't see
/// yet. Readers consult it *before* opening their read transaction; if what
/// they read is here, they ask the writer instead. Entries are added before
/// a write is acknowledged and removed only after the commit that makes it
/// visible, so an acknowledged write is never missed.
#[derive(Default)]
struct Pending {
    objects: HashSet<Vec<u8>>,
    /// Pools whose counters or object set changed.
    pools: HashSet<PoolId>,
    /// Pools where unknown objects changed (trims, pool removal).
    bulk_pools: HashSet<PoolId>,
    sys: HashSet<String>,
}

impl Pending {
    fn merge(&mut self, o: Pending) {
        self.objects.extend(o.objects);
        self.pools.extend(o.pools);
        self.bulk_pools.extend(o.bulk_pools);
        self.sys.extend(o.sys);
    }
}

struct Inner {
    /// Bumped after every redb commit (before `pending` is cleared).
    commits: AtomicU64,
    /// Data bytes compaction copied since the store opened.
    compacted: AtomicU64,
    /// The read tables of the newest commit, shared by object reads until
    /// the next commit (see `Store::read_view`); before `db`, so
    /// dropped before it.
    view: Mutex<Option<Arc<ReadView>>>,
    db: Database,
    path: Option<PathBuf>,
    segs: Arc<Segments>,
    queue: Mutex<Queue>,
    not_empty: Condvar,
    not_full: Condvar,
    pending: Mutex<Pending>,
    sync: Syncer,
}

/// The tables an object read uses, opened on one read transaction (each
/// table keeps that snapshot alive), tagged with the commit count taken
/// before it began.
struct ReadView {
    commits: u64,
    meta: redb::ReadOnlyTable<exec::Raw, exec::Raw>,
    data: redb::ReadOnlyTable<exec::Raw, exec::Raw>,
    omap: redb::ReadOnlyTable<exec::Raw, exec::Raw>,
}

/// A batch the writer applied, on its way through the log syncer: the
/// segment its record was written to (none if it changed nothing), what it
/// changed, its answers.
struct Synced {
    rec: Option<(Arc<SegFile>, usize)>,
    touched: Pending,
    replies: Vec<(ReplyTo, Answer)>,
}

#[derive(Default)]
struct SyncQueue {
    jobs: VecDeque<Synced>,
    /// Log record bytes in `jobs`.
    bytes: usize,
    /// The syncer is writing a group (taken off `jobs`).
    busy: bool,
    shutdown: bool,
    /// Set once a log write failed: every later batch fails too.
    failed: Option<String>,
}

/// The hand-off between the writer thread (applies batches to redb and
/// writes their log records) and the syncer thread (one fdatasync per
/// group, then publishes and answers them in order). The writer applies the next
/// batch while the previous one's fdatasync runs, and batches that queue
/// up meanwhile share the next one.
#[derive(Default)]
struct Syncer {
    q: Mutex<SyncQueue>,
    /// Signals the syncer: work or shutdown.
    work: Condvar,
    /// Signals the writer: space freed, group finished, failure.
    changed: Condvar,
}

impl Syncer {
    /// Hand a batch over, waiting while the queue is full. After a log
    /// failure the batch is answered with it and the error returned.
    ///
    /// With `inline` (the writer has no next batch waiting) and the syncer
    /// idle, the writer runs the fdatasync itself: there is nothing to
    /// overlap it with, and handing over would cost a thread wake-up (and
    /// its latency) per batch, i.e. per op at low load.
    fn push(&self, inner: &Inner, j: Synced, inline: bool) -> Result<()> {
        let mut q = lock(&self.q);
        if inline && q.jobs.is_empty() && !q.busy && q.failed.is_none() {
            q.busy = true;
            drop(q);
            sync_group(inner, vec![j]);
            return Ok(());
        }
        while (q.jobs.len() >= SYNC_QUEUE || (!q.jobs.is_empty() && q.bytes >= SYNC_QUEUE_BYTES))
            && q.failed.is_none()
        {
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = q.failed.clone() {
            drop(q);
            let e = RadosError::io(format!("write-ahead log: {e}"));
            for (r, a) in j.replies {
                r.send(failed_like(&a, e.clone()));
            }
            return Err(e);
        }
        q.bytes += j.rec.as_ref().map_or(0, |r| r.1);
        q.jobs.push_back(j);
        drop(q);
        self.work.notify_one();
        Ok(())
    }

    /// Wait until every batch handed over is durable, published and
    /// answered (before a redb commit makes the state visible to readers).
    fn drain(&self) -> Result<()> {
        let mut q = lock(&self.q);
        while (!q.jobs.is_empty() || q.busy) && q.failed.is_none() {
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        match &q.failed {
            Some(e) => Err(RadosError::io(format!("write-ahead log: {e}"))),
            None => Ok(()),
        }
    }

    fn fail(&self, why: String) {
        let mut q = lock(&self.q);
        q.failed.get_or_insert(why);
        q.busy = false;
        drop(q);
        self.changed.notify_all();
    }
}

/// The same kind of answer as `a`, carrying `e`.
fn failed_like(a: &Answer, e: RadosError) -> Answer {
    match a {
        Answer::Op(_) => Answer::Op(Err(e)),
        Answer::Trim(_) => Answer::Trim(Err(e)),
        Answer::Unit(_) => Answer::Unit(Err(e)),
        Answer::List(_) => Answer::List(Err(e)),
        Answer::PoolStat(_) => Answer::PoolStat(Err(e)),
        Answer::Usage(_) => Answer::Usage(Err(e)),
        Answer::Bytes(_) => Answer::Bytes(Err(e)),
        Answer::Pairs(_) => Answer::Pairs(Err(e)),
    }
}

/// fdatasync every distinct segment of a group, oldest first.
fn sync_files(files: &[Arc<SegFile>]) -> std::io::Result<()> {
    let mut done: Vec<&Arc<SegFile>> = Vec::new();
    for f in files {
        if !done.iter().any(|d| Arc::ptr_eq(d, f)) {
            f.sync_data()?;
            done.push(f);
        }
    }
    Ok(())
}

fn syncer_main(inner: Arc<Inner>) {
    let sync = &inner.sync;
    loop {
        let jobs: Vec<Synced> = {
            let mut q = lock(&sync.q);
            while q.jobs.is_empty() && !q.shutdown {
                q = sync.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.jobs.is_empty() {
                return;
            }
            q.busy = true;
            q.bytes = 0;
            q.jobs.drain(..).collect()
        };
        sync.changed.notify_all();
        sync_group(&inner, jobs);
    }
}

/// Make a group of batches durable (one fdatasync per distinct segment),
/// then publish and answer them in order; the caller set `busy`, which
/// this clears. Runs on the syncer thread, or on the writer when it had
/// nothing else to do (see [`Syncer::push`]).
fn sync_group(inner: &Inner, mut jobs: Vec<Synced>) {
    let sync = &inner.sync;
    let files: Vec<Arc<SegFile>> = jobs
        .iter_mut()
        .filter_map(|j| j.rec.take().map(|r| r.0))
        .collect();
    let prior = lock(&sync.q).failed.clone();
    let r = match prior {
        Some(e) => Err(e),
        None => std::panic::catch_unwind(|| sync_files(&files))
            .unwrap_or_else(|_| Err(std::io::Error::other("log syncer panicked")))
            .map_err(|e| e.to_string()),
    };
    match r {
        Ok(()) => {
            // Durable: now visible to readers (through the writer), then answered.
            {
                let mut p = lock(&inner.pending);
                for j in jobs.iter_mut() {
                    p.merge(std::mem::take(&mut j.touched));
                }
            }
            for j in jobs {
                for (r, a) in j.replies {
                    r.send(a);
                }
            }
        }
        Err(why) => {
            sync.fail(why.clone());
            let e = RadosError::io(format!("write-ahead log: {why}"));
            for j in jobs {
                for (r, a) in j.replies {
                    r.send(failed_like(&a, e.clone()));
                }
            }
        }
    }
    lock(&sync.q).busy = false;
    sync.changed.notify_all();
}

/// The local durable object store (see the module docs for the layout).
pub struct Store {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
    /// Exits once the writer (which owns its queue's sender) is gone.
    housekeeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the queue consistent
    // (push/pop are atomic), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn mismatched() -> RadosError {
    RadosError::io("local store: mismatched answer")
}

/// What [`Store::try_read_cached`] did.
#[derive(Debug)]
pub enum CachedRead {
    /// Answered (an error is the object's, e.g. `ENOENT` or a bad block).
    Done(Result<OpReply>),
    /// A data block was not in the page cache: nothing answered; the
    /// kernel has started reading it in (`RWF_NOWAIT` reads start
    /// readahead before they give up), so a later try may find it.
    Miss,
    /// The object has changes only the writer can read yet: use
    /// [`Store::apply`] where blocking is fine.
    Writer,
}

impl Store {
    /// Open (or create) the store in `dir` (the metadata database
    /// `dir/meta.redb` and the data log's segments under `dir/log`).
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// [`Store::open`] with explicit tunables.
    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RadosError::io(format!("create {}: {e}", dir.display())))?;
        let old = dir.join("store.redb");
        if old.exists() {
            return Err(RadosError::io(format!(
                "{} is a store of the old format (data inside redb, before the data log); \
                 this version cannot read it: move it away and re-create the store \
                 (an OSD backfills from its peers)",
                old.display()
            )));
        }
        let path = dir.join("meta.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| RadosError::io(format!("open {}: {e}", path.display())))?;
        let log_dir = dir.join("log");
        let segs = Segments::open(Some(&log_dir))
            .map_err(|e| RadosError::io(format!("open {}: {e}", log_dir.display())))?;
        Self::start(db, Some(path), segs, opts)
    }

    /// A store in memory (redb's in-memory backend and in-memory log
    /// segments; same code path, nothing durable).
    pub fn open_memory() -> Result<Store> {
        Self::open_memory_with(StoreOptions::default())
    }

    /// [`Store::open_memory`] with explicit tunables.
    pub fn open_memory_with(opts: StoreOptions) -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(sio)?;
        let segs = Segments::open(None).map_err(sio)?;
        Self::start(db, None, segs, opts)
    }

    fn start(
        db: Database,
        path: Option<PathBuf>,
        segs: Segments,
        opts: StoreOptions,
    ) -> Result<Store> {
        let segs = Arc::new(segs);
        let lio = |e: std::io::Error| RadosError::io(format!("data log: {e}"));
        // Create every table up front so readers never see a missing table,
        // and replay the log's records past the last checkpoint.
        let mut txn = db.begin_write().map_err(sio)?;
        let lsn;
        let end;
        let active;
        {
            let mut t = WTables::open(&txn, false, segs.clone())?;
            match t.table(Tbl::Sys).get(FORMAT_KEY).map_err(sio)? {
                Some(v) if v.value() != FORMAT => {
                    return Err(RadosError::io(format!(
                        "local store format {:?} is not {:?}, which this version reads \
                         (format 2 indexed data per 4 KiB block, format 3 by extents; \
                         there is no conversion: recreate this store, e.g. an OSD \
                         refilled from its replicas, or run the older version)",
                        String::from_utf8_lossy(v.value()),
                        String::from_utf8_lossy(FORMAT)
                    )))
                }
                _ => {}
            }
            let (cp, from) = match t.table(Tbl::Sys).get(CHECKPOINT_KEY).map_err(sio)? {
                Some(v) => {
                    let v = v.value();
                    let lsn = v
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes);
                    match (lsn, v.get(8..).and_then(Pos::decode)) {
                        (Some(l), Some(p)) => (l, p),
                        _ => return Err(RadosError::io("corrupted data log checkpoint record")),
                    }
                }
                None => (0, Pos::default()),
            };
            let (records, e) = seglog::recover(&segs, cp, from).map_err(lio)?;
            let mut last = cp;
            for r in &records {
                tables::replay(&mut t, r.redo())?;
                last = r.lsn;
            }
            drop(records);
            lsn = last;
            end = e;
            active = seglog::cut(&segs, end, opts.segment_bytes).map_err(lio)?;
            t.put(Tbl::Sys, FORMAT_KEY, FORMAT)?;
            t.put(Tbl::Sys, CHECKPOINT_KEY, &checkpoint_value(lsn, end))?;
        }
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(sio)?;
        let live = {
            let r = db.begin_read().map_err(sio)?;
            let data = r.open_table(Tbl::Data.def()).map_err(sio)?;
            tables::live_bytes(&data)?
        };
        let mut sizes: std::collections::BTreeMap<u32, u64> = segs
            .ids()
            .into_iter()
            .map(|id| (id, segs.len_of(id)))
            .collect();
        sizes.insert(end.seg, end.off);
        let mut ws = WriterState {
            sizes,
            durable_log: path.is_some(),
            pos: end,
            active,
            seg_bytes: opts.segment_bytes.max(4096),
            zeroed: 0,
            lsn,
            dirty: false,
            live,
            since_cp: 0,
            dirty_since: None,
            want_cp: false,
            dead_since_cp: 0,
            compact: None,
            no_compact: HashSet::new(),
            pace: Pace::default(),
            stats: WriterStats::default(),
            inject_fail_after: opts.fail_after_batches,
            chores: None,
        };
        let housekeeper = match &path {
            Some(meta) => {
                let (tx, rx) = mpsc::channel();
                ws.chores = Some(tx);
                let meta = meta.clone();
                let segs = segs.clone();
                Some(
                    std::thread::Builder::new()
                        .name("quarry-store-housekeeper".into())
                        .spawn(move || housekeeper_main(meta, segs, rx))
                        .map_err(|e| RadosError::io(format!("spawn store housekeeper: {e}")))?,
                )
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            db,
            path,
            segs,
            queue: Mutex::new(Queue::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            pending: Mutex::new(Pending::default()),
            sync: Syncer::default(),
            commits: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            view: Mutex::new(None),
        });
        // Segments emptied before a crash (or the last shutdown).
        delete_dead_segments(&inner, &mut ws)?;
        let syncer = if ws.durable_log {
            let i = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name("quarry-store-sync".into())
                    .spawn(move || syncer_main(i))
                    .map_err(|e| RadosError::io(format!("spawn store log syncer: {e}")))?,
            )
        } else {
            None
        };
        let w = inner.clone();
        let writer = std::thread::Builder::new()
            .name("quarry-store-writer".into())
            .spawn(move || writer_main(w, ws))
            .map_err(|e| RadosError::io(format!("spawn store writer: {e}")))?;
        Ok(Store {
            inner,
            writer: Some(writer),
            syncer,
            housekeeper,
        })
    }

    /// Enqueue a job for an async waiter, blocking this thread while the
    /// queue is full (so the caller's order of enqueueing is kept).
    fn enqueue_blocking(&self, kind: JobKind) -> Result<tokio::sync::oneshot::Receiver<Answer>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = lock(&self.inner.queue);
            while q.jobs.len() >= QUEUE_CAPACITY && !q.dead && !q.shutdown {
                q = self
                    .inner
                    .not_full
                    .wait(q)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if q.dead || q.shutdown {
                return Err(not_running(&q));
            }
            q.jobs.push_back(Job {
                kind,
                reply: ReplyTo::Async(tx),
            });
        }
        self.inner.not_empty.notify_one();
        Ok(rx)
    }

    /// Enqueue a job, waiting while the queue is full.
    fn submit_blocking(&self, kind: JobKind) -> Result<Answer> {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut q = lock(&self.inner.queue);
            while q.jobs.len() >= QUEUE_CAPACITY && !q.dead && !q.shutdown {
                q = self
                    .inner
                    .not_full
                    .wait(q)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if q.dead || q.shutdown {
                return Err(not_running(&q));
            }
            q.jobs.push_back(Job {
                kind,
                reply: ReplyTo::Sync(tx),
            });
        }
        self.inner.not_empty.notify_one();
        rx.recv()
            .map_err(|_| RadosError::io("local store writer died before answering"))
    }

    /// Enqueue without waiting; gives the job back if the queue is full.
    fn try_submit_async(
        &self,
        kind: JobKind,
    ) -> std::result::Result<Result<tokio::sync::oneshot::Receiver<Answer>>, JobKind> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = lock(&self.inner.queue);
            if q.dead || q.shutdown {
                return Ok(Err(not_running(&q)));
            }
            if q.jobs.len() >= QUEUE_CAPACITY {
                return Err(kind);
            }
            q.jobs.push_back(Job {
                kind,
                reply: ReplyTo::Async(tx),
            });
        }
        self.inner.not_empty.notify_one();
        Ok(Ok(rx))
    }

    /// Apply a compound request. Blocking; an `Ok` write is durable.
    pub fn apply(&self, req: &OpRequest) -> Result<OpReply> {
        if !req.is_write() {
            return self.read(req);
        }
        match self.submit_blocking(JobKind::Op(Box::new(req.clone()), Logged::default()))? {
            Answer::Op(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// Apply a request and, only if it succeeds, the `sys` updates, all
    /// atomically and durably together (one commit: e.g. an OSD's PG log
    /// entry with the write it records).
    pub fn apply_with_sys(&self, req: &OpRequest, sys: SysUpdates) -> Result<OpReply> {
        let l = Logged {
            sys,
            ..Logged::default()
        };
        match self.submit_blocking(JobKind::Op(Box::new(req.clone()), l))? {
            Answer::Op(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// Queue a logged write without waiting for it (see [`Logged`]). Jobs
    /// are applied in the order they are queued, so a caller that queues
    /// under its own lock gets its order. Gives the request back if the
    /// queue is full: the caller then uses [`Store::enqueue_logged_blocking`]
    /// on a blocking thread (still under its lock, to keep its order).
    pub fn try_enqueue_logged(
        &self,
        req: OpRequest,
        l: Logged,
    ) -> std::result::Result<Result<PendingOp>, Box<(OpRequest, Logged)>> {
        match self.try_submit_async(JobKind::Op(Box::new(req), l)) {
            Err(JobKind::Op(req, l)) => Err(Box::new((*req, l))),
            Err(_) => Err(Box::new((
                OpRequest::new(ObjectId::new(0, "")),
                Logged::default(),
            ))),
            Ok(r) => Ok(r.map(PendingOp)),
        }
    }

    /// [`Store::try_enqueue_logged`], waiting (blocking) for queue space.
    pub fn enqueue_logged_blocking(&self, req: OpRequest, l: Logged) -> Result<PendingOp> {
        self.enqueue_blocking(JobKind::Op(Box::new(req), l))
            .map(PendingOp)
    }

    /// The failure that stopped the writer, if one did: the store then
    /// serves nothing more, and its owner should stop (reopening recovers
    /// from the log once the cause is gone).
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner.queue).failure.clone()
    }

    /// Wait until every job queued before this call is durable (an empty
    /// `sys` commit travels through the same FIFO queue).
    pub fn barrier(&self) -> Result<()> {
        self.sys_put(Vec::new())
    }

    /// An object's complete state (record, every instance's blocks and
    /// omap, snapshot index entry), or `None` if it has no head and no
    /// clones. Opaque bytes for [`Store::import_object`] on another store.
    pub fn export_object(&self, oid: &ObjectId) -> Result<Option<Vec<u8>>> {
        let okey = codec::obj_key(oid.pool, &oid.namespace, &oid.name);
        let routed = {
            let p = lock(&self.inner.pending);
            p.objects.contains(&okey) || p.bulk_pools.contains(&oid.pool)
        };
        if routed {
            return match self.submit_blocking(JobKind::Export(oid.clone()))? {
                Answer::Bytes(r) => r,
                _ => Err(mismatched()),
            };
        }
        self.retry_read(|| {
            let txn = self.inner.db.begin_read().map_err(sio)?;
            let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
            let data = txn.open_table(Tbl::Data.def()).map_err(sio)?;
            let omap = txn.open_table(Tbl::Omap.def()).map_err(sio)?;
            let snapped = txn.open_table(Tbl::Snapped.def()).map_err(sio)?;
            export::export(&meta, &data, &*self.inner.segs, &omap, &snapped, &okey)
        })
    }

    /// Run a read on a read transaction; if it fails while a segment was
    /// deleted meanwhile (compaction moved the blocks its older view points
    /// at), run it again on a fresh view.
    fn retry_read<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            let before = self.inner.segs.removals();
            match f() {
                Err(e) if tries < 3 && self.inner.segs.removals() != before => {
                    tries += 1;
                    let _ = e;
                }
                r => return r,
            }
        }
    }

    /// Make `oid` exactly the exported state (`None`: remove every instance),
    /// atomically and durably. A malformed export is refused (EIO) with
    /// nothing changed. The pool's version counter is raised to the
    /// object's versions so later local versions stay above them.
    pub fn import_object(&self, oid: &ObjectId, state: Option<Vec<u8>>) -> Result<()> {
        if let Some(s) = &state {
            // Validate on the caller's thread: the writer only installs.
            export::parse(s, &exec::Name(oid))?;
        }
        match self.submit_blocking(JobKind::Import(oid.clone(), state))? {
            Answer::Unit(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// Submit a write without blocking the caller's thread: the returned
    /// future yields the answer. Gives the request back if the queue is
    /// full (the caller should then use [`Store::apply`] on a blocking thread).
    pub(crate) fn submit_write(
        &self,
        req: OpRequest,
    ) -> std::result::Result<Result<impl std::future::Future<Output = Result<OpReply>>>, OpRequest>
    {
        match self.try_submit_async(JobKind::Op(Box::new(req), Logged::default())) {
            Err(JobKind::Op(req, _)) => Err(*req),
            Err(_) => unreachable!("try_submit_async returns the job it was given"),
            Ok(Err(e)) => Ok(Err(e)),
            Ok(Ok(rx)) => Ok(Ok(async move {
                match rx.await {
                    Ok(Answer::Op(r)) => r,
                    Ok(_) => Err(mismatched()),
                    Err(_) => Err(RadosError::io("local store writer died before answering")),
                }
            })),
        }
    }

    /// A read-only request: in a read transaction on the caller's thread,
    /// unless the object has uncommitted changes (then by the writer).
    fn read(&self, req: &OpRequest) -> Result<OpReply> {
        let okey = codec::obj_key(req.oid.pool, &req.oid.namespace, &req.oid.name);
        let routed = {
            let p = lock(&self.inner.pending);
            p.objects.contains(&okey) || p.bulk_pools.contains(&req.oid.pool)
        };
        if routed {
            return match self
                .submit_blocking(JobKind::Op(Box::new(req.clone()), Logged::default()))?
            {
                Answer::Op(r) => r,
                _ => Err(mismatched()),
            };
        }
        let fresh = std::cell::Cell::new(false);
        self.retry_read(|| {
            let v = self.read_view(fresh.replace(true))?;
            Ok(exec::stage(&v.meta, &v.data, &*self.inner.segs, &v.omap, req, 0, None)?.reply)
        })
    }

    /// A read-only request answered on the caller's thread only if that
    /// cannot block it on the disk (an async worker calls this): the
    /// answer, or why not. Reading the index tables may still touch the
    /// disk; they are small and read on every request, so they stay cached.
    pub fn try_read_cached(&self, req: &OpRequest) -> CachedRead {
        if req.is_write() {
            return CachedRead::Writer;
        }
        let okey = codec::obj_key(req.oid.pool, &req.oid.namespace, &req.oid.name);
        {
            let p = lock(&self.inner.pending);
            if p.objects.contains(&okey) || p.bulk_pools.contains(&req.oid.pool) {
                return CachedRead::Writer;
            }
        }
        let fresh = std::cell::Cell::new(false);
        let r = self.retry_read(|| {
            let v = self.read_view(fresh.replace(true))?;
            let src = tables::CachedOnly {
                segs: &self.inner.segs,
                missed: std::cell::Cell::new(false),
            };
            let r = exec::stage(&v.meta, &v.data, &src, &v.omap, req, 0, None);
            if src.missed.get() {
                return Ok(None);
            }
            // Errors go through `retry_read` (a segment deleted meanwhile).
            r.map(|s| Some(s.reply))
        });
        match r {
            Ok(Some(r)) => CachedRead::Done(Ok(r)),
            Ok(None) => CachedRead::Miss,
            Err(e) => CachedRead::Done(Err(e)),
        }
    }

    /// The read tables of the newest commit: the shared view while no
    /// commit has happened since it was opened (a read transaction and
    /// three table opens per object read were ~9% of an OSD's CPU at 4 KiB
    /// random reads), else a new one, which becomes the shared view.
    /// `fresh` skips the shared view (a retry after a segment deletion).
    /// The caller has checked `pending` first: a commit that made its
    /// object readable bumped `commits` before clearing `pending`, so the
    /// view it gets includes that commit.
    fn read_view(&self, fresh: bool) -> Result<Arc<ReadView>> {
        let now = self.inner.commits.load(Ordering::SeqCst);
        if !fresh {
            if let Some(v) = lock(&self.inner.view).as_ref() {
                if v.commits == now {
                    return Ok(v.clone());
                }
            }
        }
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let v = Arc::new(ReadView {
            commits: now,
            meta: txn.open_table(Tbl::Meta.def()).map_err(sio)?,
            data: txn.open_table(Tbl::Data.def()).map_err(sio)?,
            omap: txn.open_table(Tbl::Omap.def()).map_err(sio)?,
        });
        let mut g = lock(&self.inner.view);
        if g.as_ref().is_none_or(|o| o.commits <= now) {
            *g = Some(v.clone());
        }
        Ok(v)
    }

    /// Whether a pool-level read must go to the writer.
    fn pool_pending(&self, pool: Option<PoolId>) -> bool {
        let p = lock(&self.inner.pending);
        match pool {
            Some(pool) => p.pools.contains(&pool),
            None => !p.pools.is_empty(),
        }
    }

    /// Drop `removed` snaps from every clone label in `pool`, deleting
    /// clones no snapshot needs any more. Returns the bytes freed.
    pub fn trim_snaps(&self, pool: PoolId, removed: &[SnapId]) -> Result<u64> {
        match self.submit_blocking(JobKind::Trim(pool, removed.to_vec()))? {
            Answer::Trim(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// Head objects of a pool (optionally one namespace), ordered by (namespace, name).
    pub fn list(&self, pool: PoolId, namespace: Option<&str>) -> Result<Vec<ListEntry>> {
        self.list_where(pool, namespace, false)
    }

    /// Every object of a pool that has a head or a clone, ordered by
    /// (namespace, name): what recovery must copy. An object whose head
    /// was removed after a snapshot lives on in its clones, and
    /// [`Store::list`] (what clients see) omits it.
    pub fn list_all(&self, pool: PoolId) -> Result<Vec<ListEntry>> {
        self.list_where(pool, None, true)
    }

    fn list_where(
        &self,
        pool: PoolId,
        namespace: Option<&str>,
        with_clones: bool,
    ) -> Result<Vec<ListEntry>> {
        if self.pool_pending(Some(pool)) {
            let job = JobKind::List(pool, namespace.map(str::to_string), with_clones);
            return match self.submit_blocking(job)? {
                Answer::List(r) => r,
                _ => Err(mismatched()),
            };
        }
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
        list_in(&meta, pool, namespace, with_clones)
    }

    /// Objects and stored bytes of a pool (zero for an unknown pool).
    pub fn pool_stat(&self, pool: PoolId) -> Result<PoolStat> {
        if self.pool_pending(Some(pool)) {
            return match self.submit_blocking(JobKind::PoolStat(pool))? {
                Answer::PoolStat(r) => r,
                _ => Err(mismatched()),
            };
        }
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let pools = txn.open_table(Tbl::Pools.def()).map_err(sio)?;
        pool_stat_in(&pools, pool)
    }

    /// Counters of several pools as of the last commit of the metadata
    /// (at most one commit interval behind what is durable): one read
    /// transaction, never a round trip through the writer, so periodic
    /// reports (pool quotas) cost no write batch.
    pub fn pool_stats_committed(&self, pools: &[PoolId]) -> Result<Vec<PoolStat>> {
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let table = txn.open_table(Tbl::Pools.def()).map_err(sio)?;
        pools.iter().map(|p| pool_stat_in(&table, *p)).collect()
    }

    /// Delete every object of a pool and its counters.
    pub fn remove_pool(&self, pool: PoolId) -> Result<()> {
        match self.submit_blocking(JobKind::RemovePool(pool))? {
            Answer::Unit(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// Pools that have counters in the store (for reconciliation at open).
    pub fn pools_with_data(&self) -> Result<Vec<PoolId>> {
        // Only called before any write is queued, so committed state is current.
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let pools = txn.open_table(Tbl::Pools.def()).map_err(sio)?;
        let mut out = Vec::new();
        for item in pools.iter().map_err(sio)? {
            let k = item.map_err(sio)?.0;
            out.push(
                codec::parse_pool_prefix(k.value()).ok_or_else(|| {
                    RadosError::io("corrupted pool counter key in the local store")
                })?,
            );
        }
        Ok(out)
    }

    /// Whole-store usage: stored bytes, objects and the file's size.
    pub fn usage(&self) -> Result<StoreUsage> {
        let (stored_bytes, objects) = if self.pool_pending(None) {
            match self.submit_blocking(JobKind::Usage)? {
                Answer::Usage(r) => r?,
                _ => return Err(mismatched()),
            }
        } else {
            let txn = self.inner.db.begin_read().map_err(sio)?;
            let pools = txn.open_table(Tbl::Pools.def()).map_err(sio)?;
            usage_in(&pools)?
        };
        let mut u = StoreUsage {
            stored_bytes,
            objects,
            file_bytes: 0,
        };
        if let Some(p) = &self.inner.path {
            u.file_bytes = std::fs::metadata(p)
                .map_err(|e| RadosError::io(format!("stat {}: {e}", p.display())))?
                .len();
        }
        u.file_bytes += self.inner.segs.bytes() + self.inner.segs.spare_bytes();
        Ok(u)
    }

    /// How many data log segments were made from spare files (segments
    /// let go and reused) since the store opened.
    pub fn segment_reuses(&self) -> u64 {
        self.inner.segs.reuses()
    }

    /// Data bytes compaction has copied since the store opened (what it
    /// costs beyond the clients' writes).
    pub fn compacted_bytes(&self) -> u64 {
        self.inner.compacted.load(Ordering::Relaxed)
    }

    /// Read a value of the `sys` table (small records of upper layers).
    pub fn sys_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if lock(&self.inner.pending).sys.contains(key) {
            return match self.submit_blocking(JobKind::SysGet(key.to_string()))? {
                Answer::Bytes(r) => r,
                _ => Err(mismatched()),
            };
        }
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let sys = txn.open_table(Tbl::Sys.def()).map_err(sio)?;
        sys_get_in(&sys, key)
    }

    /// The `sys` values whose keys start with `prefix`, in key order (one
    /// read instead of a lookup per key, e.g. a whole PG log at load).
    pub fn sys_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let routed = lock(&self.inner.pending)
            .sys
            .iter()
            .any(|k| k.starts_with(prefix));
        if routed {
            return match self.submit_blocking(JobKind::SysScan(prefix.to_string()))? {
                Answer::Pairs(r) => r,
                _ => Err(mismatched()),
            };
        }
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let sys = txn.open_table(Tbl::Sys.def()).map_err(sio)?;
        sys_scan_in(&sys, prefix)
    }

    /// Durably and atomically set (`Some`) or delete (`None`) `sys` values.
    pub fn sys_put(&self, kv: SysUpdates) -> Result<()> {
        match self.submit_blocking(JobKind::Sys(kv))? {
            Answer::Unit(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// The metadata database file, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }
}

// ---------------------------------------------------------------- reads on any view

fn list_in<M: exec::RTable>(
    meta: &M,
    pool: PoolId,
    namespace: Option<&str>,
    with_clones: bool,
) -> Result<Vec<ListEntry>> {
    let prefix = match namespace {
        Some(ns) => codec::ns_prefix(pool, ns),
        None => codec::pool_prefix(pool).to_vec(),
    };
    let hi = codec::prefix_end(&prefix);
    let iter = match &hi {
        Some(hi) => meta.range::<&[u8]>(prefix.as_slice()..hi.as_slice()),
        None => meta.range::<&[u8]>(prefix.as_slice()..),
    }
    .map_err(sio)?;
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item.map_err(sio)?;
        let (ns, name) = codec::parse_obj_key(k.value())
            .ok_or_else(|| RadosError::io(format!("corrupted object key in pool {pool}")))?;
        let rec = ObjRecord::decode(v.value(), &format_args!("{pool}/{ns}/{name}"))?;
        if rec.head.is_some() || (with_clones && !rec.clones.is_empty()) {
            out.push(ListEntry {
                namespace: ns,
                name,
            });
        }
    }
    Ok(out)
}

fn pool_stat_in<P: exec::RTable>(pools: &P, pool: PoolId) -> Result<PoolStat> {
    let c = match pools.get(&codec::pool_prefix(pool)[..]).map_err(sio)? {
        Some(v) => PoolCounters::decode(v.value(), pool)?,
        None => PoolCounters::default(),
    };
    Ok(PoolStat {
        num_objects: c.objects,
        num_bytes: c.bytes,
    })
}

/// (stored bytes, objects) over all pools.
fn usage_in<P: exec::RTable>(pools: &P) -> Result<(u64, u64)> {
    let (mut bytes, mut objects) = (0u64, 0u64);
    for item in pools.iter().map_err(sio)? {
        let (k, v) = item.map_err(sio)?;
        let pool = codec::parse_pool_prefix(k.value()).unwrap_or(-1);
        let c = PoolCounters::decode(v.value(), pool)?;
        bytes += c.bytes;
        objects += c.objects;
    }
    Ok((bytes, objects))
}

fn sys_get_in<S: exec::RTable>(sys: &S, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(sys
        .get(key.as_bytes())
        .map_err(sio)?
        .map(|v| v.value().to_vec()))
}

fn sys_scan_in<S: exec::RTable>(sys: &S, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let lo = prefix.as_bytes();
    let hi = codec::prefix_end(lo);
    let iter = match &hi {
        Some(hi) => sys.range::<&[u8]>(lo..hi.as_slice()),
        None => sys.range::<&[u8]>(lo..),
    }
    .map_err(sio)?;
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item.map_err(sio)?;
        let key = String::from_utf8(k.value().to_vec())
            .map_err(|_| RadosError::io(format!("corrupted sys key under {prefix:?}")))?;
        out.push((key, v.value().to_vec()));
    }
    Ok(out)
}

impl Drop for Store {
    fn drop(&mut self) {
        lock(&self.inner.queue).shutdown = true;
        self.inner.not_empty.notify_all();
        self.inner.not_full.notify_all();
        if let Some(w) = self.writer.take() {
            // The writer finishes (commits and answers) what is queued, then exits.
            let _ = w.join();
        }
        lock(&self.inner.sync.q).shutdown = true;
        self.inner.sync.work.notify_all();
        if let Some(s) = self.syncer.take() {
            let _ = s.join();
        }
        if let Some(h) = self.housekeeper.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- the writer

/// State owned by the writer thread.
struct WriterState {
    /// On disk: batches are answered once their record is fdatasynced and
    /// redb is committed durably only at checkpoints. In memory every
    /// commit is "durable" and answers wait for it.
    durable_log: bool,
    /// Where the next record goes.
    pos: Pos,
    /// The segment `pos` is in.
    active: Arc<SegFile>,
    /// Roll to a new segment once the active one is this large.
    seg_bytes: u64,
    /// Offset of the active segment up to which the writer wrote zeros
    /// ahead of the append point (see [`WriterState::zero_ahead`]).
    zeroed: u64,
    /// Last LSN handed out (a batch's sequence number).
    lsn: u64,
    /// Whether redb holds non-durable commits (covered by the log only).
    dirty: bool,
    /// Live data bytes per segment, as the writer's transaction sees them.
    live: HashMap<u32, u64>,
    /// Size of every segment.
    sizes: std::collections::BTreeMap<u32, u64>,
    /// Log bytes and redb transactions since the last checkpoint.
    since_cp: u64,
    /// When the first non-durable commit after the last checkpoint was made.
    dirty_since: Option<Instant>,
    /// A checkpoint is wanted (segments wait for it to be deleted).
    want_cp: bool,
    /// Bytes of sealed segments left with nothing live since the last
    /// checkpoint: a segment's worth ends the transaction with a checkpoint
    /// that deletes them (a sweep of large writes kills several small
    /// segments within one transaction).
    dead_since_cp: u64,
    /// The segment being compacted and the offset of its next record.
    compact: Option<(u32, u64, Option<u64>)>,
    /// Segments compaction gave up on (unreadable records): kept.
    no_compact: HashSet<u32>,
    /// Whether client writes free whole segments by themselves (paces
    /// compaction, see [`WriterState::pick_victim`]).
    pace: Pace,
    /// Writer timings and byte counters (reported at debug level).
    stats: WriterStats,
    /// Batches left before an injected failure (tests only, see
    /// [`StoreOptions::fail_after_batches`]).
    inject_fail_after: Option<u64>,
    /// Work handed to the housekeeper thread (`None` in memory).
    chores: Option<mpsc::Sender<Chore>>,
}

impl WriterState {
    /// After a record of `rec_len` bytes: if it was small and less than
    /// [`seglog::ZERO_LOW`] is left zeroed ahead of the append point, write
    /// zeros up to [`seglog::ZERO_AHEAD`] past it (never past the segment
    /// size; from the next page, so the page the record ends in, which may
    /// be under writeback, is not written again). Small records' fdatasyncs
    /// then find written blocks (see [`SegFile::zero_range`]): on this host
    /// a 4 KiB append + fdatasync into preallocated space was ~40 us slower
    /// at the minimum than into zeroed space, and several times that under
    /// disk contention. Best effort: a failure stops zeroing for this
    /// segment (the log is correct either way).
    fn zero_ahead(&mut self, rec_len: u64) {
        if rec_len > seglog::ZERO_MAX_RECORD
            || self.zeroed >= self.pos.off + seglog::ZERO_LOW
            // Written blocks ahead already (see `seglog::SegFile::reused`).
            || self.active.reused()
        {
            return;
        }
        let from = self
            .zeroed
            .max(self.pos.off.next_multiple_of(seglog::DIRECT_ALIGN as u64));
        let to = (self.pos.off + seglog::ZERO_AHEAD).min(self.seg_bytes);
        // The invariant that makes it safe: no record lies at or past `from`.
        debug_assert!(from >= self.pos.off);
        if from >= to {
            return;
        }
        self.zeroed = match self.active.zero_range(from, to) {
            Ok(()) => to,
            Err(_) => self.seg_bytes,
        };
    }
}

/// What client writes do to the data log's garbage over a recent window
/// (a clock of client bytes written, so tests can drive it): how many live
/// bytes they killed, how many of those large writes killed, and how much
/// of the log they killed whole (sealed segments left with nothing live,
/// deleted at the next checkpoint without compaction copying anything).
///
/// Why: a sequential overwrite of an image (the bench's second 4 MiB write
/// pass, a guest rewriting a file) kills the previous sweep's segments in
/// log order, so each dies whole shortly after the sweep's front reaches
/// it, however fragmented earlier random writes left it; compaction run
/// at the usual threshold picks exactly those (the emptiest, just ahead
/// of the front) and copies bytes the sweep kills seconds later (0.45-0.9
/// byte copied per byte written, measured in sessions 9-11). Segments
/// dying whole alone do not tell a sweep in time: compaction running
/// ahead of the front empties them first, so they never die whole (a
/// simulation of the bench's order at a third of the image overwritten at
/// random showed no segment dying for the first 64 MiB a sweep wrote per
/// 256 MiB of image, compaction copying 53 of them). Writes of 1 MiB and
/// more do: they are sequential streams in practice, and a random stream
/// of them frees space about as fast at the hard bound as at the usual one
/// (the cost is space only, bounded). Under small random overwrites
/// almost nothing dies whole (a 64 MiB segment would need all its 16,384
/// blocks overwritten), and there compaction is what takes space back.
#[derive(Debug, Default)]
struct Pace {
    /// Client bytes written since the counters were last halved.
    written: u64,
    /// Live bytes client writes killed (halved every window).
    killed: u64,
    /// Of `killed`, what writes of at least [`SWEEP_WRITE_BYTES`] killed
    /// (estimated per batch from its payload).
    large: u64,
    /// Sizes of the sealed segments client writes killed whole (halved
    /// every window).
    died: u64,
    /// Client bytes written since the store opened (the clock).
    clock: u64,
    /// Per segment, the clock when client writes last killed bytes in it.
    killed_at: HashMap<u32, u64>,
    /// The last verdict of [`Pace::sweeping`] (to report changes).
    was_sweeping: bool,
}

impl Pace {
    /// Whether client writes are freeing the log by themselves: at least a
    /// segment's worth was killed by large writes, or died whole, and that
    /// is at least half of what was killed. (In a sweep that compaction
    /// leaves alone what dies whole about equals what is killed, whatever
    /// the swept segments' live share was: a segment dies with its old
    /// garbage, while the blocks random writes had moved elsewhere die as
    /// garbage in their own segments.)
    fn sweeping(&self, seg_bytes: u64) -> bool {
        let freeing = self.large.max(self.died);
        freeing >= seg_bytes && freeing * 2 >= self.killed
    }

    /// Whether client writes killed bytes of `seg` within the last window:
    /// during a sweep, a segment the front is passing through (it is then
    /// cheap to copy only because it is dying).
    fn dying(&self, seg: u32, seg_bytes: u64) -> bool {
        self.killed_at
            .get(&seg)
            .is_some_and(|&at| self.clock - at < PACE_WINDOW_SEGMENTS * seg_bytes)
    }

    /// Advance the clock by `written` client bytes.
    fn tick(&mut self, written: u64, seg_bytes: u64) {
        let window = PACE_WINDOW_SEGMENTS * seg_bytes;
        self.clock += written;
        self.written += written;
        while self.written >= window {
            self.written -= window;
            self.killed /= 2;
            self.large /= 2;
            self.died /= 2;
        }
    }
}

/// Work the writer hands to the housekeeper thread: nothing in it is
/// needed for durability, only the writer's time is saved.
enum Chore {
    /// Let detached segments go (kept as spares or deleted).
    Retire(Vec<seglog::Detached>),
    /// Start writeback of the metadata file's dirty pages (see
    /// `housekeeper_main`).
    Writeback,
}

/// The housekeeper: lets dead segments go, and starts the kernel's
/// writeback of meta.redb after each non-durable commit so the next
/// checkpoint's fsync finds few dirty pages (that fsync stalled the writer
/// for 100-500 ms under random writes, each commit of the interval having
/// left its pages dirty in the page cache). Only a hint: the checkpoint
/// still fsyncs everything itself.
fn housekeeper_main(meta: PathBuf, segs: Arc<Segments>, rx: mpsc::Receiver<Chore>) {
    let file = std::fs::File::open(&meta).ok();
    while let Ok(first) = rx.recv() {
        let mut writeback = false;
        let mut files = Vec::new();
        for c in std::iter::once(first).chain(rx.try_iter()) {
            match c {
                Chore::Retire(f) => files.extend(f),
                Chore::Writeback => writeback = true,
            }
        }
        if !files.is_empty() {
            if let Err(e) = segs.retire(files) {
                // Left behind: let go after the next open (nothing is live in them).
                eprintln!("quarry-store: letting dead data log segments go: {e}");
            }
        }
        if let (true, Some(f)) = (writeback, &file) {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on a descriptor this thread owns.
            let r =
                unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
            if r != 0 && debug_log() {
                eprintln!(
                    "quarry-store: writeback of meta.redb: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Whether `QUARRY_LOG` asks for debug output (the store's writer
/// timings); read once.
fn debug_log() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        matches!(
            std::env::var("QUARRY_LOG").as_deref(),
            Ok("debug") | Ok("trace")
        )
    })
}

/// What the writer spent its time on, and what compaction copied per byte
/// the clients wrote: printed (QUARRY_LOG=debug) at every checkpoint, and
/// a line for every transaction whose housekeeping stalled the writer.
#[derive(Default)]
struct WriterStats {
    /// Data bytes clients wrote / compaction copied since the start.
    client_bytes: u64,
    compact_bytes: u64,
    /// Compaction steps and their total and worst time.
    compact_steps: u64,
    compact_time: Duration,
    compact_max: Duration,
    /// Durable (checkpoint) and plain commits: count, total and worst time.
    cps: u64,
    cp_time: Duration,
    cp_max: Duration,
    commits: u64,
    commit_time: Duration,
    commit_max: Duration,
}

impl WriterStats {
    fn report(&mut self) {
        if !debug_log() {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "quarry-store: writer: client {} MiB, compaction copied {} MiB ({:.2} per byte written); \
             compaction {} steps {:.1} ms (max {:.1}); checkpoints {} {:.1} ms (max {:.1}); \
             commits {} {:.1} ms (max {:.1})",
            self.client_bytes >> 20,
            self.compact_bytes >> 20,
            self.compact_bytes as f64 / self.client_bytes.max(1) as f64,
            self.compact_steps,
            ms(self.compact_time),
            ms(self.compact_max),
            self.cps,
            ms(self.cp_time),
            ms(self.cp_max),
            self.commits,
            ms(self.commit_time),
            ms(self.commit_max),
        );
        self.compact_max = Duration::ZERO;
        self.cp_max = Duration::ZERO;
        self.commit_max = Duration::ZERO;
    }
}

impl WriterState {
    /// Hand `c` to the housekeeper (dropped in memory, or if it is gone).
    fn housekeeping(&self, c: Chore) {
        if let Some(tx) = &self.chores {
            let _ = tx.send(c);
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.dirty
            && (self.want_cp
                || self.dead_since_cp >= self.seg_bytes
                || self.since_cp >= CHECKPOINT_LOG_BYTES
                || self
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= CHECKPOINT_INTERVAL))
    }

    /// Apply live-byte changes per segment. `client`: client requests made
    /// them (not compaction's moves), with the batch's payload bytes in
    /// writes of at least [`SWEEP_WRITE_BYTES`] and in all; feeds [`Pace`].
    fn add_live(&mut self, delta: HashMap<u32, i64>, client: Option<(u64, u64)>) {
        let (mut written, mut killed) = (0u64, 0u64);
        for (seg, d) in delta {
            let e = self.live.entry(seg).or_default();
            let before = *e;
            *e = (*e as i64 + d).max(0) as u64;
            if before > 0 && *e == 0 && seg < self.pos.seg {
                self.dead_since_cp += self.sizes.get(&seg).copied().unwrap_or(0);
            }
            if client.is_none() {
                continue;
            }
            if d > 0 {
                written += d as u64;
            } else {
                killed += before - *e;
                self.pace.killed_at.insert(seg, self.pace.clock);
                if before > 0 && *e == 0 && seg < self.pos.seg {
                    self.pace.died += self.sizes.get(&seg).copied().unwrap_or(0);
                }
            }
        }
        let Some((large, all)) = client else {
            return;
        };
        self.pace.killed += killed;
        if large > 0 {
            debug_assert!(large <= all);
            self.pace.large += (killed as u128 * large as u128 / all.max(1) as u128) as u64;
        }
        if written > 0 {
            self.pace.tick(written, self.seg_bytes);
        }
    }

    /// Sealed segments (every one before the active segment) and sizes.
    fn sealed(&self, _segs: &Segments) -> Vec<(u32, u64)> {
        self.sizes
            .range(..self.pos.seg)
            .map(|(&id, &len)| (id, len))
            .collect()
    }

    /// The sealed segment to compact next, if the log holds enough garbage.
    fn pick_victim(&self, segs: &Segments) -> Option<u32> {
        let sealed = self.sealed(segs);
        let live_of = |id: u32| self.live.get(&id).copied().unwrap_or(0);
        // Segments with nothing live are not counted: the next checkpoint
        // deletes them without copying anything (one is due as soon as a
        // segment's worth of them exists, see `run_txn`).
        let garbage: u64 = sealed
            .iter()
            .filter(|&&(id, _)| live_of(id) > 0)
            .map(|&(id, len)| len.saturating_sub(live_of(id)))
            .sum();
        // Garbage is allowed up to half the live data (at least two
        // segments), and the emptiest segments (least to copy per byte
        // freed) go first. The allowance sets what compaction costs per
        // byte written under random overwrites: in a simulation of uniform
        // 4 KiB overwrites it copies ~1.75 bytes per byte written at a
        // quarter of the live data, ~0.74 at half, ~0.26 at all of it; at
        // half, the store's files stay under ~1.5x the live data.
        let live_total: u64 = self.live.values().sum();
        if garbage < (2 * self.seg_bytes).max(live_total / GARBAGE_DIVISOR) {
            return None;
        }
        // While clients sweep (see `Pace`), garbage may reach the live data
        // (the files stay under ~2x it) before compaction takes any
        // segment: the sweep frees the segments ahead of its front by
        // itself, and copying them only moves bytes it kills seconds
        // later. Below that bound only cheap victims are taken, and none
        // that clients are killing now (the segments the front is passing
        // through, which the sweep empties next; measured: without that,
        // compaction copied the sweep's own segments at 8-15 of 64 MiB
        // live, ~250 MiB per OSD in a 3 GiB sweep): segments pinned by
        // data the sweep does not rewrite.
        let cheap_only = garbage < live_total && self.pace.sweeping(self.seg_bytes);
        sealed
            .into_iter()
            .filter(|&(id, len)| {
                let live = live_of(id);
                live > 0
                    && live < len
                    && !self.no_compact.contains(&id)
                    && (!cheap_only
                        || (live * SWEEP_VICTIM_DIVISOR <= len
                            && !self.pace.dying(id, self.seg_bytes)))
            })
            .min_by_key(|&(id, len)| (live_of(id) as u128 * 1000 / len.max(1) as u128, id))
            .map(|(id, _)| id)
    }

    /// Bytes of sealed segments with nothing live (deleted at the next
    /// checkpoint).
    fn dead_bytes(&self, segs: &Segments) -> u64 {
        self.sealed(segs)
            .into_iter()
            .filter(|&(id, _)| self.live.get(&id).copied().unwrap_or(0) == 0)
            .map(|(_, len)| len)
            .sum()
    }

    /// Whether the writer has log housekeeping to do while idle.
    fn has_work(&self, segs: &Segments) -> bool {
        self.compact.is_some()
            || (self.dirty && (self.want_cp || self.dead_bytes(segs) >= self.seg_bytes))
            || self.pick_victim(segs).is_some()
    }
}

/// Delete sealed segments with no live data once a checkpoint covers them
/// (the caller just made redb durable at `ws.pos`, so no record in them is
/// needed for replay and no durable index entry points into them).
fn delete_dead_segments(inner: &Inner, ws: &mut WriterState) -> Result<()> {
    let mut files = Vec::new();
    for (id, _) in ws.sealed(&inner.segs) {
        if ws.live.get(&id).copied().unwrap_or(0) == 0 && ws.compact.map(|c| c.0) != Some(id) {
            files.extend(inner.segs.detach(id));
            ws.live.remove(&id);
            ws.pace.killed_at.remove(&id);
            ws.sizes.remove(&id);
            ws.no_compact.remove(&id);
        }
    }
    ws.want_cp = false;
    ws.dead_since_cp = 0;
    if !files.is_empty() {
        // Unlinking a 64 MiB file and syncing the directory took 20-80 ms
        // of the writer's time per checkpoint under load: the housekeeper
        // does it (nothing depends on it being done, see `detach`).
        ws.housekeeping(Chore::Retire(files));
    }
    Ok(())
}

/// One step of compaction: copy the live blocks of the next records of the
/// segment being compacted into the record being built (through `t`, so
/// the moves are logged and atomic like any write). A block is live if an
/// index entry still points at it: the record that wrote it names its
/// object and block indices, and the instances of that object (head and
/// clones, which take extents by reference) are its only possible users.
/// Entries sharing an extent are moved together and stay shared.
fn compact_step(t: &mut WTables<'_>, inner: &Inner, ws: &mut WriterState) -> Result<()> {
    let started = Instant::now();
    let before = ws.stats.compact_bytes;
    let r = compact_step_inner(t, inner, ws);
    // Compaction's moves, kept apart from the clients' changes (`Pace`).
    ws.add_live(t.take_live(), None);
    inner
        .compacted
        .store(ws.stats.compact_bytes, Ordering::Relaxed);
    if ws.stats.compact_bytes != before || ws.compact.is_some() {
        let d = started.elapsed();
        let st = &mut ws.stats;
        st.compact_steps += 1;
        st.compact_time += d;
        st.compact_max = st.compact_max.max(d);
        if debug_log() && d >= Duration::from_millis(2) {
            eprintln!(
                "quarry-store: writer: compaction step {:.1} ms, {} KiB copied",
                d.as_secs_f64() * 1e3,
                (st.compact_bytes - before) >> 10
            );
        }
    }
    r
}

fn compact_step_inner(t: &mut WTables<'_>, inner: &Inner, ws: &mut WriterState) -> Result<()> {
    let sweeping = ws.pace.sweeping(ws.seg_bytes);
    if sweeping != ws.pace.was_sweeping {
        ws.pace.was_sweeping = sweeping;
        if debug_log() {
            eprintln!(
                "quarry-store: writer: {} (recent client writes killed {} MiB, {} MiB of it \
                 by large writes, {} MiB of segments whole)",
                if sweeping {
                    "clients sweep: compaction takes only cheap victims below garbage = live data"
                } else {
                    "clients no longer sweep: compaction threshold half the live data"
                },
                ws.pace.killed >> 20,
                ws.pace.large >> 20,
                ws.pace.died >> 20
            );
        }
    }
    if ws.compact.is_none() {
        ws.compact = ws.pick_victim(&inner.segs).map(|id| (id, 0, None));
        if let (Some((id, _, _)), true) = (ws.compact, debug_log()) {
            // Which segments compaction copies from, and how full they
            // are, says whether it copies data about to die anyway (the
            // bench's second 4 MiB write pass: the first sweep's segments
            // just ahead of the second sweep's front).
            eprintln!(
                "quarry-store: writer: compaction victim segment {id}: {} of {} MiB live \
                 (active segment {})",
                ws.live.get(&id).copied().unwrap_or(0) >> 20,
                ws.sizes.get(&id).copied().unwrap_or(0) >> 20,
                ws.pos.seg
            );
        }
    }
    let Some((id, mut off, mut next_lsn)) = ws.compact else {
        return Ok(());
    };
    let Some(f) = inner.segs.get(id) else {
        ws.compact = None;
        return Ok(());
    };
    let len = f
        .len()
        .map_err(|e| RadosError::io(format!("data log: {e}")))?;
    let (mut copied, mut scanned) = (0u64, 0u64);
    let mut end = seglog::at_end(&f, off, len);
    // Instances of each object met in this step's records.
    let mut instances: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    while !end && copied < COMPACT_COPY_BYTES && scanned < COMPACT_SCAN_BYTES {
        // Only the header and redo are read first: the redo names the
        // extents the record wrote, the index says which of them still
        // point here, and only those bytes are read (a victim is often
        // mostly dead: reading and hashing whole records was most of
        // compaction's cost). The index is the authority: a redo that
        // parsed wrongly could only make blocks be missed, and a segment
        // with live bytes left is never deleted.
        let head = seglog::read_head(&f, off, len);
        // A record out of sequence ends the segment: the old records of a
        // reused file past a seal that a crash undid (see `seglog`).
        if let (Some(h), Some(n)) = (&head, next_lsn) {
            if h.lsn != n {
                end = true;
                break;
            }
        }
        let parsed = head.as_ref().map(|h| (h, tables::parse(&h.redo)));
        let Some((h, Ok(entries))) = parsed else {
            give_up(ws, id, off);
            return Ok(());
        };
        let data_at = off + seglog::HDR as u64;
        let data_end = data_at + h.data_len;
        // Live extents by key (two puts of a record may lead to one).
        let mut live: BTreeMap<Vec<u8>, ExtPtr> = BTreeMap::new();
        for e in entries {
            // Every extent (or trimmed piece of one) pointing into this
            // record lies inside the range of blocks of a `data` put of the
            // record, at the same block indices, in some instance of the
            // same object: the put's own, or a clone or head that took the
            // extent by reference (`exec::copy_extents`). Look those blocks
            // up in every instance and move what still points here.
            let Redo::Put(Tbl::Data, k, v) = e else {
                continue;
            };
            let Some(p) = ExtPtr::decode(v) else {
                continue;
            };
            // A put naming blocks of another record (the trimmed piece of an
            // older extent, re-logged when a write split it, or an extent
            // taken by reference) owns nothing here: skip its index lookup.
            if p.seg != id || p.off < data_at || p.off >= data_end {
                continue;
            }
            let Some(okey_len) = k.len().checked_sub(16) else {
                continue;
            };
            let Some(first) = codec::block_index(k, k.len() - 8) else {
                continue;
            };
            let okey = &k[..okey_len];
            let insts = match instances.get(okey) {
                Some(v) => v,
                None => {
                    let v = object_instances(t.table(Tbl::Data), okey)?;
                    instances.entry(okey.to_vec()).or_insert(v)
                }
            };
            let (lo, hi) = (p.off, p.off + p.bytes());
            for ikey in insts {
                let cur = extent::overlapping(t.table(Tbl::Data), ikey, first, first + p.blocks())?;
                for (s, c) in cur {
                    if c.seg != id
                        || c.off < lo
                        || c.off >= hi
                        || c.off < data_at
                        || c.off + c.bytes() > data_end
                    {
                        continue;
                    }
                    live.insert(codec::block_key(ikey, s), c);
                }
            }
        }
        // Entries naming the very same bytes (a clone and the head it was
        // taken from) are moved once and stay shared.
        let mut first_of: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        let mut aliases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        live.retain(|k, c| match first_of.entry((c.off, c.bytes())) {
            std::collections::hash_map::Entry::Occupied(o) => {
                aliases.push((k.clone(), o.get().clone()));
                false
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(k.clone());
                true
            }
        });
        let Some(moved) = read_live(&f, live) else {
            give_up(ws, id, off);
            return Ok(());
        };
        let mut moved_to: HashMap<Vec<u8>, ExtPtr> = HashMap::new();
        for (k, c, blocks, raw) in moved {
            copied += c.bytes();
            ws.stats.compact_bytes += c.bytes();
            let to = t.put_extent_blocks(&k, &blocks, &raw, c.last, c.crcs)?;
            if !aliases.is_empty() {
                moved_to.insert(k, to);
            }
        }
        for (k, first) in aliases {
            let to = moved_to
                .get(&first)
                .ok_or_else(|| RadosError::io("local store: compaction lost a shared extent"))?;
            t.put(Tbl::Data, &k, &to.encode())?;
        }
        scanned += h.len;
        off += h.len;
        next_lsn = Some(h.lsn + 1);
        end = seglog::at_end(&f, off, len);
    }
    if end {
        ws.compact = None;
        ws.want_cp = true;
        // Done with it: deleted at the checkpoint if nothing is live (as
        // expected), else never picked again.
        ws.no_compact.insert(id);
    } else {
        ws.compact = Some((id, off, next_lsn));
    }
    Ok(())
}

/// The instance keys (head and clones) of object `okey` that hold data:
/// one index seek per instance, skipping over each one's blocks.
fn object_instances<D: exec::RTable>(data: &D, okey: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let end = codec::prefix_end(okey);
    let mut from = okey.to_vec();
    loop {
        let next = {
            let mut r = match &end {
                Some(e) => data.range::<&[u8]>(from.as_slice()..e.as_slice()),
                None => data.range::<&[u8]>(from.as_slice()..),
            }
            .map_err(exec::sio)?;
            match r.next() {
                Some(item) => Some(item.map_err(exec::sio)?.0.value().to_vec()),
                None => None,
            }
        };
        let Some(k) = next else {
            return Ok(out);
        };
        let inst = k
            .get(okey.len()..okey.len() + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .filter(|_| k.len() == okey.len() + 16)
            .ok_or_else(extent::corrupt_entry)?;
        out.push(codec::inst_key(okey, inst));
        let Some(n) = inst.checked_add(1) else {
            return Ok(out);
        };
        from = codec::inst_key(okey, n);
    }
}

/// Compaction cannot read segment `id` at `off` (no record there, or a
/// live block that fails its checksum): the segment stays (reads of its
/// blocks fail with EIO as they would) and is not picked again.
fn give_up(ws: &mut WriterState, id: u32, off: u64) {
    eprintln!("quarry-store: data log segment {id}: unreadable record at {off}; not compacted");
    ws.no_compact.insert(id);
    ws.compact = None;
}

/// A live extent read back for compaction: its key, pointer, blocks and
/// each block's plain crc32c.
type Moved = (Vec<u8>, ExtPtr, Vec<Bytes>, Vec<u32>);

/// Read the bytes of `live` extents (one buffer, one pread per run of
/// extents lying back to back) and check every block against the
/// checksum the index holds for it. `None` if a read fails or a block does
/// not match (then nothing is moved: the old data stays where it is).
fn read_live(f: &SegFile, live: BTreeMap<Vec<u8>, ExtPtr>) -> Option<Vec<Moved>> {
    let mut live: Vec<(Vec<u8>, ExtPtr)> = live.into_iter().collect();
    live.sort_by_key(|(_, c)| c.off);
    let total: u64 = live.iter().map(|(_, c)| c.bytes()).sum();
    let mut buf = vec![0u8; usize::try_from(total).ok()?];
    // Offsets of each extent in `buf`, and the reads: (file offset, start
    // in buf, length).
    let mut at = Vec::with_capacity(live.len());
    let mut runs: Vec<(u64, usize, usize)> = Vec::new();
    let mut pos = 0usize;
    for (_, c) in &live {
        let n = c.bytes() as usize;
        match runs.last_mut() {
            Some((fo, _, rl)) if *fo + *rl as u64 == c.off => *rl += n,
            _ => runs.push((c.off, pos, n)),
        }
        at.push(pos);
        pos += n;
    }
    for (fo, s, n) in runs {
        f.read_exact_at(&mut buf[s..s + n], fo).ok()?;
    }
    let buf = Bytes::from(buf);
    let mut out = Vec::with_capacity(live.len());
    for ((k, c), s) in live.into_iter().zip(at) {
        let first = codec::block_index(&k, k.len().saturating_sub(8))?;
        let mut blocks = Vec::with_capacity(c.crcs.len());
        let mut raw = Vec::with_capacity(c.crcs.len());
        let mut o = s;
        for (i, want) in c.crcs.iter().enumerate() {
            let n = c.block_len(i as u64);
            let b = buf.slice(o..o + n);
            let r = crc32c::crc32c(&b);
            let got = if n as u64 == codec::BLOCK_SIZE {
                codec::block_crc_from_raw(first + i as u64, r)
            } else {
                codec::block_crc(first + i as u64, &b)
            };
            if got != *want {
                return None;
            }
            blocks.push(b);
            raw.push(r);
            o += n;
        }
        out.push((k, c, blocks, raw));
    }
    Some(out)
}

/// Take the next batch, waiting until `deadline` (forever if `None`).
/// `None` when the deadline passed or the store shuts down with nothing queued.
fn take_batch(inner: &Inner, deadline: Option<Instant>) -> Option<Vec<Job>> {
    let mut q = lock(&inner.queue);
    loop {
        if !q.jobs.is_empty() {
            break;
        }
        if q.shutdown {
            return None;
        }
        q = match deadline {
            None => inner.not_empty.wait(q).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                inner
                    .not_empty
                    .wait_timeout(q, d - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
    // Sized once: growing it job by job reallocated it several times per
    // batch under load.
    let mut batch = Vec::with_capacity(q.jobs.len().min(MAX_BATCH));
    let mut bytes = 0usize;
    while let Some(job) = q.jobs.front() {
        let b = job.payload_bytes();
        if !batch.is_empty() && (batch.len() >= MAX_BATCH || bytes + b > MAX_BATCH_BYTES) {
            break;
        }
        bytes += b;
        if let Some(job) = q.jobs.pop_front() {
            batch.push(job);
        }
    }
    drop(q);
    inner.not_full.notify_all();
    Some(batch)
}

/// The error for a job submitted to a stopped writer (naming the failure
/// that stopped it, if one did).
fn not_running(q: &Queue) -> RadosError {
    match &q.failure {
        Some(f) => RadosError::io(format!("local store writer stopped after a failure: {f}")),
        None => RadosError::io("local store writer is not running"),
    }
}

fn writer_main(inner: Arc<Inner>, mut ws: WriterState) {
    loop {
        // With log housekeeping to do, don't sleep for ever: run it when idle.
        let idle_deadline = ws
            .has_work(&inner.segs)
            .then(|| Instant::now() + Duration::from_millis(20));
        let first = match take_batch(&inner, idle_deadline) {
            Some(b) => b,
            None if lock(&inner.queue).shutdown => break,
            None if idle_deadline.is_some() => Vec::new(),
            None => continue,
        };
        // A panic or a storage failure leaves redb behind the log (or in an
        // unknown state): stop, failing everything; reopening recovers.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_txn(&inner, &mut ws, first)
        }));
        let err = match ok {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => RadosError::io("local store writer panicked"),
        };
        let mut q = lock(&inner.queue);
        q.dead = true;
        q.failure = Some(err.to_string());
        for job in q.jobs.drain(..) {
            job.reply.send(fail(
                &job.kind,
                RadosError::io(format!("local store stopped after a failure: {err}")),
            ));
        }
        drop(q);
        inner.not_full.notify_all();
        return;
    }
    // Clean shutdown: make redb durable on its own so the log is not needed.
    if ws.dirty {
        let _ = commit_checkpoint(&inner, &mut ws);
    }
}

fn fail(kind: &JobKind, e: RadosError) -> Answer {
    match kind {
        JobKind::Op(..) => Answer::Op(Err(e)),
        JobKind::Trim(..) => Answer::Trim(Err(e)),
        JobKind::RemovePool(_) | JobKind::Sys(_) | JobKind::Import(..) => Answer::Unit(Err(e)),
        JobKind::Export(_) => Answer::Bytes(Err(e)),
        JobKind::List(..) => Answer::List(Err(e)),
        JobKind::PoolStat(_) => Answer::PoolStat(Err(e)),
        JobKind::Usage => Answer::Usage(Err(e)),
        JobKind::SysGet(_) => Answer::Bytes(Err(e)),
        JobKind::SysScan(_) => Answer::Pairs(Err(e)),
    }
}

fn checkpoint_value(lsn: u64, pos: Pos) -> Vec<u8> {
    let mut v = lsn.to_le_bytes().to_vec();
    v.extend_from_slice(&pos.encode());
    v
}

/// An empty durable commit recording the current position as the checkpoint.
fn commit_checkpoint(inner: &Inner, ws: &mut WriterState) -> Result<()> {
    let mut txn = inner.db.begin_write().map_err(sio)?;
    {
        let mut t = WTables::open(&txn, false, inner.segs.clone())?;
        t.put(Tbl::Sys, CHECKPOINT_KEY, &checkpoint_value(ws.lsn, ws.pos))?;
    }
    txn.set_durability(Durability::Immediate);
    txn.commit().map_err(sio)?;
    committed(inner);
    checkpointed(inner, ws)
}

/// After every redb commit: readers' shared view is out of date. Dropped
/// here, not at the next read, so an old snapshot never keeps pages from
/// being reused while only writes run.
fn committed(inner: &Inner) {
    inner.commits.fetch_add(1, Ordering::SeqCst);
    let old = lock(&inner.view).take();
    drop(old);
}

/// After a durable commit at `ws.pos`.
fn checkpointed(inner: &Inner, ws: &mut WriterState) -> Result<()> {
    ws.dirty = false;
    ws.since_cp = 0;
    ws.dirty_since = None;
    delete_dead_segments(inner, ws)
}

/// Answers whose senders wait for the transaction's commit.
type Deferred = Vec<(ReplyTo, Answer)>;

/// One redb transaction: apply batches until the commit interval ends (each
/// made durable by one log append and answered at once), then commit. Any
/// error returned is fatal for the writer.
fn run_txn(inner: &Inner, ws: &mut WriterState, first: Vec<Job>) -> Result<()> {
    let mut txn = inner.db.begin_write().map_err(sio)?;
    let mut deferred: Deferred = Vec::new();
    fill_txn(inner, ws, &txn, first, &mut deferred)?;
    // Nothing becomes visible to readers before its log record is durable.
    inner.sync.drain()?;
    ws.dirty_since.get_or_insert_with(Instant::now);
    if ws.dead_bytes(&inner.segs) >= ws.seg_bytes {
        // A segment's worth of log is garbage: take it back now.
        ws.want_cp = true;
    }
    let checkpoint = ws.checkpoint_due() || !ws.durable_log;
    if checkpoint {
        let mut t = WTables::open(&txn, false, inner.segs.clone())?;
        t.put(Tbl::Sys, CHECKPOINT_KEY, &checkpoint_value(ws.lsn, ws.pos))?;
    }
    txn.set_durability(if checkpoint {
        Durability::Immediate
    } else {
        Durability::None
    });
    let started = Instant::now();
    txn.commit().map_err(sio)?;
    let d = started.elapsed();
    let st = &mut ws.stats;
    if checkpoint {
        st.cps += 1;
        st.cp_time += d;
        st.cp_max = st.cp_max.max(d);
    } else {
        st.commits += 1;
        st.commit_time += d;
        st.commit_max = st.commit_max.max(d);
    }
    if debug_log() && d >= Duration::from_millis(2) {
        eprintln!(
            "quarry-store: writer: {} took {:.1} ms",
            if checkpoint {
                "checkpoint commit"
            } else {
                "commit"
            },
            d.as_secs_f64() * 1e3
        );
    }
    committed(inner);
    if !checkpoint {
        ws.housekeeping(Chore::Writeback);
    }
    // Everything is visible to new read transactions now.
    *lock(&inner.pending) = Pending::default();
    for (r, a) in deferred {
        r.send(a);
    }
    if checkpoint {
        let started = Instant::now();
        checkpointed(inner, ws)?;
        let d = started.elapsed();
        if debug_log() && d >= Duration::from_millis(2) {
            eprintln!(
                "quarry-store: writer: segment deletion took {:.1} ms",
                d.as_secs_f64() * 1e3
            );
        }
        ws.stats.report();
    }
    Ok(())
}

/// Apply batches into `txn`, each as one data-log record written by this
/// thread and made durable (fdatasync), published and answered by the
/// syncer (in memory: answered after the commit, through `deferred`).
fn fill_txn(
    inner: &Inner,
    ws: &mut WriterState,
    txn: &redb::WriteTransaction,
    first: Vec<Job>,
    deferred: &mut Deferred,
) -> Result<()> {
    let opened = Instant::now();
    let mut deadline = opened + COMMIT_INTERVAL_WRITES_ONLY;
    let mut t = WTables::open(txn, true, inner.segs.clone())?;
    let lio = |e: std::io::Error| RadosError::io(format!("data log: {e}"));
    let mut batch = first;
    for n in 1.. {
        t.start_record(ws.pos);
        if n == 1 {
            compact_step(&mut t, inner, ws)?;
        }
        // The batch's payload, and how much of it is in large writes (`Pace`).
        let sweep_share = batch.iter().fold((0u64, 0u64), |(large, all), j| {
            let b = j.payload_bytes() as u64;
            let large = large + if b >= SWEEP_WRITE_BYTES { b } else { 0 };
            (large, all + b)
        });
        ws.stats.client_bytes += sweep_share.1;
        if let Some(n) = ws.inject_fail_after.as_mut() {
            if *n == 0 {
                return Err(RadosError::new(
                    quarry_common::Errno::ENOSPC,
                    "data log: No space left on device (injected)",
                ));
            }
            *n -= 1;
        }
        if batch.iter().any(|j| j.kind.is_routed_read()) {
            deadline = deadline.min(opened + COMMIT_INTERVAL);
        }
        let (answers, touched) = apply_batch(&mut t, &batch)?;
        let rest = batch.split_off(answers.len());
        if !rest.is_empty() {
            // The record is full: they go first in the next one, in order.
            let mut q = lock(&inner.queue);
            for j in rest.into_iter().rev() {
                q.jobs.push_front(j);
            }
        }
        let replies = batch.into_iter().map(|j| j.reply).zip(answers);
        let rec = match t.finish_record(ws.lsn + 1) {
            Some((pos, buf)) => {
                if buf.len() as u64 > seglog::MAX_RECORD {
                    return Err(RadosError::io(format!(
                        "a batch's data log record of {} bytes exceeds {}",
                        buf.len(),
                        seglog::MAX_RECORD
                    )));
                }
                ws.lsn += 1;
                ws.dirty = true;
                buf.write_at(&ws.active, pos.off).map_err(lio)?;
                ws.pos.off += buf.len() as u64;
                ws.since_cp += buf.len() as u64;
                ws.sizes.insert(ws.pos.seg, ws.pos.off);
                let written = (ws.active.clone(), buf.len());
                if ws.pos.off >= ws.seg_bytes {
                    let next = ws.pos.seg + 1;
                    ws.active.seal_at(ws.pos.off).map_err(lio)?;
                    ws.active = inner.segs.create(next, ws.seg_bytes).map_err(lio)?;
                    ws.pos = Pos { seg: next, off: 0 };
                    ws.zeroed = 0;
                    ws.sizes.insert(next, 0);
                }
                Some(written)
            }
            None => None,
        };
        ws.add_live(t.take_live(), Some(sweep_share));
        if !ws.durable_log {
            deferred.extend(replies);
            return Ok(());
        }
        // Made durable, published and answered by the syncer, in order,
        // while this thread goes on with the next batch; by this thread
        // when no next batch is waiting (nothing to overlap the fdatasync
        // with, and the hand-off would cost a wake-up).
        let rec_len = rec.as_ref().map(|r| r.1 as u64);
        let idle = rec.as_ref().is_none_or(|r| r.1 < INLINE_SYNC_MAX)
            && lock(&inner.queue).jobs.is_empty();
        inner.sync.push(
            inner,
            Synced {
                rec,
                touched,
                replies: replies.collect(),
            },
            idle,
        )?;
        // After the hand-off (or the inline fdatasync and answers): the
        // zeros are written while no answer waits for them.
        if let Some(len) = rec_len {
            ws.zero_ahead(len);
        }
        if n >= MAX_TXN_BATCHES || Instant::now() >= deadline || ws.checkpoint_due() {
            break;
        }
        match take_batch(inner, Some(deadline)) {
            Some(b) => batch = b,
            None => break,
        }
    }
    Ok(())
}

/// Apply one batch to the open tables: the answers, and what changed.
/// Errors are storage failures (fatal); requests' own failures are answers.
/// Stops once the record holds [`RECORD_SOFT_MAX`] bytes: the answers then
/// cover only the jobs applied, a prefix of `batch`.
fn apply_batch(t: &mut WTables<'_>, batch: &[Job]) -> Result<(Vec<Answer>, Pending)> {
    let mut answers = Vec::with_capacity(batch.len());
    let mut touched = Pending::default();
    let mut counters = Counters(HashMap::new());
    for job in batch {
        let a = match &job.kind {
            JobKind::Op(req, l) => {
                t.set_direct(l.uncached);
                let r = apply_op(t, &mut counters, req, l.version, l.mtime_ns);
                t.set_direct(false);
                let r = r?;
                if r.as_ref().is_ok_and(|_| req.is_write()) {
                    let o = &req.oid;
                    touched
                        .objects
                        .insert(codec::obj_key(o.pool, &o.namespace, &o.name));
                    touched.pools.insert(o.pool);
                }
                match (&r, &l.sys_failed) {
                    (Ok(_), _) => put_sys(t, &mut touched, &l.sys)?,
                    (Err(_), Some(kv)) => put_sys(t, &mut touched, kv)?,
                    (Err(_), None) => {}
                }
                Answer::Op(r)
            }
            JobKind::Export(oid) => {
                let okey = codec::obj_key(oid.pool, &oid.namespace, &oid.name);
                Answer::Bytes(export::export(
                    t.table(Tbl::Meta),
                    t.table(Tbl::Data),
                    &*t,
                    t.table(Tbl::Omap),
                    t.table(Tbl::Snapped),
                    &okey,
                ))
            }
            JobKind::Import(oid, state) => {
                let okey = codec::obj_key(oid.pool, &oid.namespace, &oid.name);
                let r = import(t, &mut counters, oid, &okey, state.as_deref())?;
                if r.is_ok() {
                    touched.objects.insert(okey);
                    touched.pools.insert(oid.pool);
                }
                Answer::Unit(r)
            }
            JobKind::Trim(pool, snaps) => {
                touched.pools.insert(*pool);
                touched.bulk_pools.insert(*pool);
                Answer::Trim(trim(t, &mut counters, *pool, snaps)?)
            }
            JobKind::RemovePool(pool) => {
                touched.pools.insert(*pool);
                touched.bulk_pools.insert(*pool);
                remove_pool(t, *pool)?;
                counters.0.remove(pool);
                t.del(Tbl::Pools, &codec::pool_prefix(*pool))?;
                Answer::Unit(Ok(()))
            }
            JobKind::Sys(kv) => {
                put_sys(t, &mut touched, kv)?;
                Answer::Unit(Ok(()))
            }
            JobKind::List(pool, ns, with_clones) => Answer::List(list_in(
                t.table(Tbl::Meta),
                *pool,
                ns.as_deref(),
                *with_clones,
            )),
            JobKind::PoolStat(pool) => {
                // Counters of this batch are written at its end: flush first.
                counters.write(t)?;
                Answer::PoolStat(pool_stat_in(t.table(Tbl::Pools), *pool))
            }
            JobKind::Usage => {
                counters.write(t)?;
                Answer::Usage(usage_in(t.table(Tbl::Pools)))
            }
            JobKind::SysGet(key) => Answer::Bytes(sys_get_in(t.table(Tbl::Sys), key)),
            JobKind::SysScan(prefix) => Answer::Pairs(sys_scan_in(t.table(Tbl::Sys), prefix)),
        };
        answers.push(a);
        if t.record_len() >= RECORD_SOFT_MAX {
            break;
        }
    }
    counters.write(t)?;
    Ok((answers, touched))
}

fn put_sys(t: &mut WTables<'_>, touched: &mut Pending, kv: &SysUpdates) -> Result<()> {
    for (k, v) in kv {
        touched.sys.insert(k.clone());
        match v {
            Some(v) => t.put(Tbl::Sys, k.as_bytes(), v)?,
            None => t.del(Tbl::Sys, k.as_bytes())?,
        };
    }
    Ok(())
}

/// Per-batch cache of pool counters, written back at the end of the batch.
struct Counters(HashMap<PoolId, (PoolCounters, bool)>);

impl Counters {
    fn get(&mut self, t: &WTables<'_>, pool: PoolId) -> Result<&mut (PoolCounters, bool)> {
        use std::collections::hash_map::Entry;
        match self.0.entry(pool) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let key = codec::pool_prefix(pool);
                let c = match t.table(Tbl::Pools).get(&key[..]).map_err(sio)? {
                    Some(v) => PoolCounters::decode(v.value(), pool)?,
                    None => PoolCounters::default(),
                };
                Ok(e.insert((c, false)))
            }
        }
    }

    fn write(&mut self, t: &mut WTables<'_>) -> Result<()> {
        for (pool, (c, dirty)) in self.0.iter_mut() {
            if *dirty {
                t.put(Tbl::Pools, &codec::pool_prefix(*pool), &c.encode())?;
                *dirty = false;
            }
        }
        Ok(())
    }
}

/// Stage then flush one request. The outer error is a storage failure
/// (aborts the batch); the inner one is the request's own failure.
fn apply_op(
    t: &mut WTables<'_>,
    counters: &mut Counters,
    req: &OpRequest,
    version: Option<u64>,
    mtime_ns: Option<u64>,
) -> Result<Result<OpReply>> {
    let pool = req.oid.pool;
    let last_version = match counters.get(t, pool) {
        Ok(c) => c.0.last_version,
        Err(e) => return Ok(Err(e)),
    };
    // `stage` gives a changed object `last_version + 1`.
    let last_version = version.map_or(last_version, |v| v.saturating_sub(1));
    let staged = match exec::stage(
        t.table(Tbl::Meta),
        t.table(Tbl::Data),
        &*t,
        t.table(Tbl::Omap),
        req,
        last_version,
        mtime_ns,
    ) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(plan) = staged.plan {
        let d = exec::flush(t, plan)?;
        let (c, dirty) = counters.get(t, pool)?;
        // Never backwards: forced versions may interleave with local ones.
        c.last_version = c.last_version.max(staged.reply.version);
        c.objects = c.objects.saturating_add_signed(d.objects);
        c.bytes = c.bytes.saturating_add_signed(d.bytes);
        *dirty = true;
    }
    Ok(Ok(staged.reply))
}

/// Replace one object's state with an export. The outer error is a
/// storage failure; the inner one a refused export (nothing changed).
fn import(
    t: &mut WTables<'_>,
    counters: &mut Counters,
    oid: &ObjectId,
    okey: &[u8],
    state: Option<&[u8]>,
) -> Result<Result<()>> {
    let what = exec::Name(oid);
    let parsed = match state.map(|s| export::parse(s, &what)).transpose() {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let old = match export::wipe(t, okey, &what) {
        Ok(o) => o,
        // A corrupt local record: the import is what repairs it, so wipe
        // its entries without accounting for them.
        Err(e) if e.errno == quarry_common::Errno::EIO => {
            let hi = codec::prefix_end(okey);
            for which in [Tbl::Meta, Tbl::Data, Tbl::Omap, Tbl::Snapped] {
                t.del_range(which, okey, hi.as_deref())?;
            }
            None
        }
        Err(e) => return Err(e),
    };
    let (old_n, old_b) = old.as_ref().map_or((0, 0), export::weight);
    let (new_n, new_b, new_v) = match &parsed {
        Some(p) => {
            export::install(t, okey, p)?;
            let (n, b) = export::weight(&p.rec);
            (n, b, export::max_version(&p.rec))
        }
        None => (0, 0, 0),
    };
    let (c, dirty) = counters.get(t, oid.pool)?;
    c.objects = c.objects.saturating_sub(old_n).saturating_add(new_n);
    c.bytes = c.bytes.saturating_sub(old_b).saturating_add(new_b);
    c.last_version = c.last_version.max(new_v);
    *dirty = true;
    Ok(Ok(()))
}

fn trim(
    t: &mut WTables<'_>,
    counters: &mut Counters,
    pool: PoolId,
    snaps: &[SnapId],
) -> Result<Result<u64>> {
    let removed: BTreeSet<SnapId> = snaps.iter().copied().collect();
    let prefix = codec::pool_prefix(pool);
    let hi = codec::prefix_end(&prefix);
    let keys: Vec<Vec<u8>> = {
        let snapped = t.table(Tbl::Snapped);
        let iter = match &hi {
            Some(hi) => snapped.range::<&[u8]>(prefix.as_slice()..hi.as_slice()),
            None => snapped.range::<&[u8]>(prefix.as_slice()..),
        }
        .map_err(sio)?;
        let mut keys = Vec::new();
        for item in iter {
            keys.push(item.map_err(sio)?.0.value().to_vec());
        }
        keys
    };
    let (mut freed, mut dropped) = (0u64, 0u64);
    for okey in keys {
        let what = codec::parse_obj_key(&okey)
            .map(|(ns, n)| format!("{pool}/{ns}/{n}"))
            .unwrap_or_else(|| format!("{pool}/<bad key>"));
        let rec = t
            .table(Tbl::Meta)
            .get(okey.as_slice())
            .map_err(sio)?
            .map(|v| ObjRecord::decode(v.value(), &what));
        let mut rec = match rec {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Ok(Err(e)),
            None => {
                // Stale index entry: nothing to trim.
                t.del(Tbl::Snapped, &okey)?;
                continue;
            }
        };
        if !rec
            .clones
            .iter()
            .any(|c| c.snaps.iter().any(|s| removed.contains(s)))
        {
            continue;
        }
        let (f, d) = exec::trim_object(t, &okey, &mut rec, &removed)?;
        freed += f;
        dropped += d;
    }
    if freed > 0 || dropped > 0 {
        let (c, dirty) = counters.get(t, pool)?;
        c.bytes = c.bytes.saturating_sub(freed);
        c.objects = c.objects.saturating_sub(dropped);
        *dirty = true;
    }
    Ok(Ok(freed))
}

fn remove_pool(t: &mut WTables<'_>, pool: PoolId) -> Result<()> {
    let lo = codec::pool_prefix(pool);
    let hi = codec::prefix_end(&lo);
    for which in [Tbl::Meta, Tbl::Data, Tbl::Omap, Tbl::Snapped] {
        t.del_range(which, &lo, hi.as_deref())?;
    }
    Ok(())
}
