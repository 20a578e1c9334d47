//! Helpers shared by the cluster test files: a `quarry up` cluster of
//! separate daemon processes on 127.0.0.1, stopped (and its logs shown on
//! failure) when dropped. Every wait is bounded so a bug fails, not hangs.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_rados::Rados;

/// The `quarry` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quarry");
/// Bound on anything that should finish: fail instead of hanging.
pub const BOUND: Duration = Duration::from_secs(90);

/// Short failure detection, so tests spend little time waiting for it.
pub const FAST_CONF: [&str; 5] = [
    "osd_heartbeat_grace=2",
    "osd_heartbeat_interval=1",
    "mon_osd_down_out_interval=600",
    "osd_pool_default_pg_num=8",
    // Health texts compared exactly must not depend on how full the test
    // machine's disk is (MON_DISK_LOW below 30 % free otherwise).
    "mon_data_avail_warn=0",
];

/// A one-host cluster started by `quarry up`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// `quarry up --osds N --mons M` with [`FAST_CONF`].
    pub fn up(osds: u32, mons: u32) -> Cluster {
        Self::up_with(osds, mons, &[])
    }

    /// [`Cluster::up`] with more `KEY=VALUE` options in `[global]`.
    pub fn up_with(osds: u32, mons: u32, conf: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cluster { dir };
        c.run_up_with(Some((osds, mons)), conf);
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `quarry up` (again): starts every daemon that is not running and
    /// returns when the cluster is ready for I/O.
    pub fn run_up(&self, fresh: Option<(u32, u32)>) {
        self.run_up_with(fresh, &[])
    }

    fn run_up_with(&self, fresh: Option<(u32, u32)>, conf: &[&str]) {
        let mut cmd = Command::new(BIN);
        cmd.arg("up").arg("--dir").arg(self.path());
        if let Some((osds, mons)) = fresh {
            cmd.arg("--osds").arg(osds.to_string());
            cmd.arg("--mons").arg(mons.to_string());
        }
        for kv in FAST_CONF.iter().chain(conf) {
            cmd.args(["--conf-set", kv]);
        }
        let out = cmd.output().expect("run quarry up");
        assert!(
            out.status.success(),
            "quarry up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start `quarry osd --id n` in the cluster directory as `quarry up`
    /// does (log appended to `log/osd.N.log`, pid file) without starting
    /// the others or waiting for it. Not waited on here: `kill9`/`term`
    /// (or [`wait_exit`]) reap it ([`reap`]).
    pub fn start_osd(&self, n: u32) {
        self.start_osd_args(n, &[])
    }

    /// [`Cluster::start_osd`] with more arguments (`--bind ADDR`).
    pub fn start_osd_args(&self, n: u32, args: &[&str]) {
        self.start_osd_env(n, args, &[])
    }

    /// [`Cluster::start_osd_args`] with environment variables (fault injection).
    #[allow(clippy::zombie_processes)]
    pub fn start_osd_env(&self, n: u32, args: &[&str], env: &[(&str, &str)]) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("log").join(format!("osd.{n}.log")))
            .expect("osd log");
        let child = Command::new(BIN)
            .args(["osd", "--id", &n.to_string(), "--dir"])
            .arg(self.path())
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start osd");
        std::fs::write(
            self.path().join("run").join(format!("osd.{n}.pid")),
            format!("{}\n", child.id()),
        )
        .expect("pid file");
        UNREAPED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child.id() as i32);
    }

    /// Append `text` (sections and options) to the cluster's ceph.conf;
    /// daemons started later read it.
    pub fn append_conf(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path().join("ceph.conf"))
            .expect("ceph.conf");
        f.write_all(text.as_bytes()).expect("append to ceph.conf");
    }

    /// SIGSTOP a daemon and wait until every one of its threads is
    /// stopped: `kill` returns before the group stop reaches threads that
    /// are running, which on a loaded machine may still read a socket and
    /// apply a request for a while.
    pub fn freeze(&self, name: &str) {
        let pid = self.pid(name);
        // SAFETY: signal to a daemon this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list");
            let running = tasks.filter_map(Result::ok).any(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                !matches!(state, Some("T" | "t") | None)
            });
            if !running {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{name} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self, name: &str) -> i32 {
        let p = self.path().join("run").join(format!("{name}.pid"));
        // The daemon rewrites the file the test wrote at spawn (truncate,
        // then write): a read in between sees it empty, so retry briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pid in {} after 10 s: {text:?}",
                p.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&self, name: &str) {
        let pid = self.pid(name);
        // SAFETY: signal to a daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_exit(pid, &format!("{name} survived kill -9"));
    }

    /// SIGTERM a daemon and wait (bounded) until it has exited.
    pub fn term(&self, name: &str) {
        let pid = self.pid(name);
        // SAFETY: signal to a daemon this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_exit(pid, &format!("{name} ignored SIGTERM"));
    }

    pub fn mon_addrs(&self) -> Vec<String> {
        let conf = std::fs::read_to_string(self.path().join("ceph.conf")).expect("conf");
        let line = conf
            .lines()
            .find(|l| l.trim_start().starts_with("mon_host"))
            .expect("mon_host");
        line.split_once('=')
            .expect("=")
            .1
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    }

    pub fn admin_secret(&self) -> quarry_auth::Secret {
        admin_secret(self.path())
    }

    pub async fn client(&self) -> Arc<ClusterClient> {
        bounded(
            "client connect",
            ClusterClient::connect(
                self.mon_addrs(),
                "client.admin",
                self.admin_secret(),
                ClientTimeouts::default(),
            ),
        )
        .await
        .expect("connect")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(&self.path().join("log"));
        }
        let _ = Command::new(BIN)
            .arg("down")
            .arg("--dir")
            .arg(self.path())
            .output();
    }
}

/// The admin key of a cluster directory.
pub fn admin_secret(dir: &Path) -> quarry_auth::Secret {
    let kr = std::fs::read_to_string(dir.join("ceph.client.admin.keyring")).expect("keyring");
    let key = kr
        .lines()
        .find_map(|l| l.trim().strip_prefix("key = "))
        .expect("key line");
    quarry_auth::Secret::from_base64(key.trim()).expect("key")
}

/// Print the tail of every daemon log in `dir` (the daemons' view of a failure).
pub fn dump_logs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.contains("openraft")).collect();
            eprintln!("==== {}", e.path().display());
            for l in &lines[lines.len().saturating_sub(25)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Wait (bounded by [`BOUND`]) until `pid` has exited; `why` is the failure message.
pub fn wait_exit(pid: i32, why: &str) {
    let deadline = std::time::Instant::now() + BOUND;
    while pid_alive(pid) {
        assert!(std::time::Instant::now() < deadline, "{why}");
        reap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Daemons started by [`Cluster::start_osd_args`] whose `Child` was dropped
/// without a wait: [`reap`] collects exactly these.
static UNREAPED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Reap the exited daemons this test binary started itself (so they do not
/// linger as zombies). Only those: tests run in parallel threads of one
/// process, and `waitpid(-1)` would also take another test's `Child` (its
/// `wait()` then fails with ECHILD) or a process it is about to inspect.
pub fn reap() {
    let mut pids = UNREAPED.lock().unwrap_or_else(|p| p.into_inner());
    pids.retain(|&pid| {
        // SAFETY: non-blocking reap of one child this binary spawned.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        r == 0
    });
}

pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks the process exists.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // A killed daemon whose parent exited may linger as a zombie.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => true,
    }
}

pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

/// Create a replicated pool (`size` 3) with 8 PGs.
pub async fn pool_create(c: &ClusterClient, name: &str, min_size: u32) -> i64 {
    let r = bounded(
        &format!("create pool {name}"),
        c.monc().command(quarry_monc::MonCommand::PoolCreate {
            name: name.into(),
            pg_num: Some(8),
            size: Some(3),
            min_size: Some(min_size),
            application: Some("rbd".into()),
        }),
    )
    .await;
    match r {
        Ok(_) => {}
        // A command resent after its monitor session moved (the tests stop
        // and kill monitors) may find its first attempt applied: as with
        // Ceph's `osd pool create`, an existing pool is success.
        Err(quarry_monc::MonClientError::Remote {
            errno: quarry_common::Errno::EEXIST,
            ..
        }) => {}
        Err(e) => panic!("pool create: {e:?}"),
    }
    c.pool_lookup(name).await.expect("lookup")
}

/// Wait until every PG's recorded acting set equals its up set.
pub async fn wait_clean(c: &ClusterClient) {
    bounded("pgs active+clean", async {
        loop {
            if let Ok(map) = c.monc().refresh_map().await {
                let clean = map.pools.iter().all(|(&pool, def)| {
                    (0..def.pg_num).all(|seed| {
                        let pg = quarry_map::PgId { pool, seed };
                        let up = map.pg_up_set(pg).unwrap_or_default();
                        up.len() as u32 == def.size
                            && map.pg_history.get(&pg).is_some_and(|h| h.acting == up)
                    })
                });
                if clean {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// Fixed fsx seeds (CI must not be flaky), or the one in QUARRY_FSX_SEED.
pub fn fsx_seeds(fixed: &[u64]) -> Vec<u64> {
    match std::env::var("QUARRY_FSX_SEED") {
        Ok(s) => vec![s.parse().expect("QUARRY_FSX_SEED must be a number")],
        Err(_) => fixed.to_vec(),
    }
}

/// Panic with fsx's reproducible failure report.
pub fn fsx_ok<T>(r: Result<T, quarry_fsx::FsxFailure>) -> T {
    r.unwrap_or_else(|f| panic!("{f}"))
}
