//! An open image: cached header/view, snapshots, resize, flatten,
//! metadata. The data path is in `io.rs`, diffs in `diff.rs`.
//!
//! Concurrency: the current [`View`] (header, snapshot context, object map,
//! parent handle) sits behind a `std::sync::RwLock<Arc<View>>`; the data
//! path clones the `Arc` and never holds that lock across an await. An
//! async `gate` RwLock is taken shared by every I/O and exclusively by
//! operations that must quiesce this handle's I/O (snapshot create and
//! remove, rollback, resize, set_snap, refresh), like librbd quiesces
//! before a snapshot. Per-object state transitions of the object map are
//! serialized by striped async locks (see `io.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpRequest, Rados, SnapContext, SnapId, NOSNAP};

use crate::error::{RadosContext, RbdError, Result};
use crate::header::{self, read_header, update_header, Header, ParentSpec, Protection, SnapRecord};
use crate::layout::{self, num_objects};
use crate::objmap::{self, ObjectMap, OBJECT_EXISTS, OBJECT_EXISTS_CLEAN, OBJECT_NONEXISTENT};
use crate::proxy::ProxyOp;
use crate::rbd::{self, ChildRef};
use crate::{
    ChildInfo, ImageInfo, IoCtx, ParentInfo, SnapInfo, SnapSpec, FEATURE_FAST_DIFF,
    FEATURE_OBJECT_MAP, FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID,
};

/// Striped locks serializing object-map state transitions per object.
pub(crate) const STRIPES: usize = 256;
/// How often snapshot creation retries after losing a snap-id race.
const SNAP_CREATE_RETRIES_MAX: u32 = 20;
/// Most per-object ops one request keeps in flight.
pub(crate) const PARALLEL_OPS_MAX: usize = 64;

/// An open image handle. `Send + Sync`; share it (e.g. in an `Arc`) between
/// tasks: every method takes `&self` and I/O calls may run concurrently.
pub struct Image {
    pub(crate) inner: Arc<Inner>,
    /// A second `Image` over a handle's `Inner` (the lock owner running a
    /// proxied operation): its drop must not close the handle.
    alias: bool,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("spec", &self.inner.spec())
            .field("id", &self.inner.id)
            .finish()
    }
}

/// A clone's parent: the spec and an open read-only handle at the parent snapshot.
pub(crate) struct ParentLink {
    pub spec: ParentSpec,
    pub image: Arc<Image>,
}

/// What a handle currently looks at: the head or one snapshot.
pub(crate) struct View {
    pub header: Header,
    /// `NOSNAP` for the head.
    pub snap: SnapId,
    pub snap_name: Option<String>,
    /// Size of this view.
    pub size: u64,
    pub parent: Option<ParentLink>,
    pub snapc: SnapContext,
    pub map: Arc<ObjectMap>,
    pub map_oid: ObjectId,
}

impl View {
    pub fn order(&self) -> u8 {
        self.header.order
    }
    pub fn obj_size(&self) -> u64 {
        1u64 << self.header.order
    }
    pub fn overlap(&self) -> u64 {
        self.parent
            .as_ref()
            .map_or(0, |p| p.spec.overlap.min(self.size))
    }
    pub fn has_object_map(&self) -> bool {
        self.header.features & FEATURE_OBJECT_MAP != 0
    }
}

pub(crate) struct Inner {
    pub rados: Arc<dyn Rados>,
    pub io: IoCtx,
    pub id: String,
    pub name: String,
    /// Opened read-only (snapshot handles are always read-only).
    pub read_only: bool,
    pub header_oid: ObjectId,
    view: std::sync::RwLock<Arc<View>>,
    pub gate: tokio::sync::RwLock<()>,
    pub stripes: Vec<tokio::sync::RwLock<()>>,
    watch: Mutex<Option<u64>>,
    closed: AtomicBool,
    /// An [`ImageCloser`] was taken: its holder closes the handle, so a
    /// drop leaves the watch and the lock to it (two concurrent releases
    /// would race).
    closer_taken: AtomicBool,
    /// This handle owns the exclusive lock (see `lock.rs`); flipped only
    /// with `gate` held exclusively, so a write holding `gate` shared sees
    /// it stable.
    pub owned: AtomicBool,
    pub lock: crate::lock::LockState,
    /// Proxied operations: ids of our own, and those run for others.
    pub proxy: crate::proxy::ProxyState,
    /// The access and modify timestamps this handle last recorded or read
    /// (ns since the epoch; see [`Inner::touch`]).
    atime_ns: AtomicU64,
    mtime_ns: AtomicU64,
    /// [`TimestampIntervals`] in ns: access, modify.
    ts_every_ns: [AtomicU64; 2],
}

/// Least time between two access (modify) timestamps one handle records:
/// librbd's `rbd_atime_update_interval` (`rbd_mtime_update_interval`),
/// 60 s by default; zero records none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampIntervals {
    /// Between two recorded reads.
    pub access: std::time::Duration,
    /// Between two recorded writes.
    pub modify: std::time::Duration,
}

impl Default for TimestampIntervals {
    fn default() -> Self {
        TimestampIntervals {
            access: std::time::Duration::from_secs(60),
            modify: std::time::Duration::from_secs(60),
        }
    }
}

/// A duration in ns, saturated.
fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl TimestampIntervals {
    /// From the two options' values in seconds.
    pub fn from_options(atime_secs: u64, mtime_secs: u64) -> Self {
        TimestampIntervals {
            access: std::time::Duration::from_secs(atime_secs),
            modify: std::time::Duration::from_secs(mtime_secs),
        }
    }
}

impl Inner {
    pub fn view(&self) -> Arc<View> {
        // Poisoning only happens if a panic hit while swapping an Arc.
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_view(&self, v: View) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }

    pub fn spec(&self) -> String {
        self.io.spec(&self.name)
    }

    /// Record a read (`modify` false) or a write in the header's access
    /// or modify timestamp, as librbd does: at most once per interval
    /// ([`TimestampIntervals`]) per handle, without waiting for it (a
    /// failure is only logged: the I/O itself succeeded). Read-only
    /// handles and snapshot views record nothing.
    pub fn touch(&self, view: &View, modify: bool) {
        let (slot, every) = if modify {
            (&self.mtime_ns, &self.ts_every_ns[1])
        } else {
            (&self.atime_ns, &self.ts_every_ns[0])
        };
        let every = every.load(Ordering::Relaxed);
        if self.read_only || view.snap != NOSNAP || every == 0 {
            return;
        }
        let now = crate::now_ns();
        let last = slot.load(Ordering::Relaxed);
        if now.saturating_sub(last) < every
            || slot
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key = if modify {
            header::KEY_MODIFY_TS
        } else {
            header::KEY_ACCESS_TS
        };
        let vals = std::collections::BTreeMap::from([(
            key.to_string(),
            bytes::Bytes::copy_from_slice(&now.to_le_bytes()),
        )]);
        let req = OpRequest::new(self.header_oid.clone())
            .op(Op::AssertExists)
            .op(Op::OmapSetVals(vals));
        let rados = self.rados.clone();
        let what = self.spec();
        rt.spawn(async move {
            if let Err(e) = rados.operate(req).await {
                tracing::debug!(image = %what, %key, error = %e, "recording the timestamp failed");
            }
        });
    }

    /// Change how often this handle records I/O in the timestamps (the
    /// C library applies the image's own configuration after opening).
    pub fn set_timestamp_intervals(&self, t: TimestampIntervals) {
        self.ts_every_ns[0].store(duration_ns(t.access), Ordering::Relaxed);
        self.ts_every_ns[1].store(duration_ns(t.modify), Ordering::Relaxed);
    }

    /// The access and modify timestamps as this handle knows them: the
    /// header's as last read, or what it recorded since, if later.
    pub fn timestamps(&self, view: &View) -> (u64, u64) {
        (
            view.header
                .access_ts_ns
                .max(self.atime_ns.load(Ordering::Relaxed)),
            view.header
                .modify_ts_ns
                .max(self.mtime_ns.load(Ordering::Relaxed)),
        )
    }

    pub fn what(&self, view: &View) -> String {
        match &view.snap_name {
            Some(s) => format!("image {}@{s}", self.spec()),
            None => format!("image {}", self.spec()),
        }
    }

    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(RbdError::Closed { what: self.spec() })
        } else {
            Ok(())
        }
    }

    /// `EROFS` for read-only handles and snapshot views.
    pub fn check_writable(&self, view: &View) -> Result<()> {
        self.check_open()?;
        if self.read_only || view.snap != NOSNAP {
            Err(RbdError::read_only(self.what(view)))
        } else {
            Ok(())
        }
    }

    pub fn data_oid(&self, objno: u64) -> ObjectId {
        self.io.oid(layout::data_oid(&self.id, objno))
    }

    pub fn map_oid(&self, snap: SnapId) -> ObjectId {
        self.io.oid(layout::object_map_oid(&self.id, snap))
    }

    /// Cookie of the header watch (`None`: opened without one, or closed).
    pub fn watch_cookie(&self) -> Option<u64> {
        *self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enter the data path for a write: `gate` shared, handle writable and,
    /// when the image has the exclusive-lock feature, the lock owned
    /// (taken first, from its owner if need be).
    pub async fn write_gate(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>> {
        loop {
            self.check_open()?;
            let g = self.gate.read().await;
            self.check_writable(&self.view())?;
            if !self.lock_required() || self.owned.load(Ordering::Acquire) {
                return Ok(g);
            }
            drop(g);
            if self.lock.managed.load(Ordering::Acquire) {
                // Standard policy after rbd_lock_release: no implicit acquire.
                return Err(RbdError::read_only(format!(
                    "image {} (exclusive lock released with rbd_lock_release)",
                    self.spec()
                )));
            }
            self.acquire_lock(true, false).await?;
        }
    }

    /// Re-read header and object map and rebuild the view (parent too).
    /// Callers hold `gate` exclusively.
    pub async fn reload_fresh(&self) -> Result<()> {
        let v = self.view();
        let what = format!("image {}", self.spec());
        // The object map is read alongside the header when the view says
        // there is one (build_view reads it after the header otherwise, and
        // ignores it if the header no longer has the feature); both reads
        // start after whatever the caller waited for, so they see the same
        // writes as the header read then the map read would.
        let map_oid = self.map_oid(v.snap);
        let (h, map) = futures::join!(
            read_header(self.rados.as_ref(), &self.header_oid, &what),
            async {
                if v.has_object_map() {
                    objmap::load(self.rados.as_ref(), &map_oid).await.map(Some)
                } else {
                    Ok(None)
                }
            }
        );
        self.install_fresh(h?, map?).await
    }

    /// Install a view built from `h`, a header known to be current (and
    /// `map`, the object map read after it, if read: `None` has
    /// `build_view` read it), of the same snapshot as the current view.
    pub(crate) async fn install_fresh(
        &self,
        h: Header,
        map: Option<Option<Vec<u8>>>,
    ) -> Result<()> {
        let v = self.view();
        let nv = build_view(
            &self.rados,
            &self.io,
            &self.id,
            &self.spec(),
            h,
            v.snap,
            None,
            map,
        )
        .await?;
        self.set_view(nv);
        Ok(())
    }

    pub fn stripe(&self, objno: u64) -> &tokio::sync::RwLock<()> {
        &self.stripes[(objno % STRIPES as u64) as usize]
    }

    /// Re-read the header and install a fresh view of the same snapshot.
    /// Callers that need I/O quiesced hold `gate` exclusively.
    pub async fn reload(&self) -> Result<Arc<View>> {
        let old = self.view();
        let what = format!("image {}", self.spec());
        let h = read_header(self.rados.as_ref(), &self.header_oid, &what).await?;
        self.install(h, Some(old.snap)).await
    }

    /// Build and install a view of `snap` (`None` = keep the current one)
    /// from a header just read or written.
    pub async fn install(&self, h: Header, snap: Option<SnapId>) -> Result<Arc<View>> {
        self.install_with_map(h, snap, None).await
    }

    /// [`Inner::install`] with the stored object map already in hand
    /// (`Some(None)`: absent), saving its read.
    pub async fn install_with_map(
        &self,
        h: Header,
        snap: Option<SnapId>,
        map_bytes: Option<Option<Vec<u8>>>,
    ) -> Result<Arc<View>> {
        let old = self.view();
        let snap = snap.unwrap_or(old.snap);
        let v = build_view(
            &self.rados,
            &self.io,
            &self.id,
            &self.spec(),
            h,
            snap,
            Some(&old),
            map_bytes,
        )
        .await?;
        self.set_view(v);
        Ok(self.view())
    }

    /// CAS-update the header, then install the result.
    pub async fn update<F>(&self, f: F) -> Result<Arc<View>>
    where
        F: FnMut(&mut Header) -> Result<()>,
    {
        let what = format!("image {}", self.spec());
        let h = update_header(&self.rados, &self.header_oid, &what, f).await?;
        self.install(h, None).await
    }

    /// [`Inner::update`] whose first compare-and-swap starts from `start`
    /// (a header just read or written; `None`: read it), with the view's
    /// object map re-read concurrently with the header update instead of
    /// after it (independent objects: one round trip instead of two). Only
    /// for header changes that do not write that map themselves.
    pub async fn update_from<F>(&self, start: Option<Header>, f: F) -> Result<Arc<View>>
    where
        F: FnMut(&mut Header) -> Result<()>,
    {
        let what = format!("image {}", self.spec());
        let old = self.view();
        let load_map = old.header.features & FEATURE_OBJECT_MAP != 0;
        let (h, m) = futures::join!(
            header::update_header_from(&self.rados, &self.header_oid, &what, start, f),
            async {
                if load_map {
                    objmap::load(self.rados.as_ref(), &old.map_oid)
                        .await
                        .map(Some)
                } else {
                    Ok(None)
                }
            }
        );
        let h = h?;
        // A failed map read is retried by the install (as `update` does).
        let map_bytes = m.ok().flatten();
        self.install_with_map(h, Some(old.snap), map_bytes).await
    }
}

/// Open the parent of a view (read-only, at the parent snapshot, no watch),
/// reusing the previous view's handle when it is the same parent.
async fn open_parent(
    rados: &Arc<dyn Rados>,
    spec: &ParentSpec,
    old: Option<&View>,
) -> Result<ParentLink> {
    if let Some(p) = old.and_then(|o| o.parent.as_ref()) {
        if p.spec.pool == spec.pool
            && p.spec.namespace == spec.namespace
            && p.spec.image_id == spec.image_id
            && p.spec.snap_id == spec.snap_id
        {
            return Ok(ParentLink {
                spec: spec.clone(),
                image: p.image.clone(),
            });
        }
    }
    let pool_name = rbd::pool_name(rados.as_ref(), spec.pool).await?;
    let io = IoCtx::new(spec.pool, pool_name, spec.namespace.clone());
    // A parent moved to the trash keeps serving its clones under its old name.
    let name = match rbd::lookup_name(rados.as_ref(), &io, &spec.image_id).await? {
        Some(n) => n,
        None => crate::trash::trashed_name(rados.as_ref(), &io, &spec.image_id)
            .await?
            .unwrap_or_else(|| spec.image_id.clone()),
    };
    let image = open(
        rados.clone(),
        io,
        spec.image_id.clone(),
        name,
        // A migration's destination reads its source's head.
        (spec.snap_id != NOSNAP).then_some(SnapSpec::Id(spec.snap_id)),
        HandleMode {
            read_only: true,
            watch: false,
            // Read-only: never takes (or breaks) a lock.
            fence: crate::lock::FencePolicy::default(),
            timestamps: TimestampIntervals::default(),
        },
    )
    .await?;
    Ok(ParentLink {
        spec: spec.clone(),
        image: Arc::new(image),
    })
}

/// The view of `snap` from `header`: object map (`map_bytes` when the
/// caller already holds the stored map, `Some(None)` meaning absent) and
/// parent handle (reused from `old` when unchanged).
#[allow(clippy::too_many_arguments)]
async fn build_view(
    rados: &Arc<dyn Rados>,
    io: &IoCtx,
    id: &str,
    spec: &str,
    header: Header,
    snap: SnapId,
    old: Option<&View>,
    map_bytes: Option<Option<Vec<u8>>>,
) -> Result<View> {
    let (size, parent_spec, snap_name) = if snap == NOSNAP {
        (header.size, header.parent.clone(), None)
    } else {
        let rec = header
            .snaps
            .get(&snap)
            .ok_or_else(|| RbdError::not_found(format!("snapshot id {snap} of image {spec}")))?;
        (rec.size, rec.parent.clone(), Some(rec.name.clone()))
    };
    let map_oid = io.oid(layout::object_map_oid(id, snap));
    // Object map and parent are independent objects: fetched concurrently.
    let map = async {
        if header.features & FEATURE_OBJECT_MAP == 0 {
            return Ok(ObjectMap::disabled());
        }
        let bytes = match map_bytes {
            Some(b) => b,
            None => objmap::load(rados.as_ref(), &map_oid).await?,
        };
        Ok::<_, RbdError>(ObjectMap::from_bytes(bytes.as_deref()))
    };
    let parent = async {
        match &parent_spec {
            Some(p) => Ok(Some(open_parent(rados, p, old).await?)),
            None => Ok(None),
        }
    };
    let (map, parent) = futures::try_join!(map, parent)?;
    let snapc = header.snapc();
    Ok(View {
        header,
        snap,
        snap_name,
        size,
        parent,
        snapc,
        map: Arc::new(map),
        map_oid,
    })
}

/// How [`open`] sets a handle up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandleMode {
    /// Refuse mutations (`EROFS`).
    pub read_only: bool,
    /// Watch the header (a parent opened for reads does not).
    pub watch: bool,
    /// What breaking another owner's lock does to it.
    pub fence: crate::lock::FencePolicy,
    /// How often I/O is recorded in the header's timestamps.
    pub timestamps: TimestampIntervals,
}

/// Open image `id` (boxed: opening a clone opens its parent recursively).
pub(crate) fn open(
    rados: Arc<dyn Rados>,
    io: IoCtx,
    id: String,
    name: String,
    snap: Option<SnapSpec>,
    mode: HandleMode,
) -> BoxFuture<'static, Result<Image>> {
    let HandleMode {
        read_only,
        watch,
        fence,
        timestamps,
    } = mode;
    async move {
        let header_oid = io.oid(layout::header_oid(&id));
        let spec = io.spec(&name);
        let h = read_header(rados.as_ref(), &header_oid, &format!("image {spec}")).await?;
        let snap_id = match &snap {
            None => NOSNAP,
            Some(SnapSpec::Id(s)) => {
                if !h.snaps.contains_key(s) {
                    return Err(RbdError::not_found(format!(
                        "snapshot id {s} of image {spec}"
                    )));
                }
                *s
            }
            Some(SnapSpec::Name(n)) => {
                h.snap_by_name(n)
                    .ok_or_else(|| RbdError::not_found(format!("snapshot {spec}@{n}")))?
                    .id
            }
        };
        // The watch's callback finds the handle through this slot, filled
        // once the handle exists (notifications before that get no answer
        // from it, which a requester treats as "not the owner").
        let slot = Arc::new(std::sync::OnceLock::new());
        // The watch is registered while object map and parent are read
        // (independent objects: one round trip instead of two).
        let watching = async {
            if watch {
                rados
                    .watch_with(&header_oid, crate::lock::watch_callback(slot.clone()))
                    .await
                    .map(Some)
                    .ctx(|| format!("watching header of {spec}"))
            } else {
                Ok(None)
            }
        };
        let (view, cookie) = futures::join!(
            build_view(&rados, &io, &id, &spec, h, snap_id, None, None),
            watching
        );
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                // Leave no watch behind a failed open.
                if let Ok(Some(c)) = cookie {
                    let _ = rados.unwatch(&header_oid, c).await;
                }
                return Err(e);
            }
        };
        let cookie = cookie?;
        let (access_ts_ns, modify_ts_ns) = (view.header.access_ts_ns, view.header.modify_ts_ns);
        let inner = Arc::new(Inner {
            rados,
            io,
            id,
            name,
            read_only: read_only || snap_id != NOSNAP,
            header_oid,
            view: std::sync::RwLock::new(Arc::new(view)),
            gate: tokio::sync::RwLock::new(()),
            stripes: (0..STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
            watch: Mutex::new(cookie),
            closed: AtomicBool::new(false),
            closer_taken: AtomicBool::new(false),
            owned: AtomicBool::new(false),
            lock: crate::lock::LockState {
                fence,
                ..Default::default()
            },
            proxy: Default::default(),
            atime_ns: AtomicU64::new(access_ts_ns),
            mtime_ns: AtomicU64::new(modify_ts_ns),
            ts_every_ns: [
                AtomicU64::new(duration_ns(timestamps.access)),
                AtomicU64::new(duration_ns(timestamps.modify)),
            ],
        });
        let _ = slot.set(Arc::downgrade(&inner));
        Ok(Image {
            inner,
            alias: false,
        })
    }
    .boxed()
}

/// Mark the head map's existing objects clean (relative to a snapshot
/// just created), as a compare-and-swap on the map object: the lock
/// owner (a VM) may be setting entries one byte at a time meanwhile
/// (an object it creates), and a whole-map write from an older read would
/// turn such an entry back to "absent" (its handle would then read zeros).
/// On a change the map is read again; after a few failed tries the marks
/// are skipped (conservative: diffs count those objects as written). The
/// map as stored, `None` if unknown (marks skipped, or the map is gone).
async fn mark_clean(
    rados: &dyn Rados,
    oid: &ObjectId,
    mut m: Vec<u8>,
    mut version: u64,
    what: &str,
) -> Result<Option<Vec<u8>>> {
    for attempt in 0..8u32 {
        let marked: Vec<u8> = m
            .iter()
            .map(|&s| {
                if s == OBJECT_EXISTS {
                    OBJECT_EXISTS_CLEAN
                } else {
                    s
                }
            })
            .collect();
        if marked == m || objmap::store_all_if(rados, oid, marked.clone(), version).await? {
            return Ok(Some(marked));
        }
        header::backoff(attempt).await;
        match objmap::load_versioned(rados, oid).await? {
            Some((fm, fv)) => (m, version) = (fm, fv),
            None => return Ok(None),
        }
    }
    tracing::warn!("{what}: the head object map kept changing; not marking it clean");
    Ok(None)
}

/// Closes the handle it was taken from ([`Image::closer`]), whether or not
/// that `Image` still exists: a dropped handle only *spawns* its lock
/// release and unwatch, which a runtime shutting down never runs, so the
/// next client would find the lock held by a dead owner and have to break
/// it (and blocklist that owner).
pub struct ImageCloser(Arc<Inner>);

impl ImageCloser {
    /// [`Image::close`] on the handle; idempotent.
    pub async fn close(&self) -> Result<()> {
        Image::alias(self.0.clone()).close().await
    }

    /// The image as opened (`pool/[namespace/]name`), for messages.
    pub fn spec(&self) -> String {
        self.0.spec()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.alias || self.inner.closer_taken.load(Ordering::Acquire) {
            return;
        }
        // Unregister the header watch if close() was not called, so that a
        // dropped handle does not keep the image busy.
        // Release the exclusive lock first (it names the watch).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if self.inner.watch_cookie().is_some() {
                tracing::debug!(image = %self.inner.spec(), "handle dropped without close");
                let inner = self.inner.clone();
                rt.spawn(async move {
                    let _ = inner.release_lock().await;
                    let cookie = inner.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(cookie) = cookie {
                        let _ = inner.rados.unwatch(&inner.header_oid, cookie).await;
                    }
                });
            }
        }
    }
}

fn snap_info(s: &SnapRecord) -> SnapInfo {
    SnapInfo {
        id: s.id,
        name: s.name.clone(),
        size: s.size,
        timestamp_ns: s.timestamp_ns,
        protected: s.protection != Protection::Unprotected,
        group: s.group.clone(),
    }
}

impl Image {
    /// Image name as opened.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Image id (immutable).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Pool and namespace of the image.
    pub fn ioctx(&self) -> &IoCtx {
        &self.inner.io
    }

    /// Whether every mutation is refused (read-only open or snapshot view).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only || self.inner.view().snap != NOSNAP
    }

    /// The snapshot this handle reads (`None` = head).
    pub fn snap_id(&self) -> Option<SnapId> {
        let v = self.inner.view();
        (v.snap != NOSNAP).then_some(v.snap)
    }

    /// Size in bytes of the current view (no I/O).
    pub fn size(&self) -> u64 {
        self.inner.view().size
    }

    /// Feature bits.
    pub fn features(&self) -> u64 {
        self.inner.view().header.features
    }

    /// The most snapshots the image may have (`u64::MAX`: no limit), as
    /// this handle last read the header.
    pub fn snap_limit(&self) -> u64 {
        self.inner.view().header.snap_limit.unwrap_or(u64::MAX)
    }

    /// Limit the image's snapshots to `limit` (`u64::MAX` removes the
    /// limit), as `rbd snap limit set|clear`: `ERANGE` when the image
    /// already has more, `EROFS` on a read-only handle. A snapshot beyond
    /// the limit then fails with `EDQUOT`.
    pub async fn set_snap_limit(&self, limit: u64) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let spec = inner.spec();
        inner
            .update(|h| {
                if limit == u64::MAX {
                    h.snap_limit = None;
                    return Ok(());
                }
                let n = h.snaps.len() as u64;
                if n > limit {
                    return Err(RbdError::rados(
                        format!("setting the snapshot limit of {spec}"),
                        quarry_rados::RadosError::new(
                            Errno::ERANGE,
                            format!("the image has {n} snapshots, more than {limit}"),
                        ),
                    ));
                }
                h.snap_limit = Some(limit);
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Flag bits: the stored flags plus `OBJECT_MAP_INVALID`/`FAST_DIFF_INVALID`
    /// when the object map of this view could not be loaded.
    pub fn flags(&self) -> u64 {
        let v = self.inner.view();
        let mut f = v.header.flags;
        if v.has_object_map() && !v.map.is_valid() {
            f |= FLAG_OBJECT_MAP_INVALID;
            if v.header.features & FEATURE_FAST_DIFF != 0 {
                f |= FLAG_FAST_DIFF_INVALID;
            }
        }
        f
    }

    /// How often this handle records reads and writes in the image's
    /// access and modify timestamps (`rbd_atime_update_interval`,
    /// `rbd_mtime_update_interval`; zero: never).
    pub fn set_timestamp_intervals(&self, t: TimestampIntervals) {
        self.inner.set_timestamp_intervals(t);
    }

    /// `rbd_stat`: geometry and names of the current view (no I/O).
    pub fn stat(&self) -> ImageInfo {
        let v = self.inner.view();
        ImageInfo {
            size: v.size,
            obj_size: v.obj_size(),
            num_objs: num_objects(v.size, v.order()),
            order: v.order(),
            block_name_prefix: v.header.object_prefix.clone(),
            parent_pool: v.parent.as_ref().map_or(-1, |p| p.spec.pool),
            parent_name: v
                .parent
                .as_ref()
                .map_or(String::new(), |p| p.image.name().to_string()),
            id: self.inner.id.clone(),
            name: self.inner.name.clone(),
            features: v.header.features,
            flags: self.flags(),
            snapshot_count: v.header.snaps.len() as u64,
            create_timestamp_ns: v.header.create_ts_ns,
            access_timestamp_ns: self.inner.timestamps(&v).0,
            modify_timestamp_ns: self.inner.timestamps(&v).1,
        }
    }

    /// Parent overlap of the current view (`ENOENT` if not a clone).
    pub fn overlap(&self) -> Result<u64> {
        let v = self.inner.view();
        match &v.parent {
            Some(_) => Ok(v.overlap()),
            None => Err(RbdError::not_found(format!(
                "parent of {}",
                self.inner.what(&v)
            ))),
        }
    }

    /// Re-read header and object map (see the crate docs on consistency).
    pub async fn refresh(&self) -> Result<()> {
        self.inner.check_open()?;
        let _g = self.inner.gate.write().await;
        // Rebuilds the parent handle too: it may have changed (flatten elsewhere).
        self.inner.reload_fresh().await
    }

    /// `rbd_invalidate_cache`: Quarry caches no data, so this is [`Image::refresh`].
    pub async fn invalidate_cache(&self) -> Result<()> {
        self.refresh().await
    }

    /// A closer for this handle, for a caller that lets the `Image` drop
    /// where the drop's own cleanup could not finish (a process about to
    /// exit): see [`ImageCloser`].
    pub fn closer(&self) -> ImageCloser {
        self.inner.closer_taken.store(true, Ordering::Release);
        ImageCloser(self.inner.clone())
    }

    /// Unregister the header watch; later calls fail with `ESHUTDOWN`. Idempotent.
    pub async fn close(&self) -> Result<()> {
        tracing::debug!(image = %self.inner.spec(), "closing");
        if !self.inner.closed.load(Ordering::Acquire) {
            // Hand the lock back before closing (the hook may still write).
            self.inner.release_lock().await?;
        }
        self.inner.closed.store(true, Ordering::Release);
        let cookie = self
            .inner
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = cookie {
            match self.inner.rados.unwatch(&self.inner.header_oid, c).await {
                Ok(()) => {}
                Err(e) if e.errno == Errno::ENOENT => {}
                Err(e) => {
                    return Err(RbdError::rados(
                        format!("unwatching {}", self.inner.spec()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- header operations

    /// A second `Image` over `inner` (the lock owner running a proxied
    /// operation); dropping it leaves the handle open.
    pub(crate) fn alias(inner: Arc<Inner>) -> Image {
        Image { inner, alias: true }
    }

    /// Run header operation `op` (see `proxy.rs`): when another live
    /// handle owns the exclusive lock, it is sent to that owner, which runs
    /// it with its own I/O quiesced and answers with the result; otherwise
    /// it runs here, holding the lock if the image has the feature (taken
    /// when free, broken when its owner is dead or does not answer, as for
    /// a write). Then the image's other open handles have re-read the
    /// header. The value is the new snapshot's id for a snapshot create, 0
    /// otherwise.
    async fn run_op(
        &self,
        op: ProxyOp,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64> {
        use crate::lock::ProxyAnswer;
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let what = format!("{} of image {}", op.name(), inner.spec());
        let id = inner.proxy.next_id();
        let started = tokio::time::Instant::now();
        let mut last_in_progress = false;
        let mut last_owner = None;
        // A snapshot's id, allocated while this handle took the lock.
        let mut pre_id: Option<PreId> = None;
        // (No early return below: the loop breaks with the result, so an
        // unused `pre_id` is released.)
        let r = loop {
            if let Err(e) = inner.check_open() {
                break Err(e);
            }
            // Flatten may run long: bounded only while its owner answers.
            if started.elapsed() > crate::proxy::OP_TIMEOUT && !(last_in_progress && op.is_long()) {
                break Err(crate::proxy::timed_out(&what, last_owner));
            }
            last_in_progress = false;
            if !inner.lock_required() {
                break self.run_unlocked(&op, progress, pre_id.take()).await;
            }
            if inner.owned.load(Ordering::Acquire) {
                // Held so the lock is not handed over halfway (a request
                // for it is answered, and the hand-over waits for this).
                let g = inner.lock.op.lock().await;
                if !inner.owned.load(Ordering::Acquire) {
                    continue;
                }
                let r = self.execute_with(&op, progress, pre_id.take()).await;
                drop(g);
                if r.is_ok() {
                    inner.notify_header_update().await;
                }
                break r;
            }
            let (probe, owner) = match inner.lock_probe().await {
                Ok(o) => o,
                Err(e) => break Err(e),
            };
            match owner {
                Some((client, cookie, true)) if !inner.is_me_id(client, cookie) => {
                    last_owner = Some(client);
                    let answer = match inner.send_proxied((client, cookie), id, &op).await {
                        Ok(a) => a,
                        Err(e) => break Err(e),
                    };
                    match answer {
                        ProxyAnswer::Done(r) => {
                            tracing::debug!(image = %inner.spec(), op = op.name(), owner = client, ok = r.is_ok(), "proxied operation answered");
                            break r;
                        }
                        ProxyAnswer::InProgress => {
                            if !op.is_long() && started.elapsed() > crate::proxy::OP_TIMEOUT {
                                break Err(crate::proxy::timed_out(&what, Some(client)));
                            }
                            last_in_progress = true;
                        }
                        ProxyAnswer::NotOwner | ProxyAnswer::Gone => {
                            tokio::time::sleep(crate::lock::RETRY_PAUSE).await;
                        }
                        ProxyAnswer::Unknown => {
                            tracing::warn!(image = %inner.spec(), op = op.name(), owner = client, "the exclusive lock owner does not take proxied operations (older version): running it here");
                            break self.run_unlocked(&op, progress, pre_id.take()).await;
                        }
                        ProxyAnswer::Unresponsive => {
                            tracing::warn!(image = %inner.spec(), op = op.name(), owner = client, "the exclusive lock owner did not answer: taking the lock");
                            if let Err(e) = inner
                                .acquire_lock_from(true, false, Some((client, cookie)), None)
                                .await
                            {
                                break Err(e);
                            }
                        }
                    }
                }
                // Nobody holds the lock, its owner is dead, or the record
                // names this handle: take it without asking anyone (a live
                // owner appearing meanwhile answers EROFS: look again).
                _ => {
                    if inner.lock.managed.load(Ordering::Acquire) {
                        // After rbd_lock_release no implicit acquire (the
                        // standard policy): as before proxying.
                        break self.run_unlocked(&op, progress, pre_id.take()).await;
                    }
                    // A snapshot's id (a monitor commit) is allocated while
                    // the lock is taken (a record read, its compare-and-swap
                    // and the header re-read): the two are independent, and
                    // the snapshot then starts with its id in hand.
                    let acquired = match &op {
                        ProxyOp::SnapCreate { name }
                            if pre_id.is_none()
                                && inner.view().header.snap_by_name(name).is_none() =>
                        {
                            pre_id = Some(PreId::start(inner.rados.clone(), inner.io.pool_id));
                            inner
                                .acquire_lock_from(false, false, None, Some(probe))
                                .await
                        }
                        _ => {
                            inner
                                .acquire_lock_from(false, false, None, Some(probe))
                                .await
                        }
                    };
                    match acquired {
                        Ok(()) => {}
                        Err(e) if e.errno() == Errno::EROFS => {}
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        // Unused (the operation was proxied, or failed before its
        // snapshot took it): no header names it, so it goes back.
        if let Some(p) = pre_id {
            p.release(&*inner.rados, inner.io.pool_id).await;
        }
        r
    }

    /// `op` here without the lock (image without exclusive-lock, or an
    /// owner of an older version), then the header-update notification.
    async fn run_unlocked(
        &self,
        op: &ProxyOp,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        pre_id: Option<PreId>,
    ) -> Result<u64> {
        let v = self.execute_with(op, progress, pre_id).await?;
        self.inner.notify_header_update().await;
        Ok(v)
    }

    /// Perform `op` on this handle (the `_here` functions).
    pub(crate) async fn execute_here(
        &self,
        op: &ProxyOp,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64> {
        self.execute_with(op, progress, None).await
    }

    /// [`Self::execute_here`] with a snap id already allocated for a
    /// snapshot create (it owns `pre_id`: uses it, or releases it).
    async fn execute_with(
        &self,
        op: &ProxyOp,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        mut pre_id: Option<PreId>,
    ) -> Result<u64> {
        let is_create = matches!(op, ProxyOp::SnapCreate { .. });
        debug_assert!(
            pre_id.is_none() || is_create,
            "a snap id allocated for {}",
            op.name()
        );
        if !is_create {
            if let Some(p) = pre_id.take() {
                p.release(&*self.inner.rados, self.inner.io.pool_id).await;
            }
        }
        match op {
            ProxyOp::SnapCreate { name } => self.snap_create_here(name, pre_id).await,
            ProxyOp::SnapRemove { name, id } => {
                let spec = match (name, id) {
                    (Some(n), _) => SnapSpec::Name(n.clone()),
                    (None, Some(i)) => SnapSpec::Id(*i),
                    (None, None) => {
                        return Err(RbdError::invalid("snapshot remove without a snapshot"))
                    }
                };
                self.snap_remove_here(spec).await.map(|()| 0)
            }
            ProxyOp::SnapRename { src, dst } => self.snap_rename_here(src, dst).await.map(|()| 0),
            ProxyOp::SnapProtect { name } => self.snap_protect_here(name).await.map(|()| 0),
            ProxyOp::SnapUnprotect { name } => self.snap_unprotect_here(name).await.map(|()| 0),
            ProxyOp::Resize { size } => self.resize_here(*size).await.map(|()| 0),
            ProxyOp::Flatten => self.flatten_here(&mut *progress).await.map(|()| 0),
            ProxyOp::MigrationExecute => self
                .migration_execute_here(&mut *progress)
                .await
                .map(|()| 0),
            ProxyOp::RebuildObjectMap => self.rebuild_object_map_here().await.map(|()| 0),
            ProxyOp::UpdateFeatures { features, enabled } => self
                .update_features_here(*features, *enabled)
                .await
                .map(|()| 0),
        }
    }

    // ---------------------------------------------------------------- snapshots

    /// The header as stored now (does not change this handle's view).
    async fn fresh_header(&self) -> Result<Header> {
        self.inner.check_open()?;
        let what = format!("image {}", self.inner.spec());
        read_header(self.inner.rados.as_ref(), &self.inner.header_oid, &what).await
    }

    /// Snapshots, ascending by id, read fresh from the header (so other
    /// clients' snapshots show up without a refresh).
    pub async fn snap_list(&self) -> Result<Vec<SnapInfo>> {
        Ok(self
            .fresh_header()
            .await?
            .snaps
            .values()
            .map(snap_info)
            .collect())
    }

    /// The consistency group this image belongs to, read fresh.
    pub async fn group(&self) -> Result<Option<crate::GroupRef>> {
        Ok(self.fresh_header().await?.group)
    }

    /// Take the exclusive lock as a write would (its owner is asked to hand
    /// it over) and keep it until the guard drops: a request for it is
    /// answered, and the hand-over waits for the guard (the requester's
    /// writes wait meanwhile). `None` when the image has no lock to take.
    pub(crate) async fn hold_lock(&self) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>> {
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        loop {
            inner.check_open()?;
            if !inner.lock_required() {
                return Ok(None);
            }
            if !inner.owned.load(Ordering::Acquire) {
                inner.acquire_lock(true, false).await?;
            }
            let g = inner.lock.op.lock().await;
            if inner.owned.load(Ordering::Acquire) {
                return Ok(Some(g));
            }
        }
    }

    /// Tell the image's other open handles that its header changed (see
    /// `Inner::notify_header_update`).
    pub(crate) async fn notify_header_changed(&self) {
        self.inner.notify_header_update().await
    }

    /// One snapshot by name, read fresh (`ENOENT`).
    pub async fn snap_info(&self, name: &str) -> Result<SnapInfo> {
        self.fresh_header()
            .await?
            .snap_by_name(name)
            .map(snap_info)
            .ok_or_else(|| RbdError::not_found(format!("snapshot {}@{name}", self.inner.spec())))
    }

    /// Whether a snapshot exists, read fresh.
    pub async fn snap_exists(&self, name: &str) -> Result<bool> {
        Ok(self.fresh_header().await?.snap_by_name(name).is_some())
    }

    /// Create a snapshot of the head (see [`Self::snap_create_here`]),
    /// through the exclusive-lock owner when another handle owns it (see
    /// [`Self::run_op`]); the image's other open handles re-read the header
    /// before it returns.
    pub async fn snap_create(&self, name: &str) -> Result<SnapId> {
        layout::validate_snap_name(name)?;
        self.run_op(
            ProxyOp::SnapCreate {
                name: name.to_string(),
            },
            &mut |_, _| {},
        )
        .await
    }

    /// Take a snapshot: O(1) in image size — allocate a self-managed snap
    /// id, record it in the header (CAS), freeze the object map. Later
    /// writes carry the new snap context. `EEXIST` on a duplicate name,
    /// `EROFS` on read-only handles.
    ///
    /// Round trips: header, head object map and the monitor's snap id are
    /// fetched concurrently; then the snapshot's map copy together with the
    /// header compare-and-swap (at the version just read); then the head
    /// map's "clean" marks, only once both are stored (clean marks without
    /// the snapshot, or relative to a snapshot without its map, would
    /// mislead diffs; a snapshot without its map only makes them read).
    ///
    /// `pre_id`: a snap id allocated for it beforehand (while the lock was
    /// taken); released if the snapshot fails before it could use it.
    async fn snap_create_here(&self, name: &str, pre_id: Option<PreId>) -> Result<SnapId> {
        let mut pre_id = pre_id;
        let r = self.snap_create_inner(name, &mut pre_id, None).await;
        if let Some(p) = pre_id {
            p.release(&*self.inner.rados, self.inner.io.pool_id).await;
        }
        r
    }

    /// Start allocating a snap id for a snapshot of this image (see
    /// [`Self::snap_create_grouped`]).
    pub(crate) fn start_snap_id(&self) -> PreId {
        PreId::start(self.inner.rados.clone(), self.inner.io.pool_id)
    }

    /// Give back a snap id from [`Self::start_snap_id`] unused.
    pub(crate) async fn release_snap_id(&self, p: PreId) {
        p.release(&*self.inner.rados, self.inner.io.pool_id).await
    }

    /// A group snapshot's image snapshot, taken by a handle that owns the
    /// exclusive lock (or an image without the feature), with a snap id
    /// allocated beforehand (so the monitor's round trip is not spent
    /// while the members' writes wait): see `group.rs`.
    pub(crate) async fn snap_create_grouped(
        &self,
        name: &str,
        group: crate::GroupSnapNamespace,
        pre_id: PreId,
    ) -> Result<SnapId> {
        let mut pre_id = Some(pre_id);
        let r = self.snap_create_inner(name, &mut pre_id, Some(group)).await;
        if let Some(p) = pre_id {
            p.release(&*self.inner.rados, self.inner.io.pool_id).await;
        }
        r
    }

    /// [`Self::snap_create_here`]; takes `pre_id` once it is in use.
    /// `group`: the snapshot belongs to that group snapshot.
    async fn snap_create_inner(
        &self,
        name: &str,
        pre_id: &mut Option<PreId>,
        group: Option<crate::GroupSnapNamespace>,
    ) -> Result<SnapId> {
        layout::validate_snap_name(name)?;
        let inner = &self.inner;
        let _g = inner.gate.write().await;
        let cur = inner.view();
        inner.check_writable(&cur)?;
        let what = format!("snapshot {}@{name}", inner.spec());
        let header_what = format!("image {}", inner.spec());
        // A name this handle saw taken is checked against the stored header
        // before a snap id is allocated (each allocation is a monitor
        // commit and a map epoch), so a duplicate costs one read.
        if cur.header.snap_by_name(name).is_some()
            && read_header(inner.rados.as_ref(), &inner.header_oid, &header_what)
                .await?
                .snap_by_name(name)
                .is_some()
        {
            return Err(RbdError::exists(what));
        }
        let rados = inner.rados.as_ref();
        let pool = inner.io.pool_id;
        let head_map_oid = inner.map_oid(NOSNAP);
        let alloc_id = || async {
            rados
                .snap_create(pool)
                .await
                .ctx(|| format!("allocating a snap id for {what}"))
        };
        // Read the header and the head map; the map is read speculatively
        // when the handle's view says the image has one.
        let read_state = |with_map: bool| {
            let head_map_oid = &head_map_oid;
            let header_what = &header_what;
            async move {
                let (h, m) =
                    futures::join!(read_header(rados, &inner.header_oid, header_what), async {
                        if with_map {
                            objmap::load_versioned(rados, head_map_oid).await.map(Some)
                        } else {
                            Ok(None)
                        }
                    });
                let h = h?;
                let m = match m? {
                    Some(m) => m,
                    None if h.features & FEATURE_OBJECT_MAP != 0 => {
                        objmap::load_versioned(rados, head_map_oid).await?
                    }
                    None => None,
                };
                let m = if h.features & FEATURE_OBJECT_MAP != 0 {
                    m
                } else {
                    None
                };
                Ok::<_, RbdError>((h, m))
            }
        };
        // An id allocated beforehand is used as is (see `run_op`).
        let pre_id = pre_id.take();
        let (state, id) = futures::join!(read_state(cur.has_object_map()), async {
            match pre_id {
                // A failed allocation is retried here (and reported).
                Some(p) => match p.id().await {
                    Ok(id) => Ok(id),
                    Err(_) => alloc_id().await,
                },
                None => alloc_id().await,
            }
        });
        let release = |id: SnapId| release_snap_id(rados, pool, id);
        let (mut h, mut head_map) = match state {
            Ok(s) => s,
            Err(e) => {
                if let Ok(id) = id {
                    release(id).await;
                }
                return Err(e);
            }
        };
        let mut id = id?;
        let mut attempt = 0;
        let (stored, head_map, map_copied) = loop {
            let fail = |e: RbdError| async move {
                release(id).await;
                Err(e)
            };
            if h.snap_by_name(name).is_some() {
                return fail(RbdError::exists(what.clone())).await;
            }
            if let Some(limit) = h.snap_limit.filter(|&l| h.snaps.len() as u64 >= l) {
                return fail(RbdError::rados(
                    what.clone(),
                    quarry_rados::RadosError::new(
                        Errno::EDQUOT,
                        format!("the image's snapshot limit of {limit} is reached"),
                    ),
                ))
                .await;
            }
            // Another client may record a newer snap id first; then ours is
            // stale (objects written under the newer snap context would not
            // be cloned for it) and a fresh id is needed, as librbd does on ESTALE.
            if id <= h.snap_seq {
                release(id).await;
                attempt += 1;
                if attempt >= SNAP_CREATE_RETRIES_MAX {
                    return Err(RbdError::Contention { what: what.clone() });
                }
                id = alloc_id().await?;
                continue;
            }
            let mut nh = h.clone();
            nh.snaps.insert(
                id,
                SnapRecord {
                    id,
                    name: name.to_string(),
                    size: h.size,
                    timestamp_ns: crate::now_ns(),
                    protection: Protection::Unprotected,
                    parent: h.parent.clone(),
                    group: group.clone(),
                },
            );
            nh.snap_seq = id;
            let snap_map_oid = inner.map_oid(id);
            // The snapshot's map copy and the header write go out together
            // (independent objects). A header naming a snapshot whose map
            // is missing (the copy failed, or a crash came in between) is
            // safe: readers and diffs take a missing map as unknown (they
            // read the objects). What must never exist is "clean" marks
            // relative to a snapshot without a map (its removal could not
            // fold them into the next map), so the head map is marked only
            // once both are stored.
            let (copied, result) = futures::join!(
                async {
                    match &head_map {
                        Some((m, _)) => objmap::store_all(rados, &snap_map_oid, m.clone()).await,
                        None => Ok(()),
                    }
                },
                header::cas_write(rados, &inner.header_oid, &header_what, &h, nh)
            );
            let copied = match copied {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("{what}: storing the snapshot's object map: {e}");
                    false
                }
            };
            match result {
                Ok(Some(stored)) => break (stored, head_map, copied),
                Ok(None) => {
                    // The header changed meanwhile. If it changed because our
                    // own write was applied (a resend re-executed after its
                    // reply was lost fails the version check), the header
                    // names our snap id, which no other client can hold:
                    // then we are done, and releasing the id or removing the
                    // map would destroy the snapshot the header records.
                    let (fh, fm) = match read_state(h.features & FEATURE_OBJECT_MAP != 0).await {
                        Ok(s) => s,
                        // Unknown whether it was applied: keep id and map
                        // (a leaked id is harmless, a released one is not).
                        Err(e) => return Err(e),
                    };
                    if fh.snaps.get(&id).is_some_and(|r| r.name == name) {
                        break (fh, head_map, copied);
                    }
                    // Otherwise start over from the fresh read.
                    let _ = objmap::remove(rados, &snap_map_oid).await;
                    attempt += 1;
                    if attempt >= SNAP_CREATE_RETRIES_MAX {
                        return fail(RbdError::Contention { what: what.clone() }).await;
                    }
                    header::backoff(attempt).await;
                    (h, head_map) = (fh, fm);
                }
                Err(e) => {
                    // The write may have been applied with its reply lost:
                    // release nothing the stored header may name.
                    match read_header(rados, &inner.header_oid, &header_what).await {
                        Ok(fh) if fh.snaps.get(&id).is_some_and(|r| r.name == name) => {
                            break (fh, head_map, copied);
                        }
                        Ok(_) => {
                            let _ = objmap::remove(rados, &snap_map_oid).await;
                            return fail(e).await;
                        }
                        Err(_) => return Err(e),
                    }
                }
            }
        };
        // Objects existing now are "clean" relative to the new snapshot:
        // fast-diff reports an object as changed only once it is written
        // again. Without the snapshot's map no marks: "written since the
        // previous snapshot" then also means "since this one" (conservative).
        // The map the view installs: `None` has it read again.
        let (view_map, stored_map) = match head_map {
            Some((m, version)) if map_copied => {
                match mark_clean(rados, &head_map_oid, m, version, &what).await {
                    Ok(m) => (m.map(Some), Ok(())),
                    Err(e) => (None, Err(e)),
                }
            }
            Some((m, _)) => (Some(Some(m)), Ok(())),
            None => (Some(None), Ok(())),
        };
        inner
            .install_with_map(stored, Some(NOSNAP), view_map)
            .await?;
        stored_map?;
        Ok(id)
    }

    /// Remove a snapshot (`ENOENT`; `EBUSY` if protected). Its clones are
    /// trimmed by the object layer.
    pub async fn snap_remove(&self, name: &str) -> Result<()> {
        self.snap_remove_spec(SnapSpec::Name(name.to_string()))
            .await
    }

    /// Clients that have this image open (watchers of its header),
    /// this handle included (`rbd_watchers_list`).
    pub async fn watchers(&self) -> Result<Vec<quarry_rados::Watcher>> {
        let inner = &self.inner;
        inner
            .rados
            .list_watchers(&inner.header_oid)
            .await
            .ctx(|| format!("listing watchers of {}", inner.spec()))
    }

    /// Remove a snapshot by id (`rbd_snap_remove_by_id`).
    pub async fn snap_remove_by_id(&self, id: SnapId) -> Result<()> {
        self.snap_remove_spec(SnapSpec::Id(id)).await
    }

    async fn snap_remove_spec(&self, spec: SnapSpec) -> Result<()> {
        self.run_op(ProxyOp::snap_remove(&spec), &mut |_, _| {})
            .await?;
        Ok(())
    }

    /// Round trips: the header and the two object maps the fold needs
    /// (the removed snapshot's and the next newer one's, guessed from this
    /// handle's view and checked against the header) are read together;
    /// then the fold's write if it changed anything, the header
    /// compare-and-swap at the version just read (the head map re-read
    /// alongside), then the snap id's release at the monitor, the
    /// snapshot's map removal and the parent's child link together (each
    /// only needs the header to no longer name the snapshot).
    async fn snap_remove_here(&self, spec: SnapSpec) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.gate.write().await;
        let cur = inner.view();
        inner.check_writable(&cur)?;
        let what = match &spec {
            SnapSpec::Name(name) => format!("snapshot {}@{name}", inner.spec()),
            SnapSpec::Id(id) => format!("snapshot id {id} of {}", inner.spec()),
        };
        let find = |h: &Header| -> Option<SnapRecord> {
            match &spec {
                SnapSpec::Name(name) => h.snap_by_name(name).cloned(),
                SnapSpec::Id(id) => h.snaps.get(id).cloned(),
            }
        };
        // The next newer snapshot's map (the head's if none) receives the fold.
        let next_of =
            |h: &Header, id: SnapId| h.snaps.range(id + 1..).next().map_or(NOSNAP, |(n, _)| *n);
        let rados = inner.rados.as_ref();
        let load_pair = |removed: SnapId, next: SnapId| async move {
            let (removed_oid, next_oid) = (inner.map_oid(removed), inner.map_oid(next));
            let (r, n) = futures::join!(
                objmap::load(rados, &removed_oid),
                objmap::load(rados, &next_oid)
            );
            Ok::<_, RbdError>((r?, n?))
        };
        let guess = if cur.has_object_map() {
            find(&cur.header).map(|r| (r.id, next_of(&cur.header, r.id)))
        } else {
            None
        };
        let header_what = format!("image {}", inner.spec());
        let (h, guessed_maps) =
            futures::join!(read_header(rados, &inner.header_oid, &header_what), async {
                match guess {
                    Some((r, n)) => Some(load_pair(r, n).await),
                    None => None,
                }
            });
        let h = h?;
        let rec = find(&h).ok_or_else(|| RbdError::not_found(what.clone()))?;
        if rec.protection != Protection::Unprotected {
            return Err(RbdError::busy(what, "it is protected"));
        }
        if h.features & FEATURE_OBJECT_MAP != 0 {
            // Fold "written since the previous snapshot" of the removed map
            // into the next newer one, so diffs across it stay complete
            // (before the header stops naming the snapshot: a crash in
            // between leaves extra "written" marks, which are only
            // conservative).
            let next = next_of(&h, rec.id);
            let (removed, newer) = match (guess, guessed_maps) {
                (Some(g), Some(Ok(maps))) if g == (rec.id, next) => maps,
                _ => load_pair(rec.id, next).await?,
            };
            if let (Some(r), Some(mut n)) = (removed, newer) {
                let mut changed = false;
                for (i, s) in n.iter_mut().enumerate() {
                    if *s == OBJECT_EXISTS_CLEAN && r.get(i) == Some(&OBJECT_EXISTS) {
                        *s = OBJECT_EXISTS;
                        changed = true;
                    }
                }
                if changed {
                    objmap::store_all(rados, &inner.map_oid(next), n).await?;
                }
            }
        }
        // A retry after a lost compare-and-swap that finds the snapshot gone
        // cannot tell our own write re-executed (its reply lost) from another
        // client's removal; either way it is removed, and releasing the id
        // and the map below is idempotent, so both count as done (answering
        // ENOENT would leave the id unreleased: its clones never trimmed).
        let mut attempts = 0u32;
        let nv = inner
            .update_from(Some(h), |h| {
                attempts += 1;
                let Some(r) = h.snaps.get(&rec.id) else {
                    if attempts > 1 {
                        return Ok(());
                    }
                    return Err(RbdError::not_found(what.clone()));
                };
                if r.protection != Protection::Unprotected {
                    return Err(RbdError::busy(what.clone(), "it is protected"));
                }
                h.snaps.remove(&rec.id);
                Ok(())
            })
            .await?;
        let release = async {
            match rados.snap_remove(inner.io.pool_id, rec.id).await {
                Ok(()) => Ok(()),
                Err(e) if e.errno == Errno::ENOENT => Ok(()),
                Err(e) => Err(RbdError::rados(format!("trimming {what}"), e)),
            }
        };
        let unlink = async {
            match &rec.parent {
                Some(p) if !nv.header.references_parent(p) => {
                    rbd::set_child_link(rados, p, &self.child_ref(), false).await
                }
                _ => Ok(()),
            }
        };
        let snap_map_oid = inner.map_oid(rec.id);
        let (released, map_removed, unlinked) =
            futures::join!(release, objmap::remove(rados, &snap_map_oid), unlink);
        released?;
        map_removed?;
        unlinked?;
        Ok(())
    }

    pub(crate) fn child_ref(&self) -> ChildRef {
        ChildRef {
            pool: self.inner.io.pool_id,
            namespace: self.inner.io.namespace.clone(),
            image_id: self.inner.id.clone(),
        }
    }

    /// See [`Self::snap_rename_here`]; the image's other open handles re-read
    /// the header before it returns.
    pub async fn snap_rename(&self, src: &str, dst: &str) -> Result<()> {
        layout::validate_snap_name(dst)?;
        let op = ProxyOp::SnapRename {
            src: src.to_string(),
            dst: dst.to_string(),
        };
        self.run_op(op, &mut |_, _| {}).await?;
        Ok(())
    }

    /// Rename a snapshot (`ENOENT`, `EEXIST`, `EINVAL`).
    async fn snap_rename_here(&self, src: &str, dst: &str) -> Result<()> {
        layout::validate_snap_name(dst)?;
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let spec = inner.spec();
        // After a lost compare-and-swap, the state the write would produce
        // counts as done: it may be our own write re-executed after its
        // reply was lost (see snap_remove_spec).
        let mut attempts = 0u32;
        let mut renamed = None;
        inner
            .update(|h| {
                attempts += 1;
                let Some(id) = h.snap_by_name(src).map(|s| s.id) else {
                    let ours = h.snap_by_name(dst).map(|s| s.id);
                    if attempts > 1 && ours.is_some() && ours == renamed {
                        return Ok(());
                    }
                    return Err(RbdError::not_found(format!("snapshot {spec}@{src}")));
                };
                renamed = Some(id);
                if src == dst {
                    return Ok(());
                }
                if h.snap_by_name(dst).is_some() {
                    return Err(RbdError::exists(format!("snapshot {spec}@{dst}")));
                }
                if let Some(s) = h.snaps.get_mut(&id) {
                    s.name = dst.to_string();
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// See [`Self::snap_protect_here`]; the image's other open handles re-read
    /// the header before it returns.
    pub async fn snap_protect(&self, name: &str) -> Result<()> {
        let op = ProxyOp::SnapProtect {
            name: name.to_string(),
        };
        self.run_op(op, &mut |_, _| {}).await?;
        Ok(())
    }

    /// Protect a snapshot so it can be cloned (`EBUSY` if already protected).
    async fn snap_protect_here(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let what = format!("snapshot {}@{name}", inner.spec());
        let mut attempts = 0u32;
        inner
            .update_from(None, |h| {
                attempts += 1;
                let id = h
                    .snap_by_name(name)
                    .ok_or_else(|| RbdError::not_found(what.clone()))?
                    .id;
                let s = h
                    .snaps
                    .get_mut(&id)
                    .ok_or_else(|| RbdError::not_found(what.clone()))?;
                // Protected on a retry after a lost compare-and-swap: our
                // own write, re-executed after its reply was lost, or a
                // concurrent protect; either way the snapshot is protected.
                if attempts > 1 && s.protection == Protection::Protected {
                    return Ok(());
                }
                if s.protection != Protection::Unprotected {
                    return Err(RbdError::busy(what.clone(), "it is already protected"));
                }
                s.protection = Protection::Protected;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// See [`Self::snap_unprotect_here`]; the image's other open handles re-read
    /// the header before it returns.
    pub async fn snap_unprotect(&self, name: &str) -> Result<()> {
        let op = ProxyOp::SnapUnprotect {
            name: name.to_string(),
        };
        self.run_op(op, &mut |_, _| {}).await?;
        Ok(())
    }

    /// Unprotect a snapshot (`EINVAL` if not protected, `EBUSY` while clones exist).
    async fn snap_unprotect_here(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let what = format!("snapshot {}@{name}", inner.spec());
        let set = |from: Protection, to: Protection| {
            let what = what.clone();
            let mut attempts = 0u32;
            move |h: &mut Header| {
                attempts += 1;
                let id = h
                    .snap_by_name(name)
                    .ok_or_else(|| RbdError::not_found(what.clone()))?
                    .id;
                let s = h
                    .snaps
                    .get_mut(&id)
                    .ok_or_else(|| RbdError::not_found(what.clone()))?;
                // Already in the target state on a retry after a lost
                // compare-and-swap: our own write, re-executed.
                if attempts > 1 && s.protection == to {
                    return Ok(());
                }
                if s.protection != from {
                    return Err(match s.protection {
                        Protection::Unprotected => {
                            RbdError::invalid(format!("{what} is not protected"))
                        }
                        _ => RbdError::busy(what.clone(), "another unprotect is in progress"),
                    });
                }
                s.protection = to;
                Ok(())
            }
        };
        let v = inner
            .update_from(None, set(Protection::Protected, Protection::Unprotecting))
            .await?;
        let id = v.header.snap_by_name(name).map(|s| s.id);
        let children = match id {
            Some(id) => rbd::list_children(inner.rados.as_ref(), &inner.io, &inner.id, id).await,
            None => Ok(vec![]),
        };
        match children {
            // The second change starts from the header the first stored
            // (its version still current unless someone changed it since).
            Ok(c) if c.is_empty() => {
                inner
                    .update_from(
                        Some(v.header.clone()),
                        set(Protection::Unprotecting, Protection::Unprotected),
                    )
                    .await?;
                Ok(())
            }
            other => {
                inner
                    .update_from(
                        Some(v.header.clone()),
                        set(Protection::Unprotecting, Protection::Protected),
                    )
                    .await?;
                let c = other?;
                Err(RbdError::busy(what, format!("it has {} clone(s)", c.len())))
            }
        }
    }

    /// Whether a snapshot is protected (`ENOENT`).
    pub async fn snap_is_protected(&self, name: &str) -> Result<bool> {
        Ok(self.snap_info(name).await?.protected)
    }

    /// Switch this handle to a snapshot (read-only view) or back to the head (`None`).
    pub async fn set_snap(&self, snap: Option<SnapSpec>) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let _g = inner.gate.write().await;
        let what = format!("image {}", inner.spec());
        let h = read_header(inner.rados.as_ref(), &inner.header_oid, &what).await?;
        let id = match snap {
            None => NOSNAP,
            Some(SnapSpec::Id(id)) => {
                if !h.snaps.contains_key(&id) {
                    return Err(RbdError::not_found(format!("snapshot id {id} of {what}")));
                }
                id
            }
            Some(SnapSpec::Name(n)) => {
                h.snap_by_name(&n)
                    .ok_or_else(|| RbdError::not_found(format!("snapshot {}@{n}", inner.spec())))?
                    .id
            }
        };
        inner.install(h, Some(id)).await?;
        Ok(())
    }

    /// See [`Self::snap_rollback_here`]; the image's other open handles re-read
    /// the header before it returns. Not proxied (as librbd): with the
    /// exclusive-lock feature the handle takes the lock first (asking its
    /// owner to hand it over, as a write does) and holds it throughout, so
    /// no other client writes the head, or its object map, meanwhile.
    pub async fn snap_rollback(&self, name: &str) -> Result<()> {
        self.snap_rollback_spec(&SnapSpec::Name(name.to_string()))
            .await
    }

    /// [`Self::snap_rollback`] to a snapshot given by id (group snapshots'
    /// image snapshots have no user name).
    pub async fn snap_rollback_by_id(&self, id: SnapId) -> Result<()> {
        self.snap_rollback_spec(&SnapSpec::Id(id)).await
    }

    async fn snap_rollback_spec(&self, spec: &SnapSpec) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        loop {
            inner.check_open()?;
            if inner.lock_required() && !inner.owned.load(Ordering::Acquire) {
                if inner.lock.managed.load(Ordering::Acquire) {
                    // Standard policy after rbd_lock_release, as for writes.
                    return Err(RbdError::read_only(format!(
                        "image {} (exclusive lock released with rbd_lock_release)",
                        inner.spec()
                    )));
                }
                inner.acquire_lock(true, false).await?;
            }
            // Held so the lock is not handed over halfway.
            let _op = inner.lock.op.lock().await;
            if inner.lock_required() && !inner.owned.load(Ordering::Acquire) {
                continue;
            }
            self.snap_rollback_here(spec).await?;
            break;
        }
        inner.notify_header_update().await;
        Ok(())
    }

    /// Roll the head back to a snapshot: per-object rollback (objects
    /// created after it are removed), size restored. `EROFS`, `ENOENT`.
    async fn snap_rollback_here(&self, spec: &SnapSpec) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.gate.write().await;
        let v = inner.reload().await?;
        inner.check_writable(&v)?;
        let (what, rec) = match spec {
            SnapSpec::Name(name) => (
                format!("snapshot {}@{name}", inner.spec()),
                v.header.snap_by_name(name),
            ),
            SnapSpec::Id(id) => (
                format!("snapshot id {id} of {}", inner.spec()),
                v.header.snaps.get(id),
            ),
        };
        let rec = rec
            .ok_or_else(|| RbdError::not_found(what.clone()))?
            .clone();
        let rados = inner.rados.as_ref();
        let order = v.order();
        let snap_map = if v.has_object_map() {
            objmap::load(rados, &inner.map_oid(rec.id)).await?
        } else {
            None
        };
        let head_valid = v.map.is_valid();
        let n = num_objects(v.size, order).max(num_objects(rec.size, order));
        let objs: Vec<u64> = (0..n)
            .filter(|&o| match &snap_map {
                Some(sm) if head_valid => {
                    objmap::may_exist(sm.get(o as usize).copied().unwrap_or(0))
                        || v.map.get(o).is_none_or(objmap::may_exist)
                }
                _ => true,
            })
            .collect();
        let snapc = v.snapc.clone();
        futures::stream::iter(objs.into_iter().map(|o| {
            let req = OpRequest::new(inner.data_oid(o))
                .with_snapc(snapc.clone())
                .op(Op::Rollback(rec.id));
            let what = &what;
            async move {
                match rados.operate(req).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.errno == Errno::ENOENT => Ok(()),
                    Err(e) => Err(RbdError::rados(
                        format!("rolling object {o} back to {what}"),
                        e,
                    )),
                }
            }
        }))
        .buffer_unordered(PARALLEL_OPS_MAX)
        .try_collect::<Vec<()>>()
        .await?;
        if v.has_object_map() {
            // Everything that exists now was rewritten relative to the
            // newest snapshot: mark it dirty (conservative for fast-diff).
            let states = match &snap_map {
                Some(sm) => sm
                    .iter()
                    .take(num_objects(rec.size, order) as usize)
                    .map(|&s| {
                        if objmap::may_exist(s) {
                            OBJECT_EXISTS
                        } else {
                            OBJECT_NONEXISTENT
                        }
                    })
                    .collect(),
                None => vec![OBJECT_EXISTS; num_objects(rec.size, order) as usize],
            };
            objmap::store_all(rados, &v.map_oid, states).await?;
        }
        // The snapshot's parent link (and overlap) comes back with its data:
        // objects absent at the snapshot read through to the parent again.
        let old_parent = v.header.parent.clone();
        let nv = inner
            .update(|h| {
                h.size = rec.size;
                h.parent = rec.parent.clone();
                Ok(())
            })
            .await?;
        if let Some(p) = old_parent {
            if !nv.header.references_parent(&p) {
                rbd::set_child_link(rados, &p, &self.child_ref(), false).await?;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- resize / flatten

    /// See [`Self::resize_here`]; the image's other open handles re-read
    /// the header before it returns.
    pub async fn resize(&self, size: u64) -> Result<()> {
        self.run_op(ProxyOp::Resize { size }, &mut |_, _| {})
            .await?;
        Ok(())
    }

    /// Resize. Growing only changes the header; shrinking first removes or
    /// truncates the objects past the new end (with the snap context, so
    /// snapshots keep their data) and shrinks a clone's parent overlap.
    async fn resize_here(&self, size: u64) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.gate.write().await;
        let v = inner.reload().await?;
        inner.check_writable(&v)?;
        rbd::validate_geometry(size, v.order(), v.header.features)?;
        if size < v.size {
            let order = v.order();
            let os = v.obj_size();
            let keep = num_objects(size, order);
            let old = num_objects(v.size, order);
            let rados = inner.rados.as_ref();
            let snapc = v.snapc.clone();
            let map = v.map.clone();
            let doomed: Vec<u64> = (keep..old)
                .filter(|&o| map.get(o).is_none_or(objmap::may_exist))
                .collect();
            futures::stream::iter(doomed.into_iter().map(|o| {
                let req = OpRequest::new(inner.data_oid(o))
                    .with_snapc(snapc.clone())
                    .op(Op::Remove);
                let map = map.clone();
                let map_oid = v.map_oid.clone();
                async move {
                    let _s = inner.stripe(o).write().await;
                    match rados.operate(req).await {
                        Ok(_) => {}
                        Err(e) if e.errno == Errno::ENOENT => {}
                        Err(e) => {
                            return Err(RbdError::rados(
                                format!("removing object {o} of {}", inner.spec()),
                                e,
                            ))
                        }
                    }
                    if map.get(o).is_some_and(objmap::may_exist) {
                        objmap::store_state(rados, &map_oid, o, OBJECT_NONEXISTENT).await?;
                        map.set(o, OBJECT_NONEXISTENT);
                    }
                    Ok(())
                }
            }))
            .buffer_unordered(PARALLEL_OPS_MAX)
            .try_collect::<Vec<()>>()
            .await?;
            if size & (os - 1) != 0 {
                let o = size >> order;
                if map.get(o).is_none_or(objmap::may_exist) {
                    let _s = inner.stripe(o).write().await;
                    if map.get(o) == Some(OBJECT_EXISTS_CLEAN) {
                        objmap::store_state(rados, &v.map_oid, o, OBJECT_EXISTS).await?;
                        map.set(o, OBJECT_EXISTS);
                    }
                    let req = OpRequest::new(inner.data_oid(o))
                        .with_snapc(snapc.clone())
                        .op(Op::AssertExists)
                        .op(Op::Truncate(size % os));
                    match rados.operate(req).await {
                        Ok(_) => {}
                        Err(e) if e.errno == Errno::ENOENT => {}
                        Err(e) => {
                            return Err(RbdError::rados(
                                format!("truncating object {o} of {}", inner.spec()),
                                e,
                            ))
                        }
                    }
                }
            }
            if v.has_object_map() {
                objmap::store_truncate(rados, &v.map_oid, keep).await?;
                map.truncate(keep);
            }
        }
        inner
            .update(|h| {
                let shrink = size < h.size;
                h.size = size;
                if shrink {
                    if let Some(p) = h.parent.as_mut() {
                        p.overlap = p.overlap.min(size);
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// See [`Self::flatten_here`]; the image's other open handles re-read
    /// the header before it returns.
    /// Proxied to the lock owner, `progress` is not called.
    pub async fn flatten<F>(&self, mut progress: F) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        self.run_op(ProxyOp::Flatten, &mut progress).await?;
        Ok(())
    }

    /// Copy all parent data within the overlap into this clone, then detach
    /// the parent. `progress(done, total)` is called after each object.
    /// `EINVAL` if the image has no parent, `EROFS` if read-only.
    ///
    /// With deep-flatten the snapshots are detached too: every object a
    /// snapshot reads through to the parent is copied up deeply (see
    /// `io::copy_up`), then each snapshot that now reads only its own
    /// objects loses its parent reference in the same header update as
    /// the head. A snapshot that still needs parent data (an object
    /// copied up before deep copy-up, or removed and recreated in the
    /// head since) keeps it, so it can never read zeros for data it had.
    /// Crash safety: parent references go only after every object is
    /// copied, and every step is idempotent, so a rerun finishes the job.
    async fn flatten_here<F>(&self, mut progress: F) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        let inner = &self.inner;
        let v = {
            let _g = inner.gate.write().await;
            inner.reload().await?
        };
        inner.check_writable(&v)?;
        let Some(parent) = &v.parent else {
            return Err(RbdError::invalid(format!(
                "image {} has no parent",
                inner.spec()
            )));
        };
        let pspec = parent.spec.clone();
        let deep = v.header.features & crate::FEATURE_DEEP_FLATTEN != 0;
        // Snapshots reading through the same parent, with their maps.
        let mut snaps: Vec<(SnapId, u64, ObjectMap)> = Vec::new();
        if deep {
            for s in v.header.snaps.values() {
                let Some(p) = s.parent.as_ref().filter(|p| p.same_source(&pspec)) else {
                    continue;
                };
                let map = if v.has_object_map() {
                    let bytes = objmap::load(inner.rados.as_ref(), &inner.map_oid(s.id)).await?;
                    ObjectMap::from_bytes(bytes.as_deref())
                } else {
                    ObjectMap::disabled()
                };
                snaps.push((s.id, p.overlap.min(s.size), map));
            }
        }
        let head_objs = num_objects(v.overlap(), v.order());
        let span = snaps.iter().map(|s| s.1).fold(v.overlap(), u64::max);
        let stuck: std::collections::BTreeSet<SnapId> = {
            let _g = inner.gate.read().await;
            let total = num_objects(span, v.order());
            let mut done = 0u64;
            progress(0, total);
            let (vr, snaps) = (&v, &snaps);
            let mut s = futures::stream::iter((0..total).map(|o| async move {
                if o < head_objs {
                    crate::io::copy_up_if_absent(inner, vr, o, false).await?;
                }
                let checks: Vec<crate::io::SnapCheck<'_>> = snaps
                    .iter()
                    .map(|(id, overlap, map)| crate::io::SnapCheck {
                        snap: *id,
                        parent_len: ((o << vr.order()) + vr.obj_size())
                            .min(*overlap)
                            .saturating_sub(o << vr.order()),
                        map,
                    })
                    .collect();
                crate::io::snaps_needing_parent(inner, vr, o, &checks).await
            }))
            .buffer_unordered(PARALLEL_OPS_MAX / 4);
            let mut stuck = std::collections::BTreeSet::new();
            while let Some(r) = s.next().await {
                stuck.extend(r?);
                done += 1;
                progress(done, total);
            }
            stuck
        };
        let checked: std::collections::BTreeSet<SnapId> = snaps.iter().map(|s| s.0).collect();
        let _g = inner.gate.write().await;
        let nv = inner
            .update(|h| {
                h.parent = None;
                for s in h.snaps.values_mut() {
                    let detach = s.parent.as_ref().is_some_and(|p| p.same_source(&pspec))
                        && checked.contains(&s.id)
                        && !stuck.contains(&s.id);
                    if detach {
                        s.parent = None;
                    }
                }
                Ok(())
            })
            .await?;
        if !nv.header.references_parent(&pspec) {
            rbd::set_child_link(inner.rados.as_ref(), &pspec, &self.child_ref(), false).await?;
        }
        Ok(())
    }

    /// A live migration's copy, run by the exclusive-lock owner: see
    /// [`Self::migration_execute_here`].
    pub(crate) async fn migration_execute<F>(&self, mut progress: F) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        self.run_op(ProxyOp::MigrationExecute, &mut progress)
            .await?;
        Ok(())
    }

    /// Copy a migration's data from its source (the parent link with snap
    /// id `NOSNAP`). When the source is itself a clone and no snapshot of
    /// this image reads through the source, only the objects the source
    /// has are copied and the link then moves to the source's own parent
    /// (so a migrated clone stays a clone of its golden image, as with
    /// librbd); otherwise this is a flatten. Nothing to do once the source
    /// link is gone (an interrupted execute finished).
    async fn migration_execute_here<F>(&self, mut progress: F) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        let inner = &self.inner;
        let v = {
            let _g = inner.gate.write().await;
            inner.reload().await?
        };
        inner.check_writable(&v)?;
        let Some(src) = v.parent.as_ref().filter(|p| p.spec.snap_id == NOSNAP) else {
            return Ok(());
        };
        let pspec = src.spec.clone();
        let grand = src
            .image
            .inner
            .view()
            .parent
            .as_ref()
            .map(|l| l.spec.clone());
        let snapped = v
            .header
            .snaps
            .values()
            .any(|s| s.parent.as_ref().is_some_and(|p| p.same_source(&pspec)));
        let Some(grand) = grand.filter(|_| !snapped) else {
            return self.flatten_here(progress).await;
        };
        let total = num_objects(v.overlap(), v.order());
        {
            let _g = inner.gate.read().await;
            let (vr, sinner) = (&v, &src.image.inner);
            let mut done = 0u64;
            progress(0, total);
            let mut s = futures::stream::iter((0..total).map(|o| async move {
                // Where the source has no object it reads its parent (or
                // zeros past the overlap), as this image will once relinked.
                let probe = OpRequest::new(sinner.data_oid(o)).op(Op::Stat);
                match inner.rados.operate(probe).await {
                    Ok(_) => crate::io::copy_up_if_absent(inner, vr, o, true).await,
                    Err(e) if e.errno == quarry_common::Errno::ENOENT => Ok(()),
                    Err(e) => Err(RbdError::rados(
                        format!("probing object {o} of {}", sinner.what(&sinner.view())),
                        e,
                    )),
                }
            }))
            .buffer_unordered(PARALLEL_OPS_MAX / 4);
            while let Some(r) = s.next().await {
                r?;
                done += 1;
                progress(done, total);
            }
        }
        let child = self.child_ref();
        // Registered before the header names it, so the golden snapshot
        // never has an unlisted child.
        rbd::set_child_link(inner.rados.as_ref(), &grand, &child, true).await?;
        let _g = inner.gate.write().await;
        inner
            .update(|h| {
                let cur = h
                    .parent
                    .as_ref()
                    .filter(|p| p.same_source(&pspec))
                    .map(|p| p.overlap)
                    .ok_or_else(|| {
                        RbdError::busy(
                            format!("image {}", inner.spec()),
                            "its parent changed during the migration's copy",
                        )
                    })?;
                h.parent = Some(ParentSpec {
                    overlap: grand.overlap.min(cur),
                    ..grand.clone()
                });
                Ok(())
            })
            .await?;
        rbd::set_child_link(inner.rados.as_ref(), &pspec, &child, false).await
    }

    /// See [`Self::update_features_here`]; the image's other open handles re-read
    /// the header before it returns.
    pub async fn update_features(&self, features: u64, enabled: bool) -> Result<()> {
        let op = ProxyOp::UpdateFeatures { features, enabled };
        self.run_op(op, &mut |_, _| {}).await?;
        Ok(())
    }

    /// Enable or disable mutable features (`rbd_update_features`):
    /// exclusive-lock, object-map, fast-diff. Dependencies are enforced as
    /// librbd does (`EINVAL`); other bits are `EINVAL`. Enabling object-map
    /// builds the head map from the listed data objects (snapshots get no
    /// map: diffs from them take the exact, slower path).
    async fn update_features_here(&self, features: u64, enabled: bool) -> Result<()> {
        use crate::{FEATURE_EXCLUSIVE_LOCK, FEATURE_OBJECT_MAP};
        const MUTABLE: u64 = FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF;
        if features & !MUTABLE != 0 {
            return Err(RbdError::invalid(format!(
                "features {:#x} cannot be changed",
                features & !MUTABLE
            )));
        }
        let inner = &self.inner;
        let _g = inner.gate.write().await;
        let v = inner.reload().await?;
        inner.check_writable(&v)?;
        let old = v.header.features;
        let new = if enabled {
            old | features
        } else {
            old & !features
        };
        if new & FEATURE_OBJECT_MAP != 0 && new & FEATURE_EXCLUSIVE_LOCK == 0 {
            return Err(RbdError::invalid("object-map requires exclusive-lock"));
        }
        if new & FEATURE_FAST_DIFF != 0 && new & FEATURE_OBJECT_MAP == 0 {
            return Err(RbdError::invalid("fast-diff requires object-map"));
        }
        if new == old {
            return Ok(());
        }
        let rados = inner.rados.as_ref();
        if new & FEATURE_OBJECT_MAP != 0 && old & FEATURE_OBJECT_MAP == 0 {
            let states = self.listed_object_states(v.size, v.order()).await?;
            objmap::store_all(rados, &v.map_oid, states).await?;
        }
        if new & FEATURE_OBJECT_MAP == 0 && old & FEATURE_OBJECT_MAP != 0 {
            let mut maps = vec![inner.map_oid(NOSNAP)];
            maps.extend(v.header.snaps.keys().map(|&s| inner.map_oid(s)));
            for m in maps {
                objmap::remove(rados, &m).await?;
            }
        }
        inner
            .update(|h| {
                h.features = if enabled {
                    h.features | features
                } else {
                    h.features & !features
                };
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// The head's object states from the data objects that exist (a
    /// listing of the pool): `EXISTS` for each, `NONEXISTENT` elsewhere.
    async fn listed_object_states(&self, size: u64, order: u8) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let prefix = format!("{}.", layout::data_prefix(&inner.id));
        let listed = inner
            .rados
            .list_objects(inner.io.pool_id, Some(&inner.io.namespace))
            .await
            .ctx(|| format!("listing objects of {}", inner.spec()))?;
        let mut states = vec![OBJECT_NONEXISTENT; num_objects(size, order) as usize];
        for o in listed {
            let Some(hex) = o.name.strip_prefix(&prefix) else {
                continue;
            };
            match u64::from_str_radix(hex, 16) {
                Ok(n) if (n as usize) < states.len() => states[n as usize] = OBJECT_EXISTS,
                _ => {}
            }
        }
        Ok(states)
    }

    /// `rbd object-map rebuild` (`rbd_rebuild_object_map`): the head's
    /// object map made again from the objects that exist, through the
    /// exclusive-lock owner; for a map that was lost or damaged (the image
    /// then reads every object and diffs list them, `rbd info` shows
    /// `object map invalid`). `EINVAL` without the object-map feature.
    pub async fn rebuild_object_map(&self) -> Result<()> {
        self.run_op(ProxyOp::RebuildObjectMap, &mut |_, _| {})
            .await?;
        Ok(())
    }

    async fn rebuild_object_map_here(&self) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.gate.write().await;
        let v = inner.reload().await?;
        inner.check_writable(&v)?;
        if v.header.features & FEATURE_OBJECT_MAP == 0 {
            return Err(RbdError::invalid(format!(
                "image {} does not have the object-map feature",
                inner.spec()
            )));
        }
        let states = self.listed_object_states(v.size, v.order()).await?;
        objmap::store_all(inner.rados.as_ref(), &v.map_oid, states).await?;
        inner.reload_fresh().await
    }

    /// `rbd object-map check`: compare the stored head map with the
    /// objects that exist. Returns how many existing objects it calls
    /// absent (reads of them would return zeros or the parent's data: the
    /// map must be rebuilt) and how many absent ones it calls present
    /// (harmless, only slower); `None` if the map is missing or damaged.
    /// `EINVAL` without the object-map feature.
    pub async fn check_object_map(&self) -> Result<Option<(u64, u64)>> {
        let inner = &self.inner;
        let h = self.fresh_header().await?;
        if h.features & FEATURE_OBJECT_MAP == 0 {
            return Err(RbdError::invalid(format!(
                "image {} does not have the object-map feature",
                inner.spec()
            )));
        }
        let head_map = inner.map_oid(NOSNAP);
        let (listed, stored) = futures::join!(
            self.listed_object_states(h.size, h.order),
            objmap::load(inner.rados.as_ref(), &head_map)
        );
        let listed = listed?;
        let stored = objmap::ObjectMap::from_bytes(stored?.as_deref());
        if !stored.is_valid() {
            return Ok(None);
        }
        let (mut missing, mut extra) = (0, 0);
        for (objno, &st) in listed.iter().enumerate() {
            let said = stored.get(objno as u64).unwrap_or(OBJECT_NONEXISTENT);
            match (st == OBJECT_EXISTS, objmap::may_exist(said)) {
                (true, false) => missing += 1,
                (false, true) => extra += 1,
                _ => {}
            }
        }
        Ok(Some((missing, extra)))
    }

    /// Where this clone's data comes from (`ENOENT` if not a clone).
    pub async fn parent_info(&self) -> Result<ParentInfo> {
        let v = self.inner.view();
        let p = v
            .parent
            .as_ref()
            // A migration's source is not a parent users see (librbd
            // reports none either).
            .filter(|p| p.spec.snap_id != NOSNAP)
            .ok_or_else(|| RbdError::not_found(format!("parent of {}", self.inner.what(&v))))?;
        let pv = p.image.inner.view();
        let pinner = &p.image.inner;
        let in_trash = match rbd::lookup_name(pinner.rados.as_ref(), &pinner.io, &p.spec.image_id)
            .await?
        {
            Some(_) => false,
            None => crate::trash::trashed_name(pinner.rados.as_ref(), &pinner.io, &p.spec.image_id)
                .await?
                .is_some(),
        };
        Ok(ParentInfo {
            pool_id: p.spec.pool,
            pool_name: p.image.inner.io.pool_name.clone(),
            namespace: p.spec.namespace.clone(),
            image_id: p.spec.image_id.clone(),
            image_name: p.image.name().to_string(),
            snap_id: p.spec.snap_id,
            snap_name: pv.snap_name.clone().unwrap_or_default(),
            overlap: v.overlap(),
            in_trash,
        })
    }

    /// Clones of the snapshot this handle is at, or of every snapshot at
    /// the head (librbd's `list_children`), trashed ones marked.
    pub async fn children(&self) -> Result<Vec<ChildInfo>> {
        let v = self.inner.view();
        let rados = self.inner.rados.as_ref();
        if v.snap == NOSNAP {
            return rbd::children_of_all_snaps(rados, &self.inner.io, &self.inner.id).await;
        }
        rbd::resolve_children(rados, &self.inner.io, &self.inner.id, v.snap).await
    }

    /// Children, their children and so on (librbd's `list_descendants`).
    pub async fn descendants(&self) -> Result<Vec<ChildInfo>> {
        let rados = self.inner.rados.as_ref();
        let mut out = self.children().await?;
        let mut next = 0;
        while next < out.len() {
            let c = out[next].clone();
            next += 1;
            let io = crate::IoCtx::new(c.pool_id, c.pool_name.clone(), c.namespace.clone());
            for g in rbd::children_of_all_snaps(rados, &io, &c.image_id).await? {
                // A link cycle cannot be made by clone, but do not loop on one.
                if !out
                    .iter()
                    .any(|o| o.pool_id == g.pool_id && o.image_id == g.image_id)
                {
                    out.push(g);
                }
            }
        }
        rbd::sort_children(&mut out);
        Ok(out)
    }

    // ---------------------------------------------------------------- metadata

    fn meta_key(key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(RbdError::invalid("metadata key is empty"));
        }
        Ok(format!("{}{key}", header::METADATA_PREFIX))
    }

    /// One metadata value (`ENOENT` if unset).
    pub async fn metadata_get(&self, key: &str) -> Result<Bytes> {
        let k = Self::meta_key(key)?;
        let inner = &self.inner;
        inner.check_open()?;
        let req =
            OpRequest::new(inner.header_oid.clone()).op(Op::OmapGetValsByKeys(vec![k.clone()]));
        let reply = inner
            .rados
            .operate(req)
            .await
            .ctx(|| format!("reading metadata of {}", inner.spec()))?;
        for o in reply.outputs {
            if let quarry_rados::OpOutput::Omap(mut m, _) = o {
                if let Some(v) = m.remove(&k) {
                    return Ok(v);
                }
            }
        }
        Err(RbdError::not_found(format!(
            "metadata key '{key}' of {}",
            inner.spec()
        )))
    }

    /// Set a metadata value (`EROFS` on read-only handles).
    pub async fn metadata_set(&self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        let k = Self::meta_key(key)?;
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let req = OpRequest::new(inner.header_oid.clone())
            .op(Op::AssertExists)
            .op(Op::OmapSetVals(BTreeMap::from([(k, value.into())])));
        inner
            .rados
            .operate(req)
            .await
            .ctx(|| format!("setting metadata of {}", inner.spec()))?;
        Ok(())
    }

    /// Remove a metadata key (`ENOENT` if unset).
    pub async fn metadata_remove(&self, key: &str) -> Result<()> {
        self.metadata_get(key).await?;
        let k = Self::meta_key(key)?;
        let inner = &self.inner;
        inner.check_writable(&inner.view())?;
        let req = OpRequest::new(inner.header_oid.clone())
            .op(Op::AssertExists)
            .op(Op::OmapRmKeys(vec![k]));
        inner
            .rados
            .operate(req)
            .await
            .ctx(|| format!("removing metadata of {}", inner.spec()))?;
        Ok(())
    }

    /// Metadata keys > `start_after` (at most `max`, 0 = all), sorted.
    pub async fn metadata_list(
        &self,
        start_after: &str,
        max: u64,
    ) -> Result<BTreeMap<String, Bytes>> {
        let inner = &self.inner;
        inner.check_open()?;
        let start = if start_after.is_empty() {
            String::new()
        } else {
            format!("{}{start_after}", header::METADATA_PREFIX)
        };
        let req = OpRequest::new(inner.header_oid.clone()).op(Op::OmapGetVals {
            start_after: start,
            prefix: header::METADATA_PREFIX.into(),
            max,
        });
        let reply = inner
            .rados
            .operate(req)
            .await
            .ctx(|| format!("listing metadata of {}", inner.spec()))?;
        let mut out = BTreeMap::new();
        for o in reply.outputs {
            if let quarry_rados::OpOutput::Omap(m, _) = o {
                for (k, v) in m {
                    out.insert(k[header::METADATA_PREFIX.len()..].to_string(), v);
                }
            }
        }
        Ok(out)
    }
}

/// Give back a snap id allocated for an operation that did not use it (no
/// header names it). A failure only leaks the id, so it is logged, not
/// returned over the operation's own result.
/// A snap id being allocated for a snapshot create before the snapshot
/// runs (while its handle takes the lock): a task, so the snapshot starts
/// its reads without waiting for the monitor. Whoever holds it uses the id
/// or gives it back ([`PreId::release`]).
pub(crate) struct PreId(tokio::task::JoinHandle<quarry_rados::Result<SnapId>>);

impl PreId {
    /// Ask the monitor for a snap id of `pool`.
    fn start(rados: Arc<dyn Rados>, pool: quarry_rados::PoolId) -> PreId {
        PreId(tokio::spawn(async move { rados.snap_create(pool).await }))
    }

    /// The allocated id, or why there is none.
    async fn id(self) -> quarry_rados::Result<SnapId> {
        self.0.await.unwrap_or_else(|e| {
            Err(quarry_rados::RadosError::io(format!(
                "allocating a snap id: the task ended: {e}"
            )))
        })
    }

    /// Give the id back unused (nothing to do if the allocation failed).
    async fn release(self, rados: &dyn Rados, pool: quarry_rados::PoolId) {
        if let Ok(id) = self.id().await {
            release_snap_id(rados, pool, id).await;
        }
    }
}

/// Give an allocated snap id back to its pool (logged, not returned: the
/// caller is already failing or cleaning up).
pub(crate) async fn release_snap_id(rados: &dyn Rados, pool: quarry_rados::PoolId, id: SnapId) {
    if let Err(e) = rados.snap_remove(pool, id).await {
        tracing::warn!(pool, snap = id, "releasing an unused snap id: {e}");
    }
}
