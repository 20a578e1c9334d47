//! librbd's live-migration calls (`rbd_migration_*`): move an image to
//! another pool, namespace or name while clients use the destination
//! (see `quarry_rbd`'s migration module for how).
//!
//! # Safety
//! As in `ffi_rbd`: each export has the contract of its declaration in
//! Ceph's headers; NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void};

use quarry_common::Errno;

use crate::engine::CError;
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::opts::{options, resolve};
use crate::rt;
use crate::util::{c_free, c_strdup, guard, int, nonnull, progress_done, req_str};

/// Progress callback (`librbd_progress_fn_t`).
type ProgressFn = Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>;

/// `rbd_image_migration_status_t`.
#[repr(C)]
pub struct RbdMigrationStatus {
    /// Source pool id.
    pub source_pool_id: i64,
    /// Source namespace (malloc'd; freed by the cleanup call).
    pub source_pool_namespace: *mut c_char,
    /// Source image name (malloc'd).
    pub source_image_name: *mut c_char,
    /// Source image id (malloc'd).
    pub source_image_id: *mut c_char,
    /// Destination pool id.
    pub dest_pool_id: i64,
    /// Destination namespace (malloc'd).
    pub dest_pool_namespace: *mut c_char,
    /// Destination image name (malloc'd).
    pub dest_image_name: *mut c_char,
    /// Destination image id (malloc'd).
    pub dest_image_id: *mut c_char,
    /// `rbd_image_migration_state_t`.
    pub state: c_int,
    /// Words for the state (malloc'd).
    pub state_description: *mut c_char,
}

/// Start moving image `name` of `io` to `dest_name` of `dest_io`; the
/// destination is usable at once. `opts` (may be NULL) may set the order
/// and features; the source's are kept otherwise.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_prepare(
    io: IoCtxT,
    name: *const c_char,
    dest_io: IoCtxT,
    dest_name: *const c_char,
    opts: *mut c_void,
) -> c_int {
    int(|| {
        // SAFETY: handles and C strings from the caller.
        let src = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let dst = unsafe { ioctx(dest_io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        // SAFETY: as above.
        let dest_name = unsafe { req_str(dest_name) }?.to_string();
        let o = if opts.is_null() {
            None
        } else {
            // SAFETY: handle from the caller.
            Some(&*unsafe { options(opts) }?)
        };
        let (features, order, su, sc) = resolve(o, 0)?;
        if su != 0 || sc > 1 {
            return Err(CError::new(
                Errno::EINVAL,
                "fancy striping is not supported",
            ));
        }
        let order = u8::try_from(order)
            .map_err(|_| CError::new(Errno::EINVAL, format!("invalid order {order}")))?;
        let engine = src.conn.engine.clone();
        let (st, dt) = (src.target(), dst.target());
        rt::block_on(async move {
            engine
                .migration_prepare(&st, &name, &dt, &dest_name, order, features)
                .await
        })?;
        Ok(0)
    })
}

/// Run `f(engine, target, name)` for one of the one-image migration calls.
unsafe fn one_image<F, Fut>(io: IoCtxT, name: *const c_char, f: F) -> c_int
where
    F: FnOnce(
        std::sync::Arc<dyn crate::engine::ImageEngine>,
        crate::engine::IoTarget,
        String,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<(), CError>> + Send + 'static,
{
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        rt::block_on(f(io.conn.engine.clone(), io.target(), name))?;
        Ok(0)
    })
}

/// Copy every object of the migration's source into its destination.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_execute(io: IoCtxT, name: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        one_image(io, name, |e, t, n| async move {
            e.migration_execute(&t, &n, &mut |_, _| {}).await
        })
    }
}

/// [`rbd_migration_execute`] with a progress callback.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_execute_with_progress(
    io: IoCtxT,
    name: *const c_char,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract; the caller's callback and data.
    unsafe { progress_done(rbd_migration_execute(io, name), cb, cbdata) }
}

/// Finish an executed migration: the source is removed.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_commit(io: IoCtxT, name: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        one_image(io, name, |e, t, n| async move {
            e.migration_commit(&t, &n).await
        })
    }
}

/// [`rbd_migration_commit`] with a progress callback.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_commit_with_progress(
    io: IoCtxT,
    name: *const c_char,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract; the caller's callback and data.
    unsafe { progress_done(rbd_migration_commit(io, name), cb, cbdata) }
}

/// Undo a migration: the destination is removed, the source restored.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_abort(io: IoCtxT, name: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        one_image(io, name, |e, t, n| async move {
            e.migration_abort(&t, &n).await
        })
    }
}

/// [`rbd_migration_abort`] with a progress callback.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_abort_with_progress(
    io: IoCtxT,
    name: *const c_char,
    cb: ProgressFn,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract; the caller's callback and data.
    unsafe { progress_done(rbd_migration_abort(io, name), cb, cbdata) }
}

/// The migration image `name` takes part in (`-EINVAL` if none);
/// `status_size` must be `sizeof(rbd_image_migration_status_t)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_status(
    io: IoCtxT,
    name: *const c_char,
    status: *mut RbdMigrationStatus,
    status_size: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        nonnull(status)?;
        if status_size != std::mem::size_of::<RbdMigrationStatus>() {
            return Err(CError::new(
                Errno::ERANGE,
                format!(
                    "status_size {status_size} is not sizeof(rbd_image_migration_status_t) = {}",
                    std::mem::size_of::<RbdMigrationStatus>()
                ),
            ));
        }
        let engine = io.conn.engine.clone();
        let t = io.target();
        let m = rt::block_on(async move { engine.migration_status(&t, &name).await })?;
        let st = RbdMigrationStatus {
            source_pool_id: m.source.pool_id,
            source_pool_namespace: c_strdup(&m.source.namespace),
            source_image_name: c_strdup(&m.source.name),
            source_image_id: c_strdup(&m.source.id),
            dest_pool_id: m.dest.pool_id,
            dest_pool_namespace: c_strdup(&m.dest.namespace),
            dest_image_name: c_strdup(&m.dest.name),
            dest_image_id: c_strdup(&m.dest.id),
            state: m.state.code(),
            state_description: c_strdup(m.state.label()),
        };
        // SAFETY: non-null, caller-owned struct of the checked size.
        unsafe { status.write(st) };
        Ok(0)
    })
}

/// Free the strings [`rbd_migration_status`] filled in.
#[no_mangle]
pub unsafe extern "C" fn rbd_migration_status_cleanup(status: *mut RbdMigrationStatus) {
    guard((), || {
        if status.is_null() {
            return;
        }
        // SAFETY: filled by rbd_migration_status.
        unsafe {
            let s = &mut *status;
            for p in [
                &mut s.source_pool_namespace,
                &mut s.source_image_name,
                &mut s.source_image_id,
                &mut s.dest_pool_namespace,
                &mut s.dest_image_name,
                &mut s.dest_image_id,
                &mut s.state_description,
            ] {
                c_free(*p);
                *p = std::ptr::null_mut();
            }
        }
    })
}
