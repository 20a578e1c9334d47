//! `rados_nobjects_list_*`: listing a pool's objects (python3-rados'
//! `Ioctx.list_objects()`, C tools). The listing is taken when it is
//! opened, in the ioctx's namespace (all of them for
//! `LIBRADOS_ALL_NSPACES`), ordered by namespace and name; objects created
//! after the open are not seen, as with a librados listing that has passed
//! their PG.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`: the ioctx and list handles are live; out pointers are
//! valid. NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void, CString};

use quarry_common::Errno;
use quarry_rados::ListEntry;

use crate::cluster::lock;
use crate::engine::{CError, CResult};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::rt;
use crate::util::{guard, int, nonnull};

/// `LIBRADOS_ALL_NSPACES`: a namespace name that lists every namespace.
const ALL_NSPACES: &str = "\u{1}";

/// `rados_list_ctx_t`.
pub type ListCtxT = *mut c_void;

/// An open listing and the strings of the entry last returned (they stay
/// valid until the next call or the close, as librados promises).
struct ObjList {
    entries: std::vec::IntoIter<ListEntry>,
    name: CString,
    nspace: CString,
}

/// Borrow the listing behind a handle.
///
/// # Safety
/// `p` must be NULL or a live handle from `rados_nobjects_list_open`.
unsafe fn list<'a>(p: ListCtxT) -> CResult<&'a mut ObjList> {
    nonnull(p)?;
    // SAFETY: p is a live Box<ObjList> per the caller's contract.
    Ok(unsafe { &mut *(p as *mut ObjList) })
}

/// Start listing the ioctx's pool (in its namespace).
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_open(io: IoCtxT, ctx: *mut ListCtxT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        nonnull(ctx)?;
        let ns = lock(&io.namespace).clone();
        let ns = (ns != ALL_NSPACES).then_some(ns);
        let rados = io.conn.rados.clone();
        let pool = io.pool;
        let entries = rt::block_on(async move { rados.list_objects(pool, ns.as_deref()).await })?;
        let l = Box::new(ObjList {
            entries: entries.into_iter(),
            name: CString::default(),
            nspace: CString::default(),
        });
        // SAFETY: ctx non-null, from the caller.
        unsafe { *ctx = Box::into_raw(l).cast() };
        Ok(0)
    })
}

/// Advance to the next entry: its name, locator key (always NULL: Quarry
/// has no locators) and namespace; `-ENOENT` at the end.
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_next(
    ctx: ListCtxT,
    entry: *mut *const c_char,
    key: *mut *const c_char,
    nspace: *mut *const c_char,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { rados_nobjects_list_next2(ctx, entry, key, nspace, NULL_SIZE, NULL_SIZE, NULL_SIZE) }
}

/// No size wanted.
const NULL_SIZE: *mut usize = std::ptr::null_mut();

/// [`rados_nobjects_list_next`] with the strings' lengths.
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_next2(
    ctx: ListCtxT,
    entry: *mut *const c_char,
    key: *mut *const c_char,
    nspace: *mut *const c_char,
    entry_size: *mut usize,
    key_size: *mut usize,
    nspace_size: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let l = unsafe { list(ctx) }?;
        nonnull(entry)?;
        let Some(e) = l.entries.next() else {
            return Err(Errno::ENOENT.into());
        };
        let cstr = |s: String| {
            CString::new(s).map_err(|_| CError::new(Errno::EIO, "object name with a NUL byte"))
        };
        l.name = cstr(e.name)?;
        l.nspace = cstr(e.namespace)?;
        // SAFETY: out pointers non-null where written, from the caller; the
        // strings live in the listing until the next call.
        unsafe {
            *entry = l.name.as_ptr();
            if !key.is_null() {
                *key = std::ptr::null();
            }
            if !nspace.is_null() {
                *nspace = l.nspace.as_ptr();
            }
            if !entry_size.is_null() {
                *entry_size = l.name.as_bytes().len();
            }
            if !key_size.is_null() {
                *key_size = 0;
            }
            if !nspace_size.is_null() {
                *nspace_size = l.nspace.as_bytes().len();
            }
        }
        Ok(0)
    })
}

/// End a listing.
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_close(ctx: ListCtxT) {
    guard((), || {
        if !ctx.is_null() {
            // SAFETY: a live handle from rados_nobjects_list_open, given back
            // once.
            drop(unsafe { Box::from_raw(ctx as *mut ObjList) });
        }
    })
}
