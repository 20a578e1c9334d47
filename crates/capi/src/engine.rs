//! What the C layer needs from the image engine, as two small traits.
//!
//! The C ABI is written against [`ImageEngine`] / [`ImageBackend`] only;
//! `crate::rbd_adapter` implements them on `quarry-rbd`. Keeping this seam
//! lets the ABI layer (handles, completions, cache, errno) be tested on its
//! own and keeps placement and object layout out of this crate.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{PoolId, Rados};

/// An error at the C boundary: the errno returned and a message for stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CError {
    /// The errno (returned negated).
    pub errno: Errno,
    /// What failed.
    pub msg: String,
}

impl CError {
    /// An error with a message.
    pub fn new(errno: Errno, msg: impl Into<String>) -> CError {
        CError {
            errno,
            msg: msg.into(),
        }
    }
}

impl From<Errno> for CError {
    fn from(errno: Errno) -> CError {
        CError {
            errno,
            msg: String::new(),
        }
    }
}

impl From<quarry_rados::RadosError> for CError {
    fn from(e: quarry_rados::RadosError) -> CError {
        CError {
            errno: e.errno,
            msg: e.context,
        }
    }
}

/// Result at the C boundary.
pub type CResult<T> = Result<T, CError>;

/// A pool + namespace, what a `rados_ioctx_t` designates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoTarget {
    /// Pool id.
    pub pool: PoolId,
    /// Pool name.
    pub pool_name: String,
    /// Namespace ("" = default).
    pub namespace: String,
}

/// Static facts about an open image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Current size in bytes (of the head or the opened snapshot).
    pub size: u64,
    /// log2 of the object size.
    pub order: u32,
    /// `rbd_data.<id>`.
    pub block_name_prefix: String,
    /// Feature bits (RBD_FEATURE_*).
    pub features: u64,
    /// Flag bits (RBD_FLAG_*).
    pub flags: u64,
    /// Stripe unit (bytes).
    pub stripe_unit: u64,
    /// Stripe count.
    pub stripe_count: u64,
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: String,
    /// When the image was created, nanoseconds since the epoch.
    pub create_timestamp_ns: u64,
    /// Last recorded read, ns since the Unix epoch.
    pub access_timestamp_ns: u64,
    /// Last recorded write, ns since the Unix epoch.
    pub modify_timestamp_ns: u64,
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot id.
    pub id: u64,
    /// Image size at the snapshot.
    pub size: u64,
    /// Snapshot name.
    pub name: String,
    /// Whether protected.
    pub protected: bool,
    /// Creation time, seconds since the epoch.
    pub timestamp: u64,
    /// The group snapshot it belongs to (group namespace), if any.
    pub group: Option<quarry_rbd::GroupSnapNamespace>,
}

/// Where a clone's data comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// Parent pool id.
    pub pool_id: PoolId,
    /// Parent pool name.
    pub pool_name: String,
    /// Parent namespace.
    pub pool_namespace: String,
    /// Parent image id.
    pub image_id: String,
    /// Parent image name.
    pub image_name: String,
    /// Parent snapshot id.
    pub snap_id: u64,
    /// Parent snapshot name.
    pub snap_name: String,
    /// Bytes of the child backed by the parent.
    pub overlap: u64,
    /// The parent image is in the trash.
    pub in_trash: bool,
}

/// One extent reported by diff iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffExtent {
    /// Image offset.
    pub off: u64,
    /// Length.
    pub len: u64,
    /// Whether data exists there (false: zeroed/removed since `fromsnap`).
    pub exists: bool,
}

/// Options for image creation.
#[derive(Clone, Debug)]
pub struct CreateOpts {
    /// Size in bytes.
    pub size: u64,
    /// Object size order (12..=25).
    pub order: u32,
    /// Feature bits.
    pub features: u64,
    /// Stripe unit (0 = object size).
    pub stripe_unit: u64,
    /// Stripe count (0 = 1).
    pub stripe_count: u64,
}

/// Pool-level image operations.
#[async_trait]
pub trait ImageEngine: Send + Sync {
    /// Create an image.
    async fn create(&self, io: &IoTarget, name: &str, opts: &CreateOpts) -> CResult<()>;
    /// Remove an image (`EBUSY` if open elsewhere, `ENOTEMPTY` with snapshots).
    async fn remove(&self, io: &IoTarget, name: &str) -> CResult<()>;
    /// Rename an image.
    async fn rename(&self, io: &IoTarget, from: &str, to: &str) -> CResult<()>;
    /// Open an image at its head or a snapshot.
    async fn open(
        &self,
        io: &IoTarget,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> CResult<Arc<dyn ImageBackend>>;
    /// Open an image by id (a trashed one too), with its name.
    async fn open_by_id(
        &self,
        io: &IoTarget,
        id: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> CResult<(Arc<dyn ImageBackend>, String)>;
    /// Image `(id, name)` pairs of a pool/namespace, sorted by name.
    async fn list(&self, io: &IoTarget) -> CResult<Vec<(String, String)>>;
    /// Clone `parent@snap` into `child` (in `cio`).
    #[allow(clippy::too_many_arguments)]
    async fn clone_image(
        &self,
        pio: &IoTarget,
        parent: &str,
        snap: &str,
        cio: &IoTarget,
        child: &str,
        opts: &CreateOpts,
    ) -> CResult<()>;
    /// Whether a namespace exists in the pool.
    async fn namespace_exists(&self, pool: PoolId, ns: &str) -> CResult<bool>;
    /// Create a namespace in `io`'s pool.
    async fn namespace_create(&self, io: &IoTarget, ns: &str) -> CResult<()>;
    /// Remove an (empty) namespace.
    async fn namespace_remove(&self, io: &IoTarget, ns: &str) -> CResult<()>;
    /// Namespaces of `io`'s pool, sorted.
    async fn namespace_list(&self, io: &IoTarget) -> CResult<Vec<String>>;
    /// A pool's RBD metadata value (`rbd_pool_metadata_get`).
    async fn pool_metadata_get(&self, io: &IoTarget, key: &str) -> CResult<String>;
    /// Set a pool's RBD metadata key.
    async fn pool_metadata_set(&self, io: &IoTarget, key: &str, value: &str) -> CResult<()>;
    /// Remove a pool's RBD metadata key.
    async fn pool_metadata_remove(&self, io: &IoTarget, key: &str) -> CResult<()>;
    /// A pool's RBD metadata, by key.
    async fn pool_metadata_list(&self, io: &IoTarget) -> CResult<Vec<(String, String)>>;
    /// Image counts, snapshots and provisioned bytes of a pool/namespace
    /// (`rbd_pool_stats_get`).
    async fn pool_stats(&self, io: &IoTarget) -> CResult<quarry_rbd::PoolStats>;
    /// Pool-level config overrides (`rbd config pool set`): `(name, value)`.
    async fn pool_config(&self, io: &IoTarget) -> CResult<Vec<(String, String)>>;
    /// Move image `name` to the trash, removable after `delay` seconds.
    async fn trash_move(&self, io: &IoTarget, name: &str, delay: u64) -> CResult<()>;
    /// The trash entry of image `id`.
    async fn trash_get(&self, io: &IoTarget, id: &str) -> CResult<quarry_rbd::TrashEntry>;
    /// Every trash entry, sorted by id.
    async fn trash_list(&self, io: &IoTarget) -> CResult<Vec<quarry_rbd::TrashEntry>>;
    /// Remove trashed image `id` (`force`: before its deferment ends).
    async fn trash_remove(&self, io: &IoTarget, id: &str, force: bool) -> CResult<()>;
    /// Restore trashed image `id` under `name` (its old name if empty).
    async fn trash_restore(&self, io: &IoTarget, id: &str, name: &str) -> CResult<()>;
    /// Remove user-trashed images expired at `expire_ts` (now if `None`);
    /// the first image that could not go fails the call with its errno.
    async fn trash_purge(&self, io: &IoTarget, expire_ts: Option<u64>) -> CResult<()>;
    /// Start a live migration of `src` to `dst` (`order` 0 / `features`
    /// `None`: the source's).
    async fn migration_prepare(
        &self,
        sio: &IoTarget,
        src: &str,
        dio: &IoTarget,
        dst: &str,
        order: u8,
        features: Option<u64>,
    ) -> CResult<()>;
    /// Copy a migration's data (`progress(done, total)` per object).
    async fn migration_execute(
        &self,
        io: &IoTarget,
        name: &str,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> CResult<()>;
    /// Finish a migration (removes the source).
    async fn migration_commit(&self, io: &IoTarget, name: &str) -> CResult<()>;
    /// Undo a migration (removes the destination).
    async fn migration_abort(&self, io: &IoTarget, name: &str) -> CResult<()>;
    /// A migration's record, found through either end's name.
    async fn migration_status(
        &self,
        io: &IoTarget,
        name: &str,
    ) -> CResult<quarry_rbd::MigrationSpec>;
    /// Create consistency group `name` (`EEXIST`).
    async fn group_create(&self, io: &IoTarget, name: &str) -> CResult<()>;
    /// Remove a group: its snapshots, its members' links, the group.
    async fn group_remove(&self, io: &IoTarget, name: &str) -> CResult<()>;
    /// Group names of a pool/namespace, sorted.
    async fn group_list(&self, io: &IoTarget) -> CResult<Vec<String>>;
    /// Rename a group.
    async fn group_rename(&self, io: &IoTarget, src: &str, dst: &str) -> CResult<()>;
    /// Image `image` of `iio` joins group `group` of `gio`.
    async fn group_image_add(
        &self,
        gio: &IoTarget,
        group: &str,
        iio: &IoTarget,
        image: &str,
    ) -> CResult<()>;
    /// Image `image` of `iio` leaves group `group` of `gio`.
    async fn group_image_remove(
        &self,
        gio: &IoTarget,
        group: &str,
        iio: &IoTarget,
        image: &str,
    ) -> CResult<()>;
    /// A group's members.
    async fn group_image_list(
        &self,
        gio: &IoTarget,
        group: &str,
    ) -> CResult<Vec<quarry_rbd::GroupImageInfo>>;
    /// A crash-consistent snapshot of every member.
    async fn group_snap_create(&self, gio: &IoTarget, group: &str, snap: &str) -> CResult<()>;
    /// Remove a group snapshot (and its member snapshots).
    async fn group_snap_remove(&self, gio: &IoTarget, group: &str, snap: &str) -> CResult<()>;
    /// Rename a group snapshot.
    async fn group_snap_rename(
        &self,
        gio: &IoTarget,
        group: &str,
        src: &str,
        dst: &str,
    ) -> CResult<()>;
    /// Roll every member back to a group snapshot.
    async fn group_snap_rollback(&self, gio: &IoTarget, group: &str, snap: &str) -> CResult<()>;
    /// A group's snapshots, oldest first.
    async fn group_snap_list(
        &self,
        gio: &IoTarget,
        group: &str,
    ) -> CResult<Vec<quarry_rbd::GroupSnapInfo>>;
}

/// An open image.
#[async_trait]
pub trait ImageBackend: Send + Sync {
    /// Current facts (size may change after resize).
    async fn info(&self) -> CResult<ImageInfo>;
    /// Read `len` bytes at `off` (the caller has clipped to the size).
    async fn read(&self, off: u64, len: u64) -> CResult<Bytes>;
    /// Write bytes at `off` (clipped by the caller); durable when Ok.
    async fn write(&self, off: u64, data: Bytes) -> CResult<()>;
    /// Discard a range (may leave data in place at partial granules).
    async fn discard(&self, off: u64, len: u64) -> CResult<()>;
    /// Zero a range; `thick` writes real zeros.
    async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> CResult<()>;
    /// Make every completed write durable.
    async fn flush(&self) -> CResult<()>;
    /// Grow or shrink.
    async fn resize(&self, size: u64) -> CResult<()>;
    /// Snapshots, by id ascending.
    async fn snap_list(&self) -> CResult<Vec<SnapInfo>>;
    /// Create a snapshot.
    async fn snap_create(&self, name: &str) -> CResult<()>;
    /// Remove a snapshot.
    async fn snap_remove(&self, name: &str) -> CResult<()>;
    /// Remove a snapshot by id.
    async fn snap_remove_by_id(&self, id: u64) -> CResult<()>;
    /// Enable or disable mutable features (exclusive-lock, object-map,
    /// fast-diff).
    async fn update_features(&self, features: u64, enabled: bool) -> CResult<()>;
    /// Clients that have the image open: (address, instance id, cookie).
    async fn watchers(&self) -> CResult<Vec<(String, u64, u64)>>;
    /// Roll the head back to a snapshot.
    async fn snap_rollback(&self, name: &str) -> CResult<()>;
    /// Protect a snapshot (clone v1 parents).
    async fn snap_protect(&self, name: &str) -> CResult<()>;
    /// Unprotect a snapshot.
    async fn snap_unprotect(&self, name: &str) -> CResult<()>;
    /// Rename a snapshot.
    async fn snap_rename(&self, from: &str, to: &str) -> CResult<()>;
    /// Parent of a clone; `ENOENT` if none.
    async fn parent(&self) -> CResult<ParentInfo>;
    /// Clones of this snapshot (of every snapshot at the head), or with
    /// `descendants` their clones too, trashed ones marked.
    async fn children(&self, descendants: bool) -> CResult<Vec<quarry_rbd::ChildInfo>>;
    /// Copy up everything from the parent and detach it.
    async fn flatten(&self) -> CResult<()>;
    /// Make the head's object map again from the objects that exist.
    async fn rebuild_object_map(&self) -> CResult<()>;
    /// Deallocate zeroed data in chunks of `sparse_size` (see
    /// `quarry_rbd::Image::sparsify`).
    async fn sparsify(&self, sparse_size: u64) -> CResult<()>;
    /// Copy this view into a new image `dest` in `io` (`rbd_copy*`), or
    /// with every snapshot when `deep` (`rbd_deep_copy`; see
    /// `quarry_rbd::Rbd::deep_copy`).
    async fn copy_to(
        &self,
        io: &IoTarget,
        dest: &str,
        opts: &quarry_rbd::CopyOptions,
        deep: bool,
    ) -> CResult<()>;
    /// The snapshot limit (`u64::MAX`: none).
    fn snap_limit(&self) -> CResult<u64>;
    /// Set the snapshot limit (`u64::MAX` removes it).
    async fn set_snap_limit(&self, limit: u64) -> CResult<()>;
    /// Allocated/changed extents, increasing and non-overlapping, inside
    /// `[off, off+len)`.
    async fn diff(
        &self,
        fromsnap: Option<&str>,
        off: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
    ) -> CResult<Vec<DiffExtent>>;
    /// Image-level config overrides (`rbd config image set`).
    async fn image_config(&self) -> CResult<Vec<(String, String)>>;
    /// Image metadata get (`ENOENT` if absent).
    async fn metadata_get(&self, key: &str) -> CResult<String>;
    /// Image metadata set.
    async fn metadata_set(&self, key: &str, value: &str) -> CResult<()>;
    /// Image metadata remove.
    async fn metadata_remove(&self, key: &str) -> CResult<()>;
    /// Image metadata list (sorted).
    async fn metadata_list(&self) -> CResult<Vec<(String, String)>>;
    /// Re-read the header and object map (`rbd_invalidate_cache`).
    async fn refresh(&self) -> CResult<()>;
    /// `rbd_snap_set`/`rbd_snap_set_by_id`: read a snapshot from now on
    /// (`None`: the head again).
    async fn set_snap(&self, snap: Option<quarry_rbd::SnapSpec>) -> CResult<()>;
    /// How often reads and writes are recorded in the image timestamps.
    fn set_timestamp_intervals(&self, t: quarry_rbd::TimestampIntervals);
    /// Release watches/locks; the handle is not used afterwards.
    async fn close(&self) -> CResult<()>;
    /// `rbd_lock_acquire(EXCLUSIVE)`: take the exclusive lock and keep it.
    async fn lock_acquire(&self) -> CResult<()>;
    /// `rbd_lock_release`.
    async fn lock_release(&self) -> CResult<()>;
    /// `rbd_is_exclusive_lock_owner`.
    fn is_lock_owner(&self) -> bool;
    /// `rbd_lock_get_owners`: `client.<id>` of the owner, if any.
    async fn lock_owners(&self) -> CResult<Vec<String>>;
    /// `rbd_lock_break(EXCLUSIVE, owner)`.
    async fn lock_break(&self, owner: &str) -> CResult<()>;
    /// `rbd_lock_exclusive` (`tag` `None`) / `rbd_lock_shared`: the
    /// advisory lock.
    async fn advisory_lock(&self, cookie: &str, tag: Option<&str>) -> CResult<()>;
    /// `rbd_unlock`: release this client's advisory lock under `cookie`.
    async fn advisory_unlock(&self, cookie: &str) -> CResult<()>;
    /// `rbd_break_lock`: remove the lock `client` holds under `cookie`.
    async fn break_lock(&self, client: &str, cookie: &str) -> CResult<()>;
    /// `rbd_list_lockers`: the image's lock holders.
    async fn list_lockers(&self) -> CResult<quarry_rbd::ImageLocks>;
    /// Run `hook` before the exclusive lock is handed to another client
    /// (the writes this handle acknowledged must be on the cluster first).
    fn set_pre_release_hook(&self, hook: PreReleaseHook);
    /// `rbd_get_group`: the image's group as (group pool id, group name).
    async fn group(&self) -> CResult<Option<(PoolId, String)>>;
    /// `rbd_snap_get_group_namespace`: (group pool id, group name, group
    /// snapshot name) of a group snapshot's image snapshot (`EINVAL` for
    /// another snapshot, `ENOENT` for a missing id).
    async fn snap_group_namespace(&self, snap_id: u64) -> CResult<(PoolId, String, String)>;
}

/// See [`ImageBackend::set_pre_release_hook`].
pub type PreReleaseHook = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = CResult<()>> + Send>>
        + Send
        + Sync,
>;

/// How a connection obtains its engine from an object layer.
pub type EngineFactory = fn(Arc<dyn Rados>) -> Arc<dyn ImageEngine>;
