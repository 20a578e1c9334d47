//! The object layer: the part of RADOS that RBD needs, as one async trait.
//!
//! The image engine (`quarry-rbd`) is written against [`Rados`] only. Two
//! implementations exist or are planned: the embedded backend in
//! `quarry-store` (in-process, a local object store) and the networked
//! cluster client. Both must implement exactly the semantics documented on
//! [`Op`] and [`Rados`]; `quarry-store`'s tests pin them down.
//!
//! Architecture invariant: this crate knows nothing of disks, sockets or
//! images. It defines vocabulary (ids, ops, snapshot contexts) and the trait.

mod error;
mod op;

pub use error::{RadosError, Result};
pub use op::{
    CloneInfo, ObjectId, ObjectStat, Op, OpOutput, OpReply, OpRequest, SnapContext, SnapSet,
};

use async_trait::async_trait;

/// Pool identifier (Ceph's `int64_t` pool id).
pub type PoolId = i64;
/// Snapshot identifier (Ceph's `snapid_t`).
pub type SnapId = u64;
/// The "no snapshot" id: read/write the head object (Ceph's `CEPH_NOSNAP`).
pub const NOSNAP: SnapId = u64::MAX - 1;

/// A pool as the object layer reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolInfo {
    /// Pool id, never reused.
    pub id: PoolId,
    /// Pool name, unique.
    pub name: String,
}

/// Space accounting of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolStat {
    /// Objects (heads and clones).
    pub num_objects: u64,
    /// Bytes of data actually stored (sparse: holes do not count), heads and clones.
    pub num_bytes: u64,
}

/// An object name inside a pool, with its namespace (empty = default).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ListEntry {
    /// Namespace ("" is the default namespace).
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// One registered watch on an object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watcher {
    /// The watching client's instance id ([`Rados::instance_id`]).
    pub client: u64,
    /// The watch cookie, unique per client.
    pub cookie: u64,
    /// Address of the client, for display (`rbd status`).
    pub addr: String,
}

/// The object layer: pools, self-managed snapshots, atomic compound
/// operations on named objects, listing and watches.
///
/// Every method is safe to call concurrently. Operations on one object are
/// linearizable: an [`OpRequest`] is applied atomically (all its ops or
/// none) and a request that returned `Ok` is durable.
#[async_trait]
pub trait Rados: Send + Sync + 'static {
    /// A unique id of this client instance (Ceph's global id).
    fn instance_id(&self) -> u64;

    /// Create a pool. `EEXIST` if the name is taken, `EINVAL` for a bad name.
    async fn pool_create(&self, name: &str) -> Result<PoolId>;
    /// Delete a pool and every object in it. `ENOENT` if absent.
    async fn pool_delete(&self, name: &str) -> Result<()>;
    /// Look a pool up by name. `ENOENT` if absent.
    async fn pool_lookup(&self, name: &str) -> Result<PoolId>;
    /// All pools, ordered by id.
    async fn pool_list(&self) -> Result<Vec<PoolInfo>>;
    /// Space used by a pool.
    async fn pool_stat(&self, pool: PoolId) -> Result<PoolStat>;

    /// Allocate a new self-managed snapshot id in `pool` (strictly greater
    /// than every id allocated before in that pool).
    async fn snap_create(&self, pool: PoolId) -> Result<SnapId>;
    /// Remove a self-managed snapshot: clones no remaining snapshot needs are
    /// trimmed (their space freed). Removing an unknown id is `ENOENT`.
    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()>;

    /// Apply a compound operation to one object, atomically.
    async fn operate(&self, req: OpRequest) -> Result<OpReply>;

    /// List head objects (existing at NOSNAP) in a pool; `namespace = None`
    /// lists all namespaces. Ordered by (namespace, name).
    async fn list_objects(&self, pool: PoolId, namespace: Option<&str>) -> Result<Vec<ListEntry>>;

    /// Register a watch on an existing object (`ENOENT` if absent). Returns
    /// the cookie. The watch lives until `unwatch` or until this client goes.
    async fn watch(&self, oid: &ObjectId) -> Result<u64>;
    /// Remove a watch registered by this client.
    async fn unwatch(&self, oid: &ObjectId, cookie: u64) -> Result<()>;
    /// The watches currently registered on an object, by any client.
    async fn list_watchers(&self, oid: &ObjectId) -> Result<Vec<Watcher>>;
}
