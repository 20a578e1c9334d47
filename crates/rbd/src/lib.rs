//! `quarry-rbd`: the image engine. librbd semantics — images, snapshots,
//! clones, flatten, diffs, metadata — on top of the object-layer trait
//! [`quarry_rados::Rados`] only.
//!
//! Architecture invariant: this crate knows nothing of disks, sockets or
//! the C ABI. Every byte it stores goes through `Rados::operate` as a
//! compound op on a named object; everything it reads from the object layer
//! is treated as untrusted (decoded with checks, never `unwrap`ped).
//!
//! # Entry points
//! * [`Rbd`]: pool-level operations — create, list, remove, rename, clone,
//!   children, namespaces, and [`Rbd::open`] which returns an [`Image`].
//! * [`Image`]: an open handle, `Send + Sync`, meant to be shared (e.g. in
//!   an `Arc`) by many concurrent tasks: I/O, resize, snapshots, flatten,
//!   diff, metadata.
//!
//! # Object layout (format-2-like)
//! * `rbd_directory` (per namespace): omap `name_<name>` → id, `id_<id>` → name.
//! * `rbd_header.<id>`: omap with size, order, features, flags, snapshots,
//!   parent, metadata — see the `header` module. Updated only by
//!   compare-and-swap on the object version.
//! * `rbd_data.<id>.<objno %016x>`: sparse data objects.
//! * `rbd_object_map.<id>` (+ `.<snapid %016x>` per snapshot): one state
//!   byte per object (see [`OBJECT_EXISTS`] …).
//! * `rbd_children` (in the parent's pool/namespace): omap
//!   `child_<parent id>_<snap %016x>_<child pool>_<child id>_<child ns>` → JSON.
//! * `rbd_namespace` (default namespace): omap `name_<ns>` for each namespace.
//!
//! # Consistency between clients
//! A handle caches the header (size, snapshots, parent) and the object map.
//! Every header-changing operation (snapshot create/remove/rename/protect,
//! resize, rollback, flatten, set_snap, update_features) re-reads the
//! header and changes it by compare-and-swap on the object version, then
//! installs the result; [`Image::refresh`] (what `rbd_invalidate_cache`
//! maps to) re-reads header and object map; [`Image::snap_list`] and
//! friends read the header fresh.
//!
//! Every header change then notifies the image's other open handles
//! (`header_update` on the header object, as librbd's header-update
//! notification) and waits (bounded) until each has flushed what it
//! accepted, drained its I/O and re-read header and object map: a snapshot
//! or resize made through one handle is in every other handle's snap
//! context and size when the call returns, so a snapshot of an image a VM
//! writes is crash-consistent. Remaining consequences: (1) with
//! exclusive-lock, a handle trusts "absent" in its cached object map only
//! while it owns the lock (taking the lock re-reads header and map);
//! without the feature it may answer "absent object → zeros / parent" for
//! objects another client created until it refreshes; (2) a handle that
//! misses the notification's deadline (stopped process, cut link) catches
//! up when it reads it. What is guaranteed regardless: the stored
//! object map never says "absent" for an existing object (a write whose
//! cached state says "exists" is guarded with `AssertExists`, and an object
//! removed meanwhile gets its map entry stored again before being
//! recreated), and header updates never interleave.
//!
//! # Concurrency inside one handle
//! Requests are split per object and the pieces run concurrently (at most
//! 64 in flight per request). The data path clones an `Arc` of the current
//! view (no lock held across awaits) and takes an async `gate` RwLock
//! shared; snapshot create/remove, rollback, resize, refresh and set_snap
//! take it exclusively to quiesce this handle's I/O, as librbd does.
//! Object-map state transitions are serialized per object by 256 striped
//! async locks; steady-state writes to an object already marked `EXISTS`
//! cost exactly one object-layer op.

mod advisory;
mod copy;
mod diff;
mod error;
mod group;
mod header;
mod history;
mod image;
mod io;
mod layout;
mod lock;
mod migration;
mod objmap;
mod poolstats;
mod proxy;
mod rbd;
mod sparsify;
mod trash;

pub use advisory::{ImageLocker, ImageLocks};
pub use copy::CopyOptions;
pub use error::{RbdError, Result};
pub use group::{
    GroupImageInfo, GroupImageState, GroupRef, GroupSnapInfo, GroupSnapNamespace, GroupSnapState,
};
pub use image::{Image, ImageCloser, TimestampIntervals};
pub use layout::{
    validate_image_name, validate_namespace_name, validate_snap_name, DEFAULT_ORDER,
    MAX_IMAGE_NAME_LEN, MAX_IMAGE_SIZE, MAX_NAMESPACE_LEN, MAX_OBJECT_MAP_OBJECTS, MAX_ORDER,
    MAX_SNAP_NAME_LEN, MIN_ORDER,
};
pub use lock::{FencePolicy, LockOwner, PreReleaseHook};
pub use migration::{MigrationEnd, MigrationRole, MigrationSpec, MigrationState};
pub use objmap::{OBJECT_EXISTS, OBJECT_EXISTS_CLEAN, OBJECT_NONEXISTENT, OBJECT_PENDING};
pub use poolstats::{ImageTotals, PoolStats};
pub use rbd::Rbd;
pub use trash::{PurgeReport, TrashEntry, TrashSource, TrashState};

use quarry_rados::{PoolId, SnapId};

/// Feature bit: clones (`RBD_FEATURE_LAYERING`).
pub const FEATURE_LAYERING: u64 = 1 << 0;
/// Feature bit: fancy striping (`RBD_FEATURE_STRIPINGV2`); accepted only with default striping.
pub const FEATURE_STRIPINGV2: u64 = 1 << 1;
/// Feature bit: exclusive lock (`RBD_FEATURE_EXCLUSIVE_LOCK`).
pub const FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
/// Feature bit: object map (`RBD_FEATURE_OBJECT_MAP`); requires exclusive-lock.
pub const FEATURE_OBJECT_MAP: u64 = 1 << 3;
/// Feature bit: fast diff (`RBD_FEATURE_FAST_DIFF`); requires object-map.
pub const FEATURE_FAST_DIFF: u64 = 1 << 4;
/// Feature bit: deep flatten (`RBD_FEATURE_DEEP_FLATTEN`).
pub const FEATURE_DEEP_FLATTEN: u64 = 1 << 5;
/// Feature bit: journaling (`RBD_FEATURE_JOURNALING`); not supported.
pub const FEATURE_JOURNALING: u64 = 1 << 6;
/// Feature bit: separate data pool (`RBD_FEATURE_DATA_POOL`); not supported.
pub const FEATURE_DATA_POOL: u64 = 1 << 7;
/// Default features: layering, exclusive-lock, object-map, fast-diff, deep-flatten (61).
pub const FEATURES_DEFAULT: u64 = FEATURE_LAYERING
    | FEATURE_EXCLUSIVE_LOCK
    | FEATURE_OBJECT_MAP
    | FEATURE_FAST_DIFF
    | FEATURE_DEEP_FLATTEN;
/// Every feature bit a caller may ask for at create time.
pub const FEATURES_ALL: u64 =
    FEATURES_DEFAULT | FEATURE_STRIPINGV2 | FEATURE_JOURNALING | FEATURE_DATA_POOL;

/// Image flag: the object map is not trustworthy (`RBD_FLAG_OBJECT_MAP_INVALID`).
pub const FLAG_OBJECT_MAP_INVALID: u64 = 1 << 0;
/// Image flag: fast-diff is not trustworthy (`RBD_FLAG_FAST_DIFF_INVALID`).
pub const FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;

/// `write_zeroes` flag: write real zeros, objects end up allocated.
pub const WRITE_ZEROES_FLAG_THICK_PROVISION: u32 = 1 << 0;

/// A pool, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolRef {
    /// By pool id.
    Id(PoolId),
    /// By pool name.
    Name(String),
}

impl From<PoolId> for PoolRef {
    fn from(id: PoolId) -> Self {
        PoolRef::Id(id)
    }
}

impl From<&str> for PoolRef {
    fn from(name: &str) -> Self {
        PoolRef::Name(name.to_string())
    }
}

impl From<String> for PoolRef {
    fn from(name: String) -> Self {
        PoolRef::Name(name)
    }
}

/// A resolved pool and namespace, like a librados `rados_ioctx_t`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IoCtx {
    /// Pool id.
    pub pool_id: PoolId,
    /// Pool name (for messages and parent info).
    pub pool_name: String,
    /// Namespace ("" = default).
    pub namespace: String,
}

impl IoCtx {
    /// Build from known values (no check that the pool or namespace exists).
    pub fn new(
        pool_id: PoolId,
        pool_name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        IoCtx {
            pool_id,
            pool_name: pool_name.into(),
            namespace: namespace.into(),
        }
    }

    /// `pool/[ns/]name` for messages.
    pub fn spec(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.pool_name, name)
        } else {
            format!("{}/{}/{}", self.pool_name, self.namespace, name)
        }
    }

    pub(crate) fn oid(&self, name: impl Into<String>) -> quarry_rados::ObjectId {
        quarry_rados::ObjectId::with_namespace(self.pool_id, self.namespace.clone(), name)
    }
}

/// Options of [`Rbd::create`] and [`Rbd::clone`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Object size is `2^order`; 0 = default (22, or the parent's order for clones).
    pub order: u8,
    /// Feature bits; `None` = [`FEATURES_DEFAULT`].
    pub features: Option<u64>,
}

/// A snapshot, by name or by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapSpec {
    /// By name.
    Name(String),
    /// By snap id.
    Id(SnapId),
}

/// Options of [`Rbd::open`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Refuse every mutation with `EROFS`.
    pub read_only: bool,
    /// Open at this snapshot (always read-only) instead of the head.
    pub snap: Option<SnapSpec>,
}

/// One image of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
}

/// `rbd_stat` plus what `rbd info` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes (of the open snapshot, if any).
    pub size: u64,
    /// Object size in bytes.
    pub obj_size: u64,
    /// `ceil(size / obj_size)`.
    pub num_objs: u64,
    /// Object size order.
    pub order: u8,
    /// `rbd_data.<id>`.
    pub block_name_prefix: String,
    /// Parent pool id, -1 if none.
    pub parent_pool: i64,
    /// Parent image name, "" if none.
    pub parent_name: String,
    /// Image id.
    pub id: String,
    /// Image name (as opened).
    pub name: String,
    /// Feature bits.
    pub features: u64,
    /// Flag bits ([`FLAG_OBJECT_MAP_INVALID`], [`FLAG_FAST_DIFF_INVALID`]).
    pub flags: u64,
    /// Number of snapshots.
    pub snapshot_count: u64,
    /// Creation time, ns since the Unix epoch.
    pub create_timestamp_ns: u64,
    /// Last read recorded (at most a minute late per client), ns.
    pub access_timestamp_ns: u64,
    /// Last write recorded (at most a minute late per client), ns.
    pub modify_timestamp_ns: u64,
}

/// One snapshot of [`Image::snap_list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snap id.
    pub id: SnapId,
    /// Name.
    pub name: String,
    /// Image size when taken.
    pub size: u64,
    /// Creation time, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Whether protected (cloneable, not removable).
    pub protected: bool,
    /// The group snapshot it belongs to (librbd's group namespace); `None`
    /// for a user snapshot.
    pub group: Option<GroupSnapNamespace>,
}

/// Where a clone's data comes from ([`Image::parent_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// Parent pool id.
    pub pool_id: PoolId,
    /// Parent pool name.
    pub pool_name: String,
    /// Parent namespace.
    pub namespace: String,
    /// Parent image id.
    pub image_id: String,
    /// Parent image name ("" if it cannot be resolved).
    pub image_name: String,
    /// Parent snapshot id.
    pub snap_id: SnapId,
    /// Parent snapshot name ("" if it cannot be resolved).
    pub snap_name: String,
    /// Bytes of this image that read through to the parent.
    pub overlap: u64,
    /// The parent image is in the trash (`rbd trash mv`).
    pub in_trash: bool,
}

/// A clone of a snapshot ([`Rbd::children`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Child pool id.
    pub pool_id: PoolId,
    /// Child pool name.
    pub pool_name: String,
    /// Child namespace.
    pub namespace: String,
    /// Child image id.
    pub image_id: String,
    /// Child image name (the one it had, if it is in the trash).
    pub image_name: String,
    /// The child is in the trash (`rbd trash mv`).
    pub in_trash: bool,
}

/// One extent reported by [`Image::diff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffExtent {
    /// Image offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// True if the extent holds data now; false if it was removed/zeroed.
    pub exists: bool,
}

/// Options of [`Image::diff`] (`rbd_diff_iterate2`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Report changes since this snapshot; `None` = since image creation.
    pub from_snap: Option<String>,
    /// With `from_snap == None`, also report the parent's data within the overlap.
    pub include_parent: bool,
    /// Object granularity from the object maps (fast-diff) instead of exact extents.
    pub whole_object: bool,
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        // The C ABI shares one Image between QEMU's submitting threads and
        // the runtime's workers.
        send_sync::<Image>();
        send_sync::<Rbd>();
        send_sync::<RbdError>();
    }
}
