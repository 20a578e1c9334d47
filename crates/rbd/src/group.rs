//! Consistency groups (librbd's `rbd_group_*`): a named set of images whose
//! snapshots are taken together, so that a VM with several disks can be
//! snapshotted (and rolled back) as one.
//!
//! Objects, per pool and namespace:
//! * `rbd_group_directory`: omap `name_<name>` → group id, `id_<id>` → name.
//! * `rbd_group_header.<id>`: omap `image_<pool %016x>_<image id>` → JSON
//!   [`GroupImageRecord`], `snapshot_<group snap id>` → JSON
//!   [`GroupSnapRecord`].
//! * each member image's header: `group` → JSON [`GroupRef`].
//!
//! A group snapshot is recorded `incomplete` first, then every member's
//! exclusive lock is taken (its owner, e.g. a running VM, hands it over and
//! its next writes wait) and held until every member has its snapshot; only
//! then is the record marked `complete` and the locks let go. So no write
//! that started after another member's write completed is in the snapshot
//! without it: the snapshots are crash-consistent as a set. Members
//! without the exclusive-lock feature are only consistent one by one (each
//! is quiesced by the header-update notification, as a plain snapshot).
//! Member snapshots live in the group namespace (named
//! `.group.<pool hex>_<group id>_<snap id>`, not reachable by user name).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{RbdError, Result};
use crate::header::update_header;
use crate::layout::{dir_id_key, dir_name_key};
use crate::rbd::{
    dir_lookup, dir_unlink_from, lookup_id, lookup_name, omap_cas, omap_list, remove_object, utf8,
};
use crate::{Image, IoCtx, OpenOptions, Rbd};
use quarry_rados::{Op, OpRequest, PoolId, SnapId};

const GROUP_DIRECTORY: &str = "rbd_group_directory";
const IMAGE_PREFIX: &str = "image_";
const SNAP_PREFIX: &str = "snapshot_";
/// Longest group name (as an image name).
const MAX_GROUP_NAME_LEN: usize = crate::layout::MAX_IMAGE_NAME_LEN;

/// The group an image belongs to (stored in the image's header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    /// The group's pool (its namespace is the image's).
    pub pool: PoolId,
    /// The group's id.
    pub group_id: String,
}

/// Which group snapshot an image snapshot belongs to (librbd's group
/// snapshot namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapNamespace {
    /// The group's pool.
    pub pool: PoolId,
    /// The group's id.
    pub group_id: String,
    /// The group snapshot's id.
    pub snap_id: String,
}

/// A member's state in the group (librbd's `rbd_group_image_state_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupImageState {
    /// Fully a member.
    Attached,
    /// Being added or removed (an interrupted add or remove).
    Incomplete,
}

/// A group snapshot's state (librbd's `rbd_group_snap_state_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupSnapState {
    /// Being taken, or interrupted: not every member has its snapshot.
    Incomplete,
    /// Every member has its snapshot.
    Complete,
}

/// A member as recorded in the group header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupImageRecord {
    pool: PoolId,
    image_id: String,
    state: GroupImageState,
}

/// One member's snapshot within a group snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupImageSnap {
    pool: PoolId,
    image_id: String,
    snap_id: SnapId,
}

/// A group snapshot as recorded in the group header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupSnapRecord {
    id: String,
    name: String,
    state: GroupSnapState,
    /// The members when it was taken.
    members: Vec<(PoolId, String)>,
    /// The member snapshots taken so far.
    snaps: Vec<GroupImageSnap>,
}

/// A member of a group, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupImageInfo {
    /// The image's pool id.
    pub pool_id: PoolId,
    /// The image's pool name.
    pub pool_name: String,
    /// The image's name (its id if it has no directory entry any more).
    pub name: String,
    /// Its state.
    pub state: GroupImageState,
}

/// A group snapshot, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnapInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: GroupSnapState,
}

fn header_oid(id: &str) -> String {
    format!("rbd_group_header.{id}")
}

fn image_key(pool: PoolId, image_id: &str) -> String {
    format!("{IMAGE_PREFIX}{pool:016x}_{image_id}")
}

fn snap_key(id: &str) -> String {
    format!("{SNAP_PREFIX}{id}")
}

/// The user-invisible name of a member's snapshot (as librbd names them).
fn member_snap_name(ns: &GroupSnapNamespace) -> String {
    format!(".group.{:x}_{}_{}", ns.pool, ns.group_id, ns.snap_id)
}

fn json<T: Serialize>(v: &T) -> Bytes {
    // Plain structs of strings and integers always serialize.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn decode<T: for<'de> Deserialize<'de>>(v: &Bytes, what: &str) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| RbdError::corrupt(format!("{what}: {e}")))
}

fn validate_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN {
        return Err(RbdError::invalid(format!(
            "group name must be 1..={MAX_GROUP_NAME_LEN} bytes"
        )));
    }
    if name.contains(['/', '@']) || name.chars().any(char::is_control) {
        return Err(RbdError::invalid(format!(
            "group name '{name}' contains '/', '@' or a control character"
        )));
    }
    Ok(())
}

/// Whether the group `g` an image's header names (in the image's
/// namespace `ns`) still exists: an image linked to a group removed
/// meanwhile (a race of `group rm` with `group image add`) is not held by
/// it.
pub(crate) async fn group_exists(
    rados: &dyn quarry_rados::Rados,
    ns: &str,
    g: &GroupRef,
) -> Result<bool> {
    let oid =
        quarry_rados::ObjectId::with_namespace(g.pool, ns.to_string(), header_oid(&g.group_id));
    match rados.operate(OpRequest::new(oid).op(Op::Stat)).await {
        Ok(_) => Ok(true),
        Err(e) if e.errno == quarry_common::Errno::ENOENT => Ok(false),
        Err(e) => Err(RbdError::rados(
            format!("looking up group id {}", g.group_id),
            e,
        )),
    }
}

/// A group's header, decoded.
struct GroupHeader {
    images: BTreeMap<String, GroupImageRecord>,
    snaps: BTreeMap<String, GroupSnapRecord>,
}

impl Rbd {
    fn group_what(io: &IoCtx, name: &str) -> String {
        format!("group {}", io.spec(name))
    }

    /// The id of group `name` (`ENOENT`).
    pub async fn group_id(&self, io: &IoCtx, name: &str) -> Result<String> {
        let what = format!("group directory entry of {name}");
        dir_lookup(
            self.rados().as_ref(),
            &io.oid(GROUP_DIRECTORY),
            dir_name_key(name),
            &what,
        )
        .await?
        .ok_or_else(|| RbdError::not_found(Self::group_what(io, name)))
    }

    async fn group_header(&self, io: &IoCtx, id: &str, what: &str) -> Result<GroupHeader> {
        let rados = self.rados().as_ref();
        let oid = io.oid(header_oid(id));
        let req = OpRequest::new(oid.clone()).op(Op::AssertExists);
        rados.operate(req).await.map_err(|e| {
            if e.errno == quarry_common::Errno::ENOENT {
                RbdError::not_found(what.to_string())
            } else {
                RbdError::rados(format!("reading {what}"), e)
            }
        })?;
        let mut images = BTreeMap::new();
        for (k, v) in omap_list(rados, &oid, IMAGE_PREFIX).await? {
            images.insert(k.clone(), decode(&v, &format!("{what} {k}"))?);
        }
        let mut snaps = BTreeMap::new();
        for (k, v) in omap_list(rados, &oid, SNAP_PREFIX).await? {
            let s: GroupSnapRecord = decode(&v, &format!("{what} {k}"))?;
            snaps.insert(s.id.clone(), s);
        }
        Ok(GroupHeader { images, snaps })
    }

    /// Change keys of a group's header by compare-and-swap.
    async fn group_update<F>(&self, io: &IoCtx, id: &str, keys: Vec<String>, f: F) -> Result<()>
    where
        F: FnMut(&BTreeMap<String, Bytes>) -> Result<(BTreeMap<String, Bytes>, Vec<String>)>,
    {
        omap_cas(self.rados().as_ref(), &io.oid(header_oid(id)), keys, f).await
    }

    /// `rbd group create`: an empty group (`EEXIST`, `EINVAL`).
    pub async fn group_create(&self, io: &IoCtx, name: &str) -> Result<()> {
        validate_group_name(name)?;
        let rados = self.rados().as_ref();
        let what = Self::group_what(io, name);
        if self.group_id(io, name).await.is_ok() {
            return Err(RbdError::exists(what));
        }
        let id = crate::rbd::new_image_id();
        // Header first: a crash before the directory entry leaves an
        // unlisted empty object, never a listed group without a header.
        let req = OpRequest::new(io.oid(header_oid(&id))).op(Op::Create { exclusive: true });
        rados
            .operate(req)
            .await
            .map_err(|e| RbdError::rados(format!("creating the header of {what}"), e))?;
        let (nk, ik) = (dir_name_key(name), dir_id_key(&id));
        let r = omap_cas(
            rados,
            &io.oid(GROUP_DIRECTORY),
            vec![nk.clone(), ik.clone()],
            |m| {
                if m.contains_key(&nk) {
                    return Err(RbdError::exists(what.clone()));
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
        .await;
        if r.is_err() {
            if let Err(e) = remove_object(rados, io.oid(header_oid(&id))).await {
                tracing::warn!("removing the header of a group that was not created: {e}");
            }
        }
        r
    }

    /// `rbd group ls`: group names, sorted.
    pub async fn group_list(&self, io: &IoCtx) -> Result<Vec<String>> {
        let m = omap_list(self.rados().as_ref(), &io.oid(GROUP_DIRECTORY), "name_").await?;
        Ok(m.keys().map(|k| k["name_".len()..].to_string()).collect())
    }

    /// `rbd group rename` within the pool/namespace (`ENOENT`, `EEXIST`).
    pub async fn group_rename(&self, io: &IoCtx, src: &str, dst: &str) -> Result<()> {
        validate_group_name(dst)?;
        let (sk, dk) = (dir_name_key(src), dir_name_key(dst));
        omap_cas(
            self.rados().as_ref(),
            &io.oid(GROUP_DIRECTORY),
            vec![sk.clone(), dk.clone()],
            |m| {
                let id = m
                    .get(&sk)
                    .ok_or_else(|| RbdError::not_found(Self::group_what(io, src)))?;
                if src == dst {
                    return Ok((BTreeMap::new(), vec![]));
                }
                if m.contains_key(&dk) {
                    return Err(RbdError::exists(Self::group_what(io, dst)));
                }
                let id = utf8(id, "group directory entry")?;
                Ok((
                    BTreeMap::from([
                        (dk.clone(), Bytes::from(id.clone())),
                        (dir_id_key(&id), Bytes::from(dst.to_string())),
                    ]),
                    vec![sk.clone()],
                ))
            },
        )
        .await
    }

    /// `rbd group rm`: removes the group's snapshots (the members' group
    /// snapshots), takes every image out of it, then the group itself.
    pub async fn group_remove(&self, io: &IoCtx, name: &str) -> Result<()> {
        let what = Self::group_what(io, name);
        let id = self.group_id(io, name).await?;
        let h = self.group_header(io, &id, &what).await?;
        for s in h.snaps.values() {
            self.group_snap_remove_record(io, &id, s, &what).await?;
        }
        for rec in h.images.values() {
            self.group_detach(io, &id, rec, &what).await?;
        }
        let rados = self.rados().as_ref();
        remove_object(rados, io.oid(header_oid(&id))).await?;
        dir_unlink_from(rados, &io.oid(GROUP_DIRECTORY), name, &id).await
    }

    /// The IoCtx of a member's pool (the group's namespace).
    async fn member_io(&self, group_io: &IoCtx, pool: PoolId) -> Result<IoCtx> {
        if pool == group_io.pool_id {
            return Ok(group_io.clone());
        }
        self.ioctx(pool, &group_io.namespace).await
    }

    /// Clear image `image_id`'s link to a group if the link is stale: the
    /// group is gone or does not list the image (an interrupted `group rm`,
    /// or a group header removed by hand). A member is recorded in its
    /// group before its header is linked and unlinked before its record
    /// goes, so a link whose record is missing holds nothing. Returns
    /// whether the image still belongs to a group.
    pub(crate) async fn clear_stale_group_link(
        &self,
        iio: &IoCtx,
        image_id: &str,
        what: &str,
    ) -> Result<bool> {
        let hoid = iio.oid(crate::layout::header_oid(image_id));
        let h = crate::header::read_header(self.rados().as_ref(), &hoid, what).await?;
        let Some(g) = h.group else {
            return Ok(false);
        };
        let gio = self.member_io(iio, g.pool).await?;
        let member = match self
            .group_header(&gio, &g.group_id, &format!("group id {}", g.group_id))
            .await
        {
            Ok(gh) => gh.images.contains_key(&image_key(iio.pool_id, image_id)),
            Err(RbdError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        if member {
            return Ok(true);
        }
        tracing::info!(
            "{what}: clearing its link to group id {}, which does not list it",
            g.group_id
        );
        let h = update_header(self.rados(), &hoid, what, |h| {
            if h.group.as_ref() == Some(&g) {
                h.group = None;
            }
            Ok(())
        })
        .await?;
        Ok(h.group.is_some())
    }

    /// Take a member out: its header's group link, then its record.
    async fn group_detach(
        &self,
        io: &IoCtx,
        group_id: &str,
        rec: &GroupImageRecord,
        what: &str,
    ) -> Result<()> {
        let iio = self.member_io(io, rec.pool).await?;
        let hoid = iio.oid(crate::layout::header_oid(&rec.image_id));
        let image_what = format!("image id {} in {what}", rec.image_id);
        let mine = GroupRef {
            pool: io.pool_id,
            group_id: group_id.to_string(),
        };
        match update_header(self.rados(), &hoid, &image_what, |h| {
            if h.group.as_ref() == Some(&mine) {
                h.group = None;
            }
            Ok(())
        })
        .await
        {
            Ok(_) | Err(RbdError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let key = image_key(rec.pool, &rec.image_id);
        self.group_update(io, group_id, vec![key.clone()], |m| {
            Ok((
                BTreeMap::new(),
                m.contains_key(&key)
                    .then(|| key.clone())
                    .into_iter()
                    .collect(),
            ))
        })
        .await
    }

    /// The group's description and id and the image's id for adding or
    /// removing a member (`EINVAL` across namespaces, `ENOENT`).
    async fn member_ids(
        &self,
        gio: &IoCtx,
        group: &str,
        iio: &IoCtx,
        image: &str,
    ) -> Result<(String, String, String)> {
        if gio.namespace != iio.namespace {
            return Err(RbdError::invalid("group and image namespace must match"));
        }
        let gid = self.group_id(gio, group).await?;
        let image_id = lookup_id(self.rados().as_ref(), iio, image).await?;
        Ok((Self::group_what(gio, group), gid, image_id))
    }

    /// `rbd group image add`: image `image` of `iio` joins group `group`
    /// of `gio` (same namespace; `EEXIST` if it is in a group already).
    pub async fn group_image_add(
        &self,
        gio: &IoCtx,
        group: &str,
        iio: &IoCtx,
        image: &str,
    ) -> Result<()> {
        let (what, gid, image_id) = self.member_ids(gio, group, iio, image).await?;
        let key = image_key(iio.pool_id, &image_id);
        // Incomplete first: an interrupted add is visible and removable.
        let rec = GroupImageRecord {
            pool: iio.pool_id,
            image_id: image_id.clone(),
            state: GroupImageState::Incomplete,
        };
        self.group_update(gio, &gid, vec![key.clone()], |m| {
            if m.contains_key(&key) {
                return Err(RbdError::exists(format!(
                    "image {} in {what}",
                    iio.spec(image)
                )));
            }
            Ok((BTreeMap::from([(key.clone(), json(&rec))]), vec![]))
        })
        .await?;
        let link = GroupRef {
            pool: gio.pool_id,
            group_id: gid.clone(),
        };
        let hoid = iio.oid(crate::layout::header_oid(&image_id));
        let image_what = format!("image {}", iio.spec(image));
        // A stale link to another group must not keep the image out.
        let cleared = self
            .clear_stale_group_link(iio, &image_id, &image_what)
            .await;
        let linked = match cleared {
            Err(e) => Err(e),
            Ok(_) => update_header(self.rados(), &hoid, &image_what, |h| match &h.group {
                Some(g) if *g == link => Ok(()),
                Some(_) => Err(RbdError::exists(format!(
                    "{image_what} is in another group already;"
                ))),
                None if h.migration.is_some() => Err(RbdError::busy(
                    image_what.clone(),
                    "it takes part in a live migration",
                )),
                None => {
                    h.group = Some(link.clone());
                    Ok(())
                }
            })
            .await
            .map(|_| ()),
        };
        if let Err(e) = linked {
            let undo = self
                .group_update(gio, &gid, vec![key.clone()], |_| {
                    Ok((BTreeMap::new(), vec![key.clone()]))
                })
                .await;
            if let Err(u) = undo {
                tracing::warn!("{what}: removing the record of an image that did not join: {u}");
            }
            return Err(e);
        }
        let done = GroupImageRecord {
            state: GroupImageState::Attached,
            ..rec
        };
        self.group_update(gio, &gid, vec![key.clone()], |_| {
            Ok((BTreeMap::from([(key.clone(), json(&done))]), vec![]))
        })
        .await
    }

    /// `rbd group image rm`: the image leaves the group; its snapshots of
    /// the group's snapshots are removed with it (those group snapshots
    /// become `incomplete`). `ENOENT` if it is not a member.
    pub async fn group_image_remove(
        &self,
        gio: &IoCtx,
        group: &str,
        iio: &IoCtx,
        image: &str,
    ) -> Result<()> {
        let (what, gid, image_id) = self.member_ids(gio, group, iio, image).await?;
        let h = self.group_header(gio, &gid, &what).await?;
        let key = image_key(iio.pool_id, &image_id);
        let rec =
            h.images.get(&key).cloned().ok_or_else(|| {
                RbdError::not_found(format!("image {} in {what}", iio.spec(image)))
            })?;
        for s in h.snaps.values() {
            let Some(m) = s
                .snaps
                .iter()
                .find(|m| m.pool == rec.pool && m.image_id == rec.image_id)
            else {
                continue;
            };
            self.remove_member_snap(iio, m, &what).await?;
            let sk = snap_key(&s.id);
            let (pool, iid) = (rec.pool, rec.image_id.clone());
            self.group_update(gio, &gid, vec![sk.clone()], |cur| {
                let Some(v) = cur.get(&sk) else {
                    return Ok((BTreeMap::new(), vec![]));
                };
                let mut s: GroupSnapRecord = decode(v, &sk)?;
                s.snaps.retain(|m| !(m.pool == pool && m.image_id == iid));
                s.state = GroupSnapState::Incomplete;
                Ok((BTreeMap::from([(sk.clone(), json(&s))]), vec![]))
            })
            .await?;
        }
        self.group_detach(gio, &gid, &rec, &what).await
    }

    /// `rbd group image ls`: the members, by pool id then name.
    pub async fn group_image_list(&self, gio: &IoCtx, group: &str) -> Result<Vec<GroupImageInfo>> {
        let what = Self::group_what(gio, group);
        let gid = self.group_id(gio, group).await?;
        let h = self.group_header(gio, &gid, &what).await?;
        let mut out = Vec::with_capacity(h.images.len());
        for rec in h.images.values() {
            let iio = self.member_io(gio, rec.pool).await?;
            let name = lookup_name(self.rados().as_ref(), &iio, &rec.image_id)
                .await?
                .unwrap_or_else(|| rec.image_id.clone());
            out.push(GroupImageInfo {
                pool_id: rec.pool,
                pool_name: iio.pool_name.clone(),
                name,
                state: rec.state,
            });
        }
        out.sort_by(|a, b| (a.pool_id, &a.name).cmp(&(b.pool_id, &b.name)));
        Ok(out)
    }

    /// `rbd_get_group`: the group image `image` belongs to, as (group pool
    /// id, group name), if any.
    pub async fn image_group(&self, io: &IoCtx, image: &Image) -> Result<Option<(PoolId, String)>> {
        let Some(g) = image.group().await? else {
            return Ok(None);
        };
        let gio = self.member_io(io, g.pool).await?;
        let name = match self.group_name(&gio, &g.group_id).await {
            Ok(n) => n,
            // A link to a group removed meanwhile: named by its id.
            Err(RbdError::NotFound { .. }) => g.group_id.clone(),
            Err(e) => return Err(e),
        };
        Ok(Some((g.pool, name)))
    }

    /// The name of group `id` in `io`'s pool/namespace (`ENOENT`).
    pub async fn group_name(&self, io: &IoCtx, id: &str) -> Result<String> {
        dir_lookup(
            self.rados().as_ref(),
            &io.oid(GROUP_DIRECTORY),
            dir_id_key(id),
            "group directory entry",
        )
        .await?
        .ok_or_else(|| RbdError::not_found(format!("group id {id}")))
    }

    /// `rbd group snap ls`: the group's snapshots, oldest first.
    pub async fn group_snap_list(&self, gio: &IoCtx, group: &str) -> Result<Vec<GroupSnapInfo>> {
        let what = Self::group_what(gio, group);
        let gid = self.group_id(gio, group).await?;
        let h = self.group_header(gio, &gid, &what).await?;
        Ok(h.snaps
            .values()
            .map(|s| GroupSnapInfo {
                id: s.id.clone(),
                name: s.name.clone(),
                state: s.state,
            })
            .collect())
    }

    /// Open every member of `members` (sorted: two group snapshots take
    /// the locks in the same order).
    async fn open_members(&self, gio: &IoCtx, members: &[(PoolId, String)]) -> Result<Vec<Image>> {
        let mut images = Vec::with_capacity(members.len());
        for (pool, id) in members {
            let iio = self.member_io(gio, *pool).await?;
            match self.open_by_id(&iio, id, &OpenOptions::default()).await {
                Ok(img) => images.push(img),
                Err(e) => {
                    close_all(&images).await;
                    return Err(e);
                }
            }
        }
        Ok(images)
    }

    /// `rbd group snap create GROUP@SNAP`: a crash-consistent snapshot of
    /// every member (see the module comment). `EEXIST` for a taken name.
    pub async fn group_snap_create(&self, gio: &IoCtx, group: &str, snap: &str) -> Result<()> {
        crate::layout::validate_snap_name(snap)?;
        let what = Self::group_what(gio, group);
        let gid = self.group_id(gio, group).await?;
        let h = self.group_header(gio, &gid, &what).await?;
        if h.snaps.values().any(|s| s.name == snap) {
            return Err(RbdError::exists(format!("snapshot {snap} of {what}")));
        }
        if let Some(r) = h
            .images
            .values()
            .find(|r| r.state != GroupImageState::Attached)
        {
            return Err(RbdError::invalid(format!(
                "image id {} of {what} is half added or removed; remove it from the group first",
                r.image_id
            )));
        }
        let members: Vec<(PoolId, String)> = h
            .images
            .values()
            .map(|r| (r.pool, r.image_id.clone()))
            .collect();
        let snap_id = format!("{:016x}", crate::now_ns());
        let mut rec = GroupSnapRecord {
            id: snap_id.clone(),
            name: snap.to_string(),
            state: GroupSnapState::Incomplete,
            members: members.clone(),
            snaps: vec![],
        };
        let sk = snap_key(&snap_id);
        let name_taken = |m: &BTreeMap<String, Bytes>| m.contains_key(&sk);
        self.group_update(gio, &gid, vec![sk.clone()], |m| {
            if name_taken(m) {
                return Err(RbdError::exists(format!("snapshot id {snap_id} of {what}")));
            }
            Ok((BTreeMap::from([(sk.clone(), json(&rec))]), vec![]))
        })
        .await?;
        let ns = GroupSnapNamespace {
            pool: gio.pool_id,
            group_id: gid.clone(),
            snap_id: snap_id.clone(),
        };
        let taken = match self.open_members(gio, &members).await {
            Ok(images) => {
                let t = take_member_snaps(&images, &ns).await;
                close_all(&images).await;
                t
            }
            Err(e) => Err(e),
        };
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                // Undo (as librbd): the name stays free for a retry.
                if let Err(u) = self.group_snap_remove_record(gio, &gid, &rec, &what).await {
                    tracing::warn!("{what}: removing the failed snapshot {snap}: {u}");
                }
                return Err(e);
            }
        };
        rec.snaps = members
            .iter()
            .zip(taken)
            .map(|((pool, image_id), snap_id)| GroupImageSnap {
                pool: *pool,
                image_id: image_id.clone(),
                snap_id,
            })
            .collect();
        rec.state = GroupSnapState::Complete;
        self.group_update(gio, &gid, vec![sk.clone()], |_| {
            Ok((BTreeMap::from([(sk.clone(), json(&rec))]), vec![]))
        })
        .await
    }

    /// Remove one member's snapshot (gone already: nothing to do).
    async fn remove_member_snap(&self, iio: &IoCtx, m: &GroupImageSnap, what: &str) -> Result<()> {
        let img = match self
            .open_by_id(iio, &m.image_id, &OpenOptions::default())
            .await
        {
            Ok(i) => i,
            Err(RbdError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let r = match img.snap_remove_by_id(m.snap_id).await {
            Ok(()) | Err(RbdError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = img.close().await {
            tracing::warn!("{what}: closing image id {}: {e}", m.image_id);
        }
        r
    }

    /// Remove every member snapshot of group snapshot `s`, then its record.
    async fn group_snap_remove_record(
        &self,
        gio: &IoCtx,
        gid: &str,
        s: &GroupSnapRecord,
        what: &str,
    ) -> Result<()> {
        // An interrupted snapshot may have member snapshots it did not
        // record: they carry its namespace, so look them up by it.
        let ns = GroupSnapNamespace {
            pool: gio.pool_id,
            group_id: gid.to_string(),
            snap_id: s.id.clone(),
        };
        for (pool, image_id) in &s.members {
            let iio = self.member_io(gio, *pool).await?;
            let img = match self
                .open_by_id(&iio, image_id, &OpenOptions::default())
                .await
            {
                Ok(i) => i,
                Err(RbdError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let ids: Vec<SnapId> = match img.snap_list().await {
                Ok(l) => l
                    .into_iter()
                    .filter(|i| i.group.as_ref() == Some(&ns))
                    .map(|i| i.id)
                    .collect(),
                Err(e) => {
                    close_all(std::slice::from_ref(&img)).await;
                    return Err(e);
                }
            };
            let mut r = Ok(());
            for id in ids {
                r = match img.snap_remove_by_id(id).await {
                    Ok(()) | Err(RbdError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                };
                if r.is_err() {
                    break;
                }
            }
            close_all(std::slice::from_ref(&img)).await;
            r?;
        }
        let sk = snap_key(&s.id);
        self.group_update(gio, gid, vec![sk.clone()], |_| {
            Ok((BTreeMap::new(), vec![sk.clone()]))
        })
        .await
        .map_err(|e| match e {
            RbdError::NotFound { .. } => RbdError::not_found(what.to_string()),
            e => e,
        })
    }

    async fn group_snap_by_name(
        &self,
        gio: &IoCtx,
        group: &str,
        snap: &str,
    ) -> Result<(String, GroupSnapRecord, GroupHeader, String)> {
        let what = Self::group_what(gio, group);
        let gid = self.group_id(gio, group).await?;
        let h = self.group_header(gio, &gid, &what).await?;
        let s = h
            .snaps
            .values()
            .find(|s| s.name == snap)
            .cloned()
            .ok_or_else(|| RbdError::not_found(format!("snapshot {snap} of {what}")))?;
        Ok((gid, s, h, what))
    }

    /// `rbd group snap rm GROUP@SNAP`.
    pub async fn group_snap_remove(&self, gio: &IoCtx, group: &str, snap: &str) -> Result<()> {
        let (gid, s, _, what) = self.group_snap_by_name(gio, group, snap).await?;
        self.group_snap_remove_record(gio, &gid, &s, &what).await
    }

    /// `rbd group snap rename GROUP@SNAP NEW` (`EEXIST`, `ENOENT`).
    pub async fn group_snap_rename(
        &self,
        gio: &IoCtx,
        group: &str,
        src: &str,
        dst: &str,
    ) -> Result<()> {
        crate::layout::validate_snap_name(dst)?;
        let (gid, s, h, what) = self.group_snap_by_name(gio, group, src).await?;
        if src == dst {
            return Ok(());
        }
        if h.snaps.values().any(|o| o.name == dst) {
            return Err(RbdError::exists(format!("snapshot {dst} of {what}")));
        }
        // Every snapshot key is read: the name must stay unique.
        let keys: Vec<String> = h.snaps.keys().map(|k| snap_key(k)).collect();
        let sk = snap_key(&s.id);
        self.group_update(gio, &gid, keys, |m| {
            let mut cur: Option<GroupSnapRecord> = None;
            for (k, v) in m {
                let o: GroupSnapRecord = decode(v, k)?;
                if o.name == dst {
                    return Err(RbdError::exists(format!("snapshot {dst} of {what}")));
                }
                if *k == sk {
                    cur = Some(o);
                }
            }
            let mut cur =
                cur.ok_or_else(|| RbdError::not_found(format!("snapshot {src} of {what}")))?;
            cur.name = dst.to_string();
            Ok((BTreeMap::from([(sk.clone(), json(&cur))]), vec![]))
        })
        .await
    }

    /// `rbd group snap rollback GROUP@SNAP`: every member back to its
    /// snapshot. Refused (`EINVAL`) if the snapshot is incomplete or the
    /// members changed since it was taken.
    pub async fn group_snap_rollback(&self, gio: &IoCtx, group: &str, snap: &str) -> Result<()> {
        let (_, s, h, what) = self.group_snap_by_name(gio, group, snap).await?;
        if s.state != GroupSnapState::Complete {
            return Err(RbdError::invalid(format!(
                "snapshot {snap} of {what} is incomplete"
            )));
        }
        let mut now: Vec<(PoolId, String)> = h
            .images
            .values()
            .map(|r| (r.pool, r.image_id.clone()))
            .collect();
        let mut then: Vec<(PoolId, String)> = s
            .snaps
            .iter()
            .map(|m| (m.pool, m.image_id.clone()))
            .collect();
        now.sort();
        then.sort();
        if now != then {
            return Err(RbdError::invalid(format!(
                "the images of {what} changed since snapshot {snap} was taken"
            )));
        }
        for m in &s.snaps {
            let iio = self.member_io(gio, m.pool).await?;
            let img = self
                .open_by_id(&iio, &m.image_id, &OpenOptions::default())
                .await?;
            let r = img.snap_rollback_by_id(m.snap_id).await;
            close_all(std::slice::from_ref(&img)).await;
            r?;
        }
        Ok(())
    }
}

/// Close handles, logging (not failing on) errors: they only release
/// locks and watches.
async fn close_all(images: &[Image]) {
    for img in images {
        if let Err(e) = img.close().await {
            tracing::warn!(image = img.name(), "closing a group member: {e}");
        }
    }
}

/// Hold every member's exclusive lock, then snapshot each: the snap ids,
/// in `images`' order.
async fn take_member_snaps(images: &[Image], ns: &GroupSnapNamespace) -> Result<Vec<SnapId>> {
    let name = member_snap_name(ns);
    // Snap ids are allocated while the locks are taken.
    let mut pre_ids: Vec<_> = images.iter().map(|i| Some(i.start_snap_id())).collect();
    let mut holds = Vec::with_capacity(images.len());
    let mut held = Ok(());
    for img in images {
        match img.hold_lock().await {
            Ok(h) => holds.push(h),
            Err(e) => {
                held = Err(e);
                break;
            }
        }
    }
    // With every lock held, the members' snapshots are independent: taken
    // together (the members' writers wait meanwhile).
    let taken: Result<Vec<SnapId>> = match held {
        Ok(()) => {
            let snaps = images.iter().zip(pre_ids.iter_mut()).map(|(img, pre)| {
                let pre = pre.take();
                let name = &name;
                async move {
                    match pre {
                        Some(p) => img.snap_create_grouped(name, ns.clone(), p).await,
                        None => Err(RbdError::invalid("no snap id for a group member")),
                    }
                }
            });
            futures::future::join_all(snaps).await.into_iter().collect()
        }
        Err(e) => Err(e),
    };
    drop(holds);
    // Ids not used (the locks could not be taken) go back to the monitor.
    for (img, pre) in images.iter().zip(pre_ids) {
        if let Some(p) = pre {
            img.release_snap_id(p).await;
        }
    }
    let ids = taken?;
    for img in images {
        img.notify_header_changed().await;
    }
    Ok(ids)
}
