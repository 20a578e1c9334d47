//! `rados_getxattrs` and its iterator: every xattr of an object
//! (python3-rados' `Ioctx.get_xattrs`). The xattrs are read when the
//! iterator is made; the name and value handed out stay valid until the
//! next call or the end.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`: handles are live; out pointers valid. NULL pointers are
//! refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::collections::btree_map;
use std::ffi::{c_char, c_int, c_void, CString};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput};

use crate::engine::CError;
use crate::ffi_rados::{ioctx, run_ops, IoCtxT};
use crate::util::{guard, int, nonnull, req_str};

/// `rados_xattrs_iter_t`.
pub type XattrsIterT = *mut c_void;

/// The xattrs still to hand out and the pair handed out last.
struct XattrIter {
    rest: btree_map::IntoIter<String, Bytes>,
    name: CString,
    value: Bytes,
}

/// Read every xattr of `oid` and start iterating over them.
#[no_mangle]
pub unsafe extern "C" fn rados_getxattrs(
    io: IoCtxT,
    oid: *const c_char,
    iter: *mut XattrsIterT,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(oid) }?;
        nonnull(iter)?;
        let attrs = match run_ops(io, name, vec![Op::GetXattrs])?.into_iter().next() {
            Some(OpOutput::Xattrs(m)) => m,
            other => {
                return Err(CError::new(
                    Errno::EIO,
                    format!("getxattrs: unexpected output {other:?}"),
                ))
            }
        };
        let it = Box::new(XattrIter {
            rest: attrs.into_iter(),
            name: CString::default(),
            value: Bytes::new(),
        });
        // SAFETY: iter non-null, from the caller.
        unsafe { *iter = Box::into_raw(it).cast() };
        Ok(0)
    })
}

/// The next xattr: its name, value and length; `*name` NULL at the end.
#[no_mangle]
pub unsafe extern "C" fn rados_getxattrs_next(
    iter: XattrsIterT,
    name: *mut *const c_char,
    val: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    int(|| {
        nonnull(iter)?;
        nonnull(name)?;
        nonnull(val)?;
        nonnull(len)?;
        // SAFETY: a live iterator from rados_getxattrs, per the caller.
        let it = unsafe { &mut *(iter as *mut XattrIter) };
        let Some((k, v)) = it.rest.next() else {
            // SAFETY: out pointers non-null, from the caller.
            unsafe {
                *name = std::ptr::null();
                *val = std::ptr::null();
                *len = 0;
            }
            return Ok(0);
        };
        it.name =
            CString::new(k).map_err(|_| CError::new(Errno::EIO, "xattr name with a NUL byte"))?;
        it.value = v;
        // SAFETY: as above; the strings live in the iterator until the
        // next call.
        unsafe {
            *name = it.name.as_ptr();
            *val = it.value.as_ptr().cast();
            *len = it.value.len();
        }
        Ok(0)
    })
}

/// End an xattr iteration.
#[no_mangle]
pub unsafe extern "C" fn rados_getxattrs_end(iter: XattrsIterT) {
    guard((), || {
        if !iter.is_null() {
            // SAFETY: a live iterator from rados_getxattrs, given back once.
            drop(unsafe { Box::from_raw(iter as *mut XattrIter) });
        }
    })
}
