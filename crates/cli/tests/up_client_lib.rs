//! `quarry up` from a binary without `libquarry_capi.so` beside it: refused
//! before any daemon starts (its `D/env` would leave QEMU and fio on the
//! system's Ceph librbd, which hangs against Quarry's monitors), unless
//! `--no-client-lib` asks for a cluster for Quarry's own tools only.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quarry");

#[test]
fn up_without_the_client_library_is_refused_unless_asked_for() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let quarry = bin.join("quarry");
    std::fs::copy(BIN, &quarry).expect("copy the binary alone");
    let dir = tmp.path().join("c");
    let up = |extra: &[&str]| {
        Command::new(&quarry)
            .arg("up")
            .arg("--dir")
            .arg(&dir)
            .args(["--osds", "1"])
            .args(extra)
            .output()
            .expect("run quarry up")
    };
    let o = up(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "libquarry_capi.so not found next to {}",
            quarry.display()
        )) && err.contains("--no-client-lib"),
        "{err}"
    );
    assert!(
        !dir.join("ceph.conf").exists(),
        "refused before creating the cluster"
    );

    let o = up(&["--no-client-lib"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let down = || {
        Command::new(&quarry)
            .args(["down", "--dir"])
            .arg(&dir)
            .output()
            .expect("run quarry down")
    };
    if !o.status.success() {
        down();
        panic!("up --no-client-lib: {err}");
    }
    assert!(err.contains("gives QEMU and fio no librbd"), "{err}");
    let lib_entries = std::fs::read_dir(dir.join("lib")).expect("D/lib").count();
    let ls = Command::new(bin.join("quarry"))
        .args(["rbd", "ls", "data"])
        .env("CEPH_CONF", dir.join("ceph.conf"))
        .output()
        .expect("rbd ls");
    let o = down();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(lib_entries, 0, "no librbd links without the library");
    assert!(
        ls.status.success(),
        "Quarry's own tools work: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
}
