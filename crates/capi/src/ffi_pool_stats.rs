//! `rbd_pool_stats_*` (python3-rbd's `RBD.pool_stats_get`, `rbd pool
//! stats`): the caller registers where each statistic it wants goes, then
//! one call fills them all from `quarry_rbd::Rbd::pool_stats`.
//!
//! # Safety
//! As the other exports: handles come from the matching create call, the
//! registered pointers stay valid until `rbd_pool_stats_get` returns.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_int, c_void};

use quarry_common::Errno;

use crate::engine::{CError, CResult};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::rt;
use crate::util::{guard, int, nonnull};

/// `RBD_POOL_STAT_OPTION_IMAGES` .. `RBD_POOL_STAT_OPTION_TRASH_SNAPSHOTS`.
const OPTION_MAX: c_int = 7;

/// The statistics asked for: `(option, where its value goes)`.
type Wanted = Vec<(c_int, *mut u64)>;

unsafe fn wanted<'a>(p: *mut c_void) -> CResult<&'a mut Wanted> {
    nonnull(p)?;
    // SAFETY: p is a live Box<Wanted> per the caller's contract.
    Ok(unsafe { &mut *(p as *mut Wanted) })
}

/// Create an empty set of statistics to ask for.
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_stats_create(stats: *mut *mut c_void) {
    guard((), || {
        if !stats.is_null() {
            let b: Box<Wanted> = Box::default();
            // SAFETY: non-null out-pointer from the caller.
            unsafe { *stats = Box::into_raw(b) as *mut c_void };
        }
    })
}

/// Free a set made by [`rbd_pool_stats_create`] (NULL: nothing).
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_stats_destroy(stats: *mut c_void) {
    guard((), || {
        if !stats.is_null() {
            // SAFETY: made by rbd_pool_stats_create, freed once.
            drop(unsafe { Box::from_raw(stats as *mut Wanted) });
        }
    })
}

/// Ask for statistic `option` into `*value`: `-ENOENT` for an unknown
/// option (as librbd), `-EINVAL` for NULL.
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_stats_option_add_uint64(
    stats: *mut c_void,
    option: c_int,
    value: *mut u64,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let w = unsafe { wanted(stats) }?;
        nonnull(value as *mut c_void)?;
        if !(0..=OPTION_MAX).contains(&option) {
            return Err(CError::new(
                Errno::ENOENT,
                format!("unknown pool stat option {option}"),
            ));
        }
        w.retain(|(o, _)| *o != option);
        w.push((option, value));
        Ok(0)
    })
}

/// Fill every statistic asked for with `io`'s pool (namespace) figures.
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_stats_get(io: IoCtxT, stats: *mut c_void) -> c_int {
    int(|| {
        // SAFETY: handles from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let w = unsafe { wanted(stats) }?;
        let engine = io.conn.engine.clone();
        let t = io.target();
        let st = rt::block_on(async move { engine.pool_stats(&t).await })?;
        for &(option, dst) in w.iter() {
            let (set, v) = if option < 4 {
                (&st.images, option)
            } else {
                (&st.trash, option - 4)
            };
            let value = match v {
                0 => set.count,
                1 => set.provisioned_bytes,
                2 => set.max_provisioned_bytes,
                _ => set.snapshots,
            };
            // SAFETY: registered by the caller, valid until this returns.
            unsafe { *dst = value };
        }
        Ok(0)
    })
}
