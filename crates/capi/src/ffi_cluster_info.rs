//! Small facts about the cluster and its pools that librados callers ask
//! for: the cluster's fsid (OpenStack's Glance, Cinder and Nova compare it
//! to decide whether an image can be cloned instead of copied), a pool's
//! name by id, its base tier, its alignment needs.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`: handles are live, buffers valid for the lengths passed.
//! NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};

use quarry_common::Errno;

use crate::engine::{CError, CResult};
use crate::ffi_rados::{cluster, ioctx, IoCtxT, RadosT};
use crate::rt;
use crate::util::{int, nonnull};

/// Copy `s` and its NUL into `buf` of `maxlen` bytes; its length, or
/// `ERANGE` if it does not fit (librados' string answers).
///
/// # Safety
/// `buf` valid for `maxlen` bytes.
unsafe fn copy_str(s: &str, buf: *mut c_char, maxlen: usize) -> CResult<i32> {
    if s.len() >= maxlen {
        return Err(Errno::ERANGE.into());
    }
    nonnull(buf)?;
    // SAFETY: buf holds maxlen > s.len() bytes, per the caller.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    i32::try_from(s.len()).map_err(|_| Errno::EOVERFLOW.into())
}

/// The cluster's fsid (its id in the monitors' map) into `buf`; returns
/// its length. The embedded backend has none (`-EOPNOTSUPP`).
#[no_mangle]
pub unsafe extern "C" fn rados_cluster_fsid(c: RadosT, buf: *mut c_char, maxlen: usize) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let conn = unsafe { cluster(c) }?.connection()?;
        let client = conn.client.as_ref().ok_or_else(|| {
            CError::new(
                Errno::EOPNOTSUPP,
                "the embedded backend has no cluster fsid",
            )
        })?;
        let fsid = client.monc().map().fsid.clone();
        // SAFETY: buf valid for maxlen bytes, per the caller.
        unsafe { copy_str(&fsid, buf, maxlen) }
    })
}

/// A pool's name by id into `buf`; returns its length (`-ENOENT` if no
/// pool has that id).
#[no_mangle]
pub unsafe extern "C" fn rados_pool_reverse_lookup(
    c: RadosT,
    id: i64,
    buf: *mut c_char,
    maxlen: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let rados = unsafe { cluster(c) }?.connection()?.rados.clone();
        let pools = rt::block_on(async move { rados.pool_list().await })?;
        let p = pools
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| CError::new(Errno::ENOENT, format!("no pool with id {id}")))?;
        // SAFETY: buf valid for maxlen bytes, per the caller.
        unsafe { copy_str(&p.name, buf, maxlen) }
    })
}

/// A pool's base tier: the pool itself (Quarry has no cache tiers).
#[no_mangle]
pub unsafe extern "C" fn rados_pool_get_base_tier(
    c: RadosT,
    pool: i64,
    base_tier: *mut i64,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let rados = unsafe { cluster(c) }?.connection()?.rados.clone();
        nonnull(base_tier)?;
        let pools = rt::block_on(async move { rados.pool_list().await })?;
        if !pools.iter().any(|p| p.id == pool) {
            return Err(CError::new(
                Errno::ENOENT,
                format!("no pool with id {pool}"),
            ));
        }
        // SAFETY: non-null, from the caller.
        unsafe { *base_tier = pool };
        Ok(0)
    })
}

/// Whether writes to the pool must be aligned: never (replicated pools).
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_pool_requires_alignment2(
    io: IoCtxT,
    req: *mut c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        unsafe { ioctx(io) }?;
        nonnull(req)?;
        // SAFETY: non-null, from the caller.
        unsafe { *req = 0 };
        Ok(0)
    })
}

/// The pool's write alignment: none (0) for replicated pools.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_pool_required_alignment2(
    io: IoCtxT,
    alignment: *mut u64,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        unsafe { ioctx(io) }?;
        nonnull(alignment)?;
        // SAFETY: non-null, from the caller.
        unsafe { *alignment = 0 };
        Ok(0)
    })
}
