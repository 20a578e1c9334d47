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
//! Architecture invariant: exactly one thread (the writer) opens write
//! transactions; everything that mutates goes through its bounded queue, so
//! requests are serialized and many are committed with one fdatasync (of
//! the write-ahead log, see `wal`; or of redb itself at checkpoints). The
//! log is written by a second thread (the syncer) so that applying a batch
//! overlaps the previous batch's fdatasync; nothing a batch changed is
//! visible to readers or answered before its log record is durable.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quarry_rados::{
    ListEntry, ObjectId, OpReply, OpRequest, PoolId, PoolStat, RadosError, Result, SnapId,
};
use redb::{Database, Durability, ReadableTable};

use crate::codec::{self, ObjRecord, PoolCounters};
use crate::exec::{self, sio};
use crate::export;
use crate::tables::{self, Tbl, WTables};
use crate::wal::{self, Records, Wal};

/// `sys` key of the last LSN whose effects redb holds durably.
const CHECKPOINT_KEY: &[u8] = b"wal.checkpoint";

/// Pending requests the writer queue holds before submitters wait.
pub const QUEUE_CAPACITY: usize = 256;
/// Most requests made durable by one log append (one fdatasync).
pub const MAX_BATCH: usize = 128;
/// Most payload bytes in one batch (bounds its memory).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// How long one redb transaction stays open collecting batches. redb's
/// commit costs as much CPU as the writes it commits (tree finalization,
/// page checksums, freed-page bookkeeping, a pwrite per dirty page):
/// amortizing it over many batches is what makes a small durable write
/// cheap. 5 ms left the commit at ~10% of OSD CPU in a 4 KiB random-write
/// profile; 50 ms took cluster_bench's OSD CPU per replicated write from
/// ~1000 to ~700 us at QD1 (with buffered frame reads).
const COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// Most batches in one redb transaction.
const MAX_TXN_BATCHES: usize = 512;
/// Batches handed to the log syncer before the writer waits.
const SYNC_QUEUE: usize = 64;
/// Log bytes handed to the log syncer before the writer waits.
const SYNC_QUEUE_BYTES: usize = 64 << 20;
/// redb page cache size.
const CACHE_BYTES: usize = 64 << 20;

/// Space accounting of the whole store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Bytes held in data blocks (sparse), all pools.
    pub stored_bytes: u64,
    /// Objects (heads and clones), all pools.
    pub objects: u64,
    /// Size of the database file on disk (0 in memory).
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
    List(PoolId, Option<String>),
    PoolStat(PoolId),
    Usage,
    SysGet(String),
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
    db: Database,
    path: Option<PathBuf>,
    queue: Mutex<Queue>,
    not_empty: Condvar,
    not_full: Condvar,
    pending: Mutex<Pending>,
    sync: Syncer,
}

/// A batch the writer applied, on its way through the log syncer: its log
/// record (none if it changed nothing), what it changed, its answers.
struct Synced {
    rec: Option<(u64, Vec<u8>)>,
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

/// The hand-off between the writer thread (applies batches to redb) and
/// the syncer thread (writes their log records, one fdatasync per group,
/// then publishes and answers them in order). The writer applies the next
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
    fn push(&self, j: Synced) -> Result<()> {
        let mut q = lock(&self.q);
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
        q.bytes += j.rec.as_ref().map_or(0, |r| r.1.len());
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
    }
}

fn syncer_main(inner: Arc<Inner>, file: Arc<std::fs::File>) {
    let sync = &inner.sync;
    loop {
        let mut jobs: Vec<Synced> = {
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
        let recs: Vec<(u64, Vec<u8>)> = jobs.iter_mut().filter_map(|j| j.rec.take()).collect();
        let prior = lock(&sync.q).failed.clone();
        let r = match prior {
            Some(e) => Err(e),
            None => std::panic::catch_unwind(|| wal::write_durable(&file, &recs))
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
}

/// The local durable object store (see the module docs for the layout).
pub struct Store {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
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

impl Store {
    /// Open (or create) the store in `dir` (files `dir/store.redb` and the
    /// write-ahead log `dir/store.wal`).
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RadosError::io(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("store.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| RadosError::io(format!("open {}: {e}", path.display())))?;
        let wal_path = dir.join("store.wal");
        let (wal, records) = Wal::open(&wal_path)
            .map_err(|e| RadosError::io(format!("open {}: {e}", wal_path.display())))?;
        Self::start(db, Some(path), Some((wal, records)))
    }

    /// A store in memory (redb's in-memory backend; same code path, no log).
    pub fn open_memory() -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(sio)?;
        Self::start(db, None, None)
    }

    fn start(db: Database, path: Option<PathBuf>, wal: Option<(Wal, Records)>) -> Result<Store> {
        // Create every table up front so readers never see a missing table,
        // and replay the log's records past the last checkpoint.
        let mut txn = db.begin_write().map_err(sio)?;
        let mut lsn;
        {
            let mut t = WTables::open(&txn, false)?;
            let cp = match t.table(Tbl::Sys).get(CHECKPOINT_KEY).map_err(sio)? {
                Some(v) => u64::from_le_bytes(
                    v.value()
                        .try_into()
                        .map_err(|_| RadosError::io("corrupted WAL checkpoint record"))?,
                ),
                None => 0,
            };
            lsn = cp;
            if let Some((_, records)) = &wal {
                for (rlsn, body) in records.iter().filter(|(l, _)| *l > cp) {
                    if *rlsn != lsn + 1 {
                        return Err(RadosError::io(format!(
                            "write-ahead log gap: checkpoint {cp}, next record {rlsn}"
                        )));
                    }
                    tables::replay(&mut t, body)?;
                    lsn = *rlsn;
                }
            }
            t.put(Tbl::Sys, CHECKPOINT_KEY, &lsn.to_le_bytes())?;
        }
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(sio)?;
        let mut wal = wal.map(|(w, _)| w);
        if let Some(w) = wal.as_mut() {
            w.reset();
        }
        let ws = WriterState {
            wal,
            lsn,
            dirty: false,
        };
        let inner = Arc::new(Inner {
            db,
            path,
            queue: Mutex::new(Queue::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            pending: Mutex::new(Pending::default()),
            sync: Syncer::default(),
        });
        let syncer = match ws.wal.as_ref() {
            Some(w) => {
                let file = w.file();
                let i = inner.clone();
                Some(
                    std::thread::Builder::new()
                        .name("quarry-store-sync".into())
                        .spawn(move || syncer_main(i, file))
                        .map_err(|e| RadosError::io(format!("spawn store log syncer: {e}")))?,
                )
            }
            None => None,
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
                return Err(RadosError::io("local store writer is not running"));
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
                return Err(RadosError::io("local store writer is not running"));
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
                return Ok(Err(RadosError::io("local store writer is not running")));
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
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
        let data = txn.open_table(Tbl::Data.def()).map_err(sio)?;
        let omap = txn.open_table(Tbl::Omap.def()).map_err(sio)?;
        let snapped = txn.open_table(Tbl::Snapped.def()).map_err(sio)?;
        export::export(&meta, &data, &omap, &snapped, &okey)
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
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
        let data = txn.open_table(Tbl::Data.def()).map_err(sio)?;
        let omap = txn.open_table(Tbl::Omap.def()).map_err(sio)?;
        Ok(exec::stage(&meta, &data, &omap, req, 0)?.reply)
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
        if self.pool_pending(Some(pool)) {
            return match self.submit_blocking(JobKind::List(pool, namespace.map(str::to_string)))? {
                Answer::List(r) => r,
                _ => Err(mismatched()),
            };
        }
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
        list_in(&meta, pool, namespace)
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
        Ok(u)
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

    /// Durably and atomically set (`Some`) or delete (`None`) `sys` values.
    pub fn sys_put(&self, kv: SysUpdates) -> Result<()> {
        match self.submit_blocking(JobKind::Sys(kv))? {
            Answer::Unit(r) => r,
            _ => Err(mismatched()),
        }
    }

    /// The database file, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }
}

// ---------------------------------------------------------------- reads on any view

fn list_in<M: exec::RTable>(
    meta: &M,
    pool: PoolId,
    namespace: Option<&str>,
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
        if rec.head.is_some() {
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
    }
}

// ---------------------------------------------------------------- the writer

/// State owned by the writer thread.
struct WriterState {
    /// The write-ahead log (`None` in memory: every commit is durable).
    wal: Option<Wal>,
    /// Last LSN handed out (a batch's sequence number).
    lsn: u64,
    /// Whether redb holds non-durable commits (covered by the log only).
    dirty: bool,
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
    let mut batch = Vec::new();
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

fn writer_main(inner: Arc<Inner>, mut ws: WriterState) {
    while let Some(first) = take_batch(&inner, None) {
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
        let _ = commit_checkpoint(&inner.db, &mut ws);
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
    }
}

/// An empty durable commit recording the current LSN as the checkpoint.
fn commit_checkpoint(db: &Database, ws: &mut WriterState) -> Result<()> {
    let mut txn = db.begin_write().map_err(sio)?;
    {
        let mut t = WTables::open(&txn, false)?;
        t.put(Tbl::Sys, CHECKPOINT_KEY, &ws.lsn.to_le_bytes())?;
    }
    txn.set_durability(Durability::Immediate);
    txn.commit().map_err(sio)?;
    ws.dirty = false;
    if let Some(w) = ws.wal.as_mut() {
        w.reset();
    }
    Ok(())
}

/// Answers whose senders wait for the transaction's commit.
type Deferred = Vec<(ReplyTo, Answer)>;

/// One redb transaction: apply batches until the commit interval ends (each
/// made durable by one log append and answered at once), then commit. Any
/// error returned is fatal for the writer.
fn run_txn(inner: &Inner, ws: &mut WriterState, first: Vec<Job>) -> Result<()> {
    let mut txn = inner.db.begin_write().map_err(sio)?;
    let mut deferred: Deferred = Vec::new();
    let checkpoint = fill_txn(inner, ws, &txn, first, &mut deferred)?;
    // Nothing becomes visible to readers before its log record is durable.
    inner.sync.drain()?;
    let durable = checkpoint || ws.wal.is_none();
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    txn.commit().map_err(sio)?;
    if checkpoint {
        ws.dirty = false;
        if let Some(w) = ws.wal.as_mut() {
            w.reset();
        }
    }
    // Everything is visible to new read transactions now.
    *lock(&inner.pending) = Pending::default();
    for (r, a) in deferred {
        r.send(a);
    }
    Ok(())
}

/// Apply batches into `txn`. Returns whether this transaction must be a
/// checkpoint (durable redb commit); its answers then wait in `deferred`.
fn fill_txn(
    inner: &Inner,
    ws: &mut WriterState,
    txn: &redb::WriteTransaction,
    first: Vec<Job>,
    deferred: &mut Deferred,
) -> Result<bool> {
    let opened = Instant::now();
    let mut t = WTables::open(txn, ws.wal.is_some())?;
    let mut batch = first;
    for n in 1.. {
        let (answers, touched) = apply_batch(&mut t, &batch)?;
        let replies = batch.into_iter().map(|j| j.reply).zip(answers);
        let Some(wal) = ws.wal.as_mut() else {
            // In memory: commit durably per batch, answer after it.
            deferred.extend(replies);
            return Ok(false);
        };
        if !wal.fits(t.redo_len()) {
            // Log full or batch too large for it: this commit is the checkpoint.
            t.take_redo();
            ws.lsn += 1;
            t.put(Tbl::Sys, CHECKPOINT_KEY, &ws.lsn.to_le_bytes())?;
            deferred.extend(replies);
            return Ok(true);
        }
        let redo = t.take_redo();
        let rec = (!redo.is_empty()).then(|| {
            ws.lsn += 1;
            ws.dirty = true;
            wal.encode(ws.lsn, &redo)
        });
        // Made durable, published and answered by the syncer, in order,
        // while this thread goes on with the next batch.
        inner.sync.push(Synced {
            rec,
            touched,
            replies: replies.collect(),
        })?;
        let deadline = opened + COMMIT_INTERVAL;
        if n >= MAX_TXN_BATCHES || Instant::now() >= deadline {
            break;
        }
        match take_batch(inner, Some(deadline)) {
            Some(b) => batch = b,
            None => break,
        }
    }
    Ok(false)
}

/// Apply one batch to the open tables: the answers, and what changed.
/// Errors are storage failures (fatal); requests' own failures are answers.
fn apply_batch(t: &mut WTables<'_>, batch: &[Job]) -> Result<(Vec<Answer>, Pending)> {
    let mut answers = Vec::with_capacity(batch.len());
    let mut touched = Pending::default();
    let mut counters = Counters(HashMap::new());
    for job in batch {
        let a = match &job.kind {
            JobKind::Op(req, l) => {
                let r = apply_op(t, &mut counters, req, l.version)?;
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
            JobKind::List(pool, ns) => {
                Answer::List(list_in(t.table(Tbl::Meta), *pool, ns.as_deref()))
            }
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
        };
        answers.push(a);
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
        t.table(Tbl::Omap),
        req,
        last_version,
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
