//! Debian's fio 3.33 (rbd engine, eventfd poll mode) against Quarry's
//! library: random writes verified with crc32c, at iodepth 1 and 32, then
//! a separate read-back verify pass.

mod common;

use common::Env;

fn run_fio(env: &Env, job: &str) -> String {
    let fio = common::require("fio");
    let path = env.path().join("job.fio");
    std::fs::write(&path, job).expect("write job");
    let (ok, out, err) = env.run(env.cmd(fio).arg(&path));
    assert!(ok, "fio failed:\n{out}\n{err}");
    assert!(!out.contains("verify: bad"), "{out}");
    assert!(out.contains("err= 0"), "{out}");
    out
}

fn create(env: &Env, name: &str) {
    let qemu_img = common::require("qemu-img");
    let (ok, _o, err) = env.run(env.cmd(qemu_img).args([
        "create",
        "-f",
        "raw",
        &format!("rbd:data/{name}"),
        "64M",
    ]));
    assert!(ok, "{err}");
}

#[test]
fn fio_rbd_randwrite_verify() {
    let env = Env::new(&["data"]);
    for depth in [1, 32] {
        let name = format!("fio{depth}");
        create(&env, &name);
        let job = format!(
            "[global]\nioengine=rbd\nclientname=admin\npool=data\nrbdname={name}\n\
             bs=4k\nsize=8M\n[w]\nrw=randwrite\niodepth={depth}\nverify=crc32c\ndo_verify=1\n"
        );
        let out = run_fio(&env, &job);
        assert!(out.contains("WRITE:"), "{out}");
        // A second process reads everything back and verifies it.
        let job = format!(
            "[global]\nioengine=rbd\nclientname=admin\npool=data\nrbdname={name}\n\
             bs=4k\nsize=8M\n[v]\nrw=randwrite\niodepth={depth}\nverify=crc32c\nverify_only=1\n"
        );
        run_fio(&env, &job);
    }
}

/// With the submitting thread's spin on (`QUARRY_CLIENT_SPIN_US`), queue
/// depth 1 writes and reads still complete exactly once with the right
/// data (fio fails on a lost, doubled or wrong completion).
#[test]
fn fio_rbd_qd1_with_spin_verifies() {
    let env = Env::new(&["data"]);
    create(&env, "spin");
    let fio = common::require("fio");
    let path = env.path().join("spin.fio");
    let job = "[global]\nioengine=rbd\nclientname=admin\npool=data\nrbdname=spin\n\
               bs=4k\nsize=4M\n[w]\nrw=randwrite\niodepth=1\nverify=crc32c\ndo_verify=1\n";
    std::fs::write(&path, job).expect("write job");
    let (ok, out, err) = env.run(env.cmd(fio).arg(&path).env("QUARRY_CLIENT_SPIN_US", "200"));
    assert!(ok, "fio failed:\n{out}\n{err}");
    assert!(!out.contains("verify: bad"), "{out}");
    assert!(out.contains("err= 0"), "{out}");
    assert!(out.contains("WRITE:"), "{out}");
}

#[test]
fn fio_rbd_direct_discard_flush() {
    let env = Env::new(&["data"]);
    create(&env, "fiod");
    let job = "[global]\nioengine=rbd\nclientname=admin\npool=data\nrbdname=fiod\n\
               bs=64k\nsize=16M\ndirect=1\n[t]\nrw=randtrim\niodepth=8\n\
               [w]\nstonewall\nrw=write\nfsync=4\nverify=md5\niodepth=4\n";
    run_fio(&env, job);
}

#[test]
fn fio_rados_engine_verify() {
    let env = Env::new(&["data"]);
    // fio's rados engine reads its `conf` option (default /etc/ceph/ceph.conf).
    let job = format!(
        "[global]\nioengine=rados\nconf={}\nclientname=admin\npool=data\n\
         bs=4k\nsize=4M\n[w]\nrw=randwrite\niodepth=8\nverify=crc32c\ndo_verify=1\n",
        env.conf().display()
    );
    run_fio(&env, &job);
}

#[test]
fn fio_maps_the_library_once() {
    // fio needs librados.so.2 then librbd.so.1: the second name is the same
    // file (same inode), so glibc maps and initialises it once.
    let env = Env::new(&[]);
    let fio = common::require("fio");
    let (ok, _out, err) = env.run(env.cmd(fio).arg("--version").env("LD_DEBUG", "libs"));
    assert!(ok, "{err}");
    let lib = env.path().join("lib");
    let inits: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("calling init:"))
        .filter(|l| l.ends_with("/librbd.so.1") || l.ends_with("/librados.so.2"))
        .collect();
    assert_eq!(inits.len(), 1, "{inits:?}");
    assert!(inits[0].contains(&lib.display().to_string()), "{inits:?}");
}
