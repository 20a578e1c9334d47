//! End-to-end cluster tests: the real `quarry` binary starts separate
//! daemon processes on 127.0.0.1 (`quarry up`), and the networked client
//! drives them. Timeouts are generous bounds so a bug fails instead of
//! hanging; nothing asserts on timings.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados, SnapContext};

mod common;

use common::{bounded, pid_alive, reap, wait_exit, Cluster, BIN};

async fn write(c: &ClusterClient, pool: i64, name: &str, data: &[u8]) {
    let req =
        OpRequest::new(ObjectId::new(pool, name)).op(Op::WriteFull(Bytes::copy_from_slice(data)));
    bounded(&format!("write {name}"), c.operate(req))
        .await
        .expect("write");
}

async fn read(c: &ClusterClient, pool: i64, name: &str) -> Vec<u8> {
    let req = OpRequest::new(ObjectId::new(pool, name)).op(Op::Read { off: 0, len: 0 });
    let r = bounded(&format!("read {name}"), c.operate(req))
        .await
        .expect("read");
    match &r.outputs[0] {
        OpOutput::Data(d) => d.to_vec(),
        o => panic!("unexpected output {o:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_semantics_over_the_network() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("rbd pool");
    assert!(c.pool_lookup("data").await.is_ok());

    // A client's first ops, all at once: one connection per OSD serves
    // them (concurrent connects to one OSD used to replace each other and
    // fail the ops in flight on the replaced one, which paused and resent).
    let names: Vec<String> = (0..48).map(|i| format!("first-{i}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for n in &names {
        let (c, n) = (c.clone(), n.clone());
        tasks.spawn(async move { write(&c, pool, &n, n.as_bytes()).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("concurrent first write");
    }
    let map = c.monc().map();
    let primaries: std::collections::BTreeSet<_> = names
        .iter()
        .map(|n| {
            let pg = map.object_pg(pool, "", n).expect("pg");
            map.pg_primary(pg).expect("primary").expect("up")
        })
        .collect();
    assert_eq!(
        c.connections_made(),
        primaries.len() as u64,
        "one connection per OSD for concurrent first ops:\n{}",
        c.debug_dump()
    );
    for n in &names {
        assert_eq!(read(&c, pool, n).await, n.as_bytes());
    }

    // Compound op, sparse data, version asserts.
    let oid = ObjectId::new(pool, "obj");
    let r = c
        .operate(
            OpRequest::new(oid.clone())
                .op(Op::Write {
                    off: 8192,
                    data: Bytes::from_static(b"hello"),
                })
                .op(Op::SetXattr("k".into(), Bytes::from_static(b"v"))),
        )
        .await
        .expect("write");
    let v1 = r.version;
    assert!(v1 > 0);
    let r = c
        .operate(
            OpRequest::new(oid.clone())
                .op(Op::Stat)
                .op(Op::SparseRead { off: 0, len: 0 })
                .op(Op::GetXattr("k".into())),
        )
        .await
        .expect("read");
    match &r.outputs[..] {
        [OpOutput::Stat(s), OpOutput::Sparse(ext, d), OpOutput::Data(x)] => {
            assert_eq!(s.size, 8197);
            assert_eq!(ext, &vec![(8192, 5)]);
            assert_eq!(&d[..], b"hello");
            assert_eq!(&x[..], b"v");
        }
        o => panic!("unexpected {o:?}"),
    }
    let e = c
        .operate(
            OpRequest::new(oid.clone())
                .op(Op::AssertVersion(v1 + 100))
                .op(Op::WriteFull(Bytes::from_static(b"x"))),
        )
        .await
        .expect_err("version assert");
    assert_eq!(e.errno, quarry_common::Errno::ERANGE);
    // Atomic: the failed request applied nothing.
    assert_eq!(read(&c, pool, "obj").await.len(), 8197);
    let e = c
        .operate(OpRequest::new(ObjectId::new(pool, "absent")).op(Op::Stat))
        .await
        .expect_err("absent");
    assert_eq!(e.errno, quarry_common::Errno::ENOENT);

    // Snapshots: clone on first write after a snap, read at the snap.
    write(&c, pool, "snapobj", b"before").await;
    let s1 = c.snap_create(pool).await.expect("snap");
    c.operate(
        OpRequest::new(ObjectId::new(pool, "snapobj"))
            .with_snapc(SnapContext {
                seq: s1,
                snaps: vec![s1],
            })
            .op(Op::WriteFull(Bytes::from_static(b"after"))),
    )
    .await
    .expect("write after snap");
    assert_eq!(read(&c, pool, "snapobj").await, b"after");
    let r = c
        .operate(
            OpRequest::new(ObjectId::new(pool, "snapobj"))
                .at_snap(s1)
                .op(Op::Read { off: 0, len: 0 }),
        )
        .await
        .expect("read at snap");
    assert_eq!(r.outputs[0], OpOutput::Data(Bytes::from_static(b"before")));
    c.snap_remove(pool, s1).await.expect("snap remove");

    // Listing spans every PG.
    for i in 0..20 {
        write(&c, pool, &format!("list.{i}"), b"x").await;
    }
    let names = c.list_objects(pool, None).await.expect("list");
    assert_eq!(
        names.iter().filter(|e| e.name.starts_with("list.")).count(),
        20
    );
    let st = c.pool_stat(pool).await.expect("stat");
    assert!(st.num_objects >= 22);

    // Watches live with the client.
    let cookie = c.watch(&oid).await.expect("watch");
    let w = c.list_watchers(&oid).await.expect("watchers");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].cookie, cookie);
    let other = cl.client().await;
    assert_eq!(other.list_watchers(&oid).await.expect("watchers").len(), 1);
    c.unwatch(&oid, cookie).await.expect("unwatch");
    assert!(other.list_watchers(&oid).await.expect("w").is_empty());
    assert!(c.watch(&ObjectId::new(pool, "absent")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_blocking_and_catch_up() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("pool");
    for i in 0..30 {
        write(&c, pool, &format!("o{i}"), format!("v1-{i}").as_bytes()).await;
    }
    // kill -9 one OSD: I/O continues once it is marked down.
    cl.kill9("osd.2");
    for i in 0..30 {
        write(&c, pool, &format!("o{i}"), format!("v2-{i}").as_bytes()).await;
    }
    for i in 0..30 {
        assert_eq!(
            read(&c, pool, &format!("o{i}")).await,
            format!("v2-{i}").as_bytes()
        );
    }
    // Two of three down: I/O blocks (no error) until one comes back.
    cl.kill9("osd.1");
    let c2 = c.clone();
    let pending = tokio::spawn(async move {
        let req = OpRequest::new(ObjectId::new(pool, "o0"))
            .op(Op::WriteFull(Bytes::from_static(b"v3-0")));
        c2.operate(req).await
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!pending.is_finished(), "I/O must block with 1 of 3 OSDs up");
    // `quarry up` restarts the dead daemons on the same data.
    cl.run_up(None);
    bounded("blocked write", pending)
        .await
        .expect("join")
        .expect("write resumed");
    assert_eq!(read(&c, pool, "o0").await, b"v3-0");
    for i in 1..30 {
        assert_eq!(
            read(&c, pool, &format!("o{i}")).await,
            format!("v2-{i}").as_bytes()
        );
    }
    // The restarted OSDs caught up: kill the one that never died and the
    // rest still serve every acknowledged write.
    cl.kill9("osd.0");
    for i in 1..30 {
        assert_eq!(
            read(&c, pool, &format!("o{i}")).await,
            format!("v2-{i}").as_bytes()
        );
    }
    assert_eq!(read(&c, pool, "o0").await, b"v3-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_twice_keeps_data_and_down_stops_everything() {
    let cl = Cluster::up(2, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("data").await.expect("pool");
    write(&c, pool, "keep", b"durable").await;
    drop(c);
    let out = Command::new(BIN)
        .args(["down", "--dir"])
        .arg(cl.path())
        .output()
        .expect("down");
    assert!(out.status.success());
    reap();
    let pids: Vec<PathBuf> = std::fs::read_dir(cl.path().join("run"))
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(pids.is_empty(), "pid files left: {pids:?}");
    cl.run_up(None);
    let c = cl.client().await;
    assert_eq!(read(&c, pool, "keep").await, b"durable");
    for name in ["mon.a", "osd.0", "osd.1"] {
        assert!(pid_alive(cl.pid(name)), "{name} not running");
    }
    let mode = std::fs::metadata(cl.path().join("ceph.client.admin.keyring"))
        .expect("keyring")
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    let env = std::fs::read_to_string(cl.path().join("env")).expect("env");
    assert!(env.contains("CEPH_CONF="));
    assert!(env.contains("LD_LIBRARY_PATH="));

    // `--osds` on an existing cluster adds OSDs (never removes one), and a
    // purged OSD's leftover directory does not stop the next `up`.
    let up = |osds: Option<u32>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("up").arg("--dir").arg(cl.path());
        if let Some(n) = osds {
            cmd.args(["--osds", &n.to_string()]);
        }
        let o = cmd.output().expect("run quarry up");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (rc, err) = up(Some(3));
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("added osd.2"), "{err}");
    assert!(pid_alive(cl.pid("osd.2")), "osd.2 not running");
    wait_osd_up(&c, 2).await;
    let kr = cl.path().join("keyring");
    assert_eq!(
        std::fs::metadata(&kr)
            .expect("keyring")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&kr)
        .expect("keyring")
        .contains("[osd.2]"));
    let (rc, err) = up(Some(1));
    assert_ne!(rc, 0);
    assert!(err.contains("would not remove any"), "{err}");
    assert!(pid_alive(cl.pid("osd.2")), "a refused up stopped osd.2");
    cl.kill9("osd.2");
    wait_osd_down(&c, 2).await;
    let (rc, _, err) = ceph(&cl, &["osd", "purge", "2", "--yes-i-really-mean-it"]);
    assert_eq!(rc, 0, "{err}");
    let (rc, err) = up(None);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("osd.2 is not started"), "{err}");
    assert_eq!(read(&c, pool, "keep").await, b"durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_refused_and_bad_frames_dropped() {
    let cl = Cluster::up(1, 1);
    let wrong = quarry_auth::Secret::generate(0);
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        ClusterClient::connect(
            cl.mon_addrs(),
            "client.admin",
            wrong,
            ClientTimeouts::default(),
        ),
    )
    .await
    .expect("refusal must be immediate, not a hang");
    let e = r.expect_err("wrong key accepted");
    assert!(
        matches!(
            e.errno,
            quarry_common::Errno::EACCES | quarry_common::Errno::EPERM
        ),
        "{e}"
    );

    // Garbage and truncated frames to the OSD: the connection is dropped,
    // the daemon keeps serving.
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("pool");
    write(&c, pool, "alive", b"1").await;
    let osd_addr = {
        let map = c.monc().refresh_map().await.expect("map");
        map.osds[&0].addr.clone()
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for junk in [
        vec![0u8; 100],
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        vec![0xff; 36],
        b"QRY1".to_vec(),
    ] {
        let mut s = tokio::net::TcpStream::connect(&osd_addr)
            .await
            .expect("connect");
        let _ = s.write_all(&junk).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    }
    // An unauthenticated request frame is refused too.
    let mut s = tokio::net::TcpStream::connect(&osd_addr)
        .await
        .expect("connect");
    let f = quarry_proto::Frame::new(
        quarry_client::wire::K_REQUEST,
        1,
        &quarry_client::wire::Request::PgObjects {
            pg: quarry_map::PgId { pool, seed: 0 },
        },
        Bytes::new(),
    )
    .expect("frame");
    quarry_proto::write_frame(&mut s, &f).await.expect("send");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty(), "unauthenticated request was answered");
    assert_eq!(read(&c, pool, "alive").await, b"1");
    assert!(pid_alive(cl.pid("osd.0")));
}

/// Wait until the map says `osd` is up (`up`), else down or gone.
async fn wait_osd(c: &ClusterClient, osd: u32, up: bool) {
    let what = format!("osd.{osd} {}", if up { "up" } else { "down" });
    bounded(&what, async {
        loop {
            let map = c.monc().refresh_map().await.expect("map");
            if map.osds.get(&osd).is_some_and(|o| o.up) == up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// Wait until the map says `osd` is up.
async fn wait_osd_up(c: &ClusterClient, osd: u32) {
    wait_osd(c, osd, true).await
}

/// Wait until the map says `osd` is down or has no entry for it.
async fn wait_osd_down(c: &ClusterClient, osd: u32) {
    wait_osd(c, osd, false).await
}

/// Wait until every PG's recorded acting set equals its up set.
async fn wait_clean(c: &ClusterClient) {
    bounded("pgs active", async {
        loop {
            let map = c.monc().refresh_map().await.expect("map");
            let clean = map.pools.iter().all(|(&pool, def)| {
                (0..def.pg_num).all(|seed| {
                    let pg = quarry_map::PgId { pool, seed };
                    let up = map.pg_up_set(pg).unwrap_or_default();
                    !up.is_empty() && map.pg_history.get(&pg).is_some_and(|h| h.acting == up)
                })
            });
            if clean {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

async fn pool_min1(c: &ClusterClient, name: &str) -> i64 {
    c.monc()
        .command(quarry_monc::MonCommand::PoolCreate {
            name: name.into(),
            pg_num: Some(8),
            size: Some(3),
            min_size: Some(1),
            application: Some("rbd".into()),
        })
        .await
        .expect("pool create");
    c.pool_lookup(name).await.expect("lookup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_out_rereplicates_to_another_osd() {
    let cl = Cluster::up(4, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    for i in 0..40 {
        write(&c, pool, &format!("m{i}"), format!("val-{i}").as_bytes()).await;
    }
    cl.kill9("osd.3");
    c.monc()
        .command(quarry_monc::MonCommand::OsdOut { id: 3 })
        .await
        .expect("osd out");
    wait_clean(&c).await;
    // Every PG now lives on osd.0-2; kill two of them: the survivor must
    // hold every object (for most PGs it received them by backfill).
    cl.kill9("osd.0");
    cl.kill9("osd.1");
    for i in 0..40 {
        assert_eq!(
            read(&c, pool, &format!("m{i}")).await,
            format!("val-{i}").as_bytes()
        );
    }
}

/// Whether the monitors' map has an entry for `osd`.
async fn in_map(c: &ClusterClient, osd: u32) -> bool {
    let map = c.monc().refresh_map().await.expect("map");
    map.osds.contains_key(&osd)
}

/// Start `osd.n` and check it exits at start, its log saying `why`.
fn refused_at_start(cl: &Cluster, n: u32, why: &str) {
    cl.start_osd(n);
    wait_exit(
        cl.pid(&format!("osd.{n}")),
        &format!("osd.{n} kept running"),
    );
    let log =
        std::fs::read_to_string(cl.path().join("log").join(format!("osd.{n}.log"))).expect("log");
    assert!(log.contains(why), "osd.{n}'s refusal is not '{why}': {log}");
}

/// An operator drains an OSD with `ceph osd crush reweight osd.3 0`, then
/// takes it out of the cluster for good: `osd rm` refuses while it is up,
/// a removed OSD that still has its key boots back in, and `osd purge`
/// deletes the key too, after which it cannot join. The data stays whole
/// on the others (one survivor serves every object at the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crush_reweight_drains_an_osd_and_purge_removes_it() {
    let cl = Cluster::up(4, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    for i in 0..40 {
        write(&c, pool, &format!("w{i}"), format!("val-{i}").as_bytes()).await;
    }
    let holds = |map: &quarry_map::ClusterMap, osd| {
        map.pool_pgs(pool)
            .expect("pgs")
            .into_iter()
            .filter(|&pg| map.pg_up_set(pg).expect("up").contains(&osd))
            .count()
    };
    let map = c.monc().refresh_map().await.expect("map");
    assert!(
        holds(&map, 3) > 0,
        "osd.3 holds no PG of 8 with size 3 of 4"
    );
    // Before the drain: stopping osd.3 keeps every PG active (min_size 1),
    // destroying it would lose copies.
    let (rc, out, err) = ceph(&cl, &["osd", "ok-to-stop", "3"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("OSD(s) 3 are ok to stop"), "{out}");
    let (rc, _, err) = ceph(&cl, &["osd", "safe-to-destroy", "osd.3"]);
    assert_eq!(rc, Errno::EBUSY.code(), "{err}");
    assert!(err.contains("pgs currently mapped"), "{err}");
    let (rc, _, err) = ceph(&cl, &["osd", "ok-to-stop", "0", "1", "2", "3"]);
    assert_eq!(rc, Errno::EBUSY.code(), "stopping every OSD is ok? {err}");
    let (rc, _, err) = ceph(&cl, &["osd", "safe-to-destroy", "9"]);
    assert_eq!(rc, Errno::ENOENT.code(), "{err}");

    let (rc, _, err) = ceph(&cl, &["osd", "crush", "reweight", "osd.3", "0"]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        err.contains("reweighted item id 3 name 'osd.3' to 0"),
        "{err}"
    );
    for bad in ["-1", "65536", "x", "nan"] {
        let (rc, _, err) = ceph(&cl, &["osd", "crush", "reweight", "osd.3", bad]);
        assert_ne!(rc, 0, "weight {bad} accepted");
        assert!(
            err.contains("invalid") || err.contains("unexpected"),
            "{bad}: {err}"
        );
    }
    let (rc, _, err) = ceph(&cl, &["osd", "crush", "reweight", "osd.9", "1"]);
    assert_eq!(rc, Errno::ENOENT.code(), "{err}");
    // Ceph's override weight is refused, saying what to use.
    let (rc, _, err) = ceph(&cl, &["osd", "reweight", "2", "0.5"]);
    assert_eq!(rc, Errno::EOPNOTSUPP.code(), "{err}");
    assert!(err.contains("ceph osd crush reweight osd.2"), "{err}");
    let tree = wait_ceph(&cl, &["osd", "tree"], |o| o.contains("osd.3"));
    let row = tree
        .lines()
        .find(|l| l.contains("osd.3"))
        .expect("osd.3 row");
    assert!(row.contains("0.00000"), "tree shows the weight: {row}");
    wait_clean(&c).await;
    let map = c.monc().refresh_map().await.expect("map");
    assert_eq!(holds(&map, 3), 0, "osd.3 still maps PGs at weight 0");
    assert!(map.osds[&3].up && map.osds[&3].in_cluster);
    // Drained: nothing maps to it and every PG is clean without it.
    let (rc, out, err) = ceph(&cl, &["osd", "safe-to-destroy", "3"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("are safe to destroy"), "{out}");
    let (rc, _, err) = ceph(&cl, &["osd", "ok-to-stop", "0", "1", "2"]);
    assert_eq!(rc, Errno::EBUSY.code(), "{err}");

    // Removal: refused while up, and nothing changes.
    let (rc, _, err) = ceph(&cl, &["osd", "rm", "3"]);
    assert_eq!(rc, Errno::EBUSY.code(), "{err}");
    assert!(err.contains("still up"), "{err}");
    cl.kill9("osd.3");
    wait_osd_down(&c, 3).await;
    // `rm` keeps the key: the OSD boots back in, as a new OSD.
    let (rc, _, err) = ceph(&cl, &["osd", "rm", "osd.3"]);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("removed osd.3"), "{err}");
    assert!(!in_map(&c, 3).await);
    // Its conf decides the weight it comes back with: an
    // `osd_crush_initial_weight` out of range stops it at start (one that
    // is no number at all is skipped with a warning, as every malformed
    // option of the file), a good one is its weight.
    cl.append_conf("[osd.3]\n\tosd_crush_initial_weight = 70000\n");
    refused_at_start(&cl, 3, "osd_crush_initial_weight = 70000: not a weight");
    assert!(!in_map(&c, 3).await);
    let conf = cl.path().join("ceph.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(&conf, text.replace("= 70000", "= 0.5")).expect("conf");
    cl.start_osd(3);
    wait_osd_up(&c, 3).await;
    let map = c.monc().refresh_map().await.expect("map");
    assert_eq!(map.osds[&3].weight, quarry_map::WEIGHT_ONE / 2);
    wait_clean(&c).await;
    cl.kill9("osd.3");
    wait_osd_down(&c, 3).await;
    // `purge` asks for confirmation, then deletes the key as well.
    let (rc, _, err) = ceph(&cl, &["osd", "purge", "3"]);
    assert_eq!(rc, Errno::EPERM.code(), "{err}");
    assert!(in_map(&c, 3).await);
    let (rc, _, err) = ceph(&cl, &["osd", "purge", "3", "--yes-i-really-mean-it"]);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("purged osd.3"), "{err}");
    let (rc, _, err) = ceph(&cl, &["auth", "get", "osd.3"]);
    assert_eq!(
        rc,
        Errno::ENOENT.code(),
        "osd.3's key survived the purge: {err}"
    );
    let (rc, out, _) = ceph(&cl, &["osd", "ls"]);
    assert_eq!(rc, 0);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"]);
    // A purged OSD cannot come back: its daemon is refused and exits.
    refused_at_start(&cl, 3, "authentication error");
    assert!(!in_map(&c, 3).await);
    wait_clean(&c).await;
    wait_ceph(&cl, &["health"], |o| o.starts_with("HEALTH_OK"));
    cl.kill9("osd.0");
    cl.kill9("osd.1");
    for i in 0..40 {
        assert_eq!(
            read(&c, pool, &format!("w{i}")).await,
            format!("val-{i}").as_bytes()
        );
    }
}

/// Every OSD that held a PG's newest data is gone for good: the PG waits
/// (reads block, never return stale data) and the OSD cannot be removed,
/// until the operator declares it lost; then the PG goes on with the
/// newest copies left (the writes only the lost OSD had are gone, as the
/// operator accepted) and the OSD may be purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osd_lost_lets_pgs_waiting_for_a_dead_osd_go_on() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    for i in 0..8 {
        write(&c, pool, &format!("o{i}"), b"before").await;
    }
    cl.kill9("osd.0");
    cl.kill9("osd.1");
    wait_osd_down(&c, 0).await;
    wait_osd_down(&c, 1).await;
    // osd.2 alone (min_size 1) takes the newer writes.
    for i in 0..8 {
        write(&c, pool, &format!("o{i}"), b"only on osd.2").await;
    }
    cl.kill9("osd.2");
    wait_osd_down(&c, 2).await;
    cl.start_osd(0);
    cl.start_osd(1);
    wait_osd_up(&c, 0).await;
    wait_osd_up(&c, 1).await;
    // The PGs wait for osd.2: a read blocks rather than return "before".
    let req = OpRequest::new(ObjectId::new(pool, "o0")).op(Op::Read { off: 0, len: 0 });
    assert!(
        tokio::time::timeout(Duration::from_secs(3), c.operate(req))
            .await
            .is_err(),
        "a PG whose newest copy is on a down OSD served a read"
    );
    // The operator sees why: the PGs are down, waiting for osd.2.
    let detail = wait_ceph(&cl, &["health", "detail"], |o| {
        o.contains("waiting for [2]")
    });
    assert!(
        detail.contains("pg ")
            && detail.contains("is down, waiting for [2]")
            && detail.contains("ceph osd lost"),
        "{detail}"
    );
    let (_, status, _) = ceph(&cl, &["-s"]);
    // Pool t's 8 PGs were all last active on osd.2 alone.
    assert!(
        status
            .lines()
            .any(|l| l.trim().trim_start_matches("pgs:").trim() == "8 down"),
        "ceph -s does not show 8 down PGs: {status}"
    );
    let (rc, _, err) = ceph(&cl, &["osd", "purge", "2", "--yes-i-really-mean-it"]);
    assert_eq!(rc, Errno::EBUSY.code(), "{err}");
    assert!(err.contains("ceph osd lost"), "{err}");
    let (rc, _, err) = ceph(&cl, &["osd", "lost", "2"]);
    assert_eq!(rc, Errno::EPERM.code(), "{err}");
    let (rc, _, err) = ceph(&cl, &["osd", "lost", "2", "--yes-i-really-mean-it"]);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("marked osd lost in epoch"), "{err}");
    for i in 0..8 {
        assert_eq!(read(&c, pool, &format!("o{i}")).await, b"before");
    }
    let (_, detail, _) = ceph(&cl, &["health", "detail"]);
    assert!(!detail.contains("waiting for"), "{detail}");
    let (rc, _, err) = ceph(&cl, &["osd", "purge", "2", "--yes-i-really-mean-it"]);
    assert_eq!(rc, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_copy_is_detected_and_repaired() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    // An object whose primary is osd.0.
    let map = c.monc().refresh_map().await.expect("map");
    let name = (0..1000)
        .map(|i| format!("victim{i}"))
        .find(|n| {
            let pg = map.object_pg(pool, "", n).expect("pg");
            map.pg_primary(pg).expect("primary") == Some(0)
        })
        .expect("an object on osd.0");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    write(&c, pool, &name, &pattern).await;
    // A clean stop (SIGTERM): the engine opens without a recovery scan, so
    // only Quarry's own block checksums can notice the flip.
    cl.term("osd.0");
    // Flip one byte in every copy of the block in osd.0's data log.
    let hits = flip_in_log(&cl, "osd.0", &pattern);
    assert!(hits > 0, "pattern not found in the store's data log");
    eprintln!("flipped {hits} copies");
    cl.run_up(None);
    wait_clean(&c).await;
    assert_eq!(read(&c, pool, &name).await, pattern, "read after repair");
    let log = std::fs::read_to_string(cl.path().join("log").join("osd.0.log")).expect("log");
    assert!(
        log.contains("repairing from a replica"),
        "osd.0 did not detect the corruption"
    );
    // The repaired copy serves alone too.
    cl.kill9("osd.1");
    cl.kill9("osd.2");
    assert_eq!(read(&c, pool, &name).await, pattern);
}

/// Flip one byte in every copy of `pattern` in `osd`'s data log (the OSD
/// is stopped); returns how many copies were hit.
fn flip_in_log(cl: &Cluster, osd: &str, pattern: &[u8]) -> usize {
    let mut hits = 0;
    let log_dir = cl.path().join(osd).join("log");
    for e in std::fs::read_dir(&log_dir).expect("store log dir") {
        let file = e.expect("dir entry").path();
        let mut bytes = std::fs::read(&file).expect("store segment");
        let before = hits;
        let mut i = 0;
        while i + pattern.len() <= bytes.len() {
            if bytes[i..i + pattern.len()] == pattern[..] {
                bytes[i + 100] ^= 0xff;
                hits += 1;
                i += pattern.len();
            } else {
                i += 1;
            }
        }
        if hits > before {
            std::fs::write(&file, &bytes).expect("write store segment");
        }
    }
    hits
}

/// `ceph ...` against the test cluster; (exit code, stdout, stderr).
fn ceph(cl: &Cluster, args: &[&str]) -> (i32, String, String) {
    tool(cl, "ceph", args)
}

/// Run `quarry <name> args` against the cluster; (exit code, stdout, stderr).
fn tool(cl: &Cluster, name: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN)
        .arg(name)
        .args(args)
        .env("CEPH_CONF", cl.path().join("ceph.conf"))
        .env("HOME", cl.path())
        .env_remove("CEPH_ARGS")
        .env_remove("CEPH_KEYRING")
        .output()
        .expect("run ceph");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run `ceph args` until its output satisfies `ok` (15 s at most: health
/// follows the OSDs' beacons); that output.
fn wait_ceph(cl: &Cluster, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out, err) = ceph(cl, args);
        if ok(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ceph {args:?} never got there: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A PG's acting set as Ceph prints it (`[0,2,1]`).
async fn acting_of(c: &ClusterClient, pg: quarry_map::PgId) -> String {
    let map = c.monc().refresh_map().await.expect("map");
    let acting = map
        .pg_history
        .get(&pg)
        .map(|h| h.acting.clone())
        .unwrap_or_default();
    let v: Vec<String> = acting.iter().map(|o| o.to_string()).collect();
    format!("[{}]", v.join(","))
}

/// Damage nobody reads: a flipped byte in a replica's copy (clients read
/// from the primary) and in the primary's copy of an object no client
/// reads. `ceph pg deep-scrub` finds both and names the bad copies;
/// `ceph pg repair` rewrites them from the good ones (not read repair);
/// a second scrub finds nothing, and the repaired replica then serves the
/// object alone (before the repair it held only a damaged copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_scrub_finds_damaged_copies_and_repair_fixes_them() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    // Two objects in one PG whose primary is osd.0.
    let map = c.monc().refresh_map().await.expect("map");
    let mut names = (0..5000).map(|i| format!("scrub{i}")).filter(|n| {
        let pg = map.object_pg(pool, "", n).expect("pg");
        map.pg_primary(pg).expect("primary") == Some(0)
    });
    let a = names.next().expect("an object on osd.0");
    let pg = map.object_pg(pool, "", &a).expect("pg");
    let b = names
        .find(|n| map.object_pg(pool, "", n).expect("pg") == pg)
        .expect("a second object in that pg");
    let replica = map.pg_up_set(pg).expect("up set")[1];
    let pat = |x: u8| -> Vec<u8> { (0..4096u32).map(|i| (i % 251) as u8 ^ x).collect() };
    let (pa, pb) = (pat(0x3c), pat(0xc3));
    write(&c, pool, &a, &pa).await;
    write(&c, pool, &b, &pb).await;
    let pgid = pg.to_string();
    let (code, out, err) = ceph(&cl, &["pg", "deep-scrub", &pgid]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 objects, 0 inconsistent"), "{out}");
    // Damage the replica's copy of a and the primary's copy of b, offline.
    cl.term("osd.0");
    let rname = format!("osd.{replica}");
    cl.term(&rname);
    assert!(
        flip_in_log(&cl, &rname, &pa) > 0,
        "a not found in {rname}'s log"
    );
    assert!(
        flip_in_log(&cl, "osd.0", &pb) > 0,
        "b not found in osd.0's log"
    );
    cl.run_up(None);
    wait_clean(&c).await;
    let (code, out, err) = ceph(&cl, &["pg", "deep-scrub", &pgid]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("instructing pg {pgid} on osd.0 to deep-scrub")),
        "{out}"
    );
    assert!(out.contains("2 objects, 2 inconsistent"), "{out}");
    assert!(
        out.contains(&format!(
            "{a}: {rname}: 1 data block(s) fail their checksum"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{b}: osd.0: 1 data block(s) fail their checksum")),
        "{out}"
    );
    // The primary reports the scrub errors: health turns to HEALTH_ERR and
    // names the PG, `ceph -s` shows it inconsistent.
    let detail = wait_ceph(&cl, &["health", "detail"], |o| o.starts_with("HEALTH_ERR"));
    assert_eq!(
        detail,
        format!(
            "HEALTH_ERR 2 scrub errors; Possible data damage: 1 pg inconsistent\n\
             [ERR] OSD_SCRUB_ERRORS: 2 scrub errors\n\
             [ERR] PG_DAMAGED: Possible data damage: 1 pg inconsistent\n    \
             pg {pgid} is active+clean+inconsistent, acting {}\n",
            acting_of(&c, pg).await
        )
    );
    let (_, out, _) = ceph(&cl, &["-s"]);
    assert!(out.contains("health: HEALTH_ERR"), "{out}");
    assert!(out.contains("1 active+clean+inconsistent"), "{out}");
    // `ceph pg ls inconsistent` lists that PG alone, with its scrub stamp.
    let (code, out, err) = ceph(&cl, &["pg", "ls", "inconsistent"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("PG ") && lines[0].contains("DEEP_SCRUB_STAMP"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("{pgid} "))
            && lines[1].contains(" active+clean+inconsistent ")
            && lines[1].contains("[0,")
            && !lines[1].ends_with(" -"),
        "{out}"
    );
    let (_, out, _) = ceph(&cl, &["health", "--format", "json"]);
    let h: serde_json::Value = serde_json::from_str(&out).expect("health json");
    assert_eq!(
        h["checks"]["OSD_SCRUB_ERRORS"]["summary"]["count"], 2,
        "{out}"
    );
    assert_eq!(h["checks"]["PG_DAMAGED"]["severity"], "HEALTH_ERR", "{out}");
    // `rados list-inconsistent-*` name the PG, the objects and the bad
    // copies.
    let (code, out, err) = tool(&cl, "rados", &["list-inconsistent-pg", "t"]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("[\"{pgid}\"]\n").as_str()),
        "{err}"
    );
    let (code, out, err) = tool(
        &cl,
        "rados",
        &["list-inconsistent-obj", &pgid, "--format=json-pretty"],
    );
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("inconsistent json");
    let objs = j["inconsistents"].as_array().expect("inconsistents");
    assert_eq!(objs.len(), 2, "{out}");
    for (name, bad) in [(&a, replica), (&b, 0)] {
        let o = objs
            .iter()
            .find(|o| o["object"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not listed: {out}"));
        assert_eq!(
            o["union_shard_errors"],
            serde_json::json!(["read_error"]),
            "{out}"
        );
        let shards = o["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), 3, "{out}");
        for sh in shards {
            let want = if sh["osd"] == bad {
                serde_json::json!(["read_error"])
            } else {
                serde_json::json!([])
            };
            assert_eq!(sh["errors"], want, "{name}: {out}");
            assert_eq!(sh["primary"], sh["osd"] == 0, "{out}");
        }
        assert_ne!(o["selected_object_info"]["osd"], bad, "{out}");
    }
    // A scrub reports; it does not repair.
    let (_, out, _) = ceph(&cl, &["pg", "deep-scrub", &pgid]);
    assert!(out.contains("2 inconsistent"), "{out}");
    // The monitors keep the errors: a restarted primary does not clear them.
    cl.term("osd.0");
    cl.run_up(None);
    wait_clean(&c).await;
    let (_, out, _) = ceph(&cl, &["health"]);
    assert_eq!(
        out,
        "HEALTH_ERR 2 scrub errors; Possible data damage: 1 pg inconsistent\n"
    );
    let (code, out, err) = ceph(&cl, &["pg", "repair", &pgid, "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["repaired"], 2, "{out}");
    assert_eq!(r["objects"], 2, "{out}");
    // Repaired: the errors are gone from health and the listings.
    wait_ceph(&cl, &["health"], |o| o == "HEALTH_OK\n");
    let (_, out, _) = tool(&cl, "rados", &["list-inconsistent-pg", "t"]);
    assert_eq!(out, "[]\n");
    let (_, out, _) = ceph(&cl, &["pg", "ls", "inconsistent"]);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    let (_, out, _) = tool(&cl, "rados", &["list-inconsistent-obj", &pgid]);
    let j: serde_json::Value = serde_json::from_str(&out).expect("inconsistent json");
    assert_eq!(j["inconsistents"], serde_json::json!([]), "{out}");
    let (_, out, _) = ceph(&cl, &["pg", "deep-scrub", &pgid]);
    assert!(out.contains("2 objects, 0 inconsistent"), "{out}");
    assert_eq!(read(&c, pool, &b).await, pb);
    assert_eq!(
        count_in_log(&cl, "osd.0", "repairing from a replica"),
        0,
        "read repair ran: the scrub's repair should have fixed b first"
    );
    // The repaired replica serves a alone.
    for o in [0, 1, 2].into_iter().filter(|&o| o != replica) {
        cl.kill9(&format!("osd.{o}"));
    }
    assert_eq!(read(&c, pool, &a).await, pa);
    // Bad PG ids are refused with Ceph's errors.
    let (code, _, err) = ceph(&cl, &["pg", "deep-scrub", "nonsense"]);
    assert_eq!(
        (code, err.as_str()),
        (22, "Error EINVAL: invalid pgid 'nonsense'\n")
    );
    let (code, _, err) = ceph(&cl, &["pg", "repair", "999.0"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "Error ENOENT: i don't have pgid 999.0\n")
    );
}

/// Scrubs racing writes: while a client keeps overwriting objects of one
/// PG (acknowledged writes landing on every member at their own pace),
/// repeated deep scrubs of that PG never report an inconsistency (each
/// object is compared once every member applied the same ops), and every
/// object reads back its last acknowledged content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_scrub_during_writes_reports_no_false_inconsistency() {
    let cl = Cluster::up(3, 1);
    let c = std::sync::Arc::new(cl.client().await);
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    let map = c.monc().refresh_map().await.expect("map");
    let pg = map.object_pg(pool, "", "busy0").expect("pg");
    let names: Vec<String> = (0..5000)
        .map(|i| format!("busy{i}"))
        .filter(|n| map.object_pg(pool, "", n).expect("pg") == pg)
        .take(6)
        .collect();
    for n in &names {
        write(&c, pool, n, b"first").await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // One writer per object: many writes of the PG in flight at once.
    let writers: Vec<_> = names
        .iter()
        .map(|n| {
            let (c, n, stop) = (c.clone(), n.clone(), stop.clone());
            tokio::spawn(async move {
                let mut round = 0u32;
                let mut last = Vec::new();
                while round == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    last = format!("{n}-{round}:").repeat(4000).into_bytes();
                    write(&c, pool, &n, &last).await;
                    round += 1;
                }
                (n, round, last)
            })
        })
        .collect();
    for _ in 0..8 {
        let r = bounded("scrub", c.scrub_pg(pg, false))
            .await
            .expect("scrub");
        assert!(r.inconsistent.is_empty(), "false inconsistency: {r:?}");
        assert_eq!(r.objects, names.len() as u64, "{r:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut last = Vec::new();
    for w in writers {
        let (n, rounds, v) = bounded("writer", w).await.expect("writer task");
        assert!(rounds > 0);
        last.push((n, v));
    }
    for (n, v) in last {
        assert_eq!(read(&c, pool, &n).await, v, "{n}");
    }
    let r = c.scrub_pg(pg, false).await.expect("scrub");
    assert_eq!(
        (r.objects, r.inconsistent.len()),
        (names.len() as u64, 0),
        "{r:?}"
    );
}

/// `osd_deep_scrub_interval` schedules deep scrubs and, with
/// `osd_scrub_auto_repair`, they repair: a replica's damaged copy, which no
/// read would notice, is rewritten without any command, and then serves
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deep_scrub_auto_repairs_a_damaged_replica() {
    let cl = Cluster::up_with(
        3,
        1,
        &["osd_deep_scrub_interval=2", "osd_scrub_auto_repair=true"],
    );
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    let map = c.monc().refresh_map().await.expect("map");
    let name = (0..5000)
        .map(|i| format!("auto{i}"))
        .find(|n| {
            map.pg_primary(map.object_pg(pool, "", n).expect("pg"))
                .expect("p")
                == Some(0)
        })
        .expect("an object on osd.0");
    let pg = map.object_pg(pool, "", &name).expect("pg");
    let replica = map.pg_up_set(pg).expect("up set")[1];
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 241) as u8 ^ 0x77).collect();
    write(&c, pool, &name, &data).await;
    let rname = format!("osd.{replica}");
    cl.term(&rname);
    assert!(
        flip_in_log(&cl, &rname, &data) > 0,
        "object not found in {rname}'s log"
    );
    cl.run_up(None);
    wait_clean(&c).await;
    let needle = format!("repaired {rname}'s copy from osd.0's");
    bounded("scheduled scrub repair", async {
        while count_in_log(&cl, "osd.0", &needle) == 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    for o in [0, 1, 2].into_iter().filter(|&o| o != replica) {
        cl.kill9(&format!("osd.{o}"));
    }
    assert_eq!(read(&c, pool, &name).await, data);
}

async fn write_snapc(c: &ClusterClient, pool: i64, name: &str, data: &[u8], snaps: &[u64]) {
    let req = OpRequest::new(ObjectId::new(pool, name))
        .with_snapc(SnapContext {
            seq: snaps.iter().copied().max().unwrap_or(0),
            snaps: snaps.iter().rev().copied().collect(),
        })
        .op(Op::WriteFull(Bytes::copy_from_slice(data)));
    bounded(&format!("write {name}"), c.operate(req))
        .await
        .expect("write");
}

async fn read_at(c: &ClusterClient, pool: i64, name: &str, snap: u64) -> Vec<u8> {
    let req = OpRequest::new(ObjectId::new(pool, name))
        .at_snap(snap)
        .op(Op::Read { off: 0, len: 0 });
    let r = bounded(&format!("read {name}@{snap}"), c.operate(req))
        .await
        .expect("read at snap");
    match &r.outputs[0] {
        OpOutput::Data(d) => d.to_vec(),
        o => panic!("unexpected output {o:?}"),
    }
}

/// Recovery moves an object's whole state, snapshot clones included: an
/// OSD that missed a snapshot and the overwrites after it (and was down
/// for the clone-creating writes) must, once recovered, serve the head and
/// every snapshot on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_osd_has_snapshot_clones() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "snaps").await;
    wait_clean(&c).await;
    let n = 8;
    for i in 0..n {
        write(&c, pool, &format!("s{i}"), format!("v0-{i}").as_bytes()).await;
    }
    // A snapshot and an overwrite every OSD sees: the clone exists everywhere.
    let s0 = c.snap_create(pool).await.expect("snap");
    for i in 0..n {
        write_snapc(
            &c,
            pool,
            &format!("s{i}"),
            format!("v1-{i}").as_bytes(),
            &[s0],
        )
        .await;
    }
    cl.kill9("osd.2");
    // While osd.2 is down: a second snapshot, overwrites that create clones
    // only on the survivors, and a new object.
    let s1 = c.snap_create(pool).await.expect("snap");
    for i in 0..n {
        write_snapc(
            &c,
            pool,
            &format!("s{i}"),
            format!("v2-{i}").as_bytes(),
            &[s0, s1],
        )
        .await;
    }
    write_snapc(&c, pool, "late", b"late", &[s0, s1]).await;
    // Restart it and wait until every PG is active on all three again
    // (peering recovered it before recording the acting set).
    cl.run_up(None);
    wait_osd_up(&c, 2).await;
    wait_clean(&c).await;
    // Only the recovered OSD is left: it must hold heads and clones.
    cl.kill9("osd.0");
    cl.kill9("osd.1");
    for i in 0..n {
        let name = format!("s{i}");
        assert_eq!(read(&c, pool, &name).await, format!("v2-{i}").as_bytes());
        assert_eq!(
            read_at(&c, pool, &name, s1).await,
            format!("v1-{i}").as_bytes()
        );
        assert_eq!(
            read_at(&c, pool, &name, s0).await,
            format!("v0-{i}").as_bytes()
        );
    }
    assert_eq!(read(&c, pool, "late").await, b"late");
}

/// Backfill (a member so far behind that the authority's log no longer
/// reaches back to it) copies every object either side holds, also one
/// that lives on only as a snapshot clone: created, snapshotted and its
/// head removed while the member was away (an image object written, then
/// discarded after `rbd snap create`). Listing heads only skipped it, so
/// the backfilled OSD had no clone and, as primary, served the snapshot as
/// absent: a clone of it read zeros (the cut-link fsx failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_copies_objects_that_only_have_clones() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "bf").await;
    wait_clean(&c).await;
    // Objects of one PG: the removed ones and fillers that overflow its log.
    let map = c.monc().refresh_map().await.expect("map");
    let pg = map.object_pg(pool, "", "gone0").expect("pg");
    let same_pg = |prefix: &str, n: usize| -> Vec<String> {
        (0..100_000)
            .map(|i| format!("{prefix}{i}"))
            .filter(|o| map.object_pg(pool, "", o).expect("pg") == pg)
            .take(n)
            .collect()
    };
    let gone = same_pg("gone", 4);
    let fillers = same_pg("fill", 4);
    cl.kill9("osd.2");
    for o in &gone {
        write(&c, pool, o, format!("v0-{o}").as_bytes()).await;
    }
    let s0 = c.snap_create(pool).await.expect("snap");
    for o in &gone {
        let req = OpRequest::new(ObjectId::new(pool, o.as_str()))
            .with_snapc(SnapContext {
                seq: s0,
                snaps: vec![s0],
            })
            .op(Op::Remove);
        bounded(&format!("remove {o}"), c.operate(req))
            .await
            .expect("remove");
    }
    // More writes than a PG log keeps (1000 entries): osd.2's last update
    // falls behind the authority's log tail, so it is backfilled.
    for i in 0..1100 {
        let o = &fillers[i % fillers.len()];
        write(&c, pool, o, format!("f{i}").as_bytes()).await;
    }
    cl.run_up(None);
    wait_osd_up(&c, 2).await;
    wait_clean(&c).await;
    // Only the backfilled OSD is left: it must hold the clones.
    cl.kill9("osd.0");
    cl.kill9("osd.1");
    for o in &gone {
        assert_eq!(
            read_at(&c, pool, o, s0).await,
            format!("v0-{o}").as_bytes(),
            "{o} at its snapshot"
        );
        let head = OpRequest::new(ObjectId::new(pool, o.as_str())).op(Op::Read { off: 0, len: 0 });
        let r = bounded(&format!("read {o}"), c.operate(head)).await;
        assert_eq!(
            r.err().map(|e| e.errno),
            Some(quarry_common::Errno::ENOENT),
            "{o}'s head"
        );
    }
    // The path under test was taken (a smaller log bound would make this
    // a plain log-based recovery).
    let backfills: usize = (0..3)
        .map(|n| count_in_log(&cl, &format!("osd.{n}"), "backfilling"))
        .sum();
    assert!(
        backfills > 0,
        "no OSD logged a backfill: the test no longer covers it"
    );
}

/// A resent op (same client and tid, as after a lost reply) that was
/// applied is answered with its original success, not applied again, also
/// by a new primary after the old one was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_ops_are_not_applied_twice() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "dups").await;
    wait_clean(&c).await;
    let oid = ObjectId::new(pool, "dup");
    let create = || OpRequest::new(oid.clone()).op(Op::Create { exclusive: true });
    let remove = || OpRequest::new(oid.clone()).op(Op::Remove);
    let run = |req: OpRequest, tid: u64| {
        let c = c.clone();
        async move { bounded("op", c.operate_tid(req, tid)).await }
    };
    const T1: u64 = 1 << 40;
    run(create(), T1).await.expect("create");
    run(create(), T1).await.expect("resent create succeeds");
    let e = run(create(), T1 + 1).await.expect_err("a new create");
    assert_eq!(e.errno, quarry_common::Errno::EEXIST);
    run(remove(), T1 + 2).await.expect("remove");
    run(remove(), T1 + 2).await.expect("resent remove succeeds");
    let e = run(remove(), T1 + 3).await.expect_err("a new remove");
    assert_eq!(e.errno, quarry_common::Errno::ENOENT);
    run(create(), T1 + 4).await.expect("create again");
    // A guarded write (compare-and-swap on the version, as every image
    // header update): resent, its original success, not a failed guard.
    let v = run(OpRequest::new(oid.clone()).op(Op::Stat), T1 + 6)
        .await
        .expect("stat")
        .version;
    let cas = || {
        OpRequest::new(oid.clone())
            .op(Op::AssertExists)
            .op(Op::AssertVersion(v))
            .op(Op::SetXattr("k".into(), Bytes::from_static(b"v")))
    };
    run(cas(), T1 + 7).await.expect("cas");
    run(cas(), T1 + 7).await.expect("resent cas succeeds");
    let e = run(cas(), T1 + 8).await.expect_err("a new cas");
    assert_eq!(e.errno, quarry_common::Errno::EOVERFLOW);
    // Kill the primary: the new one knows the ops from its PG log.
    let map = c.monc().refresh_map().await.expect("map");
    let pg = map.object_pg(pool, "", "dup").expect("pg");
    let primary = map.pg_primary(pg).expect("primary").expect("up");
    cl.kill9(&format!("osd.{primary}"));
    run(create(), T1 + 4)
        .await
        .expect("resent create after failover succeeds");
    run(cas(), T1 + 7)
        .await
        .expect("resent cas after failover succeeds");
    let e = run(create(), T1 + 5).await.expect_err("a new create");
    assert_eq!(e.errno, quarry_common::Errno::EEXIST);
}

/// A member that missed ops while it was down, recovered and then
/// serves as primary recognises resends of those ops (its log becomes a
/// copy of the authority's, op ids included, instead of an empty one):
/// the way back of a cut link, where the client resends an op whose
/// reply the previous primary never sent. Covers both a returning
/// primary (it pulls the log) and a returning replica (the primary sends
/// it the log with the activation) that is primary later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_member_recognises_resends_of_ops_it_missed() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "redup").await;
    wait_clean(&c).await;
    let oid = ObjectId::new(pool, "hdr");
    let run = |req: OpRequest, tid: u64| {
        let c = c.clone();
        async move { bounded("op", c.operate_tid(req, tid)).await }
    };
    let create = || OpRequest::new(oid.clone()).op(Op::Create { exclusive: true });
    let cas = |v: u64, val: &'static [u8]| {
        OpRequest::new(oid.clone())
            .op(Op::AssertExists)
            .op(Op::AssertVersion(v))
            .op(Op::SetXattr("k".into(), Bytes::from_static(val)))
    };
    let version = |tid: u64| {
        let c = c.clone();
        let oid = oid.clone();
        async move {
            bounded("stat", c.operate_tid(OpRequest::new(oid).op(Op::Stat), tid))
                .await
                .expect("stat")
                .version
        }
    };
    let map = c.monc().refresh_map().await.expect("map");
    let pg = map.object_pg(pool, "", "hdr").expect("pg");
    let up = map.pg_up_set(pg).expect("up set");
    let (primary, replica) = (up[0], up[1]);
    const T: u64 = 3 << 40;

    // 1. The primary is away while an exclusive create and a
    // compare-and-swap are applied by the others.
    cl.kill9(&format!("osd.{primary}"));
    run(create(), T).await.expect("create");
    let v1 = version(T + 1).await;
    run(cas(v1, b"1"), T + 2).await.expect("cas");
    cl.run_up(None);
    wait_clean(&c).await;
    let map = c.monc().refresh_map().await.expect("map");
    assert_eq!(
        map.pg_primary(pg).expect("pg"),
        Some(primary),
        "primary back"
    );
    // Resends reach the returned primary: the original successes.
    run(create(), T)
        .await
        .expect("resent create on the returned primary");
    run(cas(v1, b"1"), T + 2)
        .await
        .expect("resent cas on the returned primary");
    // New ops still run (and fail their guards for real).
    let e = run(create(), T + 3).await.expect_err("a new create");
    assert_eq!(e.errno, quarry_common::Errno::EEXIST);
    let e = run(cas(v1, b"x"), T + 4).await.expect_err("a stale cas");
    assert_eq!(e.errno, quarry_common::Errno::EOVERFLOW);

    // 2. A replica is away while a compare-and-swap is applied; it
    // returns as a replica, then is the only member left.
    cl.kill9(&format!("osd.{replica}"));
    let v2 = version(T + 5).await;
    run(cas(v2, b"2"), T + 6).await.expect("cas");
    cl.run_up(None);
    wait_clean(&c).await;
    for osd in up.iter().filter(|&&o| o != replica) {
        cl.kill9(&format!("osd.{osd}"));
    }
    bounded("the returned replica is primary", async {
        loop {
            let map = c.monc().refresh_map().await.expect("map");
            if map.pg_primary(pg).expect("pg") == Some(replica) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    run(cas(v2, b"2"), T + 6)
        .await
        .expect("resent cas on the returned replica, now primary");
    let e = run(cas(v2, b"y"), T + 7).await.expect_err("a stale cas");
    assert_eq!(e.errno, quarry_common::Errno::EOVERFLOW);
    let got = bounded(
        "getxattr",
        c.operate(OpRequest::new(oid.clone()).op(Op::GetXattr("k".into()))),
    )
    .await
    .expect("getxattr");
    assert_eq!(got.outputs[0], OpOutput::Data(Bytes::from_static(b"2")));
}

/// A watch survives the death of the primary it was registered on: the
/// client re-registers it with the new primary and then tells the
/// watcher that it may have missed notifications (`ENOTCONN`, librados'
/// watch error callback); later notifications arrive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_reestablished_after_failover() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("pool");
    write(&c, pool, "watched", b"x").await;
    let oid = ObjectId::new(pool, "watched");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let c2 = c.clone();
    let cb: quarry_rados::WatchCallback = std::sync::Arc::new(move |ev| {
        if let quarry_rados::WatchEvent::Notify(n) = &ev {
            let (c, n) = (c2.clone(), n.clone());
            tokio::spawn(async move {
                let _ = c
                    .notify_ack(&n.oid, n.notify_id, n.cookie, Bytes::new())
                    .await;
            });
        }
        let _ = tx.send(ev);
    });
    let cookie = bounded("watch", c.watch_with(&oid, cb))
        .await
        .expect("watch");
    let has = |w: Vec<quarry_rados::Watcher>| w.iter().any(|w| w.cookie == cookie);
    assert!(has(bounded("watchers", c.list_watchers(&oid))
        .await
        .expect("list")));
    let map = c.monc().refresh_map().await.expect("map");
    let pg = map.object_pg(pool, "", "watched").expect("pg");
    let primary = map.pg_primary(pg).expect("primary").expect("up");
    cl.kill9(&format!("osd.{primary}"));
    bounded("watch re-established on the new primary", async {
        loop {
            if let Ok(w) = c.list_watchers(&oid).await {
                if has(w) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match bounded("the watch error event", events.recv()).await {
        Some(quarry_rados::WatchEvent::Error(e)) => {
            assert_eq!(
                (e.cookie, e.errno),
                (cookie, quarry_common::Errno::ENOTCONN)
            );
        }
        other => panic!("expected the watch's ENOTCONN event first, got {other:?}"),
    }
    let other = cl.client().await;
    let r = bounded(
        "notify after failover",
        other.notify(&oid, Bytes::from_static(b"hi"), Duration::from_secs(10)),
    )
    .await
    .expect("notify");
    assert_eq!(r.acks.len(), 1, "the re-registered watch acked: {r:?}");
    match bounded("the notification", events.recv()).await {
        Some(quarry_rados::WatchEvent::Notify(n)) => assert_eq!(&n.payload[..], b"hi"),
        other => panic!("expected the notification, got {other:?}"),
    }
    bounded("unwatch", c.unwatch(&oid, cookie))
        .await
        .expect("unwatch");
    assert!(!has(bounded("watchers", c.list_watchers(&oid))
        .await
        .expect("list")));
}

/// A watcher whose callback falls behind: once the client's event queue
/// (1024) is full, notifications are dropped, and the watch is told so
/// (`ENOTCONN`: re-read what you watch) instead of silently missing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_events_are_reported() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("pool");
    write(&c, pool, "busy", b"x").await;
    let oid = ObjectId::new(pool, "busy");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // The first notification blocks the callback until `release` is sent.
    // `block_in_place` hands this worker's queued tasks to another thread
    // meanwhile (a plain blocking call could strand a task in its LIFO
    // slot, e.g. the other client's connection reader, and hang the test).
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = std::sync::Mutex::new(Some(blocked));
    let cb: quarry_rados::WatchCallback = std::sync::Arc::new(move |ev| {
        let first = blocked.lock().map(|mut b| b.take()).unwrap_or(None);
        if let Some(rx) = first {
            tokio::task::block_in_place(|| {
                let _ = rx.recv_timeout(Duration::from_secs(120));
            });
        }
        let _ = tx.send(ev);
    });
    let cookie = bounded("watch", c.watch_with(&oid, cb))
        .await
        .expect("watch");
    let other = cl.client().await;
    const SENT: usize = 1100;
    let notifies: Vec<_> = (0..SENT)
        .map(|i| {
            let (other, oid) = (other.clone(), oid.clone());
            tokio::spawn(async move {
                let p = Bytes::from(format!("n{i}"));
                let _ = other.notify(&oid, p, Duration::from_secs(1)).await;
            })
        })
        .collect();
    for n in notifies {
        bounded("notify", n).await.expect("notify task");
    }
    release.send(()).expect("release");
    let mut notified = 0;
    let errno = bounded("the watch error event", async {
        loop {
            match events.recv().await {
                Some(quarry_rados::WatchEvent::Notify(_)) => notified += 1,
                Some(quarry_rados::WatchEvent::Error(e)) => {
                    assert_eq!(e.cookie, cookie);
                    return e.errno;
                }
                None => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert_eq!(errno, quarry_common::Errno::ENOTCONN);
    assert!(notified < SENT, "{notified} of {SENT} delivered");
    bounded("unwatch", c.unwatch(&oid, cookie))
        .await
        .expect("unwatch");
}

/// Set in the child process of [`divergent_entries_are_rewound`] (its
/// cluster directory): the child is the client whose writes diverge.
const DIVERGE_CHILD: &str = "QUARRY_TEST_DIVERGE_CHILD";

/// An object's copy in one (stopped) OSD's store, read from the store
/// itself: its head's bytes (`None` if absent) and the rest of its state
/// (size, version, mtime, xattrs, snapshot set). The mtime is the primary's
/// on every member (carried in the RepOp), as Ceph carries the client's.
fn offline_copy(
    cl: &Cluster,
    osd: u32,
    pg: quarry_map::PgId,
    name: &str,
) -> (Option<Vec<u8>>, String) {
    // Another test thread's fork may briefly hold a copy of the store's
    // file (and its lock) between fork and exec: retry for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match quarry_store::Store::open(&cl.path().join(format!("osd.{osd}"))) {
            Ok(s) => break s,
            Err(e)
                if e.to_string().contains("already open")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("open osd.{osd}'s store: {e}"),
        }
    };
    // The OSD keeps each PG's objects in a store pool of their own.
    let oid = ObjectId {
        pool: (pg.pool << 32) | pg.seed as i64,
        namespace: String::new(),
        name: name.to_string(),
    };
    let req = OpRequest::new(oid)
        .op(Op::Read { off: 0, len: 0 })
        .op(Op::Stat)
        .op(Op::GetXattrs)
        .op(Op::ListSnaps);
    match store.apply(&req) {
        Ok(r) => {
            let mut head = None;
            let mut state = String::new();
            for o in &r.outputs {
                match o {
                    OpOutput::Data(d) => head = Some(d.to_vec()),
                    OpOutput::Stat(st) => {
                        state += &format!(
                            "size {} version {} mtime {}; ",
                            st.size, st.version, st.mtime_ns
                        )
                    }
                    o => state += &format!("{o:?}; "),
                }
            }
            (head, state)
        }
        Err(e) if e.errno == quarry_common::Errno::ENOENT => (None, "absent".into()),
        Err(e) => panic!("read {name} in osd.{osd}'s store: {e}"),
    }
}

/// Child side: connect, reach the objects' primary, then on the parent's
/// signal write them and wait to be killed (it never sees a reply).
async fn diverge_child(dir: PathBuf) {
    let conf = std::fs::read_to_string(dir.join("ceph.conf")).expect("conf");
    let addrs: Vec<String> = conf
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("mon_host"))
        .and_then(|l| l.split_once('='))
        .expect("mon_host")
        .1
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let c = bounded(
        "child connect",
        ClusterClient::connect(
            addrs,
            "client.admin",
            common::admin_secret(&dir),
            ClientTimeouts::default(),
        ),
    )
    .await
    .expect("child connect");
    let pool: i64 = std::env::var("QUARRY_TEST_DIVERGE_POOL")
        .expect("pool")
        .parse()
        .expect("pool id");
    let names: Vec<String> = std::env::var("QUARRY_TEST_DIVERGE_NAMES")
        .expect("names")
        .split(',')
        .map(String::from)
        .collect();
    // A stat opens the connection to the primary now, so the writes below
    // reach it at once.
    for n in &names {
        let _ = bounded(
            "child stat",
            c.operate(OpRequest::new(ObjectId::new(pool, n)).op(Op::Stat)),
        )
        .await;
    }
    std::fs::write(dir.join("diverge-ready"), b"").expect("ready file");
    bounded("the parent's go", async {
        while !dir.join("diverge-go").exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for n in &names {
        let req = OpRequest::new(ObjectId::new(pool, n))
            .op(Op::WriteFull(Bytes::from(format!("{n}-lost"))));
        let c = c.clone();
        tokio::spawn(async move { c.operate(req).await });
    }
    tokio::time::sleep(common::BOUND).await;
}

fn count_in_log(cl: &Cluster, name: &str, needle: &str) -> usize {
    std::fs::read_to_string(cl.path().join("log").join(format!("{name}.log")))
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// A primary applies writes durably that its replicas never get (they are
/// stopped, then killed; the client is killed too, so nobody resends):
/// never acknowledged, and divergent once the replicas go on without it in
/// a new interval. When it comes back (as primary again), peering must
/// rewind those entries: every copy of every touched object ends
/// byte-identical to the authority's (the new interval's content, the
/// content from before the divergent write, or no object at all) and
/// equal to what clients read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergent_entries_are_rewound() {
    if let Ok(dir) = std::env::var(DIVERGE_CHILD) {
        return diverge_child(PathBuf::from(dir)).await;
    }
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = common::pool_create(&c, "div", 2).await;
    common::wait_clean(&c).await;
    // Five objects in one PG whose primary is osd.0 (replicas osd.1, osd.2).
    let map = c.monc().refresh_map().await.expect("map");
    let mut by_pg: std::collections::BTreeMap<quarry_map::PgId, Vec<String>> = Default::default();
    for i in 0..10_000 {
        let n = format!("d{i}");
        let pg = map.object_pg(pool, "", &n).expect("pg");
        if map.pg_primary(pg).expect("primary") == Some(0) {
            by_pg.entry(pg).or_default().push(n);
        }
    }
    let (pg, names) = by_pg
        .into_iter()
        .find(|(_, v)| v.len() >= 5)
        .expect("a PG with primary osd.0");
    let (x, y, z, w) = (&names[0], &names[1], &names[2], &names[3]);
    // x and y acknowledged on all three.
    write(&c, pool, x, b"x-acked").await;
    write(&c, pool, y, b"y-acked").await;

    // The divergent writes: replicas stopped, a child client writes x, y
    // and z (a new object); osd.0 applies them alone.
    // osd.0 logs one of these for each write once it is durable locally,
    // when the stopped replicas are marked down (their connections close,
    // or the interval ends first) and the write stays unanswered.
    let unanswered = || {
        count_in_log(&cl, "osd.0", "interval changed while waiting for replicas")
            + count_in_log(&cl, "osd.0", "replication failed")
    };
    let before = unanswered();
    let child_log =
        std::fs::File::create(cl.path().join("log").join("diverge-child.log")).expect("child log");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "divergent_entries_are_rewound",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(DIVERGE_CHILD, cl.path())
        .env("QUARRY_TEST_DIVERGE_POOL", pool.to_string())
        .env("QUARRY_TEST_DIVERGE_NAMES", format!("{x},{y},{z}"))
        .stdin(std::process::Stdio::null())
        .stdout(child_log.try_clone().expect("dup"))
        .stderr(child_log)
        .spawn()
        .expect("start the child client");
    bounded("child ready", async {
        while !cl.path().join("diverge-ready").exists() {
            assert!(
                child.try_wait().expect("child").is_none(),
                "the child client exited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for r in ["osd.1", "osd.2"] {
        cl.freeze(r);
    }
    std::fs::write(cl.path().join("diverge-go"), b"").expect("go file");
    bounded("osd.0 applied the writes alone", async {
        while unanswered() < before + 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    child.kill().expect("kill the child client");
    child.wait().expect("reap the child client");
    cl.kill9("osd.0");
    // Stopped replicas die with the RepOps still unread in their sockets.
    cl.kill9("osd.1");
    cl.kill9("osd.2");
    for (name, acked) in [
        (x, Some(&b"x-acked"[..])),
        (y, Some(&b"y-acked"[..])),
        (z, None),
    ] {
        let lost = format!("{name}-lost").into_bytes();
        assert_eq!(
            offline_copy(&cl, 0, pg, name).0,
            Some(lost),
            "osd.0 must hold the divergent write of {name}"
        );
        for r in [1, 2] {
            assert_eq!(
                offline_copy(&cl, r, pg, name).0.as_deref(),
                acked,
                "osd.{r} must not hold the divergent write of {name}"
            );
        }
    }

    // The replicas go on without osd.0 in a new interval: x is written
    // again and w created; y and z are not touched.
    cl.start_osd(1);
    cl.start_osd(2);
    write(&c, pool, x, b"x-new").await;
    write(&c, pool, w, b"w-new").await;
    let map = c.monc().refresh_map().await.expect("map");
    assert_eq!(
        map.pg_history.get(&pg).map(|h| h.acting.contains(&0)),
        Some(false),
        "the new interval must not include osd.0"
    );

    // osd.0 comes back and is the PG's primary again.
    let rewinds = count_in_log(&cl, "osd.0", "divergent log entries");
    cl.start_osd(0);
    common::wait_clean(&c).await;
    assert!(
        count_in_log(&cl, "osd.0", "divergent log entries") > rewinds,
        "osd.0 did not report rewinding its divergent entries"
    );
    let expect: [(&String, Option<&[u8]>); 4] = [
        (x, Some(&b"x-new"[..])),
        (y, Some(&b"y-acked"[..])),
        (z, None),
        (w, Some(&b"w-new"[..])),
    ];
    for (name, want) in expect {
        let req = OpRequest::new(ObjectId::new(pool, name)).op(Op::Read { off: 0, len: 0 });
        let got = match bounded("read", c.operate(req)).await {
            Ok(r) => match &r.outputs[0] {
                OpOutput::Data(d) => Some(d.to_vec()),
                o => panic!("unexpected output {o:?}"),
            },
            Err(e) if e.errno == quarry_common::Errno::ENOENT => None,
            Err(e) => panic!("read {name}: {e}"),
        };
        assert_eq!(got.as_deref(), want, "client read of {name}");
    }
    // Every replica's copy, read from its store: identical everywhere
    // (bytes, size, version, xattrs, snapshots) and equal to what the
    // client read.
    for n in 0..3 {
        cl.term(&format!("osd.{n}"));
    }
    for (name, want) in expect {
        let copies: Vec<_> = (0..3).map(|n| offline_copy(&cl, n, pg, name)).collect();
        for (n, (head, state)) in copies.iter().enumerate() {
            assert_eq!(head.as_deref(), want, "osd.{n}'s copy of {name}");
            assert_eq!(
                state, &copies[0].1,
                "osd.{n}'s state of {name} differs from osd.0's"
            );
        }
    }
}

/// A resend that races its original on the same primary (the client
/// resent on a new connection while the original still waits for a
/// stopped replica) is not executed a second time: it waits for the
/// original and both get the original's success and version. Covers a
/// guarded op (exclusive create: a second run fails with EEXIST) and a
/// plain write (a second run would apply again under a new version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_racing_its_original_waits_for_it() {
    use quarry_client::conn::Conn;
    use quarry_client::wire::{strip_request, Request, Resp};
    // The stopped replica must not be marked down meanwhile (that would
    // end the interval and fail both copies with a retry).
    let cl = Cluster::up_with(2, 1, &["osd_heartbeat_grace=120"]);
    let c = cl.client().await;
    c.monc()
        .command(quarry_monc::MonCommand::PoolCreate {
            name: "race".into(),
            pg_num: Some(8),
            size: Some(2),
            min_size: Some(2),
            application: None,
        })
        .await
        .expect("pool create");
    let pool = c.pool_lookup("race").await.expect("lookup");
    wait_clean(&c).await;
    let map = c.monc().refresh_map().await.expect("map");
    let pg_of = |name: &str| map.object_pg(pool, "", name).expect("pg");
    // Two objects with the same primary (so one replica to stop).
    let names: Vec<String> = (0..64).map(|i| format!("race-{i}")).collect();
    let primary_of = |n: &str| map.pg_primary(pg_of(n)).expect("primary").expect("up");
    let x = &names[0];
    let primary = primary_of(x);
    let y = names[1..]
        .iter()
        .find(|n| primary_of(n) == primary)
        .expect("a second object on the same primary");
    let replica = 1 - primary;
    let addr = map.osds[&primary].addr.clone();
    let ticket = c.monc().ticket().await.expect("ticket");
    let t = Duration::from_secs(20);
    // Two connections of one client (same global id), as a client that
    // reconnected: the original goes on the first, the resend on the second.
    let a = bounded("connect", Conn::connect(&addr, &ticket, t))
        .await
        .expect("connect a");
    let b = bounded("connect", Conn::connect(&addr, &ticket, t))
        .await
        .expect("connect b");
    const TID: u64 = 1 << 41;
    let ops = [
        (
            TID,
            OpRequest::new(ObjectId::new(pool, x))
                .op(Op::Create { exclusive: true })
                .op(Op::WriteFull(Bytes::from_static(b"guarded"))),
        ),
        (
            TID + 1,
            OpRequest::new(ObjectId::new(pool, y)).op(Op::Write {
                off: 0,
                data: Bytes::from_static(b"plain"),
            }),
        ),
    ];
    let send = |conn: &std::sync::Arc<Conn>, tid: u64, req: &OpRequest| {
        let conn = conn.clone();
        let (req, lens, data) = strip_request(req.clone());
        let r = Request::Op {
            epoch: map.epoch,
            tid,
            req,
            lens,
        };
        tokio::spawn(async move { tokio::time::timeout(BOUND_OP, conn.call(&r, data)).await })
    };
    let waits = || count_in_log(&cl, &format!("osd.{primary}"), "waiting for the original");
    let before = waits();
    cl.freeze(&format!("osd.{replica}"));
    let originals: Vec<_> = ops.iter().map(|(tid, r)| send(&a, *tid, r)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resends: Vec<_> = ops.iter().map(|(tid, r)| send(&b, *tid, r)).collect();
    // This build logs each resend that waits; an older one never does
    // (it runs them): then go on after the bound and let the checks below
    // show what happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while waits() < before + 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (o, r) in originals.iter().zip(&resends) {
        assert!(
            !o.is_finished() && !r.is_finished(),
            "nothing is answered while the replica is stopped"
        );
    }
    // SAFETY: as above.
    unsafe { libc::kill(cl.pid(&format!("osd.{replica}")), libc::SIGCONT) };
    let mut versions = Vec::new();
    for (((tid, _), o), r) in ops.iter().zip(originals).zip(resends) {
        let mut got = Vec::new();
        for (what, h) in [("original", o), ("resend", r)] {
            let reply = match h.await.expect("task") {
                Ok(Ok((Ok(Resp::Op(reply, _)), _))) => reply,
                Ok(Ok((Ok(other), _))) => panic!("op {tid} {what}: unexpected {other:?}"),
                Ok(Ok((Err(e), _))) => panic!("op {tid} {what} must succeed: {e}"),
                Ok(Err(e)) => panic!("op {tid} {what}: connection: {e}"),
                Err(_) => panic!("op {tid} {what}: not answered in {BOUND_OP:?}"),
            };
            got.push(reply.version);
        }
        assert_eq!(
            got[0], got[1],
            "op {tid}: the resend gets the original's version"
        );
        versions.push(got[0]);
    }
    // Applied once: the objects' versions are the originals' (a second
    // run would have written a newer one), and the data is there.
    for ((name, v), data) in [x, y]
        .into_iter()
        .zip(versions)
        .zip([&b"guarded"[..], b"plain"])
    {
        let st = bounded(
            "stat",
            c.operate(OpRequest::new(ObjectId::new(pool, name)).op(Op::Stat)),
        )
        .await
        .expect("stat");
        assert_eq!(st.version, v, "{name} was written once");
        assert_eq!(read(&c, pool, name).await, data);
    }
    assert_eq!(waits(), before + 2, "each resend waited for its original");
}

/// Bound on one raw op of [`resend_racing_its_original_waits_for_it`].
const BOUND_OP: Duration = Duration::from_secs(60);

/// A store that fails (here an injected ENOSPC, as on a full disk) stops
/// its OSD, with the cause in its log, instead of leaving it up and
/// holding its PGs: the monitors mark it down, its PGs peer without it,
/// and every write the client makes completes and reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_stops_its_osd_and_io_goes_on() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    cl.term("osd.2");
    cl.start_osd_env(2, &[], &[("QUARRY_STORE_INJECT_FAIL_AFTER", "100")]);
    wait_osd_up(&c, 2).await;
    wait_clean(&c).await;
    let pid = cl.pid("osd.2");
    let data = |i: u32| format!("object {i} ").repeat(300).into_bytes();
    for i in 0..200u32 {
        write(&c, pool, &format!("o{i}"), &data(i)).await;
    }
    wait_exit(pid, "osd.2 with a failed store did not stop");
    assert!(
        count_in_log(&cl, "osd.2", "local store failed, stopping this OSD") > 0
            && count_in_log(&cl, "osd.2", "No space left on device (injected)") > 0,
        "the cause is not in osd.2's log"
    );
    bounded("osd.2 marked down", async {
        while c
            .monc()
            .refresh_map()
            .await
            .expect("map")
            .osds
            .get(&2)
            .is_some_and(|o| o.up)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for i in 0..200u32 {
        assert_eq!(read(&c, pool, &format!("o{i}")).await, data(i), "o{i}");
    }
}

/// Full ratios (`ceph osd set-full-ratio|set-nearfull-ratio`): OSDs report
/// their filesystem with each beacon; above the nearfull ratio health
/// warns (OSD_NEARFULL), above the full one it errs (OSD_FULL) and PGs on
/// full OSDs refuse writes that need space with ENOSPC while reads and
/// deletes go on; lowering the fill below the ratio (here: raising the
/// ratio) lets writes in again. Bad ratios are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_osds_refuse_writes_that_need_space_and_take_deletes() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_min1(&c, "t").await;
    wait_clean(&c).await;
    write(&c, pool, "keep", b"kept").await;
    write(&c, pool, "gone", b"to delete").await;
    let (code, _, err) = ceph(&cl, &["osd", "set-full-ratio", "1.5"]);
    assert_eq!(
        (code, err.as_str()),
        (
            22,
            "Error EINVAL: invalid ratio '1.5': a number in (0, 1]\n"
        )
    );
    let (code, _, err) = ceph(&cl, &["osd", "set-nearfull-ratio", "0.99"]);
    assert_eq!(code, 22, "{err}");
    assert!(
        err.contains("must not exceed the full ratio (0.95)"),
        "{err}"
    );
    // This disk is more than 2 % used: every OSD is near full, then full.
    let (code, _, err) = ceph(&cl, &["osd", "set-nearfull-ratio", "0.01"]);
    assert_eq!(code, 0, "{err}");
    wait_ceph(&cl, &["health"], |o| o.contains("3 nearfull osd(s)"));
    let (code, _, err) = ceph(&cl, &["osd", "set-full-ratio", "0.02"]);
    assert_eq!(code, 0, "{err}");
    let detail = wait_ceph(&cl, &["health", "detail"], |o| {
        o.starts_with("HEALTH_ERR 3 full osd(s)")
    });
    assert!(
        detail.contains("[ERR] OSD_FULL: 3 full osd(s)\n    osd.0 is full ("),
        "{detail}"
    );
    let put = |name: &str| {
        OpRequest::new(ObjectId::new(pool, name)).op(Op::WriteFull(Bytes::from_static(b"more")))
    };
    // The OSDs learn it with their next beacon (1 s).
    bounded("writes refused", async {
        loop {
            match c.operate(put("new")).await {
                Err(e) if e.errno == quarry_common::Errno::ENOSPC => break,
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    assert_eq!(read(&c, pool, "keep").await, b"kept");
    bounded(
        "delete",
        c.operate(OpRequest::new(ObjectId::new(pool, "gone")).op(Op::Remove)),
    )
    .await
    .expect("a full cluster still takes deletes");
    // Back below the ratios: writes go in again.
    for (cmd, r) in [("set-full-ratio", "0.99"), ("set-nearfull-ratio", "0.98")] {
        let (code, _, err) = ceph(&cl, &["osd", cmd, r]);
        assert_eq!(code, 0, "{err}");
    }
    bounded("writes accepted again", async {
        while c.operate(put("new")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(read(&c, pool, "new").await, b"more");
    wait_ceph(&cl, &["health"], |o| !o.contains("full"));
}
