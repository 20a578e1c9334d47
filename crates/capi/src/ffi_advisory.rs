//! Advisory locks: librados' object locks (`rados_lock_exclusive`,
//! `rados_lock_shared`, `rados_unlock`, `rados_break_lock`,
//! `rados_list_lockers`, on `quarry_rados::objlock`) and librbd's image
//! locks (`rbd_lock_exclusive`, `rbd_lock_shared`, `rbd_unlock`,
//! `rbd_break_lock`, `rbd_list_lockers`, on `quarry-rbd`'s `advisory`
//! module). python3-rados' `Ioctx.lock_*`/`unlock` and python3-rbd's
//! `Image.lock_*`/`unlock`/`break_lock`/`list_lockers` call these.
//!
//! # Safety
//! Every export has the contract of its declaration in Ceph's
//! `librados.h`/`librbd.h`: handles are live; strings NUL-terminated; out
//! pointers valid for the lengths given. NULL where a value is required is
//! refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};
use std::time::Duration;

use quarry_common::Errno;
use quarry_rados::objlock::{self, LockRequest, FLAG_MAY_RENEW, FLAG_MUST_RENEW};
use quarry_rados::ObjectId;

use crate::engine::{CError, CResult};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::ffi_rbd::{img_of, ImageT};
use crate::rt;
use crate::util::{copy_out, int, nonnull, opt_str, req_str, ssize};

/// `struct timeval` of `<sys/time.h>`.
#[repr(C)]
pub struct Timeval {
    tv_sec: libc::time_t,
    tv_usec: libc::suseconds_t,
}

/// A lock's duration: NULL or zero is "until unlocked".
unsafe fn duration_of(d: *const Timeval) -> CResult<Option<Duration>> {
    if d.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, per the caller.
    let tv = unsafe { &*d };
    if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
        return Err(CError::new(
            Errno::EINVAL,
            format!("invalid lock duration {}s {}us", tv.tv_sec, tv.tv_usec),
        ));
    }
    Ok(Some(
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64),
    ))
}

/// Write the holders of a lock in librados' form (type, tag, and three
/// NUL-separated lists with their lengths); the number of holders, or
/// `ERANGE` with every length set to what is needed.
#[allow(clippy::too_many_arguments)]
unsafe fn fill_lockers(
    exclusive_out: *mut c_int,
    tag_out: *mut c_char,
    tag_len: *mut usize,
    clients: *mut c_char,
    clients_len: *mut usize,
    cookies: *mut c_char,
    cookies_len: *mut usize,
    addrs: *mut c_char,
    addrs_len: *mut usize,
    (exclusive, tag, holders): (bool, &str, &[(String, String, String)]),
) -> CResult<isize> {
    for p in [tag_len, clients_len, cookies_len, addrs_len] {
        nonnull(p)?;
    }
    nonnull(exclusive_out)?;
    let joined = |f: fn(&(String, String, String)) -> &String| {
        let mut v = Vec::new();
        for h in holders {
            v.extend_from_slice(f(h).as_bytes());
            v.push(0);
        }
        v
    };
    let lists = [
        (joined(|h| &h.0), clients, clients_len),
        (joined(|h| &h.1), cookies, cookies_len),
        (joined(|h| &h.2), addrs, addrs_len),
    ];
    // SAFETY: the length pointers are non-null (checked), per the caller.
    let too_short = unsafe {
        let mut short = *tag_len < tag.len() + 1;
        *tag_len = tag.len() + 1;
        for (v, _, len) in &lists {
            short |= **len < v.len();
            **len = v.len();
        }
        *exclusive_out = c_int::from(exclusive);
        short
    };
    if too_short {
        return Err(CError::new(Errno::ERANGE, "lock holder buffers too small"));
    }
    // SAFETY: tag_out holds *tag_len bytes (checked), per the caller.
    unsafe { copy_out(tag, tag_out, tag.len() + 1) }?;
    for (v, buf, _) in &lists {
        if v.is_empty() {
            continue;
        }
        nonnull(*buf)?;
        // SAFETY: buf holds at least v.len() bytes (checked above).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf.cast::<u8>(), v.len()) };
    }
    Ok(holders.len() as isize)
}

/// The object `o` in the ioctx's pool and namespace.
fn object(io: &crate::cluster::IoCtx, o: &str) -> ObjectId {
    let ns = io
        .namespace
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    ObjectId::with_namespace(io.pool, ns, o)
}

#[allow(clippy::too_many_arguments)]
unsafe fn rados_lock(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    cookie: *const c_char,
    tag: Option<*const c_char>,
    desc: *const c_char,
    duration: *const Timeval,
    flags: u8,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let (o, name, cookie) = unsafe { (req_str(o)?, req_str(name)?, req_str(cookie)?) };
        let exclusive = tag.is_none();
        let tag = match tag {
            // SAFETY: as above.
            Some(t) => unsafe { req_str(t) }?,
            None => "",
        };
        // SAFETY: as above.
        let desc = unsafe { opt_str(desc) }?.unwrap_or("");
        // SAFETY: NULL or a timeval, per the caller.
        let duration = unsafe { duration_of(duration) }?;
        if flags & !(FLAG_MAY_RENEW | FLAG_MUST_RENEW) != 0 {
            return Err(CError::new(
                Errno::EINVAL,
                format!("unknown lock flags {flags:#x}"),
            ));
        }
        let req = LockRequest {
            exclusive,
            cookie,
            tag,
            description: desc,
            duration,
            flags,
            create: true,
        };
        let oid = object(io, o);
        let rados = io.conn.rados.clone();
        rt::block_on(
            async move { objlock::lock(rados.as_ref(), &oid, name, &req, |_| Ok(())).await },
        )?;
        Ok(0)
    })
}

/// Take the exclusive lock `name` on object `o` under `cookie` (the
/// object is created if absent): -EBUSY if held, -EEXIST if this client
/// holds it under `cookie` (unless renewing).
#[no_mangle]
pub unsafe extern "C" fn rados_lock_exclusive(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    cookie: *const c_char,
    desc: *const c_char,
    duration: *const Timeval,
    flags: u8,
) -> c_int {
    // SAFETY: the caller's pointers, passed on.
    unsafe { rados_lock(io, o, name, cookie, None, desc, duration, flags) }
}

/// Take the shared lock `name` (with `tag`) on object `o` under `cookie`:
/// -EBUSY if held exclusively or with another tag.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rados_lock_shared(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    cookie: *const c_char,
    tag: *const c_char,
    desc: *const c_char,
    duration: *const Timeval,
    flags: u8,
) -> c_int {
    // SAFETY: the caller's pointers, passed on.
    unsafe { rados_lock(io, o, name, cookie, Some(tag), desc, duration, flags) }
}

/// Release this client's hold of lock `name` under `cookie` (-ENOENT if
/// it holds none).
#[no_mangle]
pub unsafe extern "C" fn rados_unlock(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    cookie: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let (o, name, cookie) = unsafe { (req_str(o)?, req_str(name)?, req_str(cookie)?) };
        let oid = object(io, o);
        let rados = io.conn.rados.clone();
        rt::block_on(async move {
            let me = objlock::entity_of(rados.as_ref());
            objlock::remove(rados.as_ref(), &oid, name, &me, cookie).await
        })?;
        Ok(0)
    })
}

/// Remove the hold of `client` (`client.<id>`) under `cookie` on lock
/// `name` (-ENOENT if there is none).
#[no_mangle]
pub unsafe extern "C" fn rados_break_lock(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    client: *const c_char,
    cookie: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let (o, name, client, cookie) = unsafe {
            (
                req_str(o)?,
                req_str(name)?,
                req_str(client)?,
                req_str(cookie)?,
            )
        };
        let oid = object(io, o);
        let rados = io.conn.rados.clone();
        rt::block_on(
            async move { objlock::remove(rados.as_ref(), &oid, name, client, cookie).await },
        )?;
        Ok(0)
    })
}

/// The holders of lock `name` on object `o`: their number (0 if unlocked
/// or the object is absent), or -ERANGE with the lengths needed.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rados_list_lockers(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    exclusive: *mut c_int,
    tag: *mut c_char,
    tag_len: *mut usize,
    clients: *mut c_char,
    clients_len: *mut usize,
    cookies: *mut c_char,
    cookies_len: *mut usize,
    addrs: *mut c_char,
    addrs_len: *mut usize,
) -> isize {
    ssize(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let (o, name) = unsafe { (req_str(o)?, req_str(name)?) };
        let oid = object(io, o);
        let rados = io.conn.rados.clone();
        let info = rt::block_on(async move { objlock::info(rados.as_ref(), &oid, name).await })?;
        let holders: Vec<_> = info
            .lockers
            .into_iter()
            .map(|l| (l.entity, l.cookie, l.addr))
            .collect();
        // SAFETY: the caller's out pointers, checked there.
        unsafe {
            fill_lockers(
                exclusive,
                tag,
                tag_len,
                clients,
                clients_len,
                cookies,
                cookies_len,
                addrs,
                addrs_len,
                (info.exclusive, &info.tag, &holders),
            )
        }
    })
}

/// Run an advisory-lock call on an image handle.
unsafe fn on_image<F, Fut>(image: ImageT, f: F) -> c_int
where
    F: FnOnce(std::sync::Arc<dyn crate::engine::ImageBackend>) -> Fut,
    Fut: std::future::Future<Output = CResult<()>> + Send + 'static,
{
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        rt::block_on(f(img.backend.clone()))?;
        Ok(0)
    })
}

/// Take the image's advisory lock exclusively under `cookie`: -EBUSY if
/// anyone holds a lock on the image (the exclusive-lock feature's too).
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_exclusive(image: ImageT, cookie: *const c_char) -> c_int {
    // SAFETY: C string from the caller.
    let cookie = match unsafe { req_str(cookie) } {
        Ok(c) => c.to_string(),
        Err(e) => return crate::util::fail(e),
    };
    // SAFETY: handle from the caller.
    unsafe {
        on_image(
            image,
            |b| async move { b.advisory_lock(&cookie, None).await },
        )
    }
}

/// Take the image's advisory lock shared with `tag` under `cookie`.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_shared(
    image: ImageT,
    cookie: *const c_char,
    tag: *const c_char,
) -> c_int {
    // SAFETY: C strings from the caller.
    let (cookie, tag) = match unsafe { (req_str(cookie), req_str(tag)) } {
        (Ok(c), Ok(t)) => (c.to_string(), t.to_string()),
        (Err(e), _) | (_, Err(e)) => return crate::util::fail(e),
    };
    // SAFETY: handle from the caller.
    unsafe {
        on_image(image, |b| async move {
            b.advisory_lock(&cookie, Some(&tag)).await
        })
    }
}

/// Release this client's advisory lock under `cookie` (-ENOENT if none).
#[no_mangle]
pub unsafe extern "C" fn rbd_unlock(image: ImageT, cookie: *const c_char) -> c_int {
    // SAFETY: C string from the caller.
    let cookie = match unsafe { req_str(cookie) } {
        Ok(c) => c.to_string(),
        Err(e) => return crate::util::fail(e),
    };
    // SAFETY: handle from the caller.
    unsafe { on_image(image, |b| async move { b.advisory_unlock(&cookie).await }) }
}

/// Break the lock `client` holds on the image under `cookie` (the
/// exclusive-lock feature's owner too, as `rbd_list_lockers` shows it).
#[no_mangle]
pub unsafe extern "C" fn rbd_break_lock(
    image: ImageT,
    client: *const c_char,
    cookie: *const c_char,
) -> c_int {
    // SAFETY: C strings from the caller.
    let (client, cookie) = match unsafe { (req_str(client), req_str(cookie)) } {
        (Ok(c), Ok(k)) => (c.to_string(), k.to_string()),
        (Err(e), _) | (_, Err(e)) => return crate::util::fail(e),
    };
    // SAFETY: handle from the caller.
    unsafe {
        on_image(
            image,
            |b| async move { b.break_lock(&client, &cookie).await },
        )
    }
}

/// The image's lock holders: their number, or -ERANGE with the lengths
/// needed (librbd's form).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rbd_list_lockers(
    image: ImageT,
    exclusive: *mut c_int,
    tag: *mut c_char,
    tag_len: *mut usize,
    clients: *mut c_char,
    clients_len: *mut usize,
    cookies: *mut c_char,
    cookies_len: *mut usize,
    addrs: *mut c_char,
    addrs_len: *mut usize,
) -> isize {
    ssize(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let b = img.backend.clone();
        let locks = rt::block_on(async move { b.list_lockers().await })?;
        let holders: Vec<_> = locks
            .lockers
            .into_iter()
            .map(|l| (l.client, l.cookie, l.addr))
            .collect();
        // SAFETY: the caller's out pointers, checked there.
        unsafe {
            fill_lockers(
                exclusive,
                tag,
                tag_len,
                clients,
                clients_len,
                cookies,
                cookies_len,
                addrs,
                addrs_len,
                (locks.exclusive, &locks.tag, &holders),
            )
        }
    })
}
