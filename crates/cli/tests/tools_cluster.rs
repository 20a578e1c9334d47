//! `ceph` and `rbd` against a real one-host cluster started by `quarry up`
//! (what an operator does after `. D/env`: CEPH_CONF=D/ceph.conf).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_quarry");

struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(BIN)
            .args(["up", "--dir"])
            .arg(dir.path())
            .args(["--conf-set", "osd_pool_default_pg_num=8"])
            .stdin(Stdio::null())
            .output()
            .expect("run quarry up");
        assert!(
            out.status.success(),
            "quarry up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run with the environment `. D/env` gives; (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = Command::new(BIN)
            .args(args)
            .env("CEPH_CONF", self.path().join("ceph.conf"))
            .env_remove("CEPH_ARGS")
            .env_remove("CEPH_KEYRING")
            .stdin(Stdio::null())
            .output()
            .expect("run quarry");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: stdout={out} stderr={err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .arg("down")
            .arg("--dir")
            .arg(self.path())
            .output();
    }
}

#[test]
fn ceph_and_rbd_against_a_cluster() {
    let c = Cluster::up();

    // Cluster state.
    let s = c.ok(&["ceph", "-s"]);
    assert!(s.contains("health: HEALTH_OK"), "{s}");
    assert!(s.contains("osd: 3 osds: 3 up, 3 in"), "{s}");
    assert_eq!(c.ok(&["ceph", "health"]), "HEALTH_OK\n");
    let st = c.json(&["ceph", "status", "--format", "json"]);
    assert_eq!(st["osdmap"]["num_up_osds"], 3);
    assert_eq!(c.ok(&["ceph", "osd", "ls"]), "0\n1\n2\n");
    assert!(c.ok(&["ceph", "osd", "tree"]).contains("osd.2"));
    assert!(c
        .ok(&["ceph", "osd", "stat"])
        .starts_with("3 osds: 3 up, 3 in; epoch: e"));
    assert!(c.ok(&["ceph", "mon", "stat"]).contains("1 mons at {a="));
    assert!(c.ok(&["ceph", "df"]).contains("data"));

    // Pools.
    let pools = c.json(&["ceph", "osd", "pool", "ls", "--format", "json"]);
    assert_eq!(pools, serde_json::json!(["rbd", "data"]));
    assert!(c
        .ok(&["ceph", "osd", "pool", "ls", "detail"])
        .contains("'data' replicated size 3"));
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "create", "p2", "8"]);
    assert_eq!((code, err.as_str()), (0, "pool 'p2' created\n"));
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "set", "p2", "size", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.starts_with("set pool "), "{err}");
    assert_eq!(
        c.ok(&["ceph", "osd", "pool", "get", "p2", "size"]),
        "size: 2\n"
    );
    assert_eq!(
        c.ok(&["ceph", "osd", "pool", "get", "p2", "pg_num"]),
        "pg_num: 8\n"
    );
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "get", "nosuch", "size"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "Error ENOENT: unrecognized pool 'nosuch'\n")
    );
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "rm", "p2"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error EPERM: WARNING: this will *PERMANENTLY DESTROY*"),
        "{err}"
    );
    c.ok(&[
        "ceph",
        "osd",
        "pool",
        "rm",
        "p2",
        "p2",
        "--yes-i-really-really-mean-it",
    ]);
    assert_eq!(
        c.json(&["ceph", "osd", "pool", "ls", "--format", "json"]),
        pools
    );

    // OSD marks.
    let (code, _, err) = c.run(&["ceph", "osd", "out", "2"]);
    assert_eq!((code, err.as_str()), (0, "marked out osd.2. \n"));
    assert!(c
        .ok(&["ceph", "osd", "stat"])
        .starts_with("3 osds: 3 up, 2 in;"));
    c.ok(&["ceph", "osd", "in", "2"]);
    let (code, _, err) = c.run(&["ceph", "osd", "down", "7"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "Error ENOENT: osd.7 does not exist\n")
    );

    // Auth: a user confined to pool data.
    let key = c.ok(&[
        "ceph",
        "auth",
        "get-or-create",
        "client.glance",
        "mon",
        "allow r",
        "osd",
        "allow rwx pool=data",
    ]);
    assert!(key.starts_with("[client.glance]\n\tkey = "), "{key}");
    let ring = c.ok(&["ceph", "auth", "get", "client.glance"]);
    assert!(
        ring.contains("\tcaps osd = \"allow rwx pool=data\"\n"),
        "{ring}"
    );
    let ring_path = c.path().join("glance.keyring");
    std::fs::write(&ring_path, &ring).expect("write keyring");
    let printed = c.ok(&["ceph", "auth", "print-key", "client.glance"]);
    assert!(key.contains(printed.trim()));
    assert!(c
        .ok(&["ceph", "auth", "ls"])
        .contains("client.glance\n\tkey: "));
    let (code, _, err) = c.run(&["ceph", "auth", "get", "client.nosuch"]);
    assert_eq!(code, 2, "{err}");

    // rbd on the cluster.
    c.ok(&["rbd", "create", "data/img", "--size", "64M"]);
    c.ok(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "1M",
        "data/img",
    ]);
    c.ok(&["rbd", "snap", "create", "data/img@s1"]);
    c.ok(&["rbd", "snap", "protect", "data/img@s1"]);
    c.ok(&["rbd", "clone", "data/img@s1", "data/vm1"]);
    assert_eq!(c.ok(&["rbd", "children", "data/img@s1"]), "data/vm1\n");
    let info = c.json(&["rbd", "info", "--format", "json", "data/vm1"]);
    assert_eq!(info["parent"]["image"], "img");
    let (code, _, err) = c.run(&["rbd", "info", "data/nosuchimage"]);
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            "rbd: error opening image nosuchimage: (2) No such file or directory\n"
        )
    );
    let exp = c.path().join("vm1.raw");
    c.ok(&[
        "rbd",
        "export",
        "--no-progress",
        "data/vm1",
        exp.to_str().expect("utf8"),
    ]);
    let bytes = std::fs::read(&exp).expect("read export");
    assert_eq!(bytes.len(), 64 << 20);
    assert!(bytes[..1 << 20].iter().all(|&b| b == 0x5a));

    // The confined user: its pool works, another pool is refused (EPERM).
    let k = ring_path.to_str().expect("utf8");
    assert_eq!(
        c.ok(&["rbd", "--id", "glance", "-k", k, "ls", "data"]),
        "img\nvm1\n"
    );
    let (code, _, err) = c.run(&["rbd", "--id", "glance", "-k", k, "ls", "rbd"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "rbd: listing images failed: (1) Operation not permitted\n"
        )
    );
    c.ok(&["ceph", "auth", "caps", "client.glance", "mon", "allow r"]);
    c.ok(&["ceph", "auth", "del", "client.glance"]);
}
