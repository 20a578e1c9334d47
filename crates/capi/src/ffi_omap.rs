//! Omap through compound operations (python3-rados' `set_omap`,
//! `remove_omap_keys`, `get_omap_vals`, `get_omap_keys`,
//! `get_omap_vals_by_keys`): the write-op adders, read ops and the omap
//! iterator. Ops Quarry does not support refuse the whole compound
//! operation at its operate call (`-EOPNOTSUPP`), never apply the rest
//! as if they were there.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`: handles are live; arrays hold the counts passed; out
//! pointers stay valid until the operate call returns. NULL handles are
//! ignored by the adders and refused with -EINVAL by the operate calls.
#![allow(clippy::missing_safety_doc)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CString};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, OpRequest};

use crate::deferred_ops::{Deferred, Prval};
use crate::engine::{CError, CResult};
use crate::ffi_rados::{add_op, bytes_from, ioctx, wop, IoCtxT};
use crate::rt;
use crate::util::{guard, int, nonnull, req_str};

/// `count` C strings from `ptrs`.
///
/// # Safety
/// `ptrs` holds `count` NUL-terminated strings (or `count` is 0).
unsafe fn strs(ptrs: *const *const c_char, count: usize) -> CResult<Vec<String>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    nonnull(ptrs)?;
    (0..count)
        // SAFETY: ptrs holds count strings, per the caller.
        .map(|i| unsafe { req_str(*ptrs.add(i)) }.map(str::to_string))
        .collect()
}

/// `count` byte buffers from `ptrs` with lengths from `lens`.
///
/// # Safety
/// `ptrs` and `lens` hold `count` entries; each buffer its length.
unsafe fn bufs(
    ptrs: *const *const c_char,
    lens: *const usize,
    count: usize,
) -> CResult<Vec<Bytes>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    nonnull(ptrs)?;
    nonnull(lens)?;
    (0..count)
        .map(|i| {
            // SAFETY: as the caller promises.
            let (p, n) = unsafe { (*ptrs.add(i), *lens.add(i)) };
            if n == 0 {
                return Ok(Bytes::new());
            }
            nonnull(p)?;
            // SAFETY: p holds n bytes.
            Ok(Bytes::copy_from_slice(unsafe {
                std::slice::from_raw_parts(p.cast::<u8>(), n)
            }))
        })
        .collect()
}

/// Keys given with explicit lengths (they may hold NULs: refused, since
/// Quarry's omap keys are strings).
///
/// # Safety
/// As [`bufs`].
unsafe fn keys_with_lens(
    ptrs: *const *const c_char,
    lens: *const usize,
    count: usize,
) -> CResult<Vec<String>> {
    // SAFETY: the caller's contract.
    unsafe { bufs(ptrs, lens, count) }?
        .into_iter()
        .map(|b| {
            String::from_utf8(b.to_vec())
                .ok()
                .filter(|k| !k.contains('\0'))
                .ok_or_else(|| {
                    CError::new(Errno::EINVAL, "omap key is not a UTF-8 string without NULs")
                })
        })
        .collect()
}

/// Add: set omap keys to values (`lens` are the values' lengths).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_set(
    op: *mut c_void,
    keys: *const *const c_char,
    vals: *const *const c_char,
    lens: *const usize,
    num: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        add_op(op, || {
            let k = strs(keys, num)?;
            let v = bufs(vals, lens, num)?;
            Ok(Op::OmapSetVals(
                k.into_iter().zip(v).collect::<BTreeMap<_, _>>(),
            ))
        })
    }
}

/// Add: set omap keys to values, keys with explicit lengths.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_set2(
    op: *mut c_void,
    keys: *const *const c_char,
    vals: *const *const c_char,
    key_lens: *const usize,
    val_lens: *const usize,
    num: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        add_op(op, || {
            let k = keys_with_lens(keys, key_lens, num)?;
            let v = bufs(vals, val_lens, num)?;
            Ok(Op::OmapSetVals(
                k.into_iter().zip(v).collect::<BTreeMap<_, _>>(),
            ))
        })
    }
}

/// Add: remove omap keys (absent ones are ignored).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_rm_keys(
    op: *mut c_void,
    keys: *const *const c_char,
    keys_len: usize,
) {
    // SAFETY: the caller's contract.
    unsafe { add_op(op, || Ok(Op::OmapRmKeys(strs(keys, keys_len)?))) }
}

/// Add: remove omap keys given with explicit lengths.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_rm_keys2(
    op: *mut c_void,
    keys: *const *const c_char,
    key_lens: *const usize,
    keys_len: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        add_op(op, || {
            Ok(Op::OmapRmKeys(keys_with_lens(keys, key_lens, keys_len)?))
        })
    }
}

/// Write-op adders Quarry does not support: each refuses its compound
/// write (`-EOPNOTSUPP` at operate) instead of being skipped.
macro_rules! refused_write_op {
    ($($name:ident: $what:literal),* $(,)?) => {$(
        #[doc = concat!("Not supported: refuses the write op (", $what, ").")]
        #[no_mangle]
        pub unsafe extern "C" fn $name(op: *mut c_void) {
            guard((), || {
                // SAFETY: live write op, per the caller.
                if let Some(w) = unsafe { wop(op) } {
                    w.refuse(CError::new(Errno::EOPNOTSUPP, concat!($what, " is not supported")));
                }
            })
        }
    )*};
}

refused_write_op!(
    rados_write_op_exec: "object class calls (exec)",
    rados_write_op_omap_cmp: "omap comparison",
    rados_write_op_omap_rm_range2: "omap range removal",
);

/// Add a step resolved at operate time (`deferred_ops`); a bad one
/// refuses the write op.
unsafe fn add_step(op: *mut c_void, make: impl FnOnce() -> CResult<Deferred>) {
    guard((), || {
        // SAFETY: live write op, per the caller.
        if let Some(w) = unsafe { wop(op) } {
            match make() {
                Ok(s) => {
                    let at = w.ops.len();
                    w.steps.push((at, s));
                }
                Err(e) => w.refuse(e),
            }
        }
    })
}

/// Add: append `len` bytes at the object's end as it is when this step
/// runs (after the write op's earlier steps).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_append(op: *mut c_void, buf: *const c_char, len: usize) {
    // SAFETY: live write op and buffer, per the caller.
    unsafe {
        add_step(op, || {
            if len > crate::ffi_objops::MAX_LEN {
                return Err(CError::new(
                    Errno::E2BIG,
                    format!(
                        "append of {len} bytes: at most {}",
                        crate::ffi_objops::MAX_LEN
                    ),
                ));
            }
            Ok(Deferred::Append(bytes_from(buf, len)?))
        })
    }
}

/// Add: compare `cmp_len` bytes at `off` with `cmp_buf` before anything
/// is written; a difference at byte `i` fails the write op with
/// `-4095 - i` (also in `*prval`, which gets 0 on a match).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_cmpext(
    op: *mut c_void,
    cmp_buf: *const c_char,
    cmp_len: usize,
    off: u64,
    prval: *mut c_int,
) {
    // SAFETY: live write op and buffer, per the caller.
    unsafe {
        add_step(op, || {
            Ok(Deferred::CmpExt {
                off,
                cmp: bytes_from(cmp_buf, cmp_len)?,
                prval: Prval(prval),
            })
        })
    }
}

/// Add: `buf` (`data_len` bytes) repeated over `write_len` bytes at
/// `off` (a plain write of the expanded bytes; lengths as
/// `rados_writesame`, a bad one refuses the write op).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_writesame(
    op: *mut c_void,
    buf: *const c_char,
    data_len: usize,
    write_len: usize,
    off: u64,
) {
    // SAFETY: live write op and buffer, per the caller.
    unsafe {
        add_op(op, || {
            Ok(Op::Write {
                off,
                data: crate::ffi_objops::same_data_from(buf, data_len, write_len)?,
            })
        })
    }
}

/// Where one read op's results go when the read op is applied.
#[derive(Clone)]
enum ReadOut {
    /// `omap_get_vals2` / `omap_get_keys2` / `omap_get_vals_by_keys`: the
    /// iterator was handed out when the op was added (librados does the
    /// same, and python3-rados keeps it from then on); it is filled here.
    Omap {
        iter: *mut OmapIter,
        more: *mut u8,
        prval: *mut c_int,
    },
    /// `cmpext`: the bytes read are compared with these after the read;
    /// a difference fails the whole read op with `-4095 - i`.
    CmpExt { cmp: Bytes, prval: *mut c_int },
}

/// A new, empty iterator for an omap read, handed out through `out`.
///
/// # Safety
/// `out` valid for a write.
unsafe fn new_iter(out: *mut *mut c_void, keys_only: bool) -> CResult<*mut OmapIter> {
    nonnull(out)?;
    let it = Box::into_raw(Box::new(OmapIter {
        entries: Vec::new().into_iter(),
        total: 0,
        keys_only,
        key: CString::default(),
        val: Bytes::new(),
    }));
    // SAFETY: out non-null, from the caller.
    unsafe { *out = it.cast() };
    Ok(it)
}

/// A compound read (`rados_read_op_t`).
#[derive(Default)]
pub struct ReadOp {
    ops: Vec<Op>,
    outs: Vec<ReadOut>,
    refused: Option<CError>,
}

/// # Safety
/// `p` must be NULL or a live handle from `rados_create_read_op`.
unsafe fn rop<'a>(p: *mut c_void) -> Option<&'a mut ReadOp> {
    // SAFETY: p is NULL or a live Box<ReadOp>, per the caller.
    (!p.is_null()).then(|| unsafe { &mut *(p as *mut ReadOp) })
}

/// Add an op and where its result goes; a failure refuses the read op.
///
/// # Safety
/// As [`rop`].
unsafe fn add_read(p: *mut c_void, make: impl FnOnce() -> CResult<(Op, ReadOut)>) {
    guard((), || {
        // SAFETY: the caller's contract.
        if let Some(r) = unsafe { rop(p) } {
            match make() {
                Ok((op, out)) => {
                    r.ops.push(op);
                    r.outs.push(out);
                }
                Err(e) => {
                    r.refused.get_or_insert(e);
                }
            }
        }
    })
}

/// New compound read.
#[no_mangle]
pub unsafe extern "C" fn rados_create_read_op() -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        Box::into_raw(Box::<ReadOp>::default()).cast()
    })
}

/// Free a compound read.
#[no_mangle]
pub unsafe extern "C" fn rados_release_read_op(op: *mut c_void) {
    guard((), || {
        if !op.is_null() {
            // SAFETY: from rados_create_read_op, given back once.
            drop(unsafe { Box::from_raw(op as *mut ReadOp) });
        }
    })
}

/// Flags on a compound read (accepted: none changes a Quarry read).
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_set_flags(_op: *mut c_void, _flags: c_int) {}

/// Add: compare `cmp_len` bytes at `off` with `cmp_buf` (see
/// `rados_cmpext`); `*prval` gets 0 or the mismatch value, which a
/// mismatch also makes the read op's result.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_cmpext(
    op: *mut c_void,
    cmp_buf: *const c_char,
    cmp_len: usize,
    off: u64,
    prval: *mut c_int,
) {
    // SAFETY: live read op and buffer, per the caller.
    unsafe {
        add_read(op, || {
            let cmp = bytes_from(cmp_buf, cmp_len)?;
            if cmp.is_empty() {
                return Err(CError::new(Errno::EINVAL, "cmpext of zero bytes"));
            }
            let read = Op::Read {
                off,
                len: cmp.len() as u64,
            };
            Ok((read, ReadOut::CmpExt { cmp, prval }))
        })
    }
}

/// Add: omap entries after `start_after` whose keys start with
/// `filter_prefix`, at most `max_return`.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_omap_get_vals2(
    op: *mut c_void,
    start_after: *const c_char,
    filter_prefix: *const c_char,
    max_return: u64,
    iter: *mut *mut c_void,
    more: *mut u8,
    prval: *mut c_int,
) {
    // SAFETY: the caller's contract.
    unsafe {
        add_read(op, || {
            let start_after = crate::util::opt_str(start_after)?.unwrap_or("").to_string();
            let prefix = crate::util::opt_str(filter_prefix)?
                .unwrap_or("")
                .to_string();
            let iter = new_iter(iter, false)?;
            Ok((
                Op::OmapGetVals {
                    start_after,
                    prefix,
                    max: max_return,
                },
                ReadOut::Omap { iter, more, prval },
            ))
        })
    }
}

/// Add: omap keys after `start_after`, at most `max_return`.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_omap_get_keys2(
    op: *mut c_void,
    start_after: *const c_char,
    max_return: u64,
    iter: *mut *mut c_void,
    more: *mut u8,
    prval: *mut c_int,
) {
    // SAFETY: the caller's contract.
    unsafe {
        add_read(op, || {
            let start_after = crate::util::opt_str(start_after)?.unwrap_or("").to_string();
            let iter = new_iter(iter, true)?;
            Ok((
                Op::OmapGetVals {
                    start_after,
                    prefix: String::new(),
                    max: max_return,
                },
                ReadOut::Omap { iter, more, prval },
            ))
        })
    }
}

/// Add: the omap values of these keys (absent keys omitted).
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_omap_get_vals_by_keys(
    op: *mut c_void,
    keys: *const *const c_char,
    keys_len: usize,
    iter: *mut *mut c_void,
    prval: *mut c_int,
) {
    // SAFETY: the caller's contract.
    unsafe {
        add_read(op, || {
            let keys = strs(keys, keys_len)?;
            let iter = new_iter(iter, false)?;
            Ok((
                Op::OmapGetValsByKeys(keys),
                ReadOut::Omap {
                    iter,
                    more: std::ptr::null_mut(),
                    prval,
                },
            ))
        })
    }
}

/// Hand a compound read's `result` to its outputs (iterators, `more`
/// flags, `prval`s); returns the read op's result: 0, the first cmpext
/// mismatch, or the failure's negative errno.
///
/// # Safety
/// The pointers in `outs` were given with the ops and are still valid.
unsafe fn finish_read(outs: &[ReadOut], result: &quarry_rados::Result<Vec<OpOutput>>) -> i64 {
    let mut mismatch = None;
    for (i, out) in outs.iter().enumerate() {
        let (iter, more, prval) = match out {
            ReadOut::Omap { iter, more, prval } => (*iter, *more, *prval),
            ReadOut::CmpExt { cmp, prval } => {
                let rv = match result {
                    Ok(outs) => match outs.get(i) {
                        Some(OpOutput::Data(d)) => crate::ffi_objops::cmpext_result(cmp, d),
                        _ => Errno::EIO.negated() as i64,
                    },
                    Err(e) => e.errno.negated() as i64,
                };
                if rv != 0 && result.is_ok() {
                    mismatch.get_or_insert(rv);
                }
                if !prval.is_null() {
                    // SAFETY: given with the op, valid until now.
                    unsafe { **prval = rv as c_int };
                }
                continue;
            }
        };
        let (entries, was_cut, rv) = match result {
            Ok(outs) => match outs.get(i) {
                Some(OpOutput::Omap(m, cut)) => (m.clone(), *cut, 0),
                _ => (BTreeMap::new(), false, Errno::EIO.negated()),
            },
            Err(e) => (BTreeMap::new(), false, e.errno.negated()),
        };
        // SAFETY: the iterator handed out with the op is live until the
        // caller ends it (after the operate call or its completion); the
        // other out pointers were given with the op and stay valid until
        // then.
        unsafe {
            let it = &mut *iter;
            it.total = entries.len();
            it.entries = entries.into_iter().collect::<Vec<_>>().into_iter();
            if !more.is_null() {
                *more = u8::from(was_cut);
            }
            if !prval.is_null() {
                *prval = rv;
            }
        }
    }
    match result {
        Err(e) => e.errno.negated() as i64,
        Ok(_) => mismatch.unwrap_or(0),
    }
}

/// The read op, ioctx and request of an operate call (a refused read op
/// is refused here).
///
/// # Safety
/// Live read op and ioctx handles and a C string, per the caller.
unsafe fn read_request<'a>(
    op: *mut c_void,
    io: IoCtxT,
    oid: *const c_char,
) -> CResult<(
    &'a ReadOp,
    &'a std::sync::Arc<crate::cluster::IoCtx>,
    OpRequest,
)> {
    // SAFETY: forwarded contract.
    let r = unsafe { rop(op) }.ok_or(Errno::EINVAL)?;
    // SAFETY: as above.
    let io = unsafe { ioctx(io) }?;
    // SAFETY: as above.
    let name = unsafe { req_str(oid) }?;
    if let Some(e) = &r.refused {
        return Err(e.clone());
    }
    let req = crate::ffi_rados::request(io, name, r.ops.clone())?;
    Ok((r, io, req))
}

/// Apply a compound read: each op's iterator and return value are set.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_operate(
    op: *mut c_void,
    io: IoCtxT,
    oid: *const c_char,
    _flags: c_int,
) -> c_int {
    int(|| {
        // SAFETY: the caller's contract.
        let (r, io, req) = unsafe { read_request(op, io, oid) }?;
        let rados = io.conn.rados.clone();
        let result = rt::block_on(async move { rados.operate(req).await }).map(|r| r.outputs);
        // SAFETY: the out pointers came with the ops, valid until now.
        let v = unsafe { finish_read(&r.outs, &result) };
        Ok(i32::try_from(v).unwrap_or(i32::MIN))
    })
}

/// A read op's outputs, carried to its completion.
struct Outs(Vec<ReadOut>);

// SAFETY: the pointers inside are only used when the operation completes,
// which librados callers must wait for before freeing what they point to.
unsafe impl Send for Outs {}

impl Outs {
    /// [`finish_read`] on these outputs.
    ///
    /// # Safety
    /// As `finish_read`.
    unsafe fn finish(&self, result: &quarry_rados::Result<Vec<OpOutput>>) -> i64 {
        // SAFETY: forwarded contract.
        unsafe { finish_read(&self.0, result) }
    }
}

/// Apply a compound read asynchronously: the outputs are set, then the
/// completion fires with the read op's result (python3-rados
/// `Ioctx.operate_aio_read_op`).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_read_op_operate(
    op: *mut c_void,
    io: IoCtxT,
    c: *mut c_void,
    oid: *const c_char,
    _flags: c_int,
) -> c_int {
    int(|| {
        // SAFETY: the caller's contract.
        let (r, io, req) = unsafe { read_request(op, io, oid) }?;
        let outs = Outs(r.outs.clone());
        crate::ffi_rados::submit_with(io, req, c, None, move |rados, req| async move {
            let result = rados.operate(req).await.map(|r| r.outputs);
            // SAFETY: see `Outs`.
            let v = unsafe { outs.finish(&result) };
            if v < 0 {
                Err(v)
            } else {
                Ok(Vec::new())
            }
        })
    })
}

/// An omap listing handed out entry by entry (`rados_omap_iter_t`).
struct OmapIter {
    entries: std::vec::IntoIter<(String, Bytes)>,
    /// Entries in all, as `rados_omap_iter_size` counts them.
    total: usize,
    keys_only: bool,
    key: CString,
    val: Bytes,
}

/// Advance: the next key and value (value NULL for key listings); `*key`
/// NULL at the end. Both stay valid until the next call.
#[no_mangle]
pub unsafe extern "C" fn rados_omap_get_next2(
    iter: *mut c_void,
    key: *mut *mut c_char,
    val: *mut *mut c_char,
    key_len: *mut usize,
    val_len: *mut usize,
) -> c_int {
    int(|| {
        nonnull(iter)?;
        // SAFETY: a live iterator from a read op, per the caller.
        let it = unsafe { &mut *(iter as *mut OmapIter) };
        let (k, v, kl, vl) = match it.entries.next() {
            None => (std::ptr::null_mut(), std::ptr::null_mut(), 0, 0),
            Some((name, value)) => {
                it.key = CString::new(name)
                    .map_err(|_| CError::new(Errno::EIO, "omap key with a NUL byte"))?;
                it.val = if it.keys_only { Bytes::new() } else { value };
                let v = if it.keys_only {
                    std::ptr::null_mut()
                } else {
                    it.val.as_ptr().cast::<c_char>().cast_mut()
                };
                (
                    it.key.as_ptr().cast_mut(),
                    v,
                    it.key.as_bytes().len(),
                    it.val.len(),
                )
            }
        };
        // SAFETY: out pointers from the caller (NULL ones skipped).
        unsafe {
            if !key.is_null() {
                *key = k;
            }
            if !val.is_null() {
                *val = v;
            }
            if !key_len.is_null() {
                *key_len = kl;
            }
            if !val_len.is_null() {
                *val_len = vl;
            }
        }
        Ok(0)
    })
}

/// [`rados_omap_get_next2`] without the key's length.
#[no_mangle]
pub unsafe extern "C" fn rados_omap_get_next(
    iter: *mut c_void,
    key: *mut *mut c_char,
    val: *mut *mut c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { rados_omap_get_next2(iter, key, val, std::ptr::null_mut(), len) }
}

/// Entries the iterator holds in all (handed out or not).
#[no_mangle]
pub unsafe extern "C" fn rados_omap_iter_size(iter: *mut c_void) -> u32 {
    guard(0, || {
        if iter.is_null() {
            return 0;
        }
        // SAFETY: a live iterator, per the caller.
        let it = unsafe { &*(iter as *const OmapIter) };
        u32::try_from(it.total).unwrap_or(u32::MAX)
    })
}

/// Free an omap iterator.
#[no_mangle]
pub unsafe extern "C" fn rados_omap_get_end(iter: *mut c_void) {
    guard((), || {
        if !iter.is_null() {
            // SAFETY: from a read op, given back once.
            drop(unsafe { Box::from_raw(iter as *mut OmapIter) });
        }
    })
}
