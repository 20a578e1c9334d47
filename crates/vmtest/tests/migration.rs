//! Live migration (issue 6, part 4): a guest writing with `cache=writeback`
//! on a raw rbd image moves between two QEMU processes on 127.0.0.1
//! (`-incoming tcp:127.0.0.1:PORT`, `migrate` over QMP) in the middle of its
//! write loop. On the destination the guest finishes the loop and reads every
//! block back with O_DIRECT (through the destination's librbd, after QEMU's
//! `rbd_invalidate_cache` on activation); the host then checks all blocks.
//! With the exclusive-lock feature (default), the lock moves from the
//! source to the destination at the destination's first write, while the
//! source still runs (`rbd lock ls` before and after).

use quarry_vmtest::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Blocks the guest writes (1 MiB each, scratch area).
const N: u64 = 30;

/// The guest's blocks land in objects the source creates after the
/// destination QEMU opened the image: the destination must see them once it
/// takes over (QEMU calls `rbd_invalidate_cache`, which re-reads the header
/// and object map; before quarry-capi 3c52d91 it did not, and this failed).
#[test]
fn live_migration_with_writeback_cache() {
    migrate(Prep::Default);
}

/// The same on an image without object-map (`rbd create --image-feature
/// layering`): the path where nothing cached at open can go stale.
#[test]
fn live_migration_with_writeback_cache_no_object_map() {
    migrate(Prep::NoObjectMap);
}

/// The same with librbd's in-memory writeback cache on both sides
/// (`rbd_cache_policy=writeback`): the source's dirty data must reach the
/// cluster at hand-over and the destination must not serve stale clean data.
#[test]
fn live_migration_with_in_memory_writeback_cache() {
    migrate(Prep::InMemoryCache);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Prep {
    Default,
    NoObjectMap,
    InMemoryCache,
}

fn migrate(prep: Prep) {
    let _one = one_at_a_time();
    Guest::get();
    let c = Cluster::up(3);
    let n = N;
    if prep == Prep::NoObjectMap {
        c.run(
            "rbd",
            &[
                "create",
                "--size",
                "256M",
                "--image-feature",
                "layering",
                "data/mig",
            ],
        );
    } else {
        c.run("qemu-img", &["create", "-f", "raw", "rbd:data/mig", "256M"]);
    }
    let drive = if prep == Prep::InMemoryCache {
        "format=raw,file=rbd:data/mig:rbd_cache_policy=writeback,if=virtio,cache=writeback"
    } else {
        "format=raw,file=rbd:data/mig,if=virtio,cache=writeback"
    };
    let append = format!("vmtest=writeloop vmtest_dev=vda vmtest_n={n} vmtest_sleep=0.3");
    let port = free_port();
    let incoming = format!("tcp:127.0.0.1:{port}");
    let mut src = Vm::start(&c, "mig-src", &append, &["-drive", drive]);
    let dst = Vm::start_with(
        &c,
        "mig-dst",
        &append,
        &["-drive", drive],
        &["-incoming", &incoming],
    );
    src.wait_for("VMTEST: SYNCED 5", BOOT_TIMEOUT);
    // The image has exclusive-lock (default features): the writing source
    // holds it; the destination (not yet running) does not.
    let src_owner = (prep == Prep::Default).then(|| {
        lock_owner(&c).unwrap_or_else(|| panic!("the writing source holds no exclusive lock"))
    });

    let mut q = src.qmp();
    let qmp = |q: &mut Qmp, cmd: &str, args: serde_json::Value| {
        q.try_execute(cmd, args).unwrap_or_else(|e| {
            panic!(
                "QMP {cmd} on the source: {e}\nsource console:\n{}\ndestination console:\n{}",
                src.transcript(),
                dst.transcript()
            )
        })
    };
    qmp(
        &mut q,
        "migrate-set-parameters",
        json!({"max-bandwidth": 1u64 << 30, "downtime-limit": 500}),
    );
    let t = Instant::now();
    qmp(&mut q, "migrate", json!({"uri": incoming}));
    let deadline = t + Duration::from_secs(120);
    loop {
        let st = qmp(&mut q, "query-migrate", json!({}));
        match st["status"].as_str() {
            Some("completed") => break,
            Some("failed") | Some("cancelled") => {
                panic!("migration {st}; source console:\n{}", src.transcript())
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "migration not completed in 120 s: {st}; dst console:\n{}",
            dst.transcript()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t.elapsed();
    let last_src = src
        .transcript()
        .lines()
        .filter_map(|l| l.strip_prefix("VMTEST: SYNCED "))
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .max()
        .expect("source reported synced blocks");
    if let Some(src_owner) = &src_owner {
        // The destination's first write takes the lock from the source,
        // which is still running (paused) and hands it over cooperatively.
        dst.wait_for("VMTEST: SYNCED", BOOT_TIMEOUT);
        let now = lock_owner(&c).expect("the writing destination holds no exclusive lock");
        assert_ne!(
            &now, src_owner,
            "the exclusive lock did not move to the destination"
        );
        let watchers = c.run("rbd", &["status", "data/mig"]);
        assert!(
            watchers.contains(&format!(" {now} ")),
            "lock owner {now} is not a watcher of the image: {watchers}"
        );
        println!("vmtest migration: exclusive lock moved from {src_owner} to {now}");
    }
    // QEMU may close the socket before answering quit: its exit is checked below.
    let _ = q.try_execute("quit", json!({}));
    assert!(
        src.wait_exit(Duration::from_secs(30)),
        "source QEMU did not quit"
    );
    println!("vmtest migration ({prep:?}): migrated after block {last_src} in {took:.2?}");

    // The guest carries on at the destination, then verifies every block.
    dst.wait_for("VMTEST: SYNCED", BOOT_TIMEOUT);
    let verdict = dst.wait_for("VMTEST: RESULT", BOOT_TIMEOUT);
    let host = c.check_blocks("data/mig", n);
    println!("vmtest migration: destination verdict: {verdict}; host check: {host:?}");
    let total = dst.expect_pass();
    println!("vmtest migration: destination finished {n} blocks and read them back ({total:.1?} since start)");
    c.check_blocks("data/mig", n)
        .unwrap_or_else(|e| panic!("after migration: {e}"));
}

/// The holder of data/mig's exclusive lock (`client.N`), per `rbd lock ls`.
fn lock_owner(c: &Cluster) -> Option<String> {
    let out = c.run("rbd", &["lock", "ls", "data/mig"]);
    out.lines()
        .find(|l| l.starts_with("client."))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}
