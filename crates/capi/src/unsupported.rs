//! Exports that Debian's python3-rbd / python3-rados import but Quarry does
//! not implement. Python loads its extension modules with RTLD_NOW, so every
//! imported symbol must exist for `import rbd` / `import rados` to work; each
//! of these refuses deliberately with `-EOPNOTSUPP` ("Operation not
//! supported"), `NULL`, 0 or nothing, as its return type allows. None of
//! them pretends to succeed. Generated from the header prototypes; the
//! stubs take no parameters (the System V x86_64 ABI lets a caller pass
//! arguments a callee ignores).

use std::ffi::c_int;

use crate::util::NEG_ENOTSUP;

macro_rules! unsupported_int {
    ($($name:ident),* $(,)?) => {$(
        /// Not implemented in Quarry: returns -EOPNOTSUPP.
        #[no_mangle]
        pub extern "C" fn $name() -> c_int {
            NEG_ENOTSUP
        }
    )*};
}

macro_rules! unsupported_void {
    ($($name:ident),* $(,)?) => {$(
        /// Not implemented in Quarry: does nothing (nothing was allocated).
        #[no_mangle]
        pub extern "C" fn $name() {}
    )*};
}

unsupported_int!(
    rados_aio_exec,
    rados_conf_parse_argv_remainder,
    rados_create_with_context,
    rados_exec,
    rados_getaddrs,
    rados_inconsistent_pg_list,
    rados_ioctx_snap_create,
    rados_ioctx_snap_get_name,
    rados_ioctx_snap_get_stamp,
    rados_ioctx_snap_list,
    rados_ioctx_snap_lookup,
    rados_ioctx_snap_remove,
    rados_ioctx_snap_rollback,
    rados_mgr_command,
    rados_mgr_command_target,
    rados_mon_command_target,
    rados_monitor_log,
    rados_monitor_log2,
    rados_osd_command,
    rados_pg_command,
    rados_ping_monitor,
    rados_pool_create_with_all,
    rados_pool_create_with_auid,
    rados_pool_create_with_crush_rule,
    rados_service_register,
    rados_service_update_status,
    rbd_aio_mirror_image_create_snapshot,
    rbd_aio_mirror_image_get_info,
    rbd_aio_mirror_image_get_mode,
    rbd_get_migration_source_spec,
    rbd_migration_prepare_import,
    rbd_mirror_image_create_snapshot2,
    rbd_mirror_image_demote,
    rbd_mirror_image_disable,
    rbd_mirror_image_enable2,
    rbd_mirror_image_get_global_status,
    rbd_mirror_image_get_info,
    rbd_mirror_image_get_instance_id,
    rbd_mirror_image_get_mode,
    rbd_mirror_image_global_status_list,
    rbd_mirror_image_info_list,
    rbd_mirror_image_instance_id_list,
    rbd_mirror_image_promote,
    rbd_mirror_image_resync,
    rbd_mirror_image_status_summary,
    rbd_mirror_mode_get,
    rbd_mirror_mode_set,
    rbd_mirror_peer_bootstrap_create,
    rbd_mirror_peer_bootstrap_import,
    rbd_mirror_peer_site_add,
    rbd_mirror_peer_site_get_attributes,
    rbd_mirror_peer_site_list,
    rbd_mirror_peer_site_remove,
    rbd_mirror_peer_site_set_attributes,
    rbd_mirror_peer_site_set_client_name,
    rbd_mirror_peer_site_set_name,
    rbd_mirror_site_name_get,
    rbd_mirror_site_name_set,
    rbd_mirror_uuid_get,
    rbd_snap_get_mirror_namespace,
    rbd_snap_get_trash_namespace,
    rbd_snap_mirror_namespace_cleanup,
);

unsupported_void!(
    rados_ioctx_locator_set_key,
    rados_set_pool_full_try,
    rados_unset_pool_full_try,
    rbd_mirror_image_get_info_cleanup,
    rbd_mirror_image_global_status_cleanup,
    rbd_mirror_image_global_status_list_cleanup,
    rbd_mirror_image_info_list_cleanup,
    rbd_mirror_image_instance_id_list_cleanup,
    rbd_mirror_peer_site_list_cleanup,
);

/// Versions are not tracked per ioctx: returns 0.
#[no_mangle]
pub extern "C" fn rados_get_last_version() -> u64 {
    0
}
