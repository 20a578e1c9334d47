//! The running monitor: accepts connections, authenticates them, serves
//! maps, subscriptions and commands, proposes changes through raft
//! (forwarding them to the leader when this monitor follows), and — while
//! leader — detects failed OSDs from missing beacons.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};

use quarry_auth::{handshake, issue_ticket, Caps, Claims, EntityCaps, MonAccess, Secret};
use quarry_common::options::mondb;
use quarry_common::Errno;
use quarry_map::{ClientAddr, ClusterMap, Epoch, OsdId, PgId};
use quarry_monc::wire::{
    Request, Response, WireTicket, KIND_MAP_PUSH, KIND_REQUEST, KIND_RESPONSE,
};
use quarry_monc::{
    AuthEntry, ClusterStatus, ConfigEntry, Health, HealthCheck, MonCommand, MonReply,
    PgScrubErrors, PoolQuotaInfo, PoolUsage,
};
use quarry_proto::{
    read_frame, read_frame_signed, write_frame, write_frame_signed, Frame, FrameError, FrameSigner,
    Role, SignPolicy,
};
use quarry_rados::PoolId;

use crate::config::MonConfig;
use crate::keyring::KeyringEntry;
use crate::peer::{
    PeerRequest, PeerResponse, Peers, KIND_PEER_REQUEST, KIND_PEER_RESPONSE, MON_ENTITY,
};
use crate::state::{Applied, CmdError, CmdResult, PoolParams, StateCmd};
use crate::store::{Shared, TypeConfig};

/// Frames queued for one connection's writer at most.
const OUT_QUEUE: usize = 256;
/// Requests of one connection processed concurrently at most.
const INFLIGHT_PER_CONN: usize = 64;
/// Global ids reserved per raft write.
const GID_BATCH: u64 = 1024;
/// Most PG activations committed in one raft entry.
const PG_BATCH_MAX: usize = 4096;
/// Longest entity name accepted in a handshake.
const MAX_ENTITY_LEN: usize = 300;

/// `mon_osd_blocklist_default_expire` (Ceph's default, one hour).
const BLOCKLIST_DEFAULT_EXPIRE_SECS: u64 = 3600;
/// Longest blocklist entry accepted (ten years; bounds the arithmetic).
const BLOCKLIST_MAX_EXPIRE_SECS: u64 = 10 * 365 * 86400;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mondb_err(e: mondb::MonDbError) -> CmdError {
    cmd_err(e.errno(), e.to_string())
}

fn cmd_err(e: Errno, m: impl Into<String>) -> CmdError {
    CmdError {
        errno: e.code(),
        message: m.into(),
    }
}

fn error_response(e: CmdError) -> Response {
    Response::Error {
        errno: e.errno,
        message: e.message,
    }
}

/// One authenticated connection.
struct Session {
    entity: String,
    global_id: u64,
    is_mon: bool,
    secret: Secret,
}

type PgWaiter = tokio::sync::oneshot::Sender<Result<Epoch, CmdError>>;

/// PG activations waiting for the next raft write.
#[derive(Default)]
struct PgQueue {
    flushing: bool,
    items: Vec<(PgId, Epoch, Vec<OsdId>, PgWaiter)>,
}

#[derive(Default)]
struct Detector {
    was_leader: bool,
    last_beacon: HashMap<OsdId, Instant>,
    seen_up_from: HashMap<OsdId, Epoch>,
}

/// The monitor.
pub struct Mon {
    pub(crate) cfg: MonConfig,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) mon_secret: Secret,
    pub(crate) keyring: Vec<KeyringEntry>,
    pub(crate) peers: Arc<Peers>,
    gids: Mutex<(u64, u64)>,
    gid_lock: tokio::sync::Mutex<()>,
    detector: Mutex<Detector>,
    /// Each OSD's last filesystem report: when, total and available bytes
    /// (kept in memory, as Ceph's manager keeps OSD stats: the OSDs send
    /// it with every beacon).
    statfs: Mutex<HashMap<OsdId, (Instant, u64, u64)>>,
    /// Each OSD's last report of the pools whose PGs it leads (sent with
    /// its filesystem report): pool usage for the quotas, summed over the
    /// up OSDs' fresh reports.
    pool_usage: Mutex<HashMap<OsdId, (Instant, Vec<PoolUsage>)>>,
    /// Each monitor's last report of its data filesystem, by rank: when,
    /// total and available bytes (this one's measured here, the others'
    /// sent by them: [`Mon::disk_loop`]).
    mon_disk: Mutex<HashMap<u64, (Instant, u64, u64)>>,
    pg_queue: Mutex<PgQueue>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Mon {
    /// Build the monitor around a started raft node.
    pub(crate) fn new(
        cfg: MonConfig,
        raft: Raft<TypeConfig>,
        shared: Arc<Shared>,
        mon_secret: Secret,
        keyring: Vec<KeyringEntry>,
        peers: Arc<Peers>,
        shutdown: watch::Receiver<bool>,
    ) -> Mon {
        Mon {
            cfg,
            raft,
            shared,
            mon_secret,
            keyring,
            peers,
            gids: Mutex::new((0, 0)),
            gid_lock: tokio::sync::Mutex::new(()),
            detector: Mutex::new(Detector::default()),
            statfs: Mutex::new(HashMap::new()),
            pool_usage: Mutex::new(HashMap::new()),
            mon_disk: Mutex::new(HashMap::new()),
            pg_queue: Mutex::new(PgQueue::default()),
            shutdown,
        }
    }

    fn map(&self) -> Arc<ClusterMap> {
        self.shared.map_tx.borrow().clone()
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.cfg.rank)
    }

    fn leader_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, node)| node.addr.clone())?;
        Some((id, addr))
    }

    /// Commit a state change: locally when leader, else via the leader.
    pub(crate) async fn propose(&self, cmd: StateCmd) -> CmdResult {
        let deadline = Instant::now() + self.cfg.timings.propose_timeout;
        let mut last = String::from("no leader elected");
        loop {
            match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return resp.data,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let (Some(id), Some(BasicNode { addr })) = (f.leader_id, f.leader_node) {
                        if id != self.cfg.rank {
                            let remaining = deadline.saturating_duration_since(Instant::now());
                            match self
                                .peers
                                .call(&addr, &PeerRequest::Forward(cmd.clone()), remaining)
                                .await
                            {
                                Ok(PeerResponse::Forwarded(Err(e)))
                                    if e.errno == Errno::EAGAIN.code() =>
                                {
                                    last = e.message;
                                }
                                Ok(PeerResponse::Forwarded(r)) => return r,
                                Ok(other) => {
                                    last = format!("unexpected answer from the leader: {other:?}")
                                }
                                Err(e) => last = e.to_string(),
                            }
                        }
                    }
                }
                Err(RaftError::APIError(e)) => {
                    return Err(cmd_err(Errno::EIO, format!("raft: {e}")))
                }
                Err(RaftError::Fatal(e)) => {
                    return Err(cmd_err(Errno::ESHUTDOWN, format!("monitor stopping: {e}")))
                }
            }
            if Instant::now() >= deadline {
                return Err(cmd_err(
                    Errno::EAGAIN,
                    format!(
                        "no monitor quorum within {:?}: {last}",
                        self.cfg.timings.propose_timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn next_global_id(&self) -> Result<u64, CmdError> {
        let take = |g: &Mutex<(u64, u64)>| -> Option<u64> {
            let mut r = g.lock().ok()?;
            if r.0 < r.1 {
                r.0 += 1;
                Some(r.0 - 1)
            } else {
                None
            }
        };
        if let Some(id) = take(&self.gids) {
            return Ok(id);
        }
        let _one_at_a_time = self.gid_lock.lock().await;
        if let Some(id) = take(&self.gids) {
            return Ok(id);
        }
        match self
            .propose(StateCmd::AllocGlobalIds { count: GID_BATCH })
            .await?
        {
            Applied::GlobalIds(first) => {
                if let Ok(mut r) = self.gids.lock() {
                    *r = (first + 1, first + GID_BATCH);
                }
                Ok(first)
            }
            other => Err(cmd_err(Errno::EIO, format!("unexpected result {other:?}"))),
        }
    }

    fn entity_caps(&self, s: &Session) -> EntityCaps {
        if s.is_mon {
            return EntityCaps::admin();
        }
        self.shared
            .read(|st| st.auth.get(&s.entity).map(|r| r.caps.clone()))
            .unwrap_or_default()
    }

    fn require(&self, s: &Session, access: MonAccess) -> Result<EntityCaps, CmdError> {
        let caps = self.entity_caps(s);
        if caps.mon().mon_allows(access) {
            Ok(caps)
        } else {
            Err(cmd_err(
                Errno::EACCES,
                format!(
                    "access denied: {} lacks the monitor caps for this ({access:?})",
                    s.entity
                ),
            ))
        }
    }

    fn make_ticket(
        &self,
        entity: &str,
        global_id: u64,
        osd_caps: Caps,
        secret: &Secret,
        cn: &[u8; 16],
    ) -> WireTicket {
        let sn = handshake::random_nonce();
        let mut session_key = [0u8; 32];
        session_key[..16].copy_from_slice(&handshake::random_nonce());
        session_key[16..].copy_from_slice(&handshake::random_nonce());
        let expires_unix = now_unix() + self.cfg.ticket_ttl.as_secs().max(1);
        let service_key = self.shared.read(|st| st.service_key);
        let t = issue_ticket(
            &service_key,
            &Claims {
                entity: entity.to_string(),
                global_id,
                caps: osd_caps,
                expires_unix,
                session_key,
            },
            &handshake::random_nonce(),
        );
        WireTicket {
            blob: t.blob.to_vec(),
            server_nonce: sn,
            wrapped_session_key: handshake::wrap_session_key(secret, entity, cn, &sn, &session_key),
            expires_unix,
        }
    }

    /// Accept connections until shutdown.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener) {
        let limit = Arc::new(Semaphore::new(self.cfg.max_connections.max(1)));
        let mut shutdown = self.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!(
                            "mon.{}: connection limit reached, refusing {peer}",
                            self.cfg.name
                        );
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let me = self.clone();
                    tokio::spawn(async move {
                        let mut sd = me.shutdown.clone();
                        tokio::select! {
                            _ = me.clone().serve_conn(stream, peer, permit) => {}
                            _ = sd.wait_for(|s| *s) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("mon.{}: accept failed: {e}", self.cfg.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_conn(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        let mut stream = stream;
        // The handshake runs on the bare stream: the I/O tasks start after
        // it, signing from the first frame on when both ends sign.
        let (session, signers) = match tokio::time::timeout(
            self.cfg.timings.handshake,
            self.handshake(&mut stream, peer),
        )
        .await
        {
            Ok(Ok((s, signers))) => (Arc::new(s), signers),
            Ok(Err(msg)) => {
                tracing::warn!("mon.{}: handshake with {peer} failed: {msg}", self.cfg.name);
                let _ = stream.shutdown().await;
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "mon.{}: {peer} did not authenticate within {:?}; closing",
                    self.cfg.name,
                    self.cfg.timings.handshake
                );
                return;
            }
        };
        tracing::debug!(
            "mon.{}: {} authenticated from {peer}",
            self.cfg.name,
            session.entity
        );
        let (wsig, mut rsig) = match signers {
            Some((w, r)) => (Some(w), Some(r)),
            None => (None, None),
        };
        let (rd, wr) = stream.into_split();
        let mut rd = tokio::io::BufReader::new(rd);
        let (out_tx, out_rx) = mpsc::channel::<Frame>(OUT_QUEUE);
        let _writer = tokio::spawn(write_loop(wr, out_rx, wsig));
        let inflight = Arc::new(Semaphore::new(INFLIGHT_PER_CONN));
        let mut push_task: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            // A forged, replayed or reordered frame fails here, before it
            // is decoded or acted on, and drops the connection (logged).
            let f = match read_frame_signed(&mut rd, rsig.as_mut()).await {
                Ok(f) => f,
                Err(FrameError::Closed) => break,
                Err(e) => {
                    tracing::warn!(
                        "mon.{}: closing connection from {peer} ({}): {e}",
                        self.cfg.name,
                        session.entity
                    );
                    break;
                }
            };
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                break;
            };
            match f.kind {
                KIND_REQUEST => {
                    let req: Request = match f.decode() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(
                                "mon.{}: bad request from {peer}: {e}; closing",
                                self.cfg.name
                            );
                            break;
                        }
                    };
                    if let Request::Subscribe { have } = req {
                        if let Some(t) = push_task.take() {
                            t.abort();
                        }
                        push_task = Some(tokio::spawn(push_maps(
                            self.shared.map_tx.subscribe(),
                            have,
                            out_tx.clone(),
                        )));
                        send(&out_tx, KIND_RESPONSE, f.request_id, &Response::Ok).await;
                        continue;
                    }
                    let me = self.clone();
                    let s = session.clone();
                    let tx = out_tx.clone();
                    tokio::spawn(async move {
                        let resp = me.handle(&s, req).await;
                        send(&tx, KIND_RESPONSE, f.request_id, &resp).await;
                        drop(permit);
                    });
                }
                KIND_PEER_REQUEST if session.is_mon => {
                    let req: PeerRequest = match f.decode() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(
                                "mon.{}: bad peer request from {peer}: {e}; closing",
                                self.cfg.name
                            );
                            break;
                        }
                    };
                    let me = self.clone();
                    let tx = out_tx.clone();
                    tokio::spawn(async move {
                        let resp = me.handle_peer(req).await;
                        send(&tx, KIND_PEER_RESPONSE, f.request_id, &resp).await;
                        drop(permit);
                    });
                }
                k => {
                    tracing::warn!(
                        "mon.{}: unexpected frame kind {k} from {peer} ({}); closing",
                        self.cfg.name,
                        session.entity
                    );
                    break;
                }
            }
        }
        if let Some(t) = push_task {
            t.abort();
        }
    }

    async fn handshake(
        &self,
        s: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<(Session, Signers), String> {
        // Refusals answer the request being refused (its id), then close.
        async fn refuse(
            s: &mut TcpStream,
            id: u64,
            errno: Errno,
            message: String,
        ) -> Result<(Session, Signers), String> {
            send_direct(
                s,
                KIND_RESPONSE,
                id,
                &Response::Error {
                    errno: errno.code(),
                    message: message.clone(),
                },
            )
            .await;
            Err(message)
        }
        let f = match read_frame(s).await {
            Ok(f) => f,
            Err(FrameError::BadVersion(v)) => {
                // Tell a client of another release why, in our version
                // (it fails at once instead of retrying), then close.
                let _ = write_frame(s, &quarry_proto::version_mismatch_frame(v)).await;
                return Err(FrameError::BadVersion(v).to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        let id = f.request_id;
        if f.kind != KIND_REQUEST {
            return Err(format!("frame kind {} before authentication", f.kind));
        }
        let (entity, cn, client_signs) = match f.decode::<Request>() {
            Ok(Request::Hello {
                entity,
                client_nonce,
                sign,
            }) => (entity, client_nonce, sign),
            Ok(_) => return refuse(s, id, Errno::EACCES, "authenticate first".into()).await,
            Err(e) => return Err(format!("bad handshake body: {e}")),
        };
        if entity.len() > MAX_ENTITY_LEN {
            return refuse(s, id, Errno::EINVAL, "entity name too long".into()).await;
        }
        let is_mon = entity == MON_ENTITY;
        let secret = if is_mon {
            Some(self.mon_secret.clone())
        } else {
            let (init, secret) = self.shared.read(|st| {
                (
                    st.initialized,
                    st.auth.get(&entity).and_then(|r| r.secret()),
                )
            });
            if !init {
                return refuse(
                    s,
                    id,
                    Errno::EAGAIN,
                    "monitor not ready: cluster not bootstrapped yet".into(),
                )
                .await;
            }
            secret
        };
        let Some(secret) = secret else {
            return refuse(s, id, Errno::EACCES,
                format!("authentication error: unknown entity {entity} (no such user in the cluster's auth database)"),
            )
            .await;
        };
        let policy = SignPolicy::global();
        let mode = SignPolicy::mode_byte(client_signs, policy.sign);
        let signed = SignPolicy::negotiated(client_signs, policy.sign);
        // The entity is only claimed here, but the proofs below bind it:
        // claiming a daemon's name to dodge a client-only requirement fails.
        let peer_is_daemon = is_mon || quarry_proto::is_daemon_entity(&entity);
        if let Some(msg) = policy.check(signed, peer_is_daemon) {
            tracing::info!(%peer, %entity, "refused: {msg}");
            let msg = format!("authentication error: mon.{}: {msg}", self.cfg.name);
            return refuse(s, id, Errno::EACCES, msg).await;
        }
        let sn = handshake::random_nonce();
        let challenge = Response::Challenge {
            server_nonce: sn,
            server_proof: handshake::server_proof(&secret, &entity, &cn, &sn, mode),
            sign: policy.sign,
        };
        send_direct(s, KIND_RESPONSE, id, &challenge).await;
        let f = match read_frame(s).await {
            Ok(f) => f,
            Err(FrameError::Closed) => {
                return Err(format!(
                    "{entity} from {peer} left during the handshake (its key does not match ours?)"
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let id = f.request_id;
        let proof = match f.decode::<Request>() {
            Ok(Request::Prove { proof }) => proof,
            Ok(_) | Err(_) => {
                return refuse(s, id, Errno::EACCES, "expected the client's proof".into()).await
            }
        };
        if !handshake::proofs_equal(
            &handshake::client_proof(&secret, &entity, &cn, &sn, mode),
            &proof,
        ) {
            return refuse(
                s,
                id,
                Errno::EACCES,
                format!("authentication error: wrong key for {entity}"),
            )
            .await;
        }
        let global_id = if is_mon {
            0
        } else {
            match self.next_global_id().await {
                Ok(g) => g,
                Err(e) => {
                    let errno = Errno::from_code(e.errno);
                    return refuse(s, id, errno, e.message).await;
                }
            }
        };
        let osd_caps = if is_mon {
            Caps::all()
        } else {
            self.shared
                .read(|st| st.auth.get(&entity).map(|r| r.caps.osd()))
                .unwrap_or_else(Caps::none)
        };
        let ticket = self.make_ticket(&entity, global_id, osd_caps, &secret, &cn);
        send_direct(
            s,
            KIND_RESPONSE,
            id,
            &Response::AuthOk { global_id, ticket },
        )
        .await;
        let signers = signed.then(|| {
            let key = handshake::frame_key(&secret, &entity, &cn, &sn);
            FrameSigner::pair(&key, Role::Acceptor)
        });
        Ok((
            Session {
                entity,
                global_id,
                is_mon,
                secret,
            },
            signers,
        ))
    }

    async fn handle(&self, s: &Session, req: Request) -> Response {
        match self.handle_inner(s, req).await {
            Ok(r) => r,
            Err(e) => error_response(e),
        }
    }

    fn osd_self(&self, s: &Session, id: OsdId) -> Result<(), CmdError> {
        let caps = self.require(s, MonAccess::OsdDaemon)?;
        let admin = caps.mon().mon_allows(MonAccess::AuthAdmin);
        if s.entity == format!("osd.{id}") || admin {
            Ok(())
        } else {
            Err(cmd_err(
                Errno::EACCES,
                format!("access denied: {} cannot act for osd.{id}", s.entity),
            ))
        }
    }

    async fn handle_inner(&self, s: &Session, req: Request) -> Result<Response, CmdError> {
        match req {
            Request::Hello { .. } | Request::Prove { .. } => {
                Err(cmd_err(Errno::EINVAL, "already authenticated"))
            }
            Request::Subscribe { .. } => Ok(Response::Ok),
            Request::GetMap => {
                self.require(s, MonAccess::Read)?;
                Ok(Response::Map(Box::new((*self.map()).clone())))
            }
            Request::Command(cmd) => self.command(s, cmd).await.map(Response::Reply),
            Request::GetTicket { nonce } => {
                let osd_caps = if s.is_mon {
                    Caps::all()
                } else {
                    self.entity_caps(s).osd()
                };
                Ok(Response::Ticket(self.make_ticket(
                    &s.entity,
                    s.global_id,
                    osd_caps,
                    &s.secret,
                    &nonce,
                )))
            }
            Request::GetServiceKey { nonce } => {
                self.require(s, MonAccess::OsdDaemon)?;
                if !(s.is_mon || s.entity.starts_with("osd.")) {
                    return Err(cmd_err(
                        Errno::EACCES,
                        "access denied: only OSDs get the service key",
                    ));
                }
                let key = self.shared.read(|st| st.service_key);
                let sn = handshake::random_nonce();
                Ok(Response::ServiceKey {
                    server_nonce: sn,
                    wrapped: handshake::wrap_session_key(&s.secret, &s.entity, &nonce, &sn, &key),
                })
            }
            Request::OsdBoot {
                id,
                addr,
                host,
                initial_weight,
            } => {
                self.osd_self(s, id)?;
                if addr.is_empty() || addr.len() > 256 || host.is_empty() || host.len() > 256 {
                    return Err(cmd_err(
                        Errno::EINVAL,
                        "osd boot: address and host must be 1 to 256 bytes",
                    ));
                }
                tracing::info!(
                    "mon.{}: osd.{id} boots at {addr} on host {host}",
                    self.cfg.name
                );
                // The plain entry unless a weight for a new OSD comes
                // with it (older logs hold only the plain one).
                let cmd = match initial_weight {
                    Some(weight) => StateCmd::OsdBootWeighted {
                        id,
                        addr,
                        host,
                        weight,
                    },
                    None => StateCmd::OsdBoot { id, addr, host },
                };
                match self.propose(cmd).await? {
                    Applied::Epoch(e) => Ok(Response::Epoch(e)),
                    other => Err(cmd_err(Errno::EIO, format!("unexpected result {other:?}"))),
                }
            }
            Request::OsdBeacon { id } => {
                self.osd_self(s, id)?;
                self.beacon(id).await;
                Ok(Response::Ok)
            }
            Request::OsdStatfs {
                id,
                total_bytes,
                avail_bytes,
                pools,
            } => {
                self.osd_self(s, id)?;
                self.record_osd_statfs(id, total_bytes, avail_bytes, pools.clone());
                // The other monitors learn it too: a primary attached to
                // any of them must hear that this OSD (or a pool) is full.
                self.tell_other_mons(PeerRequest::OsdStatfs {
                    id,
                    total: total_bytes,
                    avail: avail_bytes,
                    pools,
                });
                let (nearfull_milli, full_milli) =
                    self.shared.read(|st| (st.nearfull_milli, st.full_milli));
                let full_osds = self
                    .fill_levels(&self.map())
                    .into_iter()
                    .filter(|(_, used)| *used >= full_milli)
                    .map(|(o, _)| o)
                    .collect();
                let map = self.map();
                let quota_full_pools = self
                    .quota_full_pools(&map)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                Ok(Response::Fullness(quarry_monc::Fullness {
                    nearfull_milli,
                    full_milli,
                    full_osds,
                    quota_full_pools,
                }))
            }
            Request::PgScrubbed(report) => {
                self.require(s, MonAccess::OsdDaemon)?;
                // Every scrub is written: its stamp schedules the next one
                // (once per PG per osd_deep_scrub_interval, a week).
                self.propose(StateCmd::PgScrubbed {
                    report,
                    now_unix: now_unix(),
                })
                .await?;
                Ok(Response::Ok)
            }
            Request::PgActivated { pg, epoch, acting } => {
                self.require(s, MonAccess::OsdDaemon)?;
                if acting.len() > 64 {
                    return Err(cmd_err(Errno::EINVAL, "acting set too large"));
                }
                self.pg_activated(pg, epoch, acting)
                    .await
                    .map(Response::Epoch)
            }
        }
    }

    /// Record a PG activation. Activations arriving while one raft write
    /// is in flight are committed together in the next one (group commit):
    /// an OSD starting up activates all its PGs at once, and one epoch for
    /// all of them spares every subscriber a map per PG.
    async fn pg_activated(
        &self,
        pg: PgId,
        epoch: Epoch,
        acting: Vec<OsdId>,
    ) -> Result<Epoch, CmdError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = self
                .pg_queue
                .lock()
                .map_err(|_| cmd_err(Errno::EIO, "pg queue poisoned"))?;
            q.items.push((pg, epoch, acting, tx));
            !std::mem::replace(&mut q.flushing, true)
        };
        if lead {
            // This request's task commits batches until the queue is empty.
            loop {
                let batch: Vec<_> = {
                    let Ok(mut q) = self.pg_queue.lock() else {
                        break;
                    };
                    if q.items.is_empty() {
                        q.flushing = false;
                        break;
                    }
                    let n = q.items.len().min(PG_BATCH_MAX);
                    q.items.drain(..n).collect()
                };
                let items = batch
                    .iter()
                    .map(|(p, e, a, _)| (*p, *e, a.clone()))
                    .collect();
                let r = match self.propose(StateCmd::PgActivated { items }).await {
                    Ok(Applied::Epoch(e)) => Ok(e),
                    Ok(other) => Err(cmd_err(Errno::EIO, format!("unexpected result {other:?}"))),
                    Err(e) => Err(e),
                };
                for (_, _, _, tx) in batch {
                    let _ = tx.send(r.clone());
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(cmd_err(Errno::EIO, "pg activation batch lost")))
    }

    async fn beacon(&self, id: OsdId) {
        if self.is_leader() {
            if let Ok(mut d) = self.detector.lock() {
                d.last_beacon.insert(id, Instant::now());
            }
            return;
        }
        if let Some((_, addr)) = self.leader_addr() {
            // Best effort: the OSD sends another beacon in a second anyway.
            let t = self.cfg.timings.tick.max(Duration::from_millis(500));
            if let Err(e) = self.peers.call(&addr, &PeerRequest::Beacon { id }, t).await {
                tracing::debug!("mon.{}: forwarding beacon of osd.{id}: {e}", self.cfg.name);
            }
        }
    }

    async fn handle_peer(&self, req: PeerRequest) -> PeerResponse {
        match req {
            PeerRequest::Append(r) => PeerResponse::Append(self.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(self.raft.vote(r).await),
            PeerRequest::Snapshot(r) => PeerResponse::Snapshot(self.raft.install_snapshot(r).await),
            PeerRequest::Forward(cmd) => {
                // Only commit locally: forwarding again could loop.
                let r = match self.raft.client_write(cmd).await {
                    Ok(resp) => resp.data,
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                        Err(cmd_err(Errno::EAGAIN, "not the leader any more"))
                    }
                    Err(e) => Err(cmd_err(Errno::EAGAIN, format!("raft: {e}"))),
                };
                PeerResponse::Forwarded(r)
            }
            PeerRequest::Beacon { id } => {
                if self.is_leader() {
                    if let Ok(mut d) = self.detector.lock() {
                        d.last_beacon.insert(id, Instant::now());
                    }
                }
                PeerResponse::Ok
            }
            PeerRequest::MonDisk { rank, total, avail } => {
                self.record_mon_disk(rank, total, avail);
                PeerResponse::Ok
            }
            PeerRequest::OsdStatfs {
                id,
                total,
                avail,
                pools,
            } => {
                self.record_osd_statfs(id, total, avail, pools);
                PeerResponse::Ok
            }
        }
    }

    /// Send `req` to every other monitor, best effort and without waiting:
    /// periodic reports, so one that is down hears the next one.
    fn tell_other_mons(&self, req: PeerRequest) {
        let t = self.cfg.timings.tick.max(Duration::from_millis(500));
        for m in self.cfg.mons.iter().filter(|m| m.rank != self.cfg.rank) {
            let (peers, addr, req) = (self.peers.clone(), m.addr.clone(), req.clone());
            tokio::spawn(async move {
                if let Err(e) = peers.call(&addr, &req, t).await {
                    tracing::debug!("telling the monitor at {addr}: {e}");
                }
            });
        }
    }

    fn record_osd_statfs(&self, id: OsdId, total: u64, avail: u64, pools: Vec<PoolUsage>) {
        if let Ok(mut m) = self.statfs.lock() {
            m.insert(id, (Instant::now(), total, avail.min(total)));
        }
        if let Ok(mut m) = self.pool_usage.lock() {
            m.insert(id, (Instant::now(), pools));
        }
    }

    /// Each pool's objects and bytes: the sum of the up OSDs' fresh
    /// reports (within the heartbeat grace), each counting the PGs it
    /// leads. Approximate as Ceph's PG stats are: a PG whose primary just
    /// changed may be counted twice or not at all until the next reports.
    fn pool_usage(&self, map: &ClusterMap) -> BTreeMap<PoolId, (u64, u64)> {
        let grace = self.effective_timings().osd_heartbeat_grace;
        let mut out: BTreeMap<PoolId, (u64, u64)> = BTreeMap::new();
        let Ok(m) = self.pool_usage.lock() else {
            return out;
        };
        for (osd, (at, pools)) in m.iter() {
            if at.elapsed() > grace || !map.osds.get(osd).is_some_and(|i| i.up) {
                continue;
            }
            for u in pools.iter().filter(|u| map.pools.contains_key(&u.pool)) {
                let e = out.entry(u.pool).or_default();
                e.0 = e.0.saturating_add(u.objects);
                e.1 = e.1.saturating_add(u.bytes);
            }
        }
        out
    }

    /// Pools at or over a quota (Ceph's `FLAG_FULL_QUOTA`), each with the
    /// quota it reached (`max_objects: 10`).
    fn quota_full_pools(&self, map: &ClusterMap) -> Vec<(PoolId, String)> {
        let quotas = self.shared.read(|st| st.pool_quotas.clone());
        if quotas.is_empty() {
            return Vec::new();
        }
        let usage = self.pool_usage(map);
        quotas
            .iter()
            .filter(|(p, _)| map.pools.contains_key(p))
            .filter_map(|(p, q)| {
                let (objects, bytes) = usage.get(p).copied().unwrap_or_default();
                if q.max_objects > 0 && objects >= q.max_objects {
                    Some((*p, format!("max_objects: {}", q.max_objects)))
                } else if q.max_bytes > 0 && bytes >= q.max_bytes {
                    Some((*p, format!("max_bytes: {}", q.max_bytes)))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Changing a pool's PG count would move objects to PGs that do not
    /// hold them (OSDs do not split or merge PGs): every object whose PG
    /// changes would read as absent, an RBD image's data as zeros. Refused
    /// here, before the log, so that entries committed by older monitors
    /// still replay as they did.
    fn refuse_pg_num_change(&self, pool: &str, var: &str, val: &str) -> Result<(), CmdError> {
        let map = self.map();
        let Some(def) = map.pool_by_name(pool) else {
            return Ok(()); // the state machine names the missing pool
        };
        if val.trim().parse::<u32>().ok() == Some(def.pg_num) {
            return Ok(());
        }
        Err(cmd_err(
            Errno::EOPNOTSUPP,
            format!(
                "changing {var} of pool '{pool}' (now {}) is not supported: PGs are not split or \
                 merged, so objects would move to PGs that do not hold them. Create a pool with \
                 the PG count it needs (ceph osd pool create NAME PG_NUM) and copy the images \
                 into it (rbd cp, or rbd export | rbd import)",
                def.pg_num
            ),
        ))
    }

    fn record_mon_disk(&self, rank: u64, total: u64, avail: u64) {
        if let Ok(mut m) = self.mon_disk.lock() {
            m.insert(rank, (Instant::now(), total, avail.min(total)));
        }
    }

    /// Every tick: measure this monitor's data filesystem and tell the
    /// other monitors, so that whichever answers `ceph health` knows every
    /// monitor's free space (Ceph's MON_DISK_LOW / MON_DISK_CRIT).
    pub(crate) async fn disk_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let (total, avail) = match quarry_common::fsspace::fs_space(&self.cfg.data_dir) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(
                        "mon.{}: statvfs {}: {e}",
                        self.cfg.name,
                        self.cfg.data_dir.display()
                    );
                    (0, 0)
                }
            };
            if total > 0 {
                self.record_mon_disk(self.cfg.rank, total, avail);
                self.tell_other_mons(PeerRequest::MonDisk {
                    rank: self.cfg.rank,
                    total,
                    avail,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.timings.tick) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// MON_DISK_CRIT and MON_DISK_LOW from the monitors' recent reports.
    fn mon_disk_checks(&self, map: &ClusterMap, checks: &mut Vec<HealthCheck>) {
        let fresh = (self.cfg.timings.tick * 5).max(Duration::from_secs(10));
        let Ok(m) = self.mon_disk.lock() else {
            return;
        };
        let (mut crit, mut low) = (Vec::new(), Vec::new());
        for mon in &map.mons {
            let Some((at, total, avail)) = m.get(&mon.rank) else {
                continue;
            };
            if *total == 0 || at.elapsed() > fresh {
                continue;
            }
            let pct = (u128::from(*avail) * 100 / u128::from(*total)) as u32;
            if pct < self.cfg.data_avail_crit {
                crit.push((mon.name.clone(), pct));
            } else if pct < self.cfg.data_avail_warn {
                low.push((mon.name.clone(), pct));
            }
        }
        for (code, severity, how, list) in [
            ("MON_DISK_CRIT", Health::Err, "very low", crit),
            ("MON_DISK_LOW", Health::Warn, "low", low),
        ] {
            if list.is_empty() {
                continue;
            }
            let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
            let summary = if names.len() == 1 {
                format!("mon {} is {how} on available space", names[0])
            } else {
                format!("mons {} are {how} on available space", names.join(","))
            };
            checks.push(HealthCheck {
                code: code.to_string(),
                severity,
                summary,
                count: list.len() as u32,
                detail: list
                    .iter()
                    .map(|(n, pct)| format!("mon.{n} has {pct}% avail"))
                    .collect(),
            });
        }
    }

    fn pool_params(&self, cmd: &MonCommand) -> Option<PoolParams> {
        let MonCommand::PoolCreate {
            name,
            pg_num,
            size,
            min_size,
            application,
        } = cmd
        else {
            return None;
        };
        let d = &self.cfg.pool_defaults;
        let size = size.unwrap_or(d.size);
        let min_size = min_size.unwrap_or(if d.min_size == 0 {
            size - size / 2
        } else {
            d.min_size.min(size)
        });
        Some(PoolParams {
            name: name.clone(),
            pg_num: pg_num.unwrap_or(d.pg_num),
            size,
            min_size,
            application: application.clone(),
            failure_domain: self.cfg.failure_domain,
        })
    }

    fn require_auth_admin(&self, s: &Session, entity: &str) -> Result<(), CmdError> {
        let caps = self.entity_caps(s).mon();
        if caps.mon_allows(MonAccess::AuthAdmin)
            || (entity.starts_with("osd.") && caps.mon_allows(MonAccess::BootstrapOsd))
        {
            Ok(())
        } else {
            Err(cmd_err(
                Errno::EACCES,
                format!(
                    "access denied: {} may not manage the key of {entity}",
                    s.entity
                ),
            ))
        }
    }

    async fn command(&self, s: &Session, cmd: MonCommand) -> Result<MonReply, CmdError> {
        let reply = |a: Applied| match a {
            Applied::Reply(r) => Ok(r),
            Applied::Epoch(e) => Ok(MonReply::Ok { epoch: e }),
            other => Err(cmd_err(Errno::EIO, format!("unexpected result {other:?}"))),
        };
        let caps_of = |pairs: &[(String, String)]| {
            EntityCaps::from_pairs(pairs).map_err(|e| cmd_err(e.errno(), e.to_string()))
        };
        match &cmd {
            MonCommand::PoolCreate { .. } => {
                self.require(s, MonAccess::Write)?;
                let p = self
                    .pool_params(&cmd)
                    .ok_or_else(|| cmd_err(Errno::EINVAL, "bad pool create"))?;
                reply(self.propose(StateCmd::PoolCreate(p)).await?)
            }
            MonCommand::PoolDelete { name } => {
                self.require(s, MonAccess::Write)?;
                if !self.cfg.allow_pool_delete {
                    return Err(cmd_err(
                        Errno::EPERM,
                        "pool deletion is disabled; you must first set the mon_allow_pool_delete config option to true before you can destroy a pool",
                    ));
                }
                reply(
                    self.propose(StateCmd::PoolDelete { name: name.clone() })
                        .await?,
                )
            }
            MonCommand::PoolSet { name, var, val } => {
                self.require(s, MonAccess::Write)?;
                if matches!(var.as_str(), "pg_num" | "pgp_num") {
                    self.refuse_pg_num_change(name, var, val)?;
                }
                reply(
                    self.propose(StateCmd::PoolSet {
                        name: name.clone(),
                        var: var.clone(),
                        val: val.clone(),
                    })
                    .await?,
                )
            }
            MonCommand::PoolList => {
                self.require(s, MonAccess::Read)?;
                Ok(MonReply::Pools(
                    self.map().pools.values().cloned().collect(),
                ))
            }
            MonCommand::SnapCreate { pool } | MonCommand::SnapRemove { pool, .. } => {
                // Self-managed snapshots need write access to the pool: mon
                // write caps, or OSD caps allowing writes there (as Ceph).
                let caps = self.entity_caps(s);
                let pool_name = self.map().pools.get(pool).map(|p| p.name.clone());
                let Some(pool_name) = pool_name else {
                    return Err(cmd_err(
                        Errno::ENOENT,
                        format!("pool {pool} does not exist"),
                    ));
                };
                if !(caps.mon().mon_allows(MonAccess::Write)
                    || caps.osd().allows(&pool_name, "", true))
                {
                    return Err(cmd_err(
                        Errno::EPERM,
                        format!(
                            "access denied: {} may not manage snapshots in pool '{pool_name}'",
                            s.entity
                        ),
                    ));
                }
                let sc = match &cmd {
                    MonCommand::SnapRemove { pool, snap } => StateCmd::SnapRemove {
                        pool: *pool,
                        snap: *snap,
                    },
                    _ => StateCmd::SnapCreate { pool: *pool },
                };
                reply(self.propose(sc).await?)
            }
            MonCommand::OsdDown { id } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::OsdDown {
                        ids: vec![*id],
                        now_unix: now_unix(),
                    })
                    .await?,
                )
            }
            MonCommand::OsdOut { id } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::OsdOut {
                        ids: vec![*id],
                        auto: false,
                    })
                    .await?,
                )
            }
            MonCommand::OsdIn { id } => {
                self.require(s, MonAccess::Write)?;
                reply(self.propose(StateCmd::OsdIn { id: *id }).await?)
            }
            MonCommand::SetFullRatio { full, milli } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::SetFullRatio {
                        full: *full,
                        milli: *milli,
                    })
                    .await?,
                )
            }
            MonCommand::OsdDf => {
                self.require(s, MonAccess::Read)?;
                let grace = self.effective_timings().osd_heartbeat_grace;
                let m = self
                    .statfs
                    .lock()
                    .map_err(|_| cmd_err(Errno::EIO, "statfs table poisoned"))?;
                let mut v: Vec<(OsdId, u64, u64)> = m
                    .iter()
                    .filter(|(_, (at, _, _))| at.elapsed() <= grace)
                    .map(|(o, (_, total, avail))| (*o, *total, *avail))
                    .collect();
                v.sort_unstable();
                Ok(MonReply::OsdUsage(v))
            }
            MonCommand::ScrubStamps => {
                self.require(s, MonAccess::Read)?;
                Ok(MonReply::ScrubStamps(self.shared.read(|st| {
                    st.scrub_stamps.iter().map(|(pg, t)| (*pg, *t)).collect()
                })))
            }
            MonCommand::PoolSetQuota { name, field, value } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::PoolQuota {
                        name: name.clone(),
                        field: field.clone(),
                        value: *value,
                    })
                    .await?,
                )
            }
            MonCommand::PoolRename { from, to } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::PoolRename {
                        from: from.clone(),
                        to: to.clone(),
                    })
                    .await?,
                )
            }
            MonCommand::PoolApplication { pool, op } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::PoolApplication {
                        pool: pool.clone(),
                        op: op.clone(),
                    })
                    .await?,
                )
            }
            MonCommand::OsdCrushReweight { id, weight } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::OsdWeight {
                        id: *id,
                        weight: *weight,
                    })
                    .await?,
                )
            }
            MonCommand::OsdRemove { ids, purge } => {
                // Purge deletes keys: it needs what `auth del` needs.
                self.require(
                    s,
                    if *purge {
                        MonAccess::AuthAdmin
                    } else {
                        MonAccess::Write
                    },
                )?;
                reply(
                    self.propose(StateCmd::OsdRemove {
                        ids: ids.clone(),
                        purge: *purge,
                    })
                    .await?,
                )
            }
            MonCommand::OsdLost { id } => {
                self.require(s, MonAccess::Write)?;
                reply(self.propose(StateCmd::OsdLost { id: *id }).await?)
            }
            MonCommand::PoolApplicationGet { pool } => {
                self.require(s, MonAccess::Read)?;
                let map = self.map();
                let def = map
                    .pool_by_name(pool)
                    .ok_or_else(|| cmd_err(Errno::ENOENT, format!("unrecognized pool '{pool}'")))?;
                Ok(MonReply::PoolApplications(self.shared.read(|st| {
                    st.pool_apps.get(&def.id).cloned().unwrap_or_default()
                })))
            }
            MonCommand::PoolGetQuota { name } => {
                self.require(s, MonAccess::Read)?;
                let map = self.map();
                let def = map
                    .pool_by_name(name)
                    .ok_or_else(|| cmd_err(Errno::ENOENT, format!("unrecognized pool '{name}'")))?;
                let q = self
                    .shared
                    .read(|st| st.pool_quotas.get(&def.id).copied().unwrap_or_default());
                let (objects, bytes) = self
                    .pool_usage(&map)
                    .get(&def.id)
                    .copied()
                    .unwrap_or_default();
                Ok(MonReply::PoolQuota(PoolQuotaInfo {
                    pool: def.id,
                    name: def.name.clone(),
                    max_objects: q.max_objects,
                    max_bytes: q.max_bytes,
                    objects,
                    bytes,
                }))
            }
            MonCommand::OsdFlag { flag, set } => {
                self.require(s, MonAccess::Write)?;
                reply(
                    self.propose(StateCmd::OsdFlag {
                        flag: flag.clone(),
                        set: *set,
                    })
                    .await?,
                )
            }
            MonCommand::AuthGetOrCreate { entity, caps } => {
                self.require_auth_admin(s, entity)?;
                let c = caps_of(caps)?;
                reply(
                    self.propose(StateCmd::AuthGetOrCreate {
                        entity: entity.clone(),
                        caps_given: !caps.is_empty(),
                        caps: c,
                        new_key: Secret::generate(now_unix()).to_base64(),
                    })
                    .await?,
                )
            }
            MonCommand::AuthAdd { entity, key, caps } => {
                self.require_auth_admin(s, entity)?;
                let c = caps_of(caps)?;
                let key = match key {
                    Some(k) => Secret::from_base64(k)
                        .map_err(|e| cmd_err(e.errno(), e.to_string()))?
                        .to_base64(),
                    None => Secret::generate(now_unix()).to_base64(),
                };
                reply(
                    self.propose(StateCmd::AuthAdd {
                        entity: entity.clone(),
                        key,
                        caps: c,
                    })
                    .await?,
                )
            }
            MonCommand::AuthGet { entity } => {
                self.require_auth_admin(s, entity)?;
                self.shared
                    .read(|st| st.auth_entry(entity))
                    .map(|e| MonReply::Auth(vec![e]))
                    .ok_or_else(|| {
                        cmd_err(Errno::ENOENT, format!("failed to find {entity} in keyring"))
                    })
            }
            MonCommand::AuthPrintKey { entity } => {
                self.require_auth_admin(s, entity)?;
                self.shared
                    .read(|st| st.auth.get(entity).map(|r| r.key.clone()))
                    .map(MonReply::Key)
                    .ok_or_else(|| cmd_err(Errno::ENOENT, format!("don't have {entity}")))
            }
            MonCommand::AuthList => {
                self.require(s, MonAccess::AuthAdmin)?;
                let v: Vec<AuthEntry> = self
                    .shared
                    .read(|st| st.auth.keys().filter_map(|k| st.auth_entry(k)).collect());
                Ok(MonReply::Auth(v))
            }
            MonCommand::AuthDel { entity } => {
                self.require(s, MonAccess::AuthAdmin)?;
                reply(
                    self.propose(StateCmd::AuthDel {
                        entity: entity.clone(),
                    })
                    .await?,
                )
            }
            MonCommand::AuthCaps { entity, caps } => {
                self.require(s, MonAccess::AuthAdmin)?;
                let c = caps_of(caps)?;
                reply(
                    self.propose(StateCmd::AuthCaps {
                        entity: entity.clone(),
                        caps: c,
                    })
                    .await?,
                )
            }
            MonCommand::Status => {
                self.require(s, MonAccess::Read)?;
                Ok(MonReply::Status(self.status()))
            }
            MonCommand::BlocklistAdd { addr, expire_secs } => {
                self.require(s, MonAccess::Blocklist)?;
                let a = ClientAddr::parse(addr).map_err(|e| cmd_err(Errno::EINVAL, e))?;
                let secs = expire_secs.unwrap_or(BLOCKLIST_DEFAULT_EXPIRE_SECS);
                if secs == 0 || secs > BLOCKLIST_MAX_EXPIRE_SECS {
                    return Err(cmd_err(
                        Errno::EINVAL,
                        format!(
                            "invalid expire '{secs}': 0 < seconds <= {BLOCKLIST_MAX_EXPIRE_SECS}"
                        ),
                    ));
                }
                let now = now_unix();
                let until_unix = now + secs;
                let addr = a.to_string();
                let existed = self.map().blocklist.contains_key(&addr);
                let epoch = match reply(
                    self.propose(StateCmd::BlocklistAdd {
                        addr: addr.clone(),
                        until_unix,
                        now_unix: now,
                    })
                    .await?,
                )? {
                    MonReply::Ok { epoch } => epoch,
                    other => return Err(cmd_err(Errno::EIO, format!("unexpected {other:?}"))),
                };
                Ok(MonReply::Blocklisted {
                    addr,
                    until_unix,
                    existed,
                    epoch,
                })
            }
            MonCommand::BlocklistRm { addr } => {
                self.require(s, MonAccess::Blocklist)?;
                let a = ClientAddr::parse(addr).map_err(|e| cmd_err(Errno::EINVAL, e))?;
                let addr = a.to_string();
                let now = now_unix();
                let existed = self.map().blocklist.get(&addr).is_some_and(|&u| u > now);
                let epoch = match reply(
                    self.propose(StateCmd::BlocklistRm {
                        addr: addr.clone(),
                        now_unix: now,
                    })
                    .await?,
                )? {
                    MonReply::Ok { epoch } => epoch,
                    other => return Err(cmd_err(Errno::EIO, format!("unexpected {other:?}"))),
                };
                Ok(MonReply::Blocklisted {
                    addr,
                    until_unix: 0,
                    existed,
                    epoch,
                })
            }
            MonCommand::BlocklistList => {
                self.require(s, MonAccess::Read)?;
                let now = now_unix();
                Ok(MonReply::Blocklist(
                    self.map()
                        .blocklist
                        .iter()
                        .filter(|(_, &u)| u > now)
                        .map(|(a, &u)| (a.clone(), u))
                        .collect(),
                ))
            }
            MonCommand::ConfigSet { who, name, value } => {
                self.require(s, MonAccess::AuthAdmin)?;
                let section = mondb::parse_target(who).map_err(mondb_err)?;
                let (name, value) = mondb::check_set(name, value).map_err(mondb_err)?;
                reply(
                    self.propose(StateCmd::ConfigSet {
                        section,
                        name,
                        value,
                    })
                    .await?,
                )
            }
            MonCommand::ConfigRm { who, name } => {
                self.require(s, MonAccess::AuthAdmin)?;
                let section = mondb::parse_target(who).map_err(mondb_err)?;
                let name = mondb::check_name(name).map_err(mondb_err)?;
                reply(self.propose(StateCmd::ConfigRm { section, name }).await?)
            }
            MonCommand::ConfigDump => {
                self.require(s, MonAccess::Read)?;
                Ok(MonReply::Config(self.shared.read(|st| {
                    st.config
                        .iter()
                        .flat_map(|(section, opts)| {
                            opts.iter().map(move |(name, value)| ConfigEntry {
                                section: section.clone(),
                                name: name.clone(),
                                value: value.clone(),
                            })
                        })
                        .collect()
                })))
            }
            MonCommand::ConfigGet { who } => {
                // Every entity may read its own configuration (that is how
                // clients and daemons get it at connect); others need read.
                if *who != s.entity {
                    self.require(s, MonAccess::Read)?;
                }
                let sections = mondb::sections_for(who).map_err(mondb_err)?;
                Ok(MonReply::Config(self.shared.read(|st| {
                    mondb::resolve(&st.config, &sections)
                        .into_iter()
                        .map(|(name, (value, section))| ConfigEntry {
                            section,
                            name,
                            value,
                        })
                        .collect()
                })))
            }
        }
    }

    /// Per up OSD with a fresh filesystem report (within the heartbeat
    /// grace), how full it is, per mille.
    fn fill_levels(&self, map: &ClusterMap) -> Vec<(OsdId, u32)> {
        let grace = self.effective_timings().osd_heartbeat_grace;
        let Ok(m) = self.statfs.lock() else {
            return Vec::new();
        };
        let mut v: Vec<(OsdId, u32)> = m
            .iter()
            .filter(|(o, (at, total, _))| {
                *total > 0 && at.elapsed() <= grace && map.osds.get(o).is_some_and(|i| i.up)
            })
            .map(|(o, (_, total, avail))| {
                let used = total - avail;
                (*o, (u128::from(used) * 1000 / u128::from(*total)) as u32)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// `ceph -s` summary.
    pub(crate) fn status(&self) -> ClusterStatus {
        let map = self.map();
        let metrics = self.raft.metrics().borrow().clone();
        let name_of = |rank: u64| {
            map.mons
                .iter()
                .find(|m| m.rank == rank)
                .map(|m| m.name.clone())
        };
        let leader = metrics.current_leader.and_then(name_of);
        let quorum: Vec<String> = if leader.is_some() {
            metrics
                .membership_config
                .voter_ids()
                .filter_map(name_of)
                .collect()
        } else {
            Vec::new()
        };
        let num_osds = map.osds.len() as u32;
        let num_up = map.osds.values().filter(|o| o.up).count() as u32;
        let num_in = map.osds.values().filter(|o| o.in_cluster).count() as u32;
        let mut checks = Vec::new();
        let check = |code: &str, severity, summary: String, count: usize, detail| HealthCheck {
            code: code.to_string(),
            severity,
            summary,
            count: count as u32,
            detail,
        };
        if leader.is_none() {
            checks.push(check(
                "MON_DOWN",
                Health::Err,
                "no monitor quorum".to_string(),
                map.mons.len(),
                Vec::new(),
            ));
        }
        self.mon_disk_checks(&map, &mut checks);
        let down_in: Vec<String> = map
            .osds
            .values()
            .filter(|o| !o.up && o.in_cluster)
            .map(|o| format!("osd.{} (host {}) is down", o.id, o.host))
            .collect();
        per_item(
            &mut checks,
            "OSD_DOWN",
            Health::Warn,
            |n| format!("{n} osds down"),
            down_in,
        );
        let (nearfull_milli, full_milli) =
            self.shared.read(|st| (st.nearfull_milli, st.full_milli));
        let levels = self.fill_levels(&map);
        let pct = |u: u32| format!("{}.{}% used", u / 10, u % 10);
        let full: Vec<String> = levels
            .iter()
            .filter(|(_, u)| *u >= full_milli)
            .map(|(o, u)| format!("osd.{o} is full ({})", pct(*u)))
            .collect();
        let nearfull: Vec<String> = levels
            .iter()
            .filter(|(_, u)| *u >= nearfull_milli && *u < full_milli)
            .map(|(o, u)| format!("osd.{o} is near full ({})", pct(*u)))
            .collect();
        per_item(
            &mut checks,
            "OSD_FULL",
            Health::Err,
            |n| format!("{n} full osd(s)"),
            full,
        );
        per_item(
            &mut checks,
            "OSD_NEARFULL",
            Health::Warn,
            |n| format!("{n} nearfull osd(s)"),
            nearfull,
        );
        let quota_full: Vec<String> = self
            .quota_full_pools(&map)
            .into_iter()
            .filter_map(|(p, why)| {
                let name = &map.pools.get(&p)?.name;
                Some(format!(
                    "pool '{name}' is full (running out of quota: {why})"
                ))
            })
            .collect();
        per_item(
            &mut checks,
            "POOL_FULL",
            Health::Warn,
            |n| format!("{n} pool(s) full"),
            quota_full,
        );
        // Pools holding objects with no application (Ceph's
        // POOL_APP_NOT_ENABLED), from the OSDs' last usage reports.
        let usage = self.pool_usage(&map);
        let mut no_app: Vec<String> = map
            .pools
            .values()
            .filter(|p| p.application.is_none())
            .filter(|p| usage.get(&p.id).is_some_and(|(objects, _)| *objects > 0))
            .map(|p| format!("application not enabled on pool '{}'", p.name))
            .collect();
        if !no_app.is_empty() {
            let n = no_app.len();
            no_app.push("use 'ceph osd pool application enable <pool-name> <app-name>', where <app-name> is 'cephfs', 'rbd', 'rgw', or freeform for custom applications.".to_string());
            checks.push(check(
                "POOL_APP_NOT_ENABLED",
                Health::Warn,
                format!("application not enabled on {n} pool(s)"),
                n,
                no_app,
            ));
        }
        let osd_flags: Vec<String> = self
            .shared
            .read(|st| st.osd_flags.iter().cloned().collect());
        if !osd_flags.is_empty() {
            checks.push(check(
                "OSDMAP_FLAGS",
                Health::Warn,
                format!("{} flag(s) set", osd_flags.join(",")),
                osd_flags.len(),
                Vec::new(),
            ));
        }
        // Scrub errors of PGs that still exist.
        let inconsistent: Vec<PgScrubErrors> = self.shared.read(|st| {
            st.scrub_errors
                .values()
                .filter(|e| {
                    map.pools
                        .get(&e.pg.pool)
                        .is_some_and(|p| e.pg.seed < p.pg_num)
                })
                .copied()
                .collect()
        });
        let errors: u64 = inconsistent.iter().map(|e| u64::from(e.errors)).sum();
        if errors > 0 {
            checks.push(check(
                "OSD_SCRUB_ERRORS",
                Health::Err,
                format!("{errors} scrub errors"),
                errors as usize,
                Vec::new(),
            ));
        }
        let damaged = inconsistent
            .iter()
            .map(|e| {
                let acting = map
                    .pg_history
                    .get(&e.pg)
                    .map(|h| h.acting.clone())
                    .unwrap_or_default();
                format!(
                    "pg {} is active+clean+inconsistent, acting {}",
                    e.pg,
                    osd_list(&acting)
                )
            })
            .collect();
        per_item(
            &mut checks,
            "PG_DAMAGED",
            Health::Err,
            |n| {
                format!(
                    "Possible data damage: {n} pg{} inconsistent",
                    if n == 1 { "" } else { "s" }
                )
            },
            damaged,
        );
        let (mut inactive, mut degraded, mut num_pgs) = (Vec::new(), Vec::new(), 0u32);
        for pool in map.pools.values() {
            for seed in 0..pool.pg_num {
                num_pgs += 1;
                let pg = PgId {
                    pool: pool.id,
                    seed,
                };
                let up = map.pg_up_set(pg).unwrap_or_default();
                let n = up.len() as u32;
                let last = map.pg_history.get(&pg).map(|h| &h.acting);
                if let Some(last) = last.filter(|a| !a.iter().any(|o| up.contains(o))) {
                    inactive.push(format!(
                        "pg {pg} is down, waiting for {} (its last acting set; `ceph osd lost` them if they are gone for good)",
                        osd_list(last)
                    ));
                } else if n < pool.min_size {
                    inactive.push(format!(
                        "pg {pg} is inactive, {n} of {} copies up {}",
                        pool.size,
                        osd_list(&up)
                    ));
                } else if n < pool.size {
                    degraded.push(format!(
                        "pg {pg} is active+undersized, up {} ({n} of {} copies)",
                        osd_list(&up),
                        pool.size
                    ));
                }
            }
        }
        per_item(
            &mut checks,
            "PG_AVAILABILITY",
            Health::Warn,
            |n| format!("Reduced data availability: {n} pgs inactive"),
            inactive,
        );
        per_item(
            &mut checks,
            "PG_DEGRADED",
            Health::Warn,
            |n| format!("Degraded data redundancy: {n} pgs undersized"),
            degraded,
        );
        // Most severe first, as Ceph lists them.
        checks.sort_by_key(|c| std::cmp::Reverse(severity_rank(c.severity)));
        let health = checks
            .iter()
            .map(|c| c.severity)
            .max_by_key(|h| severity_rank(*h))
            .unwrap_or(Health::Ok);
        ClusterStatus {
            fsid: map.fsid.clone(),
            epoch: map.epoch,
            health,
            checks,
            inconsistent,
            osd_flags,
            nearfull_milli,
            full_milli,
            mons: map.mons.clone(),
            leader,
            quorum,
            num_osds,
            num_up_osds: num_up,
            num_in_osds: num_in,
            num_pools: map.pools.len() as u32,
            num_pgs,
        }
    }

    /// Propose the initial state once this monitor leads an empty cluster.
    pub(crate) async fn bootstrap_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.shared.read(|st| st.initialized) || *shutdown.borrow() {
                return;
            }
            if self.is_leader() {
                let mut entities: Vec<(String, String, EntityCaps)> = Vec::new();
                for e in &self.keyring {
                    let mut caps = e.caps.clone();
                    if caps.0.is_empty() && (e.entity == "client.admin" || e.entity == MON_ENTITY) {
                        caps = EntityCaps::admin();
                    }
                    entities.push((e.entity.clone(), e.secret.to_base64(), caps));
                }
                let mut service_key = [0u8; 32];
                service_key[..16].copy_from_slice(&handshake::random_nonce());
                service_key[16..].copy_from_slice(&handshake::random_nonce());
                let cmd = StateCmd::Bootstrap {
                    fsid: self.cfg.fsid.clone(),
                    mons: self.cfg.mons.clone(),
                    entities,
                    service_key,
                };
                match self.propose(cmd).await {
                    Ok(_) => tracing::info!(
                        "mon.{}: cluster {} bootstrapped",
                        self.cfg.name,
                        self.cfg.fsid
                    ),
                    Err(e) => tracing::warn!("mon.{}: bootstrap: {}", self.cfg.name, e.message),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// The failure-detection timings now: the configured ones, with the
    /// config database's values (`ceph config set mon ...`, or `global`,
    /// or `mon.<name>`) for options the local conf file does not set.
    pub(crate) fn effective_timings(&self) -> crate::MonTimings {
        let mut t = self.cfg.timings.clone();
        let Ok(sections) = mondb::sections_for(&format!("mon.{}", self.cfg.name)) else {
            return t;
        };
        let db = self.shared.read(|st| mondb::resolve(&st.config, &sections));
        for (opt, field) in [
            ("osd_heartbeat_grace", &mut t.osd_heartbeat_grace),
            ("mon_osd_down_out_interval", &mut t.osd_down_out_interval),
        ] {
            if self.cfg.timings_from_file.iter().any(|o| o == opt) {
                continue;
            }
            let secs = db
                .get(opt)
                .and_then(|(v, _)| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0);
            if let Some(v) = secs {
                *field = Duration::from_secs_f64(v);
            }
        }
        t
    }

    /// Leader duty: mark OSDs down without beacons, then out.
    pub(crate) async fn failure_detector(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let t = self.effective_timings();
            tokio::select! {
                _ = tokio::time::sleep(t.tick) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if !self.is_leader() {
                if let Ok(mut d) = self.detector.lock() {
                    d.was_leader = false;
                }
                continue;
            }
            let map = self.map();
            let now = Instant::now();
            let (nodown, noout) = self.shared.read(|st| {
                (
                    st.osd_flags.contains("nodown"),
                    st.osd_flags.contains("noout"),
                )
            });
            let mut to_down = Vec::new();
            if let Ok(mut d) = self.detector.lock() {
                if !d.was_leader {
                    // A new leader knows no beacons yet: grace starts now.
                    d.last_beacon.clear();
                    d.seen_up_from.clear();
                    d.was_leader = true;
                }
                for o in map.osds.values().filter(|o| o.up) {
                    if d.seen_up_from.get(&o.id) != Some(&o.up_from) {
                        d.seen_up_from.insert(o.id, o.up_from);
                        d.last_beacon.insert(o.id, now);
                    }
                    let last = *d.last_beacon.entry(o.id).or_insert(now);
                    if now.duration_since(last) > t.osd_heartbeat_grace && !nodown {
                        to_down.push(o.id);
                    }
                }
            }
            let now_u = now_unix();
            if !to_down.is_empty() {
                tracing::warn!(
                    "mon.{}: marking {:?} down: no beacon for {:?}",
                    self.cfg.name,
                    to_down,
                    t.osd_heartbeat_grace
                );
                if let Err(e) = self
                    .propose(StateCmd::OsdDown {
                        ids: to_down,
                        now_unix: now_u,
                    })
                    .await
                {
                    tracing::warn!("mon.{}: marking down failed: {}", self.cfg.name, e.message);
                }
            }
            let out_after = t.osd_down_out_interval.as_secs();
            let to_out: Vec<OsdId> = self.shared.read(|st| {
                if noout {
                    return Vec::new();
                }
                st.map
                    .osds
                    .values()
                    .filter(|o| !o.up && o.in_cluster)
                    .filter(|o| {
                        st.osd_down_since
                            .get(&o.id)
                            .is_some_and(|since| now_u >= since + out_after)
                    })
                    .map(|o| o.id)
                    .collect()
            });
            if !to_out.is_empty() {
                tracing::warn!(
                    "mon.{}: marking {:?} out after {out_after}s down",
                    self.cfg.name,
                    to_out
                );
                if let Err(e) = self
                    .propose(StateCmd::OsdOut {
                        ids: to_out,
                        auto: true,
                    })
                    .await
                {
                    tracing::warn!("mon.{}: marking out failed: {}", self.cfg.name, e.message);
                }
            }
        }
    }

    /// The raft voters this monitor was configured with.
    pub(crate) fn members(&self) -> BTreeMap<u64, BasicNode> {
        self.cfg
            .mons
            .iter()
            .map(|m| {
                (
                    m.rank,
                    BasicNode {
                        addr: m.addr.clone(),
                    },
                )
            })
            .collect()
    }
}

/// Order of severity: OK < WARN < ERR.
fn severity_rank(h: Health) -> u8 {
    match h {
        Health::Ok => 0,
        Health::Warn => 1,
        Health::Err => 2,
    }
}

/// Add a health check that counts the items of `detail` (one line each),
/// unless there are none.
fn per_item(
    checks: &mut Vec<HealthCheck>,
    code: &str,
    severity: Health,
    summary: impl FnOnce(usize) -> String,
    detail: Vec<String>,
) {
    if detail.is_empty() {
        return;
    }
    checks.push(HealthCheck {
        code: code.to_string(),
        severity,
        summary: summary(detail.len()),
        count: detail.len() as u32,
        detail,
    });
}

/// `[0,1,2]`, as Ceph prints an OSD set.
fn osd_list(osds: &[OsdId]) -> String {
    let v: Vec<String> = osds.iter().map(|o| o.to_string()).collect();
    format!("[{}]", v.join(","))
}

async fn send<T: serde::Serialize>(out: &mpsc::Sender<Frame>, kind: u8, request_id: u64, body: &T) {
    match Frame::new(kind, request_id, body, Bytes::new()) {
        Ok(f) => {
            let _ = out.send(f).await;
        }
        Err(e) => tracing::error!("cannot encode a monitor response: {e}"),
    }
}

/// The (sending, receiving) frame signers of a signed connection.
type Signers = Option<(FrameSigner, FrameSigner)>;

/// Write one handshake frame on the bare stream (unsigned).
async fn send_direct<T: serde::Serialize>(s: &mut TcpStream, kind: u8, request_id: u64, body: &T) {
    match Frame::new(kind, request_id, body, Bytes::new()) {
        Ok(f) => {
            let _ = write_frame(s, &f).await;
        }
        Err(e) => tracing::error!("cannot encode a monitor response: {e}"),
    }
}

async fn write_loop(
    wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    mut sig: Option<FrameSigner>,
) {
    let mut w = BufWriter::new(wr);
    while let Some(f) = rx.recv().await {
        if write_frame_signed(&mut w, &f, sig.as_mut()).await.is_err() {
            return;
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

/// Push every map newer than `have` (intermediate ones may be skipped:
/// each map is complete, so the newest is all a subscriber needs).
async fn push_maps(
    mut rx: watch::Receiver<Arc<ClusterMap>>,
    mut have: Epoch,
    out: mpsc::Sender<Frame>,
) {
    loop {
        let m = rx.borrow_and_update().clone();
        if m.epoch > have {
            have = m.epoch;
            let body = Response::Map(Box::new((*m).clone()));
            match Frame::new(KIND_MAP_PUSH, 0, &body, Bytes::new()) {
                Ok(f) => {
                    if out.send(f).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("cannot encode a map push: {e}"),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
