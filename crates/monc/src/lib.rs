//! The monitor client, used by OSDs, by the networked object-layer client
//! and by the CLI.
//!
//! [`MonClient::connect`] authenticates to one of the monitors (mutual
//! challenge-response, see `quarry_auth::handshake`), fetches the cluster
//! map and subscribes to new epochs; afterwards a background task keeps one
//! session open, reconnects to another monitor when it fails or stops
//! answering keepalive pings ([`MonPing`]),
//! re-authenticates and resubscribes. Requests sent to a follower monitor
//! are forwarded by it to the leader, so the client never needs to know
//! which monitor leads.
//!
//! A wrong key or an unknown entity fails at once with EACCES; monitors
//! that cannot be reached fail with ETIMEDOUT after `timeout`.

pub mod conn;
pub mod report;
pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use quarry_auth::{handshake, AuthError, Secret, Ticket};
use quarry_common::Errno;
use quarry_map::{ClusterMap, Epoch, OsdId, PgId};
use quarry_proto::{read_frame, write_frame, Frame, FrameError, FrameSigner, Role, SignPolicy};

pub use conn::{Conn, ConnError};
pub use wire::{
    AppOp, AuthEntry, ClusterStatus, ConfigEntry, Fullness, Health, HealthCheck, MonCommand,
    MonReply, PgScrubErrors, PoolApplications, PoolQuotaInfo, PoolUsage,
};
use wire::{Request, Response, WireTicket, KIND_MAP_PUSH, KIND_REQUEST, KIND_RESPONSE};

/// How to reach and authenticate to the monitors.
#[derive(Clone, Debug)]
pub struct MonClientConfig {
    /// Monitor addresses (`ip:port`), tried in turn.
    pub mon_addrs: Vec<String>,
    /// Entity name: `client.admin`, `osd.0`.
    pub entity: String,
    /// The entity's secret.
    pub secret: quarry_auth::Secret,
    /// How long to keep trying unreachable monitors before ETIMEDOUT
    /// (also the bound on one request).
    pub timeout: Duration,
    /// Keepalive of the open session (a silent monitor is left for another).
    pub ping: MonPing,
}

/// Keepalive of a monitor session (`mon_client_ping_interval`,
/// `mon_client_ping_timeout`): a monitor that stops answering without
/// closing the connection (cut link, stopped process: TCP never resets)
/// is noticed after at most `interval + timeout`, and the client hunts
/// for another monitor. Quarry's defaults are shorter than Ceph's (10 s,
/// 30 s), so that a daemon behind a cut link learns it within seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonPing {
    /// Time between pings; zero disables them.
    pub interval: Duration,
    /// How long a ping's reply may take before the session is dropped.
    pub timeout: Duration,
}

impl Default for MonPing {
    fn default() -> Self {
        MonPing {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a monitor client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MonClientError {
    /// Authentication was refused (wrong key, unknown entity...).
    #[error("{0}")]
    Auth(#[from] quarry_auth::AuthError),
    /// No monitor answered in time.
    #[error("timed out after {0:?} waiting for a monitor: {1}")]
    Timeout(Duration, String),
    /// The monitor refused the request.
    #[error("{message}")]
    Remote {
        /// errno the monitor reported.
        errno: Errno,
        /// Its message.
        message: String,
    },
    /// No monitor address configured.
    #[error("no monitor addresses configured (set mon_host)")]
    NoMonitors,
    /// The monitor broke the protocol.
    #[error("monitor protocol error: {0}")]
    Protocol(String),
    /// The client was shut down.
    #[error("monitor client shut down")]
    Shutdown,
    /// The monitor runs a release of another wire version.
    #[error("{0}")]
    Version(String),
}

impl MonClientError {
    /// errno as librados reports it.
    pub fn errno(&self) -> Errno {
        match self {
            MonClientError::Auth(e) => e.errno(),
            MonClientError::Timeout(..) => Errno::ETIMEDOUT,
            MonClientError::Remote { errno, .. } => *errno,
            MonClientError::NoMonitors => Errno::ENOENT,
            MonClientError::Protocol(_) => Errno::EIO,
            MonClientError::Shutdown => Errno::ESHUTDOWN,
            MonClientError::Version(_) => Errno::EOPNOTSUPP,
        }
    }

    /// A refusal that retrying with another monitor cannot fix.
    fn is_definitive(&self) -> bool {
        match self {
            MonClientError::Auth(_) | MonClientError::NoMonitors | MonClientError::Version(_) => {
                true
            }
            MonClientError::Remote { errno, .. } => {
                matches!(errno, Errno::EACCES | Errno::EPERM | Errno::EINVAL)
            }
            _ => false,
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Build a request frame (the connection assigns the request id).
pub fn request_frame(req: &Request) -> Result<Frame, MonClientError> {
    Frame::new(KIND_REQUEST, 0, req, Bytes::new())
        .map_err(|e| MonClientError::Protocol(e.to_string()))
}

/// Decode a response frame; a `Response::Error` becomes `Remote`.
pub fn decode_response(f: &Frame) -> Result<Response, MonClientError> {
    if f.kind != KIND_RESPONSE && f.kind != KIND_MAP_PUSH {
        return Err(MonClientError::Protocol(format!(
            "unexpected frame kind {}",
            f.kind
        )));
    }
    match f.decode::<Response>() {
        Ok(Response::Error { errno, message }) => Err(MonClientError::Remote {
            errno: Errno::from_code(errno),
            message,
        }),
        Ok(r) => Ok(r),
        Err(e) => Err(MonClientError::Protocol(e.to_string())),
    }
}

fn conn_err(e: ConnError, timeout: Duration) -> MonClientError {
    match e {
        ConnError::Timeout(addr, t) => {
            MonClientError::Timeout(t, format!("no reply from monitor {addr}"))
        }
        e @ ConnError::Version(..) => MonClientError::Version(e.to_string()),
        other => MonClientError::Timeout(timeout, other.to_string()),
    }
}

/// Result of a successful handshake.
#[derive(Debug, Clone)]
pub struct AuthOutcome {
    /// Global id of the session.
    pub global_id: u64,
    /// The ticket (session key already unwrapped).
    pub ticket: Ticket,
}

/// Connect to the monitor at `addr` and authenticate as `entity` (the
/// handshake runs on the bare stream, so the frames after it are signed
/// from the first one on when both ends sign); returns the running
/// connection and the session's ticket.
pub async fn connect_authenticated(
    addr: &str,
    entity: &str,
    secret: &Secret,
    timeout: Duration,
    on_push: Option<conn::PushHandler>,
) -> Result<(Conn, AuthOutcome), MonClientError> {
    let fut = async {
        let mut s = conn::tcp_connect(addr, timeout)
            .await
            .map_err(|e| MonClientError::Timeout(timeout, e.to_string()))?;
        let (auth, signers) = authenticate_stream(&mut s, addr, entity, secret, timeout).await?;
        Ok::<_, MonClientError>((Conn::start(s, addr, on_push, signers), auth))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        MonClientError::Timeout(
            timeout,
            format!("monitor {addr} did not complete the handshake"),
        )
    })?
}

/// The (sending, receiving) frame signers of a signed connection.
type Signers = Option<(FrameSigner, FrameSigner)>;

async fn handshake_call(
    s: &mut tokio::net::TcpStream,
    addr: &str,
    id: u64,
    req: &Request,
    timeout: Duration,
) -> Result<Response, MonClientError> {
    let mut f = request_frame(req)?;
    f.request_id = id;
    let lost = |e: FrameError| match e {
        FrameError::BadVersion(_) => MonClientError::Version(format!("monitor {addr}: {e}")),
        e => MonClientError::Timeout(timeout, format!("monitor {addr}: {e}")),
    };
    write_frame(s, &f).await.map_err(lost)?;
    let f = read_frame(s).await.map_err(lost)?;
    if f.kind == quarry_proto::K_VERSION_MISMATCH {
        let msg: String = f
            .decode()
            .unwrap_or_else(|_| "wire version mismatch".into());
        return Err(MonClientError::Version(format!("monitor {addr}: {msg}")));
    }
    decode_response(&f)
}

async fn authenticate_stream(
    s: &mut tokio::net::TcpStream,
    addr: &str,
    entity: &str,
    secret: &Secret,
    timeout: Duration,
) -> Result<(AuthOutcome, Signers), MonClientError> {
    let cn = handshake::random_nonce();
    let policy = SignPolicy::global();
    let hello = Request::Hello {
        entity: entity.to_string(),
        client_nonce: cn,
        sign: policy.sign,
    };
    let (sn, sproof, server_signs) = match handshake_call(s, addr, 1, &hello, timeout).await? {
        Response::Challenge {
            server_nonce,
            server_proof,
            sign,
        } => (server_nonce, server_proof, sign),
        other => {
            return Err(MonClientError::Protocol(format!(
                "expected a challenge, got {other:?}"
            )))
        }
    };
    // Check the monitor first: with a wrong key this is where we notice, and
    // a fake monitor never gets our proof.
    let mode = SignPolicy::mode_byte(policy.sign, server_signs);
    let want = handshake::server_proof(secret, entity, &cn, &sn, mode);
    if !handshake::proofs_equal(&want, &sproof) {
        return Err(AuthError::BadServerProof(entity.to_string()).into());
    }
    let signed = SignPolicy::negotiated(policy.sign, server_signs);
    if let Some(msg) = policy.check(signed, true) {
        return Err(MonClientError::Remote {
            errno: Errno::EACCES,
            message: format!("authentication error with monitor {addr}: {msg}"),
        });
    }
    let prove = Request::Prove {
        proof: handshake::client_proof(secret, entity, &cn, &sn, mode),
    };
    match handshake_call(s, addr, 2, &prove, timeout).await? {
        Response::AuthOk { global_id, ticket } => {
            let signers = signed.then(|| {
                let key = handshake::frame_key(secret, entity, &cn, &sn);
                FrameSigner::pair(&key, Role::Connector)
            });
            Ok((
                AuthOutcome {
                    global_id,
                    ticket: unwrap_ticket(secret, entity, &cn, ticket),
                },
                signers,
            ))
        }
        other => Err(MonClientError::Protocol(format!(
            "expected auth ok, got {other:?}"
        ))),
    }
}

fn unwrap_ticket(secret: &Secret, entity: &str, cn: &[u8; 16], t: WireTicket) -> Ticket {
    Ticket {
        blob: Bytes::from(t.blob),
        session_key: handshake::unwrap_session_key(
            secret,
            entity,
            cn,
            &t.server_nonce,
            &t.wrapped_session_key,
        ),
        expires_unix: t.expires_unix,
    }
}

struct Session {
    conn: Conn,
    global_id: u64,
    ticket: Ticket,
    issued_unix: u64,
}

/// Everything the background task shares with callers.
struct Inner {
    cfg: MonClientConfig,
    map_tx: Arc<watch::Sender<Arc<ClusterMap>>>,
    session_tx: watch::Sender<Option<Arc<Session>>>,
    invalidate: Notify,
    next_mon: AtomicUsize,
    last_error: Mutex<Option<MonClientError>>,
}

/// A connected, authenticated monitor client.
pub struct MonClient {
    inner: Arc<Inner>,
    global_id: AtomicU64,
    ticket: tokio::sync::Mutex<Option<(Ticket, u64)>>,
    service_key: Mutex<Option<[u8; 32]>>,
    maint: tokio::task::JoinHandle<()>,
}

impl Drop for MonClient {
    fn drop(&mut self) {
        self.maint.abort();
    }
}

impl std::fmt::Debug for MonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonClient")
            .field("entity", &self.inner.cfg.entity)
            .field("global_id", &self.global_id())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Connect and authenticate to some monitor before `deadline`.
    async fn open_session(&self, deadline: Instant) -> Result<Arc<Session>, MonClientError> {
        let addrs = &self.cfg.mon_addrs;
        if addrs.is_empty() {
            return Err(MonClientError::NoMonitors);
        }
        let mut last = String::from("no monitor tried");
        let mut tried = 0usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(MonClientError::Timeout(self.cfg.timeout, last));
            }
            let remaining = deadline - now;
            let i = self.next_mon.fetch_add(1, Ordering::Relaxed) % addrs.len();
            let addr = &addrs[i];
            tried += 1;
            let per_try = remaining.min(Duration::from_secs(3));
            let map_tx = self.map_tx.clone();
            let on_push: conn::PushHandler = Box::new(move |f: Frame| {
                if let Ok(Response::Map(m)) = decode_response(&f) {
                    publish_map(&map_tx, *m);
                }
            });
            match connect_authenticated(
                addr,
                &self.cfg.entity,
                &self.cfg.secret,
                per_try,
                Some(on_push),
            )
            .await
            {
                Err(e) if e.is_definitive() => return Err(e),
                Err(e) => last = format!("monitor {addr}: {e}"),
                Ok((conn, auth)) => match self.start_session(conn, auth, per_try).await {
                    Ok(s) => {
                        tracing::info!("monitor session open to {addr}");
                        return Ok(s);
                    }
                    Err(e) if e.is_definitive() => return Err(e),
                    Err(e) => last = format!("monitor {addr}: {e}"),
                },
            }
            if tried >= addrs.len() {
                tried = 0;
                // A full round failed: back off a little before the next.
                let pause = Duration::from_millis(200)
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    async fn start_session(
        &self,
        conn: Conn,
        auth: AuthOutcome,
        timeout: Duration,
    ) -> Result<Arc<Session>, MonClientError> {
        let have = self.map_tx.borrow().epoch;
        let f = conn
            .call(request_frame(&Request::Subscribe { have })?, timeout)
            .await
            .map_err(|e| conn_err(e, timeout))?;
        decode_response(&f)?;
        let f = conn
            .call(request_frame(&Request::GetMap)?, timeout)
            .await
            .map_err(|e| conn_err(e, timeout))?;
        match decode_response(&f)? {
            Response::Map(m) => publish_map(&self.map_tx, *m),
            other => {
                return Err(MonClientError::Protocol(format!(
                    "expected a map, got {other:?}"
                )))
            }
        }
        Ok(Arc::new(Session {
            conn,
            global_id: auth.global_id,
            ticket: auth.ticket,
            issued_unix: now_unix(),
        }))
    }

    /// The current session, waiting (until `deadline`) for a reconnect.
    async fn session(&self, deadline: Instant) -> Result<Arc<Session>, MonClientError> {
        let mut rx = self.session_tx.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                if !s.conn.is_closed() {
                    return Ok(s);
                }
            }
            match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(MonClientError::Shutdown),
                Err(_) => {
                    let last = self.last_error.lock().ok().and_then(|e| e.clone());
                    return Err(match last {
                        Some(e) if e.is_definitive() => e,
                        Some(e) => MonClientError::Timeout(self.cfg.timeout, e.to_string()),
                        None => MonClientError::Timeout(
                            self.cfg.timeout,
                            "reconnecting to the monitors".into(),
                        ),
                    });
                }
            }
        }
    }

    /// Send one request, retrying on another monitor when the connection
    /// breaks or the monitor has no quorum.
    async fn call(&self, req: &Request) -> Result<Response, MonClientError> {
        let deadline = Instant::now() + self.cfg.timeout;
        loop {
            let s = self.session(deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match s.conn.call(request_frame(req)?, remaining).await {
                Ok(f) => match decode_response(&f) {
                    Err(MonClientError::Remote {
                        errno: Errno::EAGAIN,
                        ..
                    }) if Instant::now() + Duration::from_millis(200) < deadline => {
                        // This monitor cannot serve right now (no quorum):
                        // move to another one.
                        self.drop_session(&s);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    r => return r,
                },
                Err(ConnError::Timeout(addr, t)) => {
                    self.drop_session(&s);
                    return Err(MonClientError::Timeout(
                        t,
                        format!("no reply from monitor {addr}"),
                    ));
                }
                Err(_) => self.drop_session(&s),
            }
        }
    }

    /// Ping the session's monitor every `ping.interval`; resolves (with
    /// the reason) when one ping is not answered within `ping.timeout` or
    /// the connection fails. Any reply counts: the monitor is alive.
    async fn until_silent(&self, s: &Session) -> String {
        let ping = self.cfg.ping;
        if ping.interval.is_zero() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(ping.interval).await;
            // Resubscribing from the map held is cheap, answered by the
            // monitor itself (no quorum needed), and harmless: it pushes
            // only maps newer than that.
            let have = self.map_tx.borrow().epoch;
            let f = match request_frame(&Request::Subscribe { have }) {
                Ok(f) => f,
                Err(e) => return e.to_string(),
            };
            match s.conn.call(f, ping.timeout).await {
                Ok(_) => {}
                Err(ConnError::Timeout(addr, t)) => {
                    return format!("monitor {addr} did not answer a ping within {t:?}")
                }
                Err(e) => return e.to_string(),
            }
        }
    }

    fn drop_session(&self, s: &Arc<Session>) {
        let current = self.session_tx.borrow().clone();
        if current.is_some_and(|c| Arc::ptr_eq(&c, s)) {
            self.invalidate.notify_one();
        }
    }
}

fn publish_map(tx: &watch::Sender<Arc<ClusterMap>>, m: ClusterMap) {
    tx.send_if_modified(|cur| {
        if m.epoch > cur.epoch || (cur.epoch == 0 && cur.fsid.is_empty()) {
            *cur = Arc::new(m);
            true
        } else {
            false
        }
    });
}

/// Keep a session open: reconnect whenever it closes or is dropped.
async fn maintain(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let current = inner.session_tx.borrow().clone();
        if let Some(s) = current {
            let closed = async { s.conn.closed().await };
            tokio::select! {
                _ = closed => {}
                _ = inner.invalidate.notified() => {}
                why = inner.until_silent(&s) => {
                    tracing::warn!("{why}; hunting for a monitor");
                }
            }
            tracing::info!("monitor session to {} ended; reconnecting", s.conn.addr());
            s.conn.close();
        }
        inner.session_tx.send_replace(None);
        loop {
            let deadline = Instant::now() + inner.cfg.timeout;
            match inner.open_session(deadline).await {
                Ok(s) => {
                    if let Ok(mut e) = inner.last_error.lock() {
                        *e = None;
                    }
                    inner.session_tx.send_replace(Some(s));
                    break;
                }
                Err(e) => {
                    tracing::warn!("cannot reconnect to the monitors: {e}");
                    if let Ok(mut le) = inner.last_error.lock() {
                        *le = Some(e);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        drop(inner);
    }
}

impl MonClient {
    /// Connect and authenticate; fails at once on a refused key.
    pub async fn connect(cfg: MonClientConfig) -> Result<Arc<MonClient>, MonClientError> {
        let (map_tx, _) = watch::channel(Arc::new(ClusterMap::new("")));
        let (session_tx, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            cfg,
            map_tx: Arc::new(map_tx),
            session_tx,
            invalidate: Notify::new(),
            next_mon: AtomicUsize::new(0),
            last_error: Mutex::new(None),
        });
        let deadline = Instant::now() + inner.cfg.timeout;
        let s = inner.open_session(deadline).await?;
        let global_id = s.global_id;
        let ticket = (s.ticket.clone(), s.issued_unix);
        inner.session_tx.send_replace(Some(s));
        let maint = tokio::spawn(maintain(Arc::downgrade(&inner)));
        Ok(Arc::new(MonClient {
            inner,
            global_id: AtomicU64::new(global_id),
            ticket: tokio::sync::Mutex::new(Some(ticket)),
            service_key: Mutex::new(None),
            maint,
        }))
    }

    /// The latest map known.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.inner.map_tx.borrow().clone()
    }

    /// A receiver that sees every new map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.inner.map_tx.subscribe()
    }

    /// Wait until a map with at least `epoch` is known.
    pub async fn wait_for_epoch(&self, epoch: Epoch) -> Result<Arc<ClusterMap>, MonClientError> {
        let mut rx = self.subscribe();
        let wait = rx.wait_for(|m| m.epoch >= epoch);
        if let Ok(Ok(m)) = tokio::time::timeout(self.inner.cfg.timeout, wait).await {
            return Ok(m.clone());
        }
        // A push may have been lost with a connection: ask once directly.
        let m = self.refresh_map().await?;
        if m.epoch >= epoch {
            Ok(m)
        } else {
            Err(MonClientError::Timeout(
                self.inner.cfg.timeout,
                format!("map epoch {epoch} not reached (have {})", m.epoch),
            ))
        }
    }

    /// Fetch the current map from the monitor.
    pub async fn refresh_map(&self) -> Result<Arc<ClusterMap>, MonClientError> {
        match self.inner.call(&Request::GetMap).await? {
            Response::Map(m) => {
                publish_map(&self.inner.map_tx, *m);
                Ok(self.map())
            }
            other => Err(MonClientError::Protocol(format!(
                "expected a map, got {other:?}"
            ))),
        }
    }

    /// Run an administrative command.
    pub async fn command(&self, cmd: MonCommand) -> Result<MonReply, MonClientError> {
        match self.inner.call(&Request::Command(cmd)).await? {
            Response::Reply(r) => {
                if let Some(e) = reply_epoch(&r) {
                    // Commands that change the map return once our map has it.
                    let _ = self.wait_for_epoch(e).await;
                }
                Ok(r)
            }
            other => Err(MonClientError::Protocol(format!(
                "expected a reply, got {other:?}"
            ))),
        }
    }

    /// The monitors' config database values `who` sees (an entity asking
    /// for itself needs no caps), each from its most specific section.
    pub async fn config_for(&self, who: &str) -> Result<Vec<ConfigEntry>, MonClientError> {
        match self
            .command(MonCommand::ConfigGet {
                who: who.to_string(),
            })
            .await?
        {
            MonReply::Config(v) => Ok(v),
            other => Err(MonClientError::Protocol(format!(
                "expected config entries, got {other:?}"
            ))),
        }
    }

    /// The global id of the current session.
    pub fn global_id(&self) -> u64 {
        if let Some(s) = self.inner.session_tx.borrow().as_ref() {
            self.global_id.store(s.global_id, Ordering::Relaxed);
        }
        self.global_id.load(Ordering::Relaxed)
    }

    /// A valid ticket for OSDs (renewed once three quarters of its life are gone).
    pub async fn ticket(&self) -> Result<Ticket, MonClientError> {
        let mut guard = self.ticket.lock().await;
        let now = now_unix();
        if let Some((t, issued)) = guard.as_ref() {
            let life = t.expires_unix.saturating_sub(*issued);
            if now + life / 4 < t.expires_unix {
                return Ok(t.clone());
            }
        }
        let nonce = handshake::random_nonce();
        match self.inner.call(&Request::GetTicket { nonce }).await? {
            Response::Ticket(wt) => {
                let t = unwrap_ticket(&self.inner.cfg.secret, &self.inner.cfg.entity, &nonce, wt);
                *guard = Some((t.clone(), now));
                Ok(t)
            }
            other => Err(MonClientError::Protocol(format!(
                "expected a ticket, got {other:?}"
            ))),
        }
    }

    /// Report this OSD up at `addr` on `host` (`initial_weight`: its weight
    /// if the map has no entry for it yet); returns the epoch marking it up.
    pub async fn osd_boot(
        &self,
        id: OsdId,
        addr: String,
        host: String,
        initial_weight: Option<u32>,
    ) -> Result<Epoch, MonClientError> {
        let e = self
            .epoch_call(&Request::OsdBoot {
                id,
                addr,
                host,
                initial_weight,
            })
            .await?;
        let _ = self.wait_for_epoch(e).await;
        Ok(e)
    }

    /// Tell the monitors this OSD is alive.
    pub async fn osd_beacon(&self, id: OsdId) -> Result<(), MonClientError> {
        match self.inner.call(&Request::OsdBeacon { id }).await? {
            Response::Ok => Ok(()),
            other => Err(MonClientError::Protocol(format!(
                "expected ok, got {other:?}"
            ))),
        }
    }

    /// Record what a deep scrub of a PG (whose primary this OSD is) found:
    /// the monitors keep PGs with bad copies for `ceph health` until a
    /// report with none.
    pub async fn pg_scrubbed(&self, report: PgScrubErrors) -> Result<(), MonClientError> {
        match self.inner.call(&Request::PgScrubbed(report)).await? {
            Response::Ok => Ok(()),
            other => Err(MonClientError::Protocol(format!(
                "expected ok, got {other:?}"
            ))),
        }
    }

    /// Report this OSD's data filesystem and the usage of the pools whose
    /// PGs it leads; the answer says which OSDs and pools are full now.
    pub async fn osd_statfs(
        &self,
        id: OsdId,
        total_bytes: u64,
        avail_bytes: u64,
        pools: Vec<PoolUsage>,
    ) -> Result<Fullness, MonClientError> {
        let req = Request::OsdStatfs {
            id,
            total_bytes,
            avail_bytes,
            pools,
        };
        match self.inner.call(&req).await? {
            Response::Fullness(f) => Ok(f),
            other => Err(MonClientError::Protocol(format!(
                "expected fullness, got {other:?}"
            ))),
        }
    }

    /// When each PG was last deep-scrubbed (unix seconds).
    pub async fn scrub_stamps(&self) -> Result<Vec<(PgId, u64)>, MonClientError> {
        match self.command(MonCommand::ScrubStamps).await? {
            MonReply::ScrubStamps(v) => Ok(v),
            other => Err(MonClientError::Protocol(format!(
                "expected scrub stamps, got {other:?}"
            ))),
        }
    }

    /// Record that a PG went active with `acting` at `epoch`.
    pub async fn pg_activated(
        &self,
        pg: PgId,
        epoch: Epoch,
        acting: Vec<OsdId>,
    ) -> Result<Epoch, MonClientError> {
        self.epoch_call(&Request::PgActivated { pg, epoch, acting })
            .await
    }

    /// The cluster's service key, to verify tickets (osd.* entities only).
    pub async fn service_key(&self) -> Result<[u8; 32], MonClientError> {
        if let Some(k) = self.service_key.lock().ok().and_then(|k| *k) {
            return Ok(k);
        }
        let nonce = handshake::random_nonce();
        match self.inner.call(&Request::GetServiceKey { nonce }).await? {
            Response::ServiceKey {
                server_nonce,
                wrapped,
            } => {
                let cfg = &self.inner.cfg;
                let k = handshake::unwrap_session_key(
                    &cfg.secret,
                    &cfg.entity,
                    &nonce,
                    &server_nonce,
                    &wrapped,
                );
                if let Ok(mut g) = self.service_key.lock() {
                    *g = Some(k);
                }
                Ok(k)
            }
            other => Err(MonClientError::Protocol(format!(
                "expected the service key, got {other:?}"
            ))),
        }
    }

    async fn epoch_call(&self, req: &Request) -> Result<Epoch, MonClientError> {
        match self.inner.call(req).await? {
            Response::Epoch(e) => Ok(e),
            other => Err(MonClientError::Protocol(format!(
                "expected an epoch, got {other:?}"
            ))),
        }
    }
}

fn reply_epoch(r: &MonReply) -> Option<Epoch> {
    match r {
        MonReply::Ok { epoch }
        | MonReply::PoolCreated { epoch, .. }
        | MonReply::Snap { epoch, .. } => Some(*epoch),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_never_go_back() {
        let (tx, rx) = watch::channel(Arc::new(ClusterMap::new("")));
        let mut m = ClusterMap::new("f");
        m.epoch = 5;
        publish_map(&tx, m.clone());
        assert_eq!(rx.borrow().epoch, 5);
        m.epoch = 3;
        publish_map(&tx, m.clone());
        assert_eq!(
            rx.borrow().epoch,
            5,
            "an older map from a lagging monitor is ignored"
        );
        m.epoch = 6;
        publish_map(&tx, m);
        assert_eq!(rx.borrow().epoch, 6);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            MonClientError::Timeout(Duration::from_secs(1), String::new()).errno(),
            Errno::ETIMEDOUT
        );
        assert_eq!(MonClientError::NoMonitors.errno(), Errno::ENOENT);
        let e = MonClientError::Auth(AuthError::BadServerProof("client.x".into()));
        assert_eq!(e.errno(), Errno::EACCES);
        assert!(e.is_definitive());
        assert!(!MonClientError::Remote {
            errno: Errno::EAGAIN,
            message: String::new()
        }
        .is_definitive());
    }

    #[test]
    fn config_debug_redacts_the_secret() {
        let s = Secret::generate(0);
        let cfg = MonClientConfig {
            mon_addrs: vec![],
            entity: "client.admin".into(),
            secret: s.clone(),
            timeout: Duration::from_secs(1),
            ping: MonPing::default(),
        };
        assert!(!format!("{cfg:?}").contains(&s.to_base64()));
    }
}
