//! The Quarry monitor: the authority for the cluster map and the auth
//! database.
//!
//! # What it holds
//! [`state::MonState`]: the [`quarry_map::ClusterMap`] (monitors, OSDs,
//! pools, snapshot ids, PG history), the auth database (entity → key,
//! caps), the ticket service key and the global-id counter. It is
//! replicated by Raft (openraft 0.9; consensus is never home-made) and kept
//! on disk in redb (`<data_dir>/store.redb`: log, vote, applied state,
//! snapshot). One monitor is a one-voter Raft group; three survive the loss
//! of one. Every map change is a new epoch.
//!
//! # Who talks to it
//! Everything arrives over quarry-proto frames on one TCP port, and the
//! first exchange is always the mutual handshake of `quarry_auth`:
//! clients and OSDs (via quarry-monc) as `client.*` / `osd.N`, other
//! monitors as `mon.` carrying raft RPCs. A follower serves reads (map,
//! status, subscriptions) itself and forwards every change to the leader,
//! so clients need not find the leader. A wrong key or an unknown entity is
//! refused at once with EACCES.
//!
//! # Failure detection
//! OSDs send beacons every `osd_heartbeat_interval`; the leader marks an OSD
//! down after `osd_heartbeat_grace` without one and out after
//! `mon_osd_down_out_interval` down ([`config::MonTimings`]). An OSD marked
//! out that way comes back in when it boots again; one marked out by an
//! operator stays out.
//!
//! # Bootstrap (how `quarry up`, or a first `quarry mon` on a keyring, creates a cluster)
//! 1. Generate an fsid and a keyring holding `mon.` (shared by all
//!    monitors), `client.admin` (`mon/osd/mgr 'allow *'`), and either one
//!    `osd.N` per OSD (`mon 'profile osd' osd 'allow *'`) or a
//!    `client.bootstrap-osd` key (`mon 'profile bootstrap-osd'`) with which
//!    an OSD creates its own `osd.N` key ([`bootstrap_keyring`] does this).
//! 2. [`mkfs`] each monitor with the same keyring and monitor list: it
//!    copies the keyring to `<data_dir>/keyring` (0600) and creates the
//!    store. No cluster state is written yet.
//! 3. [`run`] (or [`start`]) each monitor. On first start every monitor
//!    initializes the Raft membership from the configured list (identical
//!    everywhere, so this is safe); the first elected leader proposes a
//!    `Bootstrap` entry carrying the keyring's entities, the fsid and a fresh
//!    ticket service key. Only the first such entry takes effect.
//! 4. OSDs authenticate with their keys, fetch the service key and boot;
//!    the admin creates the pools (`rbd`, `data`).
//!
//! Restarting on an existing data directory needs no keyring: everything
//! is in the store.

pub mod config;
pub mod keyring;
pub mod peer;
mod server;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use quarry_auth::{EntityCaps, Secret};
use quarry_common::Errno;

pub use config::{MonConfig, MonTimings, PoolDefaults};
pub use server::Mon;

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "store.redb";
/// Name of the keyring file inside the data directory.
pub const KEYRING_FILE: &str = "keyring";

/// Why the monitor could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum MonError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store could not be opened or read.
    #[error("monitor store {path}: {reason}")]
    Store {
        /// Store path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The keyring is unusable.
    #[error("keyring {path}: {reason}")]
    Keyring {
        /// Keyring path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("monitor configuration: {0}")]
    Config(String),
    /// The data directory was never initialized.
    #[error("monitor data directory {0} is not initialized (run mkfs first, or give an initial keyring)")]
    NotInitialized(PathBuf),
    /// mkfs on an existing store.
    #[error("monitor data directory {0} already holds a store")]
    AlreadyExists(PathBuf),
    /// Raft failed.
    #[error("raft: {0}")]
    Raft(String),
}

impl MonError {
    /// errno for callers that report one.
    pub fn errno(&self) -> Errno {
        match self {
            MonError::Io { .. } | MonError::Store { .. } | MonError::Raft(_) => Errno::EIO,
            MonError::Keyring { .. } | MonError::Config(_) => Errno::EINVAL,
            MonError::NotInitialized(_) => Errno::ENOENT,
            MonError::AlreadyExists(_) => Errno::EEXIST,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MonError {
    let what = what.into();
    move |source| MonError::Io { what, source }
}

/// Whether `data_dir` holds an initialized monitor store.
pub fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join(STORE_FILE).exists() && data_dir.join(KEYRING_FILE).exists()
}

/// Write `text` to `path` with mode 0600 (keyrings must never be readable by others).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A keyring for a new cluster: `mon.`, `client.admin`,
/// `client.bootstrap-osd` and `osd.0 .. osd.{num_osds-1}`, with Ceph's caps.
pub fn bootstrap_keyring(num_osds: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let caps = |pairs: &[(&str, &str)]| EntityCaps::from_pairs(pairs).unwrap_or_default();
    let mut s = String::new();
    s.push_str(&keyring::section(
        "mon.",
        &Secret::generate(now),
        &caps(&[("mon", "allow *")]),
    ));
    s.push_str(&keyring::section(
        "client.admin",
        &Secret::generate(now),
        &EntityCaps::admin(),
    ));
    s.push_str(&keyring::section(
        "client.bootstrap-osd",
        &Secret::generate(now),
        &caps(&[("mon", "profile bootstrap-osd")]),
    ));
    for i in 0..num_osds {
        s.push_str(&keyring::section(
            &format!("osd.{i}"),
            &Secret::generate(now),
            &caps(&[("mon", "profile osd"), ("osd", "allow *")]),
        ));
    }
    s
}

/// Initialize a new monitor data directory from `cfg.keyring`.
pub fn mkfs(cfg: &MonConfig) -> Result<(), MonError> {
    let dir = &cfg.data_dir;
    if dir.join(STORE_FILE).exists() {
        return Err(MonError::AlreadyExists(dir.clone()));
    }
    validate(cfg)?;
    let kpath = cfg
        .keyring
        .clone()
        .ok_or_else(|| MonError::Config("mkfs needs an initial keyring".into()))?;
    let text = std::fs::read_to_string(&kpath)
        .map_err(io_err(format!("reading keyring {}", kpath.display())))?;
    let mut entries = keyring::parse(&text).map_err(|reason| MonError::Keyring {
        path: kpath.clone(),
        reason,
    })?;
    let mut out = text.clone();
    if !entries.iter().any(|e| e.entity == peer::MON_ENTITY) {
        if cfg.mons.len() > 1 {
            return Err(MonError::Keyring {
                path: kpath,
                reason: "several monitors need a shared [mon.] key in the initial keyring".into(),
            });
        }
        let s = Secret::generate(0);
        let caps = EntityCaps::from_pairs(&[("mon", "allow *")]).unwrap_or_default();
        out.push_str(&keyring::section(peer::MON_ENTITY, &s, &caps));
        entries.push(keyring::KeyringEntry {
            entity: peer::MON_ENTITY.into(),
            secret: s,
            caps,
        });
    }
    create_private_dir(dir)?;
    write_private(&dir.join(KEYRING_FILE), &out).map_err(io_err("writing the monitor keyring"))?;
    let store = dir.join(STORE_FILE);
    store::open_db(&store).map_err(|e| MonError::Store {
        path: store.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(
        "mon.{}: created monitor store in {}",
        cfg.name,
        dir.display()
    );
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), MonError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
    }
    Ok(())
}

fn validate(cfg: &MonConfig) -> Result<(), MonError> {
    if cfg.fsid.is_empty() {
        return Err(MonError::Config("fsid is empty".into()));
    }
    if !cfg.mons.iter().any(|m| m.rank == cfg.rank) {
        return Err(MonError::Config(format!(
            "this monitor (rank {}) is not in the monitor list",
            cfg.rank
        )));
    }
    let mut ranks: Vec<u64> = cfg.mons.iter().map(|m| m.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    if ranks.len() != cfg.mons.len() {
        return Err(MonError::Config("two monitors share a rank".into()));
    }
    Ok(())
}

/// A running monitor.
pub struct MonHandle {
    addr: SocketAddr,
    mon: Arc<Mon>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    db: Arc<redb::Database>,
}

impl std::fmt::Debug for MonHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MonHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The monitor (for status queries in-process).
    pub fn mon(&self) -> &Arc<Mon> {
        &self.mon
    }

    /// Stop serving and stop raft; the store stays as it is on disk.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.mon.raft.shutdown().await;
        // Raft's storage tasks end asynchronously; wait (bounded) until they
        // have released the store, so a restart in this process can open it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&self.db) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Wait until the monitor stops (it runs until shutdown).
    pub async fn wait(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Start a monitor: open (or mkfs) its store, start raft and serve.
pub async fn start(cfg: MonConfig) -> Result<MonHandle, MonError> {
    validate(&cfg)?;
    if !is_initialized(&cfg.data_dir) {
        if cfg.keyring.is_some() {
            let c = cfg.clone();
            tokio::task::spawn_blocking(move || mkfs(&c))
                .await
                .map_err(|e| MonError::Config(format!("mkfs task: {e}")))??;
        } else {
            return Err(MonError::NotInitialized(cfg.data_dir.clone()));
        }
    }
    let kpath = cfg.data_dir.join(KEYRING_FILE);
    let text =
        std::fs::read_to_string(&kpath).map_err(io_err(format!("reading {}", kpath.display())))?;
    let entries = keyring::parse(&text).map_err(|reason| MonError::Keyring {
        path: kpath.clone(),
        reason,
    })?;
    let mon_secret = entries
        .iter()
        .find(|e| e.entity == peer::MON_ENTITY)
        .map(|e| e.secret.clone())
        .ok_or_else(|| MonError::Keyring {
            path: kpath.clone(),
            reason: "no [mon.] key".into(),
        })?;
    let store_path = cfg.data_dir.join(STORE_FILE);
    let sp = store_path.clone();
    let db = tokio::task::spawn_blocking(move || store::open_db(&sp))
        .await
        .map_err(|e| MonError::Raft(e.to_string()))?
        .map_err(|e| MonError::Store {
            path: store_path.clone(),
            reason: e.to_string(),
        })?;
    let db_handle = db.clone();
    let db2 = db.clone();
    let (sm, shared) = tokio::task::spawn_blocking(move || store::StateMachine::open(db2))
        .await
        .map_err(|e| MonError::Raft(e.to_string()))?
        .map_err(|reason| MonError::Store {
            path: store_path.clone(),
            reason,
        })?;
    let t = &cfg.timings;
    let raft_cfg = openraft::Config {
        cluster_name: cfg.fsid.clone(),
        heartbeat_interval: t.raft_heartbeat.as_millis().max(10) as u64,
        election_timeout_min: t.election_timeout.as_millis().max(50) as u64,
        election_timeout_max: (t.election_timeout.as_millis().max(50) * 2) as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs.max(1)),
        max_in_snapshot_log_to_keep: cfg.snapshot_logs.clamp(1, 200),
        ..Default::default()
    }
    .validate()
    .map_err(|e| MonError::Config(e.to_string()))?;
    let peers = Arc::new(peer::Peers::new(mon_secret.clone()));
    let listener = tokio::net::TcpListener::bind(&cfg.listen_addr)
        .await
        .map_err(io_err(format!("binding {}", cfg.listen_addr)))?;
    let addr = listener.local_addr().map_err(io_err("local address"))?;
    let raft = openraft::Raft::new(
        cfg.rank,
        Arc::new(raft_cfg),
        peer::Network {
            peers: peers.clone(),
        },
        store::LogStore::new(db),
        sm,
    )
    .await
    .map_err(|e| MonError::Raft(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mon = Arc::new(Mon::new(
        cfg,
        raft,
        shared,
        mon_secret,
        entries,
        peers,
        shutdown_rx,
    ));
    let initialized = mon
        .raft
        .is_initialized()
        .await
        .map_err(|e| MonError::Raft(e.to_string()))?;
    if !initialized {
        // Every monitor initializes with the same member list: safe, and
        // no monitor has to be special.
        if let Err(e) = mon.raft.initialize(mon.members()).await {
            tracing::debug!("mon.{}: raft initialize: {e}", mon.cfg.name);
        }
    }
    tracing::info!(
        "mon.{} (rank {}) listening on {addr}",
        mon.cfg.name,
        mon.cfg.rank
    );
    let tasks = vec![
        tokio::spawn(mon.clone().serve(listener)),
        tokio::spawn(mon.clone().bootstrap_loop()),
        tokio::spawn(mon.clone().failure_detector()),
        tokio::spawn(mon.clone().disk_loop()),
    ];
    Ok(MonHandle {
        addr,
        mon,
        shutdown_tx,
        tasks,
        db: db_handle,
    })
}

/// Run a monitor until it fails or its process ends.
///
/// If raft stops on its own (its store failed: a full disk, an I/O error)
/// the monitor must not linger serving a state it can no longer change:
/// clients and daemons would keep asking it and never see a new map.
/// It stops serving and returns the error, so the process exits non-zero
/// and they move to the other monitors; the store holds every committed
/// entry, and a restart once the cause is fixed carries on from it.
pub async fn run(cfg: MonConfig) -> Result<(), MonError> {
    let name = cfg.name.clone();
    let h = start(cfg).await?;
    let mut metrics = h.mon().raft.metrics();
    let why = loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            break fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            break "raft core ended".to_string();
        }
    };
    tracing::error!("mon.{name}: raft stopped ({why}); this monitor stops serving");
    h.shutdown().await;
    Err(MonError::Raft(format!("stopped: {why}")))
}
