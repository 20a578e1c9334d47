//! Every symbol Debian's QEMU 7.2 (block-rbd.so), fio 3.33 and libvirt's
//! rbd storage backend import from librbd.so.1/librados.so.2 is exported
//! (they are all linked BIND_NOW: one missing symbol and they fail to load),
//! and the library has the SONAME that makes both names one mapping.

mod common;

use std::process::Command;

/// fio + QEMU (reference/abi-surface.md, "Union needed by fio + QEMU").
const FIO_QEMU: &str = "rados_aio_create_completion rados_aio_is_complete rados_aio_read rados_aio_release rados_aio_write
rados_aio_write_op_operate rados_conf_read_file rados_conf_set rados_connect rados_create rados_create2
rados_create_write_op rados_ioctx_create rados_ioctx_destroy rados_ioctx_set_namespace rados_release_write_op
rados_remove rados_shutdown rados_write rados_write_op_zero rbd_aio_create_completion rbd_aio_discard
rbd_aio_flush rbd_aio_get_arg rbd_aio_get_return_value rbd_aio_read rbd_aio_readv rbd_aio_release
rbd_aio_write rbd_aio_write_zeroes rbd_aio_writev rbd_close rbd_create rbd_diff_iterate2
rbd_encryption_format rbd_encryption_load rbd_flush rbd_get_features rbd_get_flags rbd_get_parent_info
rbd_get_size rbd_invalidate_cache rbd_namespace_exists rbd_open rbd_poll_io_events rbd_read rbd_remove
rbd_resize rbd_set_image_notification rbd_snap_create rbd_snap_list rbd_snap_list_end rbd_snap_remove
rbd_snap_rollback rbd_stat";

/// libvirt's additions.
const LIBVIRT: &str = "rados_cluster_stat rados_ioctx_pool_stat rbd_clone2 rbd_discard rbd_get_old_format rbd_get_stripe_count
rbd_get_stripe_unit rbd_image_spec_list_cleanup rbd_list2 rbd_open_read_only rbd_snap_is_protected
rbd_snap_protect rbd_snap_unprotect rbd_write";

/// Extras recommended by the ABI notes (fio without poll mode, newer QEMU).
const EXTRAS: &str = "rbd_aio_wait_for_complete rbd_aio_is_complete rbd_version rados_version rbd_write_zeroes
rbd_get_parent rbd_encryption_load2 rados_conf_get rados_conf_parse_env rados_conf_parse_argv
rados_aio_wait_for_complete rados_aio_get_return_value rbd_clone rbd_list rbd_flatten rbd_get_overlap";

fn exported() -> Vec<String> {
    let so = common::cdylib();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm (binutils) must be installed");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] == "T").then(|| f[2].to_string())
        })
        .collect()
}

#[test]
fn all_consumer_symbols_exported() {
    let have = exported();
    let missing: Vec<&str> = [FIO_QEMU, LIBVIRT, EXTRAS]
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter(|s| !have.iter().any(|h| h == s))
        .collect();
    assert!(missing.is_empty(), "missing exports: {missing:?}");
    assert_eq!(FIO_QEMU.split_whitespace().count(), 55);
}

#[test]
fn block_rbd_module_binds_now() {
    // Every rbd_/rados_ import of Debian's QEMU module and fio is exported.
    let have = exported();
    for bin in [
        "/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so",
        "/usr/bin/fio",
    ] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} missing: CI installs qemu-block-extra and fio"
        );
        let out = Command::new("nm")
            .args(["-D", "--undefined-only", bin])
            .output()
            .expect("nm");
        let text = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|s| s.starts_with("rbd_") || s.starts_with("rados_"))
            .filter(|s| !have.iter().any(|h| h == s))
            .collect();
        assert!(missing.is_empty(), "{bin} needs {missing:?}");
    }
}

#[test]
fn soname_is_librados() {
    let out = Command::new("readelf")
        .args(["-d"])
        .arg(common::cdylib())
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Library soname: [librados.so.2]"), "{text}");
}
