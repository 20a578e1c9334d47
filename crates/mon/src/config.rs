//! Monitor configuration.

use std::path::PathBuf;
use std::time::Duration;

use quarry_map::{FailureDomain, MonInfo};

/// Timings of failure detection and of the raft group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonTimings {
    /// `osd_heartbeat_grace`: an OSD silent this long is marked down.
    pub osd_heartbeat_grace: Duration,
    /// `mon_osd_down_out_interval`: a down OSD is marked out after this.
    pub osd_down_out_interval: Duration,
    /// How often the leader checks beacons.
    pub tick: Duration,
    /// Raft heartbeat interval.
    pub raft_heartbeat: Duration,
    /// Raft election timeout, lower bound (upper = 2x).
    pub election_timeout: Duration,
    /// How long a command waits for a leader / quorum before EAGAIN.
    pub propose_timeout: Duration,
    /// `ms_connection_ready_timeout`: a connection must authenticate
    /// within this or is closed.
    pub handshake: Duration,
}

impl Default for MonTimings {
    fn default() -> Self {
        MonTimings {
            osd_heartbeat_grace: Duration::from_secs(20),
            osd_down_out_interval: Duration::from_secs(600),
            tick: Duration::from_secs(1),
            raft_heartbeat: Duration::from_millis(250),
            election_timeout: Duration::from_millis(1000),
            propose_timeout: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
        }
    }
}

/// Pool defaults (`osd_pool_default_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolDefaults {
    /// `osd_pool_default_pg_num`.
    pub pg_num: u32,
    /// `osd_pool_default_size`.
    pub size: u32,
    /// `osd_pool_default_min_size` (0 = size - size/2, as Ceph).
    pub min_size: u32,
}

impl Default for PoolDefaults {
    fn default() -> Self {
        PoolDefaults {
            pg_num: 32,
            size: 3,
            min_size: 0,
        }
    }
}

/// Everything a monitor needs to run.
#[derive(Clone, Debug)]
pub struct MonConfig {
    /// Monitor name (`a`).
    pub name: String,
    /// Raft node id; unique among the monitors.
    pub rank: u64,
    /// Data directory (`mon_data`), holding `store.redb` and `keyring`.
    pub data_dir: PathBuf,
    /// Address to listen on (`ip:port`).
    pub listen_addr: String,
    /// All monitors of the cluster, this one included.
    pub mons: Vec<MonInfo>,
    /// Cluster id.
    pub fsid: String,
    /// Initial keyring: used by [`crate::mkfs`] (and by `run` when the data
    /// directory is new). Must hold `mon.` when there are several monitors.
    pub keyring: Option<PathBuf>,
    /// Timings.
    pub timings: MonTimings,
    /// Pool defaults.
    pub pool_defaults: PoolDefaults,
    /// Failure domain of new pools; None = osd on a one-host cluster, else host.
    pub failure_domain: Option<FailureDomain>,
    /// `mon_allow_pool_delete`.
    pub allow_pool_delete: bool,
    /// `auth_service_ticket_ttl`.
    pub ticket_ttl: Duration,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Build a raft snapshot (and trim the log) every this many entries.
    pub snapshot_logs: u64,
    /// Timing options (`osd_heartbeat_grace`, `mon_osd_down_out_interval`)
    /// the local conf file sets: they win over the config database, as in
    /// Ceph; the others follow `config set` while the monitor runs.
    pub timings_from_file: Vec<String>,
    /// `mon_data_avail_warn`: below this percentage of free space on a
    /// monitor's data filesystem, health warns (`MON_DISK_LOW`).
    pub data_avail_warn: u32,
    /// `mon_data_avail_crit`: below this, health errs (`MON_DISK_CRIT`).
    pub data_avail_crit: u32,
}

impl MonConfig {
    /// A config with defaults for one monitor named `name` at `addr`.
    pub fn single(name: &str, data_dir: PathBuf, addr: &str, fsid: &str) -> MonConfig {
        MonConfig {
            name: name.to_string(),
            rank: 0,
            data_dir,
            listen_addr: addr.to_string(),
            mons: vec![MonInfo {
                name: name.to_string(),
                rank: 0,
                addr: addr.to_string(),
            }],
            fsid: fsid.to_string(),
            keyring: None,
            timings: MonTimings::default(),
            pool_defaults: PoolDefaults::default(),
            failure_domain: None,
            allow_pool_delete: false,
            ticket_ttl: Duration::from_secs(3600),
            max_connections: 4096,
            snapshot_logs: 1000,
            timings_from_file: Vec::new(),
            data_avail_warn: 30,
            data_avail_crit: 5,
        }
    }
}
