//! Advisory object locks (librados' `rados_lock_*`, Ceph's `lock` object
//! class), built on the object layer alone.
//!
//! A lock named `N` on an object is the xattr `lock.N` of that object: a
//! JSON [`LockInfo`] (its type, tag and holders). Every change reads the
//! object's xattrs and version and writes the new record with
//! [`Op::AssertVersion`] of that version, retrying when another client
//! changed the object in between: two clients can never both take an
//! exclusive lock. Ceph runs the same rules inside the OSD (`cls_lock`);
//! here the client runs them, so the rules are those of `cls_lock`:
//!
//! * a holder is a client entity (`client.<instance id>`) plus a cookie;
//! * taking a lock whose holders carry another tag, or an exclusive lock
//!   while anyone else holds it, or a shared one while it is exclusive, is
//!   `EBUSY`; taking it again under the same cookie is `EEXIST` unless the
//!   caller asks to renew;
//! * unlocking removes the caller's own holder (`ENOENT` if none),
//!   breaking removes anyone's;
//! * a holder with a duration expires (by the clock of the client that
//!   looks: Ceph uses the OSD's).
//!
//! Not Ceph's binary format: a Ceph client cannot read these records.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quarry_common::Errno;
use serde::{Deserialize, Serialize};

use crate::{ObjectId, Op, OpOutput, OpRequest, Rados, RadosError, Result};

/// Prefix of the xattr holding lock `N` (`lock.N`, as `cls_lock`).
pub const XATTR_PREFIX: &str = "lock.";
/// `LIBRADOS_LOCK_FLAG_MAY_RENEW`: taking a lock held under the same
/// cookie renews it instead of failing with `EEXIST`.
pub const FLAG_MAY_RENEW: u8 = 0x1;
/// `LIBRADOS_LOCK_FLAG_MUST_RENEW`: the caller must hold it already
/// (`ENOENT` otherwise).
pub const FLAG_MUST_RENEW: u8 = 0x2;
/// Compare-and-swap attempts before giving up with `EAGAIN`.
const ATTEMPTS: usize = 100;

/// One holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locker {
    /// The holder's entity, `client.<instance id>`.
    pub entity: String,
    /// The holder's cookie (chosen by the holder).
    pub cookie: String,
    /// The holder's address, `ip:0/<instance id>` (empty if unknown).
    #[serde(default)]
    pub addr: String,
    /// Free text given when taking the lock.
    #[serde(default)]
    pub description: String,
    /// Expiry in ms since the epoch; 0: never.
    #[serde(default)]
    pub expires_ms: u64,
}

/// A lock's state: its type, tag and holders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Exclusive (one holder) or shared.
    pub exclusive: bool,
    /// Holders of a shared lock all use this tag.
    #[serde(default)]
    pub tag: String,
    /// Current holders (expired ones are dropped when read).
    #[serde(default)]
    pub lockers: Vec<Locker>,
}

impl LockInfo {
    fn position(&self, entity: &str, cookie: &str) -> Option<usize> {
        self.lockers
            .iter()
            .position(|l| l.entity == entity && l.cookie == cookie)
    }
}

/// What [`lock`] asks for.
#[derive(Clone, Debug)]
pub struct LockRequest<'a> {
    /// Exclusive or shared.
    pub exclusive: bool,
    /// The caller's cookie.
    pub cookie: &'a str,
    /// Tag (shared locks; empty for exclusive ones, as librados).
    pub tag: &'a str,
    /// Free text stored with the holder.
    pub description: &'a str,
    /// How long the hold lasts (`None`: until unlocked).
    pub duration: Option<Duration>,
    /// [`FLAG_MAY_RENEW`] | [`FLAG_MUST_RENEW`].
    pub flags: u8,
    /// Create the object if it does not exist (librados); else `ENOENT`.
    pub create: bool,
}

/// The caller's entity name as lock holders are named.
pub fn entity_of(rados: &dyn Rados) -> String {
    format!("client.{}", rados.instance_id())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('\0') {
        return Err(RadosError::new(
            Errno::EINVAL,
            format!("lock name {name:?} is empty or holds a NUL"),
        ));
    }
    Ok(())
}

/// The object's xattrs and version; `None` if the object does not exist.
pub async fn read_xattrs(
    rados: &dyn Rados,
    oid: &ObjectId,
) -> Result<Option<(BTreeMap<String, Bytes>, u64)>> {
    match rados
        .operate(OpRequest::new(oid.clone()).op(Op::GetXattrs))
        .await
    {
        Ok(rep) => {
            let m = match rep.outputs.into_iter().next() {
                Some(OpOutput::Xattrs(m)) => m,
                _ => BTreeMap::new(),
            };
            Ok(Some((m, rep.version)))
        }
        Err(e) if e.errno == Errno::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lock `name` as found among an object's xattrs, expired holders dropped.
/// A record that does not decode is `EIO`, naming the object.
pub fn from_xattrs(m: &BTreeMap<String, Bytes>, oid: &ObjectId, name: &str) -> Result<LockInfo> {
    let Some(b) = m.get(&format!("{XATTR_PREFIX}{name}")) else {
        return Ok(LockInfo::default());
    };
    let mut info: LockInfo = serde_json::from_slice(b).map_err(|e| {
        RadosError::new(
            Errno::EIO,
            format!("lock {name:?} of object {}: corrupt record: {e}", oid.name),
        )
    })?;
    let now = now_ms();
    info.lockers
        .retain(|l| l.expires_ms == 0 || l.expires_ms > now);
    Ok(info)
}

/// Replace lock `name` by `info` (removed when it has no holders) if the
/// object is still at `version` (`None`: it does not exist yet and is
/// created). `Ok(false)`: another change came first.
async fn swap(
    rados: &dyn Rados,
    oid: &ObjectId,
    name: &str,
    version: Option<u64>,
    info: &LockInfo,
) -> Result<bool> {
    let key = format!("{XATTR_PREFIX}{name}");
    let mut req = OpRequest::new(oid.clone());
    req = match version {
        Some(v) => req.op(Op::AssertExists).op(Op::AssertVersion(v)),
        None => req.op(Op::Create { exclusive: true }),
    };
    req = if info.lockers.is_empty() {
        if version.is_none() {
            return Ok(true);
        }
        req.op(Op::RmXattr(key))
    } else {
        let v = serde_json::to_vec(info)
            .map_err(|e| RadosError::new(Errno::EINVAL, format!("encoding lock {name:?}: {e}")))?;
        req.op(Op::SetXattr(key, Bytes::from(v)))
    };
    match rados.operate(req).await {
        Ok(_) => Ok(true),
        // The version moved, the object appeared, or it went away.
        Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW | Errno::EEXIST) => Ok(false),
        Err(e) if e.errno == Errno::ENOENT && version.is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Read-modify-write of lock `name`: `change` sees the object's xattrs,
/// whether it exists, and the lock, which it changes (or it returns an
/// error, returned as it is).
pub async fn update<T>(
    rados: &dyn Rados,
    oid: &ObjectId,
    name: &str,
    mut change: impl FnMut(&BTreeMap<String, Bytes>, bool, &mut LockInfo) -> Result<T>,
) -> Result<T> {
    check_name(name)?;
    for _ in 0..ATTEMPTS {
        let (attrs, version) = match read_xattrs(rados, oid).await? {
            Some((m, v)) => (m, Some(v)),
            None => (BTreeMap::new(), None),
        };
        let mut info = from_xattrs(&attrs, oid, name)?;
        let before = info.clone();
        let out = change(&attrs, version.is_some(), &mut info)?;
        if info == before || swap(rados, oid, name, version, &info).await? {
            return Ok(out);
        }
    }
    Err(RadosError::new(
        Errno::EAGAIN,
        format!(
            "lock {name:?} of object {}: changed by others {ATTEMPTS} times in a row",
            oid.name
        ),
    ))
}

/// Take lock `name` on `oid` for this client (creating the object if it
/// does not exist and `req.create`, as `cls_lock` does). `guard` may
/// refuse first (it sees the object's xattrs, e.g. another kind of lock
/// kept beside).
pub async fn lock(
    rados: &dyn Rados,
    oid: &ObjectId,
    name: &str,
    req: &LockRequest<'_>,
    guard: impl Fn(&BTreeMap<String, Bytes>) -> Result<()>,
) -> Result<()> {
    let busy = |why: &str| {
        Err(RadosError::new(
            Errno::EBUSY,
            format!("lock {name:?} of object {}: {why}", oid.name),
        ))
    };
    let entity = entity_of(rados);
    let entity = entity.as_str();
    update(rados, oid, name, |attrs, exists, info| {
        if !exists && !req.create {
            return Err(RadosError::new(
                Errno::ENOENT,
                format!("object {} does not exist", oid.name),
            ));
        }
        guard(attrs)?;
        if !info.lockers.is_empty() && info.tag != req.tag {
            return busy(&format!("held with tag {:?}", info.tag));
        }
        match info.position(entity, req.cookie) {
            Some(i) if req.flags & (FLAG_MAY_RENEW | FLAG_MUST_RENEW) != 0 => {
                info.lockers.remove(i);
            }
            Some(_) => {
                return Err(RadosError::new(
                    Errno::EEXIST,
                    format!(
                        "lock {name:?} of object {}: already held by {entity} with cookie {:?}",
                        oid.name, req.cookie
                    ),
                ))
            }
            None if req.flags & FLAG_MUST_RENEW != 0 => {
                return Err(RadosError::new(
                    Errno::ENOENT,
                    format!(
                        "lock {name:?} of object {}: not held by {entity} with cookie {:?}",
                        oid.name, req.cookie
                    ),
                ))
            }
            None => {}
        }
        if !info.lockers.is_empty() {
            if req.exclusive {
                return busy(&format!("held by {}", info.lockers[0].entity));
            }
            if info.exclusive {
                return busy(&format!("held exclusively by {}", info.lockers[0].entity));
            }
        }
        info.exclusive = req.exclusive;
        info.tag = req.tag.to_string();
        info.lockers.push(Locker {
            entity: entity.to_string(),
            cookie: req.cookie.to_string(),
            // After the read: the client is connected by now.
            addr: rados.client_addr().unwrap_or_default(),
            description: req.description.to_string(),
            expires_ms: req
                .duration
                .filter(|d| !d.is_zero())
                .map_or(0, |d| now_ms().saturating_add(d.as_millis() as u64)),
        });
        Ok(())
    })
    .await
}

/// Remove the holder `(entity, cookie)` of lock `name`, returning it
/// (`ENOENT` if there is no such holder). Unlock is this with the
/// caller's own entity; break is this with anyone's.
pub async fn remove(
    rados: &dyn Rados,
    oid: &ObjectId,
    name: &str,
    entity: &str,
    cookie: &str,
) -> Result<Locker> {
    update(rados, oid, name, |_, _, info| {
        match info.position(entity, cookie) {
            Some(i) => Ok(info.lockers.remove(i)),
            None => Err(RadosError::new(
                Errno::ENOENT,
                format!(
                    "lock {name:?} of object {}: no holder {entity} with cookie {cookie:?}",
                    oid.name
                ),
            )),
        }
    })
    .await
}

/// Lock `name` of `oid` (no holders if the object or the lock is absent).
pub async fn info(rados: &dyn Rados, oid: &ObjectId, name: &str) -> Result<LockInfo> {
    check_name(name)?;
    match read_xattrs(rados, oid).await? {
        Some((m, _)) => from_xattrs(&m, oid, name),
        None => Ok(LockInfo::default()),
    }
}
