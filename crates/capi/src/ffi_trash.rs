//! librbd's trash calls (`rbd_trash_*`): deferred image removal, as
//! OpenStack's drivers and python3-rbd use it.
//!
//! # Safety
//! As in `ffi_rbd`: each export has the contract of its declaration in
//! Ceph's headers; NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_float, c_int, c_void};

use quarry_common::Errno;

use crate::engine::CError;
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::rt;
use crate::util::{array_out, c_free, c_strdup, guard, int, nonnull, opt_str, req_str};

/// `rbd_trash_image_info_t`.
#[repr(C)]
pub struct RbdTrashImageInfo {
    /// Image id (malloc'd; freed by the cleanup calls).
    pub id: *mut c_char,
    /// Name it had (malloc'd).
    pub name: *mut c_char,
    /// `rbd_trash_image_source_t`.
    pub source: c_int,
    /// When it was trashed (`time_t`).
    pub deletion_time: libc::time_t,
    /// Until when it is protected (`time_t`).
    pub deferment_end_time: libc::time_t,
}

/// Progress callback (`librbd_progress_fn_t`).
type ProgressFn = Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>;

fn to_c(e: &quarry_rbd::TrashEntry) -> RbdTrashImageInfo {
    RbdTrashImageInfo {
        id: c_strdup(&e.id),
        name: c_strdup(&e.name),
        source: e.source.code(),
        deletion_time: libc::time_t::try_from(e.deletion_time).unwrap_or(libc::time_t::MAX),
        deferment_end_time: libc::time_t::try_from(e.deferment_end_time)
            .unwrap_or(libc::time_t::MAX),
    }
}

/// Move image `name` to the trash, removable after `delay` seconds.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_move(io: IoCtxT, name: *const c_char, delay: u64) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.trash_move(&target, &name, delay).await })?;
        Ok(0)
    })
}

/// The trash entry of image `id` (`-ENOENT` if not trashed).
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_get(
    io: IoCtxT,
    id: *const c_char,
    info: *mut RbdTrashImageInfo,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let id = unsafe { req_str(id) }?.to_string();
        nonnull(info)?;
        let engine = io.conn.engine.clone();
        let target = io.target();
        let e = rt::block_on(async move { engine.trash_get(&target, &id).await })?;
        // SAFETY: non-null, caller-owned struct.
        unsafe { info.write(to_c(&e)) };
        Ok(0)
    })
}

/// Free the strings of one entry.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_get_cleanup(info: *mut RbdTrashImageInfo) {
    guard((), || {
        if info.is_null() {
            return;
        }
        // SAFETY: filled by rbd_trash_get / rbd_trash_list.
        unsafe {
            let e = &mut *info;
            c_free(e.id);
            c_free(e.name);
            e.id = std::ptr::null_mut();
            e.name = std::ptr::null_mut();
        }
    })
}

/// Trash entries into `entries` (`*num_entries` slots); `-ERANGE` with
/// `*num_entries` set when short; returns the number of entries.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_list(
    io: IoCtxT,
    entries: *mut RbdTrashImageInfo,
    num_entries: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        nonnull(num_entries)?;
        let engine = io.conn.engine.clone();
        let target = io.target();
        let list = rt::block_on(async move { engine.trash_list(&target).await })?;
        // SAFETY: the caller's array and count.
        unsafe { array_out(&list, entries, num_entries, to_c) }?;
        Ok(c_int::try_from(list.len()).unwrap_or(c_int::MAX))
    })
}

/// Free the strings of `num` entries filled by [`rbd_trash_list`].
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_list_cleanup(entries: *mut RbdTrashImageInfo, num: usize) {
    guard((), || {
        if entries.is_null() {
            return;
        }
        for i in 0..num {
            // SAFETY: entries has num entries filled by rbd_trash_list.
            unsafe { rbd_trash_get_cleanup(entries.add(i)) };
        }
    })
}

/// Remove user-trashed images expired at `expire_ts` (0: now). A
/// `threshold` (pool usage ratio) other than -1 is not supported.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_purge(
    io: IoCtxT,
    expire_ts: libc::time_t,
    threshold: c_float,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_trash_purge_with_progress(io, expire_ts, threshold, None, std::ptr::null_mut()) }
}

/// [`rbd_trash_purge`] reporting completion to `cb`.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_purge_with_progress(
    io: IoCtxT,
    expire_ts: libc::time_t,
    threshold: c_float,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    let r = int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        if threshold != -1.0 {
            return Err(CError::new(
                Errno::EOPNOTSUPP,
                "purging by pool usage threshold is not supported",
            ));
        }
        let ts = match expire_ts {
            0 => None,
            t => Some(
                u64::try_from(t).map_err(|_| CError::new(Errno::EINVAL, "negative expire_ts"))?,
            ),
        };
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.trash_purge(&target, ts).await })?;
        Ok(0)
    });
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Remove trashed image `id` and its data (`-EPERM` before its deferment
/// ends unless `force`).
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_remove(io: IoCtxT, id: *const c_char, force: bool) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_trash_remove_with_progress(io, id, force, None, std::ptr::null_mut()) }
}

/// [`rbd_trash_remove`] reporting completion to `cb`.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_remove_with_progress(
    io: IoCtxT,
    id: *const c_char,
    force: bool,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    let r = int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let id = unsafe { req_str(id) }?.to_string();
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.trash_remove(&target, &id, force).await })?;
        Ok(0)
    });
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Put trashed image `id` back under `name` (its old name if NULL or empty).
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_restore(
    io: IoCtxT,
    id: *const c_char,
    name: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let id = unsafe { req_str(id) }?.to_string();
        // SAFETY: as above.
        let name = unsafe { opt_str(name) }?.unwrap_or("").to_string();
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.trash_restore(&target, &id, &name).await })?;
        Ok(0)
    })
}
