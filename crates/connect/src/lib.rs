//! `quarry-connect`: the one place that turns configuration into a
//! connected object layer (`Arc<dyn quarry_rados::Rados>`).
//!
//! Steps, as librados does them (`rados_create2` → `rados_conf_read_file`
//! → `rados_conf_parse_env` → `rados_conf_set` → `rados_connect`):
//! 1. [`build_config`]: a [`Config`] for an entity (default `client.admin`),
//!    the conf file (`-c/--conf`, else `$CEPH_CONF`, `/etc/ceph/$cluster.conf`,
//!    `~/.ceph/$cluster.conf`, `./$cluster.conf`), the environment
//!    (`CEPH_KEYRING`, `CEPH_ARGS`), then the caller's overrides.
//! 2. [`connect`]: `quarry_embedded_dir` set → the in-process store there;
//!    otherwise the key (`key`/`keyfile`/`keyring`) and `mon_host` → a
//!    networked [`ClusterClient`], whose monitor client is exposed for
//!    administrative (`ceph`) commands; the monitors' config database values
//!    for the entity are applied at `Level::Mon` ([`apply_mon_config`]).
//!
//! Architecture invariant: no printing and no process exit here; every
//! failure is a [`ConnectError`] with an errno, so the CLI and (later) the
//! C library can each present it their own way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_common::conf::ConfError;
use quarry_common::entity::EntityName;
use quarry_common::keyring::{key_from_config, KeyringError};
use quarry_common::monhost::{parse_mon_host, MonHostError};
use quarry_common::options::{Config, ConfigError, Level};
use quarry_common::Errno;
use quarry_monc::MonClient;
use quarry_rados::{Rados, RadosError};

/// The config option naming a local directory for the embedded backend.
pub const EMBEDDED_DIR_OPTION: &str = "quarry_embedded_dir";

/// Default monitor port when `mon_host` names none (Ceph's v1 port).
const DEFAULT_MON_PORT: u16 = 6789;

/// Why configuring or connecting failed. Each variant maps to the errno
/// librados would return ([`ConnectError::errno`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The conf file could not be found, read or parsed.
    #[error("{0}")]
    Conf(#[from] ConfError),
    /// An option (from the command line, `CEPH_ARGS` or an override) is bad.
    #[error("{0}")]
    Option(#[from] ConfigError),
    /// No usable key for the entity.
    #[error("{0}")]
    Key(#[from] KeyringError),
    /// The key was found but is not a valid secret.
    #[error("invalid key for {entity}: {reason}")]
    BadKey {
        /// The entity.
        entity: String,
        /// Why the key was refused.
        reason: String,
    },
    /// `mon_host` is malformed.
    #[error("{0}")]
    MonHost(#[from] MonHostError),
    /// Neither `mon_host` nor `quarry_embedded_dir` is configured.
    #[error("unable to get monitor info: no mon_host configured (and no {EMBEDDED_DIR_OPTION})")]
    NoMonHost,
    /// The embedded store could not be opened.
    #[error("cannot open embedded store {}: {source}", .dir.display())]
    Embedded {
        /// The directory.
        dir: PathBuf,
        /// The store's error.
        source: RadosError,
    },
    /// Authentication or the monitor connection failed.
    #[error("error connecting to the cluster: {0}")]
    Cluster(RadosError),
}

impl ConnectError {
    /// The errno librados reports for this failure.
    pub fn errno(&self) -> Errno {
        match self {
            ConnectError::Conf(e) => e.errno(),
            ConnectError::Option(e) => e.errno(),
            ConnectError::Key(e) => e.errno(),
            ConnectError::BadKey { .. } => Errno::EINVAL,
            ConnectError::MonHost(e) => e.errno(),
            ConnectError::NoMonHost => Errno::ENOENT,
            ConnectError::Embedded { source, .. } => source.errno,
            ConnectError::Cluster(e) => e.errno,
        }
    }
}

/// What a tool's command line contributes to the configuration.
#[derive(Clone, Debug, Default)]
pub struct ConfigRequest {
    /// `--id`/`--name`; `None` = `CEPH_ARGS`' entity, else `client.admin`.
    pub entity: Option<EntityName>,
    /// `-c/--conf` path list; `None` = `CEPH_ARGS`' `--conf`, else the default search.
    pub conf: Option<String>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// Options set on the command line (`-k` → `keyring`, `-m` → `mon_host`,
    /// `--key`, ...), applied above the environment.
    pub overrides: Vec<(String, String)>,
    /// Fail when no conf file is found (an explicit `-c` always fails).
    pub require_conf: bool,
}

/// Build a configuration the way Ceph's tools do, reading the process
/// environment (`CEPH_CONF`, `CEPH_ARGS`, `CEPH_KEYRING`, `HOME`).
pub fn build_config(req: &ConfigRequest) -> Result<Config, ConnectError> {
    build_config_with_env(req, &|k| std::env::var(k).ok())
}

/// [`build_config`] with an explicit environment lookup (for tests and for
/// callers that must not read the process environment).
pub fn build_config_with_env(
    req: &ConfigRequest,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConnectError> {
    // CEPH_ARGS may name the entity and conf file; the command line wins.
    let env_args = match getenv("CEPH_ARGS") {
        Some(s) => {
            quarry_common::options::parse_ceph_args(&quarry_common::options::split_env_args(&s)?)?
        }
        None => Default::default(),
    };
    let entity = req.entity.clone().or(env_args.entity.clone()).map_or_else(
        || EntityName::client("admin").map_err(ConfigError::from),
        Ok,
    )?;
    let mut cfg = match req.cluster.as_ref().or(env_args.cluster.as_ref()) {
        Some(c) => Config::with_cluster(entity, c),
        None => Config::new(entity),
    };
    let conf = req.conf.clone().or(env_args.conf.clone());
    let ceph_conf = getenv("CEPH_CONF");
    let home = getenv("HOME").map(PathBuf::from);
    match cfg.read_conf_file(conf.as_deref(), ceph_conf.as_deref(), home.as_deref()) {
        Ok(_) => {}
        // Like librados: no conf file anywhere is fine unless one was named;
        // everything may come from the command line (`-m`, `--key`).
        Err(ConfError::NoConfFile { .. }) if conf.is_none() && !req.require_conf => {}
        Err(e) => return Err(e.into()),
    }
    cfg.apply_env(getenv)?;
    for (k, v) in &req.overrides {
        cfg.set(k, v, Level::Override)?;
    }
    Ok(cfg)
}

/// A connected object layer and what it was made from.
pub struct Connection {
    /// The object layer (embedded store or cluster client).
    pub rados: Arc<dyn Rados>,
    /// The monitor client, for administrative commands (`None` when embedded).
    pub monc: Option<Arc<MonClient>>,
    /// The cluster client itself, for requests to OSDs outside the object
    /// layer (`ceph pg deep-scrub`; `None` when embedded).
    pub cluster: Option<Arc<ClusterClient>>,
    /// The configuration used.
    pub config: Config,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("embedded", &self.monc.is_none())
            .field("entity", &self.config.entity().to_string())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether this is the in-process embedded backend.
    pub fn is_embedded(&self) -> bool {
        self.monc.is_none()
    }
}

/// The monitor addresses of a `mon_host` value, as `host:port` strings.
pub fn mon_addrs(mon_host: &str) -> Result<Vec<String>, ConnectError> {
    let mut out: Vec<String> = Vec::new();
    for mon in parse_mon_host(mon_host)? {
        for a in &mon.0 {
            let s = a.connect_string(DEFAULT_MON_PORT);
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Connect as `cfg` says (see the crate docs).
pub async fn connect(cfg: &Config) -> Result<Connection, ConnectError> {
    let dir = cfg.get(EMBEDDED_DIR_OPTION).unwrap_or_default();
    if !dir.trim().is_empty() {
        let rados = open_embedded(Path::new(dir.trim()))?;
        return Ok(Connection {
            rados,
            monc: None,
            cluster: None,
            config: cfg.clone(),
        });
    }
    check_con_modes(cfg)?;
    let mon_host = cfg.get("mon_host").unwrap_or_default();
    if mon_host.trim().is_empty() {
        return Err(ConnectError::NoMonHost);
    }
    let addrs = mon_addrs(&mon_host)?;
    let key = key_from_config(cfg)?;
    let entity = cfg.entity().to_string();
    let secret =
        quarry_auth::Secret::from_base64(&key.to_base64()).map_err(|e| ConnectError::BadKey {
            entity: entity.clone(),
            reason: e.to_string(),
        })?;
    let timeouts = client_timeouts(cfg);
    // Process-wide, as the connections it makes outlive this call.
    quarry_proto::SignPolicy::set_global(quarry_proto::SignPolicy {
        sign: cfg.get_bool("cephx_sign_messages").unwrap_or(true),
        require: cfg.get_bool("cephx_require_signatures").unwrap_or(false),
        require_cluster: cfg
            .get_bool("cephx_cluster_require_signatures")
            .unwrap_or(false),
        require_service: cfg
            .get_bool("cephx_service_require_signatures")
            .unwrap_or(false),
        daemon: false,
    });
    let client = ClusterClient::connect(addrs, &entity, secret, timeouts)
        .await
        .map_err(ConnectError::Cluster)?;
    let monc = client.monc().clone();
    let mut config = cfg.clone();
    apply_mon_config(&monc, &mut config).await;
    // The database may ask for what the local files did not.
    check_con_modes(&config)?;
    Ok(Connection {
        rados: client.clone(),
        monc: Some(monc),
        cluster: Some(client),
        config,
    })
}

/// Refuse connection modes this build cannot honour (`secure` alone, see
/// [`quarry_common::options::con_modes_supported`]) with `EINVAL`, before
/// anything is sent in the clear.
fn check_con_modes(cfg: &Config) -> Result<(), ConnectError> {
    for name in quarry_common::options::CLIENT_CON_MODE_OPTIONS {
        let value = cfg.get_str(name)?;
        quarry_common::options::con_modes_supported(&value).map_err(|reason| {
            ConnectError::Option(ConfigError::InvalidValue {
                name: name.to_string(),
                value,
                reason,
            })
        })?;
    }
    Ok(())
}

/// The cluster client's timeouts from the configuration (see
/// [`ClientTimeouts::from_options`]).
pub fn client_timeouts(cfg: &Config) -> ClientTimeouts {
    ClientTimeouts::from_options(
        cfg.get_u64("client_mount_timeout").unwrap_or(300),
        cfg.get_u64("rados_osd_op_timeout").unwrap_or(0),
        cfg.get_u64("ms_connection_ready_timeout").unwrap_or(10),
    )
    .with_mon_ping(
        cfg.get_f64("mon_client_ping_interval").unwrap_or(-1.0),
        cfg.get_f64("mon_client_ping_timeout").unwrap_or(-1.0),
    )
}

/// Fetch the monitors' config database values for this entity and apply
/// them at [`Level::Mon`] (below the conf file, environment and command
/// line), as librados does at connect. Best effort: a value this build
/// does not accept, or a monitor that cannot answer, leaves the defaults;
/// returns how many values were applied.
pub async fn apply_mon_config(monc: &MonClient, cfg: &mut Config) -> usize {
    let who = cfg.entity().to_string();
    let Ok(entries) = monc.config_for(&who).await else {
        return 0;
    };
    cfg.clear_level(Level::Mon);
    entries
        .iter()
        .filter(|e| cfg.set(&e.name, &e.value, Level::Mon).is_ok())
        .count()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open the embedded store at `dir`, one instance per directory per
/// process: the store holds an exclusive lock on its database, so a second
/// open of the same directory from this process would fail.
fn open_embedded(dir: &Path) -> Result<Arc<dyn Rados>, ConnectError> {
    static OPEN: Mutex<Option<HashMap<PathBuf, Weak<quarry_store::Embedded>>>> = Mutex::new(None);
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut g = lock(&OPEN);
    let map = g.get_or_insert_with(HashMap::new);
    if let Some(e) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(e.client());
    }
    std::fs::create_dir_all(dir).map_err(|e| ConnectError::Embedded {
        dir: dir.to_path_buf(),
        source: RadosError::new(
            e.raw_os_error().map(Errno::from_code).unwrap_or(Errno::EIO),
            e.to_string(),
        ),
    })?;
    let e = quarry_store::Embedded::open(dir).map_err(|source| ConnectError::Embedded {
        dir: dir.to_path_buf(),
        source,
    })?;
    map.insert(key, Arc::downgrade(&e));
    Ok(e.client())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_to_client_admin_without_conf() {
        let cfg =
            build_config_with_env(&ConfigRequest::default(), &env(&[("HOME", "/nonexistent")]))
                .expect("config");
        assert_eq!(cfg.entity().to_string(), "client.admin");
    }

    #[test]
    fn explicit_missing_conf_is_enoent() {
        let req = ConfigRequest {
            conf: Some("/nonexistent/ceph.conf".into()),
            ..Default::default()
        };
        let e = build_config_with_env(&req, &env(&[])).expect_err("must fail");
        assert_eq!(e.errno(), Errno::ENOENT);
    }

    #[test]
    fn conf_env_and_overrides_layer() {
        let dir = tempfile::tempdir().expect("tmp");
        let conf = dir.path().join("ceph.conf");
        std::fs::write(
            &conf,
            "[global]\nmon_host = 10.0.0.1\n[client.glance]\nkeyring = /k\n",
        )
        .expect("write");
        let c = conf.to_string_lossy().to_string();
        let req = ConfigRequest {
            overrides: vec![("mon_host".into(), "10.0.0.2:3300".into())],
            ..Default::default()
        };
        let cfg = build_config_with_env(
            &req,
            &env(&[("CEPH_CONF", &c), ("CEPH_ARGS", "--id glance")]),
        )
        .expect("config");
        assert_eq!(cfg.entity().to_string(), "client.glance");
        assert_eq!(cfg.get("keyring").as_deref(), Some("/k"));
        assert_eq!(cfg.get("mon_host").as_deref(), Some("10.0.0.2:3300"));
    }

    #[test]
    fn timeouts_come_from_ceph_options() {
        let dir = tempfile::tempdir().expect("tmp");
        let conf = dir.path().join("ceph.conf");
        std::fs::write(
            &conf,
            "[global]\nmon_host = 10.0.0.1\nms connection ready timeout = 3\n\
             [client]\nrados_osd_op_timeout = 7\nclient_mount_timeout = 20\n\
             mon client ping interval = 0.5\nmon_client_ping_timeout = 1.5\n",
        )
        .expect("write");
        let c = conf.to_string_lossy().to_string();
        let cfg = build_config_with_env(&ConfigRequest::default(), &env(&[("CEPH_CONF", &c)]))
            .expect("config");
        let t = client_timeouts(&cfg);
        assert_eq!(t.connect, Duration::from_secs(3));
        assert_eq!(t.osd_op, Some(Duration::from_secs(7)));
        assert_eq!(t.mon, Duration::from_secs(20));
        assert_eq!(t.mon_ping.interval, Duration::from_millis(500));
        assert_eq!(t.mon_ping.timeout, Duration::from_millis(1500));
        // Defaults: 10 s handshakes, ops wait forever (rados_osd_op_timeout 0).
        let cfg =
            build_config_with_env(&ConfigRequest::default(), &env(&[("HOME", "/nonexistent")]))
                .expect("config");
        let t = client_timeouts(&cfg);
        assert_eq!(t.connect, Duration::from_secs(10));
        assert_eq!(t.osd_op, None);
        assert_eq!(t.mon, Duration::from_secs(300));
        assert_eq!(t.mon_ping, quarry_monc::MonPing::default());
    }

    #[test]
    fn mon_host_forms() {
        assert_eq!(
            mon_addrs("[v2:127.0.0.1:3300,v1:127.0.0.1:6789]").expect("ok"),
            vec!["127.0.0.1:3300", "127.0.0.1:6789"]
        );
        assert_eq!(mon_addrs("10.0.0.1").expect("ok"), vec!["10.0.0.1:6789"]);
        assert!(mon_addrs("[v2:1.2.3.4").is_err());
    }

    #[test]
    fn no_mon_host_is_enoent() {
        let cfg = Config::new(EntityName::client("admin").expect("name"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let e = rt.block_on(connect(&cfg)).expect_err("must fail");
        assert_eq!(e.errno(), Errno::ENOENT);
    }

    #[test]
    fn embedded_dir_connects() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg = Config::new(EntityName::client("admin").expect("name"));
        cfg.set(
            EMBEDDED_DIR_OPTION,
            &dir.path().to_string_lossy(),
            Level::Override,
        )
        .expect("set");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let c = rt.block_on(connect(&cfg)).expect("connect");
        assert!(c.is_embedded());
        let id = rt.block_on(c.rados.pool_create("rbd")).expect("pool");
        // A second connection in the same process shares the store.
        let c2 = rt.block_on(connect(&cfg)).expect("connect");
        assert_eq!(
            rt.block_on(c2.rados.pool_lookup("rbd")).expect("lookup"),
            id
        );
    }
}
