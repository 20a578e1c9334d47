//! One monitor: authentication, commands, subscriptions, tickets, caps,
//! persistence across restarts, bad input.

mod common;

use std::time::Duration;

use common::*;
use quarry_auth::{verify_ticket, Secret};
use quarry_common::Errno;
use quarry_monc::{
    ClusterStatus, Health, MonClient, MonClientConfig, MonCommand, MonReply, PgScrubErrors,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Start the single monitor `a` again on its data directory and address,
/// without a keyring: everything comes from its store.
async fn restart_single(
    dir: &std::path::Path,
    addr: &str,
    keyring: &std::path::Path,
) -> quarry_mon::MonHandle {
    let mut cfg = common::mon_cfg(
        "a",
        0,
        dir,
        &[quarry_map::MonInfo {
            name: "a".into(),
            rank: 0,
            addr: addr.to_string(),
        }],
        keyring,
    );
    cfg.keyring = None;
    quarry_mon::start(cfg).await.expect("restart")
}

fn pool_create(name: &str) -> MonCommand {
    MonCommand::PoolCreate {
        name: name.into(),
        pg_num: Some(8),
        size: Some(3),
        min_size: None,
        application: Some("rbd".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_commands_and_subscriptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 1).await;
    let addrs = vec![mon.addr().to_string()];
    let admin = client(&addrs, &keyring, "client.admin").await;
    assert_eq!(admin.map().fsid, "fsid-test-1");
    assert!(admin.map().epoch >= 1);
    assert!(admin.global_id() > 0);

    // Wrong key: refused at once with EACCES, not a timeout.
    let bad = MonClient::connect(MonClientConfig {
        mon_addrs: addrs.clone(),
        entity: "client.admin".into(),
        secret: Secret::generate(0),
        timeout: Duration::from_secs(60),
        ping: Default::default(),
    })
    .await
    .expect_err("wrong key must fail");
    assert_eq!(bad.errno(), Errno::EACCES, "{bad}");
    assert!(bad.to_string().contains("authentication error"), "{bad}");

    // Unknown entity: refused at once with a clear message.
    let unk = MonClient::connect(MonClientConfig {
        mon_addrs: addrs.clone(),
        entity: "client.nosuchuser".into(),
        secret: Secret::generate(0),
        timeout: Duration::from_secs(60),
        ping: Default::default(),
    })
    .await
    .expect_err("unknown entity must fail");
    assert_eq!(unk.errno(), Errno::EACCES, "{unk}");
    assert!(
        unk.to_string().contains("unknown entity client.nosuchuser"),
        "{unk}"
    );

    // Pools.
    let mut sub = admin.subscribe();
    let before = admin.map().epoch;
    let r = admin.command(pool_create("rbd")).await.expect("create rbd");
    let MonReply::PoolCreated { pool: rbd, epoch } = r else {
        panic!("{r:?}")
    };
    assert!(epoch > before);
    // The subscription sees the new epoch (the command returns once it is known).
    tokio::time::timeout(Duration::from_secs(10), sub.wait_for(|m| m.epoch >= epoch))
        .await
        .expect("subscription delivers")
        .expect("watch open");
    assert!(admin.map().pool_by_name("rbd").is_some());
    let e = admin.command(pool_create("rbd")).await.expect_err("exists");
    assert_eq!(e.errno(), Errno::EEXIST);
    admin
        .command(pool_create("data"))
        .await
        .expect("create data");
    match admin.command(MonCommand::PoolList).await.expect("ls") {
        MonReply::Pools(p) => {
            let names: Vec<_> = p.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["rbd", "data"]);
            assert_eq!(p[0].min_size, 2);
        }
        other => panic!("{other:?}"),
    }
    let e = admin
        .command(MonCommand::PoolSet {
            name: "rbd".into(),
            var: "size".into(),
            val: "eleven".into(),
        })
        .await
        .expect_err("bad value");
    assert_eq!(e.errno(), Errno::EINVAL);

    // Snapshot ids strictly increase; removal is recorded.
    let mut last = 0;
    for _ in 0..5 {
        match admin
            .command(MonCommand::SnapCreate { pool: rbd })
            .await
            .expect("snap")
        {
            MonReply::Snap { snap, .. } => {
                assert!(snap > last, "{snap} after {last}");
                last = snap;
            }
            other => panic!("{other:?}"),
        }
    }
    admin
        .command(MonCommand::SnapRemove { pool: rbd, snap: 2 })
        .await
        .expect("snap rm");
    assert_eq!(admin.map().pools[&rbd].removed_snaps, vec![2]);
    assert_eq!(admin.map().pools[&rbd].snap_seq, last);

    // A restricted user: profile rbd on one pool.
    let r = admin
        .command(MonCommand::AuthGetOrCreate {
            entity: "client.glance".into(),
            caps: vec![
                ("mon".into(), "profile rbd".into()),
                ("osd".into(), "profile rbd pool=data".into()),
            ],
        })
        .await
        .expect("get-or-create");
    let MonReply::Auth(entries) = r else {
        panic!("{r:?}")
    };
    let section = entries[0].keyring_section();
    assert!(
        section.starts_with("[client.glance]\n\tkey = "),
        "{section}"
    );
    assert!(
        section.contains("caps osd = \"profile rbd pool=data\""),
        "{section}"
    );
    let gkey = Secret::from_base64(&entries[0].key).expect("key");
    let e = admin
        .command(MonCommand::AuthGetOrCreate {
            entity: "client.glance".into(),
            caps: vec![("mon".into(), "allow *".into())],
        })
        .await
        .expect_err("caps mismatch");
    assert_eq!(e.errno(), Errno::EINVAL);
    let e = admin
        .command(MonCommand::AuthGetOrCreate {
            entity: "client.bad".into(),
            caps: vec![("osd".into(), "allow rwz".into())],
        })
        .await
        .expect_err("malformed caps");
    assert_eq!(e.errno(), Errno::EINVAL);
    assert!(e.to_string().contains("invalid caps"), "{e}");

    let glance = MonClient::connect(MonClientConfig {
        mon_addrs: addrs.clone(),
        entity: "client.glance".into(),
        secret: gkey,
        timeout: Duration::from_secs(20),
        ping: Default::default(),
    })
    .await
    .expect("glance connects");
    assert!(glance.map().pool_by_name("data").is_some());
    let e = glance
        .command(pool_create("mine"))
        .await
        .expect_err("no mon write cap");
    assert_eq!(e.errno(), Errno::EACCES);
    let e = glance
        .command(MonCommand::AuthList)
        .await
        .expect_err("no auth cap");
    assert_eq!(e.errno(), Errno::EACCES);
    let data = admin.map().pool_by_name("data").expect("data").id;
    glance
        .command(MonCommand::SnapCreate { pool: data })
        .await
        .expect("snap in its own pool");
    let e = glance
        .command(MonCommand::SnapCreate { pool: rbd })
        .await
        .expect_err("snap in another pool");
    assert_eq!(e.errno(), Errno::EPERM);

    // Tickets: an OSD gets the service key and verifies a client's ticket.
    let osd = client(&addrs, &keyring, "osd.0").await;
    let skey = osd.service_key().await.expect("service key");
    let t = glance.ticket().await.expect("ticket");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = verify_ticket(&skey, &t.blob, now).expect("valid ticket");
    assert_eq!(claims.entity, "client.glance");
    assert_eq!(claims.global_id, glance.global_id());
    assert_eq!(
        claims.session_key, t.session_key,
        "client unwrapped the same session key"
    );
    assert!(claims.caps.allows("data", "", true));
    assert!(!claims.caps.allows("rbd", "", false));
    let mut tampered = t.blob.to_vec();
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    assert!(verify_ticket(&skey, &tampered, now).is_err());
    let expired = verify_ticket(&skey, &t.blob, t.expires_unix).expect_err("expired");
    assert_eq!(expired.errno(), Errno::EACCES);
    // Only OSDs get the service key.
    let e = admin.service_key().await.expect_err("admin is no OSD");
    assert_eq!(e.errno(), Errno::EACCES);
    // An OSD may only boot as itself.
    let e = osd
        .osd_boot(1, "127.0.0.1:7000".into(), "h".into(), None)
        .await
        .expect_err("osd.0 booting as osd.1");
    assert_eq!(e.errno(), Errno::EACCES);

    // auth del: the user can no longer connect.
    admin
        .command(MonCommand::AuthDel {
            entity: "client.glance".into(),
        })
        .await
        .expect("del");
    let e = admin
        .command(MonCommand::AuthGet {
            entity: "client.glance".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(e.errno(), Errno::ENOENT);

    // Status.
    match admin.command(MonCommand::Status).await.expect("status") {
        MonReply::Status(s) => {
            assert_eq!(s.leader.as_deref(), Some("a"));
            assert_eq!(s.num_pools, 2);
            assert_eq!(s.num_pgs, 16);
        }
        other => panic!("{other:?}"),
    }
    mon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_monitors_time_out() {
    let port = free_port();
    let e = MonClient::connect(MonClientConfig {
        mon_addrs: vec![format!("127.0.0.1:{port}")],
        entity: "client.admin".into(),
        secret: Secret::generate(0),
        timeout: Duration::from_millis(800),
        ping: Default::default(),
    })
    .await
    .expect_err("nobody listens");
    assert_eq!(e.errno(), Errno::ETIMEDOUT, "{e}");
    let e = MonClient::connect(MonClientConfig {
        mon_addrs: vec![],
        entity: "client.admin".into(),
        secret: Secret::generate(0),
        timeout: Duration::from_millis(800),
        ping: Default::default(),
    })
    .await
    .expect_err("no monitors");
    assert_eq!(e.errno(), Errno::ENOENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 1).await;
    let addr = mon.addr().to_string();
    let admin = client(std::slice::from_ref(&addr), &keyring, "client.admin").await;
    admin.command(pool_create("rbd")).await.expect("create");
    let pool = admin.map().pool_by_name("rbd").expect("rbd").id;
    let MonReply::Snap { snap, .. } = admin
        .command(MonCommand::SnapCreate { pool })
        .await
        .expect("snap")
    else {
        panic!()
    };
    let epoch = admin.map().epoch;
    let gid = admin.global_id();
    drop(admin);
    mon.shutdown().await;

    let mon = restart_single(dir.path(), &addr, &keyring).await;
    let admin = client(&[addr], &keyring, "client.admin").await;
    let m = admin.map();
    assert!(m.epoch >= epoch, "epoch went back: {} < {epoch}", m.epoch);
    assert_eq!(m.pool_by_name("rbd").map(|p| p.snap_seq), Some(snap));
    assert!(admin.global_id() > gid, "global ids are never reused");
    let MonReply::Snap { snap: next, .. } = admin
        .command(MonCommand::SnapCreate { pool })
        .await
        .expect("snap")
    else {
        panic!()
    };
    assert!(next > snap);
    mon.shutdown().await;
}

/// The applied state is stored without an fsync (only the raft log is;
/// the committed index is not stored at all, older versions stored it
/// without an fsync): a crash may lose its latest records. Simulate
/// exactly that (put back the records of an earlier restart point while
/// the log keeps its later entries) and check that a restart re-applies the
/// log: no snap id handed out before is handed out again, and the map has
/// them all. Fails if the state record were the only copy of the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reapplies_the_log_past_lost_state_records() {
    use redb::TableDefinition;
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
    let records = ["state_machine", "committed"];
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("mon.a").join("store.redb");
    let (mon, keyring) = single_mon(dir.path(), 1).await;
    let addr = mon.addr().to_string();
    let restart = |addr: String, keyring: std::path::PathBuf, root: std::path::PathBuf| async move {
        let mut cfg = common::mon_cfg(
            "a",
            0,
            &root,
            &[quarry_map::MonInfo {
                name: "a".into(),
                rank: 0,
                addr,
            }],
            &keyring,
        );
        cfg.keyring = None;
        quarry_mon::start(cfg).await.expect("restart")
    };
    let admin = client(std::slice::from_ref(&addr), &keyring, "client.admin").await;
    admin.command(pool_create("rbd")).await.expect("create");
    let pool = admin.map().pool_by_name("rbd").expect("rbd").id;
    drop(admin);
    mon.shutdown().await;

    // The restart point: state and committed index as stored now.
    let saved: Vec<(String, Vec<u8>)> = {
        let db = redb::Database::create(&db_path).expect("open store");
        let tx = db.begin_read().expect("read tx");
        let t = tx.open_table(META).expect("meta");
        records
            .iter()
            .filter_map(|k| {
                t.get(*k)
                    .expect("get")
                    .map(|v| (k.to_string(), v.value().to_vec()))
            })
            .collect()
    };
    assert!(saved.iter().any(|(k, _)| k == "state_machine"));

    let mon = restart(addr.clone(), keyring.clone(), dir.path().to_path_buf()).await;
    let admin = client(std::slice::from_ref(&addr), &keyring, "client.admin").await;
    let mut snaps = Vec::new();
    for _ in 0..3 {
        match admin.command(MonCommand::SnapCreate { pool }).await {
            Ok(MonReply::Snap { snap, .. }) => snaps.push(snap),
            other => panic!("snap create: {other:?}"),
        }
    }
    let last = *snaps.last().expect("three snaps");
    drop(admin);
    mon.shutdown().await;

    // "Crash": the later state records are lost, the durable log stays.
    {
        let db = redb::Database::create(&db_path).expect("open store");
        let tx = db.begin_write().expect("write tx");
        {
            let mut t = tx.open_table(META).expect("meta");
            for k in records {
                let _ = t.remove(k).expect("remove");
            }
            for (k, v) in &saved {
                t.insert(k.as_str(), v.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }

    let mon = restart(addr.clone(), keyring.clone(), dir.path().to_path_buf()).await;
    let admin = client(std::slice::from_ref(&addr), &keyring, "client.admin").await;
    let next = match admin.command(MonCommand::SnapCreate { pool }).await {
        Ok(MonReply::Snap { snap, .. }) => snap,
        other => panic!("snap create after the restart: {other:?}"),
    };
    assert!(
        next > last,
        "snap id {next} handed out again (ids before the restart: {snaps:?})"
    );
    let seq = admin.map().pool_by_name("rbd").map(|p| p.snap_seq);
    assert_eq!(seq, Some(next));
    mon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osd_boot_beacons_down_then_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 2).await;
    let addrs = vec![mon.addr().to_string()];
    let osd = client(&addrs, &keyring, "osd.0").await;
    let e0 = osd
        .osd_boot(0, "127.0.0.1:6800".into(), "host-a".into(), None)
        .await
        .expect("boot");
    let m = osd.map();
    let o = &m.osds[&0];
    assert!(o.up && o.in_cluster);
    assert_eq!(o.up_from, e0);
    // Beacons keep it up past the grace (2 s).
    for _ in 0..15 {
        osd.osd_beacon(0).await.expect("beacon");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(osd.map().osds[&0].up, "beaconing OSD stayed up");
    // Silence: marked down after the grace, then out after the interval.
    let mut sub = osd.subscribe();
    tokio::time::timeout(Duration::from_secs(30), sub.wait_for(|m| !m.osds[&0].up))
        .await
        .expect("marked down")
        .expect("watch");
    tokio::time::timeout(
        Duration::from_secs(30),
        sub.wait_for(|m| !m.osds[&0].in_cluster),
    )
    .await
    .expect("marked out")
    .expect("watch");
    // Booting again brings it up and (auto-)in with a new up_from.
    let e1 = osd
        .osd_boot(0, "127.0.0.1:6801".into(), "host-a".into(), None)
        .await
        .expect("reboot");
    let m = osd.map();
    assert!(m.osds[&0].up && m.osds[&0].in_cluster);
    assert!(e1 > e0);
    assert_eq!(m.osds[&0].addr, "127.0.0.1:6801");
    // PG activation is recorded in the map.
    let admin = client(&addrs, &keyring, "client.admin").await;
    admin.command(pool_create("rbd")).await.expect("pool");
    let pool = admin.map().pool_by_name("rbd").expect("rbd").id;
    let pg = quarry_map::PgId { pool, seed: 3 };
    let e = osd.pg_activated(pg, e1, vec![0]).await.expect("activated");
    let m = osd.wait_for_epoch(e).await.expect("epoch");
    assert_eq!(m.pg_history[&pg].acting, vec![0]);
    // Concurrent activations (an OSD starting all its PGs) all land.
    let mut tasks = Vec::new();
    for seed in 0..8u32 {
        let osd = osd.clone();
        tasks.push(tokio::spawn(async move {
            osd.pg_activated(quarry_map::PgId { pool, seed }, e1, vec![0])
                .await
        }));
    }
    let mut newest = 0;
    for t in tasks {
        newest = newest.max(t.await.expect("join").expect("activated"));
    }
    let m = osd.wait_for_epoch(newest).await.expect("epoch");
    assert_eq!(m.pg_history.len(), 8);
    // Admin marks it down and out by hand; out stays out across a boot.
    admin
        .command(MonCommand::OsdOut { id: 0 })
        .await
        .expect("out");
    osd.osd_boot(0, "127.0.0.1:6801".into(), "host-a".into(), None)
        .await
        .expect("boot");
    assert!(!osd.map().osds[&0].in_cluster);
    admin
        .command(MonCommand::OsdIn { id: 0 })
        .await
        .expect("in");
    assert!(admin.map().osds[&0].in_cluster);
    let e = admin
        .command(MonCommand::OsdDown { id: 9 })
        .await
        .expect_err("no such osd");
    assert_eq!(e.errno(), Errno::ENOENT);
    mon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 0).await;
    let addr = mon.addr().to_string();
    let admin = client(std::slice::from_ref(&addr), &keyring, "client.admin").await;

    async fn closed_after(addr: &str, bytes: &[u8]) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let mut buf = [0u8; 256];
        // The monitor must drop the connection (EOF or reset), not hang.
        let r = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "connection not closed after {} bad bytes",
            bytes.len()
        );
    }
    // Garbage, a truncated header, an oversized length, an unknown kind
    // and a request before authenticating.
    closed_after(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789").await;
    let hello = quarry_proto::Frame::new(
        quarry_monc::wire::KIND_REQUEST,
        1,
        &quarry_monc::wire::Request::GetMap,
        bytes::Bytes::new(),
    )
    .expect("frame");
    let mut h = hello.header().expect("header");
    h[16..20].copy_from_slice(&(u32::MAX).to_le_bytes());
    let crc = crc32c_of(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    closed_after(&addr, &h).await;
    let mut unknown = Vec::new();
    let mut f = hello.clone();
    f.kind = 200;
    quarry_proto::write_frame(&mut unknown, &f)
        .await
        .expect("encode");
    closed_after(&addr, &unknown).await;
    let mut early = Vec::new();
    quarry_proto::write_frame(&mut early, &hello)
        .await
        .expect("encode");
    closed_after(&addr, &early).await;
    let mut junk_body = Vec::new();
    let f = quarry_proto::Frame {
        kind: quarry_monc::wire::KIND_REQUEST,
        flags: 0,
        request_id: 1,
        body: bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]),
        data: bytes::Bytes::new(),
    };
    quarry_proto::write_frame(&mut junk_body, &f)
        .await
        .expect("encode");
    closed_after(&addr, &junk_body[..junk_body.len() - 2]).await;

    // The monitor still serves everyone else.
    admin.refresh_map().await.expect("still serving");
    admin
        .command(pool_create("after"))
        .await
        .expect("still committing");
    mon.shutdown().await;
}

fn crc32c_of(b: &[u8]) -> u32 {
    // Same polynomial as quarry-proto (Castagnoli), computed bitwise to keep
    // the test free of extra dependencies.
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_or_tampered_handshake_is_refused() {
    use quarry_auth::handshake;
    use quarry_monc::wire::{Request, Response};
    use quarry_monc::{decode_response, request_frame, Conn};

    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 0).await;
    let addr = mon.addr().to_string();
    // A normal client first: it waits until the cluster is bootstrapped.
    let _admin = client(std::slice::from_ref(&addr), &keyring, "client.admin").await;
    let key = key_of(&keyring, "client.admin");
    let t = Duration::from_secs(10);
    let cn = handshake::random_nonce();
    let hello = Request::Hello {
        entity: "client.admin".into(),
        client_nonce: cn,
        sign: true,
    };
    let challenge = |f: &quarry_proto::Frame| match decode_response(f).expect("challenge") {
        Response::Challenge {
            server_nonce,
            server_proof,
            sign: true,
        } => (server_nonce, server_proof),
        other => panic!("{other:?}"),
    };

    // A genuine exchange, recorded by an eavesdropper.
    let c1 = Conn::connect(&addr, t, None).await.expect("connect");
    let (sn1, sp1) = challenge(
        &c1.call(request_frame(&hello).expect("f"), t)
            .await
            .expect("hello"),
    );
    assert_eq!(
        sp1,
        handshake::server_proof(&key, "client.admin", &cn, &sn1, 3)
    );
    let proof1 = handshake::client_proof(&key, "client.admin", &cn, &sn1, 3);
    let ok = c1
        .call(
            request_frame(&Request::Prove { proof: proof1 }).expect("f"),
            t,
        )
        .await
        .expect("prove");
    assert!(matches!(decode_response(&ok), Ok(Response::AuthOk { .. })));

    // Replaying the recorded proof on a new connection fails: fresh nonce.
    let c2 = Conn::connect(&addr, t, None).await.expect("connect");
    let (sn2, _) = challenge(
        &c2.call(request_frame(&hello).expect("f"), t)
            .await
            .expect("hello"),
    );
    assert_ne!(sn1, sn2, "server nonces are fresh");
    let r = c2
        .call(
            request_frame(&Request::Prove { proof: proof1 }).expect("f"),
            t,
        )
        .await
        .expect("reply");
    let e = decode_response(&r).expect_err("replay refused");
    assert_eq!(e.errno(), Errno::EACCES, "{e}");
    assert!(e.to_string().contains("wrong key"), "{e}");
    c2.closed().await;

    // A tampered proof fails too, and so does skipping the handshake.
    let c3 = Conn::connect(&addr, t, None).await.expect("connect");
    let (sn3, _) = challenge(
        &c3.call(request_frame(&hello).expect("f"), t)
            .await
            .expect("hello"),
    );
    let mut bad = handshake::client_proof(&key, "client.admin", &cn, &sn3, 3);
    bad[0] ^= 0x80;
    let r = c3
        .call(request_frame(&Request::Prove { proof: bad }).expect("f"), t)
        .await
        .expect("reply");
    assert_eq!(
        decode_response(&r).expect_err("tampered").errno(),
        Errno::EACCES
    );
    let c4 = Conn::connect(&addr, t, None).await.expect("connect");
    let r = c4
        .call(request_frame(&Request::GetMap).expect("f"), t)
        .await
        .expect("reply");
    assert_eq!(
        decode_response(&r).expect_err("unauthenticated").errno(),
        Errno::EACCES
    );
    mon.shutdown().await;
}

/// `config set mon mon_osd_down_out_interval N` applies to a running
/// monitor whose conf file does not set the option; a conf-file value wins
/// over the database (Ceph's precedence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_out_interval_follows_the_config_database() {
    for from_file in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = write_keyring(dir.path(), 1);
        let mons = vec![quarry_map::MonInfo {
            name: "a".into(),
            rank: 0,
            addr: format!("127.0.0.1:{}", free_port()),
        }];
        let mut cfg = mon_cfg("a", 0, dir.path(), &mons, &keyring);
        cfg.timings.osd_down_out_interval = Duration::from_secs(600);
        if from_file {
            cfg.timings_from_file = vec!["mon_osd_down_out_interval".into()];
        }
        let mon = quarry_mon::start(cfg).await.expect("start mon");
        let addrs = vec![mon.addr().to_string()];
        let admin = client(&addrs, &keyring, "client.admin").await;
        admin
            .command(MonCommand::ConfigSet {
                who: "mon".into(),
                name: "mon osd down out interval".into(),
                value: "1".into(),
            })
            .await
            .expect("config set");
        let osd = client(&addrs, &keyring, "osd.0").await;
        osd.osd_boot(0, "127.0.0.1:6800".into(), "host-a".into(), None)
            .await
            .expect("boot");
        // Silent: down after the grace (2 s), then out after 1 s from the
        // database, or never within the wait when the file says 600 s.
        let mut sub = osd.subscribe();
        tokio::time::timeout(Duration::from_secs(30), sub.wait_for(|m| !m.osds[&0].up))
            .await
            .expect("marked down")
            .expect("watch");
        let out = tokio::time::timeout(
            Duration::from_secs(if from_file { 6 } else { 30 }),
            sub.wait_for(|m| !m.osds[&0].in_cluster),
        )
        .await;
        assert_eq!(
            out.is_ok(),
            !from_file,
            "from_file={from_file}: marked out {}",
            if out.is_ok() { "early" } else { "never" }
        );
        mon.shutdown().await;
    }
}

async fn status(c: &MonClient) -> ClusterStatus {
    match c.command(MonCommand::Status).await {
        Ok(MonReply::Status(s)) => s,
        other => panic!("status: {other:?}"),
    }
}

/// Scrub errors a PG's primary reports turn health to HEALTH_ERR
/// (OSD_SCRUB_ERRORS, PG_DAMAGED naming the PG) until a report with none;
/// they are replicated state, so a restarted monitor still has them, and
/// reports of PGs that do not exist are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_errors_make_health_err_until_cleared_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 2).await;
    let addr = mon.addr().to_string();
    let addrs = vec![addr.clone()];
    let admin = client(&addrs, &keyring, "client.admin").await;
    let osd0 = client(&addrs, &keyring, "osd.0").await;
    let osd1 = client(&addrs, &keyring, "osd.1").await;
    osd0.osd_boot(0, "127.0.0.1:6800".into(), "host-a".into(), None)
        .await
        .expect("boot 0");
    osd1.osd_boot(1, "127.0.0.1:6801".into(), "host-b".into(), None)
        .await
        .expect("boot 1");
    // Size 2 on two OSDs: no other check fires.
    let create = MonCommand::PoolCreate {
        name: "rbd".into(),
        pg_num: Some(8),
        size: Some(2),
        min_size: None,
        application: Some("rbd".into()),
    };
    admin.command(create).await.expect("pool");
    let pool = admin
        .refresh_map()
        .await
        .expect("map")
        .pool_by_name("rbd")
        .expect("rbd")
        .id;
    let pg = |seed| quarry_map::PgId { pool, seed };
    let report = |seed, errors| PgScrubErrors {
        pg: pg(seed),
        errors,
        objects: 1,
    };
    assert_eq!(status(&admin).await.health, Health::Ok);
    osd0.pg_scrubbed(report(3, 2)).await.expect("report");
    let st = status(&admin).await;
    assert_eq!(st.health, Health::Err, "{st:?}");
    assert_eq!(st.inconsistent, vec![report(3, 2)]);
    let codes: Vec<&str> = st.checks.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes, ["OSD_SCRUB_ERRORS", "PG_DAMAGED"], "{st:?}");
    assert_eq!(st.checks[0].summary, "2 scrub errors");
    assert_eq!(st.checks[0].severity, Health::Err);
    assert_eq!(
        st.checks[1].summary,
        "Possible data damage: 1 pg inconsistent"
    );
    assert_eq!(
        st.checks[1].detail,
        [format!(
            "pg {} is active+clean+inconsistent, acting []",
            pg(3)
        )],
        "{st:?}"
    );
    // Another PG's primary reports too: both count.
    osd1.pg_scrubbed(report(5, 1)).await.expect("report");
    let st = status(&admin).await;
    assert_eq!(st.inconsistent, vec![report(3, 2), report(5, 1)]);
    assert_eq!(st.checks[0].summary, "3 scrub errors", "{st:?}");
    assert_eq!(
        st.checks[1].summary,
        "Possible data damage: 2 pgs inconsistent"
    );
    // PGs that do not exist are refused.
    let e = osd0
        .pg_scrubbed(report(8, 1))
        .await
        .expect_err("seed past pg_num");
    assert_eq!(e.errno(), Errno::ENOENT, "{e}");
    let ghost = PgScrubErrors {
        pg: quarry_map::PgId { pool: 999, seed: 0 },
        errors: 1,
        objects: 1,
    };
    assert_eq!(
        osd0.pg_scrubbed(ghost).await.expect_err("no pool").errno(),
        Errno::ENOENT
    );
    // The monitor restarts: the errors are still there.
    drop((admin, osd0, osd1));
    mon.shutdown().await;
    let mon = restart_single(dir.path(), &addr, &keyring).await;
    let admin = client(&addrs, &keyring, "client.admin").await;
    let st = status(&admin).await;
    assert_eq!(st.inconsistent, vec![report(3, 2), report(5, 1)], "{st:?}");
    // Clean scrubs (or full repairs) clear them.
    let osd0 = client(&addrs, &keyring, "osd.0").await;
    osd0.pg_scrubbed(report(3, 0)).await.expect("clean");
    osd0.pg_scrubbed(report(5, 0)).await.expect("clean");
    let st = status(&admin).await;
    assert!(st.inconsistent.is_empty(), "{st:?}");
    assert!(
        !st.checks
            .iter()
            .any(|c| c.code.contains("SCRUB") || c.code == "PG_DAMAGED"),
        "{st:?}"
    );
    mon.shutdown().await;
}

/// `ceph osd set nodown|noout`: the failure detector marks a silent OSD
/// neither down nor out while the flag is set, and does once it is
/// cleared; flags show in health as OSDMAP_FLAGS; unsupported flags are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodown_and_noout_hold_the_failure_detector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mon, keyring) = single_mon(dir.path(), 1).await;
    let addrs = vec![mon.addr().to_string()];
    let admin = client(&addrs, &keyring, "client.admin").await;
    let osd = client(&addrs, &keyring, "osd.0").await;
    let flag = |flag: &str, set| MonCommand::OsdFlag {
        flag: flag.into(),
        set,
    };
    admin.command(flag("nodown", true)).await.expect("nodown");
    admin.command(flag("noout", true)).await.expect("noout");
    let e = admin
        .command(flag("pause", true))
        .await
        .expect_err("unsupported flag");
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    let st = status(&admin).await;
    assert_eq!(st.osd_flags, ["nodown", "noout"]);
    assert_eq!(st.health, Health::Warn, "{st:?}");
    assert_eq!(st.checks[0].code, "OSDMAP_FLAGS");
    assert_eq!(st.checks[0].summary, "nodown,noout flag(s) set");
    osd.osd_boot(0, "127.0.0.1:6800".into(), "host-a".into(), None)
        .await
        .expect("boot");
    // Silent for twice the grace (2 s): still up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        admin.refresh_map().await.expect("map").osds[&0].up,
        "nodown"
    );
    admin.command(flag("nodown", false)).await.expect("unset");
    let mut sub = admin.subscribe();
    tokio::time::timeout(Duration::from_secs(15), sub.wait_for(|m| !m.osds[&0].up))
        .await
        .expect("marked down once nodown is cleared")
        .expect("watch");
    // Down for twice the out interval (3 s): still in.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        admin.refresh_map().await.expect("map").osds[&0].in_cluster,
        "noout"
    );
    admin.command(flag("noout", false)).await.expect("unset");
    tokio::time::timeout(
        Duration::from_secs(15),
        sub.wait_for(|m| !m.osds[&0].in_cluster),
    )
    .await
    .expect("marked out once noout is cleared")
    .expect("watch");
    let st = status(&admin).await;
    assert!(st.osd_flags.is_empty(), "{st:?}");
    mon.shutdown().await;
}

/// Fill `path` with zeros until the filesystem has at most `keep` bytes free.
fn fill_to(path: &std::path::Path, fs: &std::path::Path, keep: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open filler");
    let chunk = vec![0u8; 64 << 10];
    loop {
        let (_, avail) = quarry_common::fsspace::fs_space(fs).expect("statvfs");
        if avail <= keep {
            return;
        }
        let n = (avail - keep).min(chunk.len() as u64) as usize;
        match f.write_all(&chunk[..n]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling: {e}"),
        }
    }
}

/// The health check `code` of the status, waiting up to 5 s for it.
async fn wait_check(c: &MonClient, code: &str) -> quarry_monc::HealthCheck {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = status(c).await;
        if let Some(ch) = st.checks.iter().find(|ch| ch.code == code) {
            return ch.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no {code}: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A monitor's filling disk is reported (MON_DISK_LOW, then MON_DISK_CRIT);
/// when a write finally fails, that command is refused (never acknowledged)
/// and the monitor stops (`run` returns the error) instead of serving a
/// state it can no longer change; restarted with space again, it has every
/// acknowledged change. Needs root (mounts a small tmpfs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_then_stops_the_monitor_losing_no_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&fs)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("SKIPPED: needs root to mount a small tmpfs");
        return;
    }
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _umount = Umount(fs.clone());
    let keyring = write_keyring(dir.path(), 0);
    let mons = vec![quarry_map::MonInfo {
        name: "a".into(),
        rank: 0,
        addr: format!("127.0.0.1:{}", free_port()),
    }];
    let mut cfg = mon_cfg("a", 0, &fs, &mons, &keyring);
    cfg.data_avail_warn = 30;
    let run = tokio::spawn(quarry_mon::run(cfg.clone()));
    let addrs = vec![mons[0].addr.clone()];
    let admin = client(&addrs, &keyring, "client.admin").await;
    let st = status(&admin).await;
    assert!(
        !st.checks.iter().any(|c| c.code.starts_with("MON_DISK")),
        "{st:?}"
    );

    let (total, _) = quarry_common::fsspace::fs_space(&fs).expect("statvfs");
    let filler = fs.join("filler");
    fill_to(&filler, &fs, total / 5);
    let low = wait_check(&admin, "MON_DISK_LOW").await;
    assert_eq!(low.severity, Health::Warn);
    assert_eq!(low.summary, "mon a is low on available space");
    assert_eq!(low.detail.len(), 1);
    assert!(
        low.detail[0].starts_with("mon.a has ") && low.detail[0].ends_with("% avail"),
        "{low:?}"
    );
    fill_to(&filler, &fs, total / 50);
    let crit = wait_check(&admin, "MON_DISK_CRIT").await;
    assert_eq!(crit.summary, "mon a is very low on available space");
    assert_eq!(status(&admin).await.health, Health::Err);

    let set = |i: usize| MonCommand::ConfigSet {
        who: format!("client.t{i}"),
        name: "rbd_cache".into(),
        value: "false".into(),
    };
    // Low on space, the monitor still works.
    let mut acked = Vec::new();
    for i in 0..20 {
        admin
            .command(set(i))
            .await
            .expect("change while low on space");
        acked.push(format!("client.t{i}"));
    }
    // Now nothing is left: changes go on until the store cannot grow.
    fill_to(&filler, &fs, 0);
    let mut refused = None;
    for i in 20..20_000 {
        match admin.command(set(i)).await {
            Ok(_) => acked.push(format!("client.t{i}")),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk must refuse a change at last");
    let ended = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the monitor must stop once its store failed")
        .expect("join");
    let err = ended.expect_err("run must return the store's error");
    assert!(
        err.to_string().contains("No space left on device"),
        "{err} (the refused command said: {refused})"
    );

    // Space again: the restarted monitor has every acknowledged change.
    std::fs::remove_file(&filler).expect("rm filler");
    let mut cfg2 = cfg;
    cfg2.keyring = None;
    let mon = quarry_mon::start(cfg2).await.expect("restart");
    let admin = client(&addrs, &keyring, "client.admin").await;
    let dump = match admin.command(MonCommand::ConfigDump).await {
        Ok(MonReply::Config(v)) => v,
        other => panic!("config dump: {other:?}"),
    };
    for name in &acked {
        assert!(
            dump.iter().any(|e| &e.section == name),
            "acknowledged {name} lost ({} acknowledged)",
            acked.len()
        );
    }
    mon.shutdown().await;
}
