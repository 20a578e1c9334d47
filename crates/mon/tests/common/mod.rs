//! Helpers shared by the monitor's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use quarry_auth::Secret;
use quarry_map::MonInfo;
use quarry_mon::{MonConfig, MonHandle, MonTimings};
use quarry_monc::{MonClient, MonClientConfig};

/// A free TCP port on 127.0.0.1, outside the ephemeral range (see
/// `quarry_common::port`: a monitor's port taken by a parallel test's
/// outgoing connection failed a CI run with `AddrInUse`).
pub fn free_port() -> u16 {
    quarry_common::port::free_local_port().expect("a free port")
}

/// Test timings: fast elections and failure detection.
pub fn fast_timings() -> MonTimings {
    MonTimings {
        osd_heartbeat_grace: Duration::from_secs(2),
        osd_down_out_interval: Duration::from_secs(3),
        tick: Duration::from_millis(200),
        raft_heartbeat: Duration::from_millis(100),
        election_timeout: Duration::from_millis(400),
        propose_timeout: Duration::from_secs(10),
        ..MonTimings::default()
    }
}

/// Write a bootstrap keyring into `dir` and return its path.
pub fn write_keyring(dir: &Path, osds: u32) -> std::path::PathBuf {
    let p = dir.join("initial.keyring");
    quarry_mon::write_private(&p, &quarry_mon::bootstrap_keyring(osds)).expect("write keyring");
    p
}

/// The secret of `entity` in a keyring file.
pub fn key_of(keyring: &Path, entity: &str) -> Secret {
    let text = std::fs::read_to_string(keyring).expect("read keyring");
    quarry_mon::keyring::parse(&text)
        .expect("parse")
        .into_iter()
        .find(|e| e.entity == entity)
        .map(|e| e.secret)
        .expect("entity in keyring")
}

/// Config for monitor `name` of a cluster of `mons`.
pub fn mon_cfg(name: &str, rank: u64, dir: &Path, mons: &[MonInfo], keyring: &Path) -> MonConfig {
    let me = mons.iter().find(|m| m.rank == rank).expect("me");
    let mut c = MonConfig::single(
        name,
        dir.join(format!("mon.{name}")),
        &me.addr,
        "fsid-test-1",
    );
    c.rank = rank;
    c.mons = mons.to_vec();
    c.keyring = Some(keyring.to_path_buf());
    c.timings = fast_timings();
    c.allow_pool_delete = true;
    // Health must not depend on the test machine's free disk; the tests of
    // MON_DISK_LOW set their own threshold.
    c.data_avail_warn = 0;
    c
}

/// Start one monitor on a fresh port in `dir`.
pub async fn single_mon(dir: &Path, osds: u32) -> (MonHandle, std::path::PathBuf) {
    let keyring = write_keyring(dir, osds);
    let mons = vec![MonInfo {
        name: "a".into(),
        rank: 0,
        addr: format!("127.0.0.1:{}", free_port()),
    }];
    let h = quarry_mon::start(mon_cfg("a", 0, dir, &mons, &keyring))
        .await
        .expect("start mon");
    (h, keyring)
}

/// Connect as `entity` with the key from `keyring`.
pub async fn client(addrs: &[String], keyring: &Path, entity: &str) -> std::sync::Arc<MonClient> {
    MonClient::connect(MonClientConfig {
        mon_addrs: addrs.to_vec(),
        entity: entity.into(),
        secret: key_of(keyring, entity),
        timeout: Duration::from_secs(20),
        ping: Default::default(),
    })
    .await
    .unwrap_or_else(|e| panic!("connect as {entity}: {e}"))
}
