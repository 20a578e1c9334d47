//! The embedded object-layer backend: [`Rados`] over a local [`Store`].
//!
//! Pools, per-pool self-managed snap id counters and removed-snap sets live
//! in the store's `sys` table (one checksummed registry record), so a
//! reopened store keeps them. Watches are in memory only, keyed by object.
//!
//! Client instances: [`Embedded`] itself implements [`Rados`] as client
//! instance 1 (whose watches live as long as the `Embedded`); every
//! [`Embedded::client`] call returns a new instance with its own id whose
//! watches are dropped with it.
//!
//! Notifications are delivered by calling each watch's callback in the
//! notifier's task; a watch registered without a callback acks at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::notify::PendingNotifies;
use quarry_rados::{
    ListEntry, NotifyEvent, NotifyResult, ObjectId, Op, OpReply, OpRequest, PoolId, PoolInfo,
    PoolStat, Rados, RadosError, Result, SnapId, WatchCallback, WatchError, WatchEvent, Watcher,
    NOSNAP, NOTIFY_PAYLOAD_MAX, NOTIFY_TIMEOUT_MAX,
};

use crate::codec::blob;
use crate::store::Store;

const REGISTRY_KEY: &str = "embedded.registry";
/// Instance id of the `Embedded` itself; clients get the following ids.
const EMBEDDED_INSTANCE: u64 = 1;

#[derive(Clone, Debug, Default)]
struct PoolRec {
    name: String,
    snap_seq: SnapId,
    removed: BTreeSet<SnapId>,
}

#[derive(Clone, Debug)]
struct Registry {
    next_pool: PoolId,
    pools: BTreeMap<PoolId, PoolRec>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            next_pool: 1,
            pools: BTreeMap::new(),
        }
    }
}

impl Registry {
    fn encode(&self) -> Vec<u8> {
        let mut w = blob::Writer::default();
        w.u64(1); // format
        w.u64(self.next_pool as u64);
        w.u64(self.pools.len() as u64);
        for (id, p) in &self.pools {
            w.u64(*id as u64);
            w.bytes(p.name.as_bytes());
            w.u64(p.snap_seq);
            w.u64(p.removed.len() as u64);
            for s in &p.removed {
                w.u64(*s);
            }
        }
        w.finish()
    }

    fn decode(buf: &[u8]) -> Result<Self> {
        let parse = || -> Option<Registry> {
            let mut r = blob::Reader::new(buf)?;
            if r.u64()? != 1 {
                return None;
            }
            let next_pool = r.u64()? as i64;
            let n = r.count(32)?;
            let mut pools = BTreeMap::new();
            for _ in 0..n {
                let id = r.u64()? as i64;
                let name = String::from_utf8(r.bytes()?.to_vec()).ok()?;
                let snap_seq = r.u64()?;
                let nr = r.count(8)?;
                let removed = (0..nr).map(|_| r.u64()).collect::<Option<BTreeSet<_>>>()?;
                pools.insert(
                    id,
                    PoolRec {
                        name,
                        snap_seq,
                        removed,
                    },
                );
            }
            r.done().then_some(Registry { next_pool, pools })
        };
        parse().ok_or_else(|| RadosError::io("corrupted pool registry in the local store"))
    }

    fn lookup(&self, name: &str) -> Option<PoolId> {
        self.pools
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| *id)
    }
}

/// Reject names RADOS/rbd specs can't carry.
fn validate_pool_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| c == '/' || c == '@' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(RadosError::invalid(format!("invalid pool name {name:?}")));
    }
    Ok(())
}

/// The embedded backend: a shared store plus pool registry and watches.
pub struct Embedded {
    store: Arc<Store>,
    registry: RwLock<Registry>,
    /// Serializes registry mutations (held across the durable write).
    admin: tokio::sync::Mutex<()>,
    watches: Mutex<HashMap<ObjectId, Vec<Watcher>>>,
    /// Callbacks of watches registered with one, by (client, cookie).
    callbacks: Mutex<HashMap<(u64, u64), WatchCallback>>,
    /// Watches taken away by [`Embedded::disconnect_watches`].
    lost_watches: Mutex<Vec<(ObjectId, Watcher)>>,
    /// Notifications waiting for acks, by notify id.
    notifies: PendingNotifies,
    next_instance: AtomicU64,
    next_cookie: AtomicU64,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("store", &self.store)
            .finish()
    }
}

fn rlock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn wlock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn mlock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run blocking store work off the async runtime (inline if there is none).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h
            .spawn_blocking(f)
            .await
            .map_err(|e| RadosError::io(format!("store task failed: {e}")))?,
        Err(_) => f(),
    }
}

impl Embedded {
    /// Open (or create) an embedded backend whose store lives in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Embedded>> {
        Self::with_store(Store::open(dir)?)
    }

    /// An embedded backend in memory.
    pub fn open_memory() -> Result<Arc<Embedded>> {
        Self::with_store(Store::open_memory()?)
    }

    /// Wrap an opened store, loading the registry and finishing work a
    /// crash may have interrupted (pool deletions, snapshot trims).
    pub fn with_store(store: Store) -> Result<Arc<Embedded>> {
        let registry = match store.sys_get(REGISTRY_KEY)? {
            Some(b) => Registry::decode(&b)?,
            None => Registry::default(),
        };
        // The registry is updated before the data, so data of a deleted pool
        // or clones of a removed snap may survive a crash: clean them now.
        for pool in store.pools_with_data()? {
            if !registry.pools.contains_key(&pool) {
                store.remove_pool(pool)?;
            }
        }
        for (id, p) in &registry.pools {
            if !p.removed.is_empty() {
                let removed: Vec<SnapId> = p.removed.iter().copied().collect();
                store.trim_snaps(*id, &removed)?;
            }
        }
        Ok(Arc::new(Embedded {
            store: Arc::new(store),
            registry: RwLock::new(registry),
            admin: tokio::sync::Mutex::new(()),
            watches: Mutex::new(HashMap::new()),
            callbacks: Mutex::new(HashMap::new()),
            lost_watches: Mutex::new(Vec::new()),
            notifies: PendingNotifies::default(),
            next_instance: AtomicU64::new(EMBEDDED_INSTANCE + 1),
            next_cookie: AtomicU64::new(1),
        }))
    }

    /// A new client instance sharing this backend: its own instance id and
    /// watches, which are dropped with it.
    pub fn client(self: &Arc<Self>) -> Arc<dyn Rados> {
        Arc::new(Client {
            emb: self.clone(),
            id: self.next_instance.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Persist a changed registry, then publish it.
    async fn commit_registry(&self, reg: Registry) -> Result<()> {
        let store = self.store.clone();
        let bytes = reg.encode();
        blocking(move || store.sys_put(vec![(REGISTRY_KEY.to_string(), Some(bytes))])).await?;
        *wlock(&self.registry) = reg;
        Ok(())
    }

    fn check_pool(&self, pool: PoolId) -> Result<()> {
        if rlock(&self.registry).pools.contains_key(&pool) {
            Ok(())
        } else {
            Err(RadosError::not_found(format!("pool {pool} does not exist")))
        }
    }

    async fn do_pool_create(&self, name: &str) -> Result<PoolId> {
        validate_pool_name(name)?;
        let _g = self.admin.lock().await;
        let mut reg = rlock(&self.registry).clone();
        if reg.lookup(name).is_some() {
            return Err(RadosError::new(
                Errno::EEXIST,
                format!("pool {name:?} already exists"),
            ));
        }
        let id = reg.next_pool;
        reg.next_pool += 1;
        reg.pools.insert(
            id,
            PoolRec {
                name: name.to_string(),
                ..Default::default()
            },
        );
        self.commit_registry(reg).await?;
        Ok(id)
    }

    async fn do_pool_delete(&self, name: &str) -> Result<()> {
        let _g = self.admin.lock().await;
        let mut reg = rlock(&self.registry).clone();
        let id = reg
            .lookup(name)
            .ok_or_else(|| RadosError::not_found(format!("pool {name:?} does not exist")))?;
        reg.pools.remove(&id);
        self.commit_registry(reg).await?;
        mlock(&self.watches).retain(|oid, _| oid.pool != id);
        let store = self.store.clone();
        blocking(move || store.remove_pool(id)).await
    }

    async fn do_snap_create(&self, pool: PoolId) -> Result<SnapId> {
        let _g = self.admin.lock().await;
        let mut reg = rlock(&self.registry).clone();
        let p = reg
            .pools
            .get_mut(&pool)
            .ok_or_else(|| RadosError::not_found(format!("pool {pool} does not exist")))?;
        p.snap_seq += 1;
        let id = p.snap_seq;
        self.commit_registry(reg).await?;
        Ok(id)
    }

    async fn do_snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        let _g = self.admin.lock().await;
        let mut reg = rlock(&self.registry).clone();
        let p = reg
            .pools
            .get_mut(&pool)
            .ok_or_else(|| RadosError::not_found(format!("pool {pool} does not exist")))?;
        if snap == 0 || snap > p.snap_seq || !p.removed.insert(snap) {
            return Err(RadosError::not_found(format!(
                "snapshot {snap} does not exist in pool {pool}"
            )));
        }
        // Registry first: a crash before the trim is finished at next open.
        self.commit_registry(reg).await?;
        let store = self.store.clone();
        blocking(move || store.trim_snaps(pool, &[snap]).map(|_| ())).await
    }

    async fn do_operate(&self, mut req: OpRequest) -> Result<OpReply> {
        {
            let reg = rlock(&self.registry);
            let p = reg.pools.get(&req.oid.pool).ok_or_else(|| {
                RadosError::not_found(format!("pool {} does not exist", req.oid.pool))
            })?;
            // A writer with a stale snap context may still name removed
            // snaps; a clone labelled only with those would never be trimmed.
            if req.snapc.is_valid() && !p.removed.is_empty() {
                req.snapc.snaps.retain(|s| !p.removed.contains(s));
            }
        }
        if !req.is_write() {
            let store = self.store.clone();
            return blocking(move || store.apply(&req)).await;
        }
        // Fast path: hand the write to the writer thread and await its answer
        // without occupying a blocking thread; fall back when the queue is full.
        match self.store.submit_write(req) {
            Ok(Ok(fut)) => fut.await,
            Ok(Err(e)) => Err(e),
            Err(req) => {
                let store = self.store.clone();
                blocking(move || store.apply(&req)).await
            }
        }
    }

    async fn do_list(&self, pool: PoolId, namespace: Option<&str>) -> Result<Vec<ListEntry>> {
        self.check_pool(pool)?;
        let store = self.store.clone();
        let ns = namespace.map(str::to_string);
        blocking(move || store.list(pool, ns.as_deref())).await
    }

    async fn do_watch(
        &self,
        client: u64,
        oid: &ObjectId,
        cb: Option<WatchCallback>,
    ) -> Result<u64> {
        self.do_operate(OpRequest::new(oid.clone()).op(Op::AssertExists))
            .await?;
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        if let Some(cb) = cb {
            mlock(&self.callbacks).insert((client, cookie), cb);
        }
        mlock(&self.watches)
            .entry(oid.clone())
            .or_default()
            .push(Watcher {
                client,
                cookie,
                addr: format!("127.0.0.1:0/{client}"),
            });
        Ok(cookie)
    }

    fn do_unwatch(&self, client: u64, oid: &ObjectId, cookie: u64) -> Result<()> {
        mlock(&self.callbacks).remove(&(client, cookie));
        {
            let mut lost = mlock(&self.lost_watches);
            let before = lost.len();
            lost.retain(|(o, w)| !(o == oid && w.client == client && w.cookie == cookie));
            if lost.len() != before {
                return Ok(());
            }
        }
        let mut w = mlock(&self.watches);
        let list = w.get_mut(oid);
        let found = list.and_then(|l| {
            let i = l
                .iter()
                .position(|x| x.client == client && x.cookie == cookie)?;
            l.remove(i);
            Some(l.is_empty())
        });
        match found {
            Some(true) => {
                w.remove(oid);
                Ok(())
            }
            Some(false) => Ok(()),
            None => Err(RadosError::not_found(format!(
                "no watch {cookie} on object {}/{}",
                oid.pool, oid.name
            ))),
        }
    }

    fn do_list_watchers(&self, oid: &ObjectId) -> Result<Vec<Watcher>> {
        Ok(mlock(&self.watches).get(oid).cloned().unwrap_or_default())
    }

    async fn do_notify(
        &self,
        client: u64,
        oid: &ObjectId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        if payload.len() > NOTIFY_PAYLOAD_MAX {
            return Err(RadosError::invalid(format!(
                "notify payload of {} bytes exceeds {NOTIFY_PAYLOAD_MAX}",
                payload.len()
            )));
        }
        self.do_operate(OpRequest::new(oid.clone()).op(Op::AssertExists))
            .await?;
        let watchers = self.do_list_watchers(oid)?;
        let id = self.notifies.start(watchers.clone());
        for w in &watchers {
            let cb = mlock(&self.callbacks).get(&(w.client, w.cookie)).cloned();
            match cb {
                Some(cb) => cb(WatchEvent::Notify(NotifyEvent {
                    oid: oid.clone(),
                    notify_id: id,
                    cookie: w.cookie,
                    notifier: client,
                    payload: payload.clone(),
                })),
                // No callback: nobody to answer, so ack at once.
                None => self.do_notify_ack(w.client, id, w.cookie, Bytes::new()),
            }
        }
        let deadline = tokio::time::Instant::now() + timeout.min(NOTIFY_TIMEOUT_MAX);
        Ok(self.notifies.finish(id, deadline).await)
    }

    fn do_notify_ack(&self, client: u64, notify_id: u64, cookie: u64, payload: Bytes) {
        // A late ack (the notify timed out and returned) is ignored.
        self.notifies.ack(notify_id, client, cookie, payload);
    }

    /// Fault injection: unregister every watch of client instance
    /// `client` as if its connection to the objects' primary had dropped
    /// (notifications miss them) until [`Embedded::reconnect_watches`].
    /// Their callbacks are kept.
    pub fn disconnect_watches(&self, client: u64) {
        let mut lost = Vec::new();
        mlock(&self.watches).retain(|oid, l| {
            l.retain(|x| {
                let mine = x.client == client;
                if mine {
                    lost.push((oid.clone(), x.clone()));
                }
                !mine
            });
            !l.is_empty()
        });
        mlock(&self.lost_watches).extend(lost);
    }

    /// Register again the watches [`Embedded::disconnect_watches`] took
    /// from `client`, each then told `ENOTCONN` (it may have missed
    /// notifications), as a networked client does after reconnecting.
    pub fn reconnect_watches(&self, client: u64) {
        let mut back = Vec::new();
        mlock(&self.lost_watches).retain(|(oid, w)| {
            let mine = w.client == client;
            if mine {
                back.push((oid.clone(), w.clone()));
            }
            !mine
        });
        for (oid, w) in back {
            mlock(&self.watches)
                .entry(oid.clone())
                .or_default()
                .push(w.clone());
            let cb = mlock(&self.callbacks).get(&(w.client, w.cookie)).cloned();
            if let Some(cb) = cb {
                cb(WatchEvent::Error(WatchError {
                    oid,
                    cookie: w.cookie,
                    errno: Errno::ENOTCONN,
                }));
            }
        }
    }

    fn drop_client_watches(&self, client: u64) {
        mlock(&self.lost_watches).retain(|(_, w)| w.client != client);
        mlock(&self.callbacks).retain(|(c, _), _| *c != client);
        let mut w = mlock(&self.watches);
        w.retain(|_, l| {
            l.retain(|x| x.client != client);
            !l.is_empty()
        });
    }
}

/// Forward every `Rados` method to the `Embedded` with a client id.
macro_rules! rados_impl {
    ($ty:ty, |$s:ident| $emb:expr, $id:expr) => {
        #[async_trait]
        impl Rados for $ty {
            fn instance_id(&self) -> u64 {
                let $s = self;
                let _ = &$s;
                $id
            }
            fn client_addr(&self) -> Option<String> {
                Some(format!("127.0.0.1:0/{}", self.instance_id()))
            }
            async fn pool_create(&self, name: &str) -> Result<PoolId> {
                let $s = self;
                $emb.do_pool_create(name).await
            }
            async fn pool_delete(&self, name: &str) -> Result<()> {
                let $s = self;
                $emb.do_pool_delete(name).await
            }
            async fn pool_lookup(&self, name: &str) -> Result<PoolId> {
                let $s = self;
                rlock(&$emb.registry)
                    .lookup(name)
                    .ok_or_else(|| RadosError::not_found(format!("pool {name:?} does not exist")))
            }
            async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
                let $s = self;
                Ok(rlock(&$emb.registry)
                    .pools
                    .iter()
                    .map(|(id, p)| PoolInfo {
                        id: *id,
                        name: p.name.clone(),
                    })
                    .collect())
            }
            async fn pool_stat(&self, pool: PoolId) -> Result<PoolStat> {
                let $s = self;
                $emb.check_pool(pool)?;
                let store = $emb.store.clone();
                blocking(move || store.pool_stat(pool)).await
            }
            async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
                let $s = self;
                $emb.do_snap_create(pool).await
            }
            async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
                let $s = self;
                $emb.do_snap_remove(pool, snap).await
            }
            async fn operate(&self, req: OpRequest) -> Result<OpReply> {
                let $s = self;
                $emb.do_operate(req).await
            }
            async fn list_objects(
                &self,
                pool: PoolId,
                namespace: Option<&str>,
            ) -> Result<Vec<ListEntry>> {
                let $s = self;
                $emb.do_list(pool, namespace).await
            }
            async fn watch(&self, oid: &ObjectId) -> Result<u64> {
                let $s = self;
                $emb.do_watch($id, oid, None).await
            }
            async fn unwatch(&self, oid: &ObjectId, cookie: u64) -> Result<()> {
                let $s = self;
                $emb.do_unwatch($id, oid, cookie)
            }
            async fn list_watchers(&self, oid: &ObjectId) -> Result<Vec<Watcher>> {
                let $s = self;
                $emb.do_list_watchers(oid)
            }
            async fn watch_with(&self, oid: &ObjectId, cb: WatchCallback) -> Result<u64> {
                let $s = self;
                $emb.do_watch($id, oid, Some(cb)).await
            }
            async fn notify(
                &self,
                oid: &ObjectId,
                payload: Bytes,
                timeout: Duration,
            ) -> Result<NotifyResult> {
                let $s = self;
                $emb.do_notify($id, oid, payload, timeout).await
            }
            async fn notify_ack(
                &self,
                oid: &ObjectId,
                notify_id: u64,
                cookie: u64,
                payload: Bytes,
            ) -> Result<()> {
                let $s = self;
                let _ = oid;
                if payload.len() > NOTIFY_PAYLOAD_MAX {
                    return Err(RadosError::invalid("notify ack payload too large"));
                }
                $emb.do_notify_ack($id, notify_id, cookie, payload);
                Ok(())
            }
        }
    };
}

/// A client instance of an [`Embedded`] backend.
struct Client {
    emb: Arc<Embedded>,
    id: u64,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.emb.drop_client_watches(self.id);
    }
}

rados_impl!(Embedded, |s| s, EMBEDDED_INSTANCE);
rados_impl!(Client, |s| s.emb, s.id);

// Keep NOSNAP referenced for readers of this module: reads at a snap pass
// `req.snap` through unchanged; only writes (snap == NOSNAP) carry a snapc.
const _: SnapId = NOSNAP;
