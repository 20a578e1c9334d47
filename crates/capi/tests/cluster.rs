//! QEMU and fio through Quarry's library against a real one-host cluster
//! started with `quarry up` (monitor + 3 OSDs, cephx-style auth).

mod common;

use common::cluster::Cluster;
use std::time::{Duration, Instant};

impl Cluster {
    fn run(&self, tool: &str, args: &[&str]) -> (bool, String, String) {
        let o = self.cmd(tool).args(args).output().expect("spawn");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

/// One cluster for every scenario (starting clusters is the slow part):
/// QEMU and fio, auth errors, the trash from C, and python3-rbd/-rados
/// scripts (tests/py: OpenStack's flow, pool applications, object
/// listing and xattrs, image administration, self-managed snapshots,
/// cluster facts, omap through compound operations, LUKS encryption of a
/// golden image and its clone, live migration of a clone between pools,
/// consistency groups: crash-consistent snapshots of a VM's two disks,
/// an object map rebuilt through the lock owner).
#[test]
fn qemu_fio_and_auth_on_a_cluster() {
    let c = Cluster::up();
    qemu_and_fio(&c);
    auth_errors_are_immediate_and_named(&c);
    trash_from_c(&c);
    python_on_cluster(&c);
    pool_applications_from_python(&c);
    run_python(&c, "list_objects.py", &["py"], "listing OK");
    run_python(&c, "image_admin.py", &["py"], "image admin OK");
    run_python(&c, "self_managed_snaps.py", &["py"], "snapshots OK");
    run_python(&c, "omap.py", &["py"], "omap OK");
    run_python(&c, "advisory_locks.py", &["py"], "locks OK");
    run_python(&c, "snap_set.py", &["py"], "snap set OK");
    run_python(&c, "object_ops.py", &["py"], "object ops OK");
    run_python(&c, "copy.py", &["py"], "copy OK");
    run_python(&c, "pool_stats.py", &["py"], "pool stats OK");
    run_python(&c, "encryption.py", &["py"], "encryption OK");
    run_python(&c, "migration.py", &["py", "data"], "migration OK");
    run_python(&c, "group.py", &["py"], "group OK");
    run_python(&c, "object_map.py", &["py"], "object map OK");
    migration_under_qemu(&c);
}

/// `rbd migration` with QEMU's tools on both sides: data written by
/// qemu-io before `prepare` reads back through the destination, a write
/// there survives `execute` and `commit`, and the source name is gone.
fn migration_under_qemu(c: &Cluster) {
    let quarry = common::cluster::quarry_bin();
    let rbd = |args: &[&str]| {
        let o = c
            .cmd_path(&quarry)
            .arg("rbd")
            .args(args)
            .output()
            .expect("rbd");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "rbd {args:?}: {err}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let qemu_io = |spec: &str, cmds: &[&str]| {
        let mut args = vec!["-f", "raw"];
        for c in cmds {
            args.extend(["-c", c]);
        }
        args.push(spec);
        let (ok, out, err) = c.run("qemu-io", &args);
        assert!(ok && !out.contains("fail"), "{cmds:?}: {out}{err}");
    };
    let (ok, _, err) = c.run("qemu-img", &["create", "-f", "raw", "rbd:rbd/mq", "64M"]);
    assert!(ok, "{err}");
    qemu_io(
        "rbd:rbd/mq",
        &["write -P 0x5a 0 6M", "write -P 0x5b 40M 1M"],
    );
    rbd(&["migration", "prepare", "rbd/mq", "data/mq"]);
    qemu_io(
        "rbd:data/mq",
        &[
            "read -P 0x5a 0 6M",
            "read -P 0x5b 40M 1M",
            "write -P 0x5c 5M 8k",
        ],
    );
    rbd(&["migration", "execute", "--no-progress", "data/mq"]);
    rbd(&["migration", "commit", "--no-progress", "data/mq"]);
    assert!(!rbd(&["ls", "rbd"]).lines().any(|l| l == "mq"));
    qemu_io(
        "rbd:data/mq",
        &[
            "read -P 0x5a 0 5M",
            "read -P 0x5c 5M 8k",
            "read -P 0x5a 5128k 1016k",
            "read -P 0x5b 40M 1M",
            "read -P 0 41M 23M",
        ],
    );
    rbd(&["rm", "--no-progress", "data/mq"]);
}

/// tests/py/pool_applications.py: python3-rados's `Ioctx.application_*`
/// and the `osd pool application` monitor commands, through the library,
/// in the pool `py` (`rbd` enabled by `rbd pool init`).
fn pool_applications_from_python(c: &Cluster) {
    run_python(c, "pool_applications.py", &["py"], "applications OK");
}

/// Run tests/py/SCRIPT with ARGS under the cluster's environment; it must
/// succeed and print `ok_line`.
fn run_python(c: &Cluster, script: &str, args: &[&str], ok_line: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let o = c
        .cmd_path(std::path::Path::new("/usr/bin/python3"))
        .arg(&script)
        .args(args)
        .output()
        .expect("run python3");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success() && out.contains(ok_line), "{out}\n{err}");
}

/// tests/py/openstack_flow.py (python3-rbd, as OpenStack uses it) against
/// the cluster, in a pool of its own: capacity comes from the OSDs' reports,
/// the pool's byte quota (as Cinder reads it) from the monitors.
fn python_on_cluster(c: &Cluster) {
    let quarry = common::cluster::quarry_bin();
    for args in [
        &["ceph", "osd", "pool", "create", "py", "8"][..],
        &["rbd", "pool", "init", "py"][..],
        &[
            "ceph",
            "osd",
            "pool",
            "set-quota",
            "py",
            "max_bytes",
            "100G",
        ][..],
    ] {
        let o = c.cmd_path(&quarry).args(args).output().expect("run quarry");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let quota = (100u64 << 30).to_string();
    run_python(c, "openstack_flow.py", &["py", &quota], "python OK");
}

/// tests/c/trash.c (the C ABI test of the trash calls) against the cluster:
/// watches (an open image refuses the move) live on the OSDs here.
fn trash_from_c(c: &Cluster) {
    common::require("gcc");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/trash.c");
    let bin = c.path().join("trash");
    let o = std::process::Command::new("gcc")
        .arg("-Wall")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg(format!("-L{}", c.lib_dir().display()))
        .args(["-l:librbd.so.1", "-l:librados.so.2"])
        .output()
        .expect("gcc");
    assert!(
        o.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = c.cmd_path(&bin).arg("data").output().expect("run trash");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success() && out.contains("trash OK"),
        "{out}\n{err}"
    );
}

fn qemu_and_fio(c: &Cluster) {
    let (ok, out, err) = c.run("qemu-img", &["create", "-f", "raw", "rbd:data/foo", "10G"]);
    assert!(ok, "{err}");
    assert_eq!(out, "Formatting 'rbd:data/foo', fmt=raw size=10737418240\n");
    let (ok, out, err) = c.run("qemu-img", &["info", "rbd:data/foo"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("virtual size: 10 GiB (10737418240 bytes)"),
        "{out}"
    );
    // The library is silent by default (above: `err` is QEMU's alone);
    // QUARRY_LOG sends its logs to the host's stderr, and a bad level is
    // named without failing the host.
    assert!(!err.contains("quarry"), "{err}");
    let info_stderr = |level: &str| {
        let o = c
            .cmd("qemu-img")
            .args(["info", "rbd:data/foo"])
            .env("QUARRY_LOG", level)
            .output()
            .expect("spawn");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "QUARRY_LOG={level}: {err}");
        err
    };
    let err = info_stderr("debug");
    assert!(err.contains("monitor session open"), "{err}");
    let err = info_stderr("loud");
    assert!(
        err.contains("QUARRY_LOG=\"loud\": expected one of off, error, warn, info, debug, trace"),
        "{err}"
    );
    let (ok, out, err) = c.run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 4095 1M",
            "-c",
            "flush",
            "-c",
            "read -P 0xab 4095 1M",
            "rbd:data/foo",
        ],
    );
    assert!(ok && out.contains("read 1048576/1048576"), "{out}{err}");
    let (ok, out, err) = c.run("qemu-img", &["snapshot", "-c", "s1", "rbd:data/foo"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = c.run("qemu-img", &["snapshot", "-l", "rbd:data/foo"]);
    assert!(ok && out.contains("s1        s1"), "{out}");

    // fio's rbd engine with verification.
    let (ok, _, err) = c.run("qemu-img", &["create", "-f", "raw", "rbd:data/fio", "32M"]);
    assert!(ok, "{err}");
    let job = c.path().join("job.fio");
    std::fs::write(
        &job,
        "[global]\nioengine=rbd\nclientname=admin\npool=data\nrbdname=fio\nbs=4k\nsize=4M\n\
         [w]\nrw=randwrite\niodepth=16\nverify=crc32c\ndo_verify=1\n",
    )
    .expect("job");
    let (ok, out, err) = c.run("fio", &[job.to_str().expect("utf8")]);
    assert!(ok && out.contains("err= 0"), "{out}{err}");
}

fn auth_errors_are_immediate_and_named(c: &Cluster) {
    let t = Instant::now();
    // `client.` in the id looks for client.client.glance: no key for it.
    let (ok, _, err) = c.run("qemu-img", &["info", "rbd:data/foo:id=client.glance"]);
    assert!(!ok);
    assert!(
        err.contains("error connecting: No such file or directory"),
        "{err}"
    );
    let keyring = c.path().join("ceph.client.admin.keyring");
    let spec = format!("rbd:data/foo:id=client.admin:keyring={}", keyring.display());
    let (ok, _, err) = c.run("qemu-img", &["info", &spec]);
    assert!(!ok);
    assert!(err.contains("error connecting: Permission denied"), "{err}");
    // A well-formed but wrong key is refused at once (Ceph: 300 s timeout).
    let (ok, _, err) = c.run(
        "qemu-img",
        &[
            "info",
            "rbd:data/foo:id=admin:key=AQDTFgdrEXinJRAASs0Vq7yhBPmFiCU1hiZn7A==",
        ],
    );
    assert!(!ok);
    assert!(err.contains("error connecting: Permission denied"), "{err}");
    let (ok, _, err) = c.run(
        "qemu-img",
        &[
            "info",
            "rbd:data/foo:id=admin:key=AQBwrongwrongwrongwrongwrongwrongwrongw==",
        ],
    );
    assert!(!ok);
    assert!(err.contains("error connecting: Invalid argument"), "{err}");
    let (ok, _, err) = c.run("qemu-img", &["info", "rbd:data/foo:keyring=/nonexistent"]);
    assert!(!ok);
    assert!(
        err.contains("error connecting: No such file or directory"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "auth failures took {:?}",
        t.elapsed()
    );
}
