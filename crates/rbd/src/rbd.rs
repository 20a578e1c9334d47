//! Pool-level operations: create, list, remove, rename, open, clone,
//! children, namespaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, PoolId, Rados, SnapId, Watcher, NOSNAP};
use serde::{Deserialize, Serialize};

use crate::error::{RadosContext, RbdError, Result};
use crate::header::{backoff, Header, ParentSpec, Protection};
use crate::image::{self, Image};
use crate::layout::{self, dir_id_key, dir_name_key, CHILDREN, DIRECTORY, NAMESPACES};
use crate::{
    ChildInfo, CreateOptions, ImageEntry, IoCtx, OpenOptions, PoolRef, FEATURES_ALL,
    FEATURES_DEFAULT, FEATURE_DATA_POOL, FEATURE_EXCLUSIVE_LOCK, FEATURE_FAST_DIFF,
    FEATURE_JOURNALING, FEATURE_LAYERING, FEATURE_OBJECT_MAP, FEATURE_STRIPINGV2,
};

/// Pool-level settings object (per namespace).
const POOL_INFO: &str = "rbd_info";
const POOL_META_PREFIX: &str = "metadata_";

fn pool_meta_key(key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(RbdError::invalid("metadata key is empty"));
    }
    Ok(format!("{POOL_META_PREFIX}{key}"))
}

/// How many object removals run at once when an image is removed.
const REMOVE_PARALLEL_MAX: usize = 32;
const CAS_RETRIES_MAX: u32 = 100;

/// The entry point: pool-level image operations on one object-layer client.
#[derive(Clone)]
pub struct Rbd {
    rados: Arc<dyn Rados>,
    fence: crate::lock::FencePolicy,
    timestamps: crate::image::TimestampIntervals,
}

impl std::fmt::Debug for Rbd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rbd")
            .field("instance_id", &self.rados.instance_id())
            .finish()
    }
}

/// A child link stored in `rbd_children`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChildRef {
    pub pool: PoolId,
    pub namespace: String,
    pub image_id: String,
}

fn child_prefix(parent_id: &str, snap: SnapId) -> String {
    format!("child_{parent_id}_{snap:016x}_")
}

fn child_key(parent: &ParentSpec, child: &ChildRef) -> String {
    format!(
        "{}{}_{}_{}",
        child_prefix(&parent.image_id, parent.snap_id),
        child.pool,
        child.image_id,
        child.namespace
    )
}

/// Read some omap keys with the object version (missing object = version 0, no keys).
pub(crate) async fn omap_read(
    rados: &dyn Rados,
    oid: &ObjectId,
    keys: Vec<String>,
) -> Result<(u64, BTreeMap<String, Bytes>)> {
    let req = OpRequest::new(oid.clone())
        .op(Op::Stat)
        .op(Op::OmapGetValsByKeys(keys));
    match rados.operate(req).await {
        Ok(reply) => {
            let mut version = 0;
            let mut map = BTreeMap::new();
            for o in reply.outputs {
                match o {
                    OpOutput::Stat(s) => version = s.version,
                    OpOutput::Omap(m, _) => map = m,
                    _ => {}
                }
            }
            Ok((version, map))
        }
        Err(e) if e.errno == Errno::ENOENT => Ok((0, BTreeMap::new())),
        Err(e) => Err(RbdError::rados(format!("reading {}", oid.name), e)),
    }
}

/// All omap entries with a prefix (missing object = none).
pub(crate) async fn omap_list(
    rados: &dyn Rados,
    oid: &ObjectId,
    prefix: &str,
) -> Result<BTreeMap<String, Bytes>> {
    let req = OpRequest::new(oid.clone()).op(Op::OmapGetVals {
        start_after: String::new(),
        prefix: prefix.into(),
        max: 0,
    });
    match rados.operate(req).await {
        Ok(reply) => match reply.outputs.into_iter().next() {
            Some(OpOutput::Omap(m, _)) => Ok(m),
            _ => Err(RbdError::corrupt(format!(
                "{}: omap listing returned nothing",
                oid.name
            ))),
        },
        Err(e) if e.errno == Errno::ENOENT => Ok(BTreeMap::new()),
        Err(e) => Err(RbdError::rados(format!("listing {}", oid.name), e)),
    }
}

/// Change omap keys of `oid` atomically given the current values of `keys`:
/// `f` returns (keys to set, keys to remove). Compare-and-swap on the
/// object version, retried on races.
pub(crate) async fn omap_cas<F>(
    rados: &dyn Rados,
    oid: &ObjectId,
    keys: Vec<String>,
    f: F,
) -> Result<()>
where
    F: FnMut(&BTreeMap<String, Bytes>) -> Result<(BTreeMap<String, Bytes>, Vec<String>)>,
{
    omap_cas_from(rados, oid, keys, None, f).await
}

/// [`omap_cas`] whose first attempt uses `known`, a read of `keys` (with
/// the object version) the caller already made: one round trip fewer
/// when nobody changed the object since.
async fn omap_cas_from<F>(
    rados: &dyn Rados,
    oid: &ObjectId,
    keys: Vec<String>,
    mut known: Option<(u64, BTreeMap<String, Bytes>)>,
    mut f: F,
) -> Result<()>
where
    F: FnMut(&BTreeMap<String, Bytes>) -> Result<(BTreeMap<String, Bytes>, Vec<String>)>,
{
    for attempt in 0..CAS_RETRIES_MAX {
        let (version, cur) = match known.take() {
            Some(k) => k,
            None => omap_read(rados, oid, keys.clone()).await?,
        };
        let (set, rm) = f(&cur)?;
        if set.is_empty() && rm.is_empty() {
            return Ok(());
        }
        let mut req = OpRequest::new(oid.clone()).op(Op::AssertVersion(version));
        if !rm.is_empty() {
            req = req.op(Op::OmapRmKeys(rm));
        }
        if !set.is_empty() {
            req = req.op(Op::OmapSetVals(set));
        }
        match rados.operate(req).await {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW) => backoff(attempt).await,
            Err(e) => return Err(RbdError::rados(format!("updating {}", oid.name), e)),
        }
    }
    Err(RbdError::Contention {
        what: oid.name.clone(),
    })
}

pub(crate) fn utf8(v: &Bytes, what: &str) -> Result<String> {
    String::from_utf8(v.to_vec()).map_err(|_| RbdError::corrupt(format!("{what} is not UTF-8")))
}

/// The name of pool `id`.
pub(crate) async fn pool_name(rados: &dyn Rados, id: PoolId) -> Result<String> {
    let pools = rados.pool_list().await.ctx(|| "listing pools".into())?;
    pools
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.name)
        .ok_or_else(|| RbdError::not_found(format!("pool {id}")))
}

/// The value of `key` in directory object `dir` (an image or group
/// directory: `name_<name>` -> id, `id_<id>` -> name), if set; `what`
/// names the entry in errors.
pub(crate) async fn dir_lookup(
    rados: &dyn Rados,
    dir: &ObjectId,
    key: String,
    what: &str,
) -> Result<Option<String>> {
    let (_, m) = omap_read(rados, dir, vec![key.clone()]).await?;
    m.get(&key).map(|v| utf8(v, what)).transpose()
}

/// Image id of `name` in `io`'s directory.
pub(crate) async fn lookup_id(rados: &dyn Rados, io: &IoCtx, name: &str) -> Result<String> {
    let what = format!("directory entry of {}", io.spec(name));
    dir_lookup(rados, &io.oid(DIRECTORY), dir_name_key(name), &what)
        .await?
        .ok_or_else(|| RbdError::not_found(format!("image {}", io.spec(name))))
}

/// Image name of `id` in `io`'s directory, if listed.
pub(crate) async fn lookup_name(rados: &dyn Rados, io: &IoCtx, id: &str) -> Result<Option<String>> {
    let what = format!("directory entry of id {id}");
    dir_lookup(rados, &io.oid(DIRECTORY), dir_id_key(id), &what).await
}

/// Take image `id` (named `name`) out of `io`'s directory; entries that
/// already point elsewhere or are gone are left alone.
pub(crate) async fn dir_unlink(rados: &dyn Rados, io: &IoCtx, name: &str, id: &str) -> Result<()> {
    dir_unlink_from(rados, &io.oid(DIRECTORY), name, id).await
}

/// [`dir_unlink`] from directory object `dir` (image or group directory:
/// the same `name_`/`id_` keys).
pub(crate) async fn dir_unlink_from(
    rados: &dyn Rados,
    dir: &ObjectId,
    name: &str,
    id: &str,
) -> Result<()> {
    let nk = dir_name_key(name);
    let ik = dir_id_key(id);
    omap_cas(rados, dir, vec![nk.clone(), ik.clone()], |m| {
        let mut rm = vec![];
        if m.get(&nk).map(|v| v.as_ref()) == Some(id.as_bytes()) {
            rm.push(nk.clone());
        }
        if m.contains_key(&ik) {
            rm.push(ik.clone());
        }
        Ok((BTreeMap::new(), rm))
    })
    .await
}

/// Children of snapshot `snap` of image `parent_id` stored in `io` (the
/// parent's pool/namespace).
pub(crate) async fn list_children(
    rados: &dyn Rados,
    io: &IoCtx,
    parent_id: &str,
    snap: SnapId,
) -> Result<Vec<ChildRef>> {
    let m = omap_list(rados, &io.oid(CHILDREN), &child_prefix(parent_id, snap)).await?;
    m.iter()
        .map(|(k, v)| {
            serde_json::from_slice(v).map_err(|e| RbdError::corrupt(format!("{CHILDREN} {k}: {e}")))
        })
        .collect()
}

/// Add (or remove) a child link in the parent's `rbd_children`.
pub(crate) async fn set_child_link(
    rados: &dyn Rados,
    parent: &ParentSpec,
    child: &ChildRef,
    present: bool,
) -> Result<()> {
    let oid = ObjectId::with_namespace(parent.pool, parent.namespace.clone(), CHILDREN);
    let key = child_key(parent, child);
    let req = if present {
        let mut set = BTreeMap::new();
        set.insert(
            key,
            Bytes::from(serde_json::to_vec(child).unwrap_or_default()),
        );
        OpRequest::new(oid).op(Op::OmapSetVals(set))
    } else {
        OpRequest::new(oid).op(Op::OmapRmKeys(vec![key]))
    };
    match rados.operate(req).await {
        Ok(_) => Ok(()),
        Err(e) if !present && e.errno == Errno::ENOENT => Ok(()),
        Err(e) => Err(RbdError::rados("updating the children index", e)),
    }
}

/// Remove an object, ignoring absence.
pub(crate) async fn remove_object(rados: &dyn Rados, oid: ObjectId) -> Result<()> {
    let name = oid.name.clone();
    match rados.operate(OpRequest::new(oid).op(Op::Remove)).await {
        Ok(_) => Ok(()),
        Err(e) if e.errno == Errno::ENOENT => Ok(()),
        Err(e) => Err(RbdError::rados(format!("removing {name}"), e)),
    }
}

pub(crate) fn validate_features(features: u64) -> Result<u64> {
    if features & !FEATURES_ALL != 0 {
        return Err(RbdError::invalid(format!(
            "unknown or internal feature bits {:#x}",
            features & !FEATURES_ALL
        )));
    }
    if features & (FEATURE_JOURNALING | FEATURE_DATA_POOL) != 0 {
        return Err(RbdError::Unsupported {
            what: "features journaling and data-pool".into(),
        });
    }
    if features & FEATURE_OBJECT_MAP != 0 && features & FEATURE_EXCLUSIVE_LOCK == 0 {
        return Err(RbdError::invalid("object-map requires exclusive-lock"));
    }
    if features & FEATURE_FAST_DIFF != 0 && features & FEATURE_OBJECT_MAP == 0 {
        return Err(RbdError::invalid("fast-diff requires object-map"));
    }
    // Default striping (unit = object size, count 1) is the only layout
    // Quarry has, and with it librbd does not record STRIPINGV2 either.
    Ok(features & !FEATURE_STRIPINGV2)
}

pub(crate) fn validate_geometry(size: u64, order: u8, features: u64) -> Result<()> {
    if !(layout::MIN_ORDER..=layout::MAX_ORDER).contains(&order) {
        return Err(RbdError::invalid(format!(
            "order {order} out of range {}..={}",
            layout::MIN_ORDER,
            layout::MAX_ORDER
        )));
    }
    if size > layout::MAX_IMAGE_SIZE {
        return Err(RbdError::invalid(format!(
            "size {size} larger than the maximum {}",
            layout::MAX_IMAGE_SIZE
        )));
    }
    if features & FEATURE_OBJECT_MAP != 0
        && layout::num_objects(size, order) > layout::MAX_OBJECT_MAP_OBJECTS
    {
        return Err(RbdError::invalid(format!(
            "size {size} with order {order} needs more objects than an object map can hold"
        )));
    }
    Ok(())
}

/// The directory keys a create needs free (name and id), read with the
/// directory's version; `EEXIST` if either is taken.
pub(crate) async fn read_dir_for_create(
    rados: &dyn Rados,
    io: &IoCtx,
    name: &str,
    id: &str,
) -> Result<(u64, BTreeMap<String, Bytes>)> {
    let dir = omap_read(
        rados,
        &io.oid(DIRECTORY),
        vec![dir_name_key(name), dir_id_key(id)],
    )
    .await?;
    check_free_for_create(&dir.1, io, name, id)?;
    Ok(dir)
}

/// `EEXIST` if the directory entries `m` hold `name` or `id`.
fn check_free_for_create(
    m: &BTreeMap<String, Bytes>,
    io: &IoCtx,
    name: &str,
    id: &str,
) -> Result<()> {
    if m.contains_key(&dir_name_key(name)) {
        return Err(RbdError::exists(format!("image {}", io.spec(name))));
    }
    if m.contains_key(&dir_id_key(id)) {
        return Err(RbdError::exists(format!(
            "image id {id} in {}",
            io.spec(name)
        )));
    }
    Ok(())
}

pub(crate) fn new_image_id() -> String {
    // 12 hex digits like librbd's ids; 48 random bits make collisions
    // negligible, and the exclusive header create catches the rest.
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Rbd {
    /// An engine on one object-layer client.
    pub fn new(rados: Arc<dyn Rados>) -> Self {
        Rbd {
            rados,
            fence: Default::default(),
            timestamps: Default::default(),
        }
    }

    /// An engine whose handles and `lock_break` fence broken lock owners
    /// as `fence` says (`rbd_blocklist_on_break_lock`,
    /// `rbd_blocklist_expire_seconds`).
    pub fn with_fence_policy(rados: Arc<dyn Rados>, fence: crate::lock::FencePolicy) -> Self {
        Rbd {
            rados,
            fence,
            timestamps: Default::default(),
        }
    }

    /// This engine, its handles recording I/O in the image timestamps as
    /// `t` says (`rbd_atime_update_interval`, `rbd_mtime_update_interval`).
    pub fn with_timestamp_intervals(mut self, t: crate::image::TimestampIntervals) -> Self {
        self.timestamps = t;
        self
    }

    /// The object-layer client.
    pub fn rados(&self) -> &Arc<dyn Rados> {
        &self.rados
    }

    /// Resolve a pool (`ENOENT` if absent) and pair it with a namespace
    /// (checked by the operations that need it, like librados).
    pub async fn ioctx(&self, pool: impl Into<PoolRef>, namespace: &str) -> Result<IoCtx> {
        if !namespace.is_empty() {
            layout::validate_namespace_name(namespace)?;
        }
        let (pool_id, pool_name) = match pool.into() {
            PoolRef::Id(id) => (id, pool_name(self.rados.as_ref(), id).await?),
            PoolRef::Name(name) => match self.rados.pool_lookup(&name).await {
                Ok(id) => (id, name),
                Err(e) if e.errno == Errno::ENOENT => {
                    return Err(RbdError::not_found(format!("pool '{name}'")))
                }
                Err(e) => return Err(RbdError::rados(format!("looking up pool '{name}'"), e)),
            },
        };
        Ok(IoCtx::new(pool_id, pool_name, namespace))
    }

    fn ns_registry(io: &IoCtx) -> ObjectId {
        ObjectId::new(io.pool_id, NAMESPACES)
    }

    /// Whether `io`'s namespace exists (`EINVAL` for the default namespace, as librbd).
    pub async fn namespace_exists(&self, io: &IoCtx) -> Result<bool> {
        if io.namespace.is_empty() {
            return Err(RbdError::invalid("the default namespace cannot be queried"));
        }
        let key = dir_name_key(&io.namespace);
        let (_, m) = omap_read(
            self.rados.as_ref(),
            &Self::ns_registry(io),
            vec![key.clone()],
        )
        .await?;
        Ok(m.contains_key(&key))
    }

    pub(crate) async fn check_namespace(&self, io: &IoCtx) -> Result<()> {
        if io.namespace.is_empty() || self.namespace_exists(io).await? {
            Ok(())
        } else {
            Err(RbdError::not_found(format!(
                "namespace {}/{}",
                io.pool_name, io.namespace
            )))
        }
    }

    /// Create namespace `io.namespace` (`EEXIST` if present).
    pub async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
        layout::validate_namespace_name(&io.namespace)?;
        let key = dir_name_key(&io.namespace);
        let what = format!("namespace {}/{}", io.pool_name, io.namespace);
        omap_cas(
            self.rados.as_ref(),
            &Self::ns_registry(io),
            vec![key.clone()],
            |m| {
                if m.contains_key(&key) {
                    return Err(RbdError::exists(what.clone()));
                }
                Ok((BTreeMap::from([(key.clone(), Bytes::new())]), vec![]))
            },
        )
        .await
    }

    /// Remove namespace `io.namespace` (`ENOENT` if absent, `EBUSY` if it holds images).
    pub async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
        layout::validate_namespace_name(&io.namespace)?;
        let what = format!("namespace {}/{}", io.pool_name, io.namespace);
        if !self.namespace_exists(io).await? {
            return Err(RbdError::not_found(what));
        }
        if !self.list(io).await?.is_empty() {
            return Err(RbdError::busy(what, "it still holds images"));
        }
        if !self.trash_list(io).await?.is_empty() {
            return Err(RbdError::busy(what, "its trash still holds images"));
        }
        let key = dir_name_key(&io.namespace);
        omap_cas(
            self.rados.as_ref(),
            &Self::ns_registry(io),
            vec![key.clone()],
            |m| {
                if !m.contains_key(&key) {
                    return Err(RbdError::not_found(what.clone()));
                }
                Ok((BTreeMap::new(), vec![key.clone()]))
            },
        )
        .await?;
        for obj in [DIRECTORY, CHILDREN] {
            remove_object(self.rados.as_ref(), io.oid(obj)).await?;
        }
        Ok(())
    }

    /// Namespaces of `io`'s pool, sorted.
    pub async fn namespace_list(&self, io: &IoCtx) -> Result<Vec<String>> {
        let m = omap_list(self.rados.as_ref(), &Self::ns_registry(io), "name_").await?;
        Ok(m.keys().map(|k| k["name_".len()..].to_string()).collect())
    }

    /// Create an image of `size` bytes. `EEXIST` if the name is taken,
    /// `EINVAL` for a bad name, order, size or feature set, `ENOENT` for a
    /// missing namespace. Nothing is left behind on failure.
    pub async fn create(
        &self,
        io: &IoCtx,
        name: &str,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<()> {
        layout::validate_image_name(name)?;
        let features = validate_features(opts.features.unwrap_or(FEATURES_DEFAULT))?;
        let order = if opts.order == 0 {
            layout::DEFAULT_ORDER
        } else {
            opts.order
        };
        validate_geometry(size, order, features)?;
        self.check_namespace(io).await?;
        let id = new_image_id();
        let dir = read_dir_for_create(self.rados.as_ref(), io, name, &id).await?;
        self.create_internal(
            io,
            name,
            &id,
            dir,
            size,
            order,
            features,
            None,
            None,
            None,
            BTreeMap::new(),
        )
        .await
    }

    /// Create the objects of a new image whose name and id `dir` (the
    /// directory read by [`read_dir_for_create`]) showed free. Header,
    /// object map and the parent's child link are independent objects and
    /// are written concurrently; the directory entry comes last, so a
    /// listed image always has its header. For a clone, `recheck` runs
    /// concurrently with the directory update (after the child link is
    /// durable); if it fails the new image is removed again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_internal(
        &self,
        io: &IoCtx,
        name: &str,
        id: &str,
        dir: (u64, BTreeMap<String, Bytes>),
        size: u64,
        order: u8,
        features: u64,
        parent: Option<ParentSpec>,
        recheck: Option<BoxFuture<'_, Result<()>>>,
        migration: Option<crate::MigrationSpec>,
        snaps: BTreeMap<SnapId, crate::header::SnapRecord>,
    ) -> Result<()> {
        let rados = self.rados.as_ref();
        let spec = io.spec(name);
        let now = crate::now_ns();
        // Every parent link of the new header: the head's and (a migration
        // destination's) its snapshots'; each is a child link.
        let mut parents: Vec<ParentSpec> = parent.iter().cloned().collect();
        for p in snaps.values().filter_map(|s| s.parent.as_ref()) {
            if !parents.iter().any(|q| q.same_source(p)) {
                parents.push(p.clone());
            }
        }
        let snap_seq = snaps.keys().next_back().copied().unwrap_or(0);
        let header = Header {
            version: 0,
            size,
            order,
            features,
            flags: 0,
            object_prefix: layout::data_prefix(id),
            snap_seq,
            create_ts_ns: now,
            access_ts_ns: now,
            modify_ts_ns: now,
            snap_limit: None,
            parent: parent.clone(),
            migration,
            group: None,
            snaps,
        };
        let header_oid = io.oid(layout::header_oid(id));
        let map_oid = io.oid(layout::object_map_oid(id, NOSNAP));
        let child = ChildRef {
            pool: io.pool_id,
            namespace: io.namespace.clone(),
            image_id: id.to_string(),
        };
        let create_header = async {
            let req = OpRequest::new(header_oid.clone())
                .op(Op::Create { exclusive: true })
                .op(Op::OmapSetVals(header.encode()));
            rados
                .operate(req)
                .await
                .ctx(|| format!("creating header of {spec}"))
                .map(|_| ())
        };
        let create_map = async {
            if features & FEATURE_OBJECT_MAP == 0 {
                return Ok::<bool, RbdError>(false);
            }
            let req = OpRequest::new(map_oid.clone()).op(Op::Create { exclusive: true });
            rados
                .operate(req)
                .await
                .ctx(|| format!("creating object map of {spec}"))?;
            Ok(true)
        };
        let link = async {
            for p in &parents {
                set_child_link(rados, p, &child, true).await?;
            }
            Ok::<bool, RbdError>(!parents.is_empty())
        };
        let (mut hr, mut mr, lr) = futures::join!(create_header, create_map, link);
        // An exclusive create re-executed after its reply was lost (an op
        // older than the PG log) fails with EEXIST on the object it made.
        // The id is 48 random bits, so a header with our id and our
        // creation stamp is ours, and so is the object map beside it.
        if matches!(&hr, Err(e) if e.errno() == Errno::EEXIST) {
            if let Ok(h) = crate::header::read_header(rados, &header_oid, &spec).await {
                if h.create_ts_ns == header.create_ts_ns
                    && h.object_prefix == header.object_prefix
                    && h.size == header.size
                {
                    hr = Ok(());
                }
            }
        }
        if hr.is_ok() && matches!(&mr, Err(e) if e.errno() == Errno::EEXIST) {
            mr = Ok(true);
        }
        // Undo only what this call created (an exclusive create that failed
        // may have met another image's object).
        let undo = |header: bool, map: bool, link: bool| async move {
            // Best effort: the undo failing leaves orphans only a later
            // remove can clear.
            if link {
                for p in &parents {
                    let _ = set_child_link(rados, p, &child, false).await;
                }
            }
            if map {
                let _ = remove_object(rados, map_oid.clone()).await;
            }
            if header {
                let _ = remove_object(rados, header_oid.clone()).await;
            }
        };
        let created = (
            hr.is_ok(),
            *mr.as_ref().unwrap_or(&false),
            *lr.as_ref().unwrap_or(&false),
        );
        if let Some(e) = hr.err().or(mr.err()).or(lr.err()) {
            undo(created.0, created.1, created.2).await;
            return Err(e);
        }
        let nk = dir_name_key(name);
        let ik = dir_id_key(id);
        let dir_oid = io.oid(DIRECTORY);
        let linked = omap_cas_from(
            rados,
            &dir_oid,
            vec![nk.clone(), ik.clone()],
            Some(dir),
            |m| {
                // Both entries naming each other: our own update, re-executed
                // after its reply was lost (the id is random), so done.
                if m.get(&nk).is_some_and(|v| v.as_ref() == id.as_bytes())
                    && m.get(&ik).is_some_and(|v| v.as_ref() == name.as_bytes())
                {
                    return Ok((BTreeMap::new(), vec![]));
                }
                check_free_for_create(m, io, name, id)?;
                Ok((
                    BTreeMap::from([
                        (nk.clone(), Bytes::from(id.to_string())),
                        (ik.clone(), Bytes::from(name.to_string())),
                    ]),
                    vec![],
                ))
            },
        );
        let (linked, rechecked) = match recheck {
            Some(r) => futures::join!(linked, r),
            None => (linked.await, Ok(())),
        };
        match (linked, rechecked) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) => {
                undo(created.0, created.1, created.2).await;
                Err(e)
            }
            (Ok(()), Err(e)) => {
                let _ = self.remove(io, name).await;
                Err(e)
            }
        }
    }

    /// Images of `io`, sorted by name.
    pub async fn list(&self, io: &IoCtx) -> Result<Vec<ImageEntry>> {
        let m = omap_list(self.rados.as_ref(), &io.oid(DIRECTORY), "name_").await?;
        m.iter()
            .map(|(k, v)| {
                let name = k["name_".len()..].to_string();
                Ok(ImageEntry {
                    id: utf8(v, &format!("directory entry {k}"))?,
                    name,
                })
            })
            .collect()
    }

    /// Open an image (read-write unless `opts.read_only` or a snapshot is
    /// given). Registers a watch on the header until [`Image::close`] (or
    /// drop), which makes [`Rbd::remove`] fail with `EBUSY`.
    pub async fn open(&self, io: &IoCtx, name: &str, opts: &OpenOptions) -> Result<Image> {
        let id = lookup_id(self.rados.as_ref(), io, name).await?;
        image::open(
            self.rados.clone(),
            io.clone(),
            id,
            name.to_string(),
            opts.snap.clone(),
            crate::image::HandleMode {
                read_only: opts.read_only || opts.snap.is_some(),
                watch: true,
                fence: self.fence,
                timestamps: self.timestamps,
            },
        )
        .await
    }

    /// Open an image by its id (see [`Rbd::open`]).
    pub async fn open_by_id(&self, io: &IoCtx, id: &str, opts: &OpenOptions) -> Result<Image> {
        // A trashed image opens by id too, under the name it had (as librbd).
        let name = match lookup_name(self.rados.as_ref(), io, id).await? {
            Some(n) => n,
            None => match self.trash_get(io, id).await {
                Ok(e) => e.name,
                Err(RbdError::NotFound { .. }) => {
                    return Err(RbdError::not_found(format!(
                        "image id {id} in {}",
                        io.spec("")
                    )))
                }
                Err(e) => return Err(e),
            },
        };
        image::open(
            self.rados.clone(),
            io.clone(),
            id.to_string(),
            name,
            opts.snap.clone(),
            crate::image::HandleMode {
                read_only: opts.read_only || opts.snap.is_some(),
                watch: true,
                fence: self.fence,
                timestamps: self.timestamps,
            },
        )
        .await
    }

    /// The id of image `name` (`ENOENT`).
    pub async fn image_id(&self, io: &IoCtx, name: &str) -> Result<String> {
        lookup_id(self.rados.as_ref(), io, name).await
    }

    fn pool_info_oid(io: &IoCtx) -> ObjectId {
        io.oid(POOL_INFO)
    }

    /// Pool-level metadata value (`rbd_pool_metadata_get`; `ENOENT` if unset).
    /// Stored as omap `metadata_<key>` of `rbd_info` in `io`'s namespace;
    /// `conf_<option>` keys are per-pool librbd config overrides.
    pub async fn pool_metadata_get(&self, io: &IoCtx, key: &str) -> Result<Bytes> {
        let k = pool_meta_key(key)?;
        let (_, mut m) = omap_read(
            self.rados.as_ref(),
            &Self::pool_info_oid(io),
            vec![k.clone()],
        )
        .await?;
        m.remove(&k).ok_or_else(|| {
            RbdError::not_found(format!("pool metadata key '{key}' of {}", io.pool_name))
        })
    }

    /// Set a pool-level metadata value.
    pub async fn pool_metadata_set(
        &self,
        io: &IoCtx,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<()> {
        let k = pool_meta_key(key)?;
        let req = OpRequest::new(Self::pool_info_oid(io))
            .op(Op::OmapSetVals(BTreeMap::from([(k, value.into())])));
        self.rados
            .operate(req)
            .await
            .ctx(|| format!("setting pool metadata of {}", io.pool_name))?;
        Ok(())
    }

    /// Remove a pool-level metadata key (`ENOENT` if unset).
    pub async fn pool_metadata_remove(&self, io: &IoCtx, key: &str) -> Result<()> {
        self.pool_metadata_get(io, key).await?;
        let req =
            OpRequest::new(Self::pool_info_oid(io)).op(Op::OmapRmKeys(vec![pool_meta_key(key)?]));
        self.rados
            .operate(req)
            .await
            .ctx(|| format!("removing pool metadata of {}", io.pool_name))?;
        Ok(())
    }

    /// All pool-level metadata, sorted by key.
    pub async fn pool_metadata_list(&self, io: &IoCtx) -> Result<BTreeMap<String, Bytes>> {
        let m = omap_list(
            self.rados.as_ref(),
            &Self::pool_info_oid(io),
            POOL_META_PREFIX,
        )
        .await?;
        Ok(m.into_iter()
            .map(|(k, v)| (k[POOL_META_PREFIX.len()..].to_string(), v))
            .collect())
    }

    /// The exclusive lock's owner of image `name`, if any (`rbd lock ls`).
    pub async fn lock_owners(&self, io: &IoCtx, name: &str) -> Result<Vec<crate::LockOwner>> {
        let id = lookup_id(self.rados.as_ref(), io, name).await?;
        let oid = io.oid(layout::header_oid(&id));
        crate::lock::owners_of(
            self.rados.as_ref(),
            &oid,
            &format!("image {}", io.spec(name)),
        )
        .await
    }

    /// Break the exclusive lock of `owner` (`client.<id>`) on image `name`
    /// (`rbd lock rm`): `ENOENT` if unlocked, `EBUSY` if another owns it.
    /// The old owner is blocklisted first, as the fence policy says.
    pub async fn lock_break(&self, io: &IoCtx, name: &str, owner: &str) -> Result<()> {
        let id = lookup_id(self.rados.as_ref(), io, name).await?;
        let oid = io.oid(layout::header_oid(&id));
        crate::lock::break_of(
            self.rados.as_ref(),
            &oid,
            &format!("image {}", io.spec(name)),
            owner,
            self.fence,
        )
        .await
        .map(|_| ())
    }

    /// Clients that have `name` open (watchers of its header).
    pub async fn watchers(&self, io: &IoCtx, name: &str) -> Result<Vec<Watcher>> {
        let id = lookup_id(self.rados.as_ref(), io, name).await?;
        match self
            .rados
            .list_watchers(&io.oid(layout::header_oid(&id)))
            .await
        {
            Ok(w) => Ok(w),
            Err(e) if e.errno == Errno::ENOENT => {
                Err(RbdError::not_found(format!("image {}", io.spec(name))))
            }
            Err(e) => Err(RbdError::rados(
                format!("listing watchers of {}", io.spec(name)),
                e,
            )),
        }
    }

    /// Remove an image and all its objects. `ENOENT` if absent,
    /// `ENOTEMPTY` while it has snapshots, `EBUSY` while any client
    /// (including this one) has it open.
    pub async fn remove(&self, io: &IoCtx, name: &str) -> Result<()> {
        let id = lookup_id(self.rados.as_ref(), io, name).await?;
        self.remove_objects(io, &id, &io.spec(name), false).await?;
        dir_unlink(self.rados.as_ref(), io, name, &id).await
    }

    /// Remove the objects of image `id` (header last), as [`Rbd::remove`]
    /// does, leaving its directory or trash entry to the caller. `spec`
    /// names the image in errors. A missing header is a half-removed
    /// image: nothing to do. An image in a live migration is refused
    /// (`EBUSY`: its other end would be left behind) unless
    /// `migration_step` (commit and abort remove one end themselves).
    pub(crate) async fn remove_objects(
        &self,
        io: &IoCtx,
        id: &str,
        spec: &str,
        migration_step: bool,
    ) -> Result<()> {
        let rados = self.rados.as_ref();
        let id = id.to_string();
        let header_oid = io.oid(layout::header_oid(&id));
        let map_oid = io.oid(layout::object_map_oid(&id, NOSNAP));
        // Header, watchers and head object map in one round trip (the map
        // is read before the header says whether the image has one: a
        // missing map costs one small read).
        let what = format!("image {spec}");
        let (header, watchers, map) = futures::join!(
            crate::header::read_header(rados, &header_oid, &what),
            rados.list_watchers(&header_oid),
            crate::objmap::load(rados, &map_oid)
        );
        let header = match header {
            Ok(h) => Some(h),
            // A half-removed image: only the directory entry is left.
            Err(RbdError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let group_live = match header.as_ref().and_then(|h| h.group.as_ref()) {
            Some(g) => crate::group::group_exists(rados, &io.namespace, g).await?,
            None => false,
        };
        if let Some(h) = &header {
            if h.migration.is_some() && !migration_step {
                return Err(RbdError::busy(
                    format!("image {spec}"),
                    "it takes part in a live migration; run `rbd migration abort` or \
                     `rbd migration commit` on it instead",
                ));
            }
            if let Some(g) = h.group.as_ref().filter(|_| group_live) {
                return Err(RbdError::InGroup {
                    what: format!("image {spec}"),
                    group: g.group_id.clone(),
                });
            }
            if !h.snaps.is_empty() {
                return Err(RbdError::NotEmpty {
                    what: format!("image {spec}"),
                    why: format!("it has {} snapshot(s); remove them first", h.snaps.len()),
                });
            }
            let watchers = watchers.ctx(|| format!("listing watchers of {spec}"))?;
            if !watchers.is_empty() {
                return Err(RbdError::busy(
                    format!("image {spec}"),
                    format!("it is open by {} client(s)", watchers.len()),
                ));
            }
            // With a valid object map only the objects it says may exist
            // are removed (as librbd): it never says "absent" for an
            // object that exists. Without one, every object named after the
            // image id is listed, so that orphans go too.
            let map = if h.features & FEATURE_OBJECT_MAP != 0 {
                map.ok()
                    .flatten()
                    .map(|b| crate::objmap::ObjectMap::from_bytes(Some(&b)))
                    .filter(|m| m.is_valid())
            } else {
                None
            };
            let targets: Vec<ObjectId> = match map {
                Some(m) => m
                    .snapshot()
                    .iter()
                    .enumerate()
                    .filter(|(_, &st)| crate::objmap::may_exist(st))
                    .map(|(objno, _)| io.oid(layout::data_oid(&id, objno as u64)))
                    .chain(std::iter::once(map_oid.clone()))
                    .collect(),
                None => {
                    let data = format!("{}.", layout::data_prefix(&id));
                    let map_prefix = layout::object_map_oid(&id, NOSNAP);
                    rados
                        .list_objects(io.pool_id, Some(&io.namespace))
                        .await
                        .ctx(|| format!("listing objects of {spec}"))?
                        .into_iter()
                        .filter(|o| o.name.starts_with(&data) || o.name.starts_with(&map_prefix))
                        .map(|o| io.oid(o.name))
                        .collect()
                }
            };
            futures::stream::iter(targets.into_iter().map(|o| remove_object(rados, o)))
                .buffer_unordered(REMOVE_PARALLEL_MAX)
                .try_collect::<Vec<()>>()
                .await?;
            if let Some(p) = &h.parent {
                let child = ChildRef {
                    pool: io.pool_id,
                    namespace: io.namespace.clone(),
                    image_id: id.clone(),
                };
                set_child_link(rados, p, &child, false).await?;
            }
            remove_object(rados, header_oid).await?;
        }
        Ok(())
    }

    /// Rename an image inside its pool/namespace (`ENOENT`, `EEXIST`, `EINVAL`).
    pub async fn rename(&self, io: &IoCtx, src: &str, dst: &str) -> Result<()> {
        layout::validate_image_name(dst)?;
        let sk = dir_name_key(src);
        let dk = dir_name_key(dst);
        omap_cas(
            self.rados.as_ref(),
            &io.oid(DIRECTORY),
            vec![sk.clone(), dk.clone()],
            |m| {
                let id = m
                    .get(&sk)
                    .ok_or_else(|| RbdError::not_found(format!("image {}", io.spec(src))))?;
                if src == dst {
                    return Ok((BTreeMap::new(), vec![]));
                }
                if m.contains_key(&dk) {
                    return Err(RbdError::exists(format!("image {}", io.spec(dst))));
                }
                let idstr = utf8(id, "directory entry")?;
                Ok((
                    BTreeMap::from([
                        (dk.clone(), id.clone()),
                        (dir_id_key(&idstr), Bytes::from(dst.to_string())),
                    ]),
                    vec![sk.clone()],
                ))
            },
        )
        .await
    }

    /// Clone protected snapshot `parent_snap` of `parent_io/parent_name`
    /// into a new image `child_io/child_name`: O(1), no data copied. The
    /// child's size and overlap are the snapshot's size. `EINVAL` if the
    /// snapshot is not protected or layering is off, `ENOENT` if the parent
    /// or snapshot is missing, `EEXIST` if the child name is taken.
    pub async fn clone(
        &self,
        parent_io: &IoCtx,
        parent_name: &str,
        parent_snap: &str,
        child_io: &IoCtx,
        child_name: &str,
        opts: &CreateOptions,
    ) -> Result<()> {
        layout::validate_image_name(child_name)?;
        let rados = self.rados.as_ref();
        let pspec = parent_io.spec(parent_name);
        let features = validate_features(opts.features.unwrap_or(FEATURES_DEFAULT))?;
        if features & FEATURE_LAYERING == 0 {
            return Err(RbdError::invalid("a clone needs the layering feature"));
        }
        self.check_namespace(child_io).await?;
        // The parent's id and the child's directory slots in one round
        // trip (one compound read when both live in the same directory).
        let cid = new_image_id();
        let pk = dir_name_key(parent_name);
        let (pid, dir) =
            if parent_io.pool_id == child_io.pool_id && parent_io.namespace == child_io.namespace {
                let (version, mut m) = omap_read(
                    rados,
                    &child_io.oid(DIRECTORY),
                    vec![pk.clone(), dir_name_key(child_name), dir_id_key(&cid)],
                )
                .await?;
                let pid = m
                    .remove(&pk)
                    .ok_or_else(|| RbdError::not_found(format!("image {pspec}")))
                    .and_then(|v| utf8(&v, &format!("directory entry of {pspec}")))?;
                if parent_name == child_name {
                    return Err(RbdError::exists(format!(
                        "image {}",
                        child_io.spec(child_name)
                    )));
                }
                check_free_for_create(&m, child_io, child_name, &cid)?;
                (pid, (version, m))
            } else {
                futures::try_join!(
                    lookup_id(rados, parent_io, parent_name),
                    read_dir_for_create(rados, child_io, child_name, &cid)
                )?
            };
        let poid = parent_io.oid(layout::header_oid(&pid));
        let ph = crate::header::read_header(rados, &poid, &format!("image {pspec}")).await?;
        let snap = ph
            .snap_by_name(parent_snap)
            .ok_or_else(|| RbdError::not_found(format!("snapshot {pspec}@{parent_snap}")))?
            .clone();
        if ph.features & FEATURE_LAYERING == 0 {
            return Err(RbdError::invalid(format!(
                "parent {pspec} does not have the layering feature"
            )));
        }
        if snap.protection != Protection::Protected {
            return Err(RbdError::invalid(format!(
                "snapshot {pspec}@{parent_snap} must be protected before cloning"
            )));
        }
        let order = if opts.order == 0 {
            ph.order
        } else {
            opts.order
        };
        validate_geometry(snap.size, order, features)?;
        let parent = ParentSpec {
            pool: parent_io.pool_id,
            namespace: parent_io.namespace.clone(),
            image_id: pid.clone(),
            snap_id: snap.id,
            overlap: snap.size,
        };
        // An unprotect racing with us checks the children index after
        // marking the snapshot "unprotecting"; re-check here (after our
        // child link is durable) so that one of the two always backs off.
        let recheck = async {
            let ph = crate::header::read_header(rados, &poid, &format!("image {pspec}")).await?;
            let still = ph
                .snaps
                .get(&snap.id)
                .is_some_and(|s| s.protection == Protection::Protected);
            if still {
                Ok(())
            } else {
                Err(RbdError::invalid(format!(
                    "snapshot {pspec}@{parent_snap} was unprotected or removed during the clone"
                )))
            }
        }
        .boxed();
        self.create_internal(
            child_io,
            child_name,
            &cid,
            dir,
            snap.size,
            order,
            features,
            Some(parent),
            Some(recheck),
            None,
            BTreeMap::new(),
        )
        .await
    }

    /// Clones of snapshot `snap` of image `name`.
    pub async fn children(&self, io: &IoCtx, name: &str, snap: &str) -> Result<Vec<ChildInfo>> {
        let rados = self.rados.as_ref();
        let spec = io.spec(name);
        let id = lookup_id(rados, io, name).await?;
        let h = crate::header::read_header(
            rados,
            &io.oid(layout::header_oid(&id)),
            &format!("image {spec}"),
        )
        .await?;
        let s = h
            .snap_by_name(snap)
            .ok_or_else(|| RbdError::not_found(format!("snapshot {spec}@{snap}")))?;
        resolve_children(rados, io, &id, s.id).await
    }
}

/// Sort children by pool, namespace and name (as librbd lists them).
pub(crate) fn sort_children(v: &mut [ChildInfo]) {
    v.sort_by(|a, b| {
        (&a.pool_name, &a.namespace, &a.image_name).cmp(&(
            &b.pool_name,
            &b.namespace,
            &b.image_name,
        ))
    });
}

/// Children of every snapshot of image `id` in `io` (none if the image
/// vanished meanwhile), sorted by pool, namespace and name.
pub(crate) async fn children_of_all_snaps(
    rados: &dyn Rados,
    io: &IoCtx,
    id: &str,
) -> Result<Vec<ChildInfo>> {
    let what = format!("image id {id} in {}", io.spec(""));
    let h = match crate::header::read_header(rados, &io.oid(layout::header_oid(id)), &what).await {
        Ok(h) => h,
        Err(RbdError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for &snap in h.snaps.keys() {
        out.extend(resolve_children(rados, io, id, snap).await?);
    }
    sort_children(&mut out);
    out.dedup_by(|a, b| a.pool_id == b.pool_id && a.image_id == b.image_id);
    Ok(out)
}

/// Children links resolved to names (links to vanished images are
/// skipped; trashed children are listed, marked, under their old names).
pub(crate) async fn resolve_children(
    rados: &dyn Rados,
    io: &IoCtx,
    parent_id: &str,
    snap: SnapId,
) -> Result<Vec<ChildInfo>> {
    let mut out = Vec::new();
    for c in list_children(rados, io, parent_id, snap).await? {
        let pool_name = match pool_name(rados, c.pool).await {
            Ok(n) => n,
            Err(RbdError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let cio = IoCtx::new(c.pool, pool_name.clone(), c.namespace.clone());
        let (image_name, in_trash) = match lookup_name(rados, &cio, &c.image_id).await? {
            Some(n) => (n, false),
            None => match crate::trash::trashed_name(rados, &cio, &c.image_id).await? {
                Some(n) => (n, true),
                None => continue,
            },
        };
        out.push(ChildInfo {
            pool_id: c.pool,
            pool_name,
            namespace: c.namespace,
            image_id: c.image_id,
            image_name,
            in_trash,
        });
    }
    sort_children(&mut out);
    Ok(out)
}
