//! The object map: one state byte per data object, stored as the data of
//! `rbd_object_map.<id>` (head) and `rbd_object_map.<id>.<snap %016x>`
//! (frozen copy per snapshot).
//!
//! One byte per object instead of librbd's two bits, so that updating one
//! object's state is a single one-byte `Write` at offset `objno`: concurrent
//! updates of neighbouring objects never read-modify-write a shared byte.
//! (A 1 TiB image with 4 MiB objects has a 256 KiB map.) Bytes past the end
//! of the map object read as `NONEXISTENT`, so growing an image needs no
//! map update.
//!
//! Invariant: the map never says `NONEXISTENT` for an object that exists
//! (the state is set before an object is created and cleared only after it
//! is removed). `EXISTS` means "written since the last snapshot",
//! `EXISTS_CLEAN` "unchanged since the last snapshot" — what fast-diff uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados};

use crate::error::{RadosContext, RbdError, Result};

/// The object does not exist.
pub const OBJECT_NONEXISTENT: u8 = 0;
/// The object exists and was written since the last snapshot.
pub const OBJECT_EXISTS: u8 = 1;
/// The object is being removed (treated as "may exist").
pub const OBJECT_PENDING: u8 = 2;
/// The object exists and is unchanged since the last snapshot.
pub const OBJECT_EXISTS_CLEAN: u8 = 3;

/// Whether a state means the object may exist.
pub(crate) fn may_exist(state: u8) -> bool {
    state != OBJECT_NONEXISTENT
}

/// An in-memory object map of one view (head or a snapshot).
#[derive(Debug)]
pub(crate) struct ObjectMap {
    states: Mutex<Vec<u8>>,
    /// False when the stored map was missing or corrupt: then no read may
    /// be skipped and whole-object diffs fall back to listing.
    valid: AtomicBool,
}

impl ObjectMap {
    /// A map from stored bytes (validated), or an invalid map.
    pub fn from_bytes(bytes: Option<&[u8]>) -> ObjectMap {
        let ok = bytes.is_some_and(|b| b.iter().all(|&s| s <= OBJECT_EXISTS_CLEAN));
        ObjectMap {
            states: Mutex::new(if ok {
                bytes.unwrap_or_default().to_vec()
            } else {
                Vec::new()
            }),
            valid: AtomicBool::new(ok),
        }
    }

    /// A map that is never trusted (feature disabled).
    pub fn disabled() -> ObjectMap {
        ObjectMap::from_bytes(None)
    }

    /// Whether the map can be trusted.
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// Stop trusting the map (after a failed update).
    pub fn invalidate(&self) {
        self.valid.store(false, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another thread panicked mid-update of a
        // plain byte vector; the bytes are still meaningful.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// State of one object; `None` if the map is not trusted.
    pub fn get(&self, objno: u64) -> Option<u8> {
        if !self.is_valid() {
            return None;
        }
        let s = self.lock();
        Some(
            usize::try_from(objno)
                .ok()
                .and_then(|i| s.get(i).copied())
                .unwrap_or(OBJECT_NONEXISTENT),
        )
    }

    /// Set one object's state in memory.
    pub fn set(&self, objno: u64, state: u8) {
        debug_assert!(state <= OBJECT_EXISTS_CLEAN);
        let Ok(i) = usize::try_from(objno) else {
            return;
        };
        let mut s = self.lock();
        if s.len() <= i {
            if state == OBJECT_NONEXISTENT {
                return;
            }
            s.resize(i + 1, OBJECT_NONEXISTENT);
        }
        s[i] = state;
    }

    /// Copy of all states.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Drop states at and past `num_objs`.
    pub fn truncate(&self, num_objs: u64) {
        let mut s = self.lock();
        if let Ok(n) = usize::try_from(num_objs) {
            s.truncate(n);
        }
    }
}

/// Load a stored map (the head map or a snapshot's). `None` if absent.
pub(crate) async fn load(rados: &dyn Rados, oid: &ObjectId) -> Result<Option<Vec<u8>>> {
    Ok(load_versioned(rados, oid).await?.map(|(m, _)| m))
}

/// [`load`] with the map object's version (for [`store_all_if`]).
pub(crate) async fn load_versioned(
    rados: &dyn Rados,
    oid: &ObjectId,
) -> Result<Option<(Vec<u8>, u64)>> {
    read_range(rados, oid, 0, 0, || {
        format!("reading object map {}", oid.name)
    })
    .await
}

/// Read `[off, off+len)` of a map object (`len` 0: to its end) with the
/// object's version; `None` if the map object is absent.
async fn read_range(
    rados: &dyn Rados,
    oid: &ObjectId,
    off: u64,
    len: u64,
    what: impl FnOnce() -> String,
) -> Result<Option<(Vec<u8>, u64)>> {
    let req = OpRequest::new(oid.clone()).op(Op::Read { off, len });
    match rados.operate(req).await {
        Ok(reply) => {
            let version = reply.version;
            match reply.outputs.into_iter().next() {
                Some(OpOutput::Data(d)) => Ok(Some((d.to_vec(), version))),
                _ => Err(RbdError::corrupt(format!(
                    "{}: read returned no data",
                    oid.name
                ))),
            }
        }
        Err(e) if e.errno == Errno::ENOENT => Ok(None),
        Err(e) => Err(RbdError::rados(what(), e)),
    }
}

/// Replace a stored map whole only if it is still at `version` (nobody
/// updated an entry since it was read): `false` if it changed (or is gone).
pub(crate) async fn store_all_if(
    rados: &dyn Rados,
    oid: &ObjectId,
    states: Vec<u8>,
    version: u64,
) -> Result<bool> {
    let req = OpRequest::new(oid.clone())
        .op(Op::AssertExists)
        .op(Op::AssertVersion(version))
        .op(Op::WriteFull(Bytes::from(states)));
    match rados.operate(req).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW | Errno::ENOENT) => Ok(false),
        Err(e) => Err(RbdError::rados(
            format!("writing object map {}", oid.name),
            e,
        )),
    }
}

/// Persist one object's state (a one-byte write at `objno`).
pub(crate) async fn store_state(
    rados: &dyn Rados,
    oid: &ObjectId,
    objno: u64,
    state: u8,
) -> Result<()> {
    let req = OpRequest::new(oid.clone()).op(Op::Write {
        off: objno,
        data: Bytes::copy_from_slice(&[state]),
    });
    rados
        .operate(req)
        .await
        .ctx(|| format!("updating object map {} entry {objno}", oid.name))?;
    Ok(())
}

/// One object's stored state (`None`: the map object is absent).
pub(crate) async fn load_state(
    rados: &dyn Rados,
    oid: &ObjectId,
    objno: u64,
) -> Result<Option<u8>> {
    let what = || format!("reading object map {} entry {objno}", oid.name);
    Ok(read_range(rados, oid, objno, 1, what)
        .await?
        .map(|(d, _)| d.first().copied().unwrap_or(OBJECT_NONEXISTENT)))
}

/// Persist one object's state only if the map object exists (a snapshot's
/// map may be absent, and must not be created holding a single entry).
pub(crate) async fn store_state_if_exists(
    rados: &dyn Rados,
    oid: &ObjectId,
    objno: u64,
    state: u8,
) -> Result<()> {
    let req = OpRequest::new(oid.clone())
        .op(Op::AssertExists)
        .op(Op::Write {
            off: objno,
            data: Bytes::copy_from_slice(&[state]),
        });
    match rados.operate(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.errno == Errno::ENOENT => Ok(()),
        Err(e) => Err(RbdError::rados(
            format!("updating object map {} entry {objno}", oid.name),
            e,
        )),
    }
}

/// Replace a stored map whole.
pub(crate) async fn store_all(rados: &dyn Rados, oid: &ObjectId, states: Vec<u8>) -> Result<()> {
    let req = OpRequest::new(oid.clone()).op(Op::WriteFull(Bytes::from(states)));
    rados
        .operate(req)
        .await
        .ctx(|| format!("writing object map {}", oid.name))?;
    Ok(())
}

/// Cut a stored map to `num_objs` entries (image shrink).
pub(crate) async fn store_truncate(rados: &dyn Rados, oid: &ObjectId, num_objs: u64) -> Result<()> {
    let req = OpRequest::new(oid.clone())
        .op(Op::AssertExists)
        .op(Op::Truncate(num_objs));
    match rados.operate(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.errno == Errno::ENOENT => Ok(()),
        Err(e) => Err(RbdError::rados(
            format!("truncating object map {}", oid.name),
            e,
        )),
    }
}

/// Remove a stored map (ignores absence).
pub(crate) async fn remove(rados: &dyn Rados, oid: &ObjectId) -> Result<()> {
    let req = OpRequest::new(oid.clone()).op(Op::Remove);
    match rados.operate(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.errno == Errno::ENOENT => Ok(()),
        Err(e) => Err(RbdError::rados(
            format!("removing object map {}", oid.name),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let m = ObjectMap::from_bytes(Some(&[1, 0, 3]));
        assert!(m.is_valid());
        assert_eq!(m.get(0), Some(OBJECT_EXISTS));
        assert_eq!(m.get(2), Some(OBJECT_EXISTS_CLEAN));
        assert_eq!(m.get(100), Some(OBJECT_NONEXISTENT));
        m.set(5, OBJECT_EXISTS);
        assert_eq!(m.snapshot(), vec![1, 0, 3, 0, 0, 1]);
        m.truncate(2);
        assert_eq!(m.snapshot(), vec![1, 0]);
        assert!(!ObjectMap::from_bytes(Some(&[9])).is_valid());
        assert!(!ObjectMap::disabled().is_valid());
        assert_eq!(ObjectMap::disabled().get(0), None);
    }
}
