//! Monitor↔monitor traffic: raft RPCs and forwarded requests, carried in
//! quarry-proto frames on the monitors' ordinary port after the usual
//! handshake as the `mon.` entity (so only holders of the `mon.` key can
//! take part in consensus).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use quarry_auth::Secret;
use quarry_map::OsdId;
use quarry_monc::Conn;
use quarry_proto::Frame;

use crate::state::{CmdResult, StateCmd};
use crate::store::{NodeId, TypeConfig};

/// Frame kind of a [`PeerRequest`].
pub const KIND_PEER_REQUEST: u8 = 10;
/// Frame kind of a [`PeerResponse`].
pub const KIND_PEER_RESPONSE: u8 = 11;

/// The entity monitors authenticate as to each other.
pub const MON_ENTITY: &str = "mon.";

/// Requests between monitors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft append-entries.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft vote.
    Vote(VoteRequest<NodeId>),
    /// Raft snapshot chunk.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A state change proposed on a follower, for the leader to commit.
    Forward(StateCmd),
    /// An OSD beacon received by a follower.
    Beacon {
        /// OSD id.
        id: OsdId,
    },
    /// An OSD's filesystem report received by another monitor (each
    /// monitor passes the reports it gets to the others, so that every one
    /// knows which OSDs are full).
    OsdStatfs {
        /// OSD id.
        id: OsdId,
        /// Filesystem size in bytes (df-style).
        total: u64,
        /// Bytes available.
        avail: u64,
        /// Usage of the pools whose PGs it leads.
        pools: Vec<quarry_monc::PoolUsage>,
    },
    /// A monitor's free space on its data filesystem (sent to every
    /// other monitor, so that any of them reports `MON_DISK_LOW`).
    MonDisk {
        /// Sender's rank.
        rank: u64,
        /// Filesystem size in bytes (df-style: used + available).
        total: u64,
        /// Bytes available.
        avail: u64,
    },
}

/// Answers between monitors.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Raft append-entries result.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Raft vote result.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Raft snapshot result.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// Result of a forwarded command.
    Forwarded(CmdResult),
    /// Done.
    Ok,
    /// Refused.
    Error {
        /// errno.
        errno: i32,
        /// Message.
        message: String,
    },
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
#[error("monitor peer {addr}: {reason}")]
pub struct PeerError {
    /// Peer address.
    pub addr: String,
    /// Why.
    pub reason: String,
}

/// Authenticated connections to the other monitors, one per peer.
pub struct Peers {
    secret: Secret,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// Serializes (re)connection per peer so a burst of RPCs opens one socket.
    connecting: tokio::sync::Mutex<()>,
}

impl Peers {
    /// A pool authenticating with the `mon.` secret.
    pub fn new(secret: Secret) -> Peers {
        Peers {
            secret,
            conns: Mutex::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, addr: &str) -> Option<Arc<Conn>> {
        let m = self.conns.lock().ok()?;
        m.get(addr).filter(|c| !c.is_closed()).cloned()
    }

    async fn conn(&self, addr: &str, timeout: Duration) -> Result<Arc<Conn>, PeerError> {
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let _g = self.connecting.lock().await;
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let perr = |reason: String| PeerError {
            addr: addr.to_string(),
            reason,
        };
        let (conn, _) =
            quarry_monc::connect_authenticated(addr, MON_ENTITY, &self.secret, timeout, None)
                .await
                .map_err(|e| perr(format!("connect and authenticate as mon.: {e}")))?;
        let conn = Arc::new(conn);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(addr.to_string(), conn.clone());
        }
        Ok(conn)
    }

    /// Send one request to the monitor at `addr` and wait for its answer.
    pub async fn call(
        &self,
        addr: &str,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let perr = |reason: String| PeerError {
            addr: addr.to_string(),
            reason,
        };
        let conn = self.conn(addr, timeout).await?;
        let frame =
            Frame::new(KIND_PEER_REQUEST, 0, req, Bytes::new()).map_err(|e| perr(e.to_string()))?;
        let reply = conn
            .call(frame, timeout)
            .await
            .map_err(|e| perr(e.to_string()))?;
        if reply.kind != KIND_PEER_RESPONSE {
            // A monitor answering peers with client errors (e.g. EACCES).
            let msg = match quarry_monc::decode_response(&reply) {
                Err(e) => e.to_string(),
                Ok(r) => format!("unexpected reply {r:?}"),
            };
            return Err(perr(msg));
        }
        reply.decode().map_err(|e| perr(e.to_string()))
    }
}

/// Creates raft network clients.
pub struct Network {
    /// Shared connection pool.
    pub peers: Arc<Peers>,
}

/// The raft client side for one target monitor.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerClient {
    async fn rpc(&self, req: PeerRequest, option: &RPCOption) -> Result<PeerResponse, Unreachable> {
        self.peers
            .call(&self.addr, &req, option.hard_ttl())
            .await
            .map_err(|e| Unreachable::new(&e))
    }
}

fn unexpected<E: std::error::Error>(r: PeerResponse) -> RpcErr<E> {
    let e = PeerError {
        addr: String::new(),
        reason: format!("unexpected peer response {r:?}"),
    };
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.rpc(PeerRequest::Append(rpc), &option).await? {
            PeerResponse::Append(Ok(r)) => Ok(r),
            PeerResponse::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.rpc(PeerRequest::Snapshot(rpc), &option).await? {
            PeerResponse::Snapshot(Ok(r)) => Ok(r),
            PeerResponse::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.rpc(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(Ok(r)) => Ok(r),
            PeerResponse::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(other)),
        }
    }
}
