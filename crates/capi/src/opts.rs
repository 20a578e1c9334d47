//! `rbd_image_options_t` and the calls that take it (`rbd_create4`,
//! `rbd_clone3`), as python3-rbd uses them.
//!
//! # Safety
//! As the other exports: handles come from the matching create call,
//! buffers are valid for the lengths passed, NULL is refused.
#![allow(clippy::missing_safety_doc)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void};

use quarry_common::Errno;

use crate::engine::{CError, CResult};
use crate::ffi_rados::IoCtxT;
use crate::util::{copy_out, guard, int, nonnull, req_str};

/// `RBD_IMAGE_OPTION_FORMAT`.
pub const OPT_FORMAT: c_int = 0;
/// `RBD_IMAGE_OPTION_FEATURES`.
pub const OPT_FEATURES: c_int = 1;
/// `RBD_IMAGE_OPTION_ORDER`.
pub const OPT_ORDER: c_int = 2;
/// `RBD_IMAGE_OPTION_STRIPE_UNIT`.
pub const OPT_STRIPE_UNIT: c_int = 3;
/// `RBD_IMAGE_OPTION_STRIPE_COUNT`.
pub const OPT_STRIPE_COUNT: c_int = 4;
/// `RBD_IMAGE_OPTION_JOURNAL_POOL` (string).
pub const OPT_JOURNAL_POOL: c_int = 7;
/// `RBD_IMAGE_OPTION_FEATURES_SET`.
pub const OPT_FEATURES_SET: c_int = 8;
/// `RBD_IMAGE_OPTION_FEATURES_CLEAR`.
pub const OPT_FEATURES_CLEAR: c_int = 9;
/// `RBD_IMAGE_OPTION_DATA_POOL` (string).
pub const OPT_DATA_POOL: c_int = 10;
/// Highest option number (`RBD_IMAGE_OPTION_MIRROR_IMAGE_MODE`).
pub const OPT_MAX: c_int = 13;

/// One option value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptVal {
    /// A number.
    U64(u64),
    /// A string.
    Str(String),
}

/// The options behind an `rbd_image_options_t`.
#[derive(Default, Debug)]
pub struct ImageOptions {
    /// Set options by number.
    pub map: BTreeMap<c_int, OptVal>,
}

fn is_string_opt(o: c_int) -> bool {
    o == OPT_JOURNAL_POOL || o == OPT_DATA_POOL
}

/// # Safety
/// `p` must be NULL or a live handle from `rbd_image_options_create`.
pub unsafe fn options<'a>(p: *mut c_void) -> CResult<&'a mut ImageOptions> {
    nonnull(p)?;
    // SAFETY: p is a live Box<ImageOptions> per the contract.
    Ok(unsafe { &mut *(p as *mut ImageOptions) })
}

fn check_name(o: c_int) -> CResult<()> {
    if (0..=OPT_MAX).contains(&o) {
        Ok(())
    } else {
        Err(Errno::EINVAL.into())
    }
}

/// Create an options object.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_create(opts: *mut *mut c_void) {
    guard((), || {
        if !opts.is_null() {
            // SAFETY: non-null out-pointer.
            unsafe { *opts = Box::into_raw(Box::<ImageOptions>::default()) as *mut c_void };
        }
    })
}

/// Destroy an options object.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_destroy(opts: *mut c_void) {
    guard((), || {
        if !opts.is_null() {
            // SAFETY: from Box::into_raw in create; consumed once.
            drop(unsafe { Box::from_raw(opts as *mut ImageOptions) });
        }
    })
}

/// Set a string option (-EINVAL for numeric options).
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_set_string(
    opts: *mut c_void,
    optname: c_int,
    optval: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let o = unsafe { options(opts) }?;
        check_name(optname)?;
        if !is_string_opt(optname) {
            return Err(Errno::EINVAL.into());
        }
        // SAFETY: as above.
        let v = unsafe { req_str(optval) }?;
        o.map.insert(optname, OptVal::Str(v.to_string()));
        Ok(0)
    })
}

/// Set a numeric option (-EINVAL for string options).
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_set_uint64(
    opts: *mut c_void,
    optname: c_int,
    optval: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let o = unsafe { options(opts) }?;
        check_name(optname)?;
        if is_string_opt(optname) {
            return Err(Errno::EINVAL.into());
        }
        o.map.insert(optname, OptVal::U64(optval));
        Ok(0)
    })
}

/// Read a string option (-ENOENT if unset).
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_get_string(
    opts: *mut c_void,
    optname: c_int,
    optval: *mut c_char,
    maxlen: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let o = unsafe { options(opts) }?;
        match o.map.get(&optname) {
            Some(OptVal::Str(s)) => {
                // SAFETY: optval valid for maxlen bytes.
                unsafe { copy_out(s, optval, maxlen) }?;
                Ok(0)
            }
            Some(_) => Err(Errno::EINVAL.into()),
            None => Err(Errno::ENOENT.into()),
        }
    })
}

/// Read a numeric option (-ENOENT if unset).
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_get_uint64(
    opts: *mut c_void,
    optname: c_int,
    optval: *mut u64,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let o = unsafe { options(opts) }?;
        nonnull(optval)?;
        match o.map.get(&optname) {
            Some(OptVal::U64(v)) => {
                // SAFETY: non-null.
                unsafe { *optval = *v };
                Ok(0)
            }
            Some(_) => Err(Errno::EINVAL.into()),
            None => Err(Errno::ENOENT.into()),
        }
    })
}

/// Whether an option is set.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_is_set(
    opts: *mut c_void,
    optname: c_int,
    is_set: *mut bool,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let o = unsafe { options(opts) }?;
        nonnull(is_set)?;
        check_name(optname)?;
        // SAFETY: non-null.
        unsafe { *is_set = o.map.contains_key(&optname) };
        Ok(0)
    })
}

/// Unset an option (-ENOENT if unset).
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_unset(opts: *mut c_void, optname: c_int) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let o = unsafe { options(opts) }?;
        o.map.remove(&optname).ok_or(Errno::ENOENT)?;
        Ok(0)
    })
}

/// Unset every option.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_clear(opts: *mut c_void) {
    guard((), || {
        // SAFETY: handle from the caller.
        if let Ok(o) = unsafe { options(opts) } {
            o.map.clear();
        }
    })
}

/// 1 if no option is set.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_is_empty(opts: *mut c_void) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        Ok(unsafe { options(opts) }?.map.is_empty() as c_int)
    })
}

/// What creation options resolve to: `(features, order, stripe_unit,
/// stripe_count)`; unsupported choices (format 1, data pools, journals)
/// are refused with -EOPNOTSUPP rather than ignored.
pub fn resolve(
    o: Option<&ImageOptions>,
    default_features: u64,
) -> CResult<(Option<u64>, i32, u64, u64)> {
    let Some(o) = o else {
        return Ok((None, 0, 0, 0));
    };
    let num = |k: c_int| match o.map.get(&k) {
        Some(OptVal::U64(v)) => Some(*v),
        _ => None,
    };
    if let Some(f) = num(OPT_FORMAT) {
        if f != 2 {
            return Err(CError::new(
                Errno::EOPNOTSUPP,
                "only image format 2 is supported",
            ));
        }
    }
    if matches!(o.map.get(&OPT_DATA_POOL), Some(OptVal::Str(s)) if !s.is_empty()) {
        return Err(CError::new(
            Errno::EOPNOTSUPP,
            "separate data pools are not supported",
        ));
    }
    let mut features = num(OPT_FEATURES);
    let set = num(OPT_FEATURES_SET).unwrap_or(0);
    let clear = num(OPT_FEATURES_CLEAR).unwrap_or(0);
    if set != 0 || clear != 0 {
        features = Some((features.unwrap_or(default_features) | set) & !clear);
    }
    let order = num(OPT_ORDER).unwrap_or(0);
    let order = i32::try_from(order).map_err(|_| CError::from(Errno::EINVAL))?;
    Ok((
        features,
        order,
        num(OPT_STRIPE_UNIT).unwrap_or(0),
        num(OPT_STRIPE_COUNT).unwrap_or(0),
    ))
}

/// Create an image with options.
#[no_mangle]
pub unsafe extern "C" fn rbd_create4(
    io: IoCtxT,
    name: *const c_char,
    size: u64,
    opts: *mut c_void,
) -> c_int {
    int(|| {
        let o = if opts.is_null() {
            None
        } else {
            // SAFETY: handle from the caller.
            Some(&*unsafe { options(opts) }?)
        };
        let (features, mut order, su, sc) = resolve(o, crate::ffi_rbd::default_features(io)?)?;
        crate::ffi_rbd::create_impl(io, name, size, features, &mut order, (su, sc))
    })
}

/// Clone with options.
#[no_mangle]
pub unsafe extern "C" fn rbd_clone3(
    p_io: IoCtxT,
    p_name: *const c_char,
    p_snap: *const c_char,
    c_io: IoCtxT,
    c_name: *const c_char,
    opts: *mut c_void,
) -> c_int {
    int(|| {
        let o = if opts.is_null() {
            None
        } else {
            // SAFETY: handle from the caller.
            Some(&*unsafe { options(opts) }?)
        };
        let (features, mut order, su, sc) = resolve(o, crate::ffi_rbd::default_features(c_io)?)?;
        crate::ffi_rbd::clone_impl(
            p_io,
            p_name,
            p_snap,
            c_io,
            c_name,
            features,
            &mut order,
            (su, sc),
        )
    })
}
