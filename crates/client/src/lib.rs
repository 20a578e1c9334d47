//! The networked object-layer client: [`quarry_rados::Rados`] over a cluster.
//!
//! [`ClusterClient`] authenticates to the monitors with `quarry-monc`,
//! follows the cluster map, and computes placement itself (object → PG →
//! primary OSD) for every op; nobody is asked per I/O. It keeps one
//! pipelined connection per OSD ([`conn::Conn`]): many requests in flight,
//! matched by request id.
//!
//! Retry rule (as librados): an op is resent, never failed, while its PG has
//! no active primary, while the target OSD is unreachable, or when the OSD
//! answers "retry with map epoch E" (it is not the primary at its newer map,
//! or the PG is still peering). Only `rados_osd_op_timeout` (0 = forever)
//! turns waiting into `ETIMEDOUT`. Real errors (ENOENT, EEXIST, ERANGE...)
//! come back at once.
//!
//! Architecture invariant: this crate never touches a disk; it knows
//! placement and the wire, not object semantics (the OSD's store does).
//! The OSD protocol itself lives in [`wire`] so the OSD daemon reuses it
//! (and [`conn::Conn`] for OSD↔OSD traffic).

pub mod conn;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use quarry_common::Errno;
use quarry_map::{ClusterMap, Epoch, OsdId, PgId};
use quarry_monc::{MonClient, MonClientConfig, MonClientError, MonCommand, MonReply};
use quarry_proto::Frame;
use quarry_rados::{
    ListEntry, NotifyEvent, NotifyResult, ObjectId, OpReply, OpRequest, PoolId, PoolInfo, PoolStat,
    Rados, RadosError, Result, SnapId, WatchCallback, WatchError, WatchEvent, Watcher,
    NOTIFY_PAYLOAD_MAX, NOTIFY_TIMEOUT_MAX,
};
use tokio::sync::mpsc;

use conn::{Conn, ConnError, EventSink};

/// How long a pool's PGs get to answer a pool stat before the monitors'
/// figures stand in (see `pool_stat`).
const POOL_STAT_WAIT: Duration = Duration::from_secs(5);
use wire::{Event, Request, Resp};

/// Timeouts of a cluster client.
#[derive(Clone, Copy, Debug)]
pub struct ClientTimeouts {
    /// Bound on reaching the monitors (connect, commands).
    pub mon: Duration,
    /// `rados_osd_op_timeout`: `None` (0) waits forever, as Ceph.
    pub osd_op: Option<Duration>,
    /// Bound on one OSD connection handshake.
    pub connect: Duration,
    /// Keepalive of the monitor session (`mon_client_ping_interval`,
    /// `mon_client_ping_timeout`).
    pub mon_ping: quarry_monc::MonPing,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            mon: Duration::from_secs(30),
            osd_op: None,
            connect: Duration::from_secs(10),
            mon_ping: quarry_monc::MonPing::default(),
        }
    }
}

impl ClientTimeouts {
    /// From Ceph's options, in seconds: `client_mount_timeout` (0: the
    /// default 300), `rados_osd_op_timeout` (0: wait forever, as Ceph) and
    /// `ms_connection_ready_timeout` (one OSD connection's handshake; 0:
    /// the default 10).
    pub fn from_options(mount: u64, osd_op: u64, ready: u64) -> ClientTimeouts {
        let or = |v: u64, d: u64| Duration::from_secs(if v == 0 { d } else { v });
        ClientTimeouts {
            mon: or(mount, 300),
            osd_op: (osd_op > 0).then(|| Duration::from_secs(osd_op)),
            connect: or(ready, 10),
            mon_ping: quarry_monc::MonPing::default(),
        }
    }

    /// With the monitor keepalive from `mon_client_ping_interval` and
    /// `mon_client_ping_timeout` (seconds; an interval of 0 disables the
    /// pings; negative or non-finite values keep the defaults).
    pub fn with_mon_ping(mut self, interval_secs: f64, timeout_secs: f64) -> ClientTimeouts {
        let secs = |v: f64| (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v));
        let d = quarry_monc::MonPing::default();
        self.mon_ping = quarry_monc::MonPing {
            interval: secs(interval_secs).unwrap_or(d.interval),
            timeout: secs(timeout_secs)
                .filter(|t| !t.is_zero())
                .unwrap_or(d.timeout),
        };
        self
    }
}

/// Connections by OSD, with the address and `up_from` epoch each was made
/// for (shared with the OSD daemon's table of peers).
pub type ConnTable = HashMap<OsdId, (String, Epoch, Arc<Conn>)>;

/// Whether `entry` may serve requests to an OSD at `addr` that is up
/// since `up_from`: open, and made for that OSD instance (a connection
/// made at a newer map than the caller's is as good).
fn conn_serves(entry: &(String, Epoch, Arc<Conn>), addr: &str, up_from: Epoch) -> bool {
    let (a, u, c) = entry;
    !c.is_closed() && (*u > up_from || (a == addr && *u == up_from))
}

/// The open connection in `table` to `osd` at `addr` (up since
/// `up_from`), if there is one.
pub fn table_conn(
    table: &Mutex<ConnTable>,
    osd: OsdId,
    addr: &str,
    up_from: Epoch,
) -> Option<Arc<Conn>> {
    lock(table)
        .get(&osd)
        .filter(|e| conn_serves(e, addr, up_from))
        .map(|e| e.2.clone())
}

/// Record `new`, just made to `osd` at `addr` (up since `up_from`), in
/// `table` and return the connection to use. Several tasks may connect to
/// one OSD at once; when another one recorded a usable connection
/// meanwhile, that one is kept and `new` (nothing sent on it yet) is
/// closed. Replacing it instead would fail the requests already in
/// flight on it, and each would pause before resending.
pub fn install_conn(
    table: &Mutex<ConnTable>,
    osd: OsdId,
    addr: String,
    up_from: Epoch,
    new: Arc<Conn>,
) -> Arc<Conn> {
    let mut t = lock(table);
    if let Some(e) = t.get(&osd).filter(|e| conn_serves(e, &addr, up_from)) {
        let kept = e.2.clone();
        drop(t);
        new.close();
        return kept;
    }
    if let Some((_, _, old)) = t.insert(osd, (addr, up_from, new.clone())) {
        // Requests still waiting on it are resent by their callers.
        old.close();
    }
    new
}

/// Append one line per connection of `table` to `s`, by OSD: its address,
/// `up_from`, whether it is open and how many responses it awaits, each
/// after `prefix` (the state dumps of the client and of an OSD's peers).
pub fn dump_conns(table: &ConnTable, prefix: &str, s: &mut String) {
    use std::fmt::Write;
    let mut conns: Vec<_> = table
        .iter()
        .map(|(o, (a, u, c))| (*o, a.as_str(), *u, c.is_closed(), c.pending()))
        .collect();
    conns.sort();
    for (o, a, u, closed, pending) in conns {
        let _ = writeln!(
            s,
            "{prefix}osd.{o} {a} (up_from {u}): {}, {pending} awaiting a response",
            if closed { "closed" } else { "open" }
        );
    }
}

/// Convert a monitor client error to the object layer's error.
pub fn mon_err(e: MonClientError) -> RadosError {
    RadosError::new(e.errno(), e.to_string())
}

/// The networked [`Rados`] implementation.
pub struct ClusterClient {
    monc: Arc<MonClient>,
    timeouts: ClientTimeouts,
    /// One connection per OSD, with the address and `up_from` epoch it
    /// was made for (a new `up_from` means the OSD restarted or was marked
    /// down meanwhile: the old connection is closed, see [`Self::prune_conns`]).
    conns: Mutex<ConnTable>,
    /// One connect at a time per OSD: the tasks that find no connection
    /// queue here and the first one's connection serves them all.
    connecting: Mutex<HashMap<OsdId, Arc<tokio::sync::Mutex<()>>>>,
    /// Connections this client has made to OSDs (handshakes completed).
    conns_made: AtomicU64,
    next_cookie: AtomicU64,
    /// Op ids (see `Request::Op::tid`); never 0.
    next_tid: AtomicU64,
    /// Watches this client holds, by cookie (see [`WatchReg`]).
    watches: Mutex<HashMap<u64, WatchReg>>,
    /// Notification callbacks of watches, by cookie.
    callbacks: Mutex<HashMap<u64, WatchCallback>>,
    /// Where every OSD connection hands watch events (see `event_loop`).
    events: EventSink,
    /// Requests waiting for an answer, for [`ClusterClient::debug_dump`].
    in_flight: Mutex<HashMap<u64, InFlight>>,
    next_trace: AtomicU64,
}

/// A request waiting in [`ClusterClient::pg_call_on`] (or a monitor
/// command), as [`ClusterClient::debug_dump`] shows it.
struct InFlight {
    /// What the request is, when named up front (monitor commands).
    what: String,
    /// The request last sent to an OSD: described only when dumped (a
    /// description per op cost ~2% of a client's CPU at 4 KiB).
    req: Option<Arc<Request>>,
    pg: Option<PgId>,
    since: Instant,
    /// Target of the latest send and the map epoch it carried.
    osd: Option<OsdId>,
    epoch: Epoch,
    sends: u32,
    /// Why the previous attempt did not finish.
    last: String,
}

/// Removes its [`InFlight`] entry when the request finishes or is dropped.
struct Tracked<'a> {
    client: &'a ClusterClient,
    id: u64,
}

impl Tracked<'_> {
    fn update(&self, f: impl FnOnce(&mut InFlight)) {
        if let Some(t) = lock(&self.client.in_flight).get_mut(&self.id) {
            f(t);
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        lock(&self.client.in_flight).remove(&self.id);
    }
}

/// One line naming a request (object, op kinds) for the debug dump.
fn describe(req: &Request) -> String {
    let mut s = match req {
        Request::Op { tid, req, .. } => format!(
            "op tid {tid} on {}/{:?}/{}: {:?}",
            req.oid.pool, req.oid.namespace, req.oid.name, req.ops
        ),
        Request::Watch { oid, cookie, .. } => format!("watch {cookie} on {}", oid.name),
        Request::Unwatch { oid, cookie, .. } => format!("unwatch {cookie} on {}", oid.name),
        Request::ListWatchers { oid, .. } => format!("list watchers of {}", oid.name),
        Request::Notify {
            oid, timeout_ms, ..
        } => format!("notify {} (timeout {timeout_ms} ms)", oid.name),
        Request::NotifyAck {
            oid,
            notify_id,
            cookie,
            ..
        } => format!("notify ack {notify_id} for watch {cookie} on {}", oid.name),
        Request::ListPg { pg, .. } => format!("list pg {pg}"),
        Request::PoolStat { pool, .. } => format!("stat pool {pool}"),
        Request::Scrub { pg, repair, .. } => {
            format!("{} pg {pg}", if *repair { "repair" } else { "deep-scrub" })
        }
        Request::ScrubResult { pg, .. } => format!("scrub result of pg {pg}"),
        _ => "peer request".to_string(),
    };
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// Watch events queued for dispatch before connections drop them.
const EVENT_QUEUE: usize = 1024;

/// A watch and where it is registered. OSDs keep watches per connection on
/// the primary only, so the client re-registers a watch whenever that
/// connection is gone (OSD killed or restarted) or the object's primary
/// changed (failover, rebalancing): the watch survives, as librados'.
struct WatchReg {
    oid: ObjectId,
    osd: OsdId,
    conn: Weak<Conn>,
}

/// How often held watches are checked besides on every new map.
const WATCH_CHECK: Duration = Duration::from_secs(1);
/// Bound on one re-registration attempt (retried at the next check).
const WATCH_REREGISTER: Duration = Duration::from_secs(10);

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("monc", &self.monc)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pause between attempts while the cluster is not ready for an op.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for a newer map before asking the monitor again.
const MAP_WAIT: Duration = Duration::from_secs(1);

impl ClusterClient {
    /// Authenticate to the monitors as `entity` with `secret` and connect.
    pub async fn connect(
        mon_addrs: Vec<String>,
        entity: &str,
        secret: quarry_auth::Secret,
        timeouts: ClientTimeouts,
    ) -> Result<Arc<ClusterClient>> {
        let monc = MonClient::connect(MonClientConfig {
            mon_addrs,
            entity: entity.to_string(),
            secret,
            timeout: timeouts.mon,
            ping: timeouts.mon_ping,
        })
        .await
        .map_err(mon_err)?;
        Ok(Self::with_monc(monc, timeouts))
    }

    /// Build on an already connected monitor client.
    pub fn with_monc(monc: Arc<MonClient>, timeouts: ClientTimeouts) -> Arc<ClusterClient> {
        let (tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let events = EventSink {
            tx,
            lost: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let c = Arc::new(ClusterClient {
            monc,
            timeouts,
            conns: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            conns_made: AtomicU64::new(0),
            next_cookie: AtomicU64::new(1),
            next_tid: AtomicU64::new(1),
            watches: Mutex::new(HashMap::new()),
            callbacks: Mutex::new(HashMap::new()),
            events,
            in_flight: Mutex::new(HashMap::new()),
            next_trace: AtomicU64::new(1),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(watch_keeper(Arc::downgrade(&c)));
            rt.spawn(event_loop(Arc::downgrade(&c), events_rx));
        }
        c
    }

    /// Register (or, `again`, re-register) watch `cookie` on the object's
    /// primary and remember where.
    async fn register_watch(&self, oid: &ObjectId, cookie: u64, again: bool) -> Result<()> {
        let pg = self.object_pg(oid).await?;
        let (resp, _, osd, conn) = self
            .pg_call_on(
                pg,
                |epoch| Request::Watch {
                    epoch,
                    oid: oid.clone(),
                    cookie,
                },
                Bytes::new(),
            )
            .await?;
        match resp {
            Resp::Cookie(_) => {
                tracing::debug!(cookie, obj = %oid.name, osd, "watch registered");
                let unwatched = {
                    let mut watches = lock(&self.watches);
                    if again && !watches.contains_key(&cookie) {
                        true
                    } else {
                        watches.insert(
                            cookie,
                            WatchReg {
                                oid: oid.clone(),
                                osd,
                                conn: Arc::downgrade(&conn),
                            },
                        );
                        false
                    }
                };
                if !unwatched {
                    return Ok(());
                }
                // Unwatched while this re-registration was in flight: the
                // OSD may have applied the unwatch first (both can wait
                // there for the PG), so undo this registration, or it
                // would keep the object watched for good.
                tracing::debug!(cookie, obj = %oid.name, "unwatched meanwhile; unregistering");
                match self.send_unwatch(oid, cookie).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.errno == Errno::ENOENT => Ok(()),
                    Err(e) => Err(e),
                }
            }
            _ => Err(unexpected("watch")),
        }
    }

    /// Drop every held watch of this client once the map blocklists it
    /// (the OSDs dropped them already and refuse to take them again), and
    /// tell their callbacks `ESHUTDOWN` (Ceph's `EBLOCKLISTED`): a fenced
    /// watcher must learn it no longer hears notifications.
    fn drop_fenced_watches(&self, map: &ClusterMap) {
        if map.blocklist.is_empty() {
            return;
        }
        let me = self.monc.global_id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let fenced: Vec<(u64, ObjectId)> = lock(&self.watches)
            .iter()
            .filter(|(_, w)| {
                w.conn
                    .upgrade()
                    .and_then(|c| c.local_ip())
                    .is_some_and(|ip| map.is_blocklisted(ip, me, now))
            })
            .map(|(&c, w)| (c, w.oid.clone()))
            .collect();
        for (cookie, oid) in fenced {
            tracing::warn!(cookie, obj = %oid.name, "this client is blocklisted: its watch is gone");
            lock(&self.watches).remove(&cookie);
            self.watch_error(&oid, cookie, Errno::ESHUTDOWN);
            lock(&self.callbacks).remove(&cookie);
        }
    }

    /// Re-register every held watch whose registration is gone.
    async fn refresh_watches(&self) {
        let map = self.monc.map();
        self.drop_fenced_watches(&map);
        let stale: Vec<(u64, ObjectId)> = lock(&self.watches)
            .iter()
            .filter(|(_, w)| {
                let primary = map
                    .object_pg(w.oid.pool, &w.oid.namespace, &w.oid.name)
                    .ok()
                    .and_then(|pg| map.pg_primary(pg).ok().flatten());
                let alive = w.conn.upgrade().is_some_and(|c| !c.is_closed());
                !alive || primary != Some(w.osd)
            })
            .map(|(&c, w)| (c, w.oid.clone()))
            .collect();
        for (cookie, oid) in stale {
            let r = tokio::time::timeout(WATCH_REREGISTER, self.register_watch(&oid, cookie, true))
                .await;
            match r {
                Ok(Ok(())) => {
                    tracing::debug!(cookie, obj = %oid.name, "watch re-established");
                    // Notifications sent while it was not registered were
                    // missed: say so (librados' watch error callback), now
                    // that every later one will arrive.
                    self.watch_error(&oid, cookie, Errno::ENOTCONN);
                }
                Ok(Err(e)) if e.errno == Errno::ENOENT => {
                    // The object is gone: so is the watch (as in Ceph).
                    tracing::info!(cookie, obj = %oid.name, "watched object removed; dropping watch");
                    lock(&self.watches).remove(&cookie);
                    self.watch_error(&oid, cookie, Errno::ENOENT);
                    lock(&self.callbacks).remove(&cookie);
                }
                // Transient: retried at the next check.
                Ok(Err(e)) => tracing::debug!(cookie, "watch re-registration failed: {e}"),
                Err(_) => tracing::debug!(cookie, "watch re-registration timed out"),
            }
        }
    }

    /// Tell watch `cookie`'s callback (if it has one and is still
    /// registered) that its registration was interrupted or ended.
    fn watch_error(&self, oid: &ObjectId, cookie: u64, errno: Errno) {
        if !lock(&self.watches).contains_key(&cookie) && errno == Errno::ENOTCONN {
            return; // unwatched meanwhile
        }
        let cb = lock(&self.callbacks).get(&cookie).cloned();
        if let Some(cb) = cb {
            cb(WatchEvent::Error(WatchError {
                oid: oid.clone(),
                cookie,
                errno,
            }));
        }
    }

    /// Deep-scrub one PG on its primary: every object's copies compared
    /// (block checksums included, where each copy lives); with `repair`,
    /// damaged or differing copies are rewritten from the authoritative one.
    pub async fn scrub_pg(&self, pg: PgId, repair: bool) -> Result<wire::ScrubReport> {
        let (resp, _) = self
            .pg_call(
                pg,
                |epoch| Request::Scrub { epoch, pg, repair },
                Bytes::new(),
            )
            .await?;
        match resp {
            Resp::Scrub(r) => Ok(r),
            _ => Err(unexpected("scrub")),
        }
    }

    /// What the last deep scrub of `pg` on its primary left inconsistent
    /// (`ENOENT` if it has not scrubbed the PG since it became primary).
    pub async fn scrub_result(&self, pg: PgId) -> Result<wire::ScrubReport> {
        let (resp, _) = self
            .pg_call(pg, |epoch| Request::ScrubResult { epoch, pg }, Bytes::new())
            .await?;
        match resp {
            Resp::Scrub(r) => Ok(r),
            _ => Err(unexpected("scrub result")),
        }
    }

    /// The monitor client (for commands beyond the object layer).
    pub fn monc(&self) -> &Arc<MonClient> {
        &self.monc
    }

    fn track(&self, what: String, pg: Option<PgId>) -> Tracked<'_> {
        let id = self.next_trace.fetch_add(1, Ordering::Relaxed);
        lock(&self.in_flight).insert(
            id,
            InFlight {
                what,
                req: None,
                pg,
                since: Instant::now(),
                osd: None,
                epoch: 0,
                sends: 0,
                last: String::new(),
            },
        );
        Tracked { client: self, id }
    }

    /// How many connections this client has made to OSDs so far (one per
    /// OSD unless an OSD restarted, was marked down or a connection failed).
    pub fn connections_made(&self) -> u64 {
        self.conns_made.load(Ordering::Relaxed)
    }

    /// This client's state in words, for a test or tool that finds I/O
    /// stalled: its map (OSDs up/down), every request waiting for an
    /// answer (object, PG, target OSD, map epoch, sends, why the last
    /// attempt failed, and where the current map puts its PG), its OSD
    /// connections and its watches.
    pub fn debug_dump(&self) -> String {
        use std::fmt::Write;
        let map = self.monc.map();
        let now = Instant::now();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "client.{} at map epoch {}",
            self.monc.global_id(),
            map.epoch
        );
        for (id, o) in &map.osds {
            let _ = writeln!(
                s,
                "  osd.{id} {} {} up_from {} addr {}",
                if o.up { "up" } else { "down" },
                if o.in_cluster { "in" } else { "out" },
                o.up_from,
                o.addr
            );
        }
        let primary_now = |pg: PgId| match map.pg_primary(pg) {
            Ok(Some(p)) => format!("osd.{p}"),
            Ok(None) => "none".to_string(),
            Err(e) => e.to_string(),
        };
        let mut reqs: Vec<(u64, String)> = lock(&self.in_flight)
            .iter()
            .map(|(id, t)| {
                let pg = t.pg.map_or_else(
                    || "monitor".to_string(),
                    |pg| format!("pg {pg} (primary now {})", primary_now(pg)),
                );
                let osd = t.osd.map_or_else(|| "-".to_string(), |o| format!("osd.{o}"));
                (
                    *id,
                    format!(
                        "  #{id} {}: {pg}, waiting {:.1} s, {} sends, last to {osd} at epoch {}, last error: {}",
                        match &t.req {
                            Some(r) if t.what.is_empty() => describe(r),
                            _ => t.what.clone(),
                        },
                        now.duration_since(t.since).as_secs_f64(),
                        t.sends,
                        t.epoch,
                        if t.last.is_empty() { "-" } else { &t.last }
                    ),
                )
            })
            .collect();
        reqs.sort();
        let _ = writeln!(s, "requests in flight: {}", reqs.len());
        for (_, line) in reqs {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "OSD connections:");
        dump_conns(&lock(&self.conns), "  ", &mut s);
        let _ = writeln!(s, "watches:");
        let mut watches: Vec<String> = lock(&self.watches)
            .iter()
            .map(|(cookie, w)| {
                let pg = map.object_pg(w.oid.pool, &w.oid.namespace, &w.oid.name);
                let alive = w.conn.upgrade().is_some_and(|c| !c.is_closed());
                format!(
                    "  cookie {cookie} on {}: registered on osd.{} ({}), primary now {}",
                    w.oid.name,
                    w.osd,
                    if alive {
                        "connection open"
                    } else {
                        "connection gone"
                    },
                    pg.map_or_else(|e| e.to_string(), primary_now)
                )
            })
            .collect();
        watches.sort();
        for w in watches {
            let _ = writeln!(s, "{w}");
        }
        s
    }

    /// [`Rados::operate`] with a caller-chosen op id: every resend of one
    /// logical op must use the same `tid` (the OSD then answers a resend
    /// of an applied write with its original success). `operate` picks a
    /// fresh one; tools and tests that resend on their own use this.
    pub async fn operate_tid(&self, req: OpRequest, tid: u64) -> Result<OpReply> {
        if !req.snapc.is_valid() {
            return Err(RadosError::invalid(format!(
                "invalid snap context {:?}",
                req.snapc
            )));
        }
        let pg = self.object_pg(&req.oid).await?;
        let (stripped, lens, data) = wire::strip_request(req);
        let (resp, data) = self
            .pg_call(
                pg,
                |epoch| Request::Op {
                    epoch,
                    tid,
                    req: stripped.clone(),
                    lens: lens.clone(),
                },
                data,
            )
            .await?;
        match resp {
            Resp::Op(mut reply, lens) => {
                wire::fill_reply(&mut reply, &lens, &data).map_err(|e| e.to_rados())?;
                Ok(reply)
            }
            _ => Err(unexpected("op")),
        }
    }

    /// Wait until the map is at least `epoch` (bounded; then refetch).
    async fn wait_map(&self, epoch: Epoch) {
        let mut rx = self.monc.subscribe();
        let ok = tokio::time::timeout(MAP_WAIT, async {
            rx.wait_for(|m| m.epoch >= epoch).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if !ok {
            let _ = self.monc.refresh_map().await;
        }
    }

    async fn conn_for(
        &self,
        map: &ClusterMap,
        osd: OsdId,
    ) -> std::result::Result<Arc<Conn>, ConnError> {
        let (addr, up_from) = map
            .osds
            .get(&osd)
            .map(|o| (o.addr.clone(), o.up_from))
            .unwrap_or_default();
        if let Some(c) = table_conn(&self.conns, osd, &addr, up_from) {
            return Ok(c);
        }
        let gate = lock(&self.connecting).entry(osd).or_default().clone();
        let _connecting = gate.lock().await;
        // Whoever held the gate before us may have connected meanwhile.
        if let Some(c) = table_conn(&self.conns, osd, &addr, up_from) {
            return Ok(c);
        }
        let ticket = self.monc.ticket().await.map_err(|e| ConnError::Auth {
            addr: addr.clone(),
            msg: e.to_string(),
        })?;
        let c = Conn::connect_with_events(
            &addr,
            &ticket,
            self.timeouts.connect,
            Some(self.events.clone()),
        )
        .await?;
        self.conns_made.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(osd, addr = %addr, "connected to OSD");
        Ok(install_conn(&self.conns, osd, addr, up_from, c))
    }

    /// Close connections to OSDs the map says are down or restarted (a
    /// newer `up_from`), so requests queued on them fail and are resent
    /// (Ceph's Objecter resets its session on such a map). A host cut off
    /// by the network never resets the TCP connection itself.
    fn prune_conns(&self, map: &ClusterMap) {
        lock(&self.conns).retain(|osd, (_, u, c)| {
            let keep = map.osds.get(osd).is_some_and(|o| o.up && o.up_from <= *u);
            if !keep {
                c.close();
            }
            keep
        });
    }

    /// Forget `conn` as the connection to `osd` (if it still is).
    fn drop_conn(&self, osd: OsdId, conn: &Arc<Conn>) {
        let mut conns = lock(&self.conns);
        if conns
            .get(&osd)
            .is_some_and(|(_, _, c)| Arc::ptr_eq(c, conn))
        {
            conns.remove(&osd);
        }
        conn.close();
    }

    /// Send a request to the primary of `pg`, retrying across map changes
    /// until it answers for good (or the op timeout passes).
    async fn pg_call(
        &self,
        pg: PgId,
        make: impl Fn(Epoch) -> Request,
        data: Bytes,
    ) -> Result<(Resp, Bytes)> {
        self.pg_call_on(pg, make, data)
            .await
            .map(|(r, d, _, _)| (r, d))
    }

    /// Ask the object's primary to drop watch `cookie`.
    async fn send_unwatch(&self, oid: &ObjectId, cookie: u64) -> Result<()> {
        let pg = self.object_pg(oid).await?;
        self.pg_call(
            pg,
            |epoch| Request::Unwatch {
                epoch,
                oid: oid.clone(),
                cookie,
            },
            Bytes::new(),
        )
        .await
        .map(|_| ())
    }

    /// [`Self::pg_call`], also saying which OSD and connection answered.
    async fn pg_call_on(
        &self,
        pg: PgId,
        make: impl Fn(Epoch) -> Request,
        data: Bytes,
    ) -> Result<(Resp, Bytes, OsdId, Arc<Conn>)> {
        let deadline = self.timeouts.osd_op.map(|d| Instant::now() + d);
        // Empty until an attempt fails (no allocation on the common path).
        let mut last = String::new();
        let trace = self.track(String::new(), Some(pg));
        loop {
            if !last.is_empty() {
                trace.update(|t| t.last.clone_from(&last));
            }
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    let last = if last.is_empty() {
                        "no attempt yet"
                    } else {
                        &last
                    };
                    return Err(RadosError::new(
                        Errno::ETIMEDOUT,
                        format!("op on pg {pg} timed out: {last}"),
                    ));
                }
            }
            let map = self.monc.map();
            let primary = match map.pg_primary(pg) {
                Ok(p) => p,
                Err(_) => {
                    // The pool may be newer than our map: ask once more.
                    let map = self.monc.refresh_map().await.map_err(mon_err)?;
                    if !map.pools.contains_key(&pg.pool) {
                        return Err(RadosError::not_found(format!(
                            "pool {} does not exist",
                            pg.pool
                        )));
                    }
                    continue;
                }
            };
            let Some(osd) = primary else {
                last = format!("pg {pg} has no OSD up");
                self.wait_map(map.epoch + 1).await;
                continue;
            };
            let conn = match self.conn_for(&map, osd).await {
                Ok(c) => c,
                Err(e) if !e.is_transient() => {
                    return Err(RadosError::new(e.errno(), e.to_string()))
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(RETRY_PAUSE).await;
                    self.wait_map(map.epoch + 1).await;
                    continue;
                }
            };
            let req = Arc::new(make(map.epoch));
            trace.update(|t| {
                t.req = Some(req.clone());
                t.osd = Some(osd);
                t.epoch = map.epoch;
                t.sends += 1;
            });
            let call = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), conn.call(&req, data.clone()))
                        .await
                        .ok(),
                    None => Some(conn.call(&req, data.clone()).await),
                }
            };
            // A primary cut off from the network neither answers nor resets
            // the connection: resend (same tid) once a new map moves the PG.
            let res = tokio::select! {
                r = call => match r {
                    Some(r) => r,
                    None => continue, // timed out: reported at the top of the loop
                },
                stale = self.primary_moves(&map, pg, osd) => {
                    last = format!("pg {pg} moved away from osd.{osd}");
                    if stale {
                        self.drop_conn(osd, &conn);
                    }
                    continue;
                }
            };
            match res {
                Ok((Ok(resp), data)) => return Ok((resp, data, osd, conn)),
                Ok((Err(we), _)) => match we.retry_epoch {
                    Some(e) => {
                        last = we.msg.clone();
                        if e <= map.epoch {
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                        self.wait_map(e.max(map.epoch + 1)).await;
                    }
                    None => return Err(we.to_rados()),
                },
                Err(e) if !e.is_transient() => {
                    return Err(RadosError::new(e.errno(), e.to_string()))
                }
                Err(e) => {
                    last = e.to_string();
                    self.drop_conn(osd, &conn);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Resolves once a map newer than `map` has another primary for `pg`
    /// than `osd`, or `osd` restarted (a new `up_from`: it was marked down
    /// meanwhile, in a map this client may have skipped, and has forgotten
    /// what it was doing). Tells whether the connection to `osd` is stale
    /// (the OSD is down or restarted).
    async fn primary_moves(&self, map: &ClusterMap, pg: PgId, osd: OsdId) -> bool {
        let up_from = map.osds.get(&osd).map(|o| o.up_from);
        let restarted = |m: &ClusterMap| {
            m.osds
                .get(&osd)
                .is_none_or(|o| !o.up || Some(o.up_from) != up_from)
        };
        let mut rx = self.monc.subscribe();
        let down = match rx
            .wait_for(|m| {
                m.epoch > map.epoch
                    && (m.pg_primary(pg).ok().flatten() != Some(osd) || restarted(m))
            })
            .await
        {
            Ok(m) => Some(restarted(&m)),
            Err(_) => None,
        };
        match down {
            Some(d) => d,
            None => std::future::pending().await, // no more maps: never
        }
    }

    async fn map_with_pool(&self, pool: PoolId) -> Result<Arc<ClusterMap>> {
        let map = self.monc.map();
        if map.pools.contains_key(&pool) {
            return Ok(map);
        }
        let map = self.monc.refresh_map().await.map_err(mon_err)?;
        if map.pools.contains_key(&pool) {
            Ok(map)
        } else {
            Err(RadosError::not_found(format!("pool {pool} does not exist")))
        }
    }

    async fn object_pg(&self, oid: &ObjectId) -> Result<PgId> {
        let map = self.map_with_pool(oid.pool).await?;
        map.object_pg(oid.pool, &oid.namespace, &oid.name)
            .map_err(|e| RadosError::new(e.errno(), e.to_string()))
    }

    async fn command(&self, cmd: MonCommand) -> Result<MonReply> {
        // The variant's name only: a command's fields may hold a key.
        let name = format!("{cmd:?}");
        let name = name.split([' ', '(', '{']).next().unwrap_or_default();
        let _t = self.track(format!("monitor command {name}"), None);
        self.monc.command(cmd).await.map_err(mon_err)
    }

    async fn wait_epoch(&self, epoch: Epoch) -> Result<()> {
        let _t = self.track(format!("wait for map epoch {epoch}"), None);
        self.monc
            .wait_for_epoch(epoch)
            .await
            .map(|_| ())
            .map_err(mon_err)
    }
}

fn unexpected(what: &str) -> RadosError {
    RadosError::io(format!("unexpected response from OSD to {what}"))
}

#[async_trait]
impl Rados for ClusterClient {
    fn instance_id(&self) -> u64 {
        self.monc.global_id()
    }

    /// The local address of a connection to an OSD (what the OSDs see).
    fn client_addr(&self) -> Option<String> {
        let ip = lock(&self.conns)
            .values()
            .find_map(|(_, _, c)| c.local_ip())?;
        Some(
            quarry_map::ClientAddr {
                ip,
                port: 0,
                nonce: self.monc.global_id(),
            }
            .to_string(),
        )
    }

    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        match self
            .command(MonCommand::PoolCreate {
                name: name.to_string(),
                pg_num: None,
                size: None,
                min_size: None,
                application: None,
            })
            .await?
        {
            MonReply::PoolCreated { pool, epoch } => {
                self.wait_epoch(epoch).await?;
                Ok(pool)
            }
            _ => Err(RadosError::io("unexpected monitor reply to pool create")),
        }
    }

    async fn pool_delete(&self, name: &str) -> Result<()> {
        match self
            .command(MonCommand::PoolDelete {
                name: name.to_string(),
            })
            .await?
        {
            MonReply::Ok { epoch } => self.wait_epoch(epoch).await,
            _ => Err(RadosError::io("unexpected monitor reply to pool delete")),
        }
    }

    async fn pool_lookup(&self, name: &str) -> Result<PoolId> {
        if let Some(p) = self.monc.map().pool_by_name(name) {
            return Ok(p.id);
        }
        let map = self.monc.refresh_map().await.map_err(mon_err)?;
        map.pool_by_name(name)
            .map(|p| p.id)
            .ok_or_else(|| RadosError::not_found(format!("pool '{name}' does not exist")))
    }

    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        let map = self.monc.refresh_map().await.map_err(mon_err)?;
        Ok(map
            .pools
            .values()
            .map(|p| PoolInfo {
                id: p.id,
                name: p.name.clone(),
            })
            .collect())
    }

    async fn pool_stat(&self, pool: PoolId) -> Result<PoolStat> {
        let map = self.map_with_pool(pool).await?;
        let pgs = map
            .pool_pgs(pool)
            .map_err(|e| RadosError::new(e.errno(), e.to_string()))?;
        let Some(def) = map.pools.get(&pool) else {
            return Err(RadosError::new(
                Errno::ENOENT,
                format!("pool {pool} not in the map"),
            ));
        };
        // A PG that is not active holds its request until it is: one with
        // fewer OSDs up than min_size cannot be, and one whose peering waits
        // for a down member may take long. The monitors' figures (the OSDs'
        // last reports, a beacon interval old) stand in for the pool then,
        // as Ceph's librados answers from reported stats.
        let min = def.min_size.max(1);
        let below_min = pgs.iter().any(|pg| {
            map.pg_up_set(*pg)
                .map_or(true, |up| (up.len() as u32) < min)
        });
        if !below_min {
            // One request per PG keeps routing identical to ops (the PG's
            // primary answers), at the cost of pg_num round trips.
            let asked = async {
                let mut total = PoolStat::default();
                for pg in &pgs {
                    let s = self.pg_stat(pool, pg.seed).await?;
                    total.num_objects += s.num_objects;
                    total.num_bytes += s.num_bytes;
                }
                Ok::<_, RadosError>(total)
            };
            if let Ok(r) = tokio::time::timeout(POOL_STAT_WAIT, asked).await {
                return r;
            }
        }
        let asked = MonCommand::PoolGetQuota {
            name: def.name.clone(),
        };
        match self.command(asked).await? {
            MonReply::PoolQuota(q) => Ok(PoolStat {
                num_objects: q.objects,
                num_bytes: q.bytes,
            }),
            _ => Err(unexpected("pool usage")),
        }
    }

    async fn pg_stat(&self, pool: PoolId, seed: u32) -> Result<PoolStat> {
        let pg = PgId { pool, seed };
        let (resp, _) = self
            .pg_call(
                pg,
                |epoch| Request::PoolStat {
                    epoch,
                    pool,
                    seeds: vec![seed],
                },
                Bytes::new(),
            )
            .await?;
        match resp {
            Resp::Stat(s) => Ok(s),
            _ => Err(unexpected("pg stat")),
        }
    }

    async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
        match self.command(MonCommand::SnapCreate { pool }).await? {
            // The map epoch that records the allocation is not waited for
            // (Ceph's Objecter does; here it cost up to ~1 ms per snapshot):
            // no OSD consults a pool's snap_seq. The id reaches OSDs only in
            // the snap contexts clients send, and an OSD clones an object
            // by comparing that context with the object's own snap set, so
            // the next write is cloned correctly whatever map it carries.
            // (Snap removal still waits: trimming follows the map.)
            MonReply::Snap { snap, .. } => Ok(snap),
            _ => Err(RadosError::io("unexpected monitor reply to snap create")),
        }
    }

    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        match self.command(MonCommand::SnapRemove { pool, snap }).await? {
            MonReply::Ok { epoch } => self.wait_epoch(epoch).await,
            _ => Err(RadosError::io("unexpected monitor reply to snap remove")),
        }
    }

    async fn operate(&self, req: OpRequest) -> Result<OpReply> {
        let tid = self.next_tid.fetch_add(1, Ordering::Relaxed);
        self.operate_tid(req, tid).await
    }

    async fn list_objects(&self, pool: PoolId, namespace: Option<&str>) -> Result<Vec<ListEntry>> {
        let map = self.map_with_pool(pool).await?;
        let pgs = map
            .pool_pgs(pool)
            .map_err(|e| RadosError::new(e.errno(), e.to_string()))?;
        let ns = namespace.map(str::to_string);
        let mut all = Vec::new();
        for pg in pgs {
            let (resp, _) = self
                .pg_call(
                    pg,
                    |epoch| Request::ListPg {
                        epoch,
                        pg,
                        namespace: ns.clone(),
                    },
                    Bytes::new(),
                )
                .await?;
            match resp {
                Resp::List(v) => all.extend(v),
                _ => return Err(unexpected("list")),
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn watch(&self, oid: &ObjectId) -> Result<u64> {
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        self.register_watch(oid, cookie, false).await?;
        Ok(cookie)
    }

    async fn unwatch(&self, oid: &ObjectId, cookie: u64) -> Result<()> {
        // Forget it first so the keeper does not re-register it meanwhile.
        tracing::debug!(cookie, obj = %oid.name, "unwatch");
        lock(&self.watches).remove(&cookie);
        lock(&self.callbacks).remove(&cookie);
        self.send_unwatch(oid, cookie).await
    }

    async fn list_watchers(&self, oid: &ObjectId) -> Result<Vec<Watcher>> {
        let pg = self.object_pg(oid).await?;
        let (resp, _) = self
            .pg_call(
                pg,
                |epoch| Request::ListWatchers {
                    epoch,
                    oid: oid.clone(),
                },
                Bytes::new(),
            )
            .await?;
        match resp {
            Resp::Watchers(w) => Ok(w),
            _ => Err(unexpected("list watchers")),
        }
    }

    async fn watch_with(&self, oid: &ObjectId, cb: WatchCallback) -> Result<u64> {
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        // Before registering: a notification may arrive right after.
        lock(&self.callbacks).insert(cookie, cb);
        if let Err(e) = self.register_watch(oid, cookie, false).await {
            lock(&self.callbacks).remove(&cookie);
            return Err(e);
        }
        Ok(cookie)
    }

    async fn notify(
        &self,
        oid: &ObjectId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        if payload.len() > NOTIFY_PAYLOAD_MAX {
            return Err(RadosError::invalid(format!(
                "notify payload of {} bytes exceeds {NOTIFY_PAYLOAD_MAX}",
                payload.len()
            )));
        }
        let timeout_ms = timeout.min(NOTIFY_TIMEOUT_MAX).as_millis() as u64;
        let pg = self.object_pg(oid).await?;
        let (resp, _) = self
            .pg_call(
                pg,
                |epoch| Request::Notify {
                    epoch,
                    oid: oid.clone(),
                    payload: payload.clone(),
                    timeout_ms,
                },
                Bytes::new(),
            )
            .await?;
        match resp {
            Resp::Notified(r) => Ok(r),
            _ => Err(unexpected("notify")),
        }
    }

    async fn notify_ack(
        &self,
        oid: &ObjectId,
        notify_id: u64,
        cookie: u64,
        payload: Bytes,
    ) -> Result<()> {
        if payload.len() > NOTIFY_PAYLOAD_MAX {
            return Err(RadosError::invalid("notify ack payload too large"));
        }
        let pg = self.object_pg(oid).await?;
        self.pg_call(
            pg,
            |epoch| Request::NotifyAck {
                epoch,
                oid: oid.clone(),
                notify_id,
                cookie,
                payload: payload.clone(),
            },
            Bytes::new(),
        )
        .await
        .map(|_| ())
    }

    async fn blocklist_add(&self, addr: &str, expire: Duration) -> Result<()> {
        let _t = self.track(format!("blocklist {addr}"), None);
        let reply = self
            .monc
            .command(MonCommand::BlocklistAdd {
                addr: addr.to_string(),
                expire_secs: Some(expire.as_secs().max(1)),
            })
            .await
            .map_err(|e| RadosError::new(e.errno(), format!("blocklisting {addr}: {e}")))?;
        let epoch = match reply {
            MonReply::Blocklisted { epoch, .. } | MonReply::Ok { epoch } => epoch,
            other => {
                return Err(RadosError::io(format!(
                    "blocklisting {addr}: unexpected reply {other:?}"
                )))
            }
        };
        self.monc
            .wait_for_epoch(epoch)
            .await
            .map_err(|e| RadosError::new(e.errno(), format!("blocklisting {addr}: {e}")))?;
        Ok(())
    }
}

/// Delivers watch events from every OSD connection to the watches'
/// callbacks; a watch without a callback acks at once. Exits with the client.
async fn event_loop(client: Weak<ClusterClient>, mut rx: mpsc::Receiver<Frame>) {
    while let Some(f) = rx.recv().await {
        let Some(c) = client.upgrade() else { return };
        if c.events.lost.swap(false, Ordering::SeqCst) {
            // Events were dropped while the queue was full (callbacks too
            // slow for the notifications coming in): which watches they
            // were for is unknown, so every watch is told it missed some,
            // as after a lost registration.
            let held: Vec<(u64, ObjectId)> = lock(&c.watches)
                .iter()
                .map(|(&k, w)| (k, w.oid.clone()))
                .collect();
            tracing::warn!(watches = held.len(), "watch events dropped (queue full)");
            for (cookie, oid) in held {
                c.watch_error(&oid, cookie, Errno::ENOTCONN);
            }
        }
        let ev: Event = match f.decode() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::info!("undecodable watch event: {e}");
                continue;
            }
        };
        match ev {
            Event::Notify {
                oid,
                notify_id,
                cookie,
                notifier,
                payload,
            } => {
                let cb = lock(&c.callbacks).get(&cookie).cloned();
                match cb {
                    Some(cb) => cb(WatchEvent::Notify(NotifyEvent {
                        oid,
                        notify_id,
                        cookie,
                        notifier,
                        payload,
                    })),
                    None => {
                        tokio::spawn(async move {
                            let _ = c.notify_ack(&oid, notify_id, cookie, Bytes::new()).await;
                        });
                    }
                }
            }
        }
    }
}

/// Keeps a client's watches registered (see [`WatchReg`]): checks on
/// every new map and every [`WATCH_CHECK`]; exits with the client.
async fn watch_keeper(client: Weak<ClusterClient>) {
    let mut rx = match client.upgrade() {
        Some(c) => c.monc.subscribe(),
        None => return,
    };
    loop {
        let _ = tokio::time::timeout(WATCH_CHECK, rx.changed()).await;
        let Some(c) = client.upgrade() else { return };
        c.prune_conns(&c.monc.map());
        if !lock(&c.watches).is_empty() {
            c.refresh_watches().await;
        }
    }
}
