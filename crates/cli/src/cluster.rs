//! Cluster subcommands: `mon`, `osd` (foreground daemons) and the one-host
//! `up` / `down` / `status` contract.
//!
//! Layout of a `quarry up` directory D:
//! `D/ceph.conf`, `D/ceph.client.admin.keyring` (0600), `D/env`,
//! `D/keyring` (every daemon key, 0600), `D/mon.<id>/` and `D/osd.<n>/`
//! (data), `D/run/<name>.pid`, `D/log/<name>.log`, `D/bin/{rbd,ceph}`,
//! `D/lib/{librbd.so.1,librados.so.2}`.
//!
//! Daemons are separate processes: `up` re-executes this binary as
//! `quarry mon ...` / `quarry osd ...` in their own process groups, so they
//! outlive the command and a terminal hang-up.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use quarry_auth::Secret;
use quarry_common::conf::ConfFile;
use quarry_map::ClusterMap;
use quarry_monc::{MonClient, MonClientConfig, MonCommand, MonReply};

/// `quarry mon` arguments.
#[derive(Args, Debug)]
pub struct MonArgs {
    /// Monitor id (`a`).
    #[arg(long, default_value = "a")]
    pub id: String,
    /// Cluster directory holding ceph.conf, keyring and `mon.<id>/`.
    #[arg(long)]
    pub dir: PathBuf,
}

/// `quarry osd` arguments.
#[derive(Args, Debug)]
pub struct OsdArgs {
    /// OSD id.
    #[arg(long)]
    pub id: u32,
    /// Cluster directory holding ceph.conf, keyring and `osd.<id>/`.
    #[arg(long)]
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// Host name (failure domain); default: this machine's short name.
    #[arg(long)]
    pub host: Option<String>,
}

/// `quarry up` arguments.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Cluster directory (created if absent).
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of OSDs (default 3). On an existing cluster, more than it has
    /// adds OSDs (keys, directories); fewer is refused.
    #[arg(long)]
    pub osds: Option<u32>,
    /// Number of monitors (first start only; default 1).
    #[arg(long)]
    pub mons: Option<u32>,
    /// Extra `key = value` lines for `[global]` of a new ceph.conf.
    #[arg(long = "conf-set", value_name = "KEY=VALUE")]
    pub conf_set: Vec<String>,
    /// Start even without `libquarry_capi.so` beside the binary (only
    /// Quarry's own `rbd`/`ceph`/`rados` will work: `D/env` then gives
    /// QEMU and fio no librbd).
    #[arg(long = "no-client-lib")]
    pub no_client_lib: bool,
}

/// `quarry authtool` arguments (a subset of Ceph's `ceph-authtool`).
#[derive(Args, Debug)]
pub struct AuthtoolArgs {
    /// Keyring file (created with mode 0600).
    pub keyring: PathBuf,
    /// Start a new keyring, replacing the file.
    #[arg(short = 'C', long = "create-keyring")]
    pub create: bool,
    /// Add a new random key for `--name`.
    #[arg(short = 'g', long = "gen-key")]
    pub gen_key: bool,
    /// Entity: `mon.`, `client.admin`, `osd.0`, ...
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
    /// A capability of that entity: `--cap SERVICE 'CAPS'` (repeatable).
    #[arg(long = "cap", num_args = 2, value_names = ["SERVICE", "CAPS"])]
    pub cap: Vec<String>,
}

/// Commands that only need the directory.
#[derive(Args, Debug)]
pub struct DirArgs {
    /// Cluster directory.
    #[arg(long)]
    pub dir: PathBuf,
}

type R<T> = Result<T, String>;

fn io_ctx(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn runtime() -> R<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_ctx("starting the async runtime"))
}

fn abs(dir: &Path) -> R<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io_ctx(format!("create {}", dir.display())))?;
    std::fs::canonicalize(dir).map_err(io_ctx(format!("resolve {}", dir.display())))
}

fn load_conf(dir: &Path) -> R<ConfFile> {
    let p = dir.join("ceph.conf");
    ConfFile::load(&p).map_err(|e| format!("{}: {e}", p.display()))
}

fn mon_addrs(conf: &ConfFile) -> R<Vec<String>> {
    let s = conf
        .get("global", "mon_host")
        .ok_or("ceph.conf has no mon_host in [global]")?;
    Ok(s.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_start_matches("v2:")
                .trim_start_matches("v1:")
                .to_string()
        })
        .collect())
}

fn conf_secs(conf: &ConfFile, section: &str, key: &str, default: f64) -> Duration {
    let v = conf
        .get(section, key)
        .or_else(|| conf.get("global", key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(v)
}

/// Set this daemon's frame-signing policy from `cephx_sign_messages` and
/// `cephx_require_signatures`, `cephx_cluster_require_signatures`,
/// `cephx_service_require_signatures` (`[name]`, then `[type]`, then
/// `[global]`).
fn apply_sign_policy(conf: &ConfFile, ty: &str, name: &str) -> R<()> {
    let get = |key: &str| {
        conf.get(name, key)
            .or_else(|| conf.get(ty, key))
            .or_else(|| conf.get("global", key))
            .map(str::to_string)
    };
    let p = quarry_proto::SignPolicy::from_options(true, get)?;
    quarry_proto::SignPolicy::set_global(p);
    Ok(())
}

/// An OSD's `public_addr` (`[osd.N]`, `[osd]`, `[global]`): an IP address,
/// optionally with a port.
fn public_addr(conf: &ConfFile, name: &str) -> R<Option<(std::net::IpAddr, Option<u16>)>> {
    let Some(v) = conf
        .get(name, "public_addr")
        .or_else(|| conf.get("osd", "public_addr"))
        .or_else(|| conf.get("global", "public_addr"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "-")
    else {
        return Ok(None);
    };
    let v = v.trim_start_matches("v2:").trim_start_matches("v1:");
    if let Ok(sa) = v.parse::<std::net::SocketAddr>() {
        return Ok(Some((sa.ip(), (sa.port() != 0).then_some(sa.port()))));
    }
    v.trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .map(|ip| Some((ip, None)))
        .map_err(|_| format!("public_addr = {v}: expected an IP address, optionally with :port"))
}

/// Read `entity`'s secret from a keyring file.
fn keyring_secret(path: &Path, entity: &str) -> R<Secret> {
    let text = std::fs::read_to_string(path).map_err(io_ctx(format!("read {}", path.display())))?;
    let mut in_section = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_section = l.trim_matches(|c| c == '[' || c == ']').trim() == entity;
        } else if in_section {
            if let Some((k, v)) = l.split_once('=') {
                if k.trim() == "key" {
                    return Secret::from_base64(v.trim())
                        .map_err(|e| format!("{}: key of {entity}: {e}", path.display()));
                }
            }
        }
    }
    Err(format!("{}: no key for {entity}", path.display()))
}

fn write_private(path: &Path, text: &str) -> R<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_ctx(format!("create {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_ctx(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_ctx(format!("rename to {}", path.display())))
}

/// Record this daemon's pid in `D/run/<name>.pid` (written to a temporary
/// file and renamed, so a reader never sees it empty). A failure is logged:
/// the daemon runs without it, only `quarry down` cannot find it then.
fn write_pid(dir: &Path, name: &str) {
    let run = dir.join("run");
    let path = run.join(format!("{name}.pid"));
    let tmp = run.join(format!("{name}.pid.tmp"));
    let res = std::fs::create_dir_all(&run)
        .and_then(|_| std::fs::write(&tmp, format!("{}\n", std::process::id())))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = res {
        eprintln!("warning: {name}: cannot write {}: {e}", path.display());
    }
}

/// Daemons log to stderr at `QUARRY_LOG`'s level (default info).
fn init_logging() {
    let level = match crate::tools::log_level() {
        Ok(l) => l.unwrap_or(tracing::level_filters::LevelFilter::INFO),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(22);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .try_init();
}

// -------------------------------------------------------------------
// Daemons
// -------------------------------------------------------------------

/// `quarry mon --id a --dir D`.
pub fn mon(a: MonArgs) -> R<()> {
    init_logging();
    let dir = abs(&a.dir)?;
    write_pid(&dir, &format!("mon.{}", a.id));
    crate::cluster::mon_impl::run(&dir, &a.id)
}

/// The options a daemon reads at start: its conf file (`[global]` <
/// `[type]` < `[type.id]`) over the monitors' config database (`ceph config
/// set osd ...`, as Ceph's daemons fetch it at start; the file wins), over
/// Quarry's own defaults (some shorter than Ceph's; see `secs`).
struct DaemonOpts {
    cfg: quarry_common::options::Config,
}

impl DaemonOpts {
    /// The file's values for `entity`; invalid ones are logged and skipped.
    fn from_file(conf: &ConfFile, entity: &str) -> R<DaemonOpts> {
        let name = quarry_common::entity::EntityName::parse(entity)
            .map_err(|e| format!("{entity}: {e}"))?;
        let mut cfg = quarry_common::options::Config::new(name);
        for w in cfg.apply_conf_file(conf) {
            tracing::warn!(
                "ceph.conf line {}: [{}] {}: {}",
                w.line,
                w.section,
                w.key,
                w.error
            );
        }
        Ok(DaemonOpts { cfg })
    }

    /// Add the config database's values for this daemon (replacing any
    /// fetched before); returns how many it had.
    async fn apply_mon(&mut self, monc: &MonClient) -> Result<usize, String> {
        use quarry_common::options::Level;
        let who = self.cfg.entity().to_name();
        let entries = monc.config_for(&who).await.map_err(|e| e.to_string())?;
        self.cfg.clear_level(Level::Mon);
        for e in &entries {
            if let Err(err) = self.cfg.set(&e.name, &e.value, Level::Mon) {
                tracing::warn!("config database: {who}: {} = {}: {err}", e.name, e.value);
            }
        }
        Ok(entries.len())
    }

    /// The value set in the file or the database (the file wins), if any.
    fn raw(&self, key: &str) -> Option<String> {
        use quarry_common::options::Level;
        [Level::File, Level::Mon]
            .into_iter()
            .find_map(|l| self.cfg.get_at(key, l).ok().flatten())
    }

    /// A positive number of seconds set in the file or the database, else
    /// `default` (Quarry's, not the registry's: e.g. beacons every 1 s where
    /// Ceph's `osd_heartbeat_interval` defaults to 6).
    fn secs(&self, key: &str, default: f64) -> Duration {
        let v = self
            .raw(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(default);
        Duration::from_secs_f64(v)
    }

    /// Refuse to run under connection modes this build cannot honour
    /// (`secure` alone, see `con_modes_supported`), whether the file or the
    /// database set them: encryption asked for is never quietly dropped.
    fn check_con_modes(&self, names: &[&str]) -> R<()> {
        let who = self.cfg.entity().to_name();
        for name in names {
            let value = self.cfg.get_str(name).map_err(|e| format!("{who}: {e}"))?;
            quarry_common::options::con_modes_supported(&value)
                .map_err(|e| format!("{who}: {name} = {value}: {e}"))?;
        }
        Ok(())
    }

    /// Set the process's frame-signing policy from these values.
    fn apply_sign_policy(&self) -> R<()> {
        let p = quarry_proto::SignPolicy::from_options(true, |k| self.raw(k))?;
        quarry_proto::SignPolicy::set_global(p);
        Ok(())
    }
}

/// `quarry osd --id N --dir D`.
pub fn osd(a: OsdArgs) -> R<()> {
    init_logging();
    let dir = abs(&a.dir)?;
    let conf = load_conf(&dir)?;
    let entity = format!("osd.{}", a.id);
    let mut opts = DaemonOpts::from_file(&conf, &entity)?;
    opts.check_con_modes(&quarry_common::options::OSD_CON_MODE_OPTIONS)?;
    opts.apply_sign_policy()?;
    let secret = keyring_secret(&dir.join("keyring"), &entity)
        .or_else(|_| keyring_secret(&dir.join(&entity).join("keyring"), &entity))?;
    write_pid(&dir, &entity);
    let mon_addrs = mon_addrs(&conf)?;
    let mon_timeout = Duration::from_secs(30);
    let rt = runtime()?;
    let r = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(io_ctx("install SIGTERM handler"))?;
        // The config database first, on a session of its own: the options
        // it sets shape the OSD's own session (pings, signing).
        let fetched = async {
            let monc = MonClient::connect(MonClientConfig {
                mon_addrs: mon_addrs.clone(),
                entity: entity.clone(),
                secret: secret.clone(),
                timeout: mon_timeout,
                ping: quarry_monc::MonPing::default(),
            })
            .await
            .map_err(|e| e.to_string())?;
            let n = opts.apply_mon(&monc).await?;
            drop(monc);
            Ok::<usize, String>(n)
        };
        tokio::select! {
            r = fetched => match r {
                Ok(n) => tracing::info!("{entity}: {n} values from the config database"),
                // The OSD's own session reports an unreachable monitor.
                Err(e) => tracing::warn!("{entity}: config database not read: {e}"),
            },
            _ = term.recv() => return Ok(()),
        }
        opts.check_con_modes(&quarry_common::options::OSD_CON_MODE_OPTIONS)?;
        opts.apply_sign_policy()?;
        let cfg = quarry_osd::OsdConfig {
            id: a.id,
            data_dir: dir.join(&entity),
            mon_addrs,
            secret,
            bind_addr: a.bind,
            public_addr: public_addr(&conf, &entity)?,
            host: a.host.unwrap_or_else(quarry_common::conf::short_hostname),
            beacon_interval: opts.secs("osd_heartbeat_interval", 1.0),
            mon_timeout,
            mon_ping: quarry_monc::MonPing {
                interval: opts.secs("mon_client_ping_interval", 2.0),
                timeout: opts.secs("mon_client_ping_timeout", 5.0),
            },
            handshake_timeout: opts.secs("ms_connection_ready_timeout", 10.0),
            deep_scrub_interval: opts.secs("osd_deep_scrub_interval", 604800.0),
            scrub_auto_repair: opts
                .raw("osd_scrub_auto_repair")
                .is_some_and(|v| quarry_common::options::parse_bool(&v) == Ok(true)),
            initial_weight: initial_weight(opts.raw("osd_crush_initial_weight"))
                .map_err(|e| format!("{entity}: {e}"))?,
        };
        tokio::select! {
            r = quarry_osd::run(cfg) => r.map_err(|e| e.to_string()),
            _ = term.recv() => Ok(()),
        }
    });
    // Dropping the runtime drops every task and with them the store, which
    // closes its database cleanly (no recovery scan at the next start).
    rt.shutdown_timeout(Duration::from_secs(5));
    r
}

/// `osd_crush_initial_weight`: a weight (0 to 65535, Ceph's units) for
/// a new OSD; negative (Ceph's default, -1, means "its capacity in TiB")
/// or unset leaves Quarry's default, 1.0, so an OSD added to an older
/// cluster weighs what its peers do.
fn initial_weight(v: Option<String>) -> R<Option<u32>> {
    let Some(v) = v else { return Ok(None) };
    let max = f64::from(quarry_map::MAX_OSD_WEIGHT / quarry_map::WEIGHT_ONE);
    match v.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && w < 0.0 => Ok(None),
        Ok(w) if w.is_finite() && w <= max => {
            Ok(Some((w * f64::from(quarry_map::WEIGHT_ONE)).round() as u32))
        }
        _ => Err(format!(
            "osd_crush_initial_weight = {v}: not a weight (0 to {max}, or negative for the default)"
        )),
    }
}

/// `quarry authtool KEYRING [--create-keyring] --gen-key -n NAME [--cap SVC CAPS]...`:
/// write keys for a cluster whose daemons are started by hand.
pub fn authtool(a: AuthtoolArgs) -> R<()> {
    let mut text = if a.create {
        String::new()
    } else {
        match std::fs::read_to_string(&a.keyring) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{}: no such keyring (use --create-keyring)",
                    a.keyring.display()
                ))
            }
            Err(e) => return Err(format!("read {}: {e}", a.keyring.display())),
        }
    };
    if a.gen_key {
        let name = a.name.as_deref().ok_or("--gen-key needs --name (-n)")?;
        if quarry_mon::keyring::parse(&text)
            .map_err(|e| format!("{}: {e}", a.keyring.display()))?
            .iter()
            .any(|e| e.entity == name)
        {
            return Err(format!("{}: {name} already has a key", a.keyring.display()));
        }
        let pairs: Vec<(&str, &str)> = a
            .cap
            .chunks(2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect();
        let caps = quarry_auth::EntityCaps::from_pairs(&pairs)
            .map_err(|e| format!("caps of {name}: {e}"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        text.push_str(&quarry_mon::keyring::section(
            name,
            &Secret::generate(now),
            &caps,
        ));
    } else if a.name.is_some() || !a.cap.is_empty() {
        return Err("--name and --cap need --gen-key".into());
    }
    write_private(&a.keyring, &text)
}

// -------------------------------------------------------------------
// up / down / status
// -------------------------------------------------------------------

fn free_port() -> R<u16> {
    quarry_common::port::free_local_port().map_err(io_ctx("find a free port"))
}

fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        for b in quarry_auth::random_nonce() {
            let _ = write!(s, "{b:02x}");
        }
    }
    s.truncate(n);
    s
}

fn new_fsid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks the process exists.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // A killed daemon whose parent exited may linger as a zombie when
    // nothing reaps orphans (containers): that is not "running".
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => true,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Start a daemon unless it runs already; `true` if started.
fn spawn_daemon(dir: &Path, name: &str, args: &[String]) -> R<bool> {
    let pidfile = dir.join("run").join(format!("{name}.pid"));
    if let Some(pid) = read_pid(&pidfile) {
        if pid_alive(pid) {
            return Ok(false); // already running
        }
    }
    let exe = std::env::current_exe().map_err(io_ctx("locate the quarry binary"))?;
    let log_path = dir.join("log").join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_ctx(format!("open {}", log_path.display())))?;
    let log2 = log.try_clone().map_err(io_ctx("dup log"))?;
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(io_ctx(format!("start {name}")))?;
    std::fs::write(&pidfile, format!("{}\n", child.id()))
        .map_err(io_ctx(format!("write {}", pidfile.display())))?;
    Ok(true)
}

fn osd_count(dir: &Path) -> u32 {
    let mut n = 0;
    while dir.join(format!("osd.{n}")).is_dir() {
        n += 1;
    }
    n
}

fn mon_ids(dir: &Path) -> Vec<String> {
    ["a", "b", "c", "d", "e"]
        .iter()
        .filter(|id| dir.join(format!("mon.{id}")).is_dir())
        .map(|s| s.to_string())
        .collect()
}

/// `quarry up --dir D [--osds N] [--mons M]`.
pub fn up(a: UpArgs) -> R<()> {
    let t0 = Instant::now();
    let dir = abs(&a.dir)?;
    // Without Quarry's library, `D/env` would leave QEMU and fio loading the
    // system's Ceph librbd, which retries its handshake with Quarry's
    // monitors forever: refuse before starting anything.
    let so = client_lib()?;
    if so.is_none() && !a.no_client_lib {
        let exe = std::env::current_exe().map_err(io_ctx("locate the quarry binary"))?;
        return Err(format!(
            "libquarry_capi.so not found next to {}: QEMU and fio started from {}/env would load the system's Ceph librbd and hang. Build it beside the binary (cargo build --release builds both), or pass --no-client-lib to start the cluster for Quarry's own tools only",
            exe.display(),
            dir.display()
        ));
    }
    for sub in ["run", "log", "bin", "lib"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io_ctx(format!("create {sub}")))?;
    }
    let fresh = !dir.join("ceph.conf").exists();
    if fresh {
        let osds = a.osds.unwrap_or(3).max(1);
        let mons = a.mons.unwrap_or(1).clamp(1, 5);
        create_cluster(&dir, osds, mons, &a.conf_set)?;
    }
    let conf = load_conf(&dir)?;
    let have = osd_count(&dir);
    let want = if fresh {
        have
    } else {
        a.osds.map_or(have, |n| n.max(1))
    };
    if want < have {
        return Err(format!(
            "{} holds {have} OSDs: --osds {want} would not remove any (retire one with `ceph osd purge`, then delete its directory)",
            dir.display()
        ));
    }
    let mons = mon_ids(&dir);
    for id in &mons {
        spawn_daemon(
            &dir,
            &format!("mon.{id}"),
            &[
                "mon".into(),
                "--id".into(),
                id.clone(),
                "--dir".into(),
                dir.display().to_string(),
            ],
        )?;
    }
    let addrs = mon_addrs(&conf)?;
    let secret = keyring_secret(&dir.join("ceph.client.admin.keyring"), "client.admin")?;
    let rt = runtime()?;
    let osds = rt.block_on(async {
        let monc = connect_admin(&addrs, secret).await?;
        for n in have..want {
            add_osd(&dir, &monc, n).await?;
        }
        // A purged OSD's directory stays (its data is the operator's to
        // delete); its daemon would be refused, so it is not started.
        let keys: std::collections::BTreeSet<String> =
            match monc.command(MonCommand::AuthList).await {
                Ok(MonReply::Auth(v)) => v.into_iter().map(|e| e.entity).collect(),
                Ok(other) => return Err(format!("auth list: unexpected reply {other:?}")),
                Err(e) => return Err(format!("auth list: {e}")),
            };
        let mut started = Vec::new();
        let mut osds = 0;
        for n in 0..want {
            if !keys.contains(&format!("osd.{n}")) {
                eprintln!(
                    "quarry up: osd.{n} is not started: the cluster has no key for it (purged); delete {}/osd.{n} to free its space",
                    dir.display()
                );
                continue;
            }
            osds += 1;
            let fresh_start = spawn_daemon(
                &dir,
                &format!("osd.{n}"),
                &[
                    "osd".into(),
                    "--id".into(),
                    n.to_string(),
                    "--dir".into(),
                    dir.display().to_string(),
                ],
            )?;
            if fresh_start {
                started.push(n);
            }
        }
        // The persisted map may still show restarted OSDs up from their
        // previous run: wait for boots newer than this epoch.
        let e0 = monc.refresh_map().await.map_err(|e| e.to_string())?.epoch;
        let size = osds.min(3);
        let min_size = if osds == 1 { 1 } else { 2 };
        for pool in ["rbd", "data"] {
            let map = monc.refresh_map().await.map_err(|e| e.to_string())?;
            if map.pool_by_name(pool).is_none() {
                match monc
                    .command(MonCommand::PoolCreate {
                        name: pool.to_string(),
                        pg_num: None,
                        size: Some(size),
                        min_size: Some(min_size),
                        application: Some("rbd".into()),
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.errno() == quarry_common::Errno::EEXIST => {}
                    Err(e) => return Err(format!("create pool {pool}: {e}")),
                }
            }
        }
        wait_ready(&monc, osds, &started, e0, Duration::from_secs(120)).await?;
        Ok::<u32, String>(osds)
    })?;
    write_env(&dir)?;
    println!(
        "cluster up in {:.1}s: {} mon(s), {osds} osd(s); pools rbd, data ready",
        t0.elapsed().as_secs_f64(),
        mons.len()
    );
    println!("  . {}/env", dir.display());
    Ok(())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Add `osd.n` to a running cluster: its key (the keyring's, else the
/// monitors', else a new one) registered with the monitors and written to
/// `D/keyring`, and its data directory.
async fn add_osd(dir: &Path, monc: &MonClient, n: u32) -> R<()> {
    let entity = format!("osd.{n}");
    let keyring = dir.join("keyring");
    let in_keyring = keyring_secret(&keyring, &entity).ok();
    let key = match &in_keyring {
        Some(k) => k.to_base64(),
        None => match monc
            .command(MonCommand::AuthGet {
                entity: entity.clone(),
            })
            .await
        {
            Ok(MonReply::Auth(v)) if !v.is_empty() => v[0].key.clone(),
            _ => Secret::generate(unix_now()).to_base64(),
        },
    };
    let caps = [("mon", "profile osd"), ("osd", "allow *")];
    monc.command(MonCommand::AuthAdd {
        entity: entity.clone(),
        key: Some(key.clone()),
        caps: caps
            .iter()
            .map(|(s, c)| (s.to_string(), c.to_string()))
            .collect(),
    })
    .await
    .map_err(|e| format!("add {entity}: {e}"))?;
    if in_keyring.is_none() {
        let mut text = std::fs::read_to_string(&keyring)
            .map_err(io_ctx(format!("read {}", keyring.display())))?;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = write!(text, "[{entity}]\n\tkey = {key}\n");
        for (svc, c) in caps {
            let _ = writeln!(text, "\tcaps {svc} = \"{c}\"");
        }
        write_private(&keyring, &text)?;
    }
    std::fs::create_dir_all(dir.join(&entity)).map_err(io_ctx(format!("create {entity} dir")))?;
    eprintln!("quarry up: added {entity}");
    Ok(())
}

async fn connect_admin(addrs: &[String], secret: Secret) -> R<Arc<MonClient>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match MonClient::connect(MonClientConfig {
            mon_addrs: addrs.to_vec(),
            entity: "client.admin".into(),
            secret: secret.clone(),
            timeout: Duration::from_secs(5),
            ping: Default::default(),
        })
        .await
        {
            Ok(m) => return Ok(m),
            Err(e) if e.errno() == quarry_common::Errno::EACCES || Instant::now() > deadline => {
                return Err(format!("connect to monitors {addrs:?}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// PGs whose primary recorded the current up set as active.
fn pg_counts(map: &ClusterMap) -> (u32, u32) {
    let mut total = 0;
    let mut active = 0;
    for (&pool, def) in &map.pools {
        for seed in 0..def.pg_num {
            let pg = quarry_map::PgId { pool, seed };
            total += 1;
            let up = map.pg_up_set(pg).unwrap_or_default();
            if !up.is_empty()
                && up.len() as u32 >= def.min_size.max(1)
                && map.pg_history.get(&pg).is_some_and(|h| h.acting == up)
            {
                active += 1;
            }
        }
    }
    (active, total)
}

async fn wait_ready(
    monc: &Arc<MonClient>,
    osds: u32,
    started: &[u32],
    e0: quarry_map::Epoch,
    timeout: Duration,
) -> R<()> {
    let deadline = Instant::now() + timeout;
    let mut rx = monc.subscribe();
    loop {
        let map = rx.borrow_and_update().clone();
        let up = map.osds.values().filter(|o| o.up).count() as u32;
        // Restarted OSDs may boot before `e0` was read, so their boot epoch
        // proves nothing; a stale "up" only makes the first ops retry.
        let _ = (started, e0);
        let (active, total) = pg_counts(&map);
        if up >= osds && active == total && map.pool_by_name("rbd").is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "cluster not ready after {timeout:?}: {up}/{osds} osds up, {active}/{total} pgs active (see log/)"
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        if rx.has_changed().is_err() {
            return Err("monitor client stopped".into());
        }
    }
}

fn create_cluster(dir: &Path, osds: u32, mons: u32, extra: &[String]) -> R<()> {
    let fsid = new_fsid();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ids: Vec<String> = ["a", "b", "c", "d", "e"][..mons as usize]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut mon_addr = Vec::new();
    for _ in &ids {
        mon_addr.push(format!("127.0.0.1:{}", free_port()?));
    }
    let admin = Secret::generate(now);
    let mon_key = Secret::generate(now);
    let osd_keys: Vec<Secret> = (0..osds).map(|_| Secret::generate(now)).collect();
    let mut conf = String::new();
    let _ = writeln!(conf, "[global]");
    let _ = writeln!(conf, "\tfsid = {fsid}");
    let _ = writeln!(conf, "\tmon_host = {}", mon_addr.join(","));
    let _ = writeln!(conf, "\tmon_initial_members = {}", ids.join(","));
    let _ = writeln!(conf, "\tauth_cluster_required = cephx");
    let _ = writeln!(conf, "\tauth_service_required = cephx");
    let _ = writeln!(conf, "\tauth_client_required = cephx");
    let _ = writeln!(conf, "\tosd_pool_default_size = {}", osds.min(3));
    let _ = writeln!(
        conf,
        "\tosd_pool_default_min_size = {}",
        if osds == 1 { 1 } else { 2 }
    );
    let _ = writeln!(conf, "\tosd_crush_chooseleaf_type = 0");
    let _ = writeln!(conf, "\tmon_allow_pool_delete = true");
    let _ = writeln!(conf, "\tlog_file = {}/log/$name.log", dir.display());
    for kv in extra {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--conf-set {kv}: expected KEY=VALUE"))?;
        let _ = writeln!(conf, "\t{} = {}", k.trim(), v.trim());
    }
    let _ = writeln!(conf);
    let _ = writeln!(conf, "[client.admin]");
    let _ = writeln!(
        conf,
        "\tkeyring = {}/ceph.client.admin.keyring",
        dir.display()
    );
    for (id, addr) in ids.iter().zip(&mon_addr) {
        let _ = writeln!(conf);
        let _ = writeln!(conf, "[mon.{id}]");
        let _ = writeln!(conf, "\tmon_addr = {addr}");
        let _ = writeln!(conf, "\tmon_data = {}/mon.{id}", dir.display());
    }
    let _ = writeln!(conf);
    let _ = writeln!(conf, "[osd]");
    let _ = writeln!(conf, "\tosd_data = {}/osd.$id", dir.display());
    let _ = writeln!(conf, "\tkeyring = {}/keyring", dir.display());
    let mut admin_kr = String::new();
    let _ = writeln!(admin_kr, "[client.admin]");
    let _ = writeln!(admin_kr, "\tkey = {}", admin.to_base64());
    let _ = writeln!(admin_kr, "\tcaps mds = \"allow *\"");
    let _ = writeln!(admin_kr, "\tcaps mon = \"allow *\"");
    let _ = writeln!(admin_kr, "\tcaps osd = \"allow *\"");
    let mut all_kr = String::new();
    let _ = writeln!(
        all_kr,
        "[mon.]\n\tkey = {}\n\tcaps mon = \"allow *\"",
        mon_key.to_base64()
    );
    for (n, k) in osd_keys.iter().enumerate() {
        let _ = writeln!(
            all_kr,
            "[osd.{n}]\n\tkey = {}\n\tcaps mon = \"profile osd\"\n\tcaps osd = \"allow *\"",
            k.to_base64()
        );
    }
    all_kr.push_str(&admin_kr);
    write_private(&dir.join("ceph.client.admin.keyring"), &admin_kr)?;
    write_private(&dir.join("keyring"), &all_kr)?;
    for n in 0..osds {
        std::fs::create_dir_all(dir.join(format!("osd.{n}"))).map_err(io_ctx("create osd dir"))?;
    }
    mon_impl::mkfs(dir, &conf, &ids)?;
    // ceph.conf last: its presence marks a complete cluster directory.
    std::fs::write(dir.join("ceph.conf"), conf).map_err(io_ctx("write ceph.conf"))?;
    Ok(())
}

/// `libquarry_capi.so` beside the running binary, if it is there.
fn client_lib() -> R<Option<PathBuf>> {
    let exe = std::env::current_exe().map_err(io_ctx("locate the quarry binary"))?;
    Ok(exe
        .parent()
        .map(|p| p.join("libquarry_capi.so"))
        .filter(|p| p.exists()))
}

fn write_env(dir: &Path) -> R<()> {
    let exe = std::env::current_exe().map_err(io_ctx("locate the quarry binary"))?;
    let bin = dir.join("bin");
    for name in ["rbd", "ceph", "rados", "quarry"] {
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&exe, &link)
            .map_err(io_ctx(format!("symlink {}", link.display())))?;
    }
    let lib = dir.join("lib");
    match client_lib()? {
        Some(so) => {
            for name in ["librbd.so.1", "librados.so.2", "librbd.so", "librados.so"] {
                let link = lib.join(name);
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&so, &link)
                    .map_err(io_ctx(format!("symlink {}", link.display())))?;
            }
        }
        // Only with --no-client-lib (checked at the start of `up`).
        None => eprintln!(
            "quarry up: warning: libquarry_capi.so not found next to {}: {}/env gives QEMU and fio no librbd",
            exe.display(),
            dir.display()
        ),
    }
    let env = format!(
        "# source me: . {d}/env\nexport CEPH_CONF={d}/ceph.conf\nexport LD_LIBRARY_PATH={d}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\nexport PATH={d}/bin:$PATH\n",
        d = dir.display()
    );
    std::fs::write(dir.join("env"), env).map_err(io_ctx("write env"))
}

/// `quarry down --dir D`: SIGTERM every daemon, wait, then SIGKILL.
pub fn down(a: DirArgs) -> R<()> {
    let dir = abs(&a.dir)?;
    let run = dir.join("run");
    let mut pids = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&run) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = read_pid(&p) {
                    pids.push((p.clone(), pid));
                }
            }
        }
    }
    // OSDs before monitors so they do not get marked down noisily.
    pids.sort_by_key(|(p, _)| !p.to_string_lossy().contains("osd."));
    for (_, pid) in &pids {
        if pid_alive(*pid) {
            // SAFETY: plain signal delivery to a pid we started.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(_, p)| pid_alive(*p)) && Instant::now() < deadline {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, pid) in &pids {
        if pid_alive(*pid) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
    for (p, _) in &pids {
        let _ = std::fs::remove_file(p);
    }
    println!("stopped {} daemon(s)", pids.len());
    Ok(())
}

fn reap() {
    // Daemons we started in this process (tests) would stay zombies and look alive.
    loop {
        // SAFETY: non-blocking wait for any child.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// `quarry status --dir D`.
pub fn status(a: DirArgs) -> R<()> {
    let dir = abs(&a.dir)?;
    let conf = load_conf(&dir)?;
    let addrs = mon_addrs(&conf)?;
    let secret = keyring_secret(&dir.join("ceph.client.admin.keyring"), "client.admin")?;
    runtime()?.block_on(async {
        let monc = MonClient::connect(MonClientConfig {
            mon_addrs: addrs.clone(),
            entity: "client.admin".into(),
            secret,
            timeout: Duration::from_secs(10),
            ping: Default::default(),
        })
        .await
        .map_err(|e| format!("connect to monitors {addrs:?}: {e}"))?;
        let map = monc.refresh_map().await.map_err(|e| e.to_string())?;
        let health = match monc.command(MonCommand::Status).await {
            Ok(MonReply::Status(s)) => {
                let c: Vec<&str> = s.checks.iter().map(|c| c.summary.as_str()).collect();
                format!("{} {}", s.health, c.join("; "))
            }
            Ok(_) => "unknown".into(),
            Err(e) => format!("unknown ({e})"),
        };
        let up = map.osds.values().filter(|o| o.up).count();
        let inn = map.osds.values().filter(|o| o.in_cluster).count();
        let (active, total) = pg_counts(&map);
        println!("  cluster:");
        println!("    id:     {}", map.fsid);
        println!("    health: {health}");
        println!("  services:");
        println!(
            "    mon: {} daemons ({})",
            map.mons.len(),
            map.mons
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        println!("    osd: {} osds: {up} up, {inn} in", map.osds.len());
        println!("  data:");
        println!("    pools: {} pools, {total} pgs", map.pools.len());
        println!(
            "    pgs:   {active} active+clean, {} inactive or degraded",
            total - active
        );
        println!("    epoch: {}", map.epoch);
        Ok(())
    })
}

/// The monitor glue (kept apart: it follows `quarry-mon`'s API).
mod mon_impl {
    use super::*;
    use quarry_map::MonInfo;

    const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn mon_config(
        dir: &Path,
        conf: &ConfFile,
        id: &str,
        keyring: Option<PathBuf>,
    ) -> R<quarry_mon::MonConfig> {
        let fsid = conf
            .get("global", "fsid")
            .ok_or("ceph.conf has no fsid")?
            .to_string();
        let mut mons = Vec::new();
        for (rank, name) in NAMES.iter().enumerate() {
            if let Some(addr) = conf.get(&format!("mon.{name}"), "mon_addr") {
                mons.push(MonInfo {
                    name: name.to_string(),
                    rank: rank as u64,
                    addr: addr.trim().to_string(),
                });
            }
        }
        let me = mons
            .iter()
            .find(|m| m.name == id)
            .ok_or_else(|| format!("ceph.conf has no [mon.{id}] with mon_addr"))?
            .clone();
        let mut cfg =
            quarry_mon::MonConfig::single(id, dir.join(format!("mon.{id}")), &me.addr, &fsid);
        cfg.rank = me.rank;
        cfg.mons = mons;
        cfg.keyring = keyring;
        cfg.timings.osd_heartbeat_grace = conf_secs(conf, "mon", "osd_heartbeat_grace", 20.0);
        cfg.timings.osd_down_out_interval =
            conf_secs(conf, "mon", "mon_osd_down_out_interval", 600.0);
        cfg.timings.handshake = conf_secs(conf, "mon", "ms_connection_ready_timeout", 10.0);
        let percent = |key: &str, default: u32| {
            conf.get("mon", key)
                .or_else(|| conf.get("global", key))
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|v| *v <= 100)
                .unwrap_or(default)
        };
        cfg.data_avail_warn = percent("mon_data_avail_warn", 30);
        cfg.data_avail_crit = percent("mon_data_avail_crit", 5);
        cfg.timings_from_file = ["osd_heartbeat_grace", "mon_osd_down_out_interval"]
            .into_iter()
            .filter(|k| {
                conf.get("mon", k)
                    .or_else(|| conf.get("global", k))
                    .is_some()
            })
            .map(str::to_string)
            .collect();
        let int = |k: &str| {
            conf.get("mon", k)
                .or_else(|| conf.get("global", k))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        if let Some(v) = int("osd_pool_default_size") {
            cfg.pool_defaults.size = v;
        }
        if let Some(v) = int("osd_pool_default_min_size") {
            cfg.pool_defaults.min_size = v;
        }
        if let Some(v) = int("osd_pool_default_pg_num") {
            cfg.pool_defaults.pg_num = v;
        }
        // Ceph's crush bucket type of the failure domain: 0 = osd, 1 = host.
        // Unset: osd while every OSD is on one host, else host.
        cfg.failure_domain = match int("osd_crush_chooseleaf_type") {
            Some(0) => Some(quarry_map::FailureDomain::Osd),
            Some(1) => Some(quarry_map::FailureDomain::Host),
            Some(n) => {
                return Err(format!(
                    "osd_crush_chooseleaf_type = {n}: only 0 (osd) and 1 (host) are supported"
                ))
            }
            None => None,
        };
        cfg.allow_pool_delete = conf
            .get("global", "mon_allow_pool_delete")
            .is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes"));
        Ok(cfg)
    }

    /// Initialize the monitors' stores.
    pub fn mkfs(dir: &Path, conf_text: &str, ids: &[String]) -> R<()> {
        let conf = ConfFile::parse(conf_text).map_err(|e| format!("generated ceph.conf: {e}"))?;
        for id in ids {
            let cfg = mon_config(dir, &conf, id, Some(dir.join("keyring")))?;
            quarry_mon::mkfs(&cfg).map_err(|e| format!("mon.{id} mkfs: {e}"))?;
        }
        Ok(())
    }

    /// Run a monitor in the foreground.
    pub fn run(dir: &Path, id: &str) -> R<()> {
        let conf = load_conf(dir)?;
        super::DaemonOpts::from_file(&conf, &format!("mon.{id}"))?
            .check_con_modes(&quarry_common::options::MON_CON_MODE_OPTIONS)?;
        super::apply_sign_policy(&conf, "mon", &format!("mon.{id}"))?;
        let cfg = mon_config(dir, &conf, id, Some(dir.join("keyring")))?;
        runtime()?
            .block_on(quarry_mon::run(cfg))
            .map_err(|e| format!("mon.{id}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::initial_weight;

    #[test]
    fn initial_weight_is_a_weight_or_the_default() {
        let w = |v: &str| initial_weight(Some(v.to_string()));
        assert_eq!(initial_weight(None), Ok(None));
        assert_eq!(w("-1"), Ok(None), "Ceph's default leaves Quarry's");
        assert_eq!(w("0"), Ok(Some(0)));
        assert_eq!(w(" 2.5 "), Ok(Some(5 * quarry_map::WEIGHT_ONE / 2)));
        assert_eq!(w("65535"), Ok(Some(quarry_map::MAX_OSD_WEIGHT)));
        for bad in ["65536", "inf", "NaN", "x", ""] {
            let e = w(bad).expect_err(bad);
            assert!(e.contains("not a weight"), "{bad}: {e}");
        }
    }
}
