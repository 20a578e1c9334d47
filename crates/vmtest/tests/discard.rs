//! Discard/TRIM (issue 6, part 2). The guest fills its ext4 with 48 MiB and
//! 32 MiB of the raw scratch area (8 whole 4 MiB objects), deletes the golden
//! data file, syncs and waits; the host measures; then the guest deletes the
//! big file, runs `fstrim` and `blkdiscard`s the scratch area (whole objects)
//! and 128 KiB inside one more scratch block (a sub-object discard: that range
//! reads zeros, the rest of the block keeps its data); the host measures again.
//!
//! Cases: the seed's IDE form verbatim (`-drive ...,id=drive1,if=none -device
//! driver=ide-hd,drive=drive1,discard_granularity=512`), the same with
//! `discard=unmap` on the drive, and virtio-blk with `discard=unmap` on a
//! clone of the golden snapshot (the clone must hide the parent's data that
//! the guest trimmed). Note: on a clone, `rbd du` USED grows after the trim,
//! as on Ceph: a discard inside the parent overlap leaves an empty object
//! that hides the parent, so the object map marks it existing; the pool's
//! stored bytes fall.

use quarry_vmtest::*;

struct Usage {
    du_used: u64,
    stored: u64,
    osd_disk_kib: u64,
}

/// Disk usage of the OSDs' data directories (`du -sk D/osd.*`).
fn osd_disk_kib(c: &Cluster) -> u64 {
    let mut total = 0;
    for i in 0..3 {
        let out = run_ok(
            std::process::Command::new("du")
                .arg("-sk")
                .arg(c.path().join(format!("osd.{i}"))),
        );
        total += out
            .split_whitespace()
            .next()
            .and_then(|k| k.parse::<u64>().ok())
            .expect("du -sk output");
    }
    total
}

fn usage(c: &Cluster, image: &str) -> Usage {
    Usage {
        du_used: c.du(image).1,
        stored: c.pool_df("data").0,
        osd_disk_kib: osd_disk_kib(c),
    }
}

/// The sub-object discard in scratch block 32: [64 KiB, 192 KiB) zeroed, the
/// rest of the block intact.
fn check_sub_object_discard(c: &Cluster, image: &str) {
    let base = (SCRATCH_MIB + 32) << 20;
    let p = pattern_byte(32);
    assert!(
        c.pattern_matches(image, p, base, 65536),
        "{image}: data before the sub-object discard lost"
    );
    assert!(
        c.pattern_matches(image, 0, base + 65536, 131072),
        "{image}: sub-object discard did not zero"
    );
    assert!(
        c.pattern_matches(image, p, base + 196608, (1 << 20) - 196608),
        "{image}: data after the sub-object discard lost"
    );
}

/// Boot the discard scenario; returns usage (filled, trimmed).
fn fill_and_trim(c: &Cluster, image: &str, dev: &str, disk: &[&str]) -> (Usage, Usage) {
    let mut vm = Vm::start(c, image, &format!("vmtest=discard vmtest_dev={dev}"), disk);
    vm.wait_for("VMTEST: FILLED", BOOT_TIMEOUT);
    let filled = usage(c, &format!("data/{image}"));
    vm.send_line("measured");
    let took = vm.expect_pass();
    let trimmed = usage(c, &format!("data/{image}"));
    println!(
        "vmtest discard {image} ({}): rbd du used {} -> {} KiB, pool data stored {} -> {} KiB, \
         OSD dirs on disk {} -> {} KiB ({took:.1?})",
        disk.join(" "),
        filled.du_used >> 10,
        trimmed.du_used >> 10,
        filled.stored >> 10,
        trimmed.stored >> 10,
        filled.osd_disk_kib,
        trimmed.osd_disk_kib
    );
    (filled, trimmed)
}

#[test]
fn discard_reclaims_space() {
    let guest = Guest::get();
    let golden = guest.golden.to_str().expect("utf-8 path");
    let c = Cluster::up(3);
    let mib = 1u64 << 20;

    // 1. The seed's IDE form, verbatim. QEMU's -drive default is discard=ignore,
    //    so the guest's TRIMs succeed but never reach librbd: nothing reclaimed.
    c.run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            golden,
            "rbd:data/squeeze",
        ],
    );
    let (f, t) = fill_and_trim(
        &c,
        "squeeze",
        "sda",
        &[
            "-drive",
            "format=raw,file=rbd:data/squeeze,id=drive1,if=none",
            "-device",
            "driver=ide-hd,drive=drive1,discard_granularity=512",
        ],
    );
    println!(
        "vmtest discard: seed's verbatim IDE form (QEMU default discard=ignore) reclaimed {} KiB",
        f.stored.saturating_sub(t.stored) >> 10
    );
    assert!(
        c.pattern_matches("data/squeeze", pattern_byte(0), SCRATCH_MIB * mib, mib),
        "with discard=ignore the scratch data must still be there"
    );

    // 2. The same with discard=unmap: TRIMs reach the cluster.
    c.run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            golden,
            "rbd:data/squeeze2",
        ],
    );
    let (f, t) = fill_and_trim(
        &c,
        "squeeze2",
        "sda",
        &[
            "-drive",
            "format=raw,file=rbd:data/squeeze2,id=drive1,if=none,discard=unmap",
            "-device",
            "driver=ide-hd,drive=drive1,discard_granularity=512",
        ],
    );
    assert!(
        f.stored >= t.stored + 64 * mib,
        "IDE discard=unmap: pool stored {} -> {} bytes, expected >= 64 MiB reclaimed",
        f.stored,
        t.stored
    );
    assert!(
        f.du_used >= t.du_used + 32 * mib,
        "IDE discard=unmap: rbd du used {} -> {}: the 8 whole scratch objects were not removed",
        f.du_used,
        t.du_used
    );
    assert!(
        c.pattern_matches("data/squeeze2", 0, SCRATCH_MIB * mib, 32 * mib),
        "discarded whole objects must read as zeros"
    );
    check_sub_object_discard(&c, "data/squeeze2");

    // 3. virtio-blk with discard=unmap on a clone of golden@base.
    c.run("rbd", &["snap", "create", "data/squeeze@unused"]); // unrelated snapshot, harmless
    c.golden_clone(&guest, "vd");
    let (f, t) = fill_and_trim(
        &c,
        "vd",
        "vda",
        &[
            "-drive",
            "format=raw,file=rbd:data/vd,if=virtio,discard=unmap",
        ],
    );
    assert!(
        f.stored >= t.stored + 64 * mib,
        "virtio discard=unmap on a clone: pool stored {} -> {} bytes, expected >= 64 MiB reclaimed",
        f.stored,
        t.stored
    );
    assert!(
        c.pattern_matches("data/vd", 0, SCRATCH_MIB * mib, 32 * mib),
        "clone: discarded scratch objects must read as zeros"
    );
    check_sub_object_discard(&c, "data/vd");
    // The guest deleted /golden/data.bin (parent data) and trimmed it: the
    // clone must now read zeros there, not the parent's bytes.
    let (blk, len) =
        debugfs_extent(&guest.golden, "/golden/data.bin").expect("data.bin extent in golden.img");
    let start = (blk * 4096).div_ceil(65536) * 65536;
    let end = ((blk + len) * 4096) / 65536 * 65536;
    assert!(end > start + mib, "data.bin extent too small: {blk}+{len}");
    assert!(
        c.pattern_matches("data/vd", 0, start, end - start),
        "clone: trimmed parent data at [{start}, {end}) still visible through the clone"
    );
    assert!(
        !c.pattern_matches("data/golden@base", 0, start, mib),
        "golden@base lost its data.bin bytes"
    );
    let out = c.run("qemu-img", &["compare", golden, "rbd:data/golden@base"]);
    assert!(out.contains("identical"), "golden@base changed: {out}");
}
