//! Shared test harness: the library under both sonames in a temp dir, an
//! embedded store with pools, and the real clients (which must be installed:
//! a missing tool fails the test, it is never skipped).
#![allow(dead_code)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `cargo build -p <package>` into the target dir of `profile` (the
/// directory of this test's build profile), in the same profile; a no-op
/// when up to date.
pub fn cargo_build(profile: &Path, package: &str) {
    let target = profile.parent().expect("target dir");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.args(["build", "-p", package])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "cargo build -p {package} failed");
}

/// The built `libquarry_capi.so` next to this test's target profile dir.
pub fn cdylib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>")
            .to_path_buf();
        let lib = profile.join("libquarry_capi.so");
        // `cargo test` builds the rlib the tests link, not the cdylib the
        // real clients load: build it (a no-op when up to date) so a stale
        // library is never tested.
        cargo_build(&profile, "quarry-capi");
        assert!(lib.exists(), "{} missing", lib.display());
        lib
    })
    .clone()
}

/// Path of a required tool; panics (fails the test) if it is not installed.
pub fn require(tool: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{tool} is not installed: CI installs it (scripts/setup.sh); install it to run this test"
    );
}

/// A temp dir with `lib/librbd.so.1` + `lib/librados.so.2` (symlinks to the
/// cdylib), an embedded store and `ceph.conf` pointing at it.
pub struct Env {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Set up and create `pools` through the library itself.
    pub fn new(pools: &[&str]) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(&lib).expect("mkdir lib");
        let so = cdylib();
        std::os::unix::fs::symlink(&so, lib.join("librbd.so.1")).expect("symlink");
        std::os::unix::fs::symlink(&so, lib.join("librados.so.2")).expect("symlink");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).expect("mkdir store");
        std::fs::write(
            dir.path().join("ceph.conf"),
            format!("[global]\nquarry_embedded_dir = {}\n", store.display()),
        )
        .expect("write conf");
        let env = Env { dir };
        if !pools.is_empty() {
            let mkpool = env.compile("mkpool.c", "mkpool");
            let out = env.cmd(&mkpool).args(pools).output().expect("run mkpool");
            assert!(
                out.status.success(),
                "mkpool: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        env
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `ceph.conf` of this environment.
    pub fn conf(&self) -> PathBuf {
        self.path().join("ceph.conf")
    }

    /// A command with LD_LIBRARY_PATH and CEPH_CONF set to this environment.
    pub fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_LIBRARY_PATH", self.path().join("lib"))
            .env("CEPH_CONF", self.conf())
            .env_remove("CEPH_ARGS")
            .env_remove("CEPH_KEYRING")
            .current_dir(self.path());
        c
    }

    /// Compile `tests/c/<src>` with gcc against the system's Ceph headers,
    /// linking our library through the soname links.
    pub fn compile(&self, src: &str, out: &str) -> PathBuf {
        require("gcc");
        assert!(
            Path::new("/usr/include/rbd/librbd.h").exists()
                && Path::new("/usr/include/rados/librados.h").exists(),
            "Ceph headers missing: install librbd-dev and librados-dev (CI does)"
        );
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/c")
            .join(src);
        let bin = self.path().join(out);
        let lib = self.path().join("lib");
        let o = Command::new("gcc")
            .arg("-Wall")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .arg(format!("-L{}", lib.display()))
            .arg("-l:librbd.so.1")
            .arg("-l:librados.so.2")
            .arg("-lpthread")
            .output()
            .expect("run gcc");
        assert!(
            o.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        bin
    }

    /// Run a command, returning (exit ok, stdout, stderr).
    pub fn run(&self, c: &mut Command) -> (bool, String, String) {
        let o: Output = c.output().expect("spawn");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}
