//! The options Quarry acts on. Defaults follow Ceph 16.2.15 unless a
//! comment says otherwise, so that an existing ceph.conf means the same.
//!
//! Keep this table sorted by name: lookups binary-search it (a unit test
//! checks the order).

use super::OptType::*;
use super::OptionDef;
use super::Scope::{self, *};

/// Shorthand for the table below.
#[allow(clippy::too_many_arguments)]
const fn q(
    name: &'static str,
    ty: super::OptType,
    default: &'static str,
    scope: Scope,
    runtime: bool,
    description: &'static str,
) -> OptionDef {
    OptionDef {
        name,
        ty,
        default,
        description,
        scope,
        runtime,
        enum_values: &[],
        min: None,
        max: None,
        used: true,
    }
}

/// `q` with an enumeration of accepted values.
const fn qe(
    name: &'static str,
    default: &'static str,
    scope: Scope,
    runtime: bool,
    enum_values: &'static [&'static str],
    description: &'static str,
) -> OptionDef {
    OptionDef {
        enum_values,
        ..q(name, Str, default, scope, runtime, description)
    }
}

/// `q` with numeric bounds.
const fn qb(
    name: &'static str,
    ty: super::OptType,
    default: &'static str,
    scope: Scope,
    min: Option<f64>,
    max: Option<f64>,
    description: &'static str,
) -> OptionDef {
    OptionDef {
        min,
        max,
        ..q(name, ty, default, scope, true, description)
    }
}

/// The options Quarry implements, sorted by name.
pub static QUARRY_OPTIONS: &[OptionDef] = &[
    q("admin_socket", Str, "", Global, false,
      "Path of the daemon's or client's admin socket; empty disables it"),
    q("auth_client_required", Str, "cephx, none", Global, false,
      "Auth methods a client accepts from the cluster, in order of preference"),
    q("auth_cluster_required", Str, "cephx", Global, false,
      "Auth method daemons require of each other"),
    q("auth_service_required", Str, "cephx", Global, false,
      "Auth method daemons require of clients"),
    q("auth_supported", Str, "", Global, false,
      "Deprecated alias setting all three auth_*_required lists at once"),
    q("client_mount_timeout", Secs, "300", Client, true,
      "How long connecting to the monitors may take before giving up (ETIMEDOUT)"),
    q("fsid", Uuid, "00000000-0000-0000-0000-000000000000", Global, false,
      "Cluster id; a client refuses monitors of another cluster"),
    q("key", Str, "", Client, false,
      "Secret key (base64) of this entity; overrides the keyring"),
    q("keyfile", Str, "", Client, false,
      "File holding only the base64 secret key of this entity"),
    // Ceph's default ends in a stray ','; it is dropped here (same meaning).
    q("keyring", Str,
      "/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin",
      Client, false,
      "Keyring files to search, first readable one wins (',' or ';' separated)"),
    q("log_file", Str, "", Global, false,
      "Log file path; empty logs nowhere but stderr (if enabled)"),
    q("log_to_file", Bool, "true", Global, true,
      "Whether to write the log to log_file"),
    q("log_to_stderr", Bool, "true", Global, true,
      "Whether to copy log messages to stderr"),
    // Not a Ceph 16 option; Quarry reads it from [mon.X] sections.
    q("mon_addr", Str, "", Mon, false,
      "Address a monitor binds to (in its [mon.<id>] section)"),
    q("mon_allow_pool_delete", Bool, "false", Mon, true,
      "Whether pools may be deleted"),
    // Quarry's defaults are shorter than Ceph's (10 and 30 s): a daemon or
    // client behind a cut link then leaves its silent monitor within seconds.
    qb("mon_client_ping_interval", Float, "2", Global, Some(0.0), None,
       "Seconds between keepalive pings on the monitor session; 0 disables them"),
    qb("mon_client_ping_timeout", Float, "5", Global, Some(0.0), None,
       "Seconds a monitor may take to answer a ping before the session hunts for another monitor"),
    q("mon_data", Str, "/var/lib/ceph/mon/$cluster-$id", Mon, false,
      "Directory holding a monitor's state"),
    q("mon_host", Str, "", Global, false,
      "Monitor addresses: '1.2.3.4:6789', '[v2:a:3300,v1:a:6789]', lists with ',' ';' or spaces"),
    q("mon_osd_down_out_interval", Int, "600", Mon, true,
      "Seconds a down OSD stays 'in' before its data is re-replicated elsewhere"),
    q("ms_bind_port_max", Int, "7300", Global, true,
      "Highest port a daemon binds to"),
    q("ms_bind_port_min", Int, "6800", Global, true,
      "Lowest port a daemon binds to"),
    q("ms_client_mode", ConMode, "crc secure", Global, false,
      "Connection modes a client offers OSDs (crc; secure only alongside crc: not implemented)"),
    q("ms_cluster_mode", ConMode, "crc secure", Global, false,
      "Connection modes between OSDs (crc; secure only alongside crc: not implemented)"),
    q("ms_mon_client_mode", ConMode, "secure crc", Global, false,
      "Connection modes a client or daemon offers monitors (crc; secure only alongside crc: not implemented)"),
    q("ms_mon_cluster_mode", ConMode, "secure crc", Global, false,
      "Connection modes between monitors (crc; secure only alongside crc: not implemented)"),
    q("ms_mon_service_mode", ConMode, "secure crc", Global, false,
      "Connection modes a monitor accepts (crc; secure only alongside crc: not implemented)"),
    q("ms_service_mode", ConMode, "crc secure", Global, false,
      "Connection modes an OSD accepts from clients (crc; secure only alongside crc: not implemented)"),
    q("osd_data", Str, "/var/lib/ceph/osd/$cluster-$id", Osd, false,
      "Directory holding an OSD's object store"),
    qb("osd_heartbeat_grace", Int, "20", Osd, None, None,
       "Seconds without a heartbeat before an OSD is reported down"),
    qb("osd_heartbeat_interval", Int, "6", Osd, Some(1.0), Some(60.0),
       "Seconds between heartbeats to peer OSDs"),
    qb("osd_pool_default_min_size", Uint, "0", Mon, Some(0.0), Some(255.0),
       "Replicas that must be up for I/O in a new pool; 0 = size - size/2"),
    q("osd_pool_default_pg_num", Uint, "32", Mon, true,
      "Placement groups of a new pool"),
    qb("osd_pool_default_size", Uint, "3", Mon, Some(0.0), Some(10.0),
       "Replicas of each object in a new pool"),
    q("pid_file", Str, "", Global, false,
      "File a daemon writes its pid to"),
    q("public_addr", Addr, "-", Global, false,
      "Address a daemon advertises to clients; '-' picks one"),
    q("public_network", Str, "", Global, false,
      "Network (CIDR) a daemon picks its public address from"),
    // Not a Ceph option: when set, clients use an in-process store in this
    // directory instead of connecting to monitors (tests, single-host use).
    q("quarry_embedded_dir", Str, "", Client, false,
      "Directory of a local embedded object store used instead of a cluster; empty = connect to mon_host"),
    qb("rados_mon_op_timeout", Secs, "0", Client, Some(0.0), None,
       "Seconds a monitor request may take before ETIMEDOUT; 0 = wait forever"),
    qb("rados_osd_op_timeout", Secs, "0", Client, Some(0.0), None,
       "Seconds an object request may take before ETIMEDOUT; 0 = wait forever"),
    q("rbd_cache", Bool, "true", Client, true,
      "Enable the client-side image cache (QEMU sets it from its cache= mode)"),
    q("rbd_cache_block_writes_upfront", Bool, "false", Client, true,
      "Block writes until the cache has room instead of returning early"),
    q("rbd_cache_max_dirty", Size, "25165824", Client, true,
      "Most dirty bytes the cache holds; 0 makes it write-through"),
    q("rbd_cache_max_dirty_age", Float, "1", Client, true,
      "Seconds dirty data may wait before being written back"),
    q("rbd_cache_max_dirty_object", Uint, "0", Client, true,
      "Most dirty objects in the cache; 0 = derived from the cache size"),
    qe("rbd_cache_policy", "writearound", Client, false,
       &["writethrough", "writeback", "writearound"],
       "Cache mode when rbd_cache is on"),
    q("rbd_cache_size", Size, "33554432", Client, true,
      "Size of the client-side image cache in bytes"),
    q("rbd_cache_target_dirty", Size, "16777216", Client, true,
      "Dirty bytes at which the cache starts writing back"),
    q("rbd_cache_writethrough_until_flush", Bool, "true", Client, true,
      "Stay write-through until the guest sends its first flush"),
    q("rbd_clone_copy_on_read", Bool, "false", Client, true,
      "Copy parent data into a clone when it is read, not only when written"),
    qb("rbd_concurrent_management_ops", Uint, "10", Client, Some(1.0), None,
       "Object operations in flight during flatten, copy, remove, resize"),
    qe("rbd_default_clone_format", "auto", Client, true,
       &["1", "2", "auto"],
       "Clone format: 1 needs protected snapshots, 2 does not"),
    // Ceph stores the default as names; the canonical form is the number.
    q("rbd_default_features", Features, "61", Client, true,
      "Features of new images: a number or names (layering,exclusive-lock,...)"),
    q("rbd_default_format", Uint, "2", Client, true,
      "Format of new images (only 2 is supported)"),
    q("rbd_default_order", Uint, "22", Client, true,
      "Object size of new images as a power of two (22 = 4 MiB; valid 12..=25)"),
    q("rbd_default_pool", Str, "rbd", Client, false,
      "Pool used when an image spec names none"),
    q("rbd_default_stripe_count", Uint, "0", Client, true,
      "Stripe count of new images; 0 = 1"),
    q("rbd_default_stripe_unit", Size, "0", Client, true,
      "Stripe unit of new images; 0 = the object size"),
    q("rbd_discard_granularity_bytes", Uint, "65536", Client, true,
      "Discards are shrunk inward to multiples of this many bytes"),
    q("rbd_non_blocking_aio", Bool, "true", Client, true,
      "Never block the caller of an rbd_aio_* function"),
    q("rbd_op_threads", Uint, "1", Client, true,
      "Threads that complete image operations and run callbacks"),
    qe("rbd_read_from_replica_policy", "default", Client, true,
       &["default", "balance", "localize"],
       "Which replica serves reads: the primary, any, or the nearest"),
    q("rbd_readahead_max_bytes", Size, "524288", Client, true,
      "Most bytes read ahead on sequential reads; 0 disables read-ahead"),
    q("rbd_skip_partial_discard", Bool, "true", Client, true,
      "Ignore the parts of a discard that do not cover whole granules"),
    q("rbd_sparse_read_threshold_bytes", Size, "65536", Client, true,
      "Reads at least this large ask for the object's extent map first"),
    q("run_dir", Str, "/var/run/ceph", Global, false,
      "Directory for pid files and admin sockets"),
];
