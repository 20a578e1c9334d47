//! `rados_application_*`: a pool's application metadata (which
//! applications use it, and their keys), kept by the monitors. python3-rados
//! calls these for `Ioctx.application_*`. Lists are NUL-separated; a
//! buffer too small is `-ERANGE` with the lengths needed written back, as
//! librados does.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`: the ioctx is live, strings are NUL-terminated, buffers are
//! valid for the lengths passed. NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};

use quarry_common::Errno;
use quarry_monc::{AppOp, MonCommand, MonReply, PoolApplications};

use crate::cluster::IoCtx;
use crate::engine::{CError, CResult};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::rt;
use crate::util::{int, nonnull, req_str};

/// The monitors' client, or `EOPNOTSUPP` for the embedded backend.
fn monc(io: &IoCtx) -> CResult<std::sync::Arc<quarry_monc::MonClient>> {
    io.conn
        .client
        .as_ref()
        .map(|c| c.monc().clone())
        .ok_or_else(|| {
            CError::new(
                Errno::EOPNOTSUPP,
                "pool application metadata needs a cluster (the embedded backend has no monitors)",
            )
        })
}

/// Apply one change to the ioctx's pool.
fn change(io: &IoCtx, op: AppOp) -> CResult<i32> {
    let monc = monc(io)?;
    let cmd = MonCommand::PoolApplication {
        pool: io.pool_name.clone(),
        op,
    };
    match rt::block_on(async move { monc.command(cmd).await }) {
        Ok(MonReply::Applied { .. }) => Ok(0),
        Ok(other) => Err(CError::new(
            Errno::EIO,
            format!("osd pool application: unexpected reply {other:?}"),
        )),
        Err(e) => Err(CError::new(e.errno(), e.to_string())),
    }
}

/// The ioctx's pool's applications and their keys.
fn list(io: &IoCtx) -> CResult<PoolApplications> {
    let monc = monc(io)?;
    let cmd = MonCommand::PoolApplicationGet {
        pool: io.pool_name.clone(),
    };
    match rt::block_on(async move { monc.command(cmd).await }) {
        Ok(MonReply::PoolApplications(a)) => Ok(a),
        Ok(other) => Err(CError::new(
            Errno::EIO,
            format!("osd pool application get: unexpected reply {other:?}"),
        )),
        Err(e) => Err(CError::new(e.errno(), e.to_string())),
    }
}

/// `items` joined with NUL terminators, as librados returns lists.
fn nul_list<'a>(items: impl Iterator<Item = &'a String>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out
}

/// Copy `bytes` into `buf`, whose capacity `*len` says; the length needed
/// is written back either way.
///
/// # Safety
/// `len` valid; `buf` valid for `*len` bytes when `bytes` fits.
unsafe fn fill(bytes: &[u8], buf: *mut c_char, len: *mut usize) {
    // SAFETY: the caller's contract.
    unsafe {
        if !bytes.is_empty() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        }
        *len = bytes.len();
    }
}

/// Enable an application on the pool (`force`: beside others).
#[no_mangle]
pub unsafe extern "C" fn rados_application_enable(
    io: IoCtxT,
    app_name: *const c_char,
    force: c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let app = unsafe { req_str(app_name) }?.to_string();
        change(
            io,
            AppOp::Enable {
                app,
                force: force != 0,
            },
        )
    })
}

/// The pool's applications, NUL-separated.
#[no_mangle]
pub unsafe extern "C" fn rados_application_list(
    io: IoCtxT,
    values: *mut c_char,
    values_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        nonnull(values_len)?;
        let bytes = nul_list(list(io)?.keys());
        // SAFETY: values_len non-null, from the caller.
        let cap = unsafe { *values_len };
        if bytes.len() > cap {
            // SAFETY: as above.
            unsafe { *values_len = bytes.len() };
            return Err(Errno::ERANGE.into());
        }
        if !bytes.is_empty() {
            nonnull(values)?;
        }
        // SAFETY: values holds cap >= bytes.len() bytes.
        unsafe { fill(&bytes, values, values_len) };
        Ok(0)
    })
}

/// One key's value of an application enabled on the pool.
#[no_mangle]
pub unsafe extern "C" fn rados_application_metadata_get(
    io: IoCtxT,
    app_name: *const c_char,
    key: *const c_char,
    value: *mut c_char,
    value_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let app = unsafe { req_str(app_name) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?;
        nonnull(value_len)?;
        let apps = list(io)?;
        let v = apps
            .get(app)
            .and_then(|keys| keys.get(key))
            .ok_or_else(|| CError::from(Errno::ENOENT))?;
        let mut bytes = v.as_bytes().to_vec();
        bytes.push(0);
        // SAFETY: value_len non-null, from the caller.
        let cap = unsafe { *value_len };
        if bytes.len() > cap {
            // SAFETY: as above.
            unsafe { *value_len = bytes.len() };
            return Err(Errno::ERANGE.into());
        }
        nonnull(value)?;
        // SAFETY: value holds cap >= bytes.len() bytes.
        unsafe { fill(&bytes, value, value_len) };
        Ok(0)
    })
}

/// Set one key of an application enabled on the pool.
#[no_mangle]
pub unsafe extern "C" fn rados_application_metadata_set(
    io: IoCtxT,
    app_name: *const c_char,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let app = unsafe { req_str(app_name) }?.to_string();
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        // SAFETY: as above.
        let value = unsafe { req_str(value) }?.to_string();
        change(io, AppOp::Set { app, key, value })
    })
}

/// Remove one key of an application enabled on the pool.
#[no_mangle]
pub unsafe extern "C" fn rados_application_metadata_remove(
    io: IoCtxT,
    app_name: *const c_char,
    key: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let app = unsafe { req_str(app_name) }?.to_string();
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        change(io, AppOp::Rm { app, key })
    })
}

/// An application's keys and values, each list NUL-separated and in the
/// same order.
#[no_mangle]
pub unsafe extern "C" fn rados_application_metadata_list(
    io: IoCtxT,
    app_name: *const c_char,
    keys: *mut c_char,
    keys_len: *mut usize,
    values: *mut c_char,
    values_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let app = unsafe { req_str(app_name) }?;
        nonnull(keys_len)?;
        nonnull(values_len)?;
        let apps = list(io)?;
        let meta = apps.get(app).ok_or_else(|| CError::from(Errno::ENOENT))?;
        let kb = nul_list(meta.keys());
        let vb = nul_list(meta.values());
        // SAFETY: both lengths non-null, from the caller.
        let (kcap, vcap) = unsafe { (*keys_len, *values_len) };
        if kb.len() > kcap || vb.len() > vcap {
            // SAFETY: as above.
            unsafe {
                *keys_len = kb.len();
                *values_len = vb.len();
            }
            return Err(Errno::ERANGE.into());
        }
        if !kb.is_empty() {
            nonnull(keys)?;
            nonnull(values)?;
        }
        // SAFETY: each buffer holds at least its list's bytes.
        unsafe {
            fill(&kb, keys, keys_len);
            fill(&vb, values, values_len);
        }
        Ok(0)
    })
}

/// `rbd_pool_init`: enable the `rbd` application on the pool (beside
/// another one only with `force`), as `rbd pool init`. Nothing to tag on
/// the embedded backend.
#[no_mangle]
pub unsafe extern "C" fn rbd_pool_init(io: IoCtxT, force: bool) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        if io.conn.client.is_none() {
            return Ok(0);
        }
        change(
            io,
            AppOp::Enable {
                app: "rbd".into(),
                force,
            },
        )
    })
}
