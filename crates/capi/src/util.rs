//! Small helpers shared by the exports: panic guards, C strings, errno.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use quarry_common::Errno;

use crate::engine::CError;

/// `-EIO`, what an export returns if Quarry panicked inside it.
pub const NEG_EIO: i32 = -5;
/// `-EINVAL`.
pub const NEG_EINVAL: i32 = -22;
/// `-EOPNOTSUPP` (Linux: same value as ENOTSUP).
pub const NEG_ENOTSUP: i32 = -95;

/// Run `f`, turning a panic into `on_panic` (never unwind into C).
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("quarry: internal error (panic) in the client library");
            on_panic
        }
    }
}

/// Run an int-returning body: `Ok(v)` → v, `Err(e)` → `-errno`, panic → -EIO.
pub fn int(f: impl FnOnce() -> Result<i32, CError>) -> i32 {
    guard(NEG_EIO, || match f() {
        Ok(v) => v,
        Err(e) => fail(e),
    })
}

/// Same for `ssize_t` returns.
pub fn ssize(f: impl FnOnce() -> Result<isize, CError>) -> isize {
    guard(NEG_EIO as isize, || match f() {
        Ok(v) => v,
        Err(e) => fail(e) as isize,
    })
}

/// Log an error's message (if any, and if `QUARRY_DEBUG` is set) and
/// return `-errno`.
pub fn fail(e: CError) -> i32 {
    if !e.msg.is_empty() && std::env::var_os("QUARRY_DEBUG").is_some() {
        eprintln!("quarry: {}: {}", e.msg, e.errno.description());
    }
    e.errno.negated()
}

/// Borrow a C string as UTF-8; NULL → `None`; invalid UTF-8 → EINVAL.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string live for `'a`.
pub unsafe fn opt_str<'a>(p: *const c_char) -> Result<Option<&'a str>, CError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|_| CError::new(Errno::EINVAL, "string is not UTF-8"))
}

/// Like [`opt_str`] but NULL is EINVAL.
///
/// # Safety
/// As [`opt_str`].
pub unsafe fn req_str<'a>(p: *const c_char) -> Result<&'a str, CError> {
    // SAFETY: forwarded contract.
    unsafe { opt_str(p) }?.ok_or_else(|| CError::new(Errno::EINVAL, "NULL string argument"))
}

/// Copy `s` NUL-terminated into `buf` of `len` bytes; `ERANGE` if it does
/// not fit. A NULL buffer with `len == 0` is tolerated (nothing written).
///
/// # Safety
/// `buf` must be NULL or valid for `len` bytes of writes.
pub unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize) -> Result<(), CError> {
    if buf.is_null() {
        return if len == 0 {
            Ok(())
        } else {
            Err(Errno::EINVAL.into())
        };
    }
    if s.len() + 1 > len {
        return Err(Errno::ERANGE.into());
    }
    // SAFETY: buf has room for s.len()+1 bytes (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    Ok(())
}

/// Copy `s` NUL-terminated into `buf`, whose capacity `*len` says; the
/// length needed (NUL included) is written back to `*len` either way, and
/// `ERANGE` returned if it did not fit (librbd's string-with-length form).
///
/// # Safety
/// `len` valid; `buf` NULL or valid for `*len` bytes.
pub unsafe fn copy_out_len(s: &str, buf: *mut c_char, len: *mut usize) -> Result<(), CError> {
    nonnull(len)?;
    // SAFETY: non-null, per the caller.
    let have = unsafe { *len };
    // SAFETY: as above.
    unsafe { *len = s.len() + 1 };
    if have < s.len() + 1 {
        return Err(Errno::ERANGE.into());
    }
    // SAFETY: buf valid for have bytes, per the caller.
    unsafe { copy_out(s, buf, have) }
}

/// `strdup` into libc's heap (freed by the C side or our `*_cleanup`).
pub fn c_strdup(s: &str) -> *mut c_char {
    let clean: String = s.chars().filter(|&c| c != '\0').collect();
    // SAFETY: malloc of len+1 bytes, then a bounded copy and terminator.
    unsafe {
        let p = libc::malloc(clean.len() + 1).cast::<c_char>();
        if p.is_null() {
            return p;
        }
        std::ptr::copy_nonoverlapping(clean.as_ptr(), p.cast::<u8>(), clean.len());
        *p.add(clean.len()) = 0;
        p
    }
}

/// Copy `bytes` into libc's heap (freed with `rados_buffer_free`).
pub fn malloc_copy(bytes: &[u8]) -> *mut c_char {
    // SAFETY: malloc of at least one byte, then a bounded copy.
    unsafe {
        let p = libc::malloc(bytes.len().max(1)).cast::<c_char>();
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), bytes.len());
        }
        p
    }
}

/// `free` a pointer from [`c_strdup`] (NULL is fine).
///
/// # Safety
/// `p` must be NULL or from libc's malloc, not freed before.
pub unsafe fn c_free(p: *mut c_char) {
    // SAFETY: per the caller's contract.
    unsafe { libc::free(p.cast()) }
}

/// Write `names` NUL-separated into `buf` (room for `*size` bytes), as
/// librbd's name lists: `*size` is set to the bytes needed, `-ERANGE` when
/// short (or `buf` is NULL). Returns the bytes used.
///
/// # Safety
/// `size` must be NULL or valid; `buf` NULL or `*size` writable bytes.
pub unsafe fn names_out<'a>(
    names: impl IntoIterator<Item = &'a str>,
    buf: *mut c_char,
    size: *mut usize,
) -> Result<usize, CError> {
    nonnull(size)?;
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    // SAFETY: non-null, per the caller's contract.
    let have = unsafe { *size };
    // SAFETY: as above.
    unsafe { *size = out.len() };
    if have < out.len() || (buf.is_null() && !out.is_empty()) {
        return Err(Errno::ERANGE.into());
    }
    if !out.is_empty() {
        // SAFETY: buf has have >= out.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), buf.cast::<u8>(), out.len()) };
    }
    Ok(out.len())
}

/// Fill the C array `out` (room for `*count` entries) with `f` of each
/// item, as librbd's struct lists: `*count` is set to the entries needed,
/// `-ERANGE` when short (or `out` is NULL).
///
/// # Safety
/// `count` must be NULL or valid; `out` NULL or `*count` writable entries.
pub unsafe fn array_out<E, T>(
    items: &[E],
    out: *mut T,
    count: *mut usize,
    f: impl Fn(&E) -> T,
) -> Result<(), CError> {
    nonnull(count)?;
    // SAFETY: non-null, per the caller's contract.
    let have = unsafe { *count };
    // SAFETY: as above.
    unsafe { *count = items.len() };
    if have < items.len() || (out.is_null() && !items.is_empty()) {
        return Err(Errno::ERANGE.into());
    }
    for (i, e) in items.iter().enumerate() {
        // SAFETY: i < have slots.
        unsafe { out.add(i).write(f(e)) };
    }
    Ok(())
}

/// Check an out-pointer, EINVAL if NULL.
pub fn nonnull<T>(p: *const T) -> Result<(), CError> {
    if p.is_null() {
        Err(CError::new(Errno::EINVAL, "NULL pointer argument"))
    } else {
        Ok(())
    }
}

/// The result of a `*_with_progress` call: on success the user's progress
/// callback is called once, at the end (the work is not reported per step).
///
/// # Safety
/// `cb`, if set, must be callable with `cbdata` (the C caller's contract).
pub unsafe fn progress_done(
    r: c_int,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    if r == 0 {
        if let Some(cb) = cb {
            // SAFETY: the user's callback with the user's data, as the
            // caller's contract says.
            unsafe { cb(1, 1, cbdata) };
        }
    }
    r
}
