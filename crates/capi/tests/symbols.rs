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

/// python3-rbd and python3-rados imports (RTLD_NOW: all must exist; the
/// unimplemented ones refuse with -EOPNOTSUPP, see src/unsupported.rs).
const PYTHON: &str =
    "rbd_aio_close rbd_aio_create_completion rbd_aio_discard rbd_aio_flush rbd_aio_get_return_value
rbd_aio_is_complete rbd_aio_mirror_image_create_snapshot rbd_aio_mirror_image_get_info
rbd_aio_mirror_image_get_mode rbd_aio_open rbd_aio_open_by_id rbd_aio_open_by_id_read_only
rbd_aio_open_read_only rbd_aio_read2 rbd_aio_release rbd_aio_wait_for_complete rbd_aio_write2
rbd_aio_write_zeroes rbd_break_lock rbd_clone3 rbd_close rbd_config_image_list
rbd_config_image_list_cleanup rbd_config_pool_list rbd_config_pool_list_cleanup rbd_copy3
rbd_create rbd_create4 rbd_deep_copy rbd_diff_iterate2 rbd_discard rbd_encryption_format
rbd_encryption_load rbd_features_from_string rbd_features_to_string rbd_flatten_with_progress
rbd_flush rbd_get_access_timestamp rbd_get_block_name_prefix rbd_get_create_timestamp
rbd_get_data_pool_id rbd_get_features rbd_get_flags rbd_get_group rbd_get_id
rbd_get_migration_source_spec rbd_get_modify_timestamp rbd_get_name rbd_get_old_format
rbd_get_op_features rbd_get_overlap rbd_get_parent rbd_get_size rbd_get_stripe_count
rbd_get_stripe_unit rbd_group_create rbd_group_image_add rbd_group_image_list
rbd_group_image_list_cleanup rbd_group_image_remove rbd_group_info_cleanup rbd_group_list
rbd_group_remove rbd_group_rename rbd_group_snap_create2 rbd_group_snap_list
rbd_group_snap_list_cleanup rbd_group_snap_remove rbd_group_snap_rename rbd_group_snap_rollback
rbd_image_options_create rbd_image_options_destroy rbd_image_options_set_string
rbd_image_options_set_uint64 rbd_image_spec_list_cleanup rbd_invalidate_cache
rbd_is_exclusive_lock_owner rbd_linked_image_spec_cleanup rbd_linked_image_spec_list_cleanup
rbd_list rbd_list2 rbd_list_children3 rbd_list_descendants rbd_list_lockers rbd_lock_acquire
rbd_lock_break rbd_lock_exclusive rbd_lock_get_owners rbd_lock_get_owners_cleanup
rbd_lock_release rbd_lock_shared rbd_metadata_get rbd_metadata_list rbd_metadata_remove
rbd_metadata_set rbd_migration_abort_with_progress rbd_migration_commit_with_progress
rbd_migration_execute_with_progress rbd_migration_prepare rbd_migration_prepare_import
rbd_migration_status rbd_migration_status_cleanup rbd_mirror_image_create_snapshot2
rbd_mirror_image_demote rbd_mirror_image_disable rbd_mirror_image_enable2
rbd_mirror_image_get_global_status rbd_mirror_image_get_info rbd_mirror_image_get_info_cleanup
rbd_mirror_image_get_instance_id rbd_mirror_image_get_mode
rbd_mirror_image_global_status_cleanup rbd_mirror_image_global_status_list
rbd_mirror_image_global_status_list_cleanup rbd_mirror_image_info_list
rbd_mirror_image_info_list_cleanup rbd_mirror_image_instance_id_list
rbd_mirror_image_instance_id_list_cleanup rbd_mirror_image_promote rbd_mirror_image_resync
rbd_mirror_image_status_summary rbd_mirror_mode_get rbd_mirror_mode_set
rbd_mirror_peer_bootstrap_create rbd_mirror_peer_bootstrap_import rbd_mirror_peer_site_add
rbd_mirror_peer_site_get_attributes rbd_mirror_peer_site_list rbd_mirror_peer_site_list_cleanup
rbd_mirror_peer_site_remove rbd_mirror_peer_site_set_attributes
rbd_mirror_peer_site_set_client_name rbd_mirror_peer_site_set_name rbd_mirror_site_name_get
rbd_mirror_site_name_set rbd_mirror_uuid_get rbd_namespace_create rbd_namespace_exists
rbd_namespace_list rbd_namespace_remove rbd_open rbd_open_by_id rbd_open_by_id_read_only
rbd_open_read_only rbd_pool_init rbd_pool_metadata_get rbd_pool_metadata_list
rbd_pool_metadata_remove rbd_pool_metadata_set rbd_pool_stats_create rbd_pool_stats_destroy
rbd_pool_stats_get rbd_pool_stats_option_add_uint64 rbd_read2 rbd_rebuild_object_map
rbd_remove_with_progress rbd_rename rbd_resize2 rbd_snap_create2 rbd_snap_exists
rbd_snap_get_group_namespace rbd_snap_get_id rbd_snap_get_limit rbd_snap_get_mirror_namespace
rbd_snap_get_name rbd_snap_get_namespace_type rbd_snap_get_timestamp
rbd_snap_get_trash_namespace rbd_snap_group_namespace_cleanup rbd_snap_is_protected
rbd_snap_list rbd_snap_list_end rbd_snap_mirror_namespace_cleanup rbd_snap_protect
rbd_snap_remove rbd_snap_remove2 rbd_snap_remove_by_id rbd_snap_rename rbd_snap_rollback
rbd_snap_set rbd_snap_set_by_id rbd_snap_set_limit rbd_snap_spec_cleanup rbd_snap_unprotect
rbd_sparsify rbd_stat rbd_trash_get rbd_trash_get_cleanup rbd_trash_list rbd_trash_list_cleanup
rbd_trash_move rbd_trash_purge rbd_trash_remove_with_progress rbd_trash_restore rbd_unlock
rbd_update_features rbd_version rbd_watchers_list rbd_watchers_list_cleanup rbd_write2
rbd_write_zeroes rados_aio_append rados_aio_cmpext rados_aio_create_completion2 rados_aio_exec
rados_aio_flush rados_aio_get_return_value rados_aio_is_complete rados_aio_notify
rados_aio_read rados_aio_read_op_operate rados_aio_release rados_aio_remove rados_aio_rmxattr
rados_aio_setxattr rados_aio_stat rados_aio_wait_for_complete
rados_aio_wait_for_complete_and_cb rados_aio_write rados_aio_write_full
rados_aio_write_op_operate rados_aio_writesame rados_append rados_application_enable
rados_application_list rados_application_metadata_get rados_application_metadata_list
rados_application_metadata_remove rados_application_metadata_set rados_blocklist_add
rados_buffer_free rados_cluster_fsid rados_cluster_stat rados_cmpext rados_conf_get
rados_conf_parse_argv_remainder rados_conf_parse_env rados_conf_read_file rados_conf_set
rados_connect rados_create2 rados_create_read_op rados_create_with_context
rados_create_write_op rados_decode_notify_response rados_exec rados_free_notify_response
rados_get_instance_id rados_get_last_version rados_getaddrs rados_getxattr rados_getxattrs
rados_getxattrs_end rados_getxattrs_next rados_inconsistent_pg_list rados_ioctx_create
rados_ioctx_create2 rados_ioctx_destroy rados_ioctx_get_cluster rados_ioctx_get_id
rados_ioctx_get_pool_name rados_ioctx_locator_set_key rados_ioctx_pool_required_alignment2
rados_ioctx_pool_requires_alignment2 rados_ioctx_pool_stat rados_ioctx_selfmanaged_snap_create
rados_ioctx_selfmanaged_snap_remove rados_ioctx_selfmanaged_snap_rollback
rados_ioctx_selfmanaged_snap_set_write_ctx rados_ioctx_set_namespace rados_ioctx_snap_create
rados_ioctx_snap_get_name rados_ioctx_snap_get_stamp rados_ioctx_snap_list
rados_ioctx_snap_lookup rados_ioctx_snap_remove rados_ioctx_snap_rollback
rados_ioctx_snap_set_read rados_lock_exclusive rados_lock_shared rados_mgr_command
rados_mgr_command_target rados_mon_command rados_mon_command_target rados_monitor_log
rados_monitor_log2 rados_nobjects_list_close rados_nobjects_list_next rados_nobjects_list_open
rados_notify2 rados_notify_ack rados_omap_get_end rados_omap_get_next rados_osd_command
rados_pg_command rados_ping_monitor rados_pool_create rados_pool_create_with_all
rados_pool_create_with_auid rados_pool_create_with_crush_rule rados_pool_delete
rados_pool_get_base_tier rados_pool_list rados_pool_lookup rados_pool_reverse_lookup rados_read
rados_read_op_cmpext rados_read_op_omap_get_keys2 rados_read_op_omap_get_vals2
rados_read_op_omap_get_vals_by_keys rados_read_op_operate rados_read_op_set_flags
rados_release_read_op rados_release_write_op rados_remove rados_rmxattr rados_service_register
rados_service_update_status rados_set_pool_full_try rados_setxattr rados_shutdown rados_stat
rados_trunc rados_unlock rados_unset_pool_full_try rados_unwatch2 rados_version
rados_wait_for_latest_osdmap rados_watch3 rados_watch_check rados_watch_flush rados_write
rados_write_full rados_write_op_append rados_write_op_assert_version rados_write_op_cmpext
rados_write_op_create rados_write_op_exec rados_write_op_omap_clear rados_write_op_omap_cmp
rados_write_op_omap_rm_keys rados_write_op_omap_rm_range2 rados_write_op_omap_set
rados_write_op_operate rados_write_op_remove rados_write_op_rmxattr rados_write_op_set_flags
rados_write_op_setxattr rados_write_op_truncate rados_write_op_write rados_write_op_write_full
rados_write_op_writesame rados_write_op_zero rados_writesame";

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
    let missing: Vec<&str> = [FIO_QEMU, LIBVIRT, EXTRAS, PYTHON]
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter(|s| !have.iter().any(|h| h == s))
        .collect();
    assert!(missing.is_empty(), "missing exports: {missing:?}");
    assert_eq!(FIO_QEMU.split_whitespace().count(), 55);
    assert_eq!(PYTHON.split_whitespace().count(), 201 + 153);
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
