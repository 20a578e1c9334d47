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
            // Exact health texts must not depend on the machine's free disk.
            .args(["--conf-set", "mon_data_avail_warn=0"])
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

    /// A command with the environment `. D/env` gives.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("CEPH_CONF", self.path().join("ceph.conf"))
            // Never the machine's /etc/ceph or ~/.ceph: HOME is the cluster dir.
            .env("HOME", self.path())
            .env_remove("CEPH_ARGS")
            .env_remove("CEPH_KEYRING")
            .stdin(Stdio::null());
        cmd
    }

    /// Start a command in the background, its output captured.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Run with the environment `. D/env` gives; (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.command(args).output().expect("run quarry");
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

    /// Run expecting this exit code, nothing on stdout and exactly this stderr.
    fn fails(&self, args: &[&str], code: i32, stderr: &str) {
        let (c, out, err) = self.run(args);
        assert_eq!((c, err.as_str()), (code, stderr), "{args:?}: stdout={out}");
        assert!(out.is_empty(), "{args:?}: stdout={out}");
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

/// The entry named `name` of a JSON answer's `pools` array (`ceph df`,
/// `rados df`), cloned.
fn pool_entry(j: &Value, name: &str) -> Value {
    j["pools"]
        .as_array()
        .unwrap_or_else(|| panic!("no pools array: {j}"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("pool {name} not listed: {j}"))
        .clone()
}

#[test]
fn ceph_and_rbd_against_a_cluster() {
    let c = Cluster::up();

    // Logs: none by default; `QUARRY_LOG=debug` sends the library's logs
    // to stderr beside the normal output; a bad level is refused at once.
    let (code, out, err) = c.run(&["rbd", "create", "--size", "4M", "data/logged"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", ""),
        "quiet by default"
    );
    let logged = |level: &str| {
        Command::new(BIN)
            .args(["rbd", "rm", "data/logged"])
            .env("CEPH_CONF", c.path().join("ceph.conf"))
            .env("HOME", c.path())
            .env("QUARRY_LOG", level)
            .stdin(Stdio::null())
            .output()
            .expect("run quarry")
    };
    let o = logged("bogus");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(22) && err.contains("QUARRY_LOG=\"bogus\": expected one of"),
        "{err}"
    );
    let o = logged("debug");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("DEBUG") && err.contains("connected to OSD"),
        "debug logs on stderr: {err}"
    );
    assert_eq!(c.ok(&["rbd", "ls", "data"]), "", "the image was removed");

    // Cluster state.
    let s = c.ok(&["ceph", "-s"]);
    assert!(s.contains("health: HEALTH_OK"), "{s}");
    assert!(s.contains("osd: 3 osds: 3 up, 3 in"), "{s}");
    assert_eq!(c.ok(&["ceph", "health"]), "HEALTH_OK\n");
    // Maintenance flags: set, shown in health and `osd stat`, cleared.
    let (code, out, err) = c.run(&["ceph", "osd", "set", "noout"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", "noout is set\n")
    );
    assert_eq!(c.ok(&["ceph", "health"]), "HEALTH_WARN noout flag(s) set\n");
    assert!(c.ok(&["ceph", "osd", "stat"]).ends_with("\nflags noout\n"));
    // `ceph osd dump` shows the flags and the full ratios as Ceph does.
    let dump = c.ok(&["ceph", "osd", "dump"]);
    assert!(
        dump.contains("\nflags noout\nfull_ratio 0.95\nnearfull_ratio 0.85\n"),
        "{dump}"
    );
    assert!(
        dump.contains("\npool ") && dump.contains(" 'data' replicated size 3 "),
        "{dump}"
    );
    assert!(
        dump.contains("\nmax_osd 3\nosd.0 up   in  weight 1 "),
        "{dump}"
    );
    let j = c.json(&["ceph", "osd", "dump", "--format", "json"]);
    assert_eq!(
        (j["flags"].clone(), j["full_ratio"].clone()),
        ("noout".into(), 0.95.into())
    );
    let (code, _, err) = c.run(&["ceph", "osd", "unset", "noout"]);
    assert_eq!((code, err.as_str()), (0, "noout is unset\n"));
    assert_eq!(c.ok(&["ceph", "health"]), "HEALTH_OK\n");
    // PG listing: every PG of the pool, none scrubbed yet.
    let pgs = c.json(&["ceph", "pg", "ls-by-pool", "data", "--format", "json"]);
    let stats = pgs["pg_stats"].as_array().expect("pg_stats");
    assert_eq!(stats.len(), 8, "{pgs}");
    assert!(
        stats.iter().all(|p| p["state"] == "active+clean"
            && p["up"].as_array().is_some_and(|u| u.len() == 3)
            && p["last_deep_scrub_stamp"].is_null()),
        "{pgs}"
    );
    // Each PG's objects and bytes, from its primary, add up to the pool's.
    let probe = c.path().join("probe.bin");
    std::fs::write(&probe, vec![7u8; 12345]).expect("write probe");
    for name in ["probe1", "probe2"] {
        c.ok(&[
            "rados",
            "-p",
            "data",
            "put",
            name,
            probe.to_str().expect("utf8"),
        ]);
    }
    let pgs = c.json(&["ceph", "pg", "ls-by-pool", "data", "--format", "json"]);
    let sum = |key: &str| -> u64 {
        pgs["pg_stats"]
            .as_array()
            .expect("pg_stats")
            .iter()
            .map(|p| p["stat_sum"][key].as_u64().expect("stat_sum"))
            .sum()
    };
    let df = c.json(&["ceph", "df", "--format", "json"]);
    let data_pool = pool_entry(&df, "data");
    assert_eq!(
        (sum("num_objects"), sum("num_bytes")),
        (
            data_pool["stats"]["objects"].as_u64().expect("objects"),
            data_pool["stats"]["stored"].as_u64().expect("stored")
        ),
        "{pgs}"
    );
    assert!(
        sum("num_objects") >= 2 && sum("num_bytes") >= 2 * 12345,
        "{pgs}"
    );
    let table = c.ok(&["ceph", "pg", "ls-by-pool", "data"]);
    assert!(
        table.starts_with("PG ") && table.contains(" OBJECTS ") && table.contains(" BYTES "),
        "{table}"
    );
    assert!(table.lines().any(|l| l.contains(" 12345 ")), "{table}");
    let (_, out, _) = c.run(&["ceph", "pg", "ls", "inconsistent"]);
    assert_eq!(out.lines().count(), 1, "{out}");

    // ceph osd df: every OSD's filesystem report and PG count. The three
    // share one filesystem, so each uses the average (VAR 1).
    let all_pgs = c.json(&["ceph", "pg", "ls", "--format", "json"]);
    let placements: usize = all_pgs["pg_stats"]
        .as_array()
        .expect("pg_stats")
        .iter()
        .map(|p| p["up"].as_array().map_or(0, Vec::len))
        .sum();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let df = loop {
        let df = c.json(&["ceph", "osd", "df", "--format", "json"]);
        let nodes = df["nodes"].as_array().expect("nodes");
        if nodes.len() == 3 && nodes.iter().all(|n| n["kb"].is_u64()) {
            break df;
        }
        assert!(std::time::Instant::now() < deadline, "no reports: {df}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let nodes = df["nodes"].as_array().expect("nodes");
    let pgs: u64 = nodes.iter().map(|n| n["pgs"].as_u64().expect("pgs")).sum();
    assert_eq!(pgs as usize, placements, "{df}");
    for n in nodes {
        let kb = n["kb"].as_u64().expect("kb");
        let used = n["kb_used"].as_u64().expect("kb_used");
        let avail = n["kb_avail"].as_u64().expect("kb_avail");
        assert!(kb > 0 && (used + avail).abs_diff(kb) <= 1, "{n}");
        let var = n["var"].as_f64().expect("var");
        assert!((var - 1.0).abs() < 0.05, "{df}");
        assert_eq!(n["status"], "up");
    }
    let text = c.ok(&["ceph", "osd", "df"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("RAW USE") && lines[0].contains("PGS"),
        "{text}"
    );
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[4].contains("TOTAL"), "{text}");
    assert!(lines[5].starts_with("MIN/MAX VAR: "), "{text}");
    c.fails(
        &["ceph", "pg", "ls", "peering"],
        22,
        "Error EINVAL: unknown pg state 'peering' (known: active, clean, undersized, peered, inconsistent, unknown)\n",
    );
    c.fails(
        &["ceph", "pg", "ls-by-pool", "nosuch"],
        2,
        "Error ENOENT: pool 'nosuch' does not exist\n",
    );
    c.fails(
        &["ceph", "osd", "set", "norebalance"],
        22,
        "Error EINVAL: flag 'norebalance' is not supported (supported: noout, nodown, noin)\n",
    );
    let st = c.json(&["ceph", "status", "--format", "json"]);
    assert_eq!(st["osdmap"]["num_up_osds"], 3);
    assert_eq!(c.ok(&["ceph", "osd", "ls"]), "0\n1\n2\n");
    assert!(c.ok(&["ceph", "osd", "tree"]).contains("osd.2"));
    assert!(c
        .ok(&["ceph", "osd", "stat"])
        .starts_with("3 osds: 3 up, 3 in; epoch: e"));
    assert!(c.ok(&["ceph", "mon", "stat"]).contains("1 mons at {a="));
    // Placement of one object, as every client computes it.
    let m = c.json(&[
        "ceph",
        "osd",
        "map",
        "data",
        "some-object",
        "--format",
        "json",
    ]);
    let up: Vec<i64> = m["up"]
        .as_array()
        .expect("up")
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    let mut distinct = up.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, [0, 1, 2], "three replicas on three OSDs: {m}");
    assert_eq!(m["acting_primary"].as_i64(), Some(up[0]), "{m}");
    let pgid = m["pgid"].as_str().expect("pgid").to_string();
    assert!(pgid.starts_with(&format!("{}.", m["pool_id"])), "{m}");
    let text = c.ok(&["ceph", "osd", "map", "data", "some-object"]);
    assert!(
        text.starts_with("osdmap e")
            && text.contains(&format!("object 'some-object' -> pg {pgid} -> up ([")),
        "{text}"
    );
    let (code, _, err) = c.run(&["ceph", "osd", "map", "nosuch", "x"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "Error ENOENT: pool 'nosuch' does not exist\n")
    );
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
    // PGs are not split: a new pg_num is refused (objects would vanish
    // from reach); the current one is accepted, and objects stay readable.
    let probe = c.path().join("pgnum.bin");
    std::fs::write(&probe, b"kept").expect("write");
    for i in 0..16 {
        c.ok(&[
            "rados",
            "-p",
            "p2",
            "put",
            &format!("o{i}"),
            probe.to_str().expect("utf8"),
        ]);
    }
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "set", "p2", "pg_num", "16"]);
    assert_eq!(code, 95, "{err}");
    assert!(
        err.starts_with("Error EOPNOTSUPP: changing pg_num of pool 'p2' (now 8) is not supported"),
        "{err}"
    );
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "set", "p2", "pg_num", "8"]);
    assert_eq!(code, 0, "{err}");
    for i in 0..16 {
        c.ok(&["rados", "-p", "p2", "stat", &format!("o{i}")]);
    }
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
    // Each command handed its exclusive lock back before it exited: the
    // next one (bench, snap create, snap protect) found the lock free
    // instead of breaking it, which would have blocklisted the old owner.
    assert_eq!(
        c.json(&["ceph", "osd", "blocklist", "ls", "--format", "json"]),
        serde_json::json!([]),
        "an rbd command left its exclusive lock behind"
    );
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

/// `rbd feature`, `rbd namespace` and `rbd config pool|image` on a cluster;
/// an image-level `rbd_cache` override is what the C library (under
/// qemu-io) uses, above QEMU's own `rbd_cache`.
#[test]
fn rbd_features_namespaces_and_config_against_a_cluster() {
    let c = Cluster::up();
    let features = |spec: &str| -> Value {
        c.json(&["rbd", "info", "--format", "json", spec])["features"].clone()
    };

    // Features: --image-feature at create, then enable/disable.
    c.ok(&[
        "rbd",
        "create",
        "data/f1",
        "--size",
        "16M",
        "--image-feature",
        "layering,exclusive-lock",
    ]);
    assert_eq!(
        features("data/f1"),
        serde_json::json!(["layering", "exclusive-lock"])
    );
    assert!(c
        .ok(&["rbd", "info", "data/f1"])
        .contains("\tfeatures: layering, exclusive-lock\n"));
    c.ok(&[
        "rbd",
        "feature",
        "enable",
        "data/f1",
        "object-map",
        "fast-diff",
    ]);
    assert_eq!(
        features("data/f1"),
        serde_json::json!(["layering", "exclusive-lock", "object-map", "fast-diff"])
    );
    c.ok(&[
        "rbd",
        "feature",
        "disable",
        "data/f1",
        "fast-diff,object-map",
    ]);
    assert_eq!(
        features("data/f1"),
        serde_json::json!(["layering", "exclusive-lock"])
    );
    c.fails(
        &["rbd", "feature", "enable", "data/f1", "bogus"],
        22,
        "rbd: invalid feature name: bogus\n",
    );
    c.fails(
        &["rbd", "feature", "disable", "data/f1", "layering"],
        22,
        "rbd: cannot update immutable features: layering\n\
         rbd: failed to update image features: (22) Invalid argument\n",
    );
    c.fails(
        &["rbd", "feature", "enable", "data/f1", "deep-flatten"],
        22,
        "rbd: cannot enable disable-only feature: deep-flatten\n\
         rbd: failed to update image features: (22) Invalid argument\n",
    );
    c.fails(
        &["rbd", "feature", "enable", "data/f1", "journaling"],
        95,
        "rbd: journaling is not supported by Quarry (no rbd-mirror)\n\
         rbd: failed to update image features: (95) Operation not supported\n",
    );
    // object-map needs exclusive-lock, as on Ceph.
    c.ok(&["rbd", "feature", "disable", "data/f1", "exclusive-lock"]);
    let (code, _, err) = c.run(&["rbd", "feature", "enable", "data/f1", "object-map"]);
    assert_eq!(code, 22, "{err}");
    assert!(
        err.ends_with("rbd: failed to update image features: (22) Invalid argument\n"),
        "{err}"
    );
    assert_eq!(features("data/f1"), serde_json::json!(["layering"]));
    c.fails(
        &["rbd", "feature", "enable", "data/nosuch", "exclusive-lock"],
        2,
        "rbd: error opening image nosuch: (2) No such file or directory\n",
    );

    // Namespaces: both spellings, images inside, rm of a non-empty one refused.
    assert_eq!(c.ok(&["rbd", "namespace", "ls", "data"]), "");
    c.ok(&["rbd", "namespace", "create", "data/ns1"]);
    c.ok(&[
        "rbd",
        "namespace",
        "create",
        "--pool",
        "data",
        "--namespace",
        "ns2",
    ]);
    assert_eq!(
        c.ok(&["rbd", "namespace", "ls", "data"]),
        "NAME\nns1 \nns2 \n"
    );
    assert_eq!(
        c.json(&["rbd", "namespace", "ls", "data", "--format", "json"]),
        serde_json::json!([{"name": "ns1"}, {"name": "ns2"}])
    );
    c.fails(
        &["rbd", "namespace", "create", "data/ns1"],
        17,
        "rbd: namespace data/ns1 already exists\n\
         rbd: failed to create namespace: (17) File exists\n",
    );
    c.ok(&["rbd", "create", "data/ns1/img", "--size", "8M"]);
    c.ok(&[
        "rbd",
        "create",
        "-p",
        "data",
        "--namespace",
        "ns1",
        "img2",
        "--size",
        "8M",
    ]);
    assert_eq!(c.ok(&["rbd", "ls", "data/ns1"]), "img\nimg2\n");
    assert_eq!(
        c.json(&[
            "rbd",
            "ls",
            "-p",
            "data",
            "--namespace",
            "ns1",
            "--format",
            "json"
        ]),
        serde_json::json!(["img", "img2"])
    );
    assert_eq!(c.ok(&["rbd", "ls", "data"]), "f1\n");
    c.ok(&["rbd", "snap", "create", "data/ns1/img@s"]);
    c.ok(&["rbd", "snap", "rm", "data/ns1/img@s"]);
    c.fails(
        &["rbd", "create", "data/nons/img", "--size", "8M"],
        2,
        "rbd: namespace 'nons' does not exist.\n",
    );
    c.fails(
        &["rbd", "namespace", "rm", "data/ns1"],
        16,
        "rbd: namespace data/ns1 is busy: it still holds images\n\
         rbd: failed to remove namespace: (16) Device or resource busy\n",
    );
    c.ok(&["rbd", "rm", "--no-progress", "data/ns1/img"]);
    c.ok(&["rbd", "rm", "--no-progress", "data/ns1/img2"]);
    c.ok(&["rbd", "namespace", "rm", "data/ns1"]);
    assert_eq!(c.ok(&["rbd", "namespace", "ls", "data"]), "NAME\nns2 \n");
    c.fails(
        &["rbd", "namespace", "rm", "data/ns1"],
        2,
        "rbd: namespace data/ns1 does not exist\n\
         rbd: failed to remove namespace: (2) No such file or directory\n",
    );
    c.fails(
        &["rbd", "namespace", "create", "data"],
        22,
        "rbd: namespace name was not specified\n",
    );

    // Config overrides: pool, then image above it.
    c.ok(&["rbd", "create", "data/vm", "--size", "8M"]);
    c.fails(
        &["rbd", "config", "pool", "get", "data", "rbd_cache"],
        2,
        "rbd: rbd_cache is not set\n",
    );
    c.ok(&[
        "rbd",
        "config",
        "pool",
        "set",
        "data",
        "rbd_cache_max_dirty",
        "8M",
    ]);
    assert_eq!(
        c.ok(&[
            "rbd",
            "config",
            "pool",
            "get",
            "data",
            "rbd_cache_max_dirty"
        ]),
        "8M\n"
    );
    c.ok(&[
        "rbd",
        "config",
        "image",
        "set",
        "data/vm",
        "rbd_cache",
        "false",
    ]);
    assert_eq!(
        c.ok(&["rbd", "config", "image", "get", "data/vm", "rbd_cache"]),
        "false\n"
    );
    let list = c.json(&[
        "rbd", "config", "image", "list", "data/vm", "--format", "json",
    ]);
    let find = |name: &str| -> Value {
        list.as_array()
            .and_then(|a| a.iter().find(|o| o["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {list}"))
    };
    assert_eq!(
        find("rbd_cache"),
        serde_json::json!({"name": "rbd_cache", "value": "false", "source": "image"})
    );
    assert_eq!(
        find("rbd_cache_max_dirty"),
        serde_json::json!({"name": "rbd_cache_max_dirty", "value": "8388608", "source": "pool"})
    );
    assert_eq!(find("rbd_default_order")["source"], "config");
    let plain = c.ok(&["rbd", "config", "image", "ls", "data/vm"]);
    assert!(plain.starts_with("Name "), "{plain}");
    assert!(
        plain
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["rbd_cache", "false", "image"]),
        "{plain}"
    );
    c.fails(
        &[
            "rbd",
            "config",
            "image",
            "set",
            "data/vm",
            "rbd_cache",
            "maybe",
        ],
        22,
        "rbd: invalid config value 'maybe' for rbd_cache: expected true, false or a number\n",
    );
    c.fails(
        &[
            "rbd", "config", "pool", "set", "data", "mon_host", "1.2.3.4",
        ],
        22,
        "rbd: invalid config key: mon_host\n",
    );
    c.fails(
        &["rbd", "config", "image", "get", "data/nosuch", "rbd_cache"],
        2,
        "rbd: error opening image nosuch: (2) No such file or directory\n",
    );

    // `ceph config help` from the option registry; names and values are
    // validated before anything reaches the monitors (the database itself:
    // tests/config_db.rs).
    let help = c.ok(&["ceph", "config", "help", "rbd_cache"]);
    assert!(help.starts_with("rbd_cache - "), "{help}");
    assert!(help.contains("\n  (bool)\n  Default: true\n"), "{help}");
    let h = c.json(&[
        "ceph",
        "config",
        "help",
        "rbd_cache_policy",
        "--format",
        "json",
    ]);
    assert_eq!(h["type"], "str");
    assert_eq!(
        h["enum_values"],
        serde_json::json!(["writethrough", "writeback", "writearound"])
    );
    c.fails(
        &["ceph", "config", "set", "client", "nosuch", "1"],
        22,
        "Error EINVAL: unrecognized config option 'nosuch'\n",
    );
    c.fails(
        &["ceph", "config", "set", "client", "rbd_cache", "maybe"],
        22,
        "Error EINVAL: error parsing value: expected true, false or a number\n",
    );

    // The C library under qemu-io applies the image-level override above
    // QEMU's own rbd_cache (cache=writeback sets it true).
    let qemu_io =
        |spec: &str| -> String { qemu_io(&c, &["-t", "writeback", "-c", "read 0 4k"], spec) };
    let err = qemu_io("rbd:data/vm");
    assert!(err.contains("image vm: cache mode"), "{err}");
    // The pool-level override reaches it too.
    assert!(
        err.contains("max_dirty=8388608"),
        "pool override ignored: {err}"
    );
    assert!(
        err.contains("rbd_cache=false"),
        "image override ignored: {err}"
    );
    c.ok(&["rbd", "config", "image", "rm", "data/vm", "rbd_cache"]);
    c.fails(
        &["rbd", "config", "image", "rm", "data/vm", "rbd_cache"],
        2,
        "rbd: rbd_cache is not set\n",
    );
    let err = qemu_io("rbd:data/vm");
    assert!(err.contains("rbd_cache=true"), "{err}");
    c.ok(&["rbd", "config", "pool", "rm", "data", "rbd_cache_max_dirty"]);
    advisory_locks(&c);
}

/// `rbd lock add|ls|rm`: Ceph's texts and exit codes; a lock outlives the
/// command that took it, keeps writers out of an image with exclusive-lock,
/// and `rbd lock rm` breaks it by the id and locker `rbd lock ls` shows.
fn advisory_locks(c: &Cluster) {
    c.ok(&["rbd", "create", "data/lk", "--size", "8M"]);
    assert_eq!(c.ok(&["rbd", "lock", "ls", "data/lk"]), "");
    c.ok(&["rbd", "lock", "add", "data/lk", "maint"]);
    let out = c.ok(&["rbd", "lock", "ls", "data/lk"]);
    assert!(
        out.starts_with("There is 1 exclusive lock on this image.\nLocker "),
        "{out}"
    );
    let locks = c.json(&["rbd", "lock", "ls", "data/lk", "--format", "json"]);
    assert_eq!(locks[0]["id"], "maint", "{locks}");
    let locker = locks[0]["locker"].as_str().expect("locker").to_string();
    assert!(locker.starts_with("client."), "{locker}");
    c.fails(
        &["rbd", "lock", "add", "data/lk", "other"],
        16,
        "rbd: lock is already held by someone else\n",
    );
    c.fails(
        &["rbd", "lock", "add", "--shared", "t", "data/lk", "other"],
        16,
        "rbd: lock is already held by someone else with a different tag\n",
    );
    // Writers wait for nobody: the image's exclusive lock can't be taken.
    let (code, _, err) = c.run(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-total",
        "64K",
        "data/lk",
    ]);
    assert_eq!(code, 16, "{err}");
    c.fails(
        &["rbd", "lock", "rm", "data/lk", "nope", &locker],
        2,
        "rbd: releasing lock failed: (2) No such file or directory\n",
    );
    c.ok(&["rbd", "lock", "rm", "data/lk", "maint", &locker]);
    assert_eq!(c.ok(&["rbd", "lock", "ls", "data/lk"]), "");
    c.ok(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-total",
        "64K",
        "data/lk",
    ]);
    // Shared locks: one tag; listed with it.
    c.ok(&["rbd", "lock", "add", "--shared", "grp", "data/lk", "a"]);
    c.ok(&["rbd", "lock", "add", "--shared", "grp", "data/lk", "b"]);
    let out = c.ok(&["rbd", "lock", "ls", "data/lk"]);
    assert!(
        out.starts_with("There are 2 shared locks on this image.\nLock tag: grp\n"),
        "{out}"
    );
    for l in c
        .json(&["rbd", "lock", "ls", "data/lk", "--format", "json"])
        .as_array()
        .expect("array")
    {
        c.ok(&[
            "rbd",
            "lock",
            "rm",
            "data/lk",
            l["id"].as_str().expect("id"),
            l["locker"].as_str().expect("locker"),
        ]);
    }
    c.ok(&["rbd", "rm", "data/lk"]);
}

/// Run qemu-io on `spec` with Quarry's library (as `. D/env` sets it up);
/// returns its stderr (the library's `QUARRY_LOG_CACHE` line).
fn qemu_io(c: &Cluster, args: &[&str], spec: &str) -> String {
    let o = Command::new("qemu-io")
        .args(["-f", "raw"])
        .args(args)
        .arg(spec)
        .env("CEPH_CONF", c.path().join("ceph.conf"))
        .env("HOME", c.path())
        .env("LD_LIBRARY_PATH", c.path().join("lib"))
        .env("QUARRY_LOG_CACHE", "1")
        .env_remove("CEPH_ARGS")
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-io (install qemu-utils)");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "qemu-io {args:?} {spec}: {err}");
    err
}

/// `rbd export|import --export-format 2` (Ceph's image stream with
/// snapshots) round-trips every snapshot and the head byte for byte,
/// through a file and through a pipe; a truncated stream fails with EINVAL
/// and leaves no image behind.
#[test]
fn export_format_2_round_trip_against_a_cluster() {
    let c = Cluster::up();
    c.ok(&[
        "rbd",
        "create",
        "data/src",
        "--size",
        "8M",
        "--object-size",
        "1M",
    ]);
    qemu_io(
        &c,
        &["-c", "write -P 0x11 0 1536k", "-c", "write -P 0x12 5M 4k"],
        "rbd:data/src",
    );
    c.ok(&["rbd", "snap", "create", "data/src@s1"]);
    qemu_io(
        &c,
        &["-c", "write -P 0x21 512k 8k", "-c", "discard 5M 1M"],
        "rbd:data/src",
    );
    c.ok(&[
        "rbd",
        "resize",
        "--no-progress",
        "data/src",
        "--size",
        "12M",
    ]);
    c.ok(&["rbd", "snap", "create", "data/src@s2"]);
    c.ok(&["rbd", "snap", "protect", "data/src@s1"]);
    qemu_io(&c, &["-c", "write -P 0x31 11M 64k"], "rbd:data/src");
    // Image metadata travels in `M` records (a conf_ override included).
    c.ok(&["rbd", "image-meta", "set", "data/src", "owner", "ops team"]);
    c.ok(&[
        "rbd",
        "config",
        "image",
        "set",
        "data/src",
        "rbd_cache",
        "false",
    ]);

    let file = c.path().join("src.v2");
    let f = file.to_str().expect("utf8");
    c.ok(&[
        "rbd",
        "export",
        "--export-format",
        "2",
        "--no-progress",
        "data/src",
        f,
    ]);
    let bytes = std::fs::read(&file).expect("read export");
    // Ceph's header: banner, then the order record (tag, le64 8, le64 20).
    let mut head = b"rbd image v2\nO".to_vec();
    head.extend_from_slice(&8u64.to_le_bytes());
    head.extend_from_slice(&20u64.to_le_bytes());
    assert_eq!(&bytes[..head.len()], &head[..]);
    // One `M` record per key (le64 length, le32 key length + key, le32 value
    // length + value), then `E`, the diffs banner and the count (2 snaps + head).
    let mut meta = vec![b'M'];
    meta.extend_from_slice(&(5u64 + 8 + 8).to_le_bytes());
    meta.extend_from_slice(&5u32.to_le_bytes());
    meta.extend_from_slice(b"owner");
    meta.extend_from_slice(&8u32.to_le_bytes());
    meta.extend_from_slice(b"ops team");
    meta.extend_from_slice(b"Erbd image diffs v2\n");
    meta.extend_from_slice(&3u64.to_le_bytes());
    assert!(
        bytes.windows(meta.len()).any(|w| w == &meta[..]),
        "no owner M record before E + diffs banner"
    );
    c.ok(&[
        "rbd",
        "import",
        "--export-format",
        "2",
        "--no-progress",
        f,
        "data/dst",
    ]);
    let snaps = c.json(&["rbd", "snap", "ls", "--format", "json", "data/dst"]);
    let names: Vec<&str> = snaps
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    assert_eq!(snaps[0]["protected"], "true", "{snaps}");
    assert_eq!(snaps[1]["protected"], "false", "{snaps}");
    assert_eq!(
        c.json(&["rbd", "image-meta", "list", "--format", "json", "data/dst"]),
        serde_json::json!({"conf_rbd_cache": "false", "owner": "ops team"})
    );
    assert_eq!(snaps[0]["size"], 8 << 20);
    assert_eq!(snaps[1]["size"], 12 << 20);
    let info = c.json(&["rbd", "info", "--format", "json", "data/dst"]);
    assert_eq!(info["order"], 20);
    assert_eq!(info["size"], 12 << 20);
    let raw = |spec: &str| -> Vec<u8> {
        let p = c
            .path()
            .join(format!("{}.raw", spec.replace(['/', '@'], "_")));
        let ps = p.to_str().expect("utf8");
        let _ = std::fs::remove_file(&p);
        c.ok(&["rbd", "export", "--no-progress", spec, ps]);
        std::fs::read(&p).expect("read raw")
    };
    for s in ["@s1", "@s2", ""] {
        let (a, b) = (raw(&format!("data/src{s}")), raw(&format!("data/dst{s}")));
        assert!(a == b, "data/dst{s} differs from data/src{s}");
    }
    let s1 = raw("data/dst@s1");
    assert!(s1[..1536 << 10].iter().all(|&b| b == 0x11));
    assert_eq!(s1[5 << 20], 0x12);

    // A snapshot spec exports the older snapshots and that snapshot as head; via a pipe.
    let sh = format!(
        "{bin} rbd export --export-format 2 --no-progress data/src@s2 - | \
         {bin} rbd import --export-format 2 --no-progress - data/dst2",
        bin = BIN
    );
    let o = Command::new("sh")
        .args(["-c", &sh])
        .env("CEPH_CONF", c.path().join("ceph.conf"))
        .env("HOME", c.path())
        .env_remove("CEPH_ARGS")
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(c.ok(&["rbd", "snap", "ls", "data/dst2"]).lines().count(), 2);
    assert!(raw("data/dst2") == raw("data/src@s2"));
    assert!(raw("data/dst2@s1") == raw("data/src@s1"));

    // Failures: truncated stream, bad format number, missing image.
    let cut = c.path().join("cut.v2");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write cut");
    c.fails(
        &["rbd", "import", "--export-format", "2", "--no-progress", cut.to_str().expect("utf8"), "data/bad"],
        22,
        "rbd: invalid export-format 2 stream: truncated\nrbd: import failed: (22) Invalid argument\n",
    );
    assert!(!c.ok(&["rbd", "ls", "data"]).contains("bad"));
    c.fails(
        &["rbd", "export", "--export-format", "3", "data/src", "x"],
        22,
        "rbd: invalid export format 3: only 1 (raw) and 2 are supported\n",
    );
    c.fails(
        &["rbd", "export", "--export-format", "2", "data/nosuch", "x"],
        2,
        "rbd: error opening image nosuch: (2) No such file or directory\n",
    );
}

/// `rados` (through `quarry rados` and the `rados` symlink `quarry up`
/// puts in D/bin): pools, objects, xattrs, omap, with Ceph's output forms
/// and error messages (exit code 1, as Ceph's tool).
#[test]
fn rados_against_a_cluster() {
    let c = Cluster::up();
    let r = |args: &[&str]| -> Vec<String> {
        std::iter::once("rados")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect()
    };
    let ok = |args: &[&str]| {
        let v = r(args);
        c.ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fails = |args: &[&str], stderr: &str| {
        let v = r(args);
        c.fails(&v.iter().map(String::as_str).collect::<Vec<_>>(), 1, stderr)
    };
    assert_eq!(ok(&["lspools"]), "rbd\ndata\n");
    // The symlink runs the same tool.
    let o = Command::new(c.path().join("bin/rados"))
        .arg("lspools")
        .env("CEPH_CONF", c.path().join("ceph.conf"))
        .env("HOME", c.path())
        .output()
        .expect("run bin/rados");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "rbd\ndata\n");

    // put / get / stat, across the 4 MiB op size.
    let data: Vec<u8> = (0..(4 << 20) + 100u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let src = c.path().join("src.bin");
    std::fs::write(&src, &data).expect("write src");
    let src = src.to_str().expect("utf8 path");
    ok(&["-p", "data", "put", "o1", src]);
    let dst = c.path().join("dst.bin");
    let dst = dst.to_str().expect("utf8 path");
    ok(&["get", "o1", dst, "-p", "data"]);
    assert_eq!(std::fs::read(dst).expect("read dst"), data);
    let st = ok(&["-p", "data", "stat", "o1"]);
    assert!(
        st.starts_with("data/o1 mtime ") && st.ends_with(&format!(", size {}\n", data.len())),
        "{st}"
    );
    // --offset writes into the object instead of replacing it.
    let small = c.path().join("small");
    std::fs::write(&small, b"XYZ").expect("write small");
    ok(&[
        "-p",
        "data",
        "put",
        "o1",
        small.to_str().expect("utf8"),
        "--offset",
        "10",
    ]);
    ok(&["-p", "data", "get", "o1", dst]);
    let got = std::fs::read(dst).expect("read dst");
    assert_eq!((&got[10..13], got.len()), (&b"XYZ"[..], data.len()));
    assert_eq!(&got[..10], &data[..10]);
    ok(&["-p", "data", "truncate", "o1", "10"]);
    assert!(ok(&["-p", "data", "stat", "o1"]).ends_with(", size 10\n"));
    // rados bench: write (kept), seq and rand read it back, cleanup.
    let count = |out: &str, key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no '{key}' in {out}"))
    };
    let w = ok(&[
        "-p",
        "data",
        "bench",
        "1",
        "write",
        "-t",
        "4",
        "-b",
        "64K",
        "--no-cleanup",
    ]);
    assert!(
        w.contains("Maintaining 4 concurrent writes of 65536 bytes"),
        "{w}"
    );
    let written = count(&w, "Total writes made:");
    assert!(written > 0, "{w}");
    let listed = ok(&["-p", "data", "ls"]);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.starts_with("benchmark_data_"))
            .count() as u64,
        written,
        "{listed}"
    );
    let s = ok(&["-p", "data", "bench", "5", "seq"]);
    assert_eq!(
        count(&s, "Total reads made:"),
        written,
        "seq reads each object once: {s}"
    );
    let r = ok(&["-p", "data", "bench", "1", "rand", "-t", "2"]);
    assert!(count(&r, "Total reads made:") > 0, "{r}");
    let cl = ok(&["-p", "data", "cleanup"]);
    assert_eq!(cl, format!("Removed {written} objects\n"));
    assert!(!ok(&["-p", "data", "ls"]).contains("benchmark_"));
    fails(
        &["-p", "data", "bench", "1", "seq"],
        "no benchmark metadata data/benchmark_last_metadata: run 'rados bench SECONDS write --no-cleanup' first\n",
    );
    // Without --no-cleanup the objects go at the end.
    let w = ok(&["-p", "data", "bench", "1", "write", "-b", "4K"]);
    assert!(
        w.contains(&format!(
            "Removed {} objects",
            count(&w, "Total writes made:")
        )),
        "{w}"
    );
    assert!(!ok(&["-p", "data", "ls"]).contains("benchmark_"));
    fails(
        &["-p", "data", "bench", "1", "append"],
        "rados bench: unknown mode 'append' (write, seq or rand)\n",
    );
    fails(
        &["-p", "data", "bench", "0", "write"],
        "rados bench: invalid number of seconds '0'\n",
    );

    // No watchers on an object prints nothing; a missing object is ENOENT.
    assert_eq!(ok(&["-p", "data", "listwatchers", "o1"]), "");
    fails(
        &["-p", "data", "listwatchers", "nosuch"],
        "error listing watchers data/nosuch: (2) No such file or directory\n",
    );

    // Namespaces: ls shows the default one, -N another, --all both.
    ok(&[
        "-p",
        "data",
        "-N",
        "ns1",
        "put",
        "o2",
        small.to_str().expect("utf8"),
    ]);
    assert_eq!(ok(&["-p", "data", "ls"]), "o1\n");
    assert_eq!(ok(&["-p", "data", "-N", "ns1", "ls"]), "o2\n");
    let mut all: Vec<String> = ok(&["-p", "data", "ls", "--all"])
        .lines()
        .map(str::to_string)
        .collect();
    all.sort();
    assert_eq!(all, ["\to1", "ns1\to2"]);
    let j: Value = serde_json::from_str(&ok(&["-p", "data", "-N", "ns1", "ls", "-f", "json"]))
        .expect("ls json");
    assert_eq!(j, serde_json::json!([{"namespace": "ns1", "name": "o2"}]));

    // xattrs.
    ok(&["-p", "data", "setxattr", "o1", "a", "val1"]);
    assert_eq!(ok(&["-p", "data", "listxattr", "o1"]), "a\n");
    assert_eq!(ok(&["-p", "data", "getxattr", "o1", "a"]), "val1");
    ok(&["-p", "data", "rmxattr", "o1", "a"]);
    fails(
        &["-p", "data", "getxattr", "o1", "a"],
        "error getting xattr data/o1/a: (61) No data available\n",
    );

    // omap.
    ok(&["-p", "data", "setomapval", "o1", "k1", "v1"]);
    ok(&["-p", "data", "setomapval", "o1", "k2", "abcdefghijklmnopq"]);
    assert_eq!(ok(&["-p", "data", "listomapkeys", "o1"]), "k1\nk2\n");
    assert_eq!(
        ok(&["-p", "data", "listomapvals", "o1"]),
        "k1\nvalue (2 bytes) :\n\
         00000000  76 31                                             |v1|\n\
         00000002\n\n\
         k2\nvalue (17 bytes) :\n\
         00000000  61 62 63 64 65 66 67 68  69 6a 6b 6c 6d 6e 6f 70  |abcdefghijklmnop|\n\
         00000010  71                                                |q|\n\
         00000011\n\n"
    );
    assert_eq!(
        ok(&["-p", "data", "getomapval", "o1", "k1"]),
        "value (2 bytes) :\n00000000  76 31                                             |v1|\n00000002\n\n"
    );
    ok(&["-p", "data", "rmomapkey", "o1", "k1"]);
    let (code, out, _) = c.run(&["rados", "-p", "data", "getomapval", "o1", "k1"]);
    assert_eq!((code, out.as_str()), (1, "No such key: data/o1/k1\n"));
    ok(&["-p", "data", "clearomap", "o1"]);
    assert_eq!(ok(&["-p", "data", "listomapkeys", "o1"]), "");

    // create, rm and their errors.
    ok(&["-p", "data", "create", "o3"]);
    fails(
        &["-p", "data", "create", "o3"],
        "error creating data/o3: (17) File exists\n",
    );
    ok(&["-p", "data", "rm", "o1", "o3"]);
    fails(
        &["-p", "data", "rm", "o1"],
        "error removing data>o1: (2) No such file or directory\n",
    );
    fails(
        &["-p", "data", "stat", "o1"],
        " error stat-ing data/o1: (2) No such file or directory\n",
    );
    // A failed get creates no output file.
    let none = c.path().join("none.bin");
    fails(
        &["-p", "data", "get", "o1", none.to_str().expect("utf8")],
        "error getting data/o1: (2) No such file or directory\n",
    );
    assert!(!none.exists());
    fails(
        &["-p", "nosuch", "ls"],
        "error opening pool nosuch: (2) No such file or directory\n",
    );
    fails(
        &["-p", "data", "truncate", "o2", "x"],
        "Invalid value for size: 'x'\n",
    );
    let (code, _, err) = c.run(&["rados", "ls", "--bogus"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("rados: unrecognized option '--bogus'\n"),
        "{err}"
    );
    let (code, _, err) = c.run(&["rados", "ls"]);
    assert_eq!(code, 1);
    assert!(err.contains("pool name was not specified"), "{err}");

    let df = ok(&["df"]);
    assert!(
        df.starts_with("POOL_NAME") && df.contains("\ntotal_objects    1\n"),
        "{df}"
    );

    // Scrub queries on a healthy, never scrubbed pool.
    assert_eq!(ok(&["list-inconsistent-pg", "data"]), "[]\n");
    fails(
        &["list-inconsistent-pg", "nosuch"],
        "pool \"nosuch\" not found\n",
    );
    let pool = c.json(&["ceph", "osd", "pool", "ls", "detail", "--format", "json"]);
    let data_id = pool
        .as_array()
        .and_then(|v| v.iter().find(|p| p["pool_name"] == "data"))
        .map(|p| p["pool_id"].clone())
        .expect("data pool id");
    fails(
        &["list-inconsistent-obj", &format!("{data_id}.0")],
        &format!(
            "No scrub information available for pg {data_id}.0\nerror 2: (2) No such file or directory\n"
        ),
    );
    fails(&["list-inconsistent-obj", "x"], "Invalid pgid x\n");
}

/// Pool quotas as Ceph's: `set-quota`/`get-quota`, `POOL_FULL` once the
/// primaries' counts reach a quota, writes held (not failed) while the pool
/// is at it, deletes still taken, and held writes finishing once space is
/// freed or the quota raised.
#[test]
fn pool_quotas_hold_writes_until_there_is_room() {
    let c = Cluster::up();
    c.ok(&["ceph", "osd", "pool", "create", "q", "8"]);
    assert_eq!(
        c.ok(&["ceph", "osd", "pool", "get-quota", "q"]),
        "quotas for pool 'q':\n  max objects: N/A\n  max bytes  : N/A\n"
    );
    let (code, out, err) = c.run(&["ceph", "osd", "pool", "set-quota", "q", "max_objects", "3"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", "set-quota max_objects = 3 for pool q\n")
    );
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "set-quota", "q", "max_bytes", "10G"]);
    assert_eq!(
        (code, err.as_str()),
        (0, "set-quota max_bytes = 10737418240 for pool q\n")
    );
    // Bad input: an unknown field, a malformed value, an unknown pool.
    c.fails(
        &["ceph", "osd", "pool", "set-quota", "q", "max_files", "1"],
        22,
        "Error EINVAL: unrecognized field 'max_files' (max_objects or max_bytes)\n",
    );
    c.fails(
        &[
            "ceph",
            "osd",
            "pool",
            "set-quota",
            "q",
            "max_objects",
            "ten",
        ],
        22,
        "Error EINVAL: error parsing value 'ten': not a whole number of objects\n",
    );
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "set-quota", "q", "max_bytes", "-1"]);
    assert_eq!(code, 22, "{err}");
    assert!(
        err.starts_with("Error EINVAL: error parsing value '-1'"),
        "{err}"
    );
    c.fails(
        &[
            "ceph",
            "osd",
            "pool",
            "set-quota",
            "nope",
            "max_objects",
            "1",
        ],
        2,
        "Error ENOENT: unrecognized pool 'nope'\n",
    );
    c.fails(
        &["ceph", "osd", "pool", "get-quota", "nope"],
        2,
        "Error ENOENT: unrecognized pool 'nope'\n",
    );

    let file = c.path().join("quota.bin");
    std::fs::write(&file, vec![7u8; 5000]).expect("write");
    let file = file.to_str().expect("utf8");
    for o in ["o1", "o2", "o3"] {
        c.ok(&["rados", "-p", "q", "put", o, file]);
    }
    let wait_health = |want: bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let h = c.ok(&["ceph", "health", "detail"]);
            let full = h.contains("POOL_FULL: 1 pool(s) full")
                && h.contains("pool 'q' is full (running out of quota: max_objects: 3)");
            if full == want {
                // Each OSD hears it in the answer to its next report (one
                // beacon interval, 1 s here; Ceph's own quota test waits
                // 30 s for its map to spread).
                std::thread::sleep(std::time::Duration::from_millis(3000));
                return h;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "POOL_FULL {want}: {h}"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    wait_health(true);
    assert_eq!(
        c.ok(&["ceph", "osd", "pool", "get-quota", "q"]),
        "quotas for pool 'q':\n  max objects: 3 objects  (current num objects: 3 objects)\n  \
         max bytes  : 10 GiB  (current num bytes: 15000 bytes)\n"
    );
    let detail = c.ok(&["ceph", "osd", "pool", "ls", "detail"]);
    assert!(
        detail.contains(
            "'q' replicated size 3 min_size 2 crush_rule 0 object_hash rjenkins pg_num 8 pgp_num 8 \
             autoscale_mode off flags hashpspool,full,full_quota,selfmanaged_snaps \
             max_bytes 10737418240 max_objects 3 stripe_width 0"
        ),
        "{detail}"
    );
    let j = c.json(&["ceph", "osd", "pool", "get-quota", "q", "--format", "json"]);
    assert_eq!(j["quota_max_objects"], 3);
    assert_eq!(j["quota_max_bytes"], 10737418240u64);
    assert_eq!(j["current_num_objects"], 3);
    // ceph df: raw storage from the OSDs, and per pool MAX AVAIL capped by
    // the byte quota; `detail` shows the quotas.
    let df = c.ok(&["ceph", "df", "detail"]);
    assert!(df.starts_with("--- RAW STORAGE ---\nCLASS "), "{df}");
    assert!(df.contains("\nTOTAL "), "{df}");
    let row: Vec<&str> = df
        .lines()
        .find(|l| l.starts_with("q "))
        .expect("pool q in ceph df")
        .split_whitespace()
        .collect();
    // POOL ID PGS STORED(2) OBJECTS USED(2) %USED MAX AVAIL(2) QUOTA OBJECTS QUOTA BYTES(2)
    assert_eq!(&row[row.len() - 3..], ["3", "10", "GiB"], "{df}");
    assert_eq!(row[5], "3", "objects: {df}");
    let j = c.json(&["ceph", "df", "detail", "--format", "json"]);
    let q = pool_entry(&j, "q");
    assert_eq!(q["stats"]["quota_objects"], 3);
    assert_eq!(q["stats"]["quota_bytes"], 10737418240u64);
    let max_avail = q["stats"]["max_avail"].as_u64().expect("max_avail");
    assert!(max_avail <= 10737418240 - 15000, "{q}");
    assert!(
        j["stats"]["total_bytes"].as_u64().expect("total") > 0,
        "{j}"
    );
    c.fails(
        &["ceph", "df", "details"],
        22,
        "Error EINVAL: invalid argument 'details' (ceph df [detail])\n",
    );

    // A write that needs space is held, not refused.
    let held = |name: &str| c.spawn(&["rados", "-p", "q", "put", name, file]);
    let mut w = held("o4");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        w.try_wait().expect("try_wait").is_none(),
        "a write into a pool at its quota finished instead of waiting"
    );
    // Deletes still go through; with room again the held write finishes.
    c.ok(&["rados", "-p", "q", "rm", "o1"]);
    let out = w.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["rados", "-p", "q", "stat", "o4"]);
    wait_health(true);

    // A held write whose client dies is dropped, not applied later.
    let mut gone = held("o6");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        gone.try_wait().expect("try_wait").is_none(),
        "o6 was not held"
    );
    gone.kill().expect("kill");
    gone.wait().expect("reap");
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Raising the quota releases held writes too.
    let mut w = held("o5");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(w.try_wait().expect("try_wait").is_none(), "o5 was not held");
    c.ok(&["ceph", "osd", "pool", "set-quota", "q", "max_objects", "10"]);
    let out = w.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = wait_health(false);
    assert!(!h.contains("POOL_FULL"), "{h}");
    let listed = c.ok(&["rados", "-p", "q", "ls"]);
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["o2", "o3", "o4", "o5"],
        "o6's client died while it was held"
    );
    c.ok(&["ceph", "osd", "pool", "set-quota", "q", "max_objects", "0"]);
    c.ok(&["ceph", "osd", "pool", "set-quota", "q", "max_bytes", "0"]);
    assert_eq!(
        c.ok(&["ceph", "osd", "pool", "get-quota", "q"]),
        "quotas for pool 'q':\n  max objects: N/A\n  max bytes  : N/A\n"
    );
    let detail = c.ok(&["ceph", "osd", "pool", "ls", "detail"]);
    let line = detail
        .lines()
        .find(|l| l.contains(" 'q' "))
        .expect("pool q listed");
    assert!(
        line.ends_with("flags hashpspool,selfmanaged_snaps stripe_width 0"),
        "{detail}"
    );
}

/// `ceph osd pool rename` keeps a pool's images (they follow its id), and
/// `osd pool application enable|disable|get|set|rm` with Ceph's texts,
/// guards and limits, several applications per pool, and the health
/// warning for a used pool without one.
#[test]
fn pool_rename_and_application_tags() {
    let c = Cluster::up();
    c.ok(&["ceph", "osd", "pool", "create", "tenant", "8"]);
    c.ok(&["rbd", "pool", "init", "tenant"]);
    c.ok(&["rbd", "create", "--size", "8M", "tenant/vm1"]);
    c.ok(&[
        "rbd",
        "bench",
        "--io-type",
        "write",
        "--io-total",
        "1M",
        "tenant/vm1",
    ]);
    let (code, out, err) = c.run(&["ceph", "osd", "pool", "rename", "tenant", "tenant2"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", "pool 'tenant' renamed to 'tenant2'\n")
    );
    assert_eq!(c.ok(&["rbd", "ls", "tenant2"]), "vm1\n");
    let du = c.ok(&["rbd", "du", "tenant2/vm1"]);
    assert!(du.contains("vm1         8 MiB  4 MiB"), "{du}");
    c.fails(
        &["rbd", "ls", "tenant"],
        2,
        "rbd: error opening pool 'tenant': (2) No such file or directory\n\
         rbd: listing images failed: (2) No such file or directory\n",
    );
    // Repeating it is not an error (as Ceph); the other cases are.
    let (code, _, err) = c.run(&["ceph", "osd", "pool", "rename", "tenant", "tenant2"]);
    assert_eq!(
        (code, err.as_str()),
        (0, "pool 'tenant' does not exist; pool 'tenant2' does\n")
    );
    c.fails(
        &["ceph", "osd", "pool", "rename", "nope", "nope2"],
        2,
        "Error ENOENT: unrecognized pool 'nope'\n",
    );
    c.fails(
        &["ceph", "osd", "pool", "rename", "tenant2", "data"],
        17,
        "Error EEXIST: pool 'data' already exists\n",
    );
    c.fails(
        &["ceph", "osd", "pool", "rename", "tenant2", "a/b"],
        22,
        "Error EINVAL: invalid pool name 'a/b': no '/', '@' or control characters\n",
    );

    // Application tags.
    let get = |pool: &str| -> Value {
        let out = c.ok(&["ceph", "osd", "pool", "application", "get", pool]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    assert_eq!(get("tenant2"), serde_json::json!({"rbd": {}}));
    let app = |args: &[&str]| {
        let mut v = vec!["ceph", "osd", "pool", "application"];
        v.extend_from_slice(args);
        c.run(&v)
    };
    assert_eq!(
        app(&["enable", "tenant2", "rbd"]),
        (
            0,
            String::new(),
            "application 'rbd' already enabled on pool 'tenant2'\n".into()
        )
    );
    assert_eq!(
        app(&["enable", "tenant2", "rgw"]),
        (
            1,
            String::new(),
            "Error EPERM: Are you SURE? Pool 'tenant2' already has an enabled application; \
             pass --yes-i-really-mean-it to proceed anyway\n"
                .into()
        )
    );
    assert_eq!(
        app(&["disable", "tenant2", "rbd"]).0,
        1,
        "disabling needs --yes-i-really-mean-it"
    );
    assert_eq!(
        app(&["disable", "tenant2", "rbd", "--yes-i-really-mean-it"]),
        (
            0,
            String::new(),
            "disable application 'rbd' on pool 'tenant2'\n".into()
        )
    );
    assert_eq!(get("tenant2"), serde_json::json!({}));
    let (code, _, err) = app(&["get", "tenant2", "rbd"]);
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            "Error ENOENT: application 'rbd' is not enabled on pool 'tenant2'\n"
        )
    );
    assert_eq!(
        app(&["enable", "tenant2", "rbd"]),
        (
            0,
            String::new(),
            "enabled application 'rbd' on pool 'tenant2'\n".into()
        )
    );
    assert_eq!(get("tenant2"), serde_json::json!({"rbd": {}}));
    c.fails(
        &["ceph", "osd", "pool", "application", "get", "nope"],
        2,
        "Error ENOENT: unrecognized pool 'nope'\n",
    );

    // Several applications (with the flag) and their keys, as Ceph keeps
    // them; `rbd` stays enabled throughout.
    let ok = |args: &[&str], want: &str| {
        let (code, out, err) = app(args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "", want),
            "{args:?}"
        );
    };
    ok(
        &["enable", "tenant2", "rgw", "--yes-i-really-mean-it"],
        "enabled application 'rgw' on pool 'tenant2'\n",
    );
    ok(
        &["set", "tenant2", "rgw", "zone", "default"],
        "set application 'rgw' key 'zone' to 'default' on pool 'tenant2'\n",
    );
    assert_eq!(
        get("tenant2"),
        serde_json::json!({"rbd": {}, "rgw": {"zone": "default"}})
    );
    assert_eq!(
        c.ok(&[
            "ceph",
            "osd",
            "pool",
            "application",
            "get",
            "tenant2",
            "rgw",
            "zone"
        ]),
        "default\n"
    );
    let all = c.json(&["ceph", "osd", "pool", "application", "get"]);
    assert_eq!(all["tenant2"]["rgw"]["zone"], "default", "{all}");
    assert_eq!(all["data"], serde_json::json!({"rbd": {}}), "{all}");
    let detail = c.ok(&["ceph", "osd", "pool", "ls", "detail"]);
    assert!(
        detail.contains("'tenant2' replicated size 3 ")
            && detail.contains("stripe_width 0 application rbd,rgw\n"),
        "{detail}"
    );
    let dump = c.json(&["ceph", "osd", "dump", "--format", "json"]);
    let pools = dump["pools"].as_array().expect("pools");
    let t = pools
        .iter()
        .find(|p| p["pool_name"] == "tenant2")
        .expect("tenant2 in the dump");
    assert_eq!(t["application_metadata"]["rgw"]["zone"], "default", "{t}");
    // `rbd pool init` on a pool with rbd enabled is a no-op; it keeps rgw.
    c.ok(&["rbd", "pool", "init", "tenant2"]);
    assert_eq!(get("tenant2")["rgw"]["zone"], "default");
    // Bad input: keys of an application not enabled, a missing key, Ceph's
    // limits (128-byte values, 4 applications), reserved words.
    let refused = |args: &[&str], code: i32, want: &str| {
        let (got, _, err) = app(args);
        assert_eq!((got, err.as_str()), (code, want), "{args:?}");
    };
    refused(
        &["set", "tenant2", "cephfs", "k", "v"],
        2,
        "Error ENOENT: application 'cephfs' is not enabled on pool 'tenant2'\n",
    );
    refused(
        &["get", "tenant2", "rgw", "nope"],
        2,
        "Error ENOENT: application 'rgw' on pool 'tenant2' does not have key 'nope'\n",
    );
    let long = "v".repeat(129);
    refused(
        &["set", "tenant2", "rgw", "k", &long],
        22,
        &format!("Error EINVAL: value '{long}' too long; max length 128\n"),
    );
    refused(
        &["set", "tenant2", "rgw", "all", "v"],
        22,
        "Error EINVAL: key cannot be 'all'\n",
    );
    for a in ["a1", "a2"] {
        app(&["enable", "tenant2", a, "--yes-i-really-mean-it"]);
    }
    refused(
        &["enable", "tenant2", "a3", "--yes-i-really-mean-it"],
        22,
        "Error EINVAL: too many enabled applications on pool 'tenant2'; max 4\n",
    );
    for a in ["a1", "a2"] {
        app(&["disable", "tenant2", a, "--yes-i-really-mean-it"]);
    }
    ok(
        &["rm", "tenant2", "rgw", "zone"],
        "removed application 'rgw' key 'zone' on pool 'tenant2'\n",
    );
    ok(
        &["rm", "tenant2", "rgw", "zone"],
        "application 'rgw' on pool 'tenant2' does not have key 'zone'\n",
    );
    // Disabling rbd leaves rgw; `rbd pool init` then wants --force.
    ok(
        &["disable", "tenant2", "rbd", "--yes-i-really-mean-it"],
        "disable application 'rbd' on pool 'tenant2'\n",
    );
    assert_eq!(get("tenant2"), serde_json::json!({"rgw": {}}));
    let (code, _, err) = c.run(&["rbd", "pool", "init", "tenant2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed to enable rbd application"), "{err}");
    c.ok(&["rbd", "pool", "init", "--force", "tenant2"]);
    assert_eq!(get("tenant2"), serde_json::json!({"rbd": {}, "rgw": {}}));

    // A pool holding objects with no application is a health warning
    // (Ceph's POOL_APP_NOT_ENABLED) until one is enabled.
    c.ok(&["ceph", "osd", "pool", "create", "bare", "8"]);
    let file = c.path().join("obj.bin");
    std::fs::write(&file, b"payload").expect("write");
    c.ok(&[
        "rados",
        "-p",
        "bare",
        "put",
        "o1",
        file.to_str().expect("utf8"),
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let detail = loop {
        let h = c.ok(&["ceph", "health", "detail"]);
        if h.contains("POOL_APP_NOT_ENABLED") {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(
        detail.starts_with("HEALTH_WARN application not enabled on 1 pool(s)\n")
            && detail.contains(
                "[WRN] POOL_APP_NOT_ENABLED: application not enabled on 1 pool(s)\n    \
                 application not enabled on pool 'bare'\n    use 'ceph osd pool application enable"
            ),
        "{detail}"
    );
    ok(
        &["enable", "bare", "myapp"],
        "enabled application 'myapp' on pool 'bare'\n",
    );
    assert_eq!(c.ok(&["ceph", "health"]), "HEALTH_OK\n");
}

/// A pool's `min_size` raised above the OSDs that are up stops its I/O (its
/// PGs are `undersized+peered`, as Ceph's), and lowering it again lets a
/// write that waited meanwhile finish. Before, the PGs stayed active and
/// `ceph -s` disagreed with `ceph health`.
#[test]
fn min_size_above_the_up_osds_stops_io_until_lowered() {
    let c = Cluster::up();
    c.ok(&["ceph", "osd", "pool", "create", "m", "8"]);
    let file = c.path().join("m.bin");
    std::fs::write(&file, vec![9u8; 3000]).expect("write");
    let file = file.to_str().expect("utf8");
    c.ok(&["rados", "-p", "m", "put", "before", file]);
    // Three OSDs: size 4 leaves every PG undersized, min_size 4 inactive.
    c.ok(&["ceph", "osd", "pool", "set", "m", "size", "4"]);
    c.ok(&["ceph", "osd", "pool", "set", "m", "min_size", "4"]);
    let wait_status = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = c.ok(&["ceph", "-s"]);
            if s.contains(want) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "{want}: {s}");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    // `ceph -s` and `ceph df` answer (from the OSDs' reports) although
    // the pool's PGs take no requests.
    let s = wait_status("8 undersized+peered");
    assert!(
        s.contains("Reduced data availability: 8 pgs inactive"),
        "{s}"
    );
    // The figures are the OSDs' reports: they count the object once the
    // next report (a beacon interval, 1 s here) is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let df = c.ok(&["ceph", "df"]);
        let row: Vec<&str> = df
            .lines()
            .find(|l| l.starts_with("m "))
            .expect("pool m in ceph df")
            .split_whitespace()
            .collect();
        // POOL ID PGS STORED(2) OBJECTS ...
        if row[5] == "1" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "objects: {df}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // librados' pool stat (rados df) answers too.
    let j = c.json(&["rados", "df", "--format", "json"]);
    let m = pool_entry(&j, "m");
    assert_eq!(m["num_objects"], 1, "{j}");
    let peered = c.ok(&["ceph", "pg", "ls-by-pool", "m", "peered"]);
    assert_eq!(
        peered
            .lines()
            .filter(|l| l.contains(" undersized+peered "))
            .count(),
        8,
        "{peered}"
    );
    let mut w = c.spawn(&["rados", "-p", "m", "put", "during", file]);
    // Every OSD has the map (the status above came after it); the put
    // must wait, not be served by a PG below its min_size.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        w.try_wait().expect("try_wait").is_none(),
        "a write into PGs below min_size finished instead of waiting"
    );
    c.ok(&["ceph", "osd", "pool", "set", "m", "min_size", "3"]);
    let out = w.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_status("8 active+undersized");
    let got = c.path().join("m.out");
    let got_s = got.to_str().expect("utf8");
    c.ok(&["rados", "-p", "m", "get", "during", got_s]);
    assert_eq!(std::fs::read(&got).expect("read"), vec![9u8; 3000]);
    c.ok(&["rados", "-p", "m", "get", "before", got_s]);
    assert_eq!(std::fs::read(&got).expect("read"), vec![9u8; 3000]);
}
