//! A real one-host cluster for the tests that need daemons: `quarry up` in
//! a temp dir (monitor + 3 OSDs), this build's library linked under both
//! sonames in `<dir>/testlib`, and `quarry down` on drop (also when `up`
//! failed half-way: daemons must not outlive the test).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `quarry` binary of this target dir (built, or confirmed up to date,
/// first: a stale daemon would speak another wire version).
pub fn quarry_bin() -> PathBuf {
    let so = super::cdylib();
    let profile = so.parent().expect("profile dir");
    super::cargo_build(profile, "quarry-cli");
    profile.join("quarry")
}

/// A `quarry up` cluster, stopped on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    quarry: PathBuf,
}

impl Cluster {
    /// Start a cluster and link this build's library into `testlib`.
    pub fn up() -> Cluster {
        let quarry = quarry_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(&quarry)
            .args(["up", "--dir"])
            .arg(dir.path())
            // Health checks must not depend on the machine's free disk.
            .args(["--conf-set", "mon_data_avail_warn=0"])
            .output()
            .expect("quarry up");
        let guard = Cluster { dir, quarry };
        assert!(
            out.status.success(),
            "quarry up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Use this build's library whatever `quarry up` linked.
        let lib = guard.lib_dir();
        std::fs::create_dir_all(&lib).expect("mkdir");
        std::os::unix::fs::symlink(super::cdylib(), lib.join("librbd.so.1")).expect("link");
        std::os::unix::fs::symlink(super::cdylib(), lib.join("librados.so.2")).expect("link");
        guard
    }

    /// The cluster directory (`ceph.conf`, keyring, run/).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory holding the library as `librbd.so.1`/`librados.so.2`.
    pub fn lib_dir(&self) -> PathBuf {
        self.path().join("testlib")
    }

    /// `prog` set up to use this cluster and this build's library, with
    /// no stray configuration from the caller's environment.
    pub fn cmd_path(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        c.env("LD_LIBRARY_PATH", self.lib_dir())
            .env("CEPH_CONF", self.path().join("ceph.conf"))
            .env_remove("CEPH_ARGS")
            .env_remove("CEPH_KEYRING")
            .env_remove("QUARRY_LOG_CACHE")
            .current_dir(self.path());
        c
    }

    /// [`Cluster::cmd_path`] for an installed tool (missing: the test fails).
    pub fn cmd(&self, tool: &str) -> Command {
        self.cmd_path(&super::require(tool))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.quarry)
            .args(["down", "--dir"])
            .arg(self.dir.path())
            .output();
    }
}
