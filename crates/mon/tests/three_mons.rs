//! Three monitors: the cluster keeps working when the leader dies, and the
//! dead monitor catches up when it comes back.

mod common;

use std::time::Duration;

use common::*;
use quarry_map::MonInfo;
use quarry_monc::{MonCommand, MonReply};

fn pool(name: &str) -> MonCommand {
    MonCommand::PoolCreate {
        name: name.into(),
        pg_num: Some(4),
        size: Some(3),
        min_size: None,
        application: None,
    }
}

/// Monitors a, b, c (ranks 0-2) on fresh local ports.
fn three_mon_infos() -> Vec<MonInfo> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| MonInfo {
            name: n.to_string(),
            rank: i as u64,
            addr: format!("127.0.0.1:{}", free_port()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mons_survive_leader_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = write_keyring(dir.path(), 1);
    let mons = three_mon_infos();
    let mut handles = Vec::new();
    for m in &mons {
        let h = quarry_mon::start(mon_cfg(&m.name, m.rank, dir.path(), &mons, &keyring))
            .await
            .expect("start");
        handles.push(Some(h));
    }
    let addrs: Vec<String> = mons.iter().map(|m| m.addr.clone()).collect();
    let admin = client(&addrs, &keyring, "client.admin").await;
    admin.command(pool("rbd")).await.expect("pool on 3 mons");
    let leader = match admin.command(MonCommand::Status).await.expect("status") {
        MonReply::Status(s) => {
            assert_eq!(s.quorum.len(), 3);
            s.leader.expect("a leader")
        }
        other => panic!("{other:?}"),
    };
    let li = mons
        .iter()
        .position(|m| m.name == leader)
        .expect("leader known");
    let epoch_before = admin.map().epoch;

    // Kill the leader.
    handles[li].take().expect("running").shutdown().await;

    // Commands still work (the client moves to a surviving monitor, which
    // forwards to the newly elected leader) and the epoch continues.
    admin
        .command(pool("data"))
        .await
        .expect("pool after leader loss");
    let pool_id = admin.map().pool_by_name("data").expect("data").id;
    let MonReply::Snap { snap, epoch } = admin
        .command(MonCommand::SnapCreate { pool: pool_id })
        .await
        .expect("snap after leader loss")
    else {
        panic!()
    };
    assert_eq!(snap, 1);
    assert!(
        epoch > epoch_before + 1,
        "epoch continues: {epoch} after {epoch_before}"
    );
    match admin.command(MonCommand::Status).await.expect("status") {
        MonReply::Status(s) => assert_ne!(s.leader.as_deref(), Some(leader.as_str())),
        other => panic!("{other:?}"),
    }

    // The old leader comes back from its store and catches up.
    let m = &mons[li];
    let mut cfg = mon_cfg(&m.name, m.rank, dir.path(), &mons, &keyring);
    cfg.keyring = None;
    handles[li] = Some(quarry_mon::start(cfg).await.expect("restart old leader"));
    let only_old = client(std::slice::from_ref(&m.addr), &keyring, "client.admin").await;
    let mut sub = only_old.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        sub.wait_for(|m| {
            m.pools
                .values()
                .any(|p| p.name == "data" && p.snap_seq == 1)
        }),
    )
    .await
    .expect("restarted monitor catches up")
    .expect("watch");

    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_monitor_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = write_keyring(dir.path(), 1);
    let mons = three_mon_infos();
    let cfg_of = |i: usize| {
        let mut c = mon_cfg(&mons[i].name, mons[i].rank, dir.path(), &mons, &keyring);
        // Snapshot and trim the log often, so the lagging monitor cannot
        // catch up from the log alone.
        c.snapshot_logs = 5;
        c
    };
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.push(Some(quarry_mon::start(cfg_of(i)).await.expect("start")));
    }
    let addrs: Vec<String> = mons.iter().map(|m| m.addr.clone()).collect();
    let admin = client(&addrs, &keyring, "client.admin").await;
    admin.command(pool("rbd")).await.expect("pool");
    let leader = match admin.command(MonCommand::Status).await.expect("status") {
        MonReply::Status(s) => s.leader.expect("leader"),
        other => panic!("{other:?}"),
    };
    let fi = mons
        .iter()
        .position(|m| m.name != leader)
        .expect("a follower");
    handles[fi].take().expect("running").shutdown().await;
    let pool_id = admin.map().pool_by_name("rbd").expect("rbd").id;
    for _ in 0..30 {
        admin
            .command(MonCommand::SnapCreate { pool: pool_id })
            .await
            .expect("snap while one monitor is down");
    }
    let mut cfg = cfg_of(fi);
    cfg.keyring = None;
    handles[fi] = Some(quarry_mon::start(cfg).await.expect("restart follower"));
    let only = client(
        std::slice::from_ref(&mons[fi].addr),
        &keyring,
        "client.admin",
    )
    .await;
    let mut sub = only.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        sub.wait_for(|m| m.pools.get(&pool_id).is_some_and(|p| p.snap_seq == 30)),
    )
    .await
    .expect("follower caught up")
    .expect("watch");
    for h in handles.into_iter().flatten() {
        h.shutdown().await;
    }
}

/// Each monitor measures its data filesystem and tells the others, so the
/// one a client asks reports every monitor's free space (here every disk
/// counts as low: `mon_data_avail_warn` 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_monitor_reports_every_monitors_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = write_keyring(dir.path(), 0);
    let mons = three_mon_infos();
    let mut handles = Vec::new();
    for m in &mons {
        let mut cfg = mon_cfg(&m.name, m.rank, dir.path(), &mons, &keyring);
        cfg.data_avail_warn = 100;
        cfg.data_avail_crit = 0;
        handles.push(quarry_mon::start(cfg).await.expect("start"));
    }
    for m in &mons {
        let c = client(std::slice::from_ref(&m.addr), &keyring, "client.admin").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = match c.command(MonCommand::Status).await.expect("status") {
                MonReply::Status(s) => s,
                other => panic!("{other:?}"),
            };
            let low = st.checks.iter().find(|ch| ch.code == "MON_DISK_LOW");
            if let Some(low) = low.filter(|l| l.count == 3) {
                assert_eq!(low.summary, "mons a,b,c are low on available space");
                for (d, n) in low.detail.iter().zip(["a", "b", "c"]) {
                    assert!(
                        d.starts_with(&format!("mon.{n} has ")) && d.ends_with("% avail"),
                        "{low:?}"
                    );
                }
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mon.{} never saw all three disks: {st:?}",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for h in handles {
        h.shutdown().await;
    }
}

/// An OSD's fullness reported to one monitor reaches the others: a client
/// asking another monitor sees OSD_FULL, and an OSD attached to a third is
/// told that OSD is full (so, as a primary, it refuses writes it would
/// send there). Pool usage travels the same way: a pool whose primaries'
/// reports (to two different monitors) add up to its quota is POOL_FULL
/// at a third, and both OSDs are told; raising the quota clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_osd_reported_to_one_monitor_is_known_to_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = write_keyring(dir.path(), 2);
    let mons = three_mon_infos();
    let mut handles = Vec::new();
    for m in &mons {
        let cfg = mon_cfg(&m.name, m.rank, dir.path(), &mons, &keyring);
        handles.push(quarry_mon::start(cfg).await.expect("start"));
    }
    let only = |i: usize| std::slice::from_ref(&mons[i].addr);
    let osd0 = client(only(0), &keyring, "osd.0").await;
    let osd1 = client(only(2), &keyring, "osd.1").await;
    let admin_b = client(only(1), &keyring, "client.admin").await;
    osd0.osd_boot(0, "127.0.0.1:6800".into(), "h0".into(), None)
        .await
        .expect("boot 0");
    osd1.osd_boot(1, "127.0.0.1:6801".into(), "h1".into(), None)
        .await
        .expect("boot 1");
    let pool = match admin_b
        .command(MonCommand::PoolCreate {
            name: "q".into(),
            pg_num: Some(8),
            size: Some(2),
            min_size: None,
            application: None,
        })
        .await
        .expect("pool")
    {
        MonReply::PoolCreated { pool, .. } => pool,
        other => panic!("{other:?}"),
    };
    let quota = |field: &str, value: u64| MonCommand::PoolSetQuota {
        name: "q".into(),
        field: field.into(),
        value,
    };
    admin_b
        .command(quota("max_objects", 10))
        .await
        .expect("quota");
    // Error paths: an unknown pool, an unknown field.
    let e = admin_b
        .command(MonCommand::PoolSetQuota {
            name: "nope".into(),
            field: "max_objects".into(),
            value: 1,
        })
        .await
        .expect_err("unknown pool");
    assert!(e.to_string().contains("unrecognized pool 'nope'"), "{e}");
    let e = admin_b
        .command(quota("max_files", 1))
        .await
        .expect_err("unknown field");
    assert!(
        e.to_string()
            .contains("unrecognized quota field 'max_files'"),
        "{e}"
    );
    // Each OSD leads some of the pool's PGs: 6 + 4 objects together.
    let usage = |objects: u64| {
        vec![quarry_monc::PoolUsage {
            pool,
            objects,
            bytes: objects << 12,
        }]
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // osd.0's disk is 99% used; osd.1's is empty.
        osd0.osd_beacon(0).await.expect("beacon 0");
        osd1.osd_beacon(1).await.expect("beacon 1");
        let told0 = osd0
            .osd_statfs(0, 1000 << 20, 10 << 20, usage(6))
            .await
            .expect("statfs 0");
        let told = osd1
            .osd_statfs(1, 1000 << 20, 1000 << 20, usage(4))
            .await
            .expect("statfs 1");
        let st = match admin_b.command(MonCommand::Status).await.expect("status") {
            MonReply::Status(s) => s,
            other => panic!("{other:?}"),
        };
        let full = st.checks.iter().find(|c| c.code == "OSD_FULL");
        let pool_full = st.checks.iter().find(|c| c.code == "POOL_FULL");
        let quota_told =
            told.quota_full_pools == vec![pool] && told0.quota_full_pools == vec![pool];
        if let (true, true, Some(full), Some(pool_full)) =
            (told.full_osds == vec![0], quota_told, full, pool_full)
        {
            assert_eq!(full.detail, vec!["osd.0 is full (99.0% used)".to_string()]);
            assert_eq!(
                pool_full.detail,
                vec!["pool 'q' is full (running out of quota: max_objects: 10)".to_string()]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "told {told:?}, mon.b status {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every monitor sums the same reports.
    for m in &mons {
        let c = client(std::slice::from_ref(&m.addr), &keyring, "client.admin").await;
        match c
            .command(MonCommand::PoolGetQuota { name: "q".into() })
            .await
            .expect("get-quota")
        {
            MonReply::PoolQuota(q) => {
                assert_eq!(
                    (q.max_objects, q.max_bytes, q.objects, q.bytes),
                    (10, 0, 10, 10 << 12),
                    "mon.{}",
                    m.name
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // A higher quota (or fewer objects) clears it at the next reports.
    admin_b
        .command(quota("max_objects", 11))
        .await
        .expect("raise");
    // osd.1 asks mon.c, which applies the committed change a moment after
    // mon.b answered: poll until it has.
    let told_until = |want: Vec<i64>| {
        let osd1 = &osd1;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let told = osd1
                    .osd_statfs(1, 1000 << 20, 1000 << 20, usage(4))
                    .await
                    .expect("statfs 1");
                if told.quota_full_pools == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{told:?}, want {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    told_until(Vec::new()).await;
    admin_b
        .command(quota("max_bytes", 40 << 10))
        .await
        .expect("bytes");
    // 10 objects of 4 KiB reach 40 KiB.
    told_until(vec![pool]).await;
    // Removing the pool forgets its quota.
    admin_b
        .command(MonCommand::PoolDelete { name: "q".into() })
        .await
        .expect("delete");
    let e = admin_b
        .command(MonCommand::PoolGetQuota { name: "q".into() })
        .await
        .expect_err("gone");
    assert!(e.to_string().contains("unrecognized pool 'q'"), "{e}");
    for h in handles {
        h.shutdown().await;
    }
}
