//! The QEMU command line libvirt generates for an rbd network disk with
//! `<auth username='admin'><secret type='ceph' .../></auth>` (tests/vm/README.md
//! has the domain XML): `-blockdev` JSON with the monitor address, the user,
//! `auth-client-required` and the key passed through a `secret` object —
//! and no ceph.conf, no CEPH_CONF, a clean environment except the library
//! path (libvirt's `<qemu:env>` or `quarry install` provides that). libvirt
//! itself is not in CI; this runs the same QEMU invocation directly.

use quarry_vmtest::*;
use serde_json::json;
use std::process::{Command, Stdio};

/// Start QEMU as libvirt would (clean environment); returns the child's output.
fn libvirt_style_qemu(
    c: &Cluster,
    key_b64: &str,
    image: &str,
    append: &str,
) -> std::process::Output {
    let g = Guest::get();
    let (host, port) = c.mon_addr();
    let cwd = tempfile::tempdir().expect("empty cwd");
    let storage = json!({
        "driver": "rbd", "pool": "data", "image": image,
        "server": [{"host": host, "port": port}],
        "user": "admin", "auth-client-required": ["cephx", "none"],
        "key-secret": "libvirt-1-storage-auth-secret0",
        "node-name": "libvirt-1-storage", "auto-read-only": true, "discard": "unmap",
    });
    let format = json!({
        "node-name": "libvirt-1-format", "read-only": false, "discard": "unmap",
        "driver": "raw", "file": "libvirt-1-storage",
    });
    let device = json!({
        "driver": "virtio-blk-pci", "drive": "libvirt-1-format", "id": "virtio-disk0",
    });
    Command::new("qemu-system-x86_64")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", cwd.path())
        .env("LD_LIBRARY_PATH", &c.env["LD_LIBRARY_PATH"])
        .current_dir(cwd.path())
        .args(["-machine", &format!("pc,accel={}", accel())])
        .args(["-m", "256", "-nographic", "-net", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&g.kernel)
        .arg("-initrd")
        .arg(&g.initrd)
        .args(["-append", &format!("console=ttyS0 quiet panic=-1 {append}")])
        .args([
            "-object",
            &format!("secret,id=libvirt-1-storage-auth-secret0,data={key_b64},format=base64"),
        ])
        .args(["-blockdev", &storage.to_string()])
        .args(["-blockdev", &format.to_string()])
        .args(["-device", &device.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-system-x86_64")
}

#[test]
fn libvirt_rbd_network_disk_with_auth_secret() {
    let guest = Guest::get();
    let c = Cluster::up(3);
    c.golden_clone(&guest, "lv1");

    let key = c.admin_key();
    let out = libvirt_style_qemu(&c, &key, "lv1", "vmtest=fleet vmtest_dev=vda vmtest_id=7");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && console.contains("VMTEST: RESULT PASS"),
        "libvirt-style QEMU ({}) did not boot and pass:\n{console}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.pattern_matches(
            "data/lv1",
            pattern_byte(7),
            (SCRATCH_MIB + 7) << 20,
            1 << 20
        ),
        "the guest's write is not on the cluster"
    );
    println!("vmtest libvirt-form: -blockdev rbd with user + key-secret, no ceph.conf: boot PASS");

    // A wrong key is refused at once with a clear error, not a hang.
    let mut bad = key.into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ascii key");
    let t = std::time::Instant::now();
    let out = libvirt_style_qemu(&c, &bad, "lv1", "vmtest=fleet vmtest_dev=vda vmtest_id=8");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "QEMU started with a wrong key");
    println!(
        "vmtest libvirt-form: wrong key refused in {:.1?}: {}",
        t.elapsed(),
        err.trim()
    );
    assert!(
        t.elapsed().as_secs() < 30,
        "a wrong key took {:?} to be refused",
        t.elapsed()
    );
}
