//! Self-managed snapshots through librados (`rados_ioctx_selfmanaged_snap_*`,
//! `rados_ioctx_snap_set_read`): the caller allocates snapshot ids from the
//! pool, writes with a snap context naming them (objects are cloned on
//! their first write after a snapshot), reads at one, rolls objects back
//! to one and removes them (the OSDs then trim the clones). The image engine
//! uses the same ids for RBD snapshots. Pool snapshots (`rados_ioctx_snap_*`
//! by name) are not supported: a pool uses self-managed snapshots only.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`: the ioctx is live, out pointers and arrays valid for the
//! lengths passed. NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};

use quarry_common::Errno;
use quarry_rados::{Op, SnapContext, SnapId, NOSNAP};

use crate::cluster::lock;
use crate::engine::CError;
use crate::ffi_rados::{ioctx, run_ops, IoCtxT};
use crate::rt;
use crate::util::{guard, int, nonnull, req_str};

/// Allocate a snapshot id from the pool.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_selfmanaged_snap_create(
    io: IoCtxT,
    snapid: *mut SnapId,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        nonnull(snapid)?;
        let (rados, pool) = (io.conn.rados.clone(), io.pool);
        let id = rt::block_on(async move { rados.snap_create(pool).await })?;
        // SAFETY: non-null, from the caller.
        unsafe { *snapid = id };
        Ok(0)
    })
}

/// Remove a snapshot id: the OSDs trim the clones that only it needed.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_selfmanaged_snap_remove(io: IoCtxT, snapid: SnapId) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        let (rados, pool) = (io.conn.rados.clone(), io.pool);
        rt::block_on(async move { rados.snap_remove(pool, snapid).await })?;
        Ok(0)
    })
}

/// The snap context of this ioctx's writes: `seq` and the existing
/// snapshot ids, newest first (`-EINVAL` unless descending and <= seq).
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_selfmanaged_snap_set_write_ctx(
    io: IoCtxT,
    seq: SnapId,
    snaps: *const SnapId,
    num_snaps: c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        let n = usize::try_from(num_snaps)
            .map_err(|_| CError::new(Errno::EINVAL, "negative snapshot count"))?;
        let list = if n == 0 {
            Vec::new()
        } else {
            nonnull(snaps)?;
            // SAFETY: snaps holds num_snaps ids, per the caller.
            unsafe { std::slice::from_raw_parts(snaps, n) }.to_vec()
        };
        let snapc = SnapContext { seq, snaps: list };
        if !snapc.is_valid() {
            return Err(CError::new(
                Errno::EINVAL,
                "snap context: snapshot ids must be descending and at most seq",
            ));
        }
        *lock(&io.write_snapc) = snapc;
        Ok(0)
    })
}

/// Roll an object back to its state at a snapshot (removed if it did not
/// exist then), under this ioctx's write snap context.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_selfmanaged_snap_rollback(
    io: IoCtxT,
    oid: *const c_char,
    snapid: SnapId,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(oid) }?;
        run_ops(io, name, vec![Op::Rollback(snapid)])?;
        Ok(0)
    })
}

/// Read at a snapshot from now on (`LIBRADOS_SNAP_HEAD` = the head);
/// writes are then `-EROFS` until reads go back to the head.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_snap_set_read(io: IoCtxT, snap: SnapId) {
    guard((), || {
        // SAFETY: handle from the caller.
        if let Ok(io) = unsafe { ioctx(io) } {
            *lock(&io.read_snap) = snap;
        }
    })
}

/// `LIBRADOS_SNAP_HEAD` is the object layer's head.
const _: () = assert!(NOSNAP == u64::MAX - 1);
