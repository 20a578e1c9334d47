//! RBD's exclusive lock between separate processes on a real one-host
//! cluster (`quarry up`: monitor + 3 OSDs): each writer is a C program
//! linked against Quarry's librbd (`tests/c/lockprobe.c`) or Debian's
//! qemu-io. Covers the managed lock refusing a second writer, the
//! cooperative hand-off keeping data consistent, breaking the lock of a
//! writer killed with SIGKILL, and fencing: a writer stopped with SIGSTOP
//! has its lock broken and is blocklisted, so after SIGCONT its writes fail
//! with ESHUTDOWN and never land over the new owner's; `rbd lock rm`
//! fences the same way; `ceph osd blocklist add|ls|rm`. Also librados' C
//! watch/notify exports between two processes (`tests/c/notifyprobe.c`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;

/// The cluster with `lockprobe` and `notifyprobe` compiled against this
/// build's library.
fn up_with_probe() -> Cluster {
    let c = Cluster::up();
    common::require("gcc");
    for name in ["lockprobe", "notifyprobe"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
        let o = Command::new("gcc")
            .arg("-Wall")
            .arg("-o")
            .arg(c.path().join(name))
            .arg(&src)
            .arg(format!("-L{}", c.lib_dir().display()))
            .args(["-l:librbd.so.1", "-l:librados.so.2", "-lpthread"])
            .output()
            .expect("gcc");
        assert!(
            o.status.success(),
            "gcc {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    c
}

impl Cluster {
    fn probe_bin(&self) -> PathBuf {
        self.path().join("lockprobe")
    }

    /// Start a probe running `steps` on data/`image`.
    fn probe(&self, image: &str, steps: &[&str]) -> Child {
        self.cmd_path(&self.probe_bin())
            .arg("data")
            .arg(image)
            .args(steps)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lockprobe")
    }

    fn run(&self, tool: &str, args: &[&str]) -> (bool, String) {
        let o = self.cmd(tool).args(args).output().expect("spawn");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    /// Quarry's own `rbd`/`ceph` (`quarry rbd ...`), not Debian's.
    fn quarry(&self, args: &[&str]) -> (bool, String) {
        let o = self
            .cmd_path(&common::cluster::quarry_bin())
            .args(args)
            .output()
            .expect("spawn");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    fn file(&self, name: &str) -> String {
        self.path().join(name).display().to_string()
    }
}

/// Wait (bounded) for a probe to exit; its stdout.
fn finish(mut child: Child, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let o = child.wait_with_output().expect("output");
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                st.success(),
                "{what} failed: {out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "{what} hung: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_file(c: &Cluster, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c.path().join(name).exists() {
        assert!(Instant::now() < deadline, "{name} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Steps' output lines, in order.
fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn exclusive_lock_between_processes() {
    let c = up_with_probe();
    for img in [
        "managed",
        "coop",
        "killed",
        "stopped",
        "lockrm",
        "running",
        "nofence",
        "shortfence",
    ] {
        let (ok, out) = c.run(
            "qemu-img",
            &["create", "-f", "raw", &format!("rbd:data/{img}"), "64M"],
        );
        assert!(ok, "{out}");
    }
    managed_refuses_second_writer(&c);
    cooperative_hand_off(&c);
    killed_owner_is_broken(&c);
    stopped_owner_is_fenced(&c);
    lock_rm_fences(&c);
    lock_rm_follows_the_fence_options(&c);
    c_watch_notify(&c);
    snapshot_of_an_image_in_use(&c);
    // Last: they fence a client and kill an OSD.
    fenced_watcher_is_told(&c);
    watch_error_callback_after_failover(&c);
}

/// `rbd snap create` (another process) while a librbd client with a
/// write-back cache writes the image, as a VM would: the snapshot holds the
/// write the client had acknowledged (dirty in its cache) before the
/// command, and the client's writes after it do not change the snapshot.
fn snapshot_of_an_image_in_use(c: &Cluster) {
    let (a, b, d, e) = (c.file("r.a"), c.file("r.b"), c.file("r.d"), c.file("r.e"));
    let vm = c
        .cmd_path(&c.probe_bin())
        .env("CEPH_ARGS", "--rbd_cache_policy=writeback")
        .args(["data", "running"])
        .args([
            "write:0:65536:17",
            "flush",
            // Write-back starts after the first flush: this one stays dirty.
            "write:0:65536:34",
            &format!("touch:{a}"),
            &format!("wait:{b}"),
            "write:0:65536:51",
            "flush",
            "read:0:65536:51",
            &format!("touch:{d}"),
            &format!("wait:{e}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockprobe");
    wait_file(c, "r.a");
    let (ok, out) = c.quarry(&["rbd", "snap", "create", "data/running@backup"]);
    assert!(ok, "snap create: {out}");
    std::fs::write(&b, b"").expect("signal");
    wait_file(c, "r.d");
    let dump = c.path().join("running-backup.raw");
    let (ok, out) = c.quarry(&[
        "rbd",
        "export",
        "data/running@backup",
        &dump.display().to_string(),
    ]);
    assert!(ok, "export: {out}");
    let snap = std::fs::read(&dump).expect("exported snapshot");
    std::fs::write(&e, b"").expect("signal");
    let out = finish(vm, "writer");
    assert!(out.contains("read ok"), "{out}");
    let first = &snap[..65536];
    assert!(
        first.iter().all(|&x| x == 34),
        "the snapshot must hold the write acknowledged before it (34), not {:?} ({out})",
        first.iter().find(|&&x| x != 34)
    );
}

/// `rbd_lock_acquire`: the second writer's write and acquire get EROFS and
/// it sees the first as owner; after the owner exits, it may take the lock.
fn managed_refuses_second_writer(c: &Cluster) {
    let (a1, b1) = (c.file("m.a1"), c.file("m.b1"));
    let owner = c.probe(
        "managed",
        &[
            "acquire",
            "write:0:4096:17",
            "owner",
            &format!("touch:{a1}"),
            &format!("wait:{b1}"),
        ],
    );
    wait_file(c, "m.a1");
    let second = c.probe(
        "managed",
        &[
            "write:0:4096:34",
            "acquire",
            "owner",
            "owners",
            "read:0:4096:17",
        ],
    );
    let out2 = finish(second, "second writer");
    std::fs::write(&b1, b"").expect("signal");
    let out1 = finish(owner, "lock owner");
    assert_eq!(
        lines(&out1),
        [
            "acquire rc=0",
            "write rc=0",
            "owner rc=0 is_owner=1",
            "touch rc=0",
            "wait rc=0"
        ],
        "{out1}"
    );
    let l2 = lines(&out2);
    assert_eq!(
        l2[0], "write rc=-30",
        "second writer must get EROFS: {out2}"
    );
    assert_eq!(l2[1], "acquire rc=-30", "{out2}");
    assert_eq!(l2[2], "owner rc=0 is_owner=0", "{out2}");
    assert!(l2[3].starts_with("owners rc=0 mode=0 client."), "{out2}");
    assert_eq!(l2[4], "read ok", "the refused write must not land: {out2}");
    // The owner closed: a new managed client takes it at once.
    let third = c.probe("managed", &["acquire", "write:0:4096:51", "read:0:4096:51"]);
    let out3 = finish(third, "third writer");
    assert_eq!(
        lines(&out3),
        ["acquire rc=0", "write rc=0", "read ok"],
        "{out3}"
    );
}

/// Two writers without rbd_lock_acquire alternate: each write takes the
/// lock from the other, which hands it over; each sees the other's data.
/// qemu-io joins as a third writer while both hold the image open.
fn cooperative_hand_off(c: &Cluster) {
    let f = |n: &str| c.file(&format!("c.{n}"));
    let a = c.probe(
        "coop",
        &[
            "write:0:65536:1",
            "owner",
            &format!("touch:{}", f("a1")),
            &format!("wait:{}", f("b1")),
            "owner",
            "read:65536:65536:2",
            "write:131072:65536:3",
            "owner",
            &format!("touch:{}", f("a2")),
            &format!("wait:{}", f("q")),
            "read:0:4096:4",
            "read:4096:61440:1",
        ],
    );
    wait_file(c, "c.a1");
    let b = c.probe(
        "coop",
        &[
            "read:0:65536:1",
            "write:65536:65536:2",
            "owner",
            &format!("touch:{}", f("b1")),
            &format!("wait:{}", f("a2")),
            "owner",
            "read:131072:65536:3",
            "owners",
        ],
    );
    let out_b = finish(b, "writer b");
    // A third writer (QEMU's rbd driver) while a still has the image open.
    let (ok, out) = c.run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 4 0 4096",
            "-c",
            "read -P 3 131072 65536",
            "rbd:data/coop",
        ],
    );
    assert!(
        ok && !out.contains("fail") && !out.contains("Pattern verification failed"),
        "{out}"
    );
    std::fs::write(f("q"), b"").expect("signal");
    let out_a = finish(a, "writer a");
    assert_eq!(
        lines(&out_a),
        [
            "write rc=0",
            "owner rc=0 is_owner=1",
            "touch rc=0",
            "wait rc=0",
            "owner rc=0 is_owner=0",
            "read ok",
            "write rc=0",
            "owner rc=0 is_owner=1",
            "touch rc=0",
            "wait rc=0",
            "read ok",
            "read ok",
        ],
        "{out_a}"
    );
    let lb = lines(&out_b);
    assert_eq!(
        lb[0..4],
        [
            "read ok",
            "write rc=0",
            "owner rc=0 is_owner=1",
            "touch rc=0"
        ],
        "{out_b}"
    );
    assert_eq!(lb[5..7], ["owner rc=0 is_owner=0", "read ok"], "{out_b}");
    assert!(lb[7].starts_with("owners rc=0 mode=0 client."), "{out_b}");
}

/// The owner is killed with SIGKILL holding the lock: the next writer
/// breaks the dead lock, proceeds, and sees the killed writer's
/// acknowledged data.
fn killed_owner_is_broken(c: &Cluster) {
    let owner = c.probe(
        "killed",
        &[
            "write:0:4096:9",
            "owner",
            &format!("touch:{}", c.file("k.a1")),
            &format!("wait:{}", c.file("k.never")),
        ],
    );
    wait_file(c, "k.a1");
    let pid = owner.id().to_string();
    let st = Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let o = owner.wait_with_output().expect("reap");
    assert_eq!(
        lines(&String::from_utf8_lossy(&o.stdout))[..3],
        ["write rc=0", "owner rc=0 is_owner=1", "touch rc=0"]
    );
    let next = c.probe(
        "killed",
        &[
            "write:4096:4096:10",
            "owner",
            "read:0:4096:9",
            "read:4096:4096:10",
            "owners",
        ],
    );
    let out = finish(next, "next writer");
    let l = lines(&out);
    assert_eq!(
        l[..4],
        ["write rc=0", "owner rc=0 is_owner=1", "read ok", "read ok"],
        "{out}"
    );
    assert!(l[4].starts_with("owners rc=0 mode=0 client."), "{out}");
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig}");
}

/// `ceph osd blocklist ls --format json`: (addr, until) pairs.
fn blocklist(c: &Cluster) -> Vec<(String, String)> {
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "ls", "--format", "json"]);
    assert!(ok, "{out}");
    let json = out.lines().next().unwrap_or("[]");
    let v: serde_json::Value = serde_json::from_str(json).expect("blocklist json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["addr"].as_str().expect("addr").to_string(),
                e["until"].as_str().expect("until").to_string(),
            )
        })
        .collect()
}

/// The lock owner's `client.N` and address, from `rbd lock ls`.
fn lock_ls(c: &Cluster, image: &str) -> (String, String, String) {
    let (ok, out) = c.quarry(&["rbd", "lock", "ls", image, "--format", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("")).expect("lock ls json");
    let o = &v[0];
    (
        o["locker"].as_str().expect("locker").to_string(),
        o["id"].as_str().expect("id").to_string(),
        o["address"].as_str().expect("address").to_string(),
    )
}

/// The owner is stopped (SIGSTOP) holding the lock: it stays a watcher but
/// cannot answer. The next writer's lock request times out, so it
/// blocklists the owner, breaks the lock and writes. After SIGCONT the old
/// owner's next write fails with -ESHUTDOWN (108) and the bytes on the
/// image are the new owner's.
fn stopped_owner_is_fenced(c: &Cluster) {
    let f = |n: &str| c.file(&format!("s.{n}"));
    let owner = c.probe(
        "stopped",
        &[
            "write:0:65536:21",
            "owner",
            &format!("touch:{}", f("a1")),
            &format!("wait:{}", f("b1")),
            "write:0:65536:22",
            "write:65536:4096:22",
        ],
    );
    wait_file(c, "s.a1");
    let (_, _, old_addr) = lock_ls(c, "data/stopped");
    assert!(old_addr.contains(":0/"), "client address form: {old_addr}");
    signal(&owner, "-STOP");
    let next = c.probe(
        "stopped",
        &[
            "read:0:65536:21",
            "write:0:65536:23",
            "owner",
            "read:0:65536:23",
        ],
    );
    let out = finish(next, "next writer");
    let listed = blocklist(c);
    std::fs::write(f("b1"), b"").expect("signal");
    signal(&owner, "-CONT");
    let out_old = finish(owner, "stopped owner");
    assert_eq!(
        lines(&out),
        ["read ok", "write rc=0", "owner rc=0 is_owner=1", "read ok"],
        "{out}"
    );
    assert!(
        listed.iter().any(|(a, _)| *a == old_addr),
        "the old owner {old_addr} must be blocklisted: {listed:?}"
    );
    assert_eq!(
        lines(&out_old),
        [
            "write rc=0",
            "owner rc=0 is_owner=1",
            "touch rc=0",
            "wait rc=0",
            "write rc=-108",
            "write rc=-108",
        ],
        "{out_old}"
    );
    // Nothing of the fenced writer landed.
    let check = c.probe("stopped", &["read:0:65536:23", "read:65536:4096:0"]);
    let out = finish(check, "checker");
    assert_eq!(lines(&out), ["read ok", "read ok"], "{out}");
    // The operator lifts the fence (old spelling too).
    let (ok, out) = c.quarry(&["ceph", "osd", "blacklist", "rm", &old_addr]);
    assert!(
        ok && out.contains(&format!("un-blocklisting {old_addr}")),
        "{out}"
    );
    assert!(!blocklist(c).iter().any(|(a, _)| *a == old_addr));
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "rm", &old_addr]);
    assert!(ok && out.contains("isn't blocklisted"), "{out}");
}

/// `rbd lock rm` blocklists the owner it breaks (as Ceph's does); `ceph
/// osd blocklist add` with an expiry and bad input.
fn lock_rm_fences(c: &Cluster) {
    let f = |n: &str| c.file(&format!("r.{n}"));
    let owner = c.probe(
        "lockrm",
        &[
            "write:0:4096:31",
            &format!("touch:{}", f("a1")),
            &format!("wait:{}", f("b1")),
            "write:0:4096:32",
        ],
    );
    wait_file(c, "r.a1");
    let (locker, id, addr) = lock_ls(c, "data/lockrm");
    let (ok, out) = c.quarry(&["rbd", "lock", "rm", "data/lockrm", &id, &locker]);
    assert!(ok, "{out}");
    assert!(blocklist(c).iter().any(|(a, _)| *a == addr), "{addr}");
    std::fs::write(f("b1"), b"").expect("signal");
    let out = finish(owner, "broken owner");
    assert_eq!(
        lines(&out),
        ["write rc=0", "touch rc=0", "wait rc=0", "write rc=-108"],
        "{out}"
    );
    let check = c.probe("lockrm", &["read:0:4096:31"]);
    assert_eq!(lines(&finish(check, "checker")), ["read ok"]);

    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "add", "10.1.2.3:0/77", "60"]);
    assert!(
        ok && out.contains("blocklisting 10.1.2.3:0/77 until"),
        "{out}"
    );
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "ls"]);
    assert!(
        ok && out.contains("10.1.2.3:0/77 ") && out.contains("listed "),
        "{out}"
    );
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "add", "not-an-address"]);
    assert!(!ok && out.contains("Error EINVAL"), "{out}");
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "add", "10.1.2.3", "-5"]);
    assert!(!ok, "{out}");
}

/// `notifyprobe POOL OBJ errwatch` on `obj`, started; its gid and cookie
/// once its watch is registered. Files `<tag>.ready[.err]`, `<tag>.done`.
fn errwatch(c: &Cluster, obj: &str, tag: &str) -> (Child, String, String) {
    let (ready, done) = (
        c.file(&format!("{tag}.ready")),
        c.file(&format!("{tag}.done")),
    );
    let child = c
        .cmd_path(&c.path().join("notifyprobe"))
        .args(["data", obj, "errwatch", &ready, &done])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn notifyprobe");
    wait_file(c, &format!("{tag}.ready"));
    let (gid, cookie) = c.probe_ids(&ready);
    (child, gid, cookie)
}

impl Cluster {
    /// The gid and cookie an errwatch probe wrote beside its ready file.
    fn probe_ids(&self, ready: &str) -> (String, String) {
        let s = std::fs::read_to_string(format!("{ready}.ids")).expect("ids");
        let mut it = s.split_whitespace();
        (
            it.next().expect("gid").to_string(),
            it.next().expect("cookie").to_string(),
        )
    }

    /// `notifyprobe POOL OBJ notify PAYLOAD 2000`: its first output line.
    fn notify_once(&self, obj: &str, payload: &str) -> String {
        let child = self
            .cmd_path(&self.path().join("notifyprobe"))
            .args(["data", obj, "notify", payload, "2000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn notifyprobe");
        let out = finish(child, "notifier");
        out.lines().next().unwrap_or_default().to_string()
    }
}

/// A watcher whose client is blocklisted is told (its error callback gets
/// -ESHUTDOWN, Ceph's -EBLOCKLISTED) instead of silently hearing nothing:
/// the OSDs dropped its watch, so a notification finds no watcher.
fn fenced_watcher_is_told(c: &Cluster) {
    let (w, gid, cookie) = errwatch(c, "fobj", "fw");
    let addr = format!("127.0.0.1:0/{gid}");
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "add", &addr, "600"]);
    assert!(ok, "{out}");
    wait_file(c, "fw.ready.err");
    let notified = c.notify_once("fobj", "after");
    std::fs::write(c.file("fw.done"), b"").expect("signal");
    let out = finish(w, "fenced watcher");
    assert_eq!(notified, "notify rc=0 acks=0 timeouts=0", "{out}");
    assert_eq!(
        lines(&out)[1..],
        [
            "error same_cookie=1 err=-108",
            "got 0",
            "check rc=-108",
            "unwatch rc=-108",
        ],
        "cookie {cookie}: {out}"
    );
    let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "rm", &addr]);
    assert!(ok, "{out}");
}

/// The watched object's primary is killed (SIGKILL) and marked down: the
/// watcher's error callback gets -ENOTCONN once the watch is registered
/// on the new primary (notifications in between were missed), and the
/// next notification reaches it there.
fn watch_error_callback_after_failover(c: &Cluster) {
    let (w, gid, cookie) = errwatch(c, "eobj", "ew");
    let (ok, out) = c.quarry(&["ceph", "osd", "map", "data", "eobj", "--format", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("osd map json");
    let primary = v["acting_primary"].as_i64().expect("primary");
    assert_eq!(v["up"].as_array().map(Vec::len), Some(3), "{out}");
    let pid =
        std::fs::read_to_string(c.path().join(format!("run/osd.{primary}.pid"))).expect("pid file");
    let st = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(st.success());
    let (ok, out) = c.quarry(&["ceph", "osd", "down", &primary.to_string()]);
    assert!(ok, "{out}");
    wait_file(c, "ew.ready.err");
    let notified = c.notify_once("eobj", "back");
    std::fs::write(c.file("ew.done"), b"").expect("signal");
    let out = finish(w, "watcher");
    assert_eq!(
        notified,
        format!("notify rc=0 acks=1 {gid}:{cookie}:ack:back timeouts=0"),
        "{out}"
    );
    assert_eq!(
        lines(&out)[1..],
        [
            "error same_cookie=1 err=-107",
            // the notifier's rados_notify2 and rados_aio_notify
            "got 2 back again",
            "check rc=0",
            "unwatch rc=0",
        ],
        "{out}"
    );
    // The killed OSD comes back (`quarry up` starts what is not running).
    let (ok, out) = c.quarry(&["up", "--dir", &c.path().display().to_string()]);
    assert!(ok, "{out}");
}

/// `rbd lock rm` under the client options Ceph's has:
/// `rbd_blocklist_on_break_lock = false` breaks without fencing (so the old
/// owner, which still believes it owns the lock, can go on writing: what
/// the option trades away), and `rbd_blocklist_expire_seconds` sets how
/// long the fence lasts (0: an hour).
fn lock_rm_follows_the_fence_options(c: &Cluster) {
    let rm_with = |image: &str, args: &str| {
        let (locker, id, addr) = lock_ls(c, &format!("data/{image}"));
        let o = c
            .cmd_path(&common::cluster::quarry_bin())
            .env("CEPH_ARGS", args)
            .args(["rbd", "lock", "rm", &format!("data/{image}"), &id, &locker])
            .output()
            .expect("spawn");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        addr
    };
    let f = |n: &str| c.file(&format!("nf.{n}"));
    let owner = c.probe(
        "nofence",
        &[
            "write:0:4096:41",
            &format!("touch:{}", f("a1")),
            &format!("wait:{}", f("b1")),
            "write:0:4096:42",
        ],
    );
    wait_file(c, "nf.a1");
    let addr = rm_with("nofence", "--rbd_blocklist_on_break_lock=false");
    assert!(
        !blocklist(c).iter().any(|(a, _)| *a == addr),
        "{addr} must not be fenced"
    );
    std::fs::write(f("b1"), b"").expect("signal");
    let out = finish(owner, "unfenced owner");
    assert_eq!(
        lines(&out),
        ["write rc=0", "touch rc=0", "wait rc=0", "write rc=0"],
        "{out}"
    );

    let owner = c.probe(
        "shortfence",
        &[
            "write:0:4096:43",
            &format!("touch:{}", f("a2")),
            &format!("wait:{}", f("b2")),
        ],
    );
    wait_file(c, "nf.a2");
    for (addr, secs) in [("10.7.7.7:0/1", "60"), ("10.7.7.7:0/2", "3600")] {
        let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "add", addr, secs]);
        assert!(ok, "{out}");
    }
    let addr = rm_with("shortfence", "--rbd_blocklist_expire_seconds=120");
    std::fs::write(f("b2"), b"").expect("signal");
    finish(owner, "fenced owner");
    let listed = blocklist(c);
    let until = |a: &str| {
        listed
            .iter()
            .find(|(x, _)| x == a)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("{a} not listed: {listed:?}"))
    };
    // ISO 8601 UTC stamps of one format compare as text.
    let fenced = until(&addr);
    assert!(
        until("10.7.7.7:0/1") < fenced && fenced < until("10.7.7.7:0/2"),
        "a 120 s fence lies between 60 s and 3600 s ones: {listed:?}"
    );
    for a in [addr.as_str(), "10.7.7.7:0/1", "10.7.7.7:0/2"] {
        let (ok, out) = c.quarry(&["ceph", "osd", "blocklist", "rm", a]);
        assert!(ok, "{out}");
    }
}

/// librados' C watch/notify between two processes: the watcher's callback
/// gets each payload and acks with one of its own from inside the
/// callback; a second watch never acks; the notifier decodes the reply
/// buffer (acks with payloads, the silent watch as a timeout, -ETIMEDOUT).
fn c_watch_notify(c: &Cluster) {
    let (ready, done) = (c.file("n.ready"), c.file("n.done"));
    let watcher = c
        .cmd_path(&c.path().join("notifyprobe"))
        .args(["data", "nobj", "watch", &ready, &done])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn notifyprobe");
    wait_file(c, "n.ready");
    let notifier = c
        .cmd_path(&c.path().join("notifyprobe"))
        .args(["data", "nobj", "notify", "hello", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn notifyprobe");
    let out_n = finish(notifier, "notifier");
    std::fs::write(&done, b"").expect("signal");
    let out_w = finish(watcher, "watcher");
    let lw = lines(&out_w);
    let ids: Vec<&str> = lw[0].split(' ').collect();
    assert_eq!(ids[0], "watching", "{out_w}");
    let (gid, a, b) = (ids[1], ids[2], ids[3]);
    assert_eq!(
        lines(&out_n),
        [
            format!("notify rc=-110 acks=1 {gid}:{a}:ack:hello timeouts=1 {gid}:{b}"),
            format!("aio_notify rc=-110 acks=1 {gid}:{a}:ack:again timeouts=1 {gid}:{b}"),
            "decode_bad rc=-22".to_string(),
            "notify_neg rc=-22".to_string(),
        ],
        "{out_n}"
    );
    assert_eq!(
        lw[1..],
        [
            "flush rc=0",
            "got 2 hello again",
            "check rc=0",
            "unwatch rc=0",
            "unwatch rc=0",
            "check_after rc=-107",
            "unwatch_again rc=-2",
        ],
        "{out_w}"
    );
}
