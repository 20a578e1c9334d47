//! Whole-image copies: `rbd_copy`, `rbd_copy3`, `rbd_copy4` and their
//! `_with_progress` forms (python3-rbd's `Image.copy`), `rbd_deep_copy` and
//! `rbd_deep_copy_with_progress` (`Image.deep_copy`). The copy is made by
//! `quarry_rbd::Rbd::copy` / `deep_copy` from the handle's current view.
//!
//! # Safety
//! As the other exports: handles come from the matching open/create call,
//! strings are NUL-terminated, NULL handles and names are refused.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void};

use quarry_common::Errno;
use quarry_rbd::CopyOptions;

use crate::engine::{CError, CResult};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::ffi_rbd::{img_of, ImageT};
use crate::opts::{options, resolve};
use crate::rt;
use crate::util::{int, req_str};

/// `librbd_progress_fn_t`.
type ProgressFn = Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>;

/// Copy `image`'s view into `dest_io/dest_name` with the options `opts`
/// (NULL: the source's order and features), then report completion to `cb`.
unsafe fn copy_impl(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
    deep: bool,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> CResult<i32> {
    // SAFETY: handles and C string from the caller.
    let img = unsafe { img_of(image) }?;
    // SAFETY: as above.
    let dio = unsafe { ioctx(dest_io) }?;
    // SAFETY: as above.
    let name = unsafe { req_str(dest_name) }?.to_string();
    let b = img.backend.clone();
    let info = rt::block_on(async move { b.info().await })?;
    let o = if opts.is_null() {
        None
    } else {
        // SAFETY: handle from the caller.
        Some(&*unsafe { options(opts) }?)
    };
    // Features set/cleared by the options apply to the source's.
    let (features, order, su, sc) = resolve(o, info.features)?;
    let order = u8::try_from(order).map_err(|_| CError::new(Errno::EDOM, "order out of range"))?;
    if order != 0 && !(quarry_rbd::MIN_ORDER..=quarry_rbd::MAX_ORDER).contains(&order) {
        return Err(CError::new(Errno::EDOM, "order out of range"));
    }
    let obj = if order == 0 {
        1u64 << info.order
    } else {
        1u64 << order
    };
    if (su != 0 && su != obj) || sc > 1 {
        return Err(CError::new(
            Errno::EINVAL,
            "fancy striping is not supported",
        ));
    }
    let copts = CopyOptions {
        order,
        features,
        flatten: false,
    };
    let backend = img.backend.clone();
    let target = dio.target();
    rt::block_on(async move { backend.copy_to(&target, &name, &copts, deep).await })?;
    if let Some(cb) = cb {
        let size = img.size();
        // SAFETY: user callback with its own data.
        unsafe { cb(size, size, cbdata) };
    }
    Ok(0)
}

/// Copy an image (its current view) to a new image in `dest_io`.
#[no_mangle]
pub unsafe extern "C" fn rbd_copy(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe {
        copy_impl(
            image,
            dest_io,
            dest_name,
            std::ptr::null_mut(),
            false,
            None,
            std::ptr::null_mut(),
        )
    })
}

/// [`rbd_copy`] with creation options for the new image.
#[no_mangle]
pub unsafe extern "C" fn rbd_copy3(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe {
        copy_impl(
            image,
            dest_io,
            dest_name,
            opts,
            false,
            None,
            std::ptr::null_mut(),
        )
    })
}

/// [`rbd_copy3`]; zeros are detected in 4 KiB blocks whatever
/// `sparse_size` says (it only tunes which runs of zeros stay holes).
#[no_mangle]
pub unsafe extern "C" fn rbd_copy4(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
    _sparse_size: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe {
        copy_impl(
            image,
            dest_io,
            dest_name,
            opts,
            false,
            None,
            std::ptr::null_mut(),
        )
    })
}

/// [`rbd_copy`] with a progress callback (called once, at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_copy_with_progress(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe {
        copy_impl(
            image,
            dest_io,
            dest_name,
            std::ptr::null_mut(),
            false,
            cb,
            cbdata,
        )
    })
}

/// [`rbd_copy3`] with a progress callback (called once, at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_copy_with_progress3(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe { copy_impl(image, dest_io, dest_name, opts, false, cb, cbdata) })
}

/// [`rbd_copy4`] with a progress callback (called once, at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_copy_with_progress4(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
    cb: ProgressFn,
    cbdata: *mut c_void,
    _sparse_size: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe { copy_impl(image, dest_io, dest_name, opts, false, cb, cbdata) })
}

/// Copy an image with its snapshots (up to the handle's snapshot, if it is
/// at one); a clone's copy is a clone of the same parent snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_deep_copy(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe {
        copy_impl(
            image,
            dest_io,
            dest_name,
            opts,
            true,
            None,
            std::ptr::null_mut(),
        )
    })
}

/// [`rbd_deep_copy`] with a progress callback (called once, at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_deep_copy_with_progress(
    image: ImageT,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    int(|| unsafe { copy_impl(image, dest_io, dest_name, opts, true, cb, cbdata) })
}
