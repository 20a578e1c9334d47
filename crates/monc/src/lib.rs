//! The monitor client, used by OSDs, by the networked object-layer client
//! and by the CLI.
//!
//! [`MonClient::connect`] authenticates to one of the monitors (mutual
//! challenge-response, see `quarry_auth::handshake`), fetches the cluster
//! map and subscribes to new epochs; afterwards it keeps one connection
//! open, reconnects to another monitor when it fails, and resubscribes.
//! A wrong key or an unknown entity fails at once with EACCES; monitors
//! that cannot be reached fail with ETIMEDOUT after `timeout`.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use quarry_common::Errno;
use quarry_map::{ClusterMap, Epoch, OsdId, PgId};

pub use wire::{AuthEntry, ClusterStatus, Health, MonCommand, MonReply};

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
}

/// Why a monitor client call failed.
#[derive(Debug, thiserror::Error)]
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
        }
    }
}

/// A connected, authenticated monitor client.
pub struct MonClient {
    cfg: MonClientConfig,
    map_tx: tokio::sync::watch::Sender<Arc<ClusterMap>>,
}

impl std::fmt::Debug for MonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonClient")
            .field("entity", &self.cfg.entity)
            .finish_non_exhaustive()
    }
}

fn unimplemented_yet() -> MonClientError {
    MonClientError::Protocol("not implemented yet".into())
}

impl MonClient {
    /// Connect and authenticate; fails at once on a refused key.
    pub async fn connect(cfg: MonClientConfig) -> Result<Arc<MonClient>, MonClientError> {
        let _ = cfg;
        Err(unimplemented_yet())
    }

    /// The latest map known.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map_tx.borrow().clone()
    }

    /// A receiver that sees every new map.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ClusterMap>> {
        self.map_tx.subscribe()
    }

    /// Wait until a map with at least `epoch` is known.
    pub async fn wait_for_epoch(&self, epoch: Epoch) -> Result<Arc<ClusterMap>, MonClientError> {
        let _ = epoch;
        Err(unimplemented_yet())
    }

    /// Fetch the current map from the monitor.
    pub async fn refresh_map(&self) -> Result<Arc<ClusterMap>, MonClientError> {
        Err(unimplemented_yet())
    }

    /// Run an administrative command.
    pub async fn command(&self, cmd: MonCommand) -> Result<MonReply, MonClientError> {
        let _ = cmd;
        Err(unimplemented_yet())
    }

    /// The global id of the current session.
    pub fn global_id(&self) -> u64 {
        0
    }

    /// A valid ticket for OSDs (renewed before expiry).
    pub async fn ticket(&self) -> Result<quarry_auth::Ticket, MonClientError> {
        Err(unimplemented_yet())
    }

    /// Report this OSD up at `addr` on `host`; returns the epoch marking it up.
    pub async fn osd_boot(
        &self,
        id: OsdId,
        addr: String,
        host: String,
    ) -> Result<Epoch, MonClientError> {
        let _ = (id, addr, host);
        Err(unimplemented_yet())
    }

    /// Tell the monitors this OSD is alive.
    pub async fn osd_beacon(&self, id: OsdId) -> Result<(), MonClientError> {
        let _ = id;
        Err(unimplemented_yet())
    }

    /// Record that a PG went active with `acting` at `epoch`.
    pub async fn pg_activated(
        &self,
        pg: PgId,
        epoch: Epoch,
        acting: Vec<OsdId>,
    ) -> Result<Epoch, MonClientError> {
        let _ = (pg, epoch, acting);
        Err(unimplemented_yet())
    }

    /// The cluster's service key, to verify tickets (osd.* entities only).
    pub async fn service_key(&self) -> Result<[u8; 32], MonClientError> {
        Err(unimplemented_yet())
    }
}
