//! The image header (`rbd_header.<id>` omap) and its compare-and-swap update.
//!
//! Layout (omap key → value):
//! * `size`, `features`, `flags`, `snap_seq`, `create_timestamp`: u64 little endian
//! * `access_timestamp`, `modify_timestamp`: u64 little endian ns, as
//!   `create_timestamp` (set with it; then moved forward by I/O at most
//!   once a minute per handle, see `Inner::touch`; absent in headers
//!   made before session 23, which read as the creation time)
//! * `snap_limit`: u64 little endian, the most snapshots the image may
//!   have (absent: no limit), as librbd's `snap_limit` key
//! * `order`: one byte
//! * `object_prefix`: UTF-8 `rbd_data.<id>`
//! * `parent`: JSON [`ParentSpec`] (absent for non-clones and after flatten;
//!   a migration's destination reads through its source's head: snap id
//!   `NOSNAP`)
//! * `migration`: JSON [`crate::MigrationSpec`], on both images of a live
//!   migration until it is committed or aborted
//! * `group`: JSON [`crate::GroupRef`], the consistency group the image
//!   belongs to (absent: none)
//! * `snapshot_<id as %016x>`: JSON [`SnapRecord`]
//! * `metadata_<key>`: user metadata, raw bytes (not loaded with the header)
//!
//! Every update reads the header with its object version, computes the new
//! header, and writes only the changed keys in one compound op guarded by
//! `AssertExists` + `AssertVersion`: a concurrent writer makes the guard
//! fail and the update is recomputed from a fresh read. So two clients can
//! never interleave half-updates (e.g. two snapshots with the same name).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, PoolId, Rados, SnapContext, SnapId};
use serde::{Deserialize, Serialize};

use crate::error::{RbdError, Result};

pub(crate) const KEY_SIZE: &str = "size";
pub(crate) const KEY_ORDER: &str = "order";
pub(crate) const KEY_FEATURES: &str = "features";
pub(crate) const KEY_FLAGS: &str = "flags";
pub(crate) const KEY_PREFIX: &str = "object_prefix";
pub(crate) const KEY_SNAP_SEQ: &str = "snap_seq";
pub(crate) const KEY_CREATE_TS: &str = "create_timestamp";
pub(crate) const KEY_ACCESS_TS: &str = "access_timestamp";
pub(crate) const KEY_MODIFY_TS: &str = "modify_timestamp";
pub(crate) const KEY_PARENT: &str = "parent";
pub(crate) const KEY_SNAP_LIMIT: &str = "snap_limit";
pub(crate) const KEY_MIGRATION: &str = "migration";
pub(crate) const KEY_GROUP: &str = "group";
pub(crate) const SNAP_PREFIX: &str = "snapshot_";
pub(crate) const METADATA_PREFIX: &str = "metadata_";

/// How many times a compare-and-swap update is retried before `EAGAIN`.
const CAS_RETRIES_MAX: u32 = 100;

/// Where a clone's data comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ParentSpec {
    /// Parent's pool.
    pub pool: PoolId,
    /// Parent's namespace.
    pub namespace: String,
    /// Parent's image id (immutable, survives renames).
    pub image_id: String,
    /// The parent snapshot cloned.
    pub snap_id: SnapId,
    /// Bytes of the child that fall through to the parent; shrinks with
    /// the child, never grows back.
    pub overlap: u64,
}

impl ParentSpec {
    /// Same parent image snapshot (the overlap may differ).
    pub fn same_source(&self, o: &ParentSpec) -> bool {
        self.pool == o.pool
            && self.namespace == o.namespace
            && self.image_id == o.image_id
            && self.snap_id == o.snap_id
    }
}

/// Snapshot protection state (clone v1 semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Protection {
    /// Can be removed, cannot be cloned.
    Unprotected,
    /// Transitional: an unprotect is checking for children; clones refused.
    Unprotecting,
    /// Can be cloned, cannot be removed.
    Protected,
}

/// One snapshot as recorded in the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapRecord {
    /// Self-managed snap id (pool-wide).
    pub id: SnapId,
    /// Name, unique per image.
    pub name: String,
    /// Image size when taken.
    pub size: u64,
    /// Creation time, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Protection state.
    pub protection: Protection,
    /// The parent link as it was when taken (clones).
    pub parent: Option<ParentSpec>,
    /// Set for a snapshot taken as part of a group snapshot (librbd's
    /// group snapshot namespace): not addressable by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::GroupSnapNamespace>,
}

/// The decoded header plus the object version it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Object version of `rbd_header.<id>` when read (CAS token).
    pub version: u64,
    pub size: u64,
    pub order: u8,
    pub features: u64,
    pub flags: u64,
    pub object_prefix: String,
    pub snap_seq: SnapId,
    pub create_ts_ns: u64,
    /// Last read (as recorded, see [`KEY_ACCESS_TS`]).
    pub access_ts_ns: u64,
    /// Last write (as recorded, see [`KEY_MODIFY_TS`]).
    pub modify_ts_ns: u64,
    /// The most snapshots allowed (`rbd snap limit set`); `None`: no limit.
    pub snap_limit: Option<u64>,
    pub parent: Option<ParentSpec>,
    /// The live migration this image takes part in, if any.
    pub migration: Option<crate::MigrationSpec>,
    /// The consistency group the image belongs to, if any.
    pub group: Option<crate::GroupRef>,
    pub snaps: BTreeMap<SnapId, SnapRecord>,
}

pub(crate) fn snap_key(id: SnapId) -> String {
    format!("{SNAP_PREFIX}{id:016x}")
}

fn u64_val(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

fn json_val<T: Serialize>(v: &T) -> Bytes {
    // Serializing plain structs of strings and integers cannot fail.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn get_u64(map: &BTreeMap<String, Bytes>, key: &str, oid: &str) -> Result<u64> {
    let v = map
        .get(key)
        .ok_or_else(|| RbdError::corrupt(format!("{oid}: key '{key}' missing")))?;
    let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| {
        RbdError::corrupt(format!("{oid}: key '{key}' is {} bytes, not 8", v.len()))
    })?;
    Ok(u64::from_le_bytes(arr))
}

fn get_json<T: for<'de> Deserialize<'de>>(v: &Bytes, key: &str, oid: &str) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| RbdError::corrupt(format!("{oid}: key '{key}': {e}")))
}

impl Header {
    /// The omap entries this header is stored as (without metadata).
    pub fn encode(&self) -> BTreeMap<String, Bytes> {
        let mut m = BTreeMap::new();
        m.insert(KEY_SIZE.into(), u64_val(self.size));
        m.insert(KEY_ORDER.into(), Bytes::copy_from_slice(&[self.order]));
        m.insert(KEY_FEATURES.into(), u64_val(self.features));
        m.insert(KEY_FLAGS.into(), u64_val(self.flags));
        m.insert(KEY_PREFIX.into(), Bytes::from(self.object_prefix.clone()));
        m.insert(KEY_SNAP_SEQ.into(), u64_val(self.snap_seq));
        m.insert(KEY_CREATE_TS.into(), u64_val(self.create_ts_ns));
        m.insert(KEY_ACCESS_TS.into(), u64_val(self.access_ts_ns));
        m.insert(KEY_MODIFY_TS.into(), u64_val(self.modify_ts_ns));
        if let Some(p) = &self.parent {
            m.insert(KEY_PARENT.into(), json_val(p));
        }
        if let Some(l) = self.snap_limit {
            m.insert(KEY_SNAP_LIMIT.into(), u64_val(l));
        }
        if let Some(mg) = &self.migration {
            m.insert(KEY_MIGRATION.into(), json_val(mg));
        }
        if let Some(g) = &self.group {
            m.insert(KEY_GROUP.into(), json_val(g));
        }
        for s in self.snaps.values() {
            m.insert(snap_key(s.id), json_val(s));
        }
        m
    }

    /// Decode from omap entries; `oid` names the object in errors.
    pub fn decode(version: u64, map: &BTreeMap<String, Bytes>, oid: &str) -> Result<Header> {
        let order = match map.get(KEY_ORDER).map(|v| v.as_ref()) {
            Some([o]) if (crate::MIN_ORDER..=crate::MAX_ORDER).contains(o) => *o,
            _ => return Err(RbdError::corrupt(format!("{oid}: bad or missing 'order'"))),
        };
        let object_prefix = map
            .get(KEY_PREFIX)
            .map(|v| String::from_utf8(v.to_vec()))
            .transpose()
            .map_err(|_| RbdError::corrupt(format!("{oid}: object_prefix is not UTF-8")))?
            .ok_or_else(|| RbdError::corrupt(format!("{oid}: object_prefix missing")))?;
        let parent = map
            .get(KEY_PARENT)
            .map(|v| get_json::<ParentSpec>(v, KEY_PARENT, oid))
            .transpose()?;
        let migration = map
            .get(KEY_MIGRATION)
            .map(|v| get_json::<crate::MigrationSpec>(v, KEY_MIGRATION, oid))
            .transpose()?;
        let group = map
            .get(KEY_GROUP)
            .map(|v| get_json::<crate::GroupRef>(v, KEY_GROUP, oid))
            .transpose()?;
        let mut snaps = BTreeMap::new();
        for (k, v) in map.range(SNAP_PREFIX.to_string()..) {
            if !k.starts_with(SNAP_PREFIX) {
                break;
            }
            let s: SnapRecord = get_json(v, k, oid)?;
            if snap_key(s.id) != *k {
                return Err(RbdError::corrupt(format!(
                    "{oid}: {k} holds snapshot id {}",
                    s.id
                )));
            }
            snaps.insert(s.id, s);
        }
        let opt_u64 = |k: &str| map.get(k).map(|_| get_u64(map, k, oid)).transpose();
        let create_ts_ns = opt_u64(KEY_CREATE_TS)?.unwrap_or(0);
        let h = Header {
            version,
            size: get_u64(map, KEY_SIZE, oid)?,
            order,
            features: get_u64(map, KEY_FEATURES, oid)?,
            flags: map
                .get(KEY_FLAGS)
                .map(|_| get_u64(map, KEY_FLAGS, oid))
                .transpose()?
                .unwrap_or(0),
            object_prefix,
            snap_seq: get_u64(map, KEY_SNAP_SEQ, oid)?,
            create_ts_ns,
            access_ts_ns: opt_u64(KEY_ACCESS_TS)?.unwrap_or(create_ts_ns),
            modify_ts_ns: opt_u64(KEY_MODIFY_TS)?.unwrap_or(create_ts_ns),
            snap_limit: opt_u64(KEY_SNAP_LIMIT)?,
            parent,
            migration,
            group,
            snaps,
        };
        if h.snaps
            .keys()
            .next_back()
            .is_some_and(|&last| last > h.snap_seq)
        {
            return Err(RbdError::corrupt(format!(
                "{oid}: snapshot newer than snap_seq"
            )));
        }
        Ok(h)
    }

    /// The snap context head writes must carry: newest first.
    pub fn snapc(&self) -> SnapContext {
        let snapc = SnapContext {
            seq: self.snap_seq,
            snaps: self.snaps.keys().rev().copied().collect(),
        };
        debug_assert!(snapc.is_valid());
        snapc
    }

    /// Look a user snapshot up by name (group snapshots' image snapshots
    /// are reached by id only, as in librbd).
    pub fn snap_by_name(&self, name: &str) -> Option<&SnapRecord> {
        self.snaps
            .values()
            .find(|s| s.name == name && s.group.is_none())
    }

    /// Whether the head or any snapshot still reads through `parent`.
    pub fn references_parent(&self, parent: &ParentSpec) -> bool {
        let same = |p: &ParentSpec| p.same_source(parent);
        self.parent.as_ref().is_some_and(same)
            || self
                .snaps
                .values()
                .any(|s| s.parent.as_ref().is_some_and(same))
    }
}

fn all_fixed_keys() -> Vec<String> {
    [
        KEY_SIZE,
        KEY_ORDER,
        KEY_FEATURES,
        KEY_FLAGS,
        KEY_PREFIX,
        KEY_SNAP_SEQ,
        KEY_CREATE_TS,
        KEY_ACCESS_TS,
        KEY_MODIFY_TS,
        KEY_PARENT,
        KEY_SNAP_LIMIT,
        KEY_MIGRATION,
        KEY_GROUP,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Read and decode a header in one round trip. `ENOENT` → `NotFound(what)`.
pub(crate) async fn read_header(rados: &dyn Rados, oid: &ObjectId, what: &str) -> Result<Header> {
    Ok(read_header_with_xattrs(rados, oid, what, false).await?.0)
}

/// [`read_header`], and the header object's xattrs from the same state of
/// the object when `xattrs` (the lock record is one: a compare-and-swap of
/// it at the header's version then proves the header unchanged).
pub(crate) async fn read_header_with_xattrs(
    rados: &dyn Rados,
    oid: &ObjectId,
    what: &str,
    xattrs: bool,
) -> Result<(Header, BTreeMap<String, Bytes>)> {
    let mut req = OpRequest::new(oid.clone());
    if xattrs {
        req = req.op(Op::GetXattrs);
    }
    let req = req
        .op(Op::Stat)
        .op(Op::OmapGetValsByKeys(all_fixed_keys()))
        .op(Op::OmapGetVals {
            start_after: String::new(),
            prefix: SNAP_PREFIX.into(),
            max: 0,
        });
    let reply = match rados.operate(req).await {
        Ok(r) => r,
        Err(e) if e.errno == Errno::ENOENT => return Err(RbdError::not_found(what)),
        Err(e) => return Err(RbdError::rados(format!("reading header of {what}"), e)),
    };
    let mut map = BTreeMap::new();
    let mut attrs = BTreeMap::new();
    let mut version = None;
    for out in reply.outputs {
        match out {
            OpOutput::Stat(st) => version = Some(st.version),
            OpOutput::Omap(m, _) => map.extend(m),
            OpOutput::Xattrs(m) => attrs.extend(m),
            _ => {}
        }
    }
    let version =
        version.ok_or_else(|| RbdError::corrupt(format!("{}: no stat reply", oid.name)))?;
    Ok((Header::decode(version, &map, &oid.name)?, attrs))
}

/// Apply `f` to the current header and store the result atomically (CAS on
/// the object version), retrying on concurrent modification. `f` may run
/// several times and must be a pure function of the header it is given.
/// Returns the header as stored (with its new version).
pub(crate) async fn update_header<F>(
    rados: &Arc<dyn Rados>,
    oid: &ObjectId,
    what: &str,
    f: F,
) -> Result<Header>
where
    F: FnMut(&mut Header) -> Result<()>,
{
    update_header_from(rados, oid, what, None, f).await
}

/// [`update_header`] whose first attempt starts from `start`, a header the
/// caller just read or wrote (its version is checked by the
/// compare-and-swap, so a stale one only costs a retry from a fresh read):
/// saves the read.
pub(crate) async fn update_header_from<F>(
    rados: &Arc<dyn Rados>,
    oid: &ObjectId,
    what: &str,
    mut start: Option<Header>,
    mut f: F,
) -> Result<Header>
where
    F: FnMut(&mut Header) -> Result<()>,
{
    for attempt in 0..CAS_RETRIES_MAX {
        let old = match start.take() {
            Some(h) => h,
            None => read_header(rados.as_ref(), oid, what).await?,
        };
        let mut new = old.clone();
        f(&mut new)?;
        if let Some(stored) = cas_write(rados.as_ref(), oid, what, &old, new).await? {
            return Ok(stored);
        }
        // Lost the race: back off a little (grows with attempts) and recompute.
        backoff(attempt).await;
    }
    Err(RbdError::Contention { what: what.into() })
}

/// Store `new` in place of `old` (read at `old.version`) in one compound
/// op writing only the changed keys. `Ok(None)` if the header changed
/// since `old` was read (the caller recomputes from a fresh read); the
/// stored header with its new version otherwise.
pub(crate) async fn cas_write(
    rados: &dyn Rados,
    oid: &ObjectId,
    what: &str,
    old: &Header,
    mut new: Header,
) -> Result<Option<Header>> {
    let (a, b) = (old.encode(), new.encode());
    let rm: Vec<String> = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
    let set: BTreeMap<String, Bytes> = b.into_iter().filter(|(k, v)| a.get(k) != Some(v)).collect();
    if rm.is_empty() && set.is_empty() {
        new.version = old.version;
        return Ok(Some(new));
    }
    let mut req = OpRequest::new(oid.clone())
        .op(Op::AssertExists)
        .op(Op::AssertVersion(old.version));
    if !rm.is_empty() {
        req = req.op(Op::OmapRmKeys(rm));
    }
    if !set.is_empty() {
        req = req.op(Op::OmapSetVals(set));
    }
    match rados.operate(req).await {
        Ok(reply) => {
            new.version = reply.version;
            Ok(Some(new))
        }
        Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW) => Ok(None),
        Err(e) if e.errno == Errno::ENOENT => Err(RbdError::not_found(what)),
        Err(e) => Err(RbdError::rados(format!("updating header of {what}"), e)),
    }
}

/// Randomized back-off after a lost compare-and-swap race.
pub(crate) async fn backoff(attempt: u32) {
    let max_us = 50u64 << attempt.min(8);
    let us = rand::random::<u64>() % max_us;
    tokio::time::sleep(Duration::from_micros(us)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut snaps = BTreeMap::new();
        snaps.insert(
            4,
            SnapRecord {
                id: 4,
                name: "s1".into(),
                size: 10,
                timestamp_ns: 5,
                protection: Protection::Protected,
                parent: None,
                group: None,
            },
        );
        Header {
            version: 3,
            size: 1 << 30,
            order: 22,
            features: 61,
            flags: 0,
            object_prefix: "rbd_data.abc".into(),
            snap_seq: 4,
            create_ts_ns: 99,
            access_ts_ns: 100,
            modify_ts_ns: 101,
            snap_limit: Some(7),
            migration: None,
            group: None,
            parent: Some(ParentSpec {
                pool: 1,
                namespace: "ns".into(),
                image_id: "p".into(),
                snap_id: 2,
                overlap: 77,
            }),
            snaps,
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        let m = h.encode();
        assert_eq!(Header::decode(3, &m, "x").unwrap(), h);
        assert_eq!(
            h.snapc(),
            SnapContext {
                seq: 4,
                snaps: vec![4]
            }
        );
    }

    #[test]
    fn headers_without_access_or_modify_time_read_the_creation_time() {
        let mut m = sample().encode();
        m.remove(KEY_ACCESS_TS);
        m.remove(KEY_MODIFY_TS);
        let h = Header::decode(3, &m, "x").unwrap();
        assert_eq!((h.access_ts_ns, h.modify_ts_ns), (99, 99));
        // A value of the wrong length is corruption, named.
        m.insert(KEY_MODIFY_TS.into(), Bytes::from_static(b"abc"));
        let e = Header::decode(3, &m, "x").unwrap_err().to_string();
        assert!(e.contains("modify_timestamp"), "{e}");
    }

    #[test]
    fn snapshot_limit_is_optional_and_checked() {
        let mut m = sample().encode();
        assert_eq!(Header::decode(3, &m, "x").unwrap().snap_limit, Some(7));
        m.remove(KEY_SNAP_LIMIT);
        assert_eq!(Header::decode(3, &m, "x").unwrap().snap_limit, None);
        m.insert(KEY_SNAP_LIMIT.into(), Bytes::from_static(b"\x01"));
        let e = Header::decode(3, &m, "x").unwrap_err().to_string();
        assert!(e.contains("snap_limit"), "{e}");
    }

    #[test]
    fn corrupt_is_error() {
        let mut m = sample().encode();
        m.insert(KEY_SIZE.into(), Bytes::from_static(b"abc"));
        assert!(matches!(
            Header::decode(1, &m, "x"),
            Err(RbdError::Corrupt { .. })
        ));
        let mut m = sample().encode();
        m.insert(KEY_ORDER.into(), Bytes::from_static(&[40]));
        assert!(Header::decode(1, &m, "x").is_err());
        let mut m = sample().encode();
        m.insert(snap_key(4), Bytes::from_static(b"{"));
        assert!(Header::decode(1, &m, "x").is_err());
    }
}
