//! The monitors' config database end to end against `quarry up`:
//! `ceph config set|get|rm|dump|show|assimilate-conf` (plain and JSON, with
//! Ceph's errors and exit codes), caps, persistence across `quarry down` /
//! `quarry up`, and delivery at connect: to the `rbd` tool, to QEMU through
//! the C library, and to `rados_conf_get`, always below conf file,
//! environment and `rados_conf_set`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Cluster, BIN};
use serde_json::{json, Value};

/// Run a tool with the environment `. D/env` gives; (exit code, stdout, stderr).
fn run_env(dir: &Path, prog: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("CEPH_CONF", dir.join("ceph.conf"))
        .env("HOME", dir)
        .env("LD_LIBRARY_PATH", dir.join("lib"))
        .env_remove("CEPH_ARGS")
        .env_remove("CEPH_KEYRING")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("spawn");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn run(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    run_env(c.path(), Path::new(BIN), args, &[])
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = run(c, args);
    assert_eq!(code, 0, "{args:?}: stdout={out} stderr={err}");
    out
}

fn json_of(c: &Cluster, args: &[&str]) -> Value {
    let out = ok(c, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Expect this exit code, nothing on stdout and exactly this stderr.
fn fails(c: &Cluster, args: &[&str], code: i32, stderr: &str) {
    let (got, out, err) = run(c, args);
    assert_eq!(
        (got, err.as_str()),
        (code, stderr),
        "{args:?}: stdout={out}"
    );
    assert!(out.is_empty(), "{args:?}: stdout={out}");
}

/// Compile `tests/c/<name>.c` against the system's Ceph headers, linked to
/// this build's library (next to the `quarry` binary).
fn compile(dir: &Path, name: &str) -> PathBuf {
    let lib = Path::new(BIN).parent().expect("profile dir");
    assert!(
        lib.join("libquarry_capi.so").exists(),
        "build quarry-capi first (cargo build --release -p quarry-cli -p quarry-capi)"
    );
    let links = dir.join("testlib");
    std::fs::create_dir_all(&links).expect("mkdir");
    for so in ["librados.so.2", "librbd.so.1"] {
        let _ = std::os::unix::fs::symlink(lib.join("libquarry_capi.so"), links.join(so));
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let bin = dir.join(name);
    let o = Command::new("gcc")
        .arg("-Wall")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg(format!("-L{}", links.display()))
        .arg("-l:librados.so.2")
        .output()
        .expect("run gcc (install gcc and librados-dev)");
    assert!(
        o.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

#[test]
fn config_database_against_a_cluster() {
    let c = Cluster::up(1, 1);

    // Empty database.
    assert_eq!(
        json_of(&c, &["ceph", "config", "dump", "-f", "json"]),
        json!([])
    );

    // set: silent on success; any spelling of a name is stored canonically.
    for (who, opt, val) in [
        ("client", "rbd_cache_policy", "writethrough"),
        ("client", "rbd-default-features", "layering"),
        ("global", "rbd_cache_size", "16M"),
        ("osd", "osd_max_backfills", "2"),
        ("osd.0", "osd_max_backfills", "3"),
        ("client.glance", "rbd_cache", "false"),
    ] {
        assert_eq!(ok(&c, &["ceph", "config", "set", who, opt, val]), "");
    }
    let dump = json_of(&c, &["ceph", "config", "dump", "--format", "json"]);
    let rows: Vec<(String, String, String)> = dump
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            (
                e["section"].as_str().expect("section").to_string(),
                e["name"].as_str().expect("name").to_string(),
                e["value"].as_str().expect("value").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("client", "rbd_cache_policy", "writethrough"),
        ("client", "rbd_default_features", "layering"),
        ("client.glance", "rbd_cache", "false"),
        ("global", "rbd_cache_size", "16M"),
        ("osd", "osd_max_backfills", "2"),
        ("osd.0", "osd_max_backfills", "3"),
    ]
    .iter()
    .map(|(a, b, v)| (a.to_string(), b.to_string(), v.to_string()))
    .collect();
    assert_eq!(rows, want);
    let plain = ok(&c, &["ceph", "config", "dump"]);
    let mut lines = plain.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["WHO", "MASK", "OPTION", "VALUE", "RO"]);
    // rbd_cache_policy cannot change at runtime: RO is marked.
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(row, ["client", "rbd_cache_policy", "writethrough", "*"]);

    // get: the most specific section wins; an unset option shows its default.
    assert_eq!(
        ok(&c, &["ceph", "config", "get", "osd.0", "osd_max_backfills"]),
        "3\n"
    );
    assert_eq!(
        ok(&c, &["ceph", "config", "get", "osd.1", "osd_max_backfills"]),
        "2\n"
    );
    assert_eq!(
        ok(&c, &["ceph", "config", "get", "client.admin", "rbd_cache"]),
        "true\n"
    );
    assert_eq!(
        ok(&c, &["ceph", "config", "get", "client.glance", "rbd_cache"]),
        "false\n"
    );
    assert_eq!(
        json_of(
            &c,
            &[
                "ceph",
                "config",
                "get",
                "client.glance",
                "rbd_cache",
                "-f",
                "json"
            ]
        ),
        json!("false")
    );
    let g = json_of(&c, &["ceph", "config", "get", "client.admin", "-f", "json"]);
    assert_eq!(g["rbd_cache_size"]["section"], "global");
    assert_eq!(g["rbd_cache_policy"]["value"], "writethrough");
    assert!(g.get("osd_max_backfills").is_none(), "{g}");
    assert!(g.get("rbd_cache").is_none(), "client.glance only: {g}");

    // show: an OSD's effective configuration = defaults < mon < conf file.
    let show = json_of(&c, &["ceph", "config", "show", "osd.0", "-f", "json"]);
    let find = |name: &str| -> Value {
        show.as_array()
            .expect("list")
            .iter()
            .find(|o| o["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {show}"))
    };
    assert_eq!(find("osd_max_backfills")["value"], "3");
    assert_eq!(find("osd_max_backfills")["source"], "mon");
    assert_eq!(find("rbd_cache_size")["value"], "16777216");
    assert_eq!(find("mon_host")["source"], "file");
    assert!(ok(&c, &["ceph", "config", "show", "osd.0"]).contains("osd_max_backfills"));

    // Errors, with Ceph's messages and exit codes (errno).
    fails(
        &c,
        &["ceph", "config", "set", "client", "no_such_option", "1"],
        22,
        "Error EINVAL: unrecognized config option 'no_such_option'\n",
    );
    fails(
        &c,
        &["ceph", "config", "set", "client", "rbd_cache", "maybe"],
        22,
        "Error EINVAL: error parsing value: expected true, false or a number\n",
    );
    fails(
        &c,
        &[
            "ceph",
            "config",
            "set",
            "client",
            "rbd_cache_policy",
            "sometimes",
        ],
        22,
        "Error EINVAL: error parsing value: must be one of writethrough, writeback, writearound\n",
    );
    fails(
        &c,
        &["ceph", "config", "set", "nobody", "rbd_cache", "true"],
        22,
        "Error EINVAL: unrecognized config target 'nobody'\n",
    );
    let (code, _, err) = run(
        &c,
        &[
            "ceph",
            "config",
            "set",
            "osd/host:foo",
            "osd_max_backfills",
            "1",
        ],
    );
    assert_eq!(code, 22, "{err}");
    assert!(
        err.starts_with("Error EINVAL: config masks are not supported"),
        "{err}"
    );
    let (code, _, err) = run(
        &c,
        &["ceph", "config", "set", "global", "mon_host", "1.2.3.4"],
    );
    assert_eq!(code, 22, "{err}");
    assert!(
        err.contains("may not be set in the monitor config database"),
        "{err}"
    );
    fails(
        &c,
        &["ceph", "config", "get", "nobody"],
        22,
        "Error EINVAL: unrecognized entity 'nobody'\n",
    );
    fails(
        &c,
        &["ceph", "config", "get", "osd.0", "no_such_option"],
        2,
        "Error ENOENT: unrecognized key 'no_such_option'\n",
    );
    fails(
        &c,
        &["ceph", "config", "show", "osd.7"],
        2,
        "Error ENOENT: no config state for osd.7\n",
    );

    // Caps: read for get/dump, `allow *` for set/rm.
    let ring = ok(
        &c,
        &[
            "ceph",
            "auth",
            "get-or-create",
            "client.ro",
            "mon",
            "allow r",
        ],
    );
    let ring_path = c.path().join("ro.keyring");
    std::fs::write(&ring_path, ring).expect("write keyring");
    let k = ring_path.to_str().expect("utf-8 path");
    let (code, _, err) = run(
        &c,
        &[
            "ceph",
            "--id",
            "ro",
            "-k",
            k,
            "config",
            "set",
            "client",
            "rbd_cache",
            "false",
        ],
    );
    assert_eq!(code, 13, "{err}");
    assert!(err.starts_with("Error EACCES: access denied"), "{err}");
    let (code, _, err) = run(
        &c,
        &[
            "ceph",
            "--id",
            "ro",
            "-k",
            k,
            "config",
            "rm",
            "osd",
            "osd_max_backfills",
        ],
    );
    assert_eq!(code, 13, "{err}");
    assert_eq!(
        ok(
            &c,
            &[
                "ceph",
                "--id",
                "ro",
                "-k",
                k,
                "config",
                "get",
                "osd.0",
                "osd_max_backfills"
            ]
        ),
        "3\n"
    );

    // rm: gone from the database; removing an unset option succeeds.
    assert_eq!(
        ok(&c, &["ceph", "config", "rm", "osd.0", "osd_max_backfills"]),
        ""
    );
    assert_eq!(
        ok(&c, &["ceph", "config", "rm", "osd.0", "osd_max_backfills"]),
        ""
    );
    assert_eq!(
        ok(&c, &["ceph", "config", "get", "osd.0", "osd_max_backfills"]),
        "2\n"
    );

    // assimilate-conf: what the database can hold is stored; the rest
    // (mon_host, unknown names) comes back as a conf file.
    let conf_in = c.path().join("assimilate.conf");
    std::fs::write(
        &conf_in,
        "[global]\nmon_host = 10.0.0.1\nrbd_concurrent_management_ops = 7\n\
         [osd]\nosd_max_backfills = 4\nno_such_thing = 1\n",
    )
    .expect("write conf");
    let left = ok(
        &c,
        &[
            "ceph",
            "config",
            "assimilate-conf",
            "-i",
            conf_in.to_str().expect("path"),
        ],
    );
    assert_eq!(
        left,
        "[global]\n\tmon_host = 10.0.0.1\n\n[osd]\n\tno_such_thing = 1\n\n"
    );
    assert_eq!(
        ok(
            &c,
            &[
                "ceph",
                "config",
                "get",
                "client.admin",
                "rbd_concurrent_management_ops"
            ]
        ),
        "7\n"
    );
    assert_eq!(
        ok(&c, &["ceph", "config", "get", "osd.0", "osd_max_backfills"]),
        "4\n"
    );

    // Delivery at connect. The rbd tool creates images with the mon-level
    // rbd_default_features ...
    ok(&c, &["rbd", "create", "data/viacli", "--size", "8M"]);
    let info = json_of(&c, &["rbd", "info", "data/viacli", "--format", "json"]);
    assert_eq!(info["features"], json!(["layering"]));
    // ... and so does QEMU through the C library.
    let (code, _, err) = run_env(
        c.path(),
        Path::new("qemu-img"),
        &["create", "-f", "raw", "rbd:data/viaqemu", "8M"],
        &[],
    );
    assert_eq!(code, 0, "qemu-img: {err}");
    let info = json_of(&c, &["rbd", "info", "data/viaqemu", "--format", "json"]);
    assert_eq!(info["features"], json!(["layering"]));

    // rados_conf_get after connect: mon-level values, below every other level.
    let probe = compile(c.path(), "conf_get");
    let names = ["rbd_cache_policy", "rbd_cache_size", "rbd_default_features"];
    let conf = |extra: &[&str], env: &[(&str, &str)]| -> String {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(names);
        let lib = c.path().join("testlib");
        let mut all: Vec<(&str, &str)> = vec![("LD_LIBRARY_PATH", lib.to_str().expect("path"))];
        all.extend_from_slice(env);
        let (code, out, err) = run_env(c.path(), &probe, &args, &all);
        assert_eq!(code, 0, "conf_get {args:?}: {out}{err}");
        out
    };
    assert_eq!(
        conf(&[], &[]),
        "rbd_cache_policy=writethrough\nrbd_cache_size=16777216\nrbd_default_features=1\n"
    );
    // The environment (CEPH_ARGS) and rados_conf_set override it.
    assert_eq!(
        conf(
            &["-s", "rbd_cache_size=4096"],
            &[("CEPH_ARGS", "--rbd_cache_policy writeback")]
        ),
        "rbd_cache_policy=writeback\nrbd_cache_size=4096\nrbd_default_features=1\n"
    );
    // So does the conf file.
    let conf_path = c.path().join("ceph.conf");
    let mut text = std::fs::read_to_string(&conf_path).expect("read conf");
    text.push_str("\n[client.admin]\nrbd_cache_policy = writearound\n");
    let own = c.path().join("own.conf");
    std::fs::write(&own, text).expect("write conf");
    assert_eq!(
        conf(&[], &[("CEPH_CONF", own.to_str().expect("path"))]),
        "rbd_cache_policy=writearound\nrbd_cache_size=16777216\nrbd_default_features=1\n"
    );

    // Persistence: the database survives `quarry down` / `quarry up`.
    let before = json_of(&c, &["ceph", "config", "dump", "-f", "json"]);
    let down = Command::new(BIN)
        .args(["down", "--dir"])
        .arg(c.path())
        .output()
        .expect("quarry down");
    assert!(down.status.success());
    c.run_up(None);
    assert_eq!(
        json_of(&c, &["ceph", "config", "dump", "-f", "json"]),
        before
    );
    assert_eq!(
        conf(&[], &[]),
        "rbd_cache_policy=writethrough\nrbd_cache_size=16777216\nrbd_default_features=1\n"
    );
}

/// Run `quarry DAEMON --id ID --dir DIR`, bounded: it must refuse to start.
fn daemon_refuses(dir: &Path, daemon: &str, id: &str) -> String {
    let o = Command::new("timeout")
        .args(["30", BIN, daemon, "--id", id, "--dir"])
        .arg(dir)
        .env_remove("CEPH_CONF")
        .env_remove("CEPH_ARGS")
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_ne!(
        o.status.code(),
        Some(124),
        "{daemon}.{id} kept running: {err}"
    );
    assert!(
        !o.status.success(),
        "{daemon}.{id} must refuse to start: {err}"
    );
    err
}

/// msgr2's `secure` mode (encryption of every frame) is not implemented: a
/// mode list without `crc` is refused with a clear error wherever it is
/// set (conf file, environment, QEMU's options through the C library, the
/// config database, a daemon's conf), instead of quietly sending in the
/// clear what someone asked to have encrypted. Lists with `crc` (Ceph's
/// defaults) work as before.
#[test]
fn a_secure_only_connection_mode_is_refused_not_ignored() {
    let c = Cluster::up(1, 1);
    ok(&c, &["rbd", "create", "data/m", "--size", "4M"]);
    let with_env = |args: &[&str], ceph_args: &str| {
        run_env(c.path(), Path::new(BIN), args, &[("CEPH_ARGS", ceph_args)])
    };
    // The rbd tool, from CEPH_ARGS and from the conf file.
    for opt in ["--ms_client_mode secure", "--ms-mon-client-mode secure"] {
        let (code, out, err) = with_env(&["rbd", "ls", "data"], opt);
        assert_eq!(code, 22, "{opt}: {out}{err}");
        assert!(
            err.contains("cannot encrypt") && err.contains("crc secure"),
            "{opt}: {err}"
        );
    }
    for opt in ["--ms_client_mode crc", "--ms_client_mode secure,crc"] {
        let (code, out, err) = with_env(&["rbd", "ls", "data"], opt);
        assert_eq!((code, out.as_str()), (0, "m\n"), "{opt}: {err}");
    }
    let (code, _, err) = with_env(&["rbd", "ls", "data"], "--ms_client_mode tls");
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("unknown connection mode \"tls\""), "{err}");
    let conf = std::fs::read_to_string(c.path().join("ceph.conf")).expect("conf");
    let secure_conf = c.path().join("secure.conf");
    std::fs::write(
        &secure_conf,
        format!("{conf}\n[client.admin]\n\tms client mode = secure\n"),
    )
    .expect("write conf");
    let (code, _, err) = run_env(
        c.path(),
        Path::new(BIN),
        &["rbd", "ls", "data"],
        &[("CEPH_CONF", secure_conf.to_str().expect("path"))],
    );
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("ms_client_mode"), "{err}");

    // QEMU, whose rbd driver hands its `key=value` options to
    // rados_conf_set before rados_connect.
    let (code, _, err) = run_env(
        c.path(),
        Path::new("qemu-img"),
        &["info", "rbd:data/m:ms_client_mode=secure"],
        &[],
    );
    assert_ne!(code, 0, "qemu-img must fail to connect");
    assert!(
        err.contains("cannot encrypt") && err.contains("Invalid argument"),
        "{err}"
    );
    let (code, out, err) = run_env(
        c.path(),
        Path::new("qemu-img"),
        &["info", "rbd:data/m:ms_client_mode=crc"],
        &[],
    );
    assert_eq!(code, 0, "qemu-img: {err}");
    assert!(out.contains("virtual size: 4 MiB"), "{out}");

    // The config database refuses what no one could use.
    let (code, _, err) = run(
        &c,
        &[
            "ceph",
            "config",
            "set",
            "client",
            "ms_client_mode",
            "secure",
        ],
    );
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("cannot encrypt"), "{err}");
    ok(
        &c,
        &[
            "ceph",
            "config",
            "set",
            "client",
            "ms_client_mode",
            "secure crc",
        ],
    );
    assert_eq!(ok(&c, &["rbd", "ls", "data"]), "m\n");
    ok(&c, &["ceph", "config", "rm", "client", "ms_client_mode"]);

    // Daemons refuse to start.
    for (daemon, id, section, option) in [
        ("osd", "9", "osd.9", "ms_cluster_mode"),
        ("osd", "8", "osd", "ms_service_mode"),
        ("mon", "z", "mon.z", "ms_mon_service_mode"),
    ] {
        let dir = c.path().join(format!("refused-{daemon}-{id}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("ceph.conf"),
            format!("{conf}\n[{section}]\n\t{option} = secure\n"),
        )
        .expect("write conf");
        let err = daemon_refuses(&dir, daemon, id);
        assert!(
            err.contains(&format!("{daemon}.{id}: {option} = secure"))
                && err.contains("cannot encrypt"),
            "{daemon}.{id}: {err}"
        );
    }
    // The cluster, on Ceph's defaults, serves on.
    assert_eq!(ok(&c, &["rbd", "ls", "data"]), "m\n");
}
