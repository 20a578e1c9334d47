//! The librados watch/notify C exports (`rados_watch2/3`, `rados_aio_watch`,
//! `rados_unwatch2`, `rados_watch_check`, `rados_watch_flush`,
//! `rados_notify2`, `rados_aio_notify`, `rados_notify_ack`,
//! `rados_decode_notify_response`, `rados_free_notify_response`) on the
//! object layer's watch-notify (`quarry_rados::Rados::watch_with`, `notify`,
//! `notify_ack`).
//!
//! Watch callbacks run on one dedicated thread (`quarry-watch`), never on
//! the runtime nor on the aio completion thread: a callback may block and
//! call back into the library (`rados_notify_ack` is the usual reply).
//! `rados_watch_flush` waits until every callback queued before it ran.
//!
//! The notify reply buffer has the layout librados.h documents: le32 count
//! of acks, each (le64 gid, le64 cookie, le32 len, payload), then le32
//! count of timeouts, each (le64 gid, le64 cookie). A notify some watcher
//! did not answer in time returns `-ETIMEDOUT` with the buffer still set.
//!
//! # Safety
//! As the other exports: handles and buffers per librados.h's contracts.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{NotifyEvent, NotifyResult, ObjectId, WatchCallback, WatchEvent};

use crate::cluster::{lock, IoCtx};
use crate::completion::Completion;
use crate::engine::{CError, CResult};
use crate::ffi_rados::{cluster, ioctx, IoCtxT, RadosT};
use crate::rt;
use crate::util::{guard, int, nonnull, req_str};

/// `rados_watchcb2_t`.
pub type WatchCb2 = unsafe extern "C" fn(
    arg: *mut c_void,
    notify_id: u64,
    handle: u64,
    notifier_id: u64,
    data: *mut c_void,
    data_len: usize,
);
/// `rados_watcherrcb_t`: called with `-ENOTCONN` after a watch's
/// registration was lost and made again (notifications in between were
/// missed) or when the watched object was removed (librados reports both
/// alike), `-ESHUTDOWN` (Ceph's `-EBLOCKLISTED`) when this client was
/// blocklisted and the watch is gone.
pub type WatchErrCb = unsafe extern "C" fn(pre: *mut c_void, cookie: u64, err: c_int);

/// `struct notify_ack_t` (rados_types.h).
#[repr(C)]
pub struct NotifyAckT {
    /// Global id of the acking client.
    pub notifier_id: u64,
    /// Its watch cookie.
    pub cookie: u64,
    /// Its payload (malloc'd, NUL-terminated copy; NULL if empty).
    pub payload: *mut c_char,
    /// Payload length.
    pub payload_len: u64,
}

/// `struct notify_timeout_t` (rados_types.h).
#[repr(C)]
pub struct NotifyTimeoutT {
    /// Global id of the client that did not answer.
    pub notifier_id: u64,
    /// Its watch cookie.
    pub cookie: u64,
}

/// librados' `client_notify_timeout` default, used for `timeout_ms == 0`.
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest payload a C caller may pass (the object layer's bound).
const PAYLOAD_MAX: usize = quarry_rados::NOTIFY_PAYLOAD_MAX;

type Job = Box<dyn FnOnce() + Send + 'static>;

thread_local! {
    static ON_WATCH_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn watch_sender() -> &'static Mutex<mpsc::Sender<Job>> {
    static TX: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("quarry-watch".into())
            .spawn(move || {
                ON_WATCH_THREAD.with(|f| f.set(true));
                while let Ok(job) = rx.recv() {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = spawned {
            eprintln!("quarry: cannot start the watch callback thread: {e}");
            std::process::abort();
        }
        Mutex::new(tx)
    })
}

fn run_watch_job(job: Job) {
    let tx = match watch_sender().lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let _ = tx.send(job);
}

/// The caller's callbacks and their argument, moved to the watch thread.
#[derive(Clone, Copy)]
struct UserCb {
    cb: WatchCb2,
    errcb: Option<WatchErrCb>,
    arg: *mut c_void,
}
// SAFETY: librados' contract: the callback and its argument may be used
// from the library's threads until the watch is removed and flushed.
unsafe impl Send for UserCb {}
// SAFETY: as above; the pair is only read.
unsafe impl Sync for UserCb {}

impl UserCb {
    /// Call the caller's error callback, if any, with its own argument.
    ///
    /// # Safety
    /// librados' contract: callback and argument valid until unwatch+flush.
    unsafe fn call_err(self, cookie: u64, err: c_int) {
        if let Some(errcb) = self.errcb {
            // SAFETY: as above.
            unsafe { errcb(self.arg, cookie, err) }
        }
    }

    /// Call the caller's callback with its own argument.
    ///
    /// # Safety
    /// `data` valid for `len` bytes (or NULL with 0) during the call.
    unsafe fn call(self, ev: &NotifyEvent, data: *mut c_void, len: usize) {
        // SAFETY: librados' contract for a registered watch callback.
        unsafe { (self.cb)(self.arg, ev.notify_id, ev.cookie, ev.notifier, data, len) }
    }
}

fn callback(user: UserCb) -> WatchCallback {
    std::sync::Arc::new(move |ev: WatchEvent| {
        let ev = match ev {
            WatchEvent::Notify(ev) => ev,
            WatchEvent::Error(e) => {
                if user.errcb.is_some() {
                    // As librados' Objecter: a removed object reads as a
                    // lost connection, so a deletion and a re-registration
                    // that raced it look the same to the caller.
                    let errno = if e.errno == Errno::ENOENT {
                        Errno::ENOTCONN
                    } else {
                        e.errno
                    };
                    let (cookie, err) = (e.cookie, errno.negated());
                    // SAFETY: librados' contract for a registered watch
                    // error callback.
                    run_watch_job(Box::new(move || unsafe { user.call_err(cookie, err) }));
                }
                return;
            }
        };
        run_watch_job(Box::new(move || {
            let mut data = ev.payload.to_vec();
            let ptr = if data.is_empty() {
                std::ptr::null_mut()
            } else {
                data.as_mut_ptr().cast::<c_void>()
            };
            // SAFETY: `data` lives for the call (librados: valid during
            // the callback only).
            unsafe { user.call(&ev, ptr, data.len()) };
        }))
    })
}

fn oid(io: &IoCtx, name: &str) -> ObjectId {
    ObjectId::with_namespace(io.pool, lock(&io.namespace).clone(), name)
}

/// # Safety
/// `buf` valid for `len` bytes if `len > 0`.
unsafe fn payload(buf: *const c_char, len: c_int) -> CResult<Bytes> {
    if len < 0 {
        return Err(CError::new(Errno::EINVAL, "negative buffer length"));
    }
    let len = len as usize;
    if len > PAYLOAD_MAX {
        return Err(CError::new(
            Errno::EINVAL,
            format!("payload of {len} bytes exceeds {PAYLOAD_MAX}"),
        ));
    }
    if len == 0 {
        return Ok(Bytes::new());
    }
    nonnull(buf)?;
    // SAFETY: buf valid for len bytes per the caller.
    Ok(Bytes::copy_from_slice(unsafe {
        std::slice::from_raw_parts(buf.cast::<u8>(), len)
    }))
}

/// Encode a notify result as librados.h documents the reply buffer.
pub fn encode_reply(r: &NotifyResult) -> Vec<u8> {
    let mut b = Vec::with_capacity(
        8 + r.acks.iter().map(|a| 20 + a.payload.len()).sum::<usize>() + 16 * r.timeouts.len(),
    );
    b.extend_from_slice(&(r.acks.len() as u32).to_le_bytes());
    for a in &r.acks {
        b.extend_from_slice(&a.client.to_le_bytes());
        b.extend_from_slice(&a.cookie.to_le_bytes());
        b.extend_from_slice(&(a.payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&a.payload);
    }
    b.extend_from_slice(&(r.timeouts.len() as u32).to_le_bytes());
    for t in &r.timeouts {
        b.extend_from_slice(&t.client.to_le_bytes());
        b.extend_from_slice(&t.cookie.to_le_bytes());
    }
    b
}

/// Decoded reply: acks (gid, cookie, payload) and timeouts (gid, cookie).
type Decoded = (Vec<(u64, u64, Vec<u8>)>, Vec<(u64, u64)>);

/// Decode a reply buffer; `EINVAL` if truncated or with trailing bytes.
pub fn decode_reply(b: &[u8]) -> CResult<Decoded> {
    let bad = || CError::new(Errno::EINVAL, "malformed notify reply buffer");
    let mut pos = 0usize;
    let mut take = |n: usize| -> CResult<&[u8]> {
        let end = pos.checked_add(n).ok_or_else(bad)?;
        let s = b.get(pos..end).ok_or_else(bad)?;
        pos = end;
        Ok(s)
    };
    let u32_ = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
    let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    let n = u32_(take(4)?) as usize;
    let mut acks = Vec::with_capacity(n.min(b.len() / 20));
    for _ in 0..n {
        let gid = u64_(take(8)?);
        let cookie = u64_(take(8)?);
        let len = u32_(take(4)?) as usize;
        acks.push((gid, cookie, take(len)?.to_vec()));
    }
    let n = u32_(take(4)?) as usize;
    let mut timeouts = Vec::with_capacity(n.min(b.len() / 16));
    for _ in 0..n {
        let gid = u64_(take(8)?);
        let cookie = u64_(take(8)?);
        timeouts.push((gid, cookie));
    }
    if pos != b.len() {
        return Err(bad());
    }
    Ok((acks, timeouts))
}

use crate::util::malloc_copy;

fn watch_common(
    io: IoCtxT,
    o: *const c_char,
    cookie: *mut u64,
    cb: Option<WatchCb2>,
    errcb: Option<WatchErrCb>,
    arg: *mut c_void,
) -> CResult<i32> {
    // SAFETY: handle and C string from the caller.
    let io = unsafe { ioctx(io) }?;
    // SAFETY: as above.
    let name = unsafe { req_str(o) }?;
    nonnull(cookie)?;
    let cb = cb.ok_or_else(|| CError::new(Errno::EINVAL, "NULL watch callback"))?;
    let user = UserCb { cb, errcb, arg };
    let (rados, oid) = (io.conn.rados.clone(), oid(io, name));
    let o2 = oid.clone();
    let c = rt::block_on(async move { rados.watch_with(&o2, callback(user)).await })?;
    lock(&io.conn.watches).insert(c, oid);
    // SAFETY: cookie non-null caller storage.
    unsafe { *cookie = c };
    Ok(0)
}

/// Register a watch on an object; notifications go to `watchcb`.
#[no_mangle]
pub unsafe extern "C" fn rados_watch2(
    io: IoCtxT,
    o: *const c_char,
    cookie: *mut u64,
    watchcb: Option<WatchCb2>,
    watcherrcb: Option<WatchErrCb>,
    arg: *mut c_void,
) -> c_int {
    int(|| watch_common(io, o, cookie, watchcb, watcherrcb, arg))
}

/// [`rados_watch2`] with a timeout (the watch lives with the client's
/// connection, so the timeout is accepted and not needed).
#[no_mangle]
pub unsafe extern "C" fn rados_watch3(
    io: IoCtxT,
    o: *const c_char,
    cookie: *mut u64,
    watchcb: Option<WatchCb2>,
    watcherrcb: Option<WatchErrCb>,
    _timeout: u32,
    arg: *mut c_void,
) -> c_int {
    int(|| watch_common(io, o, cookie, watchcb, watcherrcb, arg))
}

/// Asynchronous [`rados_watch2`]: `*handle` is set before the completion
/// fires (the caller keeps it valid until then).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_watch(
    io: IoCtxT,
    o: *const c_char,
    completion: *mut c_void,
    handle: *mut u64,
    watchcb: Option<WatchCb2>,
    watcherrcb: Option<WatchErrCb>,
    arg: *mut c_void,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        nonnull(handle)?;
        nonnull(completion)?;
        let cb = watchcb.ok_or_else(|| CError::new(Errno::EINVAL, "NULL watch callback"))?;
        let user = UserCb {
            cb,
            errcb: watcherrcb,
            arg,
        };
        // SAFETY: live completion handle from the caller.
        let comp = unsafe { Completion::from_handle(completion) };
        let (rados, oid) = (io.conn.rados.clone(), oid(io, name));
        let out = SendPtr(handle);
        let guard_comp = comp.clone();
        let conn = io.conn.clone();
        rt::spawn_guarded(
            async move {
                let ret = match rados.watch_with(&oid, callback(user)).await {
                    Ok(c) => {
                        lock(&conn.watches).insert(c, oid);
                        // SAFETY: the caller keeps *handle valid until completion.
                        unsafe { *out.get() = c };
                        0
                    }
                    Err(e) => e.errno.negated() as i64,
                };
                comp.finish(ret, None);
            },
            move || guard_comp.finish(-5, None),
        );
        Ok(0)
    })
}

/// A raw out-pointer moved into a task (the caller keeps it valid).
struct SendPtr<T>(*mut T);
// SAFETY: the pointee is caller storage that librados' contract keeps
// valid and unused by the caller until the completion fires.
unsafe impl<T> Send for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// Whether watch `cookie` is still registered: 0 (librados returns the
/// milliseconds since it was last confirmed; Quarry confirms it now), or
/// `-ENOTCONN` if the cluster no longer has it (connection lost,
/// blocklisted), or another -errno.
#[no_mangle]
pub unsafe extern "C" fn rados_watch_check(io: IoCtxT, cookie: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        let Some(name) = lock(&io.conn.watches).get(&cookie).cloned() else {
            return Err(CError::new(Errno::ENOTCONN, format!("no watch {cookie}")));
        };
        let rados = io.conn.rados.clone();
        let me = rados.instance_id();
        let list = rt::block_on(async move { rados.list_watchers(&name).await })?;
        if list.iter().any(|w| w.client == me && w.cookie == cookie) {
            Ok(0)
        } else {
            Err(CError::new(
                Errno::ENOTCONN,
                format!("watch {cookie} is gone"),
            ))
        }
    })
}

/// Remove a watch. Callbacks already queued may still run: call
/// [`rados_watch_flush`] before freeing their argument.
#[no_mangle]
pub unsafe extern "C" fn rados_unwatch2(io: IoCtxT, cookie: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        let Some(name) = lock(&io.conn.watches).remove(&cookie) else {
            return Err(CError::new(Errno::ENOENT, format!("no watch {cookie}")));
        };
        let rados = io.conn.rados.clone();
        rt::block_on(async move { rados.unwatch(&name, cookie).await })?;
        Ok(0)
    })
}

/// Wait until every watch callback queued so far has returned.
#[no_mangle]
pub unsafe extern "C" fn rados_watch_flush(c: RadosT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        unsafe { cluster(c) }?;
        if ON_WATCH_THREAD.with(|f| f.get()) {
            // From inside a callback: everything before it already ran.
            return Ok(0);
        }
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        run_watch_job(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.recv_timeout(Duration::from_secs(300))
            .map_err(|_| CError::new(Errno::ETIMEDOUT, "watch callbacks did not finish"))?;
        Ok(0)
    })
}

/// Blocklist (fence) a client address, `ip[:port][/nonce]`, for
/// `expire_seconds` (0: the monitor's default, one hour). `-EOPNOTSUPP`
/// on the embedded backend.
#[no_mangle]
pub unsafe extern "C" fn rados_blocklist_add(
    c: RadosT,
    client_address: *mut c_char,
    expire_seconds: u32,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let conn = unsafe { cluster(c) }?.connection()?;
        // SAFETY: as above.
        let addr = unsafe { req_str(client_address) }?.to_string();
        let expire = Duration::from_secs(if expire_seconds == 0 {
            3600
        } else {
            u64::from(expire_seconds)
        });
        let rados = conn.rados.clone();
        rt::block_on(async move { rados.blocklist_add(&addr, expire).await })?;
        Ok(0)
    })
}

fn notify_timeout(ms: u64) -> Duration {
    if ms == 0 {
        DEFAULT_NOTIFY_TIMEOUT
    } else {
        Duration::from_millis(ms)
    }
}

/// Store the reply buffer (if asked) and return 0 or -ETIMEDOUT.
///
/// # Safety
/// The out-pointers are NULL or valid caller storage.
unsafe fn finish_notify(r: &NotifyResult, reply: *mut *mut c_char, reply_len: *mut usize) -> i64 {
    if !reply.is_null() {
        let b = encode_reply(r);
        // SAFETY: non-null caller storage.
        unsafe {
            *reply = malloc_copy(&b);
            if !reply_len.is_null() {
                *reply_len = b.len();
            }
        }
    }
    if r.timeouts.is_empty() {
        0
    } else {
        Errno::ETIMEDOUT.negated() as i64
    }
}

/// Notify every watcher of an object and wait for their acks (or the
/// timeout); see the module doc for the reply buffer.
#[no_mangle]
pub unsafe extern "C" fn rados_notify2(
    io: IoCtxT,
    o: *const c_char,
    buf: *const c_char,
    buf_len: c_int,
    timeout_ms: u64,
    reply_buffer: *mut *mut c_char,
    reply_buffer_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { payload(buf, buf_len) }?;
        let (rados, oid) = (io.conn.rados.clone(), oid(io, name));
        let t = notify_timeout(timeout_ms);
        let r = rt::block_on(async move { rados.notify(&oid, data, t).await })?;
        // SAFETY: out-pointers from the caller.
        Ok(unsafe { finish_notify(&r, reply_buffer, reply_buffer_len) } as i32)
    })
}

/// Asynchronous [`rados_notify2`]: the reply buffer is set before the
/// completion fires; its return value is 0, -ETIMEDOUT or another -errno.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_notify(
    io: IoCtxT,
    o: *const c_char,
    completion: *mut c_void,
    buf: *const c_char,
    buf_len: c_int,
    timeout_ms: u64,
    reply_buffer: *mut *mut c_char,
    reply_buffer_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { payload(buf, buf_len) }?;
        nonnull(completion)?;
        // SAFETY: live completion handle from the caller.
        let comp = unsafe { Completion::from_handle(completion) };
        let (rados, oid) = (io.conn.rados.clone(), oid(io, name));
        let t = notify_timeout(timeout_ms);
        let (rb, rl) = (SendPtr(reply_buffer), SendPtr(reply_buffer_len));
        let guard_comp = comp.clone();
        rt::spawn_guarded(
            async move {
                let ret = match rados.notify(&oid, data, t).await {
                    // SAFETY: the caller keeps the out-pointers valid until
                    // the completion fires.
                    Ok(r) => unsafe { finish_notify(&r, rb.get(), rl.get()) },
                    Err(e) => e.errno.negated() as i64,
                };
                comp.finish(ret, None);
            },
            move || guard_comp.finish(-5, None),
        );
        Ok(0)
    })
}

/// Answer notification `notify_id` delivered to watch `cookie`, with an
/// optional payload the notifier sees in its reply buffer.
#[no_mangle]
pub unsafe extern "C" fn rados_notify_ack(
    io: IoCtxT,
    o: *const c_char,
    notify_id: u64,
    cookie: u64,
    buf: *const c_char,
    buf_len: c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { payload(buf, buf_len) }?;
        let (rados, oid) = (io.conn.rados.clone(), oid(io, name));
        rt::block_on(async move { rados.notify_ack(&oid, notify_id, cookie, data).await })?;
        Ok(0)
    })
}

/// Decode a notify reply buffer into arrays (free them with
/// [`rados_free_notify_response`]). `-EINVAL` for a malformed buffer.
#[no_mangle]
pub unsafe extern "C" fn rados_decode_notify_response(
    reply_buffer: *mut c_char,
    reply_buffer_len: usize,
    acks: *mut *mut NotifyAckT,
    nr_acks: *mut usize,
    timeouts: *mut *mut NotifyTimeoutT,
    nr_timeouts: *mut usize,
) -> c_int {
    int(|| {
        nonnull(reply_buffer)?;
        nonnull(acks)?;
        nonnull(nr_acks)?;
        nonnull(timeouts)?;
        nonnull(nr_timeouts)?;
        // SAFETY: buffer valid for its length per the caller.
        let b = unsafe { std::slice::from_raw_parts(reply_buffer.cast::<u8>(), reply_buffer_len) };
        let (a, t) = decode_reply(b)?;
        // SAFETY: malloc'd arrays sized for the elements written below.
        unsafe {
            let ap = libc::malloc(std::mem::size_of::<NotifyAckT>() * a.len().max(1))
                .cast::<NotifyAckT>();
            let tp = libc::malloc(std::mem::size_of::<NotifyTimeoutT>() * t.len().max(1))
                .cast::<NotifyTimeoutT>();
            if ap.is_null() || tp.is_null() {
                libc::free(ap.cast());
                libc::free(tp.cast());
                return Err(CError::new(Errno::ENOMEM, "decoding a notify reply"));
            }
            for (i, (gid, cookie, p)) in a.iter().enumerate() {
                let payload = if p.is_empty() {
                    std::ptr::null_mut()
                } else {
                    let mut z = p.clone();
                    z.push(0);
                    malloc_copy(&z)
                };
                ap.add(i).write(NotifyAckT {
                    notifier_id: *gid,
                    cookie: *cookie,
                    payload,
                    payload_len: p.len() as u64,
                });
            }
            for (i, (gid, cookie)) in t.iter().enumerate() {
                tp.add(i).write(NotifyTimeoutT {
                    notifier_id: *gid,
                    cookie: *cookie,
                });
            }
            *acks = ap;
            *nr_acks = a.len();
            *timeouts = tp;
            *nr_timeouts = t.len();
        }
        Ok(0)
    })
}

/// Free what [`rados_decode_notify_response`] allocated.
#[no_mangle]
pub unsafe extern "C" fn rados_free_notify_response(
    acks: *mut NotifyAckT,
    nr_acks: usize,
    timeouts: *mut NotifyTimeoutT,
) {
    guard((), || {
        // SAFETY: arrays from rados_decode_notify_response, not freed before.
        unsafe {
            if !acks.is_null() {
                for i in 0..nr_acks {
                    libc::free((*acks.add(i)).payload.cast());
                }
                libc::free(acks.cast());
            }
            libc::free(timeouts.cast());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_rados::{NotifyAck, Watcher};

    #[test]
    fn reply_buffer_round_trip_and_bad_input() {
        let r = NotifyResult {
            acks: vec![
                NotifyAck {
                    client: 4123,
                    cookie: 7,
                    payload: Bytes::from_static(b"pong"),
                },
                NotifyAck {
                    client: 4124,
                    cookie: 1,
                    payload: Bytes::new(),
                },
            ],
            timeouts: vec![Watcher {
                client: 4200,
                cookie: 3,
                addr: String::new(),
            }],
        };
        let b = encode_reply(&r);
        assert_eq!(&b[..4], &2u32.to_le_bytes());
        assert_eq!(&b[4..12], &4123u64.to_le_bytes());
        assert_eq!(&b[20..24], &4u32.to_le_bytes());
        assert_eq!(&b[24..28], b"pong");
        let (a, t) = decode_reply(&b).expect("decode");
        assert_eq!(a, vec![(4123, 7, b"pong".to_vec()), (4124, 1, Vec::new())]);
        assert_eq!(t, vec![(4200, 3)]);
        for cut in 0..b.len() {
            assert!(decode_reply(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(decode_reply(&long).is_err());
        assert!(decode_reply(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
