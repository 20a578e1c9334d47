//! librados object calls built from the object layer's ops in the client:
//! append (atomic, by compare-and-swap on the object version), writesame,
//! cmpext, and the asynchronous forms of stat, append, setxattr, rmxattr,
//! writesame and cmpext (python3-rados `Ioctx.aio_*`, `writesame`,
//! `cmpext`).
//!
//! Safety contract of every export: librados' (live handles, valid C
//! strings, buffers valid for their lengths, out-pointers valid until the
//! completion fires).
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void};
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, OpRequest, Rados, RadosError};

use crate::cluster::IoCtx;
use crate::completion::Completion;
use crate::engine::{CError, CResult};
use crate::ffi_rados::{bytes_from, ioctx, request, submit, IoCtxT};
use crate::rt;
use crate::util::{int, nonnull, req_str};

/// librados' `MAX_ERRNO`: a cmpext mismatch at byte `i` returns
/// `-MAX_ERRNO - i`, below every errno.
const MAX_ERRNO: i64 = 4095;

/// Largest append, writesame data or write length librados takes
/// (`UINT_MAX / 2`); larger ones are `E2BIG`.
pub(crate) const MAX_LEN: usize = (u32::MAX / 2) as usize;

/// How often an append retries when the object changed between reading
/// its size and writing after it.
const APPEND_TRIES: usize = 1000;

/// The request an append sends (its ops are set per attempt); refuses a
/// length librados refuses and an ioctx that reads a snapshot.
fn append_request(io: &IoCtx, name: &str, len: usize) -> CResult<OpRequest> {
    if len > MAX_LEN {
        return Err(CError::new(
            Errno::E2BIG,
            format!("append of {len} bytes: at most {MAX_LEN}"),
        ));
    }
    request(io, name, vec![Op::Create { exclusive: false }])
}

/// Append `data` at the object's end: read its size and version, write at
/// that size guarded by the version, and start over if another client
/// changed the object in between. So concurrent appends never overwrite
/// each other, as with Ceph's OSD-side append.
async fn append(
    rados: Arc<dyn Rados>,
    mut req: OpRequest,
    data: Bytes,
) -> quarry_rados::Result<()> {
    let stat = OpRequest::new(req.oid.clone()).op(Op::Stat);
    for _ in 0..APPEND_TRIES {
        let (size, version) = match rados.operate(stat.clone()).await {
            Ok(r) => match r.outputs.first() {
                Some(OpOutput::Stat(s)) => (s.size, s.version),
                _ => return Err(RadosError::io("append: stat returned no size")),
            },
            // No head: version 0, which the guard also accepts for a
            // missing object.
            Err(e) if e.errno == Errno::ENOENT => (0, 0),
            Err(e) => return Err(e),
        };
        req.ops = vec![
            Op::AssertVersion(version),
            Op::Write {
                off: size,
                data: data.clone(),
            },
        ];
        match rados.operate(req.clone()).await {
            Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW) => continue,
            r => return r.map(|_| ()),
        }
    }
    Err(RadosError::new(
        Errno::EBUSY,
        format!("append to {}: the object kept changing", req.oid.name),
    ))
}

/// The bytes writesame writes: `data` repeated to `write_len` bytes, which
/// must be a positive multiple of its length (`EINVAL`), both at most
/// [`MAX_LEN`] (`E2BIG`), as librados checks.
fn same_data(data: &[u8], write_len: usize) -> CResult<Bytes> {
    if data.len() > MAX_LEN || write_len > MAX_LEN {
        return Err(CError::new(
            Errno::E2BIG,
            format!("writesame of {write_len} bytes: at most {MAX_LEN}"),
        ));
    }
    if data.is_empty() || !write_len.is_multiple_of(data.len()) {
        return Err(CError::new(
            Errno::EINVAL,
            format!(
                "writesame: write length {write_len} is not a multiple of data length {}",
                data.len()
            ),
        ));
    }
    let mut out = BytesMut::with_capacity(write_len);
    for _ in 0..write_len / data.len() {
        out.extend_from_slice(data);
    }
    Ok(out.freeze())
}

/// [`same_data`] of the caller's `data_len` bytes at `buf`.
///
/// # Safety
/// `buf` must be valid for `data_len` bytes (or NULL: `EINVAL`).
pub(crate) unsafe fn same_data_from(
    buf: *const c_char,
    data_len: usize,
    write_len: usize,
) -> CResult<Bytes> {
    // Copy no more than one byte past the limit: enough for same_data to
    // refuse an oversized pattern with E2BIG without copying all of it.
    // SAFETY: the caller's contract (a shorter prefix of a valid buffer).
    let pattern = unsafe { bytes_from(buf, data_len.min(MAX_LEN + 1)) }?;
    same_data(&pattern, write_len)
}

/// The cmpext result for `cmp` against the object bytes `got` read at the
/// same offset (shorter at the object's end, where the rest reads as
/// zeros): 0, or `-MAX_ERRNO - i` for the first differing byte `i`.
pub(crate) fn cmpext_result(cmp: &[u8], got: &[u8]) -> i64 {
    cmp.iter()
        .enumerate()
        .find(|&(i, &b)| got.get(i).copied().unwrap_or(0) != b)
        .map_or(0, |(i, _)| -MAX_ERRNO - i as i64)
}

/// The read a cmpext makes (the ioctx's read snapshot applied).
fn cmpext_request(io: &IoCtx, name: &str, len: usize, off: u64) -> CResult<OpRequest> {
    request(
        io,
        name,
        vec![Op::Read {
            off,
            len: len as u64,
        }],
    )
}

fn read_data(r: quarry_rados::Result<quarry_rados::OpReply>) -> quarry_rados::Result<Bytes> {
    Ok(match r?.outputs.into_iter().next() {
        Some(OpOutput::Data(d)) => d,
        _ => Bytes::new(),
    })
}

/// Run `task` for an aio call on `name`, in order with the ioctx's other
/// aio to that object, and fire completion `c` with its value.
fn spawn_aio<F, Fut>(io: &IoCtx, name: &str, c: *mut c_void, task: F) -> CResult<i32>
where
    F: FnOnce(Arc<dyn Rados>) -> Fut + Send + 'static,
    Fut: Future<Output = i64> + Send + 'static,
{
    nonnull(c)?;
    // SAFETY: live completion handle from the caller.
    let comp = unsafe { Completion::from_handle(c) };
    let oid = request(io, name, Vec::new())?.oid;
    let conn = io.conn.clone();
    let parts = conn.order.enter(&oid);
    let guard_comp = comp.clone();
    rt::spawn_guarded(
        async move {
            let mut slot = conn.order.slot(oid, parts);
            slot.ready().await;
            let ret = task(conn.rados.clone()).await;
            drop(slot);
            comp.finish(ret, None);
        },
        move || guard_comp.finish(-5, None),
    );
    Ok(0)
}

/// Append `len` bytes to an object (atomic against other appends).
#[no_mangle]
pub unsafe extern "C" fn rados_append(
    io: IoCtxT,
    o: *const c_char,
    buf: *const c_char,
    len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        let req = append_request(io, name, len)?;
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        let rados = io.conn.rados.clone();
        rt::block_on(append(rados, req, data))?;
        Ok(0)
    })
}

/// Asynchronous [`rados_append`].
#[no_mangle]
pub unsafe extern "C" fn rados_aio_append(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    buf: *const c_char,
    len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        let req = append_request(io, name, len)?;
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        spawn_aio(io, name, c, move |rados| async move {
            match append(rados, req, data).await {
                Ok(()) => 0,
                Err(e) => e.errno.negated() as i64,
            }
        })
    })
}

/// Write `buf` (`data_len` bytes) repeatedly over `write_len` bytes at `off`.
#[no_mangle]
pub unsafe extern "C" fn rados_writesame(
    io: IoCtxT,
    o: *const c_char,
    buf: *const c_char,
    data_len: usize,
    write_len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { same_data_from(buf, data_len, write_len) }?;
        crate::ffi_rados::run_ops(io, name, vec![Op::Write { off, data }])?;
        Ok(0)
    })
}

/// Asynchronous [`rados_writesame`].
#[no_mangle]
pub unsafe extern "C" fn rados_aio_writesame(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    buf: *const c_char,
    data_len: usize,
    write_len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { same_data_from(buf, data_len, write_len) }?;
        submit(io, name, c, vec![Op::Write { off, data }], None)
    })
}

/// Compare `cmp_len` bytes at `off` with `cmp_buf`: 0 if equal, `-4095 -
/// i` at the first differing byte `i` (past the object's end its bytes
/// read as zeros), `-ENOENT` if the object does not exist.
#[no_mangle]
pub unsafe extern "C" fn rados_cmpext(
    io: IoCtxT,
    o: *const c_char,
    cmp_buf: *const c_char,
    cmp_len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let cmp = unsafe { bytes_from(cmp_buf, cmp_len) }?;
        let req = cmpext_request(io, name, cmp.len(), off)?;
        if cmp.is_empty() {
            // A zero-length read means "to the end": nothing to compare.
            return Ok(0);
        }
        let rados = io.conn.rados.clone();
        let got = read_data(rt::block_on(async move { rados.operate(req).await }))?;
        Ok(cmpext_result(&cmp, &got) as i32)
    })
}

/// Asynchronous [`rados_cmpext`]: the completion's value is its result.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_cmpext(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    cmp_buf: *const c_char,
    cmp_len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let cmp = unsafe { bytes_from(cmp_buf, cmp_len) }?;
        let req = cmpext_request(io, name, cmp.len(), off)?;
        spawn_aio(io, name, c, move |rados| async move {
            if cmp.is_empty() {
                return 0;
            }
            match read_data(rados.operate(req).await) {
                Ok(got) => cmpext_result(&cmp, &got),
                Err(e) => e.errno.negated() as i64,
            }
        })
    })
}

/// Asynchronous stat: `*psize` and `*pmtime` (either may be NULL) are set
/// before the completion fires; they must stay valid until then.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_stat(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    psize: *mut u64,
    pmtime: *mut libc::time_t,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        let req = request(io, name, vec![Op::Stat])?;
        // Addresses travel as integers: the caller keeps them valid until
        // the completion fires (librados contract).
        let (psize, pmtime) = (psize as usize, pmtime as usize);
        spawn_aio(io, name, c, move |rados| async move {
            let st = match rados.operate(req).await {
                Ok(r) => match r.outputs.into_iter().next() {
                    Some(OpOutput::Stat(s)) => s,
                    _ => return Errno::EIO.negated() as i64,
                },
                Err(e) => return e.errno.negated() as i64,
            };
            if psize != 0 {
                // SAFETY: non-null out-pointer kept valid by the caller.
                unsafe { *(psize as *mut u64) = st.size };
            }
            if pmtime != 0 {
                // SAFETY: as above.
                unsafe {
                    *(pmtime as *mut libc::time_t) = (st.mtime_ns / 1_000_000_000) as libc::time_t
                };
            }
            0
        })
    })
}

/// Asynchronous xattr set.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_setxattr(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    name: *const c_char,
    buf: *const c_char,
    len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle, C strings and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let obj = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(name) }?;
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        submit(io, obj, c, vec![Op::SetXattr(key.to_string(), data)], None)
    })
}

/// Asynchronous xattr removal (`-ENODATA` if unset).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_rmxattr(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    name: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let obj = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(name) }?;
        submit(io, obj, c, vec![Op::RmXattr(key.to_string())], None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writesame_repeats_and_checks_lengths() {
        assert_eq!(&same_data(b"ab", 6).expect("ok")[..], b"ababab");
        assert_eq!(
            same_data(b"ab", 5).expect_err("ragged").errno,
            Errno::EINVAL
        );
        assert_eq!(same_data(b"", 4).expect_err("empty").errno, Errno::EINVAL);
        assert_eq!(
            same_data(b"ab", MAX_LEN + 1).expect_err("big").errno,
            Errno::E2BIG
        );
    }

    #[test]
    fn cmpext_names_the_first_difference() {
        assert_eq!(cmpext_result(b"abc", b"abc"), 0);
        assert_eq!(cmpext_result(b"abc", b"abd"), -MAX_ERRNO - 2);
        // Past the object's end the bytes read as zeros.
        assert_eq!(cmpext_result(b"ab\0\0", b"ab"), 0);
        assert_eq!(cmpext_result(b"ab\0x", b"ab"), -MAX_ERRNO - 3);
    }
}
