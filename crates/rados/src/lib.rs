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
pub mod notify;
pub mod objlock;
mod op;

pub use error::{RadosError, Result};
pub use op::{
    CloneInfo, ObjectId, ObjectStat, Op, OpOutput, OpReply, OpRequest, SnapContext, SnapSet,
};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

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

/// A notification delivered to a watch (Ceph's `watch_notify` event).
/// The watcher answers it with [`Rados::notify_ack`] (possibly later,
/// from another task); a watcher that never acks shows up in the
/// notifier's [`NotifyResult::timeouts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyEvent {
    /// The watched object.
    pub oid: ObjectId,
    /// Id of this notification (pass it back to `notify_ack`).
    pub notify_id: u64,
    /// The cookie of the watch it is delivered to.
    pub cookie: u64,
    /// Instance id of the notifying client.
    pub notifier: u64,
    /// The notifier's payload.
    pub payload: Bytes,
}

/// A watch's registration was lost (librados' watch error callback).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchError {
    /// The watched object.
    pub oid: ObjectId,
    /// The cookie of the watch.
    pub cookie: u64,
    /// `ENOTCONN`: the registration was lost (connection to the primary
    /// gone, primary moved) and is registered again under the same cookie;
    /// notifications sent in between were missed, so the watcher should
    /// re-read what it watches. Any other errno (`ENOENT`: the object was
    /// removed; `ESHUTDOWN`: this client was blocklisted): the watch has
    /// ended.
    pub errno: quarry_common::Errno,
}

/// What a watch delivers to its callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A notification, to be acked.
    Notify(NotifyEvent),
    /// The watch was interrupted or ended.
    Error(WatchError),
}

/// Called for every event on a watch. Runs on the object layer's
/// runtime: it must not block (spawn work that takes time, then ack).
pub type WatchCallback = Arc<dyn Fn(WatchEvent) + Send + Sync>;

/// One watcher's answer to a notification.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotifyAck {
    /// The acking client's instance id.
    pub client: u64,
    /// Its watch cookie.
    pub cookie: u64,
    /// The payload it replied with (may be empty).
    pub payload: Bytes,
}

/// What a notification collected: the acks, and the watchers that did not
/// ack within the timeout (Ceph's `notify2` reply buffer).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotifyResult {
    /// Watchers that acked, with their payloads.
    pub acks: Vec<NotifyAck>,
    /// Watchers that did not ack in time (`cookie`, `client`, `addr`).
    pub timeouts: Vec<Watcher>,
}

/// Longest timeout a notification may ask for (bounded waits).
pub const NOTIFY_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Largest notify or ack payload accepted.
pub const NOTIFY_PAYLOAD_MAX: usize = 1 << 20;

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

    /// This client's address as daemons print it (`ip:0/<instance id>`),
    /// if known (lock holders record it, see [`objlock`]).
    fn client_addr(&self) -> Option<String> {
        None
    }

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
    /// Objects and bytes of one placement group (`pool`, `seed`), from its
    /// primary (`ceph pg ls`). Only a cluster has placement groups.
    async fn pg_stat(&self, pool: PoolId, seed: u32) -> Result<PoolStat> {
        Err(RadosError::new(
            quarry_common::Errno::EOPNOTSUPP,
            format!("statistics of PG {pool}.{seed:x}: this object layer has no placement groups"),
        ))
    }

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

    /// Register a watch whose notifications go to `cb` (otherwise as
    /// [`Rados::watch`]).
    async fn watch_with(&self, oid: &ObjectId, cb: WatchCallback) -> Result<u64>;
    /// Send `payload` to every watch on `oid` (including this client's own)
    /// and wait until each acked or `timeout` passed (capped at
    /// [`NOTIFY_TIMEOUT_MAX`]). `ENOENT` if the object does not exist;
    /// `EINVAL` for a payload over [`NOTIFY_PAYLOAD_MAX`].
    async fn notify(
        &self,
        oid: &ObjectId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult>;
    /// Answer notification `notify_id` delivered to watch `cookie`. Acking
    /// a notification that already completed (timed out) is not an error.
    async fn notify_ack(
        &self,
        oid: &ObjectId,
        notify_id: u64,
        cookie: u64,
        payload: Bytes,
    ) -> Result<()>;

    /// Fence the client at `addr` (`ip[:port]/nonce`, as [`Watcher::addr`]
    /// shows it) for `expire` (`ceph osd blocklist add`): OSDs then refuse
    /// its every request with `ESHUTDOWN`. Returns once this client's map
    /// holds the entry, so its later ops carry an epoch at which the fence
    /// is in force. `EOPNOTSUPP` where there is no one to fence (the
    /// embedded backend serves one process).
    async fn blocklist_add(&self, addr: &str, expire: Duration) -> Result<()> {
        let _ = expire;
        Err(RadosError::new(
            quarry_common::Errno::EOPNOTSUPP,
            format!("blocklisting {addr}: this object layer has no cluster to fence in"),
        ))
    }
}
