//! `rados_t` and `rados_ioctx_t`: configuration, connection, pools.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use quarry_common::Errno;
use quarry_rados::{ObjectId, PoolId, Rados};

use crate::config::Config;
use crate::engine::{CError, CResult, ImageEngine, IoTarget};

/// Lock a mutex, ignoring poisoning (a panic elsewhere must not wedge C callers).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A connected object layer plus the image engine on it.
pub struct Connection {
    /// The object layer.
    pub rados: Arc<dyn Rados>,
    /// The cluster client behind it, for monitor commands (none when embedded).
    pub client: Option<Arc<quarry_client::ClusterClient>>,
    /// The embedded store's directory (empty for a cluster).
    pub embedded_dir: String,
    /// The image engine.
    pub engine: Arc<dyn ImageEngine>,
    /// Per-object ordering of `rados_aio_*` operations.
    pub order: ObjectOrder,
    /// Watches registered through the C API: cookie → watched object
    /// (`rados_unwatch2` and `rados_watch_check` get only the cookie).
    pub watches: Mutex<HashMap<u64, ObjectId>>,
}

/// Keeps asynchronous operations on one object in submission order, as
/// librados does: each operation waits for its predecessor on the same
/// object before it is sent.
#[derive(Default)]
pub struct ObjectOrder {
    tails: Mutex<HashMap<ObjectId, (u64, tokio::sync::watch::Receiver<bool>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A slot in an object's order: wait for the predecessor, then hold the
/// slot until the operation finished (dropping it releases the successor).
pub struct OrderSlot<'a> {
    order: &'a ObjectOrder,
    oid: ObjectId,
    seq: u64,
    prev: Option<tokio::sync::watch::Receiver<bool>>,
    done: tokio::sync::watch::Sender<bool>,
}

impl ObjectOrder {
    /// Take the next slot for `oid` (call on the submitting thread).
    pub fn enter(
        &self,
        oid: &ObjectId,
    ) -> (
        u64,
        Option<tokio::sync::watch::Receiver<bool>>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let prev = lock(&self.tails)
            .insert(oid.clone(), (seq, rx))
            .map(|(_, r)| r);
        (seq, prev, tx)
    }

    /// Build a slot from [`ObjectOrder::enter`]'s parts.
    pub fn slot(
        &self,
        oid: ObjectId,
        parts: (
            u64,
            Option<tokio::sync::watch::Receiver<bool>>,
            tokio::sync::watch::Sender<bool>,
        ),
    ) -> OrderSlot<'_> {
        OrderSlot {
            order: self,
            oid,
            seq: parts.0,
            prev: parts.1,
            done: parts.2,
        }
    }
}

impl OrderSlot<'_> {
    /// Wait until the previous operation on the object finished.
    pub async fn ready(&mut self) {
        if let Some(mut rx) = self.prev.take() {
            // Err: the predecessor's sender was dropped, i.e. it finished.
            let _ = rx.wait_for(|d| *d).await;
        }
    }
}

impl Drop for OrderSlot<'_> {
    fn drop(&mut self) {
        let _ = self.done.send(true);
        let mut g = lock(&self.order.tails);
        if g.get(&self.oid).is_some_and(|(s, _)| *s == self.seq) {
            g.remove(&self.oid);
        }
    }
}

/// What a `rados_t` points to.
pub struct Cluster {
    /// Configuration (levels).
    pub conf: Mutex<Config>,
    /// Set by `rados_connect`.
    pub conn: Mutex<Option<Arc<Connection>>>,
}

impl Cluster {
    /// A new, unconnected handle for `type.id`, with `CEPH_ARGS` applied.
    pub fn new(entity_type: &str, id: &str, cluster: Option<&str>) -> Result<Cluster, Errno> {
        let mut conf = Config::new(entity_type, id, cluster)?;
        conf.apply_env();
        Ok(Cluster {
            conf: Mutex::new(conf),
            conn: Mutex::new(None),
        })
    }

    /// The connection, or `ENOTCONN` before `rados_connect`.
    pub fn connection(&self) -> CResult<Arc<Connection>> {
        lock(&self.conn)
            .clone()
            .ok_or_else(|| CError::new(Errno::ENOTCONN, "not connected"))
    }

    /// `rados_connect`.
    pub fn connect(&self) -> CResult<()> {
        let conf = lock(&self.conf).clone();
        let (rados, mon_values, client) = open_backend(&conf)?;
        {
            let mut c = lock(&self.conf);
            // Below the file, environment and rados_conf_set levels.
            c.set_mon_values(&mon_values);
            c.mark_started();
        }
        let fence = quarry_rbd::FencePolicy::from_options(
            conf.get_bool("rbd_blocklist_on_break_lock"),
            conf.get_u64("rbd_blocklist_expire_seconds"),
        );
        // `rbd_move_to_trash_on_remove`: rbd_remove trashes instead (as librbd).
        let trash_on_remove = conf
            .get_bool("rbd_move_to_trash_on_remove")
            .then(|| conf.get_u64("rbd_move_to_trash_on_remove_expire_seconds"));
        let engine = crate::rbd_adapter::engine(rados.clone(), fence, trash_on_remove);
        let embedded_dir = conf.get("quarry_embedded_dir").unwrap_or_default();
        *lock(&self.conn) = Some(Arc::new(Connection {
            rados,
            client,
            embedded_dir,
            engine,
            order: ObjectOrder::default(),
            watches: Mutex::new(HashMap::new()),
        }));
        Ok(())
    }
}

fn embedded_instances() -> &'static Mutex<HashMap<PathBuf, Weak<quarry_store::Embedded>>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, Weak<quarry_store::Embedded>>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Open the embedded store at `dir`, sharing one instance per directory in
/// this process (several `rados_connect` on one dir, e.g. fio jobs).
fn open_embedded(dir: &str) -> CResult<Arc<dyn Rados>> {
    let path = std::fs::canonicalize(dir)
        .map_err(|e| CError::new(Errno::ENOENT, format!("quarry_embedded_dir {dir}: {e}")))?;
    let mut m = lock(embedded_instances());
    if let Some(e) = m.get(&path).and_then(Weak::upgrade) {
        return Ok(e.client());
    }
    let e = quarry_store::Embedded::open(&path).map_err(|e| {
        eprintln!("quarry: cannot open embedded store {}: {e}", path.display());
        CError::from(e)
    })?;
    m.insert(path, Arc::downgrade(&e));
    Ok(e.client())
}

/// The object layer, and the monitors' config values (none when embedded).
fn open_backend(conf: &Config) -> CResult<crate::net::Backend> {
    let dir = conf.get("quarry_embedded_dir")?;
    if !dir.is_empty() {
        return Ok((open_embedded(&dir)?, Vec::new(), None));
    }
    let mon_host = conf.get("mon_host")?;
    if mon_host.trim().is_empty() {
        eprintln!("unable to get monitor info from DNS SRV with service name: ceph-mon");
        return Err(CError::new(Errno::ENOENT, "no mon_host configured"));
    }
    crate::net::connect(conf)
}

/// What a `rados_ioctx_t` points to.
pub struct IoCtx {
    /// The connection (kept alive by the ioctx).
    pub conn: Arc<Connection>,
    /// The cluster handle (its config is read when images are opened).
    pub cluster: Arc<Cluster>,
    /// Pool id.
    pub pool: PoolId,
    /// Pool name.
    pub pool_name: String,
    /// Namespace.
    pub namespace: Mutex<String>,
    /// Snapshot reads go to (`rados_ioctx_snap_set_read`; `NOSNAP` = head,
    /// the only one writes may go to).
    pub read_snap: Mutex<quarry_rados::SnapId>,
    /// Snap context of writes (`rados_ioctx_selfmanaged_snap_set_write_ctx`).
    pub write_snapc: Mutex<quarry_rados::SnapContext>,
    /// The `rados_t` handle it was created from (`rados_ioctx_get_cluster`).
    pub handle: usize,
}

impl IoCtx {
    /// The pool + namespace currently designated.
    pub fn target(&self) -> IoTarget {
        IoTarget {
            pool: self.pool,
            pool_name: self.pool_name.clone(),
            namespace: lock(&self.namespace).clone(),
        }
    }
}
