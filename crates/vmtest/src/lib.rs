//! Helpers for Quarry's VM end-to-end tests (`tests/*.rs`).
//!
//! The tests drive real processes only: `quarry up` in a temporary directory,
//! Debian's unmodified `qemu-img`/`qemu-io`/`qemu-system-x86_64` with the
//! environment `. D/env` would give them, and a tiny guest built by
//! `tests/vm/build-guest.sh` (Debian cloud kernel + busybox initramfs + a
//! 256 MiB golden ext4 disk). The guest's `/init` (`tests/vm/guest-init.sh`)
//! runs the scenario named on the kernel command line and reports on the
//! serial console with `VMTEST:` lines.
//!
//! Everything here panics with a message naming the missing piece: these are
//! test helpers, and a missing QEMU, kernel or binary must fail the test run
//! (never skip it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on one guest boot (TCG is slow; a boot here takes ~5 s).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Scratch area of the guest disk: MiB [128, 256); block i is 1 MiB at MiB 128+i.
pub const SCRATCH_MIB: u64 = 128;

/// Byte the guest's writeloop puts in scratch block `i`.
pub fn pattern_byte(i: u64) -> u64 {
    i % 250 + 1
}

/// Read an integer knob from the environment (e.g. `VMTEST_CLONES`).
pub fn env_knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Repository root (from this crate's manifest dir).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Directory holding the release `quarry` binary and `libquarry_capi.so`:
/// the test executable lives in `<target>/release/deps/`, so it is `../..`.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable is in <target>/<profile>/deps")
            .to_path_buf();
        for f in ["quarry", "libquarry_capi.so"] {
            assert!(
                dir.join(f).exists(),
                "{} is missing: build it first in the same target dir \
                 (`cargo test --workspace --release` builds every workspace binary and cdylib; \
                 or `cargo build --release -p quarry-cli -p quarry-capi`)",
                dir.join(f).display()
            );
        }
        dir
    })
    .clone()
}

/// Run a command, panic with its output unless it succeeds; return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    check_ok(&what, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guest: kernel, initramfs and golden disk (built once per target dir).
#[derive(Debug, Clone)]
pub struct Guest {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub golden: PathBuf,
}

impl Guest {
    /// Build (or reuse) the guest under `<target>/release/vmtest-guest`. It is
    /// rebuilt when the builder or the init script is newer than the build.
    pub fn get() -> Guest {
        static GUEST: OnceLock<Guest> = OnceLock::new();
        GUEST.get_or_init(Guest::build).clone()
    }

    fn build() -> Guest {
        for tool in ["qemu-system-x86_64", "qemu-img", "qemu-io", "debugfs"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(
                found,
                "{tool} not found: run scripts/setup.sh (QEMU 7.2 + qemu-block-extra, e2fsprogs)"
            );
        }
        let scripts = repo_root().join("tests/vm");
        let dir = bin_dir().join("vmtest-guest");
        let stamp = dir.join("golden.sha256");
        let newest_script = ["build-guest.sh", "guest-init.sh"]
            .iter()
            .filter_map(|f| std::fs::metadata(scripts.join(f)).ok()?.modified().ok())
            .max();
        let built = std::fs::metadata(&stamp)
            .ok()
            .and_then(|m| m.modified().ok());
        let fresh = matches!((built, newest_script), (Some(b), Some(s)) if b >= s);
        if !fresh {
            let tmp = bin_dir().join(format!("vmtest-guest.tmp.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let t0 = Instant::now();
            let out = Command::new("bash")
                .arg(scripts.join("build-guest.sh"))
                .arg(&tmp)
                .output()
                .expect("run tests/vm/build-guest.sh");
            assert!(
                out.status.success(),
                "tests/vm/build-guest.sh could not build the guest (kernel from Debian's \
                 linux-image-*-cloud-amd64, busybox-static): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&dir);
            if std::fs::rename(&tmp, &dir).is_err() {
                // another test process won the race; its build is as good as ours
                let _ = std::fs::remove_dir_all(&tmp);
            }
            eprintln!("vmtest: guest built in {:.1?}", t0.elapsed());
        }
        let g = Guest {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initramfs.gz"),
            golden: dir.join("golden.img"),
            dir,
        };
        for f in [&g.kernel, &g.initrd, &g.golden] {
            assert!(f.exists(), "guest file {} missing after build", f.display());
        }
        g
    }
}

/// A one-host cluster from `quarry up --dir D`, stopped on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Cluster {
    /// `quarry up --dir D --osds N`, then the variables `. D/env` exports.
    /// With VMTEST_KEEP set, D (consoles, daemon logs) is kept after the test.
    pub fn up(osds: u32) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("quarry-vmtest.")
            .disable_cleanup(std::env::var_os("VMTEST_KEEP").is_some())
            .tempdir()
            .expect("temp dir for the cluster");
        let quarry = bin_dir().join("quarry");
        let t0 = Instant::now();
        run_ok(
            Command::new(&quarry)
                .arg("up")
                .arg("--dir")
                .arg(dir.path())
                .arg("--osds")
                .arg(osds.to_string()),
        );
        eprintln!("vmtest: quarry up ({osds} osds) in {:.1?}", t0.elapsed());
        let envfile = dir.path().join("env");
        let out = run_ok(Command::new("bash").arg("-c").arg(format!(
            ". '{}' && printf '%s\\0%s\\0%s\\0' \"$CEPH_CONF\" \"$LD_LIBRARY_PATH\" \"$PATH\"",
            envfile.display()
        )));
        let vals: Vec<&str> = out.split('\0').collect();
        assert!(vals.len() >= 3, "cannot source {}", envfile.display());
        let mut env = HashMap::new();
        for (k, v) in ["CEPH_CONF", "LD_LIBRARY_PATH", "PATH"].iter().zip(vals) {
            assert!(!v.is_empty(), "{} does not export {k}", envfile.display());
            env.insert(k.to_string(), v.to_string());
        }
        Cluster { dir, env }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The admin key (base64) from `D/ceph.client.admin.keyring`, as a
    /// libvirt secret holds it.
    pub fn admin_key(&self) -> String {
        let kr = std::fs::read_to_string(self.path().join("ceph.client.admin.keyring"))
            .expect("read keyring");
        kr.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("key = ")
                    .or_else(|| l.trim().strip_prefix("key="))
            })
            .map(|k| k.trim().to_string())
            .expect("key in ceph.client.admin.keyring")
    }

    /// The monitor's (host, port) from `mon_host` in `D/ceph.conf`.
    pub fn mon_addr(&self) -> (String, String) {
        let conf = std::fs::read_to_string(self.path().join("ceph.conf")).expect("read ceph.conf");
        let v = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("mon_host = "))
            .expect("mon_host in ceph.conf")
            .trim()
            .to_string();
        let (h, p) = v.rsplit_once(':').expect("mon_host host:port");
        (h.to_string(), p.to_string())
    }

    /// The user's story in one call: import the guest's golden image as
    /// `data/golden`, snapshot and protect `data/golden@base`, clone it
    /// to `data/<clone>`.
    pub fn golden_clone(&self, guest: &Guest, clone: &str) {
        let golden = guest.golden.to_str().expect("utf-8 path");
        self.run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                golden,
                "rbd:data/golden",
            ],
        );
        self.run("rbd", &["snap", "create", "data/golden@base"]);
        self.run("rbd", &["snap", "protect", "data/golden@base"]);
        self.run(
            "rbd",
            &["clone", "data/golden@base", &format!("data/{clone}")],
        );
    }

    /// A command with the cluster's environment (as after `. D/env`).
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.envs(&self.env).current_dir(self.path());
        c
    }

    /// Run `prog args...` in the cluster's environment; stdout on success.
    pub fn run(&self, prog: &str, args: &[&str]) -> String {
        run_ok(self.cmd(prog).args(args))
    }

    /// Run and return the raw output (for commands expected to fail).
    pub fn output(&self, prog: &str, args: &[&str]) -> Output {
        self.cmd(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
    }

    /// `rbd du --format json <spec>`: (provisioned, used) bytes of the first entry
    /// matching the spec's image (head, not snapshots), or the totals for a pool.
    pub fn du(&self, spec: &str) -> (u64, u64) {
        let out = self.run("rbd", &["du", "--format", "json", spec]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("rbd du {spec}: bad json {e}: {out}"));
        let get = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("rbd du {spec}: no {k} in {out}"))
        };
        (get("total_provisioned_size"), get("total_used_size"))
    }

    /// `ceph df --format json`: (stored, bytes_used) of a pool.
    pub fn pool_df(&self, pool: &str) -> (u64, u64) {
        let out = self.run("ceph", &["df", "--format", "json"]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ceph df: bad json {e}: {out}"));
        let pools = v["pools"].as_array().expect("ceph df json has pools");
        let p = pools
            .iter()
            .find(|p| p["name"] == pool)
            .unwrap_or_else(|| panic!("pool {pool} not in ceph df: {out}"));
        let s = &p["stats"];
        (
            s["stored"].as_u64().expect("stored"),
            s["bytes_used"].as_u64().expect("bytes_used"),
        )
    }

    /// Pid of a daemon from `D/run/<name>.pid`.
    pub fn pid(&self, name: &str) -> i32 {
        let f = self.path().join("run").join(format!("{name}.pid"));
        let s = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: not a pid: {s:?}", f.display()))
    }

    /// `qemu-io -f raw -c 'read -P <byte> <off> <len>' rbd:<image>`; true when it matches.
    pub fn pattern_matches(&self, image: &str, byte: u64, off: u64, len: u64) -> bool {
        let out = self.output(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                &format!("read -P {byte} {off} {len}"),
                &format!("rbd:{image}"),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success()
            && !text.contains("Pattern verification failed")
            && text.contains("read ")
    }

    /// Check the writeloop blocks [0, n) of an image from the host.
    pub fn check_blocks(&self, image: &str, n: u64) -> Result<(), String> {
        for i in 0..n {
            if !self.pattern_matches(image, pattern_byte(i), (SCRATCH_MIB + i) << 20, 1 << 20) {
                return Err(format!("rbd:{image}: scratch block {i} lacks its pattern"));
            }
        }
        Ok(())
    }

    /// Count how many leading writeloop blocks are present (for documenting tests).
    pub fn count_blocks(&self, image: &str, max: u64) -> u64 {
        (0..max)
            .take_while(|&i| {
                self.pattern_matches(image, pattern_byte(i), (SCRATCH_MIB + i) << 20, 1 << 20)
            })
            .count() as u64
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(bin_dir().join("quarry"))
            .arg("down")
            .arg("--dir")
            .arg(self.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Pick a free TCP port on 127.0.0.1, outside the ephemeral range (see
/// `quarry_common::port`).
pub fn free_port() -> u16 {
    quarry_common::port::free_local_port().expect("a free port")
}

struct Console {
    lines: Mutex<(Vec<String>, bool)>,
    cv: Condvar,
}

/// A running `qemu-system-x86_64` whose serial console is its stdio.
pub struct Vm {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    pub qmp_path: Option<PathBuf>,
    pub started: Instant,
}

/// Accelerator: TCG unless VMTEST_ACCEL says otherwise (this host's /dev/kvm
/// hangs guests under nested virtualization, so KVM is opt-in).
pub fn accel() -> String {
    std::env::var("VMTEST_ACCEL").unwrap_or_else(|_| "tcg".into())
}

impl Vm {
    /// Start QEMU with the guest kernel, `append` added to the kernel command
    /// line and `disk` as the drive arguments (verbatim user forms).
    pub fn start(cluster: &Cluster, name: &str, append: &str, disk: &[&str]) -> Vm {
        Vm::start_with(cluster, name, append, disk, &[])
    }

    /// As `start`, with extra QEMU arguments (e.g. `-incoming`).
    pub fn start_with(
        cluster: &Cluster,
        name: &str,
        append: &str,
        disk: &[&str],
        extra: &[&str],
    ) -> Vm {
        let g = Guest::get();
        let qmp = cluster.path().join(format!("{name}.qmp"));
        let mut cmd = cluster.cmd("qemu-system-x86_64");
        cmd.args(["-machine", &format!("pc,accel={}", accel())])
            .args(["-m", "256", "-nographic", "-net", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&g.kernel)
            .arg("-initrd")
            .arg(&g.initrd)
            .args(["-append", &format!("console=ttyS0 quiet panic=-1 {append}")])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .args(disk)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64 for {name}: {e}"));
        let console = Arc::new(Console {
            lines: Mutex::new((Vec::new(), false)),
            cv: Condvar::new(),
        });
        let log_path = cluster.path().join(format!("{name}.console.log"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, tag) in [
            (Box::new(stdout) as Box<dyn Read + Send>, ""),
            (Box::new(stderr) as Box<dyn Read + Send>, "qemu stderr: "),
        ] {
            let c = console.clone();
            let log_path = log_path.clone();
            let is_stdout = tag.is_empty();
            thread::spawn(move || {
                let mut log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .ok();
                for line in BufReader::new(stream).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = format!("{tag}{}", String::from_utf8_lossy(&line).trim_end());
                    if let Some(f) = log.as_mut() {
                        let _ = writeln!(f, "{text}");
                    }
                    let mut g = c.lines.lock().expect("console lock");
                    g.0.push(text);
                    c.cv.notify_all();
                }
                if is_stdout {
                    let mut g = c.lines.lock().expect("console lock");
                    g.1 = true;
                    c.cv.notify_all();
                }
            });
        }
        let stdin = child.stdin.take();
        Vm {
            name: name.to_string(),
            child,
            stdin,
            console,
            qmp_path: Some(qmp),
            started: Instant::now(),
        }
    }

    /// The console so far (for failure messages).
    pub fn transcript(&self) -> String {
        let g = self.console.lines.lock().expect("console lock");
        let n = g.0.len();
        g.0[n.saturating_sub(60)..].join("\n")
    }

    /// Wait for a console line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.try_wait_for(needle, timeout).unwrap_or_else(|why| {
            panic!(
                "{}: {why} waiting for {needle:?}; console:\n{}",
                self.name,
                self.transcript()
            )
        })
    }

    /// As `wait_for`, but returns an error instead of panicking.
    pub fn try_wait_for(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.console.lines.lock().expect("console lock");
        let mut seen = 0;
        loop {
            if let Some(l) = g.0[seen..].iter().find(|l| l.contains(needle)) {
                return Ok(l.clone());
            }
            seen = g.0.len();
            if let Some(l) = g.0.iter().find(|l| l.contains("VMTEST: RESULT FAIL")) {
                return Err(format!("guest failed: {l}"));
            }
            if g.1 {
                return Err("QEMU's console closed (QEMU exited)".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("timeout after {timeout:?}"));
            }
            g = self
                .console
                .cv
                .wait_timeout(g, deadline - now)
                .expect("console lock")
                .0;
        }
    }

    /// Wait for the guest's verdict, then for QEMU to exit; panic unless PASS.
    pub fn expect_pass(mut self) -> Duration {
        let verdict = self.wait_for("VMTEST: RESULT", BOOT_TIMEOUT);
        assert!(
            verdict.contains("RESULT PASS"),
            "{}: {verdict}; console:\n{}",
            self.name,
            self.transcript()
        );
        self.wait_exit(Duration::from_secs(30));
        self.started.elapsed()
    }

    /// Type a line on the guest's serial console.
    pub fn send_line(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("qemu stdin");
        w.write_all(format!("{line}\n").as_bytes())
            .and_then(|_| w.flush())
            .expect("write to qemu stdin");
    }

    /// Wait for QEMU to exit (kill it after `timeout`); returns whether it exited by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(
                    st.success(),
                    "{}: qemu exited with {st}; console:\n{}",
                    self.name,
                    self.transcript()
                );
                return true;
            }
            if Instant::now() >= deadline {
                self.kill9();
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL QEMU (a host crash from the guest's point of view).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Connect to the QMP socket and negotiate capabilities.
    pub fn qmp(&self) -> Qmp {
        let path = self.qmp_path.as_ref().expect("qmp socket");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "{}: cannot connect to QMP {}: {e}",
                    self.name,
                    path.display()
                ),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("qmp read timeout");
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone().expect("clone qmp stream")),
            stream,
        };
        let greeting = q.read_msg();
        assert!(greeting.get("QMP").is_some(), "bad QMP greeting {greeting}");
        q.execute("qmp_capabilities", serde_json::json!({}));
        q
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A QMP connection.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    fn read_msg(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read from QMP");
        assert!(n > 0, "QMP connection closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad QMP json {e}: {line}"))
    }

    /// Execute a command and return its `return` value (events are skipped).
    pub fn execute(&mut self, cmd: &str, args: serde_json::Value) -> serde_json::Value {
        self.try_execute(cmd, args)
            .unwrap_or_else(|e| panic!("QMP {cmd}: {e}"))
    }

    /// As `execute`, returning I/O and QMP errors (e.g. QEMU died) instead of panicking.
    pub fn try_execute(
        &mut self,
        cmd: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let msg = serde_json::json!({"execute": cmd, "arguments": args});
        writeln!(self.stream, "{msg}").map_err(|e| format!("write to QMP: {e}"))?;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("read from QMP: {e}"))?;
            if n == 0 {
                return Err("QMP connection closed (QEMU exited?)".into());
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("bad QMP json {e}: {line}"))?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(format!("error {e}"));
            }
            return Ok(v.get("return").cloned().unwrap_or(serde_json::Value::Null));
        }
    }
}

/// Extract a file from an ext4 image on the host with debugfs (no mount).
pub fn debugfs_cat(image: &Path, file: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(image)
        .output()
        .expect("run debugfs");
    assert!(out.status.success(), "debugfs cat {file} failed");
    out.stdout
}

/// `e2fsck -fn` on an image file: the filesystem is clean.
pub fn fsck_clean(image: &Path) -> Result<(), String> {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .expect("run e2fsck");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "e2fsck -fn {}: {}\n{}",
            image.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The first physical block (4 KiB) and length in blocks of a file in an ext4 image.
pub fn debugfs_extent(image: &Path, file: &str) -> Option<(u64, u64)> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ex {file}"))
        .arg(image)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // lines like: " 0/ 0   1/  1     0 - 2047  1234 - 3281  2048"
    for l in text.lines().skip(1) {
        let nums: Vec<u64> = l
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if nums.len() >= 9 {
            return Some((nums[6], nums[8]));
        }
    }
    None
}

/// Tests of one binary take this first: TCG guests are CPU-heavy, so VMs of
/// one test binary run one test at a time (a failed test does not poison it).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `kill -9 <pid>` (a daemon of the cluster, not a child of the test).
pub fn kill9_pid(pid: i32) {
    run_ok(Command::new("kill").arg("-9").arg(pid.to_string()));
}
