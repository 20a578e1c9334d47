//! libvirt (issue 6, part 5): a real libvirtd (Debian's, QEMU driver, TCG)
//! defines a ceph secret holding client.admin's key and boots a domain
//! whose disk is an rbd network disk with
//! `<auth username='admin'><secret type='ceph' uuid=.../></auth>` and the
//! monitor as `<host>`: the guest verifies the golden content, writes, and
//! the host finds its write on the cluster.
//!
//! The test starts its own libvirtd (private socket directory, pid file
//! and lifetime) and virtlogd; QEMU gets Quarry's library through the
//! domain's `<qemu:env name='LD_LIBRARY_PATH'>` (or use `quarry install`).
//! It needs root (libvirtd's QEMU driver runs privileged) and Debian's
//! libvirt-daemon-driver-qemu; otherwise it prints "SKIPPED: ..." and passes.

use quarry_vmtest::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET_UUID: &str = "6b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8";

/// A daemon this test started, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("libvirt's QEMU driver needs root (run as root)".into());
    }
    for f in ["/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh"] {
        if !Path::new(f).exists() {
            return Some(format!(
                "{f} missing (scripts/setup.sh installs libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)"
            ));
        }
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so")
        .exists()
    {
        return Some("libvirt-daemon-driver-qemu is not installed".into());
    }
    // The QEMU driver runs guests as this user and group (Debian's build
    // defaults); libvirtd refuses to start without them.
    for db in ["passwd", "group"] {
        let found = Command::new("getent")
            .args([db, "libvirt-qemu"])
            .output()
            .ok()?;
        if !found.status.success() {
            return Some(format!(
                "{db} entry libvirt-qemu missing (scripts/setup.sh creates it)"
            ));
        }
    }
    None
}

fn virsh(uri: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("timeout")
        .arg("60")
        .arg("virsh")
        .args(["-c", uri])
        .args(args)
        .output()
        .expect("run virsh");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn chmod_755(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn libvirt_boots_a_domain_with_an_rbd_disk_and_ceph_secret() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: libvirt domain test: {why}");
        return;
    }
    let _one = one_at_a_time();
    let guest = Guest::get();
    let c = Cluster::up(1);
    c.golden_clone(&guest, "lvdom");

    // QEMU runs as libvirt's unprivileged user: the library directory and
    // the console directory must be reachable (the keyring stays 0600).
    chmod_755(c.path());
    chmod_755(&c.path().join("lib"));
    let work = tempfile::tempdir().expect("tempdir");
    chmod_755(work.path());
    let sock = work.path().join("sock");
    std::fs::create_dir_all(&sock).expect("mkdir");
    let conf = work.path().join("libvirtd.conf");
    std::fs::write(
        &conf,
        format!(
            "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
            sock.display()
        ),
    )
    .expect("write libvirtd.conf");
    let log = |name: &str| std::fs::File::create(work.path().join(name)).expect("log file");
    // virtlogd serves QEMU's log; reuse a running one.
    let _virtlogd = (!Path::new("/run/libvirt/virtlogd-sock").exists()).then(|| {
        Daemon(
            Command::new("/usr/sbin/virtlogd")
                .args(["--timeout", "600"])
                .stdout(Stdio::null())
                .stderr(log("virtlogd.log"))
                .spawn()
                .expect("start virtlogd"),
        )
    });
    let t0 = Instant::now();
    let _libvirtd = Daemon(
        Command::new("/usr/sbin/libvirtd")
            .arg("-f")
            .arg(&conf)
            .arg("--pid-file")
            .arg(work.path().join("libvirtd.pid"))
            .args(["--timeout", "600"])
            .stdout(Stdio::null())
            .stderr(log("libvirtd.log"))
            .spawn()
            .expect("start libvirtd"),
    );
    let uri = format!("qemu:///system?socket={}/libvirt-sock", sock.display());
    let libvirtd_log =
        || std::fs::read_to_string(work.path().join("libvirtd.log")).unwrap_or_default();
    loop {
        if virsh(&uri, &["version"]).0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "libvirtd did not answer in 60 s:\n{}",
            libvirtd_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("vmtest libvirt: libvirtd up in {:.1?}", t0.elapsed());

    // The secret: client.admin's key, as the README's recipe.
    let secret_xml = work.path().join("secret.xml");
    std::fs::write(
        &secret_xml,
        format!(
            "<secret ephemeral='yes' private='yes'><uuid>{SECRET_UUID}</uuid>\
             <usage type='ceph'><name>quarry vmtest client.admin</name></usage></secret>"
        ),
    )
    .expect("secret.xml");
    let (ok, out) = virsh(
        &uri,
        &["secret-define", secret_xml.to_str().expect("utf-8")],
    );
    assert!(ok, "secret-define: {out}");
    let key = c.admin_key();
    let (ok, out) = virsh(&uri, &["secret-set-value", SECRET_UUID, &key]);
    assert!(ok, "secret-set-value: {out}");

    let console: PathBuf = work.path().join("console.log");
    let dom_xml = work.path().join("dom.xml");
    std::fs::write(
        &dom_xml,
        format!(
            "<domain type='{virt}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>quarry-vmtest-lvdom</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 vmtest=fleet vmtest_dev=vda vmtest_id=5</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>
      <auth username='admin'>
        <secret type='ceph' uuid='{SECRET_UUID}'/>
      </auth>
      <source protocol='rbd' name='data/lvdom'>
        <host name='127.0.0.1' port='{port}'/>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='{console}'/></serial>
  </devices>
  <qemu:commandline>
    <qemu:env name='LD_LIBRARY_PATH' value='{lib}'/>
  </qemu:commandline>
</domain>
",
            virt = if accel() == "kvm" { "kvm" } else { "qemu" },
            kernel = guest.kernel.display(),
            initrd = guest.initrd.display(),
            port = c.mon_addr().1,
            console = console.display(),
            lib = c.path().join("lib").display(),
        ),
    )
    .expect("dom.xml");
    let t = Instant::now();
    let (ok, out) = virsh(&uri, &["create", dom_xml.to_str().expect("utf-8")]);
    assert!(ok, "virsh create: {out}\n{}", libvirtd_log());
    let verdict = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("VMTEST: RESULT")) {
            break (l.to_string(), text);
        }
        if t.elapsed() > BOOT_TIMEOUT {
            let _ = virsh(&uri, &["destroy", "quarry-vmtest-lvdom"]);
            panic!("no verdict from the libvirt domain in {BOOT_TIMEOUT:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = virsh(&uri, &["destroy", "quarry-vmtest-lvdom"]);
    let _ = virsh(&uri, &["secret-undefine", SECRET_UUID]);
    assert_eq!(verdict.0, "VMTEST: RESULT PASS", "console:\n{}", verdict.1);
    assert!(
        c.pattern_matches(
            "data/lvdom",
            pattern_byte(5),
            (SCRATCH_MIB + 5) << 20,
            1 << 20
        ),
        "the libvirt guest's write is not on the cluster"
    );
    println!(
        "vmtest libvirt: domain with rbd disk + ceph secret booted and passed in {:.1?}",
        t.elapsed()
    );
}
