//! Image and pool administration calls beside the I/O path: feature
//! updates, snapshot removal by id, the image's watchers and creation time,
//! pool metadata (python3-rbd's `Image.update_features`,
//! `remove_snap_by_id`, `watchers_list`, `create_timestamp`,
//! `RBD.pool_metadata_*`).
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's `librbd.h`:
//! handles are live, out pointers valid for the lengths passed. NULL
//! pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};

use quarry_common::options::{parse_features, RBD_FEATURE_NAMES};
use quarry_common::Errno;

use crate::engine::{CError, CResult};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::ffi_rbd::{fill_kv_list, img_of, ImageT};
use crate::rt;
use crate::util::{c_free, c_strdup, copy_out_len, guard, int, nonnull, opt_str, req_str};

/// `rbd_image_watcher_t`: one client that has the image open.
#[repr(C)]
pub struct RbdImageWatcher {
    /// Its address (`strdup`ed; freed by `rbd_watchers_list_cleanup`).
    pub addr: *mut c_char,
    /// Its instance (global) id.
    pub id: i64,
    /// Its watch cookie.
    pub cookie: u64,
}

/// Enable (`enabled` != 0) or disable features: exclusive-lock,
/// object-map, fast-diff (others are `-EINVAL`, as their dependencies).
#[no_mangle]
pub unsafe extern "C" fn rbd_update_features(image: ImageT, features: u64, enabled: u8) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let b = img.backend.clone();
        rt::block_on(async move { b.update_features(features, enabled != 0).await })?;
        Ok(0)
    })
}

/// Remove a snapshot by id (after in-flight writes complete).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_remove_by_id(image: ImageT, snap_id: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let i2 = img.clone();
        rt::block_on(async move {
            let barrier = i2.writes.barrier();
            i2.writes.wait_before(barrier).await;
            i2.backend.snap_remove_by_id(snap_id).await
        })?;
        Ok(0)
    })
}

/// The clients that have the image open (this handle included), into
/// `watchers` of `*max_watchers` entries; `-ERANGE` with the count needed
/// when it is too small.
#[no_mangle]
pub unsafe extern "C" fn rbd_watchers_list(
    image: ImageT,
    watchers: *mut RbdImageWatcher,
    max_watchers: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(max_watchers)?;
        let b = img.backend.clone();
        let list = rt::block_on(async move { b.watchers().await })?;
        // SAFETY: max_watchers non-null, from the caller.
        let cap = unsafe { *max_watchers };
        if list.len() > cap {
            // SAFETY: as above.
            unsafe { *max_watchers = list.len() };
            return Err(Errno::ERANGE.into());
        }
        if !list.is_empty() {
            nonnull(watchers)?;
        }
        for (i, (addr, id, cookie)) in list.iter().enumerate() {
            // SAFETY: watchers holds cap >= list.len() entries.
            unsafe {
                watchers.add(i).write(RbdImageWatcher {
                    addr: c_strdup(addr),
                    id: i64::try_from(*id).unwrap_or(i64::MAX),
                    cookie: *cookie,
                });
            }
        }
        // SAFETY: as above.
        unsafe { *max_watchers = list.len() };
        Ok(0)
    })
}

/// Free the addresses `rbd_watchers_list` returned.
#[no_mangle]
pub unsafe extern "C" fn rbd_watchers_list_cleanup(
    watchers: *mut RbdImageWatcher,
    num_watchers: usize,
) {
    guard((), || {
        if watchers.is_null() {
            return;
        }
        for i in 0..num_watchers {
            // SAFETY: the caller passes back what rbd_watchers_list filled.
            unsafe {
                let w = &mut *watchers.add(i);
                c_free(w.addr);
                w.addr = std::ptr::null_mut();
            }
        }
    })
}

/// When the image was created.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_create_timestamp(
    image: ImageT,
    timestamp: *mut libc::timespec,
) -> c_int {
    // SAFETY: the caller's handle and out pointer.
    unsafe { timestamp_of(image, timestamp, |i| i.create_timestamp_ns) }
}

/// When the image was last read, as recorded (librbd records it at most
/// once a minute per client; an image never read since creation: its
/// creation time).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_access_timestamp(
    image: ImageT,
    timestamp: *mut libc::timespec,
) -> c_int {
    // SAFETY: the caller's handle and out pointer.
    unsafe { timestamp_of(image, timestamp, |i| i.access_timestamp_ns) }
}

/// When the image was last written, as recorded (as the access time).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_modify_timestamp(
    image: ImageT,
    timestamp: *mut libc::timespec,
) -> c_int {
    // SAFETY: the caller's handle and out pointer.
    unsafe { timestamp_of(image, timestamp, |i| i.modify_timestamp_ns) }
}

/// One of the image's timestamps into a `struct timespec`.
unsafe fn timestamp_of(
    image: ImageT,
    timestamp: *mut libc::timespec,
    which: fn(&crate::engine::ImageInfo) -> u64,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(timestamp)?;
        let b = img.backend.clone();
        let ns = which(&rt::block_on(async move { b.info().await })?);
        // SAFETY: non-null, from the caller.
        unsafe {
            (*timestamp).tv_sec = (ns / 1_000_000_000) as libc::time_t;
            (*timestamp).tv_nsec = (ns % 1_000_000_000) as libc::c_long;
        }
        Ok(0)
    })
}

/// A pool's RBD metadata value (`-ENOENT` if unset; `-ERANGE` with the
/// length needed, NUL included, if `value` is short).
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_metadata_get(
    io: IoCtxT,
    key: *const c_char,
    value: *mut c_char,
    val_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        nonnull(val_len)?;
        let (engine, t) = (io.conn.engine.clone(), io.target());
        let v = rt::block_on(async move { engine.pool_metadata_get(&t, &key).await })?;
        // SAFETY: value valid for *val_len bytes, per the caller.
        unsafe { copy_out_len(&v, value, val_len) }?;
        Ok(0)
    })
}

/// Set a pool's RBD metadata key.
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_metadata_set(
    io: IoCtxT,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        // SAFETY: as above.
        let value = unsafe { req_str(value) }?.to_string();
        let (engine, t) = (io.conn.engine.clone(), io.target());
        rt::block_on(async move { engine.pool_metadata_set(&t, &key, &value).await })?;
        Ok(0)
    })
}

/// Remove a pool's RBD metadata key (`-ENOENT` if unset).
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_metadata_remove(io: IoCtxT, key: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        let (engine, t) = (io.conn.engine.clone(), io.target());
        rt::block_on(async move { engine.pool_metadata_remove(&t, &key).await })?;
        Ok(0)
    })
}

/// A pool's RBD metadata after `start` (at most `max`, 0 = all): keys and
/// values as NUL-separated lists (`-ERANGE` with both lengths if short).
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_metadata_list(
    io: IoCtxT,
    start: *const c_char,
    max: u64,
    keys: *mut c_char,
    key_len: *mut usize,
    values: *mut c_char,
    vals_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let start = unsafe { opt_str(start) }?.unwrap_or("").to_string();
        nonnull(key_len)?;
        nonnull(vals_len)?;
        let (engine, t) = (io.conn.engine.clone(), io.target());
        let all = rt::block_on(async move { engine.pool_metadata_list(&t).await })?;
        // SAFETY: the caller's buffers, as this call's contract.
        unsafe { fill_kv_list(&all, &start, max, keys, key_len, values, vals_len) }
    })
}

/// `rbd_config_option_t`: one option, its value and where it comes from.
#[repr(C)]
pub struct RbdConfigOption {
    /// Option name (`strdup`ed).
    pub name: *mut c_char,
    /// Effective value (`strdup`ed).
    pub value: *mut c_char,
    /// `rbd_config_source_t`: 0 config, 1 pool, 2 image.
    pub source: c_int,
}

/// Write `rows` into `options` of `*max_options` entries (`-ERANGE` with
/// the count needed when short).
///
/// # Safety
/// `max_options` valid; `options` valid for `*max_options` entries.
unsafe fn fill_options(
    rows: &[(String, String, i32)],
    options: *mut RbdConfigOption,
    max_options: *mut c_int,
) -> CResult<i32> {
    nonnull(max_options)?;
    let n = c_int::try_from(rows.len()).map_err(|_| CError::from(Errno::EOVERFLOW))?;
    // SAFETY: non-null, from the caller.
    let cap = unsafe { *max_options };
    // SAFETY: as above.
    unsafe { *max_options = n };
    if cap < n {
        return Err(Errno::ERANGE.into());
    }
    if n > 0 {
        nonnull(options)?;
    }
    for (i, (name, value, source)) in rows.iter().enumerate() {
        // SAFETY: options holds cap >= n entries.
        unsafe {
            options.add(i).write(RbdConfigOption {
                name: c_strdup(name),
                value: c_strdup(value),
                source: *source,
            });
        }
    }
    Ok(0)
}

/// Free what `rbd_config_*_list` returned.
///
/// # Safety
/// `options` NULL or as filled by `fill_options`, `n` entries.
unsafe fn free_options(options: *mut RbdConfigOption, n: c_int) {
    if options.is_null() {
        return;
    }
    for i in 0..usize::try_from(n).unwrap_or(0) {
        // SAFETY: the caller passes back what the list call filled.
        unsafe {
            let o = &mut *options.add(i);
            c_free(o.name);
            c_free(o.value);
            o.name = std::ptr::null_mut();
            o.value = std::ptr::null_mut();
        }
    }
}

/// Every `rbd_*` option as an image of this pool opened by this client
/// would get it: the client's configuration, then the pool's overrides.
#[no_mangle]
pub unsafe extern "C" fn rbd_config_pool_list(
    io: IoCtxT,
    options: *mut RbdConfigOption,
    max_options: *mut c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        let (engine, t) = (io.conn.engine.clone(), io.target());
        let pool = rt::block_on(async move { engine.pool_config(&t).await })?;
        let mut conf = crate::cluster::lock(&io.cluster.conf).clone();
        crate::image::apply_overrides(&mut conf, &pool, &[]);
        // SAFETY: the caller's buffers, as this call's contract.
        unsafe { fill_options(&conf.rbd_options(), options, max_options) }
    })
}

/// Free the strings `rbd_config_pool_list` returned.
#[no_mangle]
pub unsafe extern "C" fn rbd_config_pool_list_cleanup(options: *mut RbdConfigOption, n: c_int) {
    // SAFETY: the caller's contract.
    guard((), || unsafe { free_options(options, n) })
}

/// Every `rbd_*` option as this image handle uses it (the client's
/// configuration, then the pool's and the image's overrides, at open).
#[no_mangle]
pub unsafe extern "C" fn rbd_config_image_list(
    image: ImageT,
    options: *mut RbdConfigOption,
    max_options: *mut c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: the caller's buffers, as this call's contract.
        unsafe { fill_options(&img.conf.rbd_options(), options, max_options) }
    })
}

/// Free the strings `rbd_config_image_list` returned.
#[no_mangle]
pub unsafe extern "C" fn rbd_config_image_list_cleanup(options: *mut RbdConfigOption, n: c_int) {
    // SAFETY: the caller's contract.
    guard((), || unsafe { free_options(options, n) })
}

/// The feature names of `features`, comma-separated in bit order
/// (`layering,exclusive-lock`), into `buf` of `*size` bytes; `*size`
/// becomes the length needed with the NUL (`-ERANGE` if short). An
/// unknown bit is `-EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn rbd_features_to_string(
    features: u64,
    buf: *mut c_char,
    size: *mut usize,
) -> c_int {
    int(|| {
        let known = RBD_FEATURE_NAMES.iter().fold(0u64, |a, (_, b)| a | b);
        if features & !known != 0 {
            return Err(CError::new(
                Errno::EINVAL,
                format!("unknown feature bits {:#x}", features & !known),
            ));
        }
        let names: Vec<&str> = RBD_FEATURE_NAMES
            .iter()
            .filter(|(_, b)| features & b != 0)
            .map(|(n, _)| *n)
            .collect();
        // SAFETY: buffer and size from the caller.
        unsafe { copy_out_len(&names.join(","), buf, size) }?;
        Ok(0)
    })
}

/// Feature bits from a comma-separated list of names (or a number);
/// `-EINVAL` for an unknown name.
#[no_mangle]
pub unsafe extern "C" fn rbd_features_from_string(
    names: *const c_char,
    features: *mut u64,
) -> c_int {
    int(|| {
        // SAFETY: C string from the caller.
        let s = unsafe { req_str(names) }?;
        nonnull(features)?;
        let bits = parse_features(s).map_err(|e| CError::new(Errno::EINVAL, e))?;
        // SAFETY: non-null out-pointer.
        unsafe { *features = bits };
        Ok(0)
    })
}
