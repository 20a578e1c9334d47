//! Several hosts on one machine: the test makes its own network namespaces
//! (one per "host", joined by a bridge that lives in a namespace of its
//! own, addresses only inside them), starts a monitor on one host and an
//! OSD on each of three others by hand (`quarry mon` / `quarry osd` with a
//! shared ceph.conf and keyring, as README "Several machines" shows), and
//! runs the fsx model test from a client host through them with failure
//! domain host. Mid-workload one OSD host's link is cut: I/O goes on after
//! the down grace with no error and no lost write; the link comes back,
//! that OSD catches up, and then serves every image and snapshot alone.
//!
//! Needs root (ip netns); prints "SKIPPED: ..." otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_fsx::{Fsx, FsxConfig};
use quarry_monc::MonCommand;
use quarry_rados::Rados;

const NET: &str = "10.77.0";
const MON_ADDR: &str = "10.77.0.10:6789";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// Namespaces and the daemons in them; dropping (also on panic) kills the
/// daemons and deletes the namespaces.
struct Hosts {
    tag: String,
    base: PathBuf,
    namespaces: Vec<String>,
    daemons: std::sync::Mutex<Vec<(String, Child)>>,
}

impl Hosts {
    /// `test`: a short name unique among the tests of this binary (cargo
    /// runs them in parallel threads of one process, so the pid alone
    /// would give both the same namespaces).
    fn new(base: &Path, test: &str) -> Hosts {
        remove_stale_namespaces();
        let tag = format!("qt{}{test}-", std::process::id());
        let mut h = Hosts {
            tag,
            base: base.to_path_buf(),
            namespaces: Vec::new(),
            daemons: Default::default(),
        };
        let br = h.add_ns("br");
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        std::fs::create_dir_all(base.join("log")).expect("log dir");
        h
    }

    fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.tag)
    }

    fn add_ns(&mut self, host: &str) -> String {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// A host with address 10.77.0.`n` on `eth0`, plugged into the bridge.
    fn add_host(&mut self, host: &str, n: u8) {
        let ns = self.add_ns(host);
        let br = self.ns("br");
        let port = format!("p{n}");
        ip(&[
            "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{NET}.{n}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(self.base.join(host)).expect("host dir");
    }

    /// A host's own directory (its /etc/ceph and data).
    fn dir(&self, host: &str) -> PathBuf {
        self.base.join(host)
    }

    /// Run `quarry ARGS` on `host` in the background.
    fn spawn(&self, host: &str, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.base.join("log").join(format!("{name}.log")))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), BIN])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start daemon");
        self.daemons
            .lock()
            .expect("daemons")
            .push((name.to_string(), child));
    }

    /// Run `quarry ARGS` on `host` and return its output.
    fn quarry(&self, host: &str, args: &[&str]) -> String {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns(host), BIN])
            .args(args))
    }

    /// Ask every daemon to log its state (OSDs dump their PGs on SIGUSR1).
    fn dump_daemons(&self) {
        for (name, child) in self.daemons.lock().expect("daemons").iter() {
            if name.starts_with("osd.") {
                // SAFETY: a signal to a daemon this test started (`ip netns
                // exec` execs it, so the child's pid is the daemon's).
                unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
            }
        }
    }

    fn kill9(&self, name: &str) {
        let mut daemons = self.daemons.lock().expect("daemons");
        let (_, child) = daemons.iter_mut().find(|(n, _)| n == name).expect("daemon");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Cut (`false`) or restore a host's link.
    fn link(&self, host: &str, up: bool) {
        let ns = self.ns(host);
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each host's sockets were doing (a stall shows as queued
            // bytes toward a peer), then the daemons' logs.
            for ns in &self.namespaces {
                if let Ok(out) = Command::new("ip")
                    .args(["netns", "exec", ns, "ss", "-tnpoi"])
                    .output()
                {
                    eprintln!("==== ss in {ns}\n{}", String::from_utf8_lossy(&out.stdout));
                }
            }
            if let Ok(keep) = std::env::var("QUARRY_TEST_KEEP_LOGS") {
                // The logs and each OSD's store (tens of MB), for offline
                // inspection of what every copy holds.
                for d in ["log", "osd0", "osd1", "osd2"] {
                    let _ = Command::new("cp")
                        .args(["-a", &self.base.join(d).display().to_string(), &keep])
                        .output();
                }
            }
            dump_logs(&self.base.join("log"));
        }
        let daemons = self.daemons.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, c) in daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Delete the namespaces of earlier runs that were killed before their
/// `Drop` ran (`qt<pid>...` whose process is gone): they keep bridges and
/// addresses around for nothing.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("qt") else {
            continue;
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Run `f` on a thread whose network namespace is `ns` (sockets made there
/// live in it), so this process is the client host.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn keyring_key(path: &Path, entity: &str) -> quarry_auth::Secret {
    let text = std::fs::read_to_string(path).expect("keyring");
    let section = text
        .split(&format!("[{entity}]"))
        .nth(1)
        .expect("entity in keyring");
    let key = section
        .lines()
        .find_map(|l| l.trim().strip_prefix("key = "))
        .expect("key");
    quarry_auth::Secret::from_base64(key.trim()).expect("key")
}

async fn wait_map(c: &ClusterClient, what: &str, f: impl Fn(&quarry_map::ClusterMap) -> bool) {
    bounded(what, async {
        loop {
            if let Ok(m) = c.monc().refresh_map().await {
                if f(&m) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// fsx making no progress this long is a stall: the test dumps the
/// client's and the daemons' state and fails. Longer than any pause the
/// cut may legitimately cause (down grace 3 s, then peering; an
/// unanswered lock request times out after 10 s). `QUARRY_TEST_STALL_SECS`
/// overrides it (a small value shows what the dump looks like).
fn stall() -> Duration {
    std::env::var("QUARRY_TEST_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(45), Duration::from_secs)
}
/// Bound on any one stage of the workload while fsx still progresses.
const STAGE: Duration = Duration::from_secs(300);

/// fsx's progress, updated by the task that runs it.
struct Progress {
    t0: Instant,
    done: AtomicU64,
    /// When the last op finished, in ms since `t0`.
    last_ms: AtomicU64,
    current: Arc<std::sync::Mutex<String>>,
    /// fsx's failure report, once it failed (the task has ended).
    failed: std::sync::Mutex<Option<String>>,
}

impl Progress {
    fn step(&self, done: u64) {
        self.done.store(done, Ordering::SeqCst);
        self.last_ms
            .store(self.t0.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Wait until `until` holds; fail with a state dump when fsx makes no
    /// progress for [`stall`], or when the stage takes longer than [`STAGE`].
    async fn wait(&self, c: &ClusterClient, hosts: &Hosts, what: &str, until: impl Fn() -> bool) {
        let start = Instant::now();
        while !until() {
            // A failed fsx makes no more progress: report why, not a stall.
            if let Some(f) = self.failed.lock().ok().and_then(|f| f.clone()) {
                // The OSDs' PG states (intervals, last updates) into their
                // logs, kept with QUARRY_TEST_KEEP_LOGS.
                hosts.dump_daemons();
                tokio::time::sleep(Duration::from_secs(1)).await;
                panic!("fsx failed while waiting for {what}: {f}");
            }
            let idle = self
                .t0
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::SeqCst)));
            if idle >= stall() || start.elapsed() >= STAGE {
                let current = self.current.lock().map(|s| s.clone()).unwrap_or_default();
                let done = self.done();
                eprintln!(
                    "==== fsx stalled at op {done} ({current}) for {:.1} s while waiting for {what}\n\
                     ==== client state\n{}",
                    idle.as_secs_f64(),
                    c.debug_dump()
                );
                // Whether the runtime still runs tasks (a worker blocked in
                // a system call or a lock would stall everything).
                let probe = tokio::time::timeout(Duration::from_secs(2), tokio::spawn(async {}));
                eprintln!(
                    "==== runtime runs a new task: {}",
                    if probe.await.is_ok() {
                        "yes"
                    } else {
                        "NO (workers blocked)"
                    }
                );
                // Every thread's stack, if gdb is installed (a blocked
                // worker shows where).
                if let Ok(out) = Command::new("timeout")
                    .args([
                        "60",
                        "gdb",
                        "-p",
                        &std::process::id().to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt 25",
                    ])
                    .output()
                {
                    eprintln!(
                        "==== threads of the test process\n{}",
                        String::from_utf8_lossy(&out.stdout)
                    );
                }
                hosts.dump_daemons();
                // Let the daemons write their dumps before the logs are shown.
                tokio::time::sleep(Duration::from_secs(1)).await;
                panic!(
                    "fsx made no progress for {:.0} s at op {} ({current}) while waiting for {what} \
                     (client and OSD state dumps above/in the daemon logs)",
                    idle.as_secs_f64(),
                    done
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[test]
fn three_osd_hosts_fsx() {
    several_hosts(false);
}

/// The cut host is down for the others, then returns. What this test
/// caught: a primary waiting for ever for the cut-off replica's ack;
/// requests queued on connections to the cut host delivered by TCP after
/// the link returned and applied as stale duplicates in a later interval
/// (reverting acknowledged writes); watches left on the old primary keeping
/// images busy after they were closed; guarded (compare-and-swap) writes
/// not deduplicated; and a returning primary whose log peering had reset
/// to empty, so it ran again a resend of an op the interim primary applied
/// but never answered (`snap create` → `EEXIST` just after the link came
/// back; now the recovered member's log is a copy of the authority's, op
/// ids included: `cluster::recovered_member_recognises_resends_of_ops_it_missed`);
/// and a backfilled member missing objects left only as snapshot clones
/// (the final cold verify of every snapshot on osd.1 alone).
/// A failure reports fsx's error; a stall (no progress for 45 s) dumps
/// client and OSD state first.
#[test]
fn three_osd_hosts_fsx_and_a_cut_link() {
    several_hosts(true);
}

fn several_hosts(cut: bool) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: needs root for ip netns");
        return;
    }
    // The client's and the image layer's log (lock hand-overs, watch
    // re-registration), shown with the output of a failing run.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .try_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();
    let mut hosts = Hosts::new(base, if cut { "c" } else { "f" });
    hosts.add_host("mon", 10);
    for n in 0..3u8 {
        hosts.add_host(&format!("osd{n}"), 11 + n);
    }
    hosts.add_host("cli", 20);

    // The shared keyring and ceph.conf (README "Several machines").
    let kr = base.join("keyring");
    let k = kr.to_str().expect("utf8");
    let authtool = |args: &[&str]| run(Command::new(BIN).arg("authtool").arg(k).args(args));
    authtool(&[
        "--create-keyring",
        "--gen-key",
        "-n",
        "mon.",
        "--cap",
        "mon",
        "allow *",
    ]);
    authtool(&[
        "--gen-key",
        "-n",
        "client.admin",
        "--cap",
        "mon",
        "allow *",
        "--cap",
        "osd",
        "allow *",
    ]);
    for n in 0..3 {
        authtool(&[
            "--gen-key",
            "-n",
            &format!("osd.{n}"),
            "--cap",
            "mon",
            "profile osd",
            "--cap",
            "osd",
            "allow *",
        ]);
    }
    let conf = format!(
        "[global]\n\
         \tfsid = 6c0a3e54-4d0b-4b9e-a1f1-6d3c2b9a7e10\n\
         \tmon_host = {MON_ADDR}\n\
         \tosd_crush_chooseleaf_type = 1\n\
         \tosd_pool_default_size = 3\n\
         \tosd_pool_default_min_size = 2\n\
         \tosd_heartbeat_interval = 1\n\
         \tosd_heartbeat_grace = 3\n\
         \n\
         [mon.a]\n\
         \tmon_addr = {MON_ADDR}\n"
    );
    // The monitor host gets the whole keyring, every other host only its
    // own section (its secret and nothing more).
    let ring = std::fs::read_to_string(&kr).expect("keyring");
    let section = |entity: &str| {
        let start = ring.find(&format!("[{entity}]")).expect("section");
        let end = ring[start + 1..]
            .find('[')
            .map_or(ring.len(), |i| start + 1 + i);
        ring[start..end].to_string()
    };
    for (h, entity) in [
        ("mon", None),
        ("osd0", Some("osd.0")),
        ("osd1", Some("osd.1")),
        ("osd2", Some("osd.2")),
        ("cli", Some("client.admin")),
    ] {
        std::fs::write(hosts.dir(h).join("ceph.conf"), &conf).expect("conf");
        let text = entity.map_or_else(|| ring.clone(), section);
        std::fs::write(hosts.dir(h).join("keyring"), text).expect("keyring");
    }

    // One daemon per host, started by hand.
    let d = |h: &str| hosts.dir(h).display().to_string();
    let mon_dir = d("mon");
    hosts.spawn("mon", "mon.a", &["mon", "--id", "a", "--dir", &mon_dir]);
    for n in 0..3u8 {
        let dir = d(&format!("osd{n}"));
        let bind = format!("{NET}.{}:6800", 11 + n);
        let host = format!("host{n}");
        let id = n.to_string();
        hosts.spawn(
            &format!("osd{n}"),
            &format!("osd.{n}"),
            &[
                "osd", "--id", &id, "--dir", &dir, "--bind", &bind, "--host", &host,
            ],
        );
    }
    let cli = d("cli");
    let cconf = format!("{cli}/ceph.conf");
    let ckr = format!("{cli}/keyring");
    let ceph = |args: &[&str]| {
        let mut v = vec!["ceph", "-c", &cconf, "-k", &ckr];
        v.extend_from_slice(args);
        hosts.quarry("cli", &v)
    };
    // The monitor may still be starting: retry the first command briefly.
    let mut tries = 0;
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &hosts.ns("cli"),
                BIN,
                "ceph",
                "-c",
                &cconf,
                "-k",
                &ckr,
            ])
            .args(["osd", "pool", "create", "fsx", "8"])
            .output()
            .expect("ceph");
        if out.status.success() {
            break;
        }
        tries += 1;
        assert!(
            tries < 60,
            "pool create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let admin = keyring_key(&hosts.dir("cli").join("keyring"), "client.admin");
    let cli_ns = hosts.ns("cli");

    in_netns(&cli_ns, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = bounded(
                "connect from the client host",
                ClusterClient::connect(
                    vec![MON_ADDR.to_string()],
                    "client.admin",
                    admin,
                    ClientTimeouts::default(),
                ),
            )
            .await
            .expect("connect");
            wait_map(&c, "3 OSDs up", |m| {
                m.osds.values().filter(|o| o.up).count() == 3
            })
            .await;
            let map = c.monc().refresh_map().await.expect("map");
            let pool = map.pool_by_name("fsx").expect("pool fsx").clone();
            assert_eq!(pool.failure_domain, quarry_map::FailureDomain::Host);
            for n in 0..3u32 {
                assert_eq!(map.osds[&n].host, format!("host{n}"));
                assert!(map.osds[&n].addr.starts_with(&format!("{NET}.{}:", 11 + n)));
            }
            wait_clean(&c).await;
            let tree = ceph(&["osd", "tree"]);
            for n in 0..3 {
                assert!(tree.contains(&format!("host{n}")), "{tree}");
            }

            let seed = fsx_seeds(&[41])[0];
            let rados: Arc<dyn Rados> = c.clone();
            let cfg = FsxConfig {
                seed,
                ops: 0,
                max_size: 2 << 20,
                ..FsxConfig::default()
            };
            let mut fsx = fsx_ok(Fsx::new(cfg, rados, "fsx").await);
            let progress = Arc::new(Progress {
                t0: Instant::now(),
                done: AtomicU64::new(0),
                last_ms: AtomicU64::new(0),
                current: fsx.current_op(),
                failed: Default::default(),
            });
            let p2 = progress.clone();
            const OPS: u64 = 500;
            let task = tokio::spawn(async move {
                while fsx.ops_done() < OPS {
                    if let Err(f) = fsx.ops(1).await {
                        if let Ok(mut slot) = p2.failed.lock() {
                            *slot = Some(f.to_string());
                        }
                        return Err(f);
                    }
                    p2.step(fsx.ops_done());
                }
                Ok::<_, quarry_fsx::FsxFailure>(fsx)
            });
            let reach = |n: u64| {
                let p = progress.clone();
                let (c, hosts) = (&c, &hosts);
                async move {
                    p.wait(c, hosts, &format!("fsx to reach op {n}"), || p.done() >= n)
                        .await
                }
            };
            let finish = |task: tokio::task::JoinHandle<_>| {
                let p = progress.clone();
                let (c, hosts) = (&c, &hosts);
                async move {
                    p.wait(c, hosts, "fsx to finish", || task.is_finished())
                        .await;
                    fsx_ok(task.await.expect("join"))
                }
            };
            reach(100).await;
            assert!(!task.is_finished(), "fsx ended early");
            if !cut {
                let mut fsx = finish(task).await;
                fsx_ok(fsx.verify().await);
                eprintln!("{:?}", fsx.report().counts);
                return;
            }
            hosts.link("osd1", false);
            eprintln!("cut osd1's link at op {}", progress.done());
            wait_map(&c, "osd.1 marked down", |m| !m.osds[&1].up).await;
            let at = progress.done();
            reach(at + 100).await;
            hosts.link("osd1", true);
            eprintln!("restored osd1's link at op {}", progress.done());
            wait_map(&c, "osd.1 up again", |m| m.osds[&1].up).await;
            let mut fsx = finish(task).await;
            fsx_ok(fsx.verify().await);
            eprintln!("{:?}", fsx.report().counts);
            wait_clean(&c).await;

            // osd.1 caught up: alone, it serves every image as the model has it.
            bounded(
                "min_size 1",
                c.monc().command(MonCommand::PoolSet {
                    name: "fsx".into(),
                    var: "min_size".into(),
                    val: "1".into(),
                }),
            )
            .await
            .expect("pool set");
            hosts.kill9("osd.0");
            hosts.kill9("osd.2");
            wait_map(&c, "osd.0 and osd.2 down", |m| {
                !m.osds[&0].up && !m.osds[&2].up
            })
            .await;
            fsx_ok(bounded("verify on osd.1 alone", fsx.verify()).await);
            // And every snapshot: objects whose head was removed after a
            // snapshot live on only as clones, and recovery must bring
            // those too (backfill once listed heads only).
            fsx_ok(
                bounded(
                    "cold verify of every snapshot on osd.1 alone",
                    fsx.verify_cold(),
                )
                .await,
            );
        });
    });
    drop(hosts);
}
