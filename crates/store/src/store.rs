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
//! the write-ahead log, see `wal`; or of redb itself at checkpoints).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use quarry_rados::{ListEntry, OpReply, OpRequest, PoolId, PoolStat, RadosError, Result, SnapId};
use redb::{Database, Durability, ReadableTable};

use crate::codec::{self, ObjRecord, PoolCounters};
use crate::exec::{self, sio};
use crate::tables::{self, Tbl, WTables};
use crate::wal::{Records, Wal};

/// `sys` key of the last LSN whose effects redb holds durably.
const CHECKPOINT_KEY: &[u8] = b"wal.checkpoint";

/// Pending requests the writer queue holds before submitters wait.
pub const QUEUE_CAPACITY: usize = 256;
/// Most requests committed by one transaction.
pub const MAX_BATCH: usize = 128;
/// Most payload bytes committed by one transaction (bounds its memory).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
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

/// Work for the writer thread.
enum JobKind {
    Op(OpRequest),
    Trim(PoolId, Vec<SnapId>),
    RemovePool(PoolId),
    Sys(Vec<(String, Option<Vec<u8>>)>),
}

/// A job's answer.
enum Answer {
    Op(Result<OpReply>),
    Trim(Result<u64>),
    Unit(Result<()>),
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
            JobKind::Op(r) => {
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
    /// Set if the writer thread died (panicked): submitters get EIO.
    dead: bool,
}

struct Inner {
    db: Database,
    path: Option<PathBuf>,
    queue: Mutex<Queue>,
    not_empty: Condvar,
    not_full: Condvar,
}

/// The local durable object store (see the module docs for the layout).
pub struct Store {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<()>>,
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

impl Store {
    /// Open (or create) the store in `dir` (file `dir/store.redb`).
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

    /// A store in memory (redb's in-memory backend; same code path).
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
        });
        let w = inner.clone();
        let writer = std::thread::Builder::new()
            .name("quarry-store-writer".into())
            .spawn(move || writer_main(w, ws))
            .map_err(|e| RadosError::io(format!("spawn store writer: {e}")))?;
        Ok(Store {
            inner,
            writer: Some(writer),
        })
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
        match self.submit_blocking(JobKind::Op(req.clone()))? {
            Answer::Op(r) => r,
            _ => Err(RadosError::io("local store: mismatched answer")),
        }
    }

    /// Submit a write without blocking the caller's thread: the returned
    /// receiver yields the answer. `None` if the queue is full (the caller
    /// should fall back to [`Store::apply`] on a blocking thread).
    pub(crate) fn submit_write(
        &self,
        req: OpRequest,
    ) -> std::result::Result<Result<impl std::future::Future<Output = Result<OpReply>>>, OpRequest>
    {
        match self.try_submit_async(JobKind::Op(req)) {
            Err(JobKind::Op(req)) => Err(req),
            Err(_) => unreachable!("try_submit_async returns the job it was given"),
            Ok(Err(e)) => Ok(Err(e)),
            Ok(Ok(rx)) => Ok(Ok(async move {
                match rx.await {
                    Ok(Answer::Op(r)) => r,
                    Ok(_) => Err(RadosError::io("local store: mismatched answer")),
                    Err(_) => Err(RadosError::io("local store writer died before answering")),
                }
            })),
        }
    }

    /// A read-only request, in a read transaction on the caller's thread.
    fn read(&self, req: &OpRequest) -> Result<OpReply> {
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
        let data = txn.open_table(Tbl::Data.def()).map_err(sio)?;
        let omap = txn.open_table(Tbl::Omap.def()).map_err(sio)?;
        Ok(exec::stage(&meta, &data, &omap, req, 0)?.reply)
    }

    /// Drop `removed` snaps from every clone label in `pool`, deleting
    /// clones no snapshot needs any more. Returns the bytes freed.
    pub fn trim_snaps(&self, pool: PoolId, removed: &[SnapId]) -> Result<u64> {
        match self.submit_blocking(JobKind::Trim(pool, removed.to_vec()))? {
            Answer::Trim(r) => r,
            _ => Err(RadosError::io("local store: mismatched answer")),
        }
    }

    /// Head objects of a pool (optionally one namespace), ordered by (namespace, name).
    pub fn list(&self, pool: PoolId, namespace: Option<&str>) -> Result<Vec<ListEntry>> {
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let meta = txn.open_table(Tbl::Meta.def()).map_err(sio)?;
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

    /// Objects and stored bytes of a pool (zero for an unknown pool).
    pub fn pool_stat(&self, pool: PoolId) -> Result<PoolStat> {
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let pools = txn.open_table(Tbl::Pools.def()).map_err(sio)?;
        let c = match pools.get(&codec::pool_prefix(pool)[..]).map_err(sio)? {
            Some(v) => PoolCounters::decode(v.value(), pool)?,
            None => PoolCounters::default(),
        };
        Ok(PoolStat {
            num_objects: c.objects,
            num_bytes: c.bytes,
        })
    }

    /// Delete every object of a pool and its counters.
    pub fn remove_pool(&self, pool: PoolId) -> Result<()> {
        match self.submit_blocking(JobKind::RemovePool(pool))? {
            Answer::Unit(r) => r,
            _ => Err(RadosError::io("local store: mismatched answer")),
        }
    }

    /// Pools that have counters in the store (for reconciliation at open).
    pub fn pools_with_data(&self) -> Result<Vec<PoolId>> {
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
        let mut u = StoreUsage::default();
        {
            let txn = self.inner.db.begin_read().map_err(sio)?;
            let pools = txn.open_table(Tbl::Pools.def()).map_err(sio)?;
            for item in pools.iter().map_err(sio)? {
                let (k, v) = item.map_err(sio)?;
                let pool = codec::parse_pool_prefix(k.value()).unwrap_or(-1);
                let c = PoolCounters::decode(v.value(), pool)?;
                u.stored_bytes += c.bytes;
                u.objects += c.objects;
            }
        }
        if let Some(p) = &self.inner.path {
            u.file_bytes = std::fs::metadata(p)
                .map_err(|e| RadosError::io(format!("stat {}: {e}", p.display())))?
                .len();
        }
        Ok(u)
    }

    /// Read a value of the `sys` table (small records of upper layers).
    pub fn sys_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.inner.db.begin_read().map_err(sio)?;
        let sys = txn.open_table(Tbl::Sys.def()).map_err(sio)?;
        Ok(sys
            .get(key.as_bytes())
            .map_err(sio)?
            .map(|v| v.value().to_vec()))
    }

    /// Durably and atomically set (`Some`) or delete (`None`) `sys` values.
    pub fn sys_put(&self, kv: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        match self.submit_blocking(JobKind::Sys(kv))? {
            Answer::Unit(r) => r,
            _ => Err(RadosError::io("local store: mismatched answer")),
        }
    }

    /// The database file, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }
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

fn writer_main(inner: Arc<Inner>, mut ws: WriterState) {
    loop {
        let batch = {
            let mut q = lock(&inner.queue);
            while q.jobs.is_empty() && !q.shutdown {
                q = inner.not_empty.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.jobs.is_empty() {
                break;
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
            batch
        };
        inner.not_full.notify_all();
        // A panic while applying would leave submitters waiting forever, and
        // a failure after the log append leaves redb behind the log: both
        // stop the writer (everyone gets EIO; reopening recovers).
        let fatal = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&inner.db, &mut ws, batch)
        }))
        .unwrap_or(true);
        if fatal {
            let mut q = lock(&inner.queue);
            q.dead = true;
            for job in q.jobs.drain(..) {
                job.reply.send(fail(
                    &job.kind,
                    RadosError::io("local store writer stopped after a storage failure"),
                ));
            }
            drop(q);
            inner.not_full.notify_all();
            return;
        }
    }
    // Clean shutdown: make redb durable on its own so the log is not needed.
    if ws.dirty {
        let _ = commit_checkpoint(&inner.db, &mut ws);
    }
}

fn fail(kind: &JobKind, e: RadosError) -> Answer {
    match kind {
        JobKind::Op(_) => Answer::Op(Err(e)),
        JobKind::Trim(..) => Answer::Trim(Err(e)),
        JobKind::RemovePool(_) | JobKind::Sys(_) => Answer::Unit(Err(e)),
    }
}

/// Per-batch cache of pool counters, written back once per commit.
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
}

/// Apply a batch in one write transaction, make it durable with one
/// fdatasync, answer everyone. Returns whether the writer must stop.
fn run_batch(db: &Database, ws: &mut WriterState, batch: Vec<Job>) -> bool {
    let (answers, fatal) = match apply_batch(db, ws, &batch) {
        Ok(a) => (a, false),
        Err((e, fatal)) => (
            batch.iter().map(|j| fail(&j.kind, e.clone())).collect(),
            fatal,
        ),
    };
    for (job, a) in batch.into_iter().zip(answers) {
        job.reply.send(a);
    }
    fatal
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

/// The batch's answers, or an error for all of it (and whether it is fatal).
fn apply_batch(
    db: &Database,
    ws: &mut WriterState,
    batch: &[Job],
) -> std::result::Result<Vec<Answer>, (RadosError, bool)> {
    let soft = |e: RadosError| (e, false);
    let mut txn = db.begin_write().map_err(|e| soft(sio(e)))?;
    let mut answers = Vec::with_capacity(batch.len());
    let lsn = ws.lsn + 1;
    let redo = {
        let mut t = WTables::open(&txn, ws.wal.is_some()).map_err(soft)?;
        let mut counters = Counters(HashMap::new());
        for job in batch {
            let a = match &job.kind {
                JobKind::Op(req) => Answer::Op(apply_op(&mut t, &mut counters, req).map_err(soft)?),
                JobKind::Trim(pool, snaps) => {
                    Answer::Trim(trim(&mut t, &mut counters, *pool, snaps).map_err(soft)?)
                }
                JobKind::RemovePool(pool) => {
                    remove_pool(&mut t, *pool).map_err(soft)?;
                    counters.0.remove(pool);
                    t.del(Tbl::Pools, &codec::pool_prefix(*pool))
                        .map_err(soft)?;
                    Answer::Unit(Ok(()))
                }
                JobKind::Sys(kv) => {
                    for (k, v) in kv {
                        match v {
                            Some(v) => t.put(Tbl::Sys, k.as_bytes(), v),
                            None => t.del(Tbl::Sys, k.as_bytes()),
                        }
                        .map_err(soft)?;
                    }
                    Answer::Unit(Ok(()))
                }
            };
            answers.push(a);
        }
        for (pool, (c, dirty)) in counters.0 {
            if dirty {
                t.put(Tbl::Pools, &codec::pool_prefix(pool), &c.encode())
                    .map_err(soft)?;
            }
        }
        match ws.wal.as_ref() {
            Some(w) if w.fits(t.redo_len()) => Some(t.take_redo()),
            Some(_) => {
                // Too big for the log: this batch is the checkpoint.
                t.put(Tbl::Sys, CHECKPOINT_KEY, &lsn.to_le_bytes())
                    .map_err(soft)?;
                None
            }
            None => None,
        }
    };
    match (redo, ws.wal.as_mut()) {
        (Some(redo), Some(wal)) => {
            if redo.is_empty() {
                // Nothing changed (every request failed or was a no-op).
                txn.abort().map_err(|e| soft(sio(e)))?;
                return Ok(answers);
            }
            // Durable in the log first; only then publish to readers.
            wal.append(lsn, &redo)
                .map_err(|e| (RadosError::io(format!("write-ahead log: {e}")), true))?;
            ws.lsn = lsn;
            txn.set_durability(Durability::None);
            txn.commit().map_err(|e| (sio(e), true))?;
            ws.dirty = true;
        }
        (None, Some(wal)) => {
            txn.set_durability(Durability::Immediate);
            txn.commit().map_err(|e| (sio(e), true))?;
            ws.lsn = lsn;
            ws.dirty = false;
            wal.reset();
        }
        (_, None) => {
            txn.set_durability(Durability::Immediate);
            txn.commit().map_err(|e| soft(sio(e)))?;
        }
    }
    Ok(answers)
}

/// Stage then flush one request. The outer error is a storage failure
/// (aborts the batch); the inner one is the request's own failure.
fn apply_op(
    t: &mut WTables<'_>,
    counters: &mut Counters,
    req: &OpRequest,
) -> Result<Result<OpReply>> {
    let pool = req.oid.pool;
    let last_version = match counters.get(t, pool) {
        Ok(c) => c.0.last_version,
        Err(e) => return Ok(Err(e)),
    };
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
        c.last_version = staged.reply.version;
        c.objects = c.objects.saturating_add_signed(d.objects);
        c.bytes = c.bytes.saturating_add_signed(d.bytes);
        *dirty = true;
    }
    Ok(Ok(staged.reply))
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
