//! Monitor failures under a continuous write+verify workload: the only
//! monitor killed with -9 and restarted continues from its persisted state;
//! with three monitors the loss of one (the leader) changes nothing users
//! see, and the restarted one rejoins the quorum as a working voter.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_monc::{MonCommand, MonReply};
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados};

/// A writer that overwrites 16 objects in turn and reads one back after
/// every acknowledged write; any error or stale read fails the test.
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<BTreeMap<String, Vec<u8>>>,
}

async fn read_obj(c: &ClusterClient, pool: i64, name: &str) -> Vec<u8> {
    let req = OpRequest::new(ObjectId::new(pool, name)).op(Op::Read { off: 0, len: 0 });
    let r = bounded(&format!("read {name}"), c.operate(req))
        .await
        .unwrap_or_else(|e| panic!("read {name}: {e}"));
    match &r.outputs[0] {
        OpOutput::Data(d) => d.to_vec(),
        o => panic!("unexpected output {o:?}"),
    }
}

impl Workload {
    fn start(c: Arc<ClusterClient>, pool: i64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("w{}", n % 16);
                let val = format!("{key}:{n}:")
                    .repeat(1 + (n % 300) as usize)
                    .into_bytes();
                let req = OpRequest::new(ObjectId::new(pool, &key))
                    .op(Op::WriteFull(Bytes::from(val.clone())));
                bounded(&format!("write {key} #{n}"), c.operate(req))
                    .await
                    .unwrap_or_else(|e| panic!("write {key} #{n}: {e}"));
                model.insert(key, val);
                a.fetch_add(1, Ordering::SeqCst);
                let check = format!("w{}", (n * 7) % 16);
                if let Some(want) = model.get(&check) {
                    let got = read_obj(&c, pool, &check).await;
                    assert!(
                        got == *want,
                        "{check}: read an old or wrong value after write #{n}"
                    );
                }
            }
            model
        });
        Workload { stop, acked, task }
    }

    /// Wait for `n` more acknowledged writes (I/O is flowing).
    async fn progress(&self, what: &str, n: u64) {
        let start = self.acked.load(Ordering::SeqCst);
        bounded(&format!("{n} writes {what}"), async {
            while self.acked.load(Ordering::SeqCst) < start + n {
                assert!(!self.task.is_finished(), "the workload failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Stop; every acknowledged write must read back from `c`.
    async fn finish(self, c: &ClusterClient, pool: i64) {
        self.stop.store(true, Ordering::SeqCst);
        let model = bounded("workload stop", self.task).await.expect("workload");
        assert!(model.len() == 16);
        for (k, v) in &model {
            assert!(
                read_obj(c, pool, k).await == *v,
                "{k}: acknowledged write lost"
            );
        }
        eprintln!(
            "{} writes acknowledged and verified",
            self.acked.load(Ordering::SeqCst)
        );
    }
}

async fn command(c: &ClusterClient, cmd: MonCommand) -> MonReply {
    let what = format!("{cmd:?}");
    bounded(&what, c.monc().command(cmd))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn status(c: &ClusterClient) -> quarry_monc::ClusterStatus {
    match command(c, MonCommand::Status).await {
        MonReply::Status(s) => s,
        r => panic!("status: {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_monitor_killed_and_restarted_keeps_state() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_create(&c, "wl", 2).await;
    wait_clean(&c).await;
    // State that must survive: a user with its key and caps, pools, epoch.
    let key = match command(
        &c,
        MonCommand::AuthGetOrCreate {
            entity: "client.persist".into(),
            caps: vec![
                ("mon".into(), "profile rbd".into()),
                ("osd".into(), "profile rbd pool=wl".into()),
            ],
        },
    )
    .await
    {
        MonReply::Auth(e) => e[0].key.clone(),
        r => panic!("auth get-or-create: {r:?}"),
    };
    let epoch0 = c.monc().refresh_map().await.expect("map").epoch;

    let wl = Workload::start(c.clone(), pool);
    wl.progress("before the kill", 30).await;
    cl.kill9("mon.a");
    // Object I/O does not need the monitor.
    wl.progress("without a monitor", 30).await;
    cl.run_up(None); // restarts mon.a on its data
    wl.progress("after the restart", 30).await;

    let c2 = cl.client().await;
    let map = c2.monc().refresh_map().await.expect("map");
    assert!(
        map.epoch >= epoch0,
        "epoch went back: {} < {epoch0}",
        map.epoch
    );
    for p in ["rbd", "data", "wl"] {
        assert!(map.pool_by_name(p).is_some(), "pool {p} lost");
    }
    let user = bounded(
        "connect as client.persist",
        ClusterClient::connect(
            cl.mon_addrs(),
            "client.persist",
            quarry_auth::Secret::from_base64(&key).expect("key"),
            ClientTimeouts::default(),
        ),
    )
    .await
    .expect("the user created before the crash can connect");
    assert_eq!(user.pool_lookup("wl").await.expect("lookup"), pool);
    assert!(!read_obj(&user, pool, "w1").await.is_empty());
    // The restarted monitor makes map changes.
    pool_create(&c2, "after", 2).await;
    assert!(c2.monc().refresh_map().await.expect("map").epoch > map.epoch);
    wl.finish(&c2, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_monitors_survive_the_leader_and_rejoin() {
    let cl = Cluster::up(3, 3);
    let c = cl.client().await;
    let pool = pool_create(&c, "wl", 2).await;
    wait_clean(&c).await;
    let st = status(&c).await;
    assert_eq!(st.quorum.len(), 3, "{st:?}");
    let leader = st.leader.clone().expect("a leader");
    eprintln!("leader: mon.{leader}");

    let wl = Workload::start(c.clone(), pool);
    wl.progress("before the kill", 30).await;
    cl.kill9(&format!("mon.{leader}"));
    wl.progress("after killing the leader", 30).await;
    // Map changes still succeed (a new leader is elected).
    pool_create(&c, "after-kill", 2).await;
    command(&c, MonCommand::OsdOut { id: 2 }).await;
    let m = c.monc().refresh_map().await.expect("map");
    assert!(!m.osds[&2].in_cluster, "osd.2 not marked out");
    command(&c, MonCommand::OsdIn { id: 2 }).await;
    let m = c.monc().refresh_map().await.expect("map");
    assert!(m.osds[&2].in_cluster, "osd.2 not marked in");
    let st = status(&c).await;
    assert!(st.leader.as_deref().is_some_and(|l| l != leader), "{st:?}");
    wl.progress("with two monitors", 30).await;

    // Restart it: it rejoins the quorum.
    cl.run_up(None);
    bounded("the restarted monitor rejoins the quorum", async {
        loop {
            let st = status(&c).await;
            if st.quorum.len() == 3 && st.quorum.contains(&leader) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // It is a working voter: kill another monitor, and the restarted one
    // and the last one still form a majority that makes map changes.
    let other = ["a", "b", "c"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("another monitor");
    cl.kill9(&format!("mon.{other}"));
    pool_create(&c, "after-rejoin", 2).await;
    wl.progress("after the rejoin", 30).await;
    let c2 = cl.client().await;
    assert!(c2.pool_lookup("after-kill").await.is_ok());
    wl.finish(&c2, pool).await;
}

/// Resumes a stopped daemon when dropped (also when the test fails).
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: signal to a daemon this test started and stopped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The monitor addresses a daemon has established TCP connections to
/// (from /proc: its socket inodes matched against /proc/net/tcp).
fn mon_conns(cl: &Cluster, daemon: &str) -> Vec<String> {
    let pid = cl.pid(daemon);
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mons = cl.mon_addrs();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut found = Vec::new();
    for l in tcp.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "01" || !inodes.contains(f[9]) {
            continue;
        }
        let Some(port) = f[2]
            .split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let Some(m) = mons.iter().find(|m| m.ends_with(&format!(":{port}"))) {
            found.push(m.clone());
        }
    }
    found
}

/// The monitor (`mon.X`) whose `mon_addr` is `addr`.
fn mon_at(cl: &Cluster, addr: &str) -> String {
    let conf = std::fs::read_to_string(cl.path().join("ceph.conf")).expect("conf");
    let mut section = "";
    for l in conf.lines().map(str::trim) {
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']');
        } else if let Some((k, v)) = l.split_once('=') {
            if k.trim() == "mon_addr" && v.trim() == addr {
                return section.to_string();
            }
        }
    }
    panic!("no monitor at {addr} in ceph.conf");
}

/// A monitor that goes silent without closing its connections (stopped
/// with SIGSTOP, as a cut link: TCP never resets) is noticed by the OSD's
/// monitor session through its keepalive pings (`mon_client_ping_*`), and
/// the OSD moves to another monitor long before a request would time out
/// (30 s); the cluster keeps working, and again once the monitor resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osd_leaves_a_silent_monitor() {
    let cl = Cluster::up_with(
        3,
        3,
        &["mon_client_ping_interval=1", "mon_client_ping_timeout=3"],
    );
    let c = cl.client().await;
    let pool = pool_create(&c, "silent", 2).await;
    wait_clean(&c).await;
    let now = mon_conns(&cl, "osd.0");
    assert_eq!(now.len(), 1, "osd.0 has one monitor session: {now:?}");
    let addr = now[0].clone();
    let mon = mon_at(&cl, &addr);
    eprintln!("osd.0 is connected to {mon} ({addr}); stopping it");
    let pid = cl.pid(&mon);
    // SAFETY: signal to a daemon this test started (resumed by `Resume`).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let resume = Resume(pid);
    // Bounded well under the 30 s a request to the silent monitor would
    // take to time out (how a silent monitor was noticed before).
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let now = mon_conns(&cl, "osd.0");
            if !now.is_empty() && !now.contains(&addr) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("osd.0 must leave the silent {mon} for another monitor"));
    let log = std::fs::read_to_string(cl.path().join("log").join("osd.0.log")).expect("log");
    assert!(
        log.contains(&format!("monitor {addr} did not answer a ping")),
        "osd.0 must say why it left {mon}"
    );
    // The cluster works meanwhile: I/O, and a map change through the two
    // monitors left (a new leader if the stopped one led).
    let obj = |v: &'static [u8]| {
        OpRequest::new(ObjectId::new(pool, "obj")).op(Op::WriteFull(Bytes::from_static(v)))
    };
    bounded("write", c.operate(obj(b"one")))
        .await
        .expect("write");
    assert_eq!(read_obj(&c, pool, "obj").await, b"one");
    pool_create(&c, "silent2", 2).await;
    drop(resume);
    bounded("write", c.operate(obj(b"two")))
        .await
        .expect("write");
    assert_eq!(read_obj(&c, pool, "obj").await, b"two");
    let st = bounded("quorum of three again", async {
        loop {
            let st = status(&c).await;
            if st.quorum.len() == 3 {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(st
        .quorum
        .contains(&mon.trim_start_matches("mon.").to_string()));
}
