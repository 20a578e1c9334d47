//! Pool-level operations: create, list, remove, rename, open, clone,
//! children, namespaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
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
async fn omap_read(
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
async fn omap_cas<F>(rados: &dyn Rados, oid: &ObjectId, keys: Vec<String>, mut f: F) -> Result<()>
where
    F: FnMut(&BTreeMap<String, Bytes>) -> Result<(BTreeMap<String, Bytes>, Vec<String>)>,
{
    for attempt in 0..CAS_RETRIES_MAX {
        let (version, cur) = omap_read(rados, oid, keys.clone()).await?;
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

fn utf8(v: &Bytes, what: &str) -> Result<String> {
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

/// Image id of `name` in `io`'s directory.
pub(crate) async fn lookup_id(rados: &dyn Rados, io: &IoCtx, name: &str) -> Result<String> {
    let key = dir_name_key(name);
    let (_, m) = omap_read(rados, &io.oid(DIRECTORY), vec![key.clone()]).await?;
    match m.get(&key) {
        Some(v) => utf8(v, &format!("directory entry of {}", io.spec(name))),
        None => Err(RbdError::not_found(format!("image {}", io.spec(name)))),
    }
}

/// Image name of `id` in `io`'s directory, if listed.
pub(crate) async fn lookup_name(rados: &dyn Rados, io: &IoCtx, id: &str) -> Result<Option<String>> {
    let key = dir_id_key(id);
    let (_, m) = omap_read(rados, &io.oid(DIRECTORY), vec![key.clone()]).await?;
    m.get(&key)
        .map(|v| utf8(v, &format!("directory entry of id {id}")))
        .transpose()
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

fn validate_features(features: u64) -> Result<u64> {
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

fn new_image_id() -> String {
    // 12 hex digits like librbd's ids; 48 random bits make collisions
    // negligible, and the exclusive header create catches the rest.
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Rbd {
    /// An engine on one object-layer client.
    pub fn new(rados: Arc<dyn Rados>) -> Self {
        Rbd { rados }
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

    async fn check_namespace(&self, io: &IoCtx) -> Result<()> {
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
        self.create_internal(io, name, size, order, features, None)
            .await
    }

    async fn create_internal(
        &self,
        io: &IoCtx,
        name: &str,
        size: u64,
        order: u8,
        features: u64,
        parent: Option<ParentSpec>,
    ) -> Result<()> {
        self.check_namespace(io).await?;
        let rados = self.rados.as_ref();
        let spec = io.spec(name);
        // Cheap early check so that the common EEXIST creates nothing at all.
        if lookup_id(rados, io, name).await.is_ok() {
            return Err(RbdError::exists(format!("image {spec}")));
        }
        let id = new_image_id();
        let header = Header {
            version: 0,
            size,
            order,
            features,
            flags: 0,
            object_prefix: layout::data_prefix(&id),
            snap_seq: 0,
            create_ts_ns: crate::now_ns(),
            parent: parent.clone(),
            snaps: BTreeMap::new(),
        };
        let header_oid = io.oid(layout::header_oid(&id));
        let req = OpRequest::new(header_oid.clone())
            .op(Op::Create { exclusive: true })
            .op(Op::OmapSetVals(header.encode()));
        rados
            .operate(req)
            .await
            .ctx(|| format!("creating header of {spec}"))?;
        // From here on every failure undoes what was done (best effort: the
        // undo itself failing leaves orphans only a later remove can clear).
        let mut undo: Vec<ObjectId> = vec![header_oid];
        let result: Result<()> = async {
            if features & FEATURE_OBJECT_MAP != 0 {
                let map_oid = io.oid(layout::object_map_oid(&id, NOSNAP));
                let req = OpRequest::new(map_oid.clone()).op(Op::Create { exclusive: true });
                rados
                    .operate(req)
                    .await
                    .ctx(|| format!("creating object map of {spec}"))?;
                undo.push(map_oid);
            }
            let child = ChildRef {
                pool: io.pool_id,
                namespace: io.namespace.clone(),
                image_id: id.clone(),
            };
            if let Some(p) = &parent {
                set_child_link(rados, p, &child, true).await?;
            }
            let linked = async {
                let nk = dir_name_key(name);
                let ik = dir_id_key(&id);
                omap_cas(
                    rados,
                    &io.oid(DIRECTORY),
                    vec![nk.clone(), ik.clone()],
                    |m| {
                        if m.contains_key(&nk) {
                            return Err(RbdError::exists(format!("image {spec}")));
                        }
                        if m.contains_key(&ik) {
                            return Err(RbdError::exists(format!("image id {id} in {spec}")));
                        }
                        Ok((
                            BTreeMap::from([
                                (nk.clone(), Bytes::from(id.clone())),
                                (ik.clone(), Bytes::from(name.to_string())),
                            ]),
                            vec![],
                        ))
                    },
                )
                .await
            }
            .await;
            if linked.is_err() {
                if let Some(p) = &parent {
                    let _ = set_child_link(rados, p, &child, false).await;
                }
            }
            linked
        }
        .await;
        if result.is_err() {
            for oid in undo.into_iter().rev() {
                let _ = remove_object(rados, oid).await;
            }
        }
        result
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
            opts.read_only || opts.snap.is_some(),
            true,
        )
        .await
    }

    /// Open an image by its id (see [`Rbd::open`]).
    pub async fn open_by_id(&self, io: &IoCtx, id: &str, opts: &OpenOptions) -> Result<Image> {
        let name = lookup_name(self.rados.as_ref(), io, id)
            .await?
            .ok_or_else(|| RbdError::not_found(format!("image id {id} in {}", io.spec(""))))?;
        image::open(
            self.rados.clone(),
            io.clone(),
            id.to_string(),
            name,
            opts.snap.clone(),
            opts.read_only || opts.snap.is_some(),
            true,
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
    /// The old owner is not blocklisted (see the crate's lock module).
    pub async fn lock_break(&self, io: &IoCtx, name: &str, owner: &str) -> Result<()> {
        let id = lookup_id(self.rados.as_ref(), io, name).await?;
        let oid = io.oid(layout::header_oid(&id));
        crate::lock::break_of(
            self.rados.as_ref(),
            &oid,
            &format!("image {}", io.spec(name)),
            owner,
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
        let rados = self.rados.as_ref();
        let spec = io.spec(name);
        let id = lookup_id(rados, io, name).await?;
        let header_oid = io.oid(layout::header_oid(&id));
        let header =
            match crate::header::read_header(rados, &header_oid, &format!("image {spec}")).await {
                Ok(h) => Some(h),
                // A half-removed image: only the directory entry is left.
                Err(RbdError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
        if let Some(h) = &header {
            if !h.snaps.is_empty() {
                return Err(RbdError::NotEmpty {
                    what: format!("image {spec}"),
                    why: format!("it has {} snapshot(s); remove them first", h.snaps.len()),
                });
            }
            let watchers = rados
                .list_watchers(&header_oid)
                .await
                .ctx(|| format!("listing watchers of {spec}"))?;
            if !watchers.is_empty() {
                return Err(RbdError::busy(
                    format!("image {spec}"),
                    format!("it is open by {} client(s)", watchers.len()),
                ));
            }
            // Every object named after the image id, listed rather than
            // derived from the object map so that orphans go too.
            let data = format!("{}.", layout::data_prefix(&id));
            let map = layout::object_map_oid(&id, NOSNAP);
            let objects = rados
                .list_objects(io.pool_id, Some(&io.namespace))
                .await
                .ctx(|| format!("listing objects of {spec}"))?;
            futures::stream::iter(
                objects
                    .into_iter()
                    .filter(|o| o.name.starts_with(&data) || o.name.starts_with(&map))
                    .map(|o| remove_object(rados, io.oid(o.name))),
            )
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
        let nk = dir_name_key(name);
        let ik = dir_id_key(&id);
        omap_cas(
            rados,
            &io.oid(DIRECTORY),
            vec![nk.clone(), ik.clone()],
            |m| {
                let mut rm = vec![];
                if m.get(&nk).map(|v| v.as_ref()) == Some(id.as_bytes()) {
                    rm.push(nk.clone());
                }
                if m.contains_key(&ik) {
                    rm.push(ik.clone());
                }
                Ok((BTreeMap::new(), rm))
            },
        )
        .await
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
        let pid = lookup_id(rados, parent_io, parent_name).await?;
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
        let features = validate_features(opts.features.unwrap_or(FEATURES_DEFAULT))?;
        if features & FEATURE_LAYERING == 0 {
            return Err(RbdError::invalid("a clone needs the layering feature"));
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
        self.create_internal(
            child_io,
            child_name,
            snap.size,
            order,
            features,
            Some(parent),
        )
        .await?;
        // An unprotect racing with us checks the children index after
        // marking the snapshot "unprotecting"; re-check here so that one of
        // the two always backs off.
        let ph = crate::header::read_header(rados, &poid, &format!("image {pspec}")).await?;
        let still = ph
            .snaps
            .get(&snap.id)
            .is_some_and(|s| s.protection == Protection::Protected);
        if !still {
            let _ = self.remove(child_io, child_name).await;
            return Err(RbdError::invalid(format!(
                "snapshot {pspec}@{parent_snap} was unprotected or removed during the clone"
            )));
        }
        Ok(())
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

/// Children links resolved to names (links to vanished images are skipped).
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
        if let Some(image_name) = lookup_name(rados, &cio, &c.image_id).await? {
            out.push(ChildInfo {
                pool_id: c.pool,
                pool_name,
                namespace: c.namespace,
                image_id: c.image_id,
                image_name,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.pool_name, &a.namespace, &a.image_name).cmp(&(
            &b.pool_name,
            &b.namespace,
            &b.image_name,
        ))
    });
    Ok(out)
}
