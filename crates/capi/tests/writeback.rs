//! The in-memory rbd cache (`rbd_cache_policy=writeback`) with Debian's
//! qemu-io and fio against a real `quarry up` cluster: patterns at odd
//! offsets read back by a second process, fio verify at QD32, and SIGKILL
//! of the client: every flushed byte (and, with
//! `rbd_cache_writethrough_until_flush`, every write before the first
//! flush) is on the cluster, while unflushed cached writes are lost, as
//! the seed warns.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;

impl Cluster {
    fn run(&self, c: &mut Command) -> (String, String) {
        let o = c.output().expect("spawn");
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert!(o.status.success(), "{c:?} failed:\n{out}\n{err}");
        (out, err)
    }

    fn qemu_io(&self, args: &[&str]) -> (String, String) {
        let mut c = self.cmd("qemu-io");
        c.args(args).env("QUARRY_LOG_CACHE", "1");
        self.run(&mut c)
    }

    fn create(&self, image: &str, size: &str) {
        let mut c = self.cmd("qemu-img");
        c.args(["create", "-f", "raw", &format!("rbd:data/{image}"), size]);
        self.run(&mut c);
    }
}

/// An interactive qemu-io: one command at a time, each answered by the
/// next prompt (qemu-io reads stdin through stdio, so commands sent ahead
/// of their prompt would sit unread in its buffer).
struct Interactive {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
}

impl Interactive {
    fn start(c: &Cluster, spec: &str) -> Interactive {
        let mut cmd = c.cmd("qemu-io");
        cmd.args(["-f", "raw", "-t", "writeback", spec])
            .env("QUARRY_LOG_CACHE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qemu-io");
        let stdin = child.stdin.take().expect("stdin");
        let out = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let q = Interactive { child, stdin, out };
        q.wait_prompts(1);
        q
    }

    fn prompts(&self) -> usize {
        self.out.lock().unwrap().matches("qemu-io> ").count()
    }

    fn wait_prompts(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.prompts() < n {
            assert!(
                Instant::now() < deadline,
                "qemu-io did not answer in 120 s:\n{}",
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run one command and return the output it produced.
    fn cmd(&mut self, c: &str) -> String {
        let n = self.prompts();
        let start = self.out.lock().unwrap().len();
        writeln!(self.stdin, "{c}").expect("write to qemu-io");
        self.stdin.flush().expect("flush");
        self.wait_prompts(n + 1);
        self.out.lock().unwrap()[start..].to_string()
    }

    fn kill9(mut self) -> String {
        self.child.kill().expect("SIGKILL qemu-io");
        let st = self.child.wait().expect("wait");
        assert!(!st.success());
        let out = self.out.lock().unwrap().clone();
        out
    }
}

/// The largest `name: N` among the `cache at close` log lines (one per
/// image handle).
fn stat(err: &str, name: &str) -> u64 {
    err.lines()
        .filter(|l| l.contains("cache at close"))
        .map(|line| {
            let at = line.find(&format!(" {name}: ")).expect("stat name") + name.len() + 3;
            line[at..]
                .split(|ch: char| !ch.is_ascii_digit())
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("stat value")
        })
        .max()
        .unwrap_or_else(|| panic!("no cache stats in:\n{err}"))
}

#[test]
fn writeback_cache_on_a_cluster() {
    let c = Cluster::up();
    patterns_read_back_by_another_process(&c);
    fio_verify_through_the_cache(&c);
    sigkill_keeps_flushed_writes_and_loses_unflushed_ones(&c);
    dirty_data_reaches_the_cluster_after_max_dirty_age(&c);
}

fn patterns_read_back_by_another_process(c: &Cluster) {
    c.create("wb", "64M");
    let spec = "rbd:data/wb:rbd_cache_policy=writeback";
    // Overlapping writes at odd offsets and lengths, some straddling the
    // 4 MiB object boundary, reads served from the cache in between.
    let (out, err) = c.qemu_io(&[
        "-f",
        "raw",
        "-t",
        "writeback",
        "-c",
        "write -P 0x11 4095 777777",
        "-c",
        "flush",
        "-c",
        "write -P 0x22 100001 3333",
        "-c",
        "write -P 0x33 4194000 70001",
        "-c",
        "write -P 0x44 4194301 17",
        "-c",
        "read -P 0x22 100001 3333",
        "-c",
        "read -P 0x11 4095 95000",
        "-c",
        "read -P 0x44 4194301 17",
        "-c",
        "read -P 0x33 4194318 69683",
        "-c",
        "flush",
        "-c",
        "write -P 0x55 9999999 131071",
        spec,
    ]);
    assert!(!out.contains("verification failed"), "{out}");
    assert!(err.contains("cache mode writeback"), "{err}");
    assert!(stat(&err, "writes_cached") >= 4, "{err}");
    assert!(stat(&err, "read_hits") >= 4, "{err}");
    assert_eq!(stat(&err, "dirty"), 0, "close left dirty data: {err}");
    // A second process without the cache sees every byte (the last write
    // was never flushed: close wrote it back).
    let (out, _) = c.qemu_io(&[
        "-f",
        "raw",
        "-r",
        "-t",
        "none",
        "-c",
        "read -P 0x11 4095 95000",
        "-c",
        "read -P 0x22 100001 3333",
        "-c",
        "read -P 0x11 103334 678538",
        "-c",
        "read -P 0x33 4194000 301",
        "-c",
        "read -P 0x44 4194301 17",
        "-c",
        "read -P 0x33 4194318 69683",
        "-c",
        "read -P 0 4264001 100",
        "-c",
        "read -P 0x55 9999999 131071",
        "rbd:data/wb",
    ]);
    assert!(!out.contains("verification failed"), "{out}");
    assert_eq!(out.matches("read ").count(), 8, "{out}");
}

fn fio_verify_through_the_cache(c: &Cluster) {
    c.create("fio", "32M");
    let job = c.path().join("wb.fio");
    std::fs::write(
        &job,
        "[global]\nioengine=rbd\nclientname=admin\npool=data\nrbdname=fio\nbs=4k\nsize=8M\n\
         [w]\nrw=randwrite\niodepth=32\nverify=crc32c\ndo_verify=1\n",
    )
    .expect("job");
    let mut cmd = c.cmd("fio");
    cmd.arg(&job)
        .env(
            "CEPH_ARGS",
            "--rbd_cache_policy=writeback --rbd_cache_writethrough_until_flush=false",
        )
        .env("QUARRY_LOG_CACHE", "1");
    let (out, err) = c.run(&mut cmd);
    assert!(out.contains("err= 0"), "{out}{err}");
    assert!(err.contains("cache mode writeback"), "{err}");
    assert!(stat(&err, "writes_cached") > 0, "{err}");
}

fn sigkill_keeps_flushed_writes_and_loses_unflushed_ones(c: &Cluster) {
    c.create("crash", "64M");
    // Dirty data is never written back on its own within the test: only a
    // flush (or the age limit of an hour) would.
    let mut q = Interactive::start(
        c,
        "rbd:data/crash:rbd_cache_policy=writeback:rbd_cache_max_dirty_age=3600",
    );
    // Before the first flush the cache is write-through.
    assert!(q.cmd("write -P 0x41 1001 5000").contains("wrote 5000/5000"));
    q.cmd("flush");
    assert!(q
        .cmd("write -P 0x42 200003 7000")
        .contains("wrote 7000/7000"));
    assert!(q
        .cmd("write -P 0x43 4190000 9000")
        .contains("wrote 9000/9000"));
    q.cmd("flush");
    // Acknowledged from the cache, never flushed.
    assert!(q
        .cmd("write -P 0x44 400005 9000")
        .contains("wrote 9000/9000"));
    assert!(q.cmd("write -P 0x45 200003 100").contains("wrote 100/100"));
    assert!(q.cmd("read -P 0x44 400005 9000").contains("read 9000/9000"));
    let log = q.kill9();
    assert!(log.contains("cache mode writeback"), "{log}");
    let (out, _) = c.qemu_io(&[
        "-f",
        "raw",
        "-r",
        "-t",
        "none",
        "-c",
        "read -P 0x41 1001 5000",
        "-c",
        "read -P 0x42 200003 7000",
        "-c",
        "read -P 0x43 4190000 9000",
        "rbd:data/crash",
    ]);
    assert!(
        !out.contains("verification failed"),
        "flushed data lost:\n{out}"
    );
    assert_eq!(out.matches("read ").count(), 3, "{out}");
    // The seed's warning, pinned: unflushed writeback data died with the
    // process (the image still holds what was there before).
    let (out, _) = c.qemu_io(&[
        "-f",
        "raw",
        "-r",
        "-t",
        "none",
        "-c",
        "read -P 0 400005 9000",
        "-c",
        "read -P 0x42 200003 100",
        "rbd:data/crash",
    ]);
    assert!(!out.contains("verification failed"), "{out}");
    assert_eq!(out.matches("read ").count(), 2, "{out}");
}

/// Snapshot, discard, resize, rollback, invalidate and close around data
/// acknowledged from the cache (a C program against Ceph's headers, on the
/// embedded store).
#[test]
fn image_operations_around_cached_writes() {
    let env = common::Env::new(&["data"]);
    let bin = env.compile("cache_ops.c", "cache_ops");
    let mut cmd = env.cmd(&bin);
    cmd.env("QUARRY_LOG_CACHE", "1");
    let (ok, out, err) = env.run(&mut cmd);
    assert!(ok && out.contains("OK"), "{out}\n{err}");
    assert!(err.contains("cache mode writeback"), "{err}");
    // The writes above were acknowledged from memory.
    assert!(stat(&err, "writes_cached") > 0, "{err}");
}

fn dirty_data_reaches_the_cluster_after_max_dirty_age(c: &Cluster) {
    c.create("aged", "64M");
    // Default rbd_cache_max_dirty_age (1 s): without any further flush the
    // write is written back on its own, well before the bound below.
    let mut q = Interactive::start(c, "rbd:data/aged:rbd_cache_policy=writeback");
    q.cmd("flush");
    assert!(q
        .cmd("write -P 0x61 12345 6789")
        .contains("wrote 6789/6789"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut cmd = c.cmd("qemu-io");
        cmd.args([
            "-f",
            "raw",
            "-r",
            "-t",
            "none",
            "-c",
            "read -P 0x61 12345 6789",
            "rbd:data/aged",
        ]);
        // A pattern mismatch exits non-zero: poll until it matches.
        if cmd.output().expect("spawn").status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dirty data not written back 60 s after the write (max_dirty_age 1 s)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    q.kill9();
}
