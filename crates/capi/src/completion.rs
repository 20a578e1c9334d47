//! AIO completions (`rbd_completion_t`, `rados_completion_t`).
//!
//! A completion is an `Arc`; the handle given to C is one strong count,
//! dropped by `*_aio_release`. Each in-flight operation holds another, so
//! releasing inside the callback (QEMU does) is safe. Completion order, as
//! librbd: set the return value and "complete" → user callback → push to
//! the image's poll queue and signal its eventfd → "done" (what
//! `*_aio_wait_for_complete` waits for). All of it runs one completion at a
//! time, on the I/O thread that finished the operation or on the callback
//! thread (`rt::run_completion`), never on the submitting thread.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::rt;

/// C callback: `void (*)(completion, arg)`.
pub type Callback = unsafe extern "C" fn(*mut c_void, *mut c_void);

#[derive(Default)]
struct State {
    ret: i64,
    complete: bool,
    done: bool,
    /// Threads blocked in [`Completion::wait`]: the condvar is signalled
    /// only when there is one (a wake-up is a futex syscall even with no
    /// waiter, and almost no caller waits).
    waiters: u32,
}

/// One completion.
pub struct Completion {
    arg: usize,
    cb_complete: Option<Callback>,
    cb_safe: Option<Callback>,
    state: Mutex<State>,
    cond: Condvar,
    fired: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Completion {
    /// A new completion; returns the C handle (one strong count).
    pub fn create(
        arg: *mut c_void,
        cb_complete: Option<Callback>,
        cb_safe: Option<Callback>,
    ) -> *mut c_void {
        let c = Arc::new(Completion {
            arg: arg as usize,
            cb_complete,
            cb_safe,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            fired: std::sync::atomic::AtomicBool::new(false),
        });
        Arc::into_raw(c) as *mut c_void
    }

    /// Borrow the completion behind a C handle and take a new strong count.
    ///
    /// # Safety
    /// `ptr` must be a live handle returned by [`Completion::create`].
    pub unsafe fn from_handle(ptr: *mut c_void) -> Arc<Completion> {
        let p = ptr as *const Completion;
        // SAFETY: the caller guarantees p came from Arc::into_raw and its
        // count is still held by the C side.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }

    /// Drop the C side's strong count.
    ///
    /// # Safety
    /// `ptr` must be a live handle; it is invalid afterwards.
    pub unsafe fn release(ptr: *mut c_void) {
        // SAFETY: as above; this consumes the C side's count exactly once.
        unsafe { drop(Arc::from_raw(ptr as *const Completion)) }
    }

    /// The handle value for this completion.
    pub fn handle(self: &Arc<Self>) -> *mut c_void {
        Arc::as_ptr(self) as *mut c_void
    }

    /// `cb_arg`.
    pub fn arg(&self) -> *mut c_void {
        self.arg as *mut c_void
    }

    /// Whether the operation has completed (already true in the callback).
    pub fn is_complete(&self) -> bool {
        lock(&self.state).complete
    }

    /// The return value (0 before completion).
    pub fn return_value(&self) -> i64 {
        lock(&self.state).ret
    }

    /// Block until the callback has returned.
    pub fn wait(&self) {
        let mut st = lock(&self.state);
        st.waiters += 1;
        while !st.done {
            st = match self.cond.wait(st) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        st.waiters -= 1;
    }

    /// Finish the operation with `ret` (see `rt::run_completion` for the
    /// thread the callback runs on). Only the
    /// first call per completion has an effect (so a panic guard can always
    /// call it), and every accepted submission calls it.
    pub fn finish(self: Arc<Self>, ret: i64, events: Option<Arc<EventQueue>>) {
        if self.fired.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        rt::run_completion(move || {
            {
                let mut st = lock(&self.state);
                st.ret = ret;
                st.complete = true;
            }
            let h = self.handle();
            for cb in [self.cb_complete, self.cb_safe].into_iter().flatten() {
                // SAFETY: the callback and arg were given by the C caller
                // for exactly this invocation; `h` is kept alive by `self`.
                unsafe { cb(h, self.arg as *mut c_void) };
            }
            if let Some(ev) = events {
                ev.push(self.clone());
            }
            let mut st = lock(&self.state);
            st.done = true;
            if st.waiters > 0 {
                self.cond.notify_all();
            }
        });
    }
}

/// An image's completion queue for `rbd_poll_io_events`, with the fd set by
/// `rbd_set_image_notification`.
#[derive(Default)]
pub struct EventQueue {
    inner: Mutex<EventInner>,
}

#[derive(Default)]
struct EventInner {
    fd: Option<(i32, i32)>,
    queue: VecDeque<Arc<Completion>>,
}

/// `EVENT_TYPE_PIPE`.
pub const EVENT_TYPE_PIPE: i32 = 1;
/// `EVENT_TYPE_EVENTFD`.
pub const EVENT_TYPE_EVENTFD: i32 = 2;

impl EventQueue {
    /// Set the notification fd.
    pub fn set_notification(&self, fd: i32, ty: i32) {
        lock(&self.inner).fd = Some((fd, ty));
    }

    /// Whether completions should be queued.
    pub fn enabled(&self) -> bool {
        lock(&self.inner).fd.is_some()
    }

    fn push(&self, c: Arc<Completion>) {
        let fd = {
            let mut g = lock(&self.inner);
            let Some(fd) = g.fd else { return };
            g.queue.push_back(c);
            fd
        };
        match fd.1 {
            EVENT_TYPE_EVENTFD => {
                let one: u64 = 1;
                // SAFETY: writes 8 bytes from a live u64 to the user's fd.
                let _ = unsafe { libc::write(fd.0, (&one as *const u64).cast(), 8) };
            }
            _ => {
                let b = [1u8];
                // SAFETY: writes 1 byte from a live array to the user's fd.
                let _ = unsafe { libc::write(fd.0, b.as_ptr().cast(), 1) };
            }
        }
    }

    /// Pop up to `n` completed completions (handles, still owned by the user).
    pub fn pop(&self, n: usize) -> Vec<*mut c_void> {
        let mut g = lock(&self.inner);
        let k = n.min(g.queue.len());
        g.queue.drain(..k).map(|c| c.handle()).collect()
    }
}
