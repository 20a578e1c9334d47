//! Shared test helpers: an embedded backend, a pool, and a counting proxy
//! of the object layer to assert how many ops an engine call issued.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{
    ListEntry, ObjectId, OpReply, OpRequest, PoolId, PoolInfo, PoolStat, Rados, Result, SnapId,
    Watcher,
};
use quarry_rbd::{CreateOptions, Image, IoCtx, OpenOptions, Rbd, RbdError};
use quarry_store::Embedded;

/// Forwards to another client and counts `operate` calls (reads / writes).
pub struct Counting {
    pub inner: Arc<dyn Rados>,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Operations on objects whose name starts with `rbd_data.`.
    pub data_ops: AtomicU64,
    /// Pool listings (`list_objects`), which visit every PG.
    pub lists: AtomicU64,
    /// Fault injection: this many upcoming writes to objects named with
    /// this prefix are applied, and
    /// then applied again, answering the second result: what a resend after
    /// a lost reply does when the OSD no longer remembers the original.
    pub reexecute: std::sync::Mutex<Option<(String, u32)>>,
    /// Fault injection: the next write to a snapshot's object map
    /// (`rbd_object_map.<id>.<snap>`) fails with EIO without being applied.
    pub fail_snap_map: std::sync::atomic::AtomicBool,
    /// Fault injection: the next whole write of a head object map
    /// (`rbd_object_map.<id>`) says so on the first channel and waits for
    /// the second before it is applied (another client acts in between).
    pub pause_head_map_write: std::sync::Mutex<Option<HeadMapPause>>,
    /// Fault injection: the next write to a data object (`rbd_data.`)
    /// sets `data_write_held` and waits for this channel before it is
    /// applied (nothing else can then wake the writer's task).
    pub hold_data_write: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// Set once a held data write reached the hold.
    pub data_write_held: std::sync::atomic::AtomicBool,
    /// Snap ids allocated (`snap_create`) and released (`snap_remove`).
    pub snap_allocs: AtomicU64,
    pub snap_releases: AtomicU64,
    /// Fault injection: this many upcoming watcher lists show only this
    /// client's own watches (a list read before the others' were
    /// registered).
    pub stale_watchers: AtomicU64,
}

/// See [`Counting::pause_head_map_write`]: (arrived, go on).
pub type HeadMapPause = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

impl Counting {
    pub fn new(inner: Arc<dyn Rados>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            data_ops: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            reexecute: std::sync::Mutex::new(None),
            fail_snap_map: std::sync::atomic::AtomicBool::new(false),
            pause_head_map_write: std::sync::Mutex::new(None),
            hold_data_write: std::sync::Mutex::new(None),
            data_write_held: std::sync::atomic::AtomicBool::new(false),
            snap_allocs: AtomicU64::new(0),
            snap_releases: AtomicU64::new(0),
            stale_watchers: AtomicU64::new(0),
        })
    }
    pub fn data_ops(&self) -> u64 {
        self.data_ops.load(Ordering::SeqCst)
    }
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }
    /// Whether `req` is one the armed `reexecute` fault applies to (and
    /// count it down).
    fn take_reexecute(&self, req: &OpRequest) -> bool {
        let mut g = self.reexecute.lock().expect("reexecute lock");
        let Some((prefix, left)) = g.as_mut() else {
            return false;
        };
        if !req.is_write() || !req.oid.name.starts_with(prefix.as_str()) {
            return false;
        }
        *left -= 1;
        if *left == 0 {
            *g = None;
        }
        true
    }
    /// Arm the `reexecute` fault for the next write to an object named
    /// with `prefix`.
    pub fn reexecute_next(&self, prefix: &str) {
        *self.reexecute.lock().expect("reexecute lock") = Some((prefix.to_string(), 1));
    }
    /// Whether the armed `reexecute` fault was injected (a test whose fault
    /// never fired proves nothing).
    pub fn reexecuted(&self) -> bool {
        self.reexecute.lock().expect("reexecute lock").is_none()
    }
    pub fn ops(&self) -> u64 {
        self.reads.load(Ordering::SeqCst) + self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Rados for Counting {
    fn instance_id(&self) -> u64 {
        self.inner.instance_id()
    }
    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        self.inner.pool_create(name).await
    }
    async fn pool_delete(&self, name: &str) -> Result<()> {
        self.inner.pool_delete(name).await
    }
    async fn pool_lookup(&self, name: &str) -> Result<PoolId> {
        self.inner.pool_lookup(name).await
    }
    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        self.inner.pool_list().await
    }
    async fn pool_stat(&self, pool: PoolId) -> Result<PoolStat> {
        self.inner.pool_stat(pool).await
    }
    async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
        self.snap_allocs.fetch_add(1, Ordering::SeqCst);
        self.inner.snap_create(pool).await
    }
    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        self.snap_releases.fetch_add(1, Ordering::SeqCst);
        self.inner.snap_remove(pool, snap).await
    }
    async fn operate(&self, req: OpRequest) -> Result<OpReply> {
        if req.is_write() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        } else {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
        if req.oid.name.starts_with("rbd_data.") {
            self.data_ops.fetch_add(1, Ordering::SeqCst);
        }
        if req.is_write()
            && req
                .oid
                .name
                .strip_prefix("rbd_object_map.")
                .is_some_and(|rest| rest.contains('.'))
            && self.fail_snap_map.swap(false, Ordering::SeqCst)
        {
            return Err(quarry_rados::RadosError::io(
                "injected: snapshot map write failed",
            ));
        }
        let whole_head_map = req
            .oid
            .name
            .strip_prefix("rbd_object_map.")
            .is_some_and(|rest| !rest.contains('.'))
            && req
                .ops
                .iter()
                .any(|o| matches!(o, quarry_rados::Op::WriteFull(_)));
        if whole_head_map {
            let pause = self.pause_head_map_write.lock().expect("pause lock").take();
            if let Some((arrived, go_on)) = pause {
                let _ = arrived.send(());
                let _ = go_on.await;
            }
        }
        if req.is_write() && req.oid.name.starts_with("rbd_data.") {
            let hold = self.hold_data_write.lock().expect("hold lock").take();
            if let Some(go_on) = hold {
                self.data_write_held.store(true, Ordering::SeqCst);
                let _ = go_on.await;
            }
        }
        if self.take_reexecute(&req) {
            let _first = self.inner.operate(req.clone()).await;
        }
        self.inner.operate(req).await
    }
    async fn list_objects(&self, pool: PoolId, namespace: Option<&str>) -> Result<Vec<ListEntry>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_objects(pool, namespace).await
    }
    async fn watch(&self, oid: &ObjectId) -> Result<u64> {
        self.inner.watch(oid).await
    }
    async fn unwatch(&self, oid: &ObjectId, cookie: u64) -> Result<()> {
        self.inner.unwatch(oid, cookie).await
    }
    async fn list_watchers(&self, oid: &ObjectId) -> Result<Vec<Watcher>> {
        let mut w = self.inner.list_watchers(oid).await?;
        let stale = self
            .stale_watchers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if stale {
            let me = self.inner.instance_id();
            w.retain(|w| w.client == me);
        }
        Ok(w)
    }
    async fn watch_with(&self, oid: &ObjectId, cb: quarry_rados::WatchCallback) -> Result<u64> {
        self.inner.watch_with(oid, cb).await
    }
    async fn notify(
        &self,
        oid: &ObjectId,
        payload: bytes::Bytes,
        timeout: std::time::Duration,
    ) -> Result<quarry_rados::NotifyResult> {
        self.inner.notify(oid, payload, timeout).await
    }
    async fn notify_ack(
        &self,
        oid: &ObjectId,
        notify_id: u64,
        cookie: u64,
        payload: bytes::Bytes,
    ) -> Result<()> {
        self.inner.notify_ack(oid, notify_id, cookie, payload).await
    }
}

pub struct Env {
    pub emb: Arc<Embedded>,
    pub rados: Arc<dyn Rados>,
    pub rbd: Rbd,
    pub io: IoCtx,
}

pub async fn env() -> Env {
    let emb = Embedded::open_memory().expect("open memory store");
    env_on(emb).await
}

pub async fn env_on(emb: Arc<Embedded>) -> Env {
    let rados = emb.client();
    match rados.pool_create("rbd").await {
        Ok(_) => {}
        Err(e) if e.errno == Errno::EEXIST => {}
        Err(e) => panic!("pool create: {e}"),
    }
    let rbd = Rbd::new(rados.clone());
    let io = rbd.ioctx("rbd", "").await.expect("ioctx");
    Env {
        emb,
        rados,
        rbd,
        io,
    }
}

/// All object names of a pool (all namespaces).
pub async fn objects(rados: &dyn Rados, pool: PoolId) -> Vec<String> {
    rados
        .list_objects(pool, None)
        .await
        .expect("list")
        .into_iter()
        .map(|e| {
            if e.namespace.is_empty() {
                e.name
            } else {
                format!("{}/{}", e.namespace, e.name)
            }
        })
        .collect()
}

pub async fn data_objects(rados: &dyn Rados, pool: PoolId, id: &str) -> Vec<String> {
    let p = format!("rbd_data.{id}.");
    objects(rados, pool)
        .await
        .into_iter()
        .filter(|n| n.contains(&p))
        .collect()
}

pub fn errno<T: std::fmt::Debug>(r: std::result::Result<T, RbdError>) -> Errno {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

pub const MIB: u64 = 1 << 20;

/// Deterministic non-zero pattern bytes; every 4 KiB block differs (its
/// index is mixed in) so misplaced blocks are detected.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    let block: Vec<u8> = (0..4096usize)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect();
    let mut v = Vec::with_capacity(len);
    let mut n = 0u64;
    while v.len() < len {
        let take = (len - v.len()).min(4096);
        let start = v.len();
        v.extend_from_slice(&block[..take]);
        v[start] = (n as u8).wrapping_add(seed) | 1;
        if take > 1 {
            v[start + 1] = ((n >> 8) as u8) | 1;
        }
        n += 1;
    }
    Bytes::from(v)
}

/// A counting proxy over `e`'s client, an engine on it, and image `name`
/// of `size` bytes created and opened through that engine.
pub async fn counted_image(e: &Env, name: &str, size: u64) -> (Arc<Counting>, Rbd, Image) {
    let counting = Counting::new(e.rados.clone());
    let rbd = Rbd::new(counting.clone());
    rbd.create(&e.io, name, size, &CreateOptions::default())
        .await
        .expect("create");
    let img = rbd
        .open(&e.io, name, &OpenOptions::default())
        .await
        .expect("open");
    (counting, rbd, img)
}
