//! The daemon: connections, op handling, replication, peering, recovery.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quarry_auth::Claims;
use quarry_client::conn::Conn;
use quarry_client::wire::{
    self, AuthProof, AuthResult, Challenge, Hello, PgInfo, Request, Resp, Response, Ver, WireError,
    K_AUTH, K_AUTH_RESULT, K_CHALLENGE, K_HELLO, K_REQUEST, K_RESPONSE,
};
use quarry_common::Errno;
use quarry_map::{ClusterMap, Epoch, OsdId, PgId};
use quarry_monc::{MonClient, MonClientConfig};
use quarry_proto::stream::Stream;
use quarry_proto::{
    read_frame, read_frame_signed, write_frame, write_frame_signed, Frame, FrameSigner, Role,
    SignPolicy,
};
use quarry_rados::{
    ListEntry, ObjectId, Op, OpOutput, OpReply, OpRequest, PoolId, PoolStat, RadosError, Watcher,
    NOSNAP,
};
use quarry_store::Store;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::pglog::{self, PgMeta};

mod scrub;
use crate::{OsdConfig, OsdError};

/// Requests one connection may have in flight before we stop reading it.
const CONN_IN_FLIGHT: usize = 256;
/// Responses queued for one connection's writer.
const CONN_SEND_QUEUE: usize = 256;
/// Longest an op waits inside the OSD (for a map or an active PG) before
/// telling the client to retry; the client then re-evaluates placement.
const OP_WAIT: Duration = Duration::from_secs(3);
/// PGs peering at once.
const PEERING_PARALLEL: usize = 16;
/// Pause between peering attempts that could not complete.
const PEER_RETRY: Duration = Duration::from_millis(300);
/// Bound on one request to a peer OSD outside the write path (peering,
/// recovery, read repair): a peer cut off by the network neither answers
/// nor resets the connection, and a peering stuck on it would hold the
/// PG's write lock for good. The attempt fails and peering retries.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on queueing a RepOp on a peer's connection (its send queue is
/// full only when the peer stopped reading, e.g. cut off): the write
/// fails, the PG re-peers, the client resends.
const PEER_SEND_TIMEOUT: Duration = Duration::from_secs(5);

type WResult<T> = std::result::Result<T, WireError>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store pool holding one PG's objects.
fn spool(pg: PgId) -> PoolId {
    (pg.pool << 32) | pg.seed as i64
}

/// An object as the store names it (its PG's store pool).
fn store_oid(pg: PgId, oid: &ObjectId) -> ObjectId {
    ObjectId {
        pool: spool(pg),
        namespace: oid.namespace.clone(),
        name: oid.name.clone(),
    }
}

/// This machine's clock in ns since the Unix epoch (an object's mtime).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Run a store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> quarry_rados::Result<T> + Send + 'static,
) -> quarry_rados::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RadosError::io(format!("store task failed: {e}")))?
}

impl Osd {
    /// Report this OSD's filesystem to the monitors and keep which OSDs
    /// they say are full.
    async fn report_statfs(&self, dir: &std::path::Path) {
        let (total, avail) = match quarry_common::fsspace::fs_space(dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(osd = self.id, "statvfs {}: {e}", dir.display());
                return;
            }
        };
        let pools = match self.led_pool_usage().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(osd = self.id, "pool usage for the report: {e}");
                Vec::new()
            }
        };
        match self.monc.osd_statfs(self.id, total, avail, pools).await {
            Ok(f) => {
                {
                    let mut full = lock(&self.full_osds);
                    if *full != f.full_osds {
                        tracing::warn!(osd = self.id, "full OSDs now {:?}", f.full_osds);
                        *full = f.full_osds;
                    }
                }
                let mut q = lock(&self.quota_full);
                if *q != f.quota_full_pools {
                    tracing::warn!(
                        osd = self.id,
                        "pools at their quota now {:?}",
                        f.quota_full_pools
                    );
                    *q = f.quota_full_pools;
                    drop(q);
                    self.quota_changed.notify_waiters();
                }
            }
            Err(e) => tracing::debug!(osd = self.id, "statfs report: {e}"),
        }
    }

    /// Objects and bytes per pool over the PGs this OSD leads: as an active
    /// primary, or as the primary the map names of a PG that cannot go
    /// active (below `min_size`), whose figures `ceph -s`/`df` then show
    /// (each PG is counted by its primary only).
    async fn led_pool_usage(&self) -> quarry_rados::Result<Vec<quarry_monc::PoolUsage>> {
        let map = self.map();
        let led: Vec<PgId> = lock(&self.pgs)
            .values()
            .filter(|p| match p.active.borrow().as_ref() {
                Some(a) => a.acting.first() == Some(&self.id),
                None => map
                    .pg_up_set(p.id)
                    .is_ok_and(|up| up.first() == Some(&self.id)),
            })
            .map(|p| p.id)
            .collect();
        if led.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        blocking(move || {
            let mut by_pool: BTreeMap<PoolId, quarry_monc::PoolUsage> = BTreeMap::new();
            // The last commit's counters (<= 50 ms old): the report lags a
            // beacon interval anyway, and waiting for the writer per PG
            // under load would delay the next beacon.
            let spools: Vec<PoolId> = led.iter().map(|pg| spool(*pg)).collect();
            let stats = store.pool_stats_committed(&spools)?;
            for (pg, s) in led.into_iter().zip(stats) {
                let u = by_pool.entry(pg.pool).or_insert(quarry_monc::PoolUsage {
                    pool: pg.pool,
                    ..Default::default()
                });
                u.objects += s.num_objects;
                u.bytes += s.num_bytes;
            }
            Ok(by_pool.into_values().collect())
        })
        .await
    }

    /// Hold a write that needs space while its pool is at its quota, as
    /// Ceph's clients pause such writes until the pool's full flag clears
    /// (the quota raised, or objects removed: deletes are not held). A held
    /// write is let go when its connection closes (nobody waits for it) or
    /// its PG's interval ends (the client resends into the new one), so
    /// clients that retry cannot pile up held writes.
    async fn wait_for_quota(&self, ctx: &ConnCtx, p: &Pg, active: &Active) -> WResult<()> {
        let pg = p.id;
        let mut logged = false;
        loop {
            let changed = self.quota_changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the two is
            // not missed.
            changed.as_mut().enable();
            if !lock(&self.quota_full).contains(&pg.pool) {
                return Ok(());
            }
            if ctx.closed.load(Ordering::SeqCst) {
                return Err(WireError::new(
                    Errno::ENOTCONN,
                    format!("pg {pg}: write held at the pool's quota; its connection closed"),
                ));
            }
            if p.active.borrow().as_ref() != Some(active) {
                return Err(WireError::retry(
                    self.map().epoch + 1,
                    format!("pg {pg} changed interval while its pool was at its quota"),
                ));
            }
            if !logged {
                tracing::info!(osd = self.id, %pg, "pool at its quota: write held until it is not");
                logged = true;
            }
            // Woken by a change of the list; the connection and interval
            // are looked at again every second.
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        }
    }
}

/// Whether every op of `req` reads, guards or only gives space back (a
/// full cluster still takes deletes, as Ceph's does).
fn frees_space_only(req: &OpRequest) -> bool {
    req.ops.iter().all(|o| {
        !o.is_write()
            || matches!(
                o,
                Op::Remove | Op::Zero { .. } | Op::OmapRmKeys(_) | Op::OmapClear | Op::RmXattr(_)
            )
    })
}

/// How often the OSD checks that its store's writer still runs.
const STORE_WATCH: Duration = Duration::from_millis(200);

/// A fault-injection variable's value, if set to a number.
fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Fault injection for tests (as Ceph's `ms_inject_*` options):
/// `QUARRY_STORE_INJECT_FAIL_AFTER=N` makes the store fail as on a full
/// disk once it has applied N batches.
fn inject_store_failure() -> Option<u64> {
    let n = env_u64("QUARRY_STORE_INJECT_FAIL_AFTER")?;
    tracing::warn!("fault injection: the store fails after {n} batches");
    Some(n)
}

/// Fault injection for tests:
/// `QUARRY_OSD_INJECT_MAP_DELAY_MS` makes the map loop wait that long before
/// processing each map after the first, widening the window in which the
/// monitor client already holds a map the PGs have not reacted to.
fn inject_map_delay() -> Option<Duration> {
    let ms = env_u64("QUARRY_OSD_INJECT_MAP_DELAY_MS")?;
    tracing::warn!("fault injection: each map is processed {ms} ms late");
    Some(Duration::from_millis(ms))
}

/// An active interval of a PG this OSD is primary for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Active {
    epoch: Epoch,
    acting: Vec<OsdId>,
}

impl Active {
    /// `me` booted again after this interval began (it was marked down
    /// meanwhile and may have missed maps and writes).
    fn rebooted(&self, map: &ClusterMap, me: OsdId) -> bool {
        map.osds.get(&me).is_some_and(|o| o.up_from > self.epoch)
    }

    /// This interval still holds at `map`: the same acting set and no
    /// reboot of `me` since it began (otherwise `on_map` re-peers).
    fn holds_at(&self, map: &ClusterMap, pg: PgId, me: OsdId) -> bool {
        map.pg_up_set(pg).is_ok_and(|up| up == self.acting) && !self.rebooted(map, me)
    }
}

/// One PG's state on this OSD.
struct Pg {
    id: PgId,
    /// Serializes writes, recovery pushes and peering of this PG.
    write_lock: tokio::sync::Mutex<()>,
    /// `Some` while this OSD is the active primary.
    active: watch::Sender<Option<Active>>,
    /// Highest peering epoch seen: replicated writes from older intervals are refused.
    interval: AtomicU64,
    /// Bumped to cancel a running peering.
    peer_gen: AtomicU64,
    /// The acting set a running peering works toward (unchanged maps must
    /// not restart it, or PGs activating elsewhere would starve it).
    peering_for: Mutex<Option<Vec<OsdId>>>,
    /// Persisted metadata (mirrors the store's copy).
    meta: Mutex<PgMeta>,
    /// Next sequence number for writes in the active interval.
    next_seq: AtomicU64,
    /// The newest PG version queued to the local store (primary: the last
    /// one assigned). Pipelined RepOps wait on it to apply in log order.
    last: watch::Sender<Ver>,
    /// Versions of the newest log entries appended by this process (at
    /// most `LOG_MAX`), so a full log's new tail needs no store read.
    recent: Mutex<VecDeque<Ver>>,
    /// Client ops known applied in this PG: (global id, tid) → version.
    done: Mutex<DupIndex>,
    /// Client ops executing now, so a resend racing one waits for it.
    inflight: crate::inflight::InFlight,
    /// Objects (namespace, name) written recently on this OSD: a read of
    /// any other object is served inline on the async worker (see
    /// [`inline_read`]).
    writing: Mutex<WriteMarks>,
}

/// How long after its last write on this OSD an object's reads stay off
/// the async workers. The store answers reads of objects whose changes
/// are not yet in its committed read view from its writer thread, after
/// its next commit (every 50 ms); such a read must not block a worker.
/// Longer than that interval, with margin for a loaded machine; a read
/// that still meets an uncommitted change only waits, it is never wrong.
const WRITE_VISIBLE_AFTER: Duration = Duration::from_millis(250);

/// Write marks of one PG's objects (bounded: entries of finished writes
/// older than [`WRITE_VISIBLE_AFTER`] are dropped as it grows).
#[derive(Default)]
struct WriteMarks {
    /// (namespace, name) → (writes queued and not finished, when the last
    /// one finished).
    objects: HashMap<(String, String), (u32, Option<std::time::Instant>)>,
    /// Size at which stale entries are pruned next.
    prune_at: usize,
}

/// An object's (namespace, name), owned or borrowed, so [`WriteMarks`]
/// is looked up per read without allocating the key (two `String`s per
/// read were 1-2.6% of an OSD's CPU at 4 KiB random reads).
trait ObjName {
    fn parts(&self) -> (&str, &str);
}

impl ObjName for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl ObjName for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn ObjName + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn ObjName + 'a) {
        self
    }
}

// Hash and Eq agree with those of `(String, String)` (a `str` hashes as
// the `String` holding it), as `Borrow` requires.
impl std::hash::Hash for dyn ObjName + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn ObjName + '_ {
    fn eq(&self, o: &Self) -> bool {
        self.parts() == o.parts()
    }
}

impl Eq for dyn ObjName + '_ {}

impl WriteMarks {
    fn quiet(&self, ns: &str, name: &str) -> bool {
        if self.objects.is_empty() {
            return true;
        }
        match self.objects.get(&(ns, name) as &dyn ObjName) {
            None => true,
            Some((0, Some(t))) => t.elapsed() >= WRITE_VISIBLE_AFTER,
            Some(_) => false,
        }
    }

    fn prune(&mut self) {
        if self.objects.len() < self.prune_at.max(1024) {
            return;
        }
        self.objects
            .retain(|_, (n, t)| *n > 0 || t.is_none_or(|t| t.elapsed() < WRITE_VISIBLE_AFTER));
        self.prune_at = self.objects.len() * 2;
    }
}

/// How long an inline read whose blocks were not in the page cache waits
/// before it tries again (the kernel's readahead it started usually takes
/// about a millisecond here; tokio's timer has millisecond resolution).
const MISS_RETRY: Duration = Duration::from_millis(1);

/// Tries of an inline read that keeps missing the page cache before it is
/// read on a blocking thread (a page evicted again between tries, a
/// readahead the kernel dropped under memory pressure).
const MISS_RETRIES: u32 = 8;

/// Largest read (sum of op lengths) served inline on an async worker.
const INLINE_READ_MAX: u64 = 64 << 10;

/// Whether a read request may run on the async worker itself instead of
/// the blocking pool: small bounded reads and metadata only. For such a
/// read of an object without queued writes the store answers from its
/// committed state (a page-cache read of a few microseconds), which costs
/// less than the two thread hand-offs of `spawn_blocking` (they were ~35%
/// of the OSD's CPU per 4 KiB read). Reads of objects with writes in
/// flight are answered by the store's writer thread, so they stay off the
/// workers.
fn inline_read(req: &OpRequest) -> bool {
    let mut total = 0u64;
    for op in &req.ops {
        match op {
            Op::Read { len, .. } | Op::SparseRead { len, .. } => {
                if *len == 0 {
                    return false;
                }
                total = total.saturating_add(*len);
            }
            Op::Stat
            | Op::AssertExists
            | Op::AssertVersion(_)
            | Op::GetXattr(_)
            | Op::GetXattrs => {}
            _ => return false,
        }
    }
    total <= INLINE_READ_MAX
}

/// Marks an object as having a write queued to the local store on this
/// OSD; dropped after the write is durable or failed, which starts the
/// object's [`WRITE_VISIBLE_AFTER`] window.
struct Writing {
    pg: Arc<Pg>,
    key: (String, String),
}

impl Writing {
    fn new(pg: &Arc<Pg>, oid: &ObjectId) -> Writing {
        let key = (oid.namespace.clone(), oid.name.clone());
        let mut w = lock(&pg.writing);
        w.prune();
        w.objects.entry(key.clone()).or_insert((0, None)).0 += 1;
        Writing {
            pg: pg.clone(),
            key,
        }
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if let Some((n, t)) = lock(&self.pg.writing).objects.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            *t = Some(std::time::Instant::now());
        }
    }
}

/// Most client op ids remembered per PG (the log's span).
const DUP_MAX: usize = pglog::LOG_MAX as usize;

/// Recently applied client ops of a PG, so a resend (same global id and
/// tid, e.g. after a failover lost the reply) gets the original success
/// instead of being applied twice (EEXIST/ENOENT on exclusive create or
/// remove). Bounded: the oldest ids are forgotten first.
#[derive(Default)]
struct DupIndex {
    ids: HashMap<(u64, u64), Ver>,
    order: VecDeque<(u64, u64)>,
}

impl DupIndex {
    /// The ops a PG log records as applied, and nothing else: ids
    /// remembered from an older log may name ops that peering rewound
    /// since (no longer applied here, so a resend must run).
    fn from_log(entries: &[pglog::Entry]) -> DupIndex {
        let mut d = DupIndex::default();
        for e in entries {
            if let (true, Some(id)) = (e.ok, e.reqid) {
                d.insert(id, e.ver);
            }
        }
        d
    }

    fn insert(&mut self, id: (u64, u64), ver: Ver) {
        if self.ids.insert(id, ver).is_none() {
            self.order.push_back(id);
            while self.order.len() > DUP_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

struct WatchRec {
    conn: u64,
    client: u64,
    cookie: u64,
    /// The client's address, `ip:0/<global id>` (Ceph's form).
    addr: String,
    /// The client's IP, for the blocklist.
    ip: Option<std::net::IpAddr>,
    /// The watch's connection, for notifications.
    events: mpsc::WeakSender<Frame>,
}

struct Osd {
    id: OsdId,
    store: Arc<Store>,
    monc: Arc<MonClient>,
    service_key: [u8; 32],
    pgs: Mutex<HashMap<PgId, Arc<Pg>>>,
    /// Connections to other OSDs, with the address and `up_from` epoch
    /// they were made for (closed when the map says the peer went down or
    /// restarted: see [`Osd::prune_peers`]).
    peers: Mutex<quarry_client::ConnTable>,
    /// This OSD's own `up_from` when `peers` was last pruned: a newer one
    /// (it booted again) closes every peer connection.
    peers_up_from: AtomicU64,
    watches: Mutex<HashMap<ObjectId, Vec<WatchRec>>>,
    notifies: crate::notify::Notifies,
    next_conn: AtomicU64,
    /// Epoch of the newest map whose PG changes `on_map` has made (active
    /// intervals that no longer hold were ended by then).
    map_done: AtomicU64,
    peering: Semaphore,
    /// `ms_connection_ready_timeout`.
    handshake_timeout: Duration,
    /// Inline reads in progress (see [`Osd::read_inline`]).
    inline_reads: AtomicU64,
    /// Per PG, what its last deep scrub here left inconsistent.
    scrub_results: Mutex<HashMap<PgId, quarry_client::wire::ScrubReport>>,
    /// Scrub summaries the monitors have not acknowledged yet (retried
    /// with the beacons).
    scrub_unreported: Mutex<HashMap<PgId, quarry_monc::PgScrubErrors>>,
    /// OSDs at or above the full ratio, as the monitors last said: a PG
    /// with one in its acting set takes no write that needs space.
    full_osds: Mutex<Vec<OsdId>>,
    /// Pools at their quota, as the monitors last said: their writes that
    /// need space wait ([`Osd::wait_for_quota`]).
    quota_full: Mutex<Vec<PoolId>>,
    /// Woken whenever `quota_full` changes.
    quota_changed: tokio::sync::Notify,
}

/// Who is on the other end of a connection.
struct ConnCtx {
    id: u64,
    claims: Claims,
    addr: String,
    /// The peer's IP (a client's blocklist entries name it).
    ip: Option<std::net::IpAddr>,
    /// This connection's send queue (weak: it must not keep it open).
    events: mpsc::WeakSender<Frame>,
    /// Set (under the watch table's lock) when the connection ended and
    /// its watches were dropped: a watch request still in flight then
    /// (waiting for its PG) must not register one that nothing would drop.
    closed: std::sync::atomic::AtomicBool,
}

impl ConnCtx {
    fn peer_osd(&self) -> Option<OsdId> {
        self.claims.entity.strip_prefix("osd.")?.parse().ok()
    }

    /// The client's address as Ceph prints it: `ip:0/<global id>`.
    fn client_addr(&self) -> String {
        match self.ip {
            Some(ip) => quarry_map::ClientAddr {
                ip,
                port: 0,
                nonce: self.claims.global_id,
            }
            .to_string(),
            None => self.addr.clone(),
        }
    }

    /// `ESHUTDOWN` (Ceph's `EBLOCKLISTED`) if `map` fences this client.
    /// Daemons (OSD peers) are never fenced.
    fn check_blocklist(&self, map: &ClusterMap) -> WResult<()> {
        if map.blocklist.is_empty() || self.peer_osd().is_some() {
            return Ok(());
        }
        let Some(ip) = self.ip else { return Ok(()) };
        if map.is_blocklisted(ip, self.claims.global_id, now_unix()) {
            return Err(WireError::new(
                Errno::ESHUTDOWN,
                format!(
                    "client {} ({}) is blocklisted (map epoch {})",
                    self.claims.entity,
                    self.client_addr(),
                    map.epoch
                ),
            ));
        }
        Ok(())
    }
}

/// Most glibc malloc arenas in an OSD process. By default glibc gives
/// every thread that allocates concurrently its own arena (up to 8 per
/// core), and each keeps the 4 MiB frame buffers it freed: after
/// cluster_bench's 4 MiB jobs the OSDs held 220-370 MiB resident; with 2
/// arenas 120-180 MiB, at the same CPU per op.
const MALLOC_ARENAS: i32 = 2;

/// Allocations from this size up get their own mapping, returned to the
/// kernel when freed. glibc's default threshold adapts upward (to 32 MiB)
/// once a large block is freed, after which the 4 MiB frame and object
/// buffers of sequential I/O come from the heap and stay resident when
/// freed: after cluster_bench's 4 MiB jobs ~90 MiB of an OSD's ~210 MiB
/// RSS was free heap (malloc_trim released it). A fixed threshold also
/// stops that adaptation.
const MALLOC_MMAP_THRESHOLD: i32 = 256 << 10;

/// Give the free pages inside malloc's heaps back to the kernel (glibc
/// returns only the top of a heap on free). Under fio's 64 KiB and 4 KiB
/// jobs about a third of an OSD's anonymous memory was free heap (61 ->
/// 40 MiB after one `malloc_trim`); called once per beacon interval, it
/// bounds what fragmentation holds. The walk over free chunks is short
/// (metadata only); a trimmed page is faulted in again when reused.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no pointers given.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Run the OSD until the process is killed.
pub async fn run(cfg: OsdConfig) -> Result<(), OsdError> {
    // Threads created from here on (the store's, tokio's blocking pool)
    // share the capped arenas. Only a tuning knob: its result is ignored.
    // SAFETY: mallopt only changes allocator parameters; no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
    }
    let id = cfg.id;
    let dir = cfg.data_dir.clone();
    let opts = quarry_store::StoreOptions {
        fail_after_batches: inject_store_failure(),
        ..Default::default()
    };
    let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, opts))
        .await
        .map_err(|e| OsdError::Store {
            id,
            dir: cfg.data_dir.display().to_string(),
            source: RadosError::io(e.to_string()),
        })?
        .map_err(|source| OsdError::Store {
            id,
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
    let monc = MonClient::connect(MonClientConfig {
        mon_addrs: cfg.mon_addrs.clone(),
        entity: format!("osd.{id}"),
        secret: cfg.secret.clone(),
        timeout: cfg.mon_timeout,
        ping: cfg.mon_ping,
    })
    .await
    .map_err(|source| OsdError::Mon { id, source })?;
    let service_key = monc
        .service_key()
        .await
        .map_err(|source| OsdError::Mon { id, source })?;
    let listener = TcpListener::bind(&cfg.bind_addr)
        .await
        .map_err(|source| OsdError::Listen {
            id,
            addr: cfg.bind_addr.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| OsdError::Listen {
            id,
            addr: cfg.bind_addr.clone(),
            source,
        })?
        .to_string();
    let listening = addr.clone();
    let addr = match (cfg.public_addr, addr.parse::<std::net::SocketAddr>()) {
        (Some((ip, port)), Ok(local)) => {
            std::net::SocketAddr::new(ip, port.unwrap_or(local.port())).to_string()
        }
        _ => addr,
    };
    let osd = Arc::new(Osd {
        id,
        store: Arc::new(store),
        monc: monc.clone(),
        service_key,
        pgs: Mutex::new(HashMap::new()),
        peers: Mutex::new(HashMap::new()),
        peers_up_from: AtomicU64::new(0),
        watches: Mutex::new(HashMap::new()),
        notifies: Default::default(),
        next_conn: AtomicU64::new(1),
        map_done: AtomicU64::new(0),
        peering: Semaphore::new(PEERING_PARALLEL),
        handshake_timeout: cfg.handshake_timeout,
        inline_reads: AtomicU64::new(0),
        scrub_results: Mutex::new(HashMap::new()),
        scrub_unreported: Mutex::new(HashMap::new()),
        full_osds: Mutex::new(Vec::new()),
        quota_full: Mutex::new(Vec::new()),
        quota_changed: tokio::sync::Notify::new(),
    });
    // Serve before booting: peers may query us as soon as the map says up.
    let acceptor = osd.clone();
    tokio::spawn(async move { acceptor.accept_loop(listener).await });
    // Clients and peers in this network namespace connect here instead
    // (see `quarry_proto::stream`); without it they all use TCP. Not when
    // the OSD advertises another address than its own (`public_addr`: a
    // NAT or proxy the operator put in the path, which a local socket
    // named by that address would bypass).
    let local = match addr == listening {
        true => Some(quarry_proto::stream::bind_local(&addr)),
        false => None,
    };
    match local {
        None => {}
        Some(Ok(l)) => {
            let acceptor = osd.clone();
            let ip = addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.ip().to_canonical());
            let name = format!("unix:{addr}");
            tokio::spawn(async move { acceptor.accept_local_loop(l, name, ip).await });
        }
        Some(Err(e)) => tracing::warn!(osd = id, %addr, "no local Unix socket (TCP only): {e}"),
    }
    let epoch = monc
        .osd_boot(id, addr.clone(), cfg.host.clone(), cfg.initial_weight)
        .await
        .map_err(|source| OsdError::Mon { id, source })?;
    tracing::info!(osd = id, %addr, epoch, "booted");
    let watcher = osd.clone();
    tokio::spawn(async move { watcher.map_loop().await });
    let scrubber = osd.clone();
    let (every, auto_repair) = (cfg.deep_scrub_interval, cfg.scrub_auto_repair);
    tokio::spawn(async move { scrubber.scrub_loop(every, auto_repair).await });
    // SIGUSR1 logs this OSD's PG states (tests dump them when I/O stalls).
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
        Ok(mut sig) => {
            let o = osd.clone();
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    tracing::info!("state dump (SIGUSR1):\n{}", o.debug_dump());
                }
            });
        }
        Err(e) => tracing::warn!(osd = id, "no SIGUSR1 state dump: {e}"),
    }
    let interval = cfg.beacon_interval;
    let mut booted = epoch;
    // A store whose writer stopped (full or failing disk) serves nothing:
    // this OSD stops, as a Ceph OSD aborts on a store error, so that the
    // monitors mark it down and its PGs peer without it instead of waiting
    // on it for ever.
    let store = osd.store.clone();
    let failed = async move {
        loop {
            if let Some(reason) = store.failure() {
                return reason;
            }
            tokio::time::sleep(STORE_WATCH).await;
        }
    };
    tokio::pin!(failed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            reason = &mut failed => {
                tracing::error!(osd = id, "local store failed, stopping this OSD: {reason}");
                return Err(OsdError::StoreFailed { id, reason });
            }
        }
        // Receive buffers of large writes idle since the last beacons go
        // back to the kernel (an OSD at rest holds none).
        quarry_proto::bufpool::trim(interval * 2);
        release_free_heap();
        if let Err(e) = osd.monc.osd_beacon(id).await {
            tracing::warn!(osd = id, "beacon failed: {e}");
        }
        osd.report_pending_scrubs().await;
        osd.report_statfs(&cfg.data_dir).await;
        // Marked down while alive (its network was cut, or `ceph osd
        // down`): boot again, as Ceph's "wrongly marked me down", so the
        // monitors mark it up and its PGs peer and recover what it missed.
        let map = osd.map();
        if map.epoch > booted && map.osds.get(&id).is_some_and(|o| !o.up) {
            tracing::warn!(
                osd = id,
                epoch = map.epoch,
                "marked down while alive; booting again"
            );
            match osd
                .monc
                .osd_boot(id, addr.clone(), cfg.host.clone(), cfg.initial_weight)
                .await
            {
                Ok(e) => booted = e,
                Err(e) => tracing::warn!(osd = id, "boot failed: {e}"),
            }
        }
    }
}

impl Osd {
    /// Every PG's state on this OSD (role, interval, peering, log head,
    /// whether its write lock is held), its peer connections and watches.
    fn debug_dump(&self) -> String {
        use std::fmt::Write;
        let map = self.map();
        let mut s = format!("osd.{} at map epoch {}\n", self.id, map.epoch);
        let mut pgs: Vec<Arc<Pg>> = lock(&self.pgs).values().cloned().collect();
        pgs.sort_by_key(|p| (p.id.pool, p.id.seed));
        for p in pgs {
            let active = p.active.borrow().clone();
            let up = map.pg_up_set(p.id).unwrap_or_default();
            let meta = lock(&p.meta).clone();
            let _ = writeln!(
                s,
                "  pg {}: up {up:?}, {}, interval {}, peering for {:?}, last {}, info {} (tail {}), write lock {}",
                p.id,
                match active {
                    Some(a) => format!("active primary since epoch {} acting {:?}", a.epoch, a.acting),
                    None => "not active here".to_string(),
                },
                p.interval.load(Ordering::SeqCst),
                *lock(&p.peering_for),
                *p.last.borrow(),
                meta.info.last_update,
                meta.info.log_tail,
                if p.write_lock.try_lock().is_ok() { "free" } else { "held" },
            );
        }
        quarry_client::dump_conns(&lock(&self.peers), "  peer ", &mut s);
        for (oid, ws) in lock(&self.watches).iter() {
            for w in ws {
                let _ = writeln!(
                    s,
                    "  watch {} on {} by client.{} ({}) on connection {}",
                    w.cookie, oid.name, w.client, w.addr, w.conn
                );
            }
        }
        s
    }

    fn map(&self) -> Arc<ClusterMap> {
        self.monc.map()
    }

    /// A map at least as new as `epoch`, waiting a bounded time.
    async fn map_at_least(&self, epoch: Epoch) -> WResult<Arc<ClusterMap>> {
        let m = self.map();
        if m.epoch >= epoch {
            return Ok(m);
        }
        let mut rx = self.monc.subscribe();
        let got = tokio::time::timeout(OP_WAIT, async {
            rx.wait_for(|m| m.epoch >= epoch).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if !got {
            let _ = self.monc.refresh_map().await;
        }
        let m = self.map();
        if m.epoch >= epoch {
            Ok(m)
        } else {
            Err(WireError::retry(
                epoch,
                format!("osd.{} has map {} < {epoch}", self.id, m.epoch),
            ))
        }
    }

    fn pg(&self, pg: PgId) -> WResult<Arc<Pg>> {
        if let Some(p) = lock(&self.pgs).get(&pg) {
            return Ok(p.clone());
        }
        // Loading meta is a small read; done under no lock, then inserted once.
        let meta = pglog::load(&self.store, pg).map_err(WireError::from)?;
        let last = meta.info.last_update;
        let mut pgs = lock(&self.pgs);
        Ok(pgs
            .entry(pg)
            .or_insert_with(|| {
                Arc::new(Pg {
                    id: pg,
                    write_lock: tokio::sync::Mutex::new(()),
                    active: watch::channel(None).0,
                    interval: AtomicU64::new(0),
                    peer_gen: AtomicU64::new(0),
                    peering_for: Mutex::new(None),
                    meta: Mutex::new(meta),
                    next_seq: AtomicU64::new(1),
                    last: watch::channel(last).0,
                    recent: Mutex::new(VecDeque::new()),
                    done: Mutex::new(DupIndex::default()),
                    inflight: Default::default(),
                    writing: Mutex::new(WriteMarks::default()),
                })
            })
            .clone())
    }

    // ---------------------------------------------------------------
    // Connections
    // ---------------------------------------------------------------

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    let me = self.clone();
                    let ip = Some(peer.ip().to_canonical());
                    tokio::spawn(async move {
                        me.serve_conn(Stream::Tcp(s), peer.to_string(), ip).await
                    });
                }
                Err(e) => {
                    // Out of fds and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Accept on the OSD's abstract Unix socket. Such a peer is in this
    /// network namespace: it is given the IP of the advertised address,
    /// which its TCP connection would have come from (blocklist entries
    /// name it).
    async fn accept_local_loop(
        self: Arc<Self>,
        listener: UnixListener,
        name: String,
        ip: Option<std::net::IpAddr>,
    ) {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let me = self.clone();
                    let name = name.clone();
                    tokio::spawn(async move { me.serve_conn(Stream::Unix(s), name, ip).await });
                }
                Err(e) => {
                    // Out of fds and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn handshake<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        s: &mut S,
    ) -> Result<(Claims, Option<(FrameSigner, FrameSigner)>), String> {
        let f = match read_frame(s).await {
            Ok(f) => f,
            Err(quarry_proto::FrameError::BadVersion(v)) => {
                // Tell a peer of another release why, in our version (it
                // fails at once instead of retrying), then close.
                let _ = write_frame(s, &quarry_proto::version_mismatch_frame(v)).await;
                return Err(quarry_proto::FrameError::BadVersion(v).to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        if f.kind != K_HELLO {
            return Err(format!("expected hello, got kind {}", f.kind));
        }
        let hello: Hello = f.decode().map_err(|e| e.to_string())?;
        let claims = match quarry_auth::verify_ticket(&self.service_key, &hello.ticket, now_unix())
        {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("authentication error: {e}");
                let r: AuthResult = Err(WireError::new(Errno::EACCES, msg.clone()));
                if let Ok(fr) = Frame::new(K_AUTH_RESULT, 0, &r, Bytes::new()) {
                    let _ = write_frame(s, &fr).await;
                }
                return Err(msg);
            }
        };
        let sn = quarry_auth::random_nonce();
        let policy = SignPolicy::global();
        let mode = SignPolicy::mode_byte(hello.sign, policy.sign);
        let signed = SignPolicy::negotiated(hello.sign, policy.sign);
        // The ticket's entity (the monitor vouches for it).
        if let Some(msg) = policy.check(signed, quarry_proto::is_daemon_entity(&claims.entity)) {
            let msg = format!("authentication error: osd.{}: {msg}", self.id);
            let r: AuthResult = Err(WireError::new(Errno::EACCES, msg.clone()));
            if let Ok(fr) = Frame::new(K_AUTH_RESULT, 0, &r, Bytes::new()) {
                let _ = write_frame(s, &fr).await;
            }
            return Err(msg);
        }
        let ch = Challenge {
            server_nonce: sn,
            server_proof: quarry_auth::server_session_proof(
                &claims.session_key,
                &hello.client_nonce,
                &sn,
                mode,
            ),
            sign: policy.sign,
        };
        let fr = Frame::new(K_CHALLENGE, 0, &ch, Bytes::new()).map_err(|e| e.to_string())?;
        write_frame(s, &fr).await.map_err(|e| e.to_string())?;
        let f = read_frame(s).await.map_err(|e| e.to_string())?;
        if f.kind != K_AUTH {
            return Err(format!("expected auth proof, got kind {}", f.kind));
        }
        let proof: AuthProof = f.decode().map_err(|e| e.to_string())?;
        let want = quarry_auth::session_proof(&claims.session_key, &hello.client_nonce, &sn, mode);
        let r: AuthResult = if quarry_auth::ticket::check_session_proof(&want, &proof.client_proof)
        {
            Ok(())
        } else {
            Err(WireError::new(
                Errno::EACCES,
                "authentication error: bad session proof",
            ))
        };
        let fr = Frame::new(K_AUTH_RESULT, 0, &r, Bytes::new()).map_err(|e| e.to_string())?;
        write_frame(s, &fr).await.map_err(|e| e.to_string())?;
        r.map_err(|e| e.msg)?;
        let signers = signed.then(|| {
            let key = quarry_auth::session_frame_key(&claims.session_key, &hello.client_nonce, &sn);
            FrameSigner::pair(&key, Role::Acceptor)
        });
        Ok((claims, signers))
    }

    async fn serve_conn(
        self: Arc<Self>,
        mut s: Stream,
        peer: String,
        ip: Option<std::net::IpAddr>,
    ) {
        s.set_nodelay();
        let (claims, signers) =
            match tokio::time::timeout(self.handshake_timeout, self.handshake(&mut s)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::info!(osd = self.id, %peer, "refused connection: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(osd = self.id, %peer, "handshake timed out");
                    return;
                }
            };
        let (rd, wr) = s.into_split();
        // Buffered: a frame's header, body and payload then usually take
        // one read syscall instead of three.
        let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
        let (tx, mut rx) = mpsc::channel::<Frame>(CONN_SEND_QUEUE);
        let (mut wsig, mut rsig) = match signers {
            Some((w, r)) => (Some(w), Some(r)),
            None => (None, None),
        };
        let ctx = Arc::new(ConnCtx {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            claims,
            ip,
            addr: peer.clone(),
            events: tx.downgrade(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let slots = Arc::new(Semaphore::new(CONN_IN_FLIGHT));
        let wslots = slots.clone();
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(64 << 10, wr);
            while let Some(f) = rx.recv().await {
                if write_frame_signed(&mut w, &f, wsig.as_mut()).await.is_err() {
                    break;
                }
                // A reply's request holds its slot until the reply is
                // queued: more than one taken means others are running.
                if rx.is_empty() && wslots.available_permits() + 1 < CONN_IN_FLIGHT {
                    // Let this worker's other ready tasks (often more
                    // replies for this connection) queue theirs first, so
                    // one write syscall carries several replies; a
                    // deferred task runs once its worker has nothing else.
                    // Not at depth 1, where it would only add a syscall.
                    tokio::task::yield_now().await;
                }
                if rx.is_empty() && w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        loop {
            // A forged, replayed or reordered frame fails here, before it
            // is decoded or acted on, and drops the connection (logged).
            let f = match read_frame_signed(&mut rd, rsig.as_mut()).await {
                Ok(f) => f,
                Err(quarry_proto::FrameError::Closed) => break,
                Err(
                    e @ (quarry_proto::FrameError::BadSignature { .. }
                    | quarry_proto::FrameError::Sequence { .. }),
                ) => {
                    tracing::warn!(osd = self.id, %peer, entity = %ctx.claims.entity,
                        "dropping connection: {e}");
                    break;
                }
                Err(e) => {
                    tracing::info!(osd = self.id, %peer, "dropping connection: {e}");
                    break;
                }
            };
            if f.kind != K_REQUEST {
                tracing::info!(osd = self.id, %peer, kind = f.kind, "dropping connection: unexpected frame kind");
                break;
            }
            let req: Request = match f.decode() {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(osd = self.id, %peer, "dropping connection: {e}");
                    break;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let me = self.clone();
            let ctx = ctx.clone();
            let tx = tx.clone();
            let rid = f.request_id;
            let inline = runs_inline(&req);
            let op = async move {
                let (resp, data) = match me.handle(&ctx, req, f.data).await {
                    Ok((r, d)) => (Ok(r), d),
                    Err(e) => (Err(e), Bytes::new()),
                };
                let resp: Response = resp;
                if let Ok(fr) = Frame::new(K_RESPONSE, rid, &resp, data) {
                    let _ = tx.send(fr).await;
                }
                drop(permit);
            };
            if inline {
                // A small read usually finishes in its first poll (the
                // store is read inline): run that poll here, so the reply
                // is queued without a task spawn and the other worker's
                // wake-up to steal it; the replies of every request one
                // socket read brought in then leave in one write. Only
                // what is still pending after it (waiting for a map, a PG,
                // a lock) becomes a task; its first poll in there
                // registers that task's waker (this one's is then woken
                // once, spuriously).
                let mut op = Box::pin(op);
                // A panic in it ends this request only (no reply), as it
                // would in a task of its own, not the connection.
                let first = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                        || std::future::Future::poll(op.as_mut(), cx),
                    )))
                })
                .await;
                match first {
                    Ok(std::task::Poll::Pending) => {
                        tokio::spawn(op);
                    }
                    Ok(std::task::Poll::Ready(())) => {}
                    Err(_) => {
                        tracing::error!(osd = self.id, %peer, "request handler panicked; no reply sent");
                    }
                }
            } else {
                tokio::spawn(op);
            }
        }
        drop(tx);
        // Watches die with the connection that registered them.
        {
            let mut w = lock(&self.watches);
            ctx.closed.store(true, Ordering::SeqCst);
            w.retain(|_, v| {
                v.retain(|w| w.conn != ctx.id);
                !v.is_empty()
            });
        }
        let _ = writer.await;
    }

    // ---------------------------------------------------------------
    // Dispatch
    // ---------------------------------------------------------------

    async fn handle(
        self: &Arc<Self>,
        ctx: &ConnCtx,
        req: Request,
        data: Bytes,
    ) -> WResult<(Resp, Bytes)> {
        ctx.check_blocklist(&self.map())?;
        match req {
            Request::Op {
                epoch,
                tid,
                mut req,
                lens,
            } => {
                wire::fill_request(&mut req, &lens, &data)?;
                let reply = self.client_op(ctx, epoch, tid, req).await?;
                let (reply, lens, data) = wire::strip_reply(reply);
                Ok((Resp::Op(reply, lens), data))
            }
            Request::ListPg {
                epoch,
                pg,
                namespace,
            } => {
                let map = self.map_at_least(epoch).await?;
                self.check_caps(
                    ctx,
                    &map,
                    pg.pool,
                    namespace.as_deref().unwrap_or(""),
                    None,
                    false,
                )?;
                self.primary_active(pg, epoch).await?;
                let store = self.store.clone();
                let list: Vec<ListEntry> =
                    blocking(move || store.list(spool(pg), namespace.as_deref())).await?;
                Ok((Resp::List(list), Bytes::new()))
            }
            Request::PoolStat { epoch, pool, seeds } => {
                let map = self.map_at_least(epoch).await?;
                self.check_caps(ctx, &map, pool, "", None, false)?;
                let mut total = PoolStat::default();
                for seed in seeds {
                    let pg = PgId { pool, seed };
                    self.primary_active(pg, epoch).await?;
                    let store = self.store.clone();
                    let s = blocking(move || store.pool_stat(spool(pg))).await?;
                    total.num_objects += s.num_objects;
                    total.num_bytes += s.num_bytes;
                }
                Ok((Resp::Stat(total), Bytes::new()))
            }
            Request::Watch { epoch, oid, cookie } => {
                let pg = self.object_pg_checked(ctx, epoch, &oid, false).await?;
                self.primary_active(pg, epoch).await?;
                let st = OpRequest::new(store_oid(pg, &oid)).op(Op::Stat);
                let store = self.store.clone();
                blocking(move || store.apply(&st)).await?;
                let mut w = lock(&self.watches);
                if ctx.closed.load(Ordering::SeqCst) {
                    return Err(WireError::new(
                        Errno::ENOTCONN,
                        format!("watch on {}: the connection closed meanwhile", oid.name),
                    ));
                }
                let list = w.entry(oid).or_default();
                list.retain(|x| !(x.client == ctx.claims.global_id && x.cookie == cookie));
                list.push(WatchRec {
                    conn: ctx.id,
                    client: ctx.claims.global_id,
                    cookie,
                    addr: ctx.client_addr(),
                    ip: ctx.ip,
                    events: ctx.events.clone(),
                });
                Ok((Resp::Cookie(cookie), Bytes::new()))
            }
            Request::Unwatch { epoch, oid, cookie } => {
                let pg = self.object_pg_checked(ctx, epoch, &oid, false).await?;
                self.primary_active(pg, epoch).await?;
                let mut w = lock(&self.watches);
                let found = w.get_mut(&oid).is_some_and(|list| {
                    let n = list.len();
                    list.retain(|x| !(x.client == ctx.claims.global_id && x.cookie == cookie));
                    list.len() != n
                });
                w.retain(|_, v| !v.is_empty());
                if found {
                    Ok((Resp::Unit, Bytes::new()))
                } else {
                    Err(WireError::new(
                        Errno::ENOENT,
                        format!("no watch {cookie} on {}", oid.name),
                    ))
                }
            }
            Request::ListWatchers { epoch, oid } => {
                let pg = self.object_pg_checked(ctx, epoch, &oid, false).await?;
                self.primary_active(pg, epoch).await?;
                let w = lock(&self.watches);
                let list = w
                    .get(&oid)
                    .map(|l| {
                        l.iter()
                            .map(|x| Watcher {
                                client: x.client,
                                cookie: x.cookie,
                                addr: x.addr.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((Resp::Watchers(list), Bytes::new()))
            }
            Request::Notify {
                epoch,
                oid,
                payload,
                timeout_ms,
            } => {
                let pg = self.object_pg_checked(ctx, epoch, &oid, false).await?;
                self.primary_active(pg, epoch).await?;
                let st = OpRequest::new(store_oid(pg, &oid)).op(Op::Stat);
                let store = self.store.clone();
                blocking(move || store.apply(&st)).await?;
                let targets = lock(&self.watches)
                    .get(&oid)
                    .map(|l| {
                        l.iter()
                            .map(|x| crate::notify::Target {
                                watcher: Watcher {
                                    client: x.client,
                                    cookie: x.cookie,
                                    addr: x.addr.clone(),
                                },
                                conn: x.events.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let r = self
                    .notifies
                    .run(
                        oid,
                        ctx.claims.global_id,
                        payload,
                        Duration::from_millis(timeout_ms),
                        targets,
                    )
                    .await;
                Ok((Resp::Notified(r), Bytes::new()))
            }
            Request::NotifyAck {
                epoch,
                oid,
                notify_id,
                cookie,
                payload,
            } => {
                self.object_pg_checked(ctx, epoch, &oid, false).await?;
                self.notifies
                    .ack(notify_id, ctx.claims.global_id, cookie, payload);
                Ok((Resp::Unit, Bytes::new()))
            }
            Request::Scrub { epoch, pg, repair } => {
                let map = self.map_at_least(epoch).await?;
                // Scrubbing reads every object and repair rewrites copies:
                // whoever may write the pool may ask for it.
                self.check_caps(ctx, &map, pg.pool, "", None, true)?;
                let (p, active) = self.primary_active(pg, epoch).await?;
                let report = self.deep_scrub(pg, &p, &active, repair).await?;
                Ok((Resp::Scrub(report), Bytes::new()))
            }
            Request::ScrubResult { epoch, pg } => {
                let map = self.map_at_least(epoch).await?;
                self.check_caps(ctx, &map, pg.pool, "", None, false)?;
                self.primary_active(pg, epoch).await?;
                Ok((Resp::Scrub(self.last_scrub(pg)?), Bytes::new()))
            }
            // ---- OSD to OSD ----
            other => {
                let Some(from) = ctx.peer_osd() else {
                    return Err(WireError::new(
                        Errno::EACCES,
                        format!("{} may not send OSD-internal messages", ctx.claims.entity),
                    ));
                };
                self.handle_peer(from, other, data).await
            }
        }
    }

    fn check_caps(
        &self,
        ctx: &ConnCtx,
        map: &ClusterMap,
        pool: PoolId,
        ns: &str,
        object: Option<&str>,
        write: bool,
    ) -> WResult<()> {
        let Some(def) = map.pools.get(&pool) else {
            return Err(WireError::new(
                Errno::ENOENT,
                format!("pool {pool} does not exist"),
            ));
        };
        if ctx.claims.caps.allows_object(&def.name, ns, object, write) {
            Ok(())
        } else {
            Err(WireError::new(
                Errno::EPERM,
                format!(
                    "{} is not allowed to {} pool '{}'",
                    ctx.claims.entity,
                    if write { "write" } else { "read" },
                    def.name
                ),
            ))
        }
    }

    async fn object_pg_checked(
        &self,
        ctx: &ConnCtx,
        epoch: Epoch,
        oid: &ObjectId,
        write: bool,
    ) -> WResult<PgId> {
        let map = self.map_at_least(epoch).await?;
        self.check_caps(ctx, &map, oid.pool, &oid.namespace, Some(&oid.name), write)?;
        map.object_pg(oid.pool, &oid.namespace, &oid.name)
            .map_err(|e| WireError::new(e.errno(), e.to_string()))
    }

    /// Wait (bounded) until this OSD is the active primary of `pg`.
    async fn primary_active(&self, pg: PgId, epoch: Epoch) -> WResult<(Arc<Pg>, Active)> {
        let map = self.map_at_least(epoch).await?;
        let primary = map
            .pg_primary(pg)
            .map_err(|e| WireError::new(e.errno(), e.to_string()))?;
        if primary != Some(self.id) {
            return Err(WireError::retry(
                map.epoch + 1,
                format!(
                    "osd.{} is not the primary of {pg} at epoch {}",
                    self.id, map.epoch
                ),
            ));
        }
        let p = self.pg(pg)?;
        let mut rx = p.active.subscribe();
        // The interval must hold at the newest map, not merely exist: the
        // map loop may not have processed that map yet (an OSD back from a
        // cut link or a freeze learns a map marking it down and boots again
        // before it re-peers), and an interval from before the gap would
        // serve reads from a store that missed the writes acknowledged
        // meanwhile (objects created then read as absent: zeros).
        let got = tokio::time::timeout(OP_WAIT, async {
            rx.wait_for(|a| {
                a.as_ref().is_some_and(|a| {
                    // Cheap when the map loop is up to date (nearly always).
                    let m = self.map();
                    if self.map_done.load(Ordering::SeqCst) >= m.epoch {
                        return true;
                    }
                    let holds = a.holds_at(&m, pg, self.id);
                    if !holds {
                        tracing::info!(
                            osd = self.id,
                            %pg,
                            interval = a.epoch,
                            map = m.epoch,
                            "op waits: the active interval predates the newest map"
                        );
                    }
                    holds
                })
            })
            .await
            .ok()
            .and_then(|a| a.clone())
        })
        .await
        .ok()
        .flatten();
        match got {
            Some(a) => Ok((p, a)),
            None => Err(WireError::retry(
                self.map().epoch + 1,
                format!("pg {pg} is not active on osd.{}", self.id),
            )),
        }
    }

    // ---------------------------------------------------------------
    // Client ops
    // ---------------------------------------------------------------

    async fn client_op(
        self: &Arc<Self>,
        ctx: &ConnCtx,
        epoch: Epoch,
        tid: u64,
        req: OpRequest,
    ) -> WResult<OpReply> {
        let write = req.is_write();
        let pg = self.object_pg_checked(ctx, epoch, &req.oid, write).await?;
        let (p, active) = self.primary_active(pg, epoch).await?;
        if epoch < active.epoch {
            // Sent before this interval began (Ceph's can_discard_op): the
            // client has resent it since, or will when it sees the newer
            // map, and this copy may be a stale duplicate that TCP delivers
            // late (a link cut mid-send). Applying it could revert writes
            // acknowledged meanwhile; refuse, and the client resends at the
            // new map under the same tid (answered from the dup index if it
            // was applied).
            return Err(WireError::retry(
                active.epoch,
                format!(
                    "op sent at epoch {epoch}, before pg {pg}'s interval began at {}",
                    active.epoch
                ),
            ));
        }
        let mut sreq = req;
        sreq.oid = store_oid(pg, &sreq.oid);
        if !write {
            return self.read_with_repair(pg, &active, sreq).await;
        }
        if sreq.snap != NOSNAP {
            return Err(WireError::new(Errno::EROFS, "writes must target the head"));
        }
        // Writes, guarded or not, are deduplicated: their successful reply
        // is one `None` output per op and the version, which the index can
        // reproduce. A guarded write (compare-and-swap on the version, as
        // every image header update) must be too: re-executed after it was
        // applied (its reply lost with a cut primary) its guard would fail.
        let reqid = (tid != 0 && sreq.ops.iter().all(|o| o.is_write() || o.is_guard()))
            .then_some((ctx.claims.global_id, tid));
        // A resend racing its original (still in flight here) waits for
        // the original's outcome: its success, or on failure a run of its own.
        let mut _running = None;
        while let Some(id) = reqid {
            use crate::inflight::Claim;
            match p.inflight.claim(id, || lock(&p.done).ids.get(&id).copied()) {
                Claim::Done(ver) => {
                    tracing::debug!(osd = self.id, %pg, ?id, "resent op already applied");
                    return Ok(OpReply {
                        outputs: vec![OpOutput::None; sreq.ops.len()],
                        version: pglog::object_version(ver),
                    });
                }
                Claim::Wait(rx) => {
                    tracing::info!(osd = self.id, %pg, ?id, "resent op in flight: waiting for the original");
                    crate::inflight::wait(rx).await;
                }
                Claim::Run(r) => {
                    _running = Some(r);
                    break;
                }
            }
        }
        // A full member (the monitors' word, refreshed with each beacon)
        // takes no write that needs space: ENOSPC, which QEMU's default
        // `werror=enospc` answers by pausing the VM until space is freed.
        {
            let full = lock(&self.full_osds);
            if let Some(f) = active.acting.iter().find(|o| full.contains(o)) {
                if !frees_space_only(&sreq) {
                    return Err(WireError::new(
                        Errno::ENOSPC,
                        format!("pg {pg}: osd.{f} is full (free space, add OSDs or raise the full ratio)"),
                    ));
                }
            }
        }
        if !frees_space_only(&sreq) {
            self.wait_for_quota(ctx, &p, &active).await?;
        }
        // Pipeline: under the PG's lock only assign the version, queue the
        // op to the local store and queue the RepOps on the peer sockets
        // (all FIFO, so every member sees the PG's ops in version order);
        // then release it and wait for durability everywhere. Many writes
        // of a PG are thus in flight at once and share group commits.
        let g = p.write_lock.lock().await;
        // Fencing: checked again under the PG's write lock, against the
        // newest map. A write of a client blocklisted meanwhile is refused
        // here, so it can never be ordered after a write of the client that
        // blocklisted it (whose op needed that map before taking the lock).
        ctx.check_blocklist(&self.map())?;
        // Peering may have run while we waited for the lock.
        let cur = p.active.borrow().clone();
        if cur.as_ref() != Some(&active) {
            return Err(WireError::retry(
                self.map().epoch + 1,
                format!("pg {pg} changed interval"),
            ));
        }
        let prev = *p.last.borrow();
        let ver = Ver {
            epoch: active.epoch,
            seq: p.next_seq.fetch_add(1, Ordering::SeqCst),
        };
        let gen = p.peer_gen.load(Ordering::SeqCst);
        let (rreq, lens, data) = wire::strip_request(sreq.clone());
        // One modification time for every copy (the replicas get it too).
        let mtime_ns = now_ns();
        // RepOps go out before the local write is queued: a replica's
        // round trip (network, its worker, its store, back) is the longer
        // path, and queueing locally first (a store-writer wake-up) delayed
        // its start. Both still happen under the PG lock, in version order;
        // a local queueing failure after the replicas applied is the
        // "primary refused" case below (re-peer, client resends).
        let mut remotes = Vec::new();
        let mut send_failed = None;
        for &m in active.acting.iter().filter(|&&m| m != self.id) {
            let r = Request::RepOpStamped {
                op: wire::RepOpFields {
                    pg,
                    epoch: active.epoch,
                    ver,
                    prev,
                    reqid,
                    req: rreq.clone(),
                    lens: lens.clone(),
                },
                mtime_ns,
            };
            match self.peer_send(m, r, data.clone()).await {
                Ok(f) => remotes.push(f),
                Err(e) => send_failed = Some(e.msg),
            }
        }
        let local = self
            .queue_logged(&p, ver, sreq, reqid, Some(mtime_ns), false)
            .await;
        p.last.send_replace(ver);
        drop(g);
        // A replica cut off by the network never answers and its TCP
        // connection may never reset: stop waiting once the PG leaves this
        // interval (the new map's peering replaced `active`), and let the
        // client resend into the new interval. Nothing was acknowledged.
        let remote = {
            let mut interval = p.active.subscribe();
            let join = futures_join_all(remotes);
            tokio::pin!(join);
            loop {
                tokio::select! {
                    r = &mut join => break Some(r),
                    changed = interval.changed() => {
                        if changed.is_err() || interval.borrow().as_ref() != Some(&active) {
                            break None;
                        }
                    }
                }
            }
        };
        // The local write is awaited after the replicas: it is usually
        // durable first, and a oneshot completed before it is polled wakes
        // nobody, so the primary's worker is woken by the replicas'
        // replies only (one thread wake-up less per write). Awaited on
        // every path, as before, so nothing returns while it is queued.
        let local = match local {
            Ok((pending, _writing)) => pending.wait().await.map_err(WireError::from),
            Err(e) => Err(e),
        };
        let Some(remote) = remote else {
            tracing::info!(osd = self.id, %pg, "interval changed while waiting for replicas");
            return Err(WireError::retry(
                self.map().epoch + 1,
                format!("pg {pg} changed interval during replication"),
            ));
        };
        let mut replica_failed = send_failed;
        for r in remote {
            match r {
                Ok((Resp::Op(..), _)) => {
                    if local.is_err() {
                        replica_failed = Some("replica applied a write the primary refused".into());
                    }
                }
                Ok(_) => replica_failed = Some("unexpected replica response".to_string()),
                Err(e) => {
                    let same =
                        matches!(&local, Err(le) if le.errno == e.errno && e.retry_epoch.is_none());
                    if !same {
                        replica_failed = Some(e.msg);
                    }
                }
            }
        }
        if let Some(why) = replica_failed {
            // The acting set is no longer in step: re-peer (which brings every
            // member to the authority's state) and let the client resend.
            tracing::info!(osd = self.id, %pg, "replication failed ({why}); re-peering");
            if p.peer_gen.load(Ordering::SeqCst) == gen {
                p.active.send_replace(None);
                self.start_peering(p.clone(), self.map());
            }
            return Err(WireError::retry(
                self.map().epoch + 1,
                format!("pg {pg} re-peering: {why}"),
            ));
        }
        if let (Some(id), Ok(_)) = (reqid, &local) {
            lock(&p.done).insert(id, ver);
        }
        local
    }

    /// Queue a write at PG version `ver` to the local store together with
    /// its log entry (one atomic durable commit); the caller holds the
    /// PG's write lock, so ops are queued, logged and applied in version
    /// order. Await the returned op for durability. `uncached`: a
    /// replica's copy, whose large writes skip the page cache (see
    /// [`quarry_store::Logged::uncached`]); the primary's stay cached for
    /// its reads.
    async fn queue_logged(
        &self,
        p: &Arc<Pg>,
        ver: Ver,
        sreq: OpRequest,
        reqid: Option<(u64, u64)>,
        mtime_ns: Option<u64>,
        uncached: bool,
    ) -> WResult<(quarry_store::PendingOp, Writing)> {
        let user_oid = ObjectId {
            pool: p.id.pool,
            namespace: sreq.oid.namespace.clone(),
            name: sreq.oid.name.clone(),
        };
        let meta = lock(&p.meta).clone();
        let oldest = {
            let r = lock(&p.recent);
            (r.len() as u64 >= pglog::LOG_MAX)
                .then(|| r.front().copied())
                .flatten()
        };
        let (m, sys, failed) = if meta.count < pglog::LOG_MAX || oldest.is_some() {
            pglog::prepare(&self.store, p.id, &meta, ver, &user_oid, reqid, oldest)?
        } else {
            // The overwritten entry predates this process: read it (it is
            // committed, so this is a plain read transaction).
            let store = self.store.clone();
            let pg = p.id;
            blocking(move || pglog::prepare(&store, pg, &meta, ver, &user_oid, reqid, None)).await?
        };
        // Marked before it is queued, so a read that sees no mark ran
        // before the store knew of the write.
        let writing = Writing::new(p, &sreq.oid);
        let logged = quarry_store::Logged {
            sys,
            sys_failed: Some(failed),
            version: Some(pglog::object_version(ver)),
            mtime_ns,
            uncached,
        };
        let pending = match self.store.try_enqueue_logged(sreq, logged) {
            Ok(r) => r?,
            Err(back) => {
                let (req, l) = *back;
                // Store queue full: wait for space off the async workers,
                // still under the lock so the order holds.
                let store = self.store.clone();
                blocking(move || store.enqueue_logged_blocking(req, l)).await?
            }
        };
        // Mirror what the store will commit (ops failing on their own terms
        // are logged as well, so the meta advances either way).
        *lock(&p.meta) = m;
        let mut r = lock(&p.recent);
        r.push_back(ver);
        if r.len() as u64 > pglog::LOG_MAX {
            r.pop_front();
        }
        Ok((pending, writing))
    }

    /// Replace the PG's log by an empty one starting at `info` (a peer
    /// that sent no log with its activation) and remember where it starts.
    async fn reset_log(&self, p: &Arc<Pg>, info: PgInfo) -> WResult<()> {
        let store = self.store.clone();
        let pg = p.id;
        let last = info.last_update;
        let prev = lock(&p.meta).clone();
        let m = blocking(move || pglog::reset(&store, pg, &prev, info)).await?;
        *lock(&p.meta) = m;
        lock(&p.recent).clear();
        *lock(&p.done) = DupIndex::default();
        p.last.send_replace(last);
        Ok(())
    }

    /// Replace the PG's log by a copy of the authority's (after recovery
    /// made this member's objects the authority's), op ids included, and
    /// answer resends from it.
    async fn install_log(&self, p: &Arc<Pg>, tail: Ver, entries: Vec<pglog::Entry>) -> WResult<()> {
        let store = self.store.clone();
        let pg = p.id;
        let prev = lock(&p.meta).clone();
        let (m, entries) = blocking(move || {
            let m = pglog::install(&store, pg, &prev, tail, &entries)?;
            Ok::<_, RadosError>((m, entries))
        })
        .await?;
        let last = m.info.last_update;
        let kept = &entries[entries.len() - m.count as usize..];
        *lock(&p.recent) = kept.iter().map(|e| e.ver).collect();
        *lock(&p.done) = DupIndex::from_log(kept);
        *lock(&p.meta) = m;
        p.last.send_replace(last);
        Ok(())
    }

    /// Every op queued to the local store so far is durable (and the
    /// in-memory meta therefore matches the persisted one).
    async fn store_barrier(&self) -> WResult<()> {
        let store = self.store.clone();
        Ok(blocking(move || store.barrier()).await?)
    }

    /// A small read on the async worker. When its blocks are in the page
    /// cache it is answered at once. On a miss (the failed `RWF_NOWAIT`
    /// read has started the kernel's readahead):
    /// - if other inline reads are in progress, it waits on a timer and
    ///   tries again, so that one disk read does not stall the worker (and
    ///   with it every request of its connection) nor cost a hand-off to a
    ///   blocking thread per miss (more CPU per read than it saved when many
    ///   reads missed); bounded: after [`MISS_RETRIES`] tries it reads on a
    ///   blocking thread;
    /// - if it is the only one, it reads the disk right here: nobody waits
    ///   behind it, and the timer's 1-2 ms (tokio's resolution) would cost a
    ///   lone cold read, e.g. a VM booting from a clone at queue depth 1,
    ///   ten times the disk read itself.
    async fn read_inline(&self, sreq: &OpRequest) -> quarry_rados::Result<OpReply> {
        struct Count<'a>(&'a AtomicU64);
        impl Drop for Count<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.inline_reads.fetch_add(1, Ordering::Relaxed);
        let _count = Count(&self.inline_reads);
        let mut tries = 0;
        loop {
            match self.store.try_read_cached(sreq) {
                quarry_store::CachedRead::Done(r) => return r,
                quarry_store::CachedRead::Miss
                    if self.inline_reads.load(Ordering::Relaxed) == 1 =>
                {
                    return self.store.apply(sreq);
                }
                quarry_store::CachedRead::Miss if tries < MISS_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(MISS_RETRY).await;
                }
                _ => {
                    let store = self.store.clone();
                    let r2 = sreq.clone();
                    return blocking(move || store.apply(&r2)).await;
                }
            }
        }
    }

    async fn read_with_repair(
        &self,
        pg: PgId,
        active: &Active,
        sreq: OpRequest,
    ) -> WResult<OpReply> {
        let inline = inline_read(&sreq)
            && lock(&self.pg(pg)?.writing).quiet(&sreq.oid.namespace, &sreq.oid.name);
        let first = if inline {
            self.read_inline(&sreq).await
        } else {
            let store = self.store.clone();
            let r2 = sreq.clone();
            blocking(move || store.apply(&r2)).await
        };
        match first {
            Err(e) if e.errno == Errno::EIO => {
                tracing::warn!(osd = self.id, %pg, obj = %sreq.oid.name, "read error ({e}); repairing from a replica");
                let user_oid = ObjectId {
                    pool: pg.pool,
                    namespace: sreq.oid.namespace.clone(),
                    name: sreq.oid.name.clone(),
                };
                let p = self.pg(pg)?;
                let _g = p.write_lock.lock().await;
                let mut repaired = false;
                for &m in active.acting.iter().filter(|&&m| m != self.id) {
                    if let Ok((Resp::Export(exists), data)) = self
                        .peer_call(
                            m,
                            Request::Pull {
                                oid: user_oid.clone(),
                            },
                            Bytes::new(),
                        )
                        .await
                    {
                        self.install(pg, &user_oid, exists, data).await?;
                        repaired = true;
                        break;
                    }
                }
                if !repaired {
                    return Err(e.into());
                }
                let store = self.store.clone();
                Ok(blocking(move || store.apply(&sreq)).await?)
            }
            r => Ok(r?),
        }
    }

    // ---------------------------------------------------------------
    // OSD to OSD
    // ---------------------------------------------------------------

    async fn peer_conn(&self, osd: OsdId) -> WResult<Arc<Conn>> {
        let map = self.map();
        let (addr, up_from) = map
            .osds
            .get(&osd)
            .map(|o| (o.addr.clone(), o.up_from))
            .unwrap_or_default();
        if let Some(c) = quarry_client::table_conn(&self.peers, osd, &addr, up_from) {
            return Ok(c);
        }
        let ticket = self
            .monc
            .ticket()
            .await
            .map_err(|e| WireError::retry(map.epoch + 1, e.to_string()))?;
        let c = Conn::connect(&addr, &ticket, self.handshake_timeout)
            .await
            .map_err(|e| WireError::retry(map.epoch + 1, format!("osd.{osd}: {e}")))?;
        Ok(quarry_client::install_conn(
            &self.peers,
            osd,
            addr,
            up_from,
            c,
        ))
    }

    /// Close connections to peers the map says are down or restarted, so
    /// whatever waits on them fails now (and is retried on a new
    /// connection) instead of waiting out TCP's retransmission back-off
    /// once the peer is reachable again (Ceph marks such sessions down).
    fn prune_peers(&self, map: &ClusterMap) {
        // Booted again (marked down meanwhile, e.g. behind a cut link):
        // every connection this OSD made before may be stuck in TCP's
        // retransmission back-off for seconds after the link returns, and
        // whatever it carried belongs to ended intervals. Start afresh, as
        // a Ceph OSD rebinds its messengers when marked down.
        let mine = map
            .osds
            .get(&self.id)
            .filter(|o| o.up)
            .map_or(0, |o| o.up_from);
        let before = self.peers_up_from.fetch_max(mine, Ordering::AcqRel);
        if before != 0 && mine > before {
            let old: Vec<_> = lock(&self.peers).drain().collect();
            if !old.is_empty() {
                tracing::info!(
                    osd = self.id,
                    up_from = mine,
                    "booted again: closing {} connections to peers made before",
                    old.len()
                );
            }
            for (_, (_, _, c)) in old {
                c.close();
            }
        }
        lock(&self.peers).retain(|osd, (_, u, c)| {
            let keep = map.osds.get(osd).is_some_and(|o| o.up && o.up_from <= *u);
            if !keep {
                c.close();
            }
            keep
        });
    }

    /// Forget and close `conn` as the connection to `osd`.
    fn drop_peer(&self, osd: OsdId, conn: &Arc<Conn>) {
        let mut peers = lock(&self.peers);
        if peers
            .get(&osd)
            .is_some_and(|(_, _, c)| Arc::ptr_eq(c, conn))
        {
            peers.remove(&osd);
        }
        conn.close();
    }

    /// Queue a request to a peer now; the returned future is its answer.
    async fn peer_send(
        &self,
        osd: OsdId,
        req: Request,
        data: Bytes,
    ) -> WResult<impl std::future::Future<Output = WResult<(Resp, Bytes)>> + '_> {
        let c = self.peer_conn(osd).await?;
        let c2 = c.clone();
        let fail = move |e: quarry_client::conn::ConnError| {
            self.drop_peer(osd, &c2);
            WireError::retry(self.map().epoch + 1, format!("osd.{osd}: {e}"))
        };
        let f = match tokio::time::timeout(PEER_SEND_TIMEOUT, c.send(&req, data)).await {
            Ok(r) => r.map_err(fail.clone())?,
            Err(_) => {
                return Err(fail(quarry_client::conn::ConnError::Timeout(format!(
                    "{} (send queue full)",
                    c.addr()
                ))))
            }
        };
        Ok(async move {
            match f.await {
                Ok((Ok(r), d)) => Ok((r, d)),
                Ok((Err(e), _)) => Err(e),
                Err(e) => Err(fail(e)),
            }
        })
    }

    async fn peer_call(&self, osd: OsdId, req: Request, data: Bytes) -> WResult<(Resp, Bytes)> {
        let c = self.peer_conn(osd).await?;
        let r = tokio::time::timeout(PEER_CALL_TIMEOUT, c.call(&req, data))
            .await
            .unwrap_or_else(|_| {
                Err(quarry_client::conn::ConnError::Timeout(
                    c.addr().to_string(),
                ))
            });
        match r {
            Ok((Ok(r), d)) => Ok((r, d)),
            Ok((Err(e), _)) => Err(e),
            Err(e) => {
                self.drop_peer(osd, &c);
                Err(WireError::retry(
                    self.map().epoch + 1,
                    format!("osd.{osd}: {e}"),
                ))
            }
        }
    }

    async fn handle_peer(&self, from: OsdId, req: Request, data: Bytes) -> WResult<(Resp, Bytes)> {
        let (op, mtime_ns) = match req.into_rep_op() {
            Ok(r) => r,
            Err(other) => return self.handle_peer_other(*other, data).await,
        };
        let wire::RepOpFields {
            pg,
            epoch,
            ver,
            prev,
            reqid,
            mut req,
            lens,
        } = op;
        wire::fill_request(&mut req, &lens, &data)?;
        let map = self.map_at_least(epoch).await?;
        let p = self.pg(pg)?;
        if epoch < p.interval.load(Ordering::SeqCst) {
            return Err(WireError::new(
                Errno::ESHUTDOWN,
                format!("stale interval {epoch} for {pg} from osd.{from}"),
            ));
        }
        if map.pg_primary(pg).ok().flatten() != Some(from) {
            return Err(WireError::new(
                Errno::ESHUTDOWN,
                format!(
                    "osd.{from} is not the primary of {pg} at epoch {}",
                    map.epoch
                ),
            ));
        }
        // Apply in log order: wait (bounded) until the op before
        // this one was queued here; RepOps of one PG may be handled
        // concurrently even though they arrive in order.
        let mut rx = p.last.subscribe();
        let _ = tokio::time::timeout(OP_WAIT, rx.wait_for(|v| *v >= prev)).await;
        let g = p.write_lock.lock().await;
        if epoch < p.interval.load(Ordering::SeqCst) {
            return Err(WireError::new(
                Errno::ESHUTDOWN,
                format!("stale interval {epoch} for {pg} from osd.{from}"),
            ));
        }
        let last = *p.last.borrow();
        if last != prev {
            // A gap (a lost RepOp) or a replay: this member is out
            // of step; the primary re-peers.
            return Err(WireError::new(
                Errno::ESHUTDOWN,
                format!(
                    "{pg}: op {ver:?} follows {prev:?} but osd.{} is at {last:?}",
                    self.id
                ),
            ));
        }
        req.oid = store_oid(pg, &req.oid);
        let (pending, _writing) = self
            .queue_logged(&p, ver, req, reqid, mtime_ns, true)
            .await?;
        p.last.send_replace(ver);
        drop(g);
        let reply = pending.wait().await?;
        Ok((Resp::Op(reply, Vec::new()), Bytes::new()))
    }

    /// The OSD-to-OSD requests other than RepOps.
    async fn handle_peer_other(&self, req: Request, data: Bytes) -> WResult<(Resp, Bytes)> {
        match req {
            Request::PgQuery { pg, epoch } => {
                self.map_at_least(epoch).await?;
                let p = self.pg(pg)?;
                p.interval.fetch_max(epoch, Ordering::SeqCst);
                // Any write of the old interval is either queued here already
                // (the barrier makes it durable, so the info reports it) or
                // refused from now on (it checks the interval under the lock).
                let _g = p.write_lock.lock().await;
                self.store_barrier().await?;
                let info = lock(&p.meta).info.clone();
                Ok((Resp::Info(info), Bytes::new()))
            }
            Request::PgLog { pg, since } => {
                // The entries with their op ids go in the frame data, for a
                // member whose log becomes a copy of this one.
                let full = self.local_full_log(pg, since).await?;
                let data = match &full {
                    Some(f) => Bytes::from(pglog::encode_entries(f)?),
                    None => Bytes::new(),
                };
                let log = full.map(|f| f.into_iter().map(|e| (e.ver, e.oid)).collect());
                Ok((Resp::Log(log), data))
            }
            Request::PgObjects { pg } => {
                Ok((Resp::Objects(self.local_objects(pg).await?), Bytes::new()))
            }
            Request::Pull { oid } => {
                let map = self.map();
                let pg = map
                    .object_pg(oid.pool, &oid.namespace, &oid.name)
                    .map_err(|e| WireError::new(e.errno(), e.to_string()))?;
                let (exists, data) = self.read_state(pg, &oid).await?;
                Ok((Resp::Export(exists), data))
            }
            Request::Push {
                pg,
                epoch,
                oid,
                exists,
            } => {
                let p = self.pg(pg)?;
                if epoch < p.interval.load(Ordering::SeqCst) {
                    return Err(WireError::new(Errno::ESHUTDOWN, "stale push"));
                }
                let _g = p.write_lock.lock().await;
                self.install(pg, &oid, exists, data).await?;
                Ok((Resp::Unit, Bytes::new()))
            }
            Request::Activate { pg, epoch, info } => {
                let p = self.pg(pg)?;
                if epoch < p.interval.load(Ordering::SeqCst) {
                    return Err(WireError::new(Errno::ESHUTDOWN, "stale activate"));
                }
                p.interval.fetch_max(epoch, Ordering::SeqCst);
                let _g = p.write_lock.lock().await;
                let cur = lock(&p.meta).info.clone();
                if !data.is_empty() {
                    // Recovered: its log becomes the authority's (frame data).
                    let entries = pglog::decode_entries(&data)?;
                    let head = entries.last().map_or(info.log_tail, |e| e.ver);
                    if head != info.last_update {
                        return Err(WireError::new(
                            Errno::EINVAL,
                            format!(
                                "{pg}: activation log ends at {head}, info says {}",
                                info.last_update
                            ),
                        ));
                    }
                    self.install_log(&p, info.log_tail, entries).await?;
                } else if cur != info {
                    self.reset_log(&p, info).await?;
                } else {
                    if (lock(&p.recent).len() as u64) < cur_count(&p) {
                        // Back from a restart: learn which entries the next
                        // writes overwrite (see `remember_log`).
                        let meta = lock(&p.meta).clone();
                        let count = meta.count;
                        let store = self.store.clone();
                        let entries =
                            blocking(move || pglog::all_entries(&store, pg, &meta)).await?;
                        remember_log(&p, count, &entries);
                    }
                    // The first RepOp of the interval follows this version.
                    p.last.send_replace(info.last_update);
                }
                Ok((Resp::Unit, Bytes::new()))
            }
            Request::ScrubObject {
                pg,
                epoch,
                oid,
                upto,
            } => {
                let d = self.scrub_copy(pg, epoch, oid, upto).await?;
                Ok((Resp::Digest(d), Bytes::new()))
            }
            _ => Err(WireError::new(Errno::EINVAL, "unexpected request")),
        }
    }

    async fn local_log(&self, pg: PgId, since: Ver) -> WResult<Option<Vec<(Ver, ObjectId)>>> {
        let p = self.pg(pg)?;
        let meta = lock(&p.meta).clone();
        let store = self.store.clone();
        Ok(blocking(move || pglog::entries_since(&store, pg, &meta, since)).await?)
    }

    async fn local_full_log(&self, pg: PgId, since: Ver) -> WResult<Option<Vec<pglog::Entry>>> {
        let p = self.pg(pg)?;
        let meta = lock(&p.meta).clone();
        let store = self.store.clone();
        Ok(blocking(move || pglog::full_entries_since(&store, pg, &meta, since)).await?)
    }

    /// Every object of `pg` here with a head or a clone (backfill copies
    /// both: a head removed after a snapshot leaves only clones).
    async fn local_objects(&self, pg: PgId) -> WResult<Vec<ObjectId>> {
        let store = self.store.clone();
        let list = blocking(move || store.list_all(spool(pg))).await?;
        Ok(list
            .into_iter()
            .map(|e| ObjectId {
                pool: pg.pool,
                namespace: e.namespace,
                name: e.name,
            })
            .collect())
    }

    /// An object's complete state here (head, clones, versions, omap,
    /// xattrs: the store's export) and whether it exists.
    async fn read_state(&self, pg: PgId, oid: &ObjectId) -> WResult<(bool, Bytes)> {
        let soid = store_oid(pg, oid);
        let store = self.store.clone();
        Ok(match blocking(move || store.export_object(&soid)).await? {
            Some(b) => (true, Bytes::from(b)),
            None => (false, Bytes::new()),
        })
    }

    /// Make this OSD's copy of `oid` identical to an export (caller holds
    /// the write lock); `exists == false` removes every instance.
    async fn install(&self, pg: PgId, oid: &ObjectId, exists: bool, data: Bytes) -> WResult<()> {
        let soid = store_oid(pg, oid);
        let state = exists.then(|| data.to_vec());
        let store = self.store.clone();
        blocking(move || store.import_object(&soid, state)).await?;
        Ok(())
    }

    // ---------------------------------------------------------------
    // Map changes and peering
    // ---------------------------------------------------------------

    async fn map_loop(self: Arc<Self>) {
        let mut rx = self.monc.subscribe();
        let mut removed_seen: HashMap<PoolId, usize> = HashMap::new();
        let mut first = true;
        let delay = inject_map_delay();
        loop {
            let map = rx.borrow_and_update().clone();
            self.on_map(&map, &mut removed_seen, first).await;
            first = false;
            if rx.changed().await.is_err() {
                return;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
        }
    }

    async fn on_map(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        removed_seen: &mut HashMap<PoolId, usize>,
        first: bool,
    ) {
        self.prune_peers(map);
        if !map.blocklist.is_empty() {
            // A fenced client's watches go (as Ceph's OSDs drop them): it
            // no longer shows as a watcher nor receives notifications.
            let now = now_unix();
            lock(&self.watches).retain(|_, v| {
                v.retain(|w| !w.ip.is_some_and(|ip| map.is_blocklisted(ip, w.client, now)));
                !v.is_empty()
            });
        }
        for (&pool, def) in &map.pools {
            for seed in 0..def.pg_num {
                let pg = PgId { pool, seed };
                let up = map.pg_up_set(pg).unwrap_or_default();
                if up.first() == Some(&self.id) {
                    let Ok(p) = self.pg(pg) else { continue };
                    let cur = p.active.borrow().clone();
                    // Booted again since it activated (it was marked down
                    // meanwhile and may have missed maps and writes): peer anew.
                    // A min_size raised above the acting set ends the
                    // interval too (as Ceph's): the PG stops serving I/O
                    // until enough members are up.
                    let below_min = (up.len() as u32) < def.min_size.max(1);
                    let needs = match &cur {
                        Some(a) => a.acting != up || a.rebooted(map, self.id) || below_min,
                        None => lock(&p.peering_for).as_ref() != Some(&up),
                    };
                    if cur.as_ref().is_some_and(|a| a.rebooted(map, self.id)) {
                        // Clients moved their watches elsewhere meanwhile.
                        self.drop_watches(map, pg);
                    }
                    if needs {
                        self.start_peering(p, map.clone());
                    }
                } else if let Some(p) = lock(&self.pgs).get(&pg).cloned() {
                    if p.active.borrow().is_some() || lock(&p.peering_for).is_some() {
                        p.peer_gen.fetch_add(1, Ordering::SeqCst);
                        *lock(&p.peering_for) = None;
                        p.active.send_replace(None);
                        self.drop_watches(map, pg);
                    }
                }
            }
        }
        self.map_done.fetch_max(map.epoch, Ordering::SeqCst);
        // Snapshot trimming: removed_snaps only grows.
        let held: Vec<PoolId> = {
            let store = self.store.clone();
            blocking(move || store.pools_with_data())
                .await
                .unwrap_or_default()
        };
        for (&pool, def) in &map.pools {
            let seen = removed_seen.get(&pool).copied().unwrap_or(0);
            if def.removed_snaps.len() > seen || (first && !def.removed_snaps.is_empty()) {
                let snaps = def.removed_snaps.clone();
                for &sp in held.iter().filter(|&&sp| sp >> 32 == pool) {
                    let store = self.store.clone();
                    let snaps = snaps.clone();
                    if let Err(e) = blocking(move || store.trim_snaps(sp, &snaps)).await {
                        tracing::warn!(osd = self.id, pool, "snap trim failed: {e}");
                    }
                }
                removed_seen.insert(pool, def.removed_snaps.len());
            }
        }
        // Deleted pools.
        for &sp in &held {
            if !map.pools.contains_key(&(sp >> 32)) {
                let store = self.store.clone();
                let _ = blocking(move || store.remove_pool(sp)).await;
            }
        }
    }

    /// Forget the watches on objects of `pg`: this OSD stopped being its
    /// primary (or was marked down meanwhile), and clients re-register
    /// their watches with the new primary. Kept, they would outlive an
    /// unwatch sent to that primary and show the image busy for good once
    /// this OSD is primary again.
    fn drop_watches(&self, map: &ClusterMap, pg: PgId) {
        lock(&self.watches)
            .retain(|oid, _| map.object_pg(oid.pool, &oid.namespace, &oid.name).ok() != Some(pg));
    }

    fn start_peering(self: &Arc<Self>, p: Arc<Pg>, map: Arc<ClusterMap>) {
        let gen = p.peer_gen.fetch_add(1, Ordering::SeqCst) + 1;
        p.active.send_replace(None);
        *lock(&p.peering_for) = Some(map.pg_up_set(p.id).unwrap_or_default());
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = me.peering.acquire().await else {
                return;
            };
            loop {
                if p.peer_gen.load(Ordering::SeqCst) != gen {
                    return;
                }
                match me.peer(&p, &map, gen).await {
                    Ok(done) => {
                        if !done && p.peer_gen.load(Ordering::SeqCst) == gen {
                            // Cannot go active at this map: the next map retries.
                            *lock(&p.peering_for) = None;
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::info!(osd = me.id, pg = %p.id, "peering: {e}; retrying");
                        tokio::time::sleep(PEER_RETRY).await;
                    }
                }
            }
        });
    }

    /// One peering attempt. `Ok(false)`: the PG cannot go active at this map.
    async fn peer(&self, p: &Arc<Pg>, map: &Arc<ClusterMap>, gen: u64) -> WResult<bool> {
        let pg = p.id;
        let cancelled = || p.peer_gen.load(Ordering::SeqCst) != gen;
        let Some(def) = map.pools.get(&pg.pool) else {
            return Ok(false);
        };
        let acting = map
            .pg_up_set(pg)
            .map_err(|e| WireError::new(e.errno(), e.to_string()))?;
        if acting.first() != Some(&self.id) {
            return Ok(false);
        }
        if (acting.len() as u32) < def.min_size.max(1) {
            tracing::info!(osd = self.id, %pg, ?acting, "fewer than min_size members up; waiting");
            return Ok(false);
        }
        let epoch = map.epoch;
        p.interval.fetch_max(epoch, Ordering::SeqCst);
        let _g = p.write_lock.lock().await;
        // Writes this OSD queued as primary of an earlier interval are
        // durable, so its own info below is what its store holds.
        self.store_barrier().await?;
        // 1. Gather infos.
        let mut infos: BTreeMap<OsdId, PgInfo> = BTreeMap::new();
        infos.insert(self.id, lock(&p.meta).info.clone());
        for &m in acting.iter().filter(|&&m| m != self.id) {
            match self
                .peer_call(m, Request::PgQuery { pg, epoch }, Bytes::new())
                .await?
            {
                (Resp::Info(i), _) => {
                    infos.insert(m, i);
                }
                _ => return Err(WireError::new(Errno::EIO, "bad PgQuery reply")),
            }
        }
        if cancelled() {
            return Ok(false);
        }
        // 2. Pick the authority among members of the last recorded acting set.
        let hist = map.pg_history.get(&pg);
        let candidates: Vec<OsdId> = match hist {
            Some(h) => acting
                .iter()
                .copied()
                .filter(|m| h.acting.contains(m))
                .collect(),
            None => acting.clone(),
        };
        if candidates.is_empty() {
            tracing::warn!(osd = self.id, %pg, ?acting, history = ?hist, "no member of the last acting set is up; waiting");
            return Ok(false);
        }
        let auth = candidates
            .iter()
            .copied()
            .max_by_key(|m| (infos[m].last_update, *m == self.id))
            .unwrap_or(self.id);
        let auth_info = infos[&auth].clone();
        let auth_lu = auth_info.last_update;
        // 3. Objects each lagging member must receive.
        let mut plans: BTreeMap<OsdId, BTreeSet<ObjectId>> = BTreeMap::new();
        let mut auth_view: Option<Option<pglog::LogView>> = None;
        for (&m, info) in &infos {
            if info.last_update == auth_lu {
                continue;
            }
            let set: BTreeSet<ObjectId> = match self.log_of(auth, pg, info.last_update).await? {
                Some(entries) => {
                    let n = entries.len();
                    let set: BTreeSet<ObjectId> = entries.into_iter().map(|(_, o)| o).collect();
                    tracing::info!(
                        osd = self.id,
                        %pg,
                        member = m,
                        authority = auth,
                        from = ?info.last_update,
                        to = ?auth_lu,
                        "recovering {} objects named by {n} log entries",
                        set.len()
                    );
                    set
                }
                None => {
                    // The member's last update is not in the authority's
                    // log: it diverged (it holds entries the authority's
                    // history never had), or it is behind the log's tail.
                    // Compare the whole logs to find where they forked.
                    if auth_view.is_none() {
                        auth_view = Some(self.log_view(auth, pg, &auth_info).await?);
                    }
                    let member = self.log_view(m, pg, info).await?;
                    let catchup = match (auth_view.as_ref().and_then(|a| a.as_ref()), &member) {
                        (Some(a), Some(mv)) => pglog::compare(mv, a),
                        _ => pglog::Catchup::Backfill,
                    };
                    match catchup {
                        pglog::Catchup::Behind(objects) => objects,
                        pglog::Catchup::Diverged {
                            common,
                            divergent,
                            objects,
                        } => {
                            tracing::warn!(
                                osd = self.id,
                                %pg,
                                member = m,
                                authority = auth,
                                ?common,
                                divergent = ?divergent.iter().map(|e| e.0).collect::<Vec<_>>(),
                                "rewinding {} divergent log entries: {} objects recovered from the authority",
                                divergent.len(),
                                objects.len()
                            );
                            objects
                        }
                        pglog::Catchup::Backfill => {
                            // Backfill: everything either side holds
                            // (heads and objects with only clones left).
                            let mut s: BTreeSet<ObjectId> =
                                self.objects_of(auth, pg).await?.into_iter().collect();
                            s.extend(self.objects_of(m, pg).await?);
                            tracing::info!(
                                osd = self.id,
                                %pg,
                                member = m,
                                authority = auth,
                                "backfilling {} objects: the authority's log no longer reaches back to the member's",
                                s.len()
                            );
                            s
                        }
                    }
                }
            };
            plans.insert(m, set);
        }
        // The authority's whole log with its op ids: every lagging member's
        // log becomes a copy of it (Ceph sends the authoritative log with
        // the activation likewise), so whichever member is primary later
        // recognises resends of the ops it records.
        let auth_log = if plans.is_empty() {
            Vec::new()
        } else {
            let log = self.full_log_of(auth, pg, auth_info.log_tail).await?;
            match log {
                Some(l) if l.last().map_or(auth_info.log_tail, |e| e.ver) == auth_lu => l,
                _ => {
                    return Err(WireError::new(
                        Errno::EAGAIN,
                        format!("osd.{auth}'s log of {pg} changed since it reported {auth_lu}"),
                    ))
                }
            }
        };
        let auth_tail = auth_info.log_tail;
        // 4. Bring this OSD up to date from the authority first.
        if let Some(set) = plans.remove(&self.id) {
            for oid in set {
                if cancelled() {
                    return Ok(false);
                }
                let (exists, data) = match self
                    .peer_call(auth, Request::Pull { oid: oid.clone() }, Bytes::new())
                    .await?
                {
                    (Resp::Export(e), d) => (e, d),
                    _ => return Err(WireError::new(Errno::EIO, "bad Pull reply")),
                };
                self.install(pg, &oid, exists, data).await?;
            }
            self.install_log(p, auth_tail, auth_log.clone()).await?;
        }
        // 5. Push to the others.
        for (m, set) in &plans {
            for oid in set {
                if cancelled() {
                    return Ok(false);
                }
                let (exists, data) = self.read_state(pg, oid).await?;
                self.peer_call(
                    *m,
                    Request::Push {
                        pg,
                        epoch,
                        oid: oid.clone(),
                        exists,
                    },
                    data,
                )
                .await?;
            }
        }
        let log_data = Bytes::from(pglog::encode_entries(&auth_log)?);
        for &m in acting.iter().filter(|&&m| m != self.id) {
            let (info, data) = if plans.contains_key(&m) {
                let info = PgInfo {
                    last_update: auth_lu,
                    log_tail: auth_tail,
                };
                (info, log_data.clone())
            } else {
                (infos[&m].clone(), Bytes::new())
            };
            self.peer_call(m, Request::Activate { pg, epoch, info }, data)
                .await?;
        }
        if cancelled() {
            return Ok(false);
        }
        // 6. Record the acting set before serving any write.
        self.monc
            .pg_activated(pg, epoch, acting.clone())
            .await
            .map_err(|e| WireError::new(e.errno(), format!("pg_activated: {e}")))?;
        if cancelled() {
            return Ok(false);
        }
        let next = if auth_lu.epoch == epoch {
            auth_lu.seq + 1
        } else {
            1
        };
        p.next_seq.store(next, Ordering::SeqCst);
        // Resends of ops this member's log records as applied are answered
        // from it (a recovered member's log is a copy of the authority's).
        let meta = lock(&p.meta).clone();
        let store = self.store.clone();
        let count = meta.count;
        let entries = blocking(move || pglog::all_entries(&store, pg, &meta)).await?;
        *lock(&p.done) = DupIndex::from_log(&entries);
        remember_log(p, count, &entries);
        // The first write of the interval follows the authority's last one
        // (which every member now holds); replicas check that link.
        p.last.send_replace(auth_lu);
        p.active.send_replace(Some(Active { epoch, acting }));
        tracing::info!(osd = self.id, %pg, epoch, "active");
        Ok(true)
    }

    /// `osd`'s log entries after `since` (`None`: its log cannot prove it
    /// holds all of them).
    async fn log_of(
        &self,
        osd: OsdId,
        pg: PgId,
        since: Ver,
    ) -> WResult<Option<Vec<(Ver, ObjectId)>>> {
        if osd == self.id {
            return self.local_log(pg, since).await;
        }
        match self
            .peer_call(osd, Request::PgLog { pg, since }, Bytes::new())
            .await?
        {
            (Resp::Log(l), _) => Ok(l),
            _ => Err(WireError::new(Errno::EIO, "bad PgLog reply")),
        }
    }

    /// `osd`'s log entries after `since` with their op ids (`None`: its log
    /// cannot prove it holds all of them).
    async fn full_log_of(
        &self,
        osd: OsdId,
        pg: PgId,
        since: Ver,
    ) -> WResult<Option<Vec<pglog::Entry>>> {
        if osd == self.id {
            return self.local_full_log(pg, since).await;
        }
        match self
            .peer_call(osd, Request::PgLog { pg, since }, Bytes::new())
            .await?
        {
            (Resp::Log(None), _) => Ok(None),
            (Resp::Log(Some(_)), data) if !data.is_empty() => {
                Ok(Some(pglog::decode_entries(&data)?))
            }
            _ => Err(WireError::new(Errno::EIO, "bad PgLog reply (no entries)")),
        }
    }

    /// `osd`'s whole log (from the tail its info reports; `None` if a slot
    /// is missing or the log changed since the query).
    async fn log_view(
        &self,
        osd: OsdId,
        pg: PgId,
        info: &PgInfo,
    ) -> WResult<Option<pglog::LogView>> {
        let entries = self.log_of(osd, pg, info.log_tail).await?;
        Ok(entries.and_then(|entries| {
            let v = pglog::LogView {
                tail: info.log_tail,
                entries,
            };
            (v.head() == info.last_update).then_some(v)
        }))
    }

    async fn objects_of(&self, osd: OsdId, pg: PgId) -> WResult<Vec<ObjectId>> {
        if osd == self.id {
            return self.local_objects(pg).await;
        }
        match self
            .peer_call(osd, Request::PgObjects { pg }, Bytes::new())
            .await?
        {
            (Resp::Objects(v), _) => Ok(v),
            _ => Err(WireError::new(Errno::EIO, "bad PgObjects reply")),
        }
    }
}

/// Remember the versions of the PG's log entries (oldest first) when the
/// whole log was read, so a write to a full log knows the entry it
/// overwrites without a store read. After a restart `recent` starts empty,
/// and until 1000 writes per PG had passed each write read that entry on
/// the blocking pool (a thread hand-off per write).
fn remember_log(p: &Pg, count: u64, entries: &[pglog::Entry]) {
    if entries.len() as u64 == count {
        *lock(&p.recent) = entries.iter().map(|e| e.ver).collect();
    }
}

/// Entries in the PG's log as the in-memory meta counts them.
fn cur_count(p: &Pg) -> u64 {
    lock(&p.meta).count
}

/// Await every future concurrently, keeping order (replica counts are tiny,
/// so polling all on each wake is cheaper than a dependency).
async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut handles: Vec<std::pin::Pin<Box<F>>> = fs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..handles.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (h, r) in handles.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match h.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Whether a request's first poll runs in its connection's reader task
/// (see `serve_conn`): client ops the store answers on the worker itself
/// ([`inline_read`]: small bounded reads and metadata).
fn runs_inline(req: &Request) -> bool {
    matches!(req, Request::Op { req, .. } if inline_read(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_marks_find_borrowed_names() {
        let mut w = WriteMarks::default();
        assert!(w.quiet("ns", "a"));
        w.objects.insert(("ns".into(), "a".into()), (1, None));
        assert!(!w.quiet("ns", "a"));
        assert!(w.quiet("", "nsa"));
        assert!(w.quiet("n", "sa"));
        assert!(w.quiet("ns", "b"));
        w.objects.insert(
            ("ns".into(), "b".into()),
            (0, Some(std::time::Instant::now())),
        );
        assert!(!w.quiet("ns", "b"));
    }

    #[test]
    fn duplicate_index_is_what_the_log_records() {
        let v = |epoch, seq| Ver { epoch, seq };
        let e = |ver, reqid, ok| pglog::Entry {
            ver,
            oid: ObjectId::new(1, "o"),
            reqid,
            ok,
        };
        let d = DupIndex::from_log(&[
            e(v(3, 4), Some((7, 1)), true),
            e(v(3, 5), Some((7, 2)), false),
            e(v(3, 6), None, true),
            e(v(5, 1), Some((8, 1)), true),
        ]);
        // Applied client ops only: a failed one runs again on a resend.
        assert_eq!(d.ids.get(&(7, 1)), Some(&v(3, 4)));
        assert_eq!(d.ids.get(&(8, 1)), Some(&v(5, 1)));
        assert!(!d.ids.contains_key(&(7, 2)));
        assert_eq!(d.order, VecDeque::from([(7, 1), (8, 1)]));
    }
}
