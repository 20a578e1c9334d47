//! Golden image + a fleet of clones (issue 6, part 1): import the golden disk
//! with `qemu-img convert`, snapshot, protect, clone N times with the `rbd`
//! CLI, boot clones under QEMU (virtio, and the seed's plain IDE form); each
//! guest checks the golden content, writes its own data, syncs and powers
//! off. The host then checks each clone holds its own writes (debugfs on a
//! copy, qemu-io patterns), e2fsck is clean and golden@base is unchanged.
//!
//! Knobs: VMTEST_CLONES (provisioned, default 20), VMTEST_BOOT (booted, default 4).

use quarry_vmtest::*;
use std::time::Instant;

#[test]
fn golden_image_fleet_of_clones() {
    let n_clones = env_knob("VMTEST_CLONES", 20);
    let n_boot = env_knob("VMTEST_BOOT", 4).min(n_clones);
    let guest = Guest::get();
    let c = Cluster::up(3);
    let golden = guest.golden.to_str().expect("utf-8 path");

    let t = Instant::now();
    c.run(
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
    let import = t.elapsed();
    let t = Instant::now();
    c.run("rbd", &["snap", "create", "data/golden@base"]);
    let snap = t.elapsed();
    c.run("rbd", &["snap", "protect", "data/golden@base"]);
    let t = Instant::now();
    for i in 1..=n_clones {
        c.run(
            "rbd",
            &["clone", "data/golden@base", &format!("data/vm{i}")],
        );
    }
    let provision = t.elapsed();
    let (_, golden_used) = c.du("data/golden@base");
    let (_, fresh_used) = c.du("data/vm1");
    println!(
        "vmtest fleet: golden 256 MiB imported in {import:.2?}; snap create {snap:.2?}; \
         {n_clones} clones provisioned in {provision:.2?} ({:.1} ms/clone incl. rbd CLI start); \
         golden@base uses {} KiB, a fresh clone {} KiB",
        provision.as_secs_f64() * 1000.0 / n_clones as f64,
        golden_used >> 10,
        fresh_used >> 10
    );
    assert_eq!(fresh_used, 0, "a fresh clone must not use space");

    // Provisioning must not grow with the golden image's size: clone a 10 GiB
    // parent with 64 MiB written the same number of times.
    c.run("rbd", &["create", "--size", "10G", "data/big"]);
    c.run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 7 0 64M",
            "-c",
            "write -P 8 9G 4M",
            "rbd:data/big",
        ],
    );
    c.run("rbd", &["snap", "create", "data/big@s"]);
    c.run("rbd", &["snap", "protect", "data/big@s"]);
    let t = Instant::now();
    for i in 1..=n_clones {
        c.run("rbd", &["clone", "data/big@s", &format!("data/big{i}")]);
    }
    let provision_big = t.elapsed();
    println!(
        "vmtest fleet: {n_clones} clones of a 10 GiB parent in {provision_big:.2?} \
         (vs {provision:.2?} for the 256 MiB golden)"
    );
    assert!(
        provision_big.as_secs_f64() < 5.0 * provision.as_secs_f64() + 2.0,
        "cloning a 10 GiB parent ({provision_big:?}) is much slower than a 256 MiB one ({provision:?})"
    );

    // Boot, cycling through virtio and the seed's three `-drive` forms
    // verbatim (IDE on the pc machine).
    let mut boot_times = Vec::new();
    for i in 1..=n_boot {
        let (disk, dev) = match i % 4 {
            1 => (format!("format=raw,file=rbd:data/vm{i},if=virtio"), "vda"),
            2 => (format!("format=raw,file=rbd:data/vm{i}"), "sda"),
            3 => (
                format!("format=rbd,file=rbd:data/vm{i},cache=writeback"),
                "sda",
            ),
            _ => (
                format!("format=raw,file=rbd:data/vm{i}:rbd_cache=true,cache=writeback"),
                "sda",
            ),
        };
        let vm = Vm::start(
            &c,
            &format!("vm{i}"),
            &format!("vmtest=fleet vmtest_dev={dev} vmtest_id={i}"),
            &["-drive", &disk],
        );
        let took = vm.expect_pass();
        println!(
            "vmtest fleet: vm{i} (-drive {disk}) booted, verified golden, wrote, powered off in {took:.1?}"
        );
        boot_times.push(took);
    }
    if let Some(max) = boot_times.iter().max() {
        println!("vmtest fleet: {n_boot} boots, slowest {max:.1?} (TCG, -m 256)");
    }

    // Host checks.
    let scratch = tempfile::tempdir().expect("scratch dir");
    for i in 1..=n_boot {
        assert!(
            c.pattern_matches(
                &format!("data/vm{i}"),
                pattern_byte(i),
                (SCRATCH_MIB + i) << 20,
                1 << 20
            ),
            "vm{i}: its raw scratch block is not on the cluster"
        );
        let copy = scratch.path().join(format!("vm{i}.raw"));
        let copy_s = copy.to_str().expect("utf-8");
        c.run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                &format!("rbd:data/vm{i}"),
                copy_s,
            ],
        );
        fsck_clean(&copy).unwrap_or_else(|e| panic!("vm{i}: {e}"));
        let id = debugfs_cat(&copy, "/vmdata/id");
        assert_eq!(
            String::from_utf8_lossy(&id).trim(),
            format!("vm {i}"),
            "vm{i}: /vmdata/id"
        );
        let md5_file = String::from_utf8_lossy(&debugfs_cat(&copy, "/vmdata/own.md5"))
            .trim()
            .to_string();
        let own = scratch.path().join("own.bin");
        std::fs::write(&own, debugfs_cat(&copy, "/vmdata/own.bin")).expect("write own.bin");
        let md5 = run_ok(std::process::Command::new("md5sum").arg(&own));
        assert_eq!(
            md5.split_whitespace().next(),
            Some(md5_file.as_str()),
            "vm{i}: own.bin checksum"
        );
        std::fs::remove_file(&copy).expect("rm copy");
    }
    // A clone that was not booted holds none of the others' data.
    if n_clones > n_boot {
        let j = n_boot + 1;
        let copy = scratch.path().join("unbooted.raw");
        let copy_s = copy.to_str().expect("utf-8");
        c.run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                &format!("rbd:data/vm{j}"),
                copy_s,
            ],
        );
        assert!(
            debugfs_cat(&copy, "/vmdata/id").is_empty(),
            "vm{j} was never booted but has /vmdata/id"
        );
        let out = c.run("qemu-img", &["compare", golden, &format!("rbd:data/vm{j}")]);
        assert!(
            out.contains("identical"),
            "unbooted clone vm{j} differs from golden: {out}"
        );
    }
    let out = c.run("qemu-img", &["compare", golden, "rbd:data/golden@base"]);
    assert!(out.contains("identical"), "golden@base changed: {out}");
    let out = c.run("qemu-img", &["compare", golden, "rbd:data/golden"]);
    assert!(out.contains("identical"), "golden changed: {out}");

    // Space: N clones use what they wrote, not N copies.
    let mut clones_used = 0;
    for i in 1..=n_clones {
        clones_used += c.du(&format!("data/vm{i}")).1;
    }
    let (stored, raw) = c.pool_df("data");
    println!(
        "vmtest fleet: {n_clones} clones ({n_boot} booted) use {} KiB in total per rbd du \
         (golden@base {} KiB; {n_clones} full copies would be {} MiB); pool data: stored {} KiB, raw used {} KiB",
        clones_used >> 10,
        golden_used >> 10,
        (n_clones * 256),
        stored >> 10,
        raw >> 10
    );
    assert!(
        clones_used <= (n_boot * 16) << 20,
        "{n_boot} booted clones use {clones_used} bytes: more than they wrote"
    );
    println!("{}", c.run("rbd", &["du", "-p", "data"]));
    println!("{}", c.run("ceph", &["df"]));
}
