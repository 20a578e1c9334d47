//! `quarry install` / `quarry uninstall`: a scratch-prefix test that always
//! runs, and a system-wide one (root; run by scripts/test.sh on its own,
//! since it changes what every process on the machine loads).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn quarry() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_quarry"));
    let lib = exe.with_file_name("libquarry_capi.so");
    assert!(
        lib.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace --release)",
        lib.display()
    );
    exe
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fake_cluster(dir: &Path) {
    fs::create_dir_all(dir).expect("mkdir");
    let key = dir.join("ceph.client.admin.keyring");
    fs::write(
        dir.join("ceph.conf"),
        format!(
            "[global]\n\tmon_host = 127.0.0.1:1\n[client.admin]\n\tkeyring = {}\n",
            key.display()
        ),
    )
    .expect("conf");
    fs::write(
        &key,
        "[client.admin]\n\tkey = AQBQmRpnAAAAABAAkN6mJSr0ikuLcMFXQZWMvA==\n",
    )
    .expect("key");
}

#[test]
fn scratch_prefix_install_reinstall_and_uninstall_restore_everything() {
    let t = tempfile::tempdir().expect("tempdir");
    let prefix = t.path().join("usr");
    let etc = t.path().join("etc/ceph");
    let cluster = t.path().join("cluster");
    fake_cluster(&cluster);
    // Somebody else's rbd and ceph.conf are already there.
    fs::create_dir_all(prefix.join("bin")).expect("mkdir");
    fs::write(prefix.join("bin/rbd"), "#!/bin/sh\necho theirs\n").expect("write");
    fs::create_dir_all(&etc).expect("mkdir");
    fs::write(etc.join("ceph.conf"), "[global]\n# theirs\n").expect("write");

    let install = || {
        run(Command::new(quarry())
            .arg("install")
            .arg("--prefix")
            .arg(&prefix)
            .arg("--etc")
            .arg(&etc)
            .arg("--cluster-dir")
            .arg(&cluster)
            .arg("--no-ldconfig"))
    };
    install();
    // Twice is the same as once (the first install is undone first).
    install();

    assert_eq!(
        fs::canonicalize(prefix.join("lib/librados.so.2")).expect("resolves"),
        fs::canonicalize(prefix.join("lib/quarry/libquarry_capi.so")).expect("so")
    );
    // librbd.so.1 is the shim: its own SONAME, needing the one real library.
    let dynamic = run(Command::new("readelf")
        .arg("-d")
        .arg(prefix.join("lib/librbd.so.1")));
    let dynamic = String::from_utf8_lossy(&dynamic.stdout).to_string();
    assert!(
        dynamic.contains("Library soname: [librbd.so.1]"),
        "{dynamic}"
    );
    assert!(
        dynamic.contains("Shared library: [librados.so.2]"),
        "{dynamic}"
    );
    for b in ["quarry", "rbd", "ceph", "rados"] {
        let p = prefix.join("bin").join(b);
        assert_eq!(
            fs::canonicalize(&p).expect("resolves"),
            fs::canonicalize(prefix.join("lib/quarry/quarry")).expect("bin")
        );
    }
    // The installed rbd is ours: busybox dispatch answers as rbd.
    let out = run(Command::new(prefix.join("bin/rbd")).arg("--help"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage"),
        "rbd --help"
    );
    let key = etc.join("ceph.client.admin.keyring");
    assert_eq!(
        fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    let conf = fs::read_to_string(etc.join("ceph.conf")).expect("conf");
    assert!(
        conf.contains(&format!("keyring = {}", key.display())),
        "{conf}"
    );
    assert_eq!(
        fs::read_to_string(etc.join("ceph.conf.quarry-orig")).expect("backup"),
        "[global]\n# theirs\n"
    );

    run(Command::new(quarry())
        .arg("uninstall")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-ldconfig"));
    assert_eq!(
        fs::read_to_string(prefix.join("bin/rbd")).expect("restored"),
        "#!/bin/sh\necho theirs\n"
    );
    assert_eq!(
        fs::read_to_string(etc.join("ceph.conf")).expect("restored"),
        "[global]\n# theirs\n"
    );
    for gone in [
        "bin/quarry",
        "bin/ceph",
        "lib/librbd.so.1",
        "lib/librados.so.2",
        "lib/quarry",
    ] {
        assert!(
            fs::symlink_metadata(prefix.join(gone)).is_err(),
            "{gone} left behind"
        );
    }
    assert!(fs::symlink_metadata(&key).is_err(), "keyring left behind");
    assert!(fs::symlink_metadata(etc.join("ceph.conf.quarry-orig")).is_err());

    // Nothing installed: a clear error, not a silent success.
    let out = Command::new(quarry())
        .arg("uninstall")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-ldconfig")
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no quarry installation"));
}

#[test]
fn malformed_manifest_is_refused_with_its_line() {
    let t = tempfile::tempdir().expect("tempdir");
    let prefix = t.path();
    fs::create_dir_all(prefix.join("lib/quarry")).expect("mkdir");
    fs::write(
        prefix.join("lib/quarry/manifest"),
        "created /x\nbogus line\n",
    )
    .expect("write");
    let out = Command::new(quarry())
        .arg("uninstall")
        .arg("--prefix")
        .arg(prefix)
        .arg("--no-ldconfig")
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest:2: malformed manifest line"), "{err}");
}

/// The seed's commands typed with no environment at all use Quarry once it
/// is installed system-wide; uninstall gives Debian's libraries back.
#[test]
#[ignore = "changes the whole machine (root): scripts/test.sh runs it alone"]
fn system_install_serves_commands_typed_with_no_environment() {
    let t = tempfile::tempdir().expect("tempdir");
    let d = t.path().join("c");
    run(Command::new(quarry())
        .arg("up")
        .arg("--dir")
        .arg(&d)
        .arg("--osds")
        .arg("1"));
    let guard = Down(d.clone());
    run(Command::new(quarry())
        .arg("install")
        .arg("--cluster-dir")
        .arg(&d));
    let clean = |prog: &str, args: &[&str]| {
        let mut c = Command::new(prog);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir("/");
        c
    };
    let r = || {
        run(&mut clean(
            "qemu-img",
            &["create", "-f", "raw", "rbd:data/foo", "10M"],
        ));
        let info = run(&mut clean("qemu-img", &["info", "rbd:data/foo"]));
        assert!(String::from_utf8_lossy(&info.stdout).contains("10 MiB"));
        let ls = run(&mut clean("rbd", &["ls", "data"]));
        assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "foo");
        let ldd = run(&mut clean(
            "ldd",
            &["/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so"],
        ));
        let ldd = String::from_utf8_lossy(&ldd.stdout).to_string();
        assert!(
            ldd.contains("librbd.so.1 => /usr/local/lib/librbd.so.1"),
            "{ldd}"
        );
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(r));
    run(Command::new(quarry()).arg("uninstall"));
    let ldd = run(&mut clean(
        "ldd",
        &["/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so"],
    ));
    let ldd = String::from_utf8_lossy(&ldd.stdout).to_string();
    assert!(
        !ldd.contains("/usr/local/lib/librbd"),
        "still ours after uninstall: {ldd}"
    );
    drop(guard);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

struct Down(PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(quarry())
            .arg("down")
            .arg("--dir")
            .arg(&self.0)
            .output();
    }
}
