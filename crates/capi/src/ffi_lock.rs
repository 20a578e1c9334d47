//! The exclusive-lock exports of librbd (`rbd_lock_*`,
//! `rbd_is_exclusive_lock_owner`), on the image engine's lock (see
//! `quarry-rbd`'s `lock` module for the semantics).

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use quarry_common::Errno;

use crate::engine::{CError, CResult};
use crate::ffi_rbd::{img_of, ImageT};
use crate::image::Image;
use crate::rt;
use crate::util::{c_free, c_strdup, guard, int, nonnull, req_str};

/// `RBD_LOCK_MODE_EXCLUSIVE`.
pub const RBD_LOCK_MODE_EXCLUSIVE: c_int = 0;
/// `RBD_LOCK_MODE_SHARED` (not supported by librbd's managed lock either).
pub const RBD_LOCK_MODE_SHARED: c_int = 1;

/// Before the exclusive lock goes to another client, wait for every write
/// this handle accepted (some are acknowledged early: write-around).
pub(crate) fn install_release_hook(img: &Arc<Image>) {
    let weak = Arc::downgrade(img);
    img.backend.set_pre_release_hook(Arc::new(move || {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(img) = weak.upgrade() {
                let barrier = img.writes.barrier();
                img.writes.wait_before(barrier).await;
            }
            Ok(())
        })
    }));
}

fn exclusive_only(mode: c_int) -> CResult<()> {
    match mode {
        RBD_LOCK_MODE_EXCLUSIVE => Ok(()),
        RBD_LOCK_MODE_SHARED => Err(CError::new(
            Errno::EOPNOTSUPP,
            "shared lock mode is not supported",
        )),
        m => Err(CError::new(Errno::EINVAL, format!("invalid lock mode {m}"))),
    }
}

/// Whether this handle owns the exclusive lock.
///
/// # Safety
/// `image` a live handle, `is_owner` writable.
#[no_mangle]
pub unsafe extern "C" fn rbd_is_exclusive_lock_owner(image: ImageT, is_owner: *mut c_int) -> c_int {
    int(|| {
        nonnull(is_owner)?;
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: non-null out-pointer.
        unsafe { *is_owner = c_int::from(img.backend.is_lock_owner()) };
        Ok(0)
    })
}

/// Take the exclusive lock and keep it (no cooperative hand-over):
/// `-EROFS` if another live client holds it.
///
/// # Safety
/// `image` a live handle.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_acquire(image: ImageT, lock_mode: c_int) -> c_int {
    int(|| {
        exclusive_only(lock_mode)?;
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        if img.read_only {
            return Err(CError::new(Errno::EROFS, "image is open read-only"));
        }
        let b = img.backend.clone();
        rt::block_on(async move { b.lock_acquire().await })?;
        Ok(0)
    })
}

/// Release the lock taken with `rbd_lock_acquire` (`-EINVAL` if not owned).
///
/// # Safety
/// `image` a live handle.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_release(image: ImageT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let b = img.backend.clone();
        rt::block_on(async move { b.lock_release().await })?;
        Ok(0)
    })
}

/// The lock's owners (`client.<id>`), malloc'ed strings freed with
/// `rbd_lock_get_owners_cleanup`. `-ENOENT` when unlocked; `-ERANGE` with
/// `*max_lock_owners` set to the count when the array is too small.
///
/// # Safety
/// `image` a live handle; `lock_owners` holds `*max_lock_owners` slots.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_get_owners(
    image: ImageT,
    lock_mode: *mut c_int,
    lock_owners: *mut *mut c_char,
    max_lock_owners: *mut usize,
) -> c_int {
    int(|| {
        nonnull(lock_mode)?;
        nonnull(max_lock_owners)?;
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let b = img.backend.clone();
        let owners = rt::block_on(async move { b.lock_owners().await })?;
        if owners.is_empty() {
            return Err(CError::new(Errno::ENOENT, "the image is not locked"));
        }
        // SAFETY: non-null in/out pointer.
        let max = unsafe { *max_lock_owners };
        if max < owners.len() {
            // SAFETY: as above.
            unsafe { *max_lock_owners = owners.len() };
            return Err(CError::new(Errno::ERANGE, "lock owner array too small"));
        }
        nonnull(lock_owners)?;
        for (i, o) in owners.iter().enumerate() {
            // SAFETY: the caller provided `max >= owners.len()` slots.
            unsafe { *lock_owners.add(i) = c_strdup(o) };
        }
        // SAFETY: non-null out-pointers.
        unsafe {
            *lock_mode = RBD_LOCK_MODE_EXCLUSIVE;
            *max_lock_owners = owners.len();
        }
        Ok(0)
    })
}

/// Free what `rbd_lock_get_owners` returned.
///
/// # Safety
/// `lock_owners` holds `lock_owner_count` strings from `rbd_lock_get_owners`.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_get_owners_cleanup(
    lock_owners: *mut *mut c_char,
    lock_owner_count: usize,
) {
    guard((), || {
        if lock_owners.is_null() {
            return;
        }
        for i in 0..lock_owner_count {
            // SAFETY: per the contract, each slot is a c_strdup'ed string.
            unsafe {
                let p = *lock_owners.add(i);
                if !p.is_null() {
                    c_free(p);
                    *lock_owners.add(i) = std::ptr::null_mut();
                }
            }
        }
    })
}

/// Break the lock held by `lock_owner` (`client.<id>`): `-ENOENT` if
/// unlocked, `-EBUSY` if held by someone else. Quarry does not blocklist
/// the old owner (see the README's known gaps).
///
/// # Safety
/// `image` a live handle, `lock_owner` a C string.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_break(
    image: ImageT,
    lock_mode: c_int,
    lock_owner: *const c_char,
) -> c_int {
    int(|| {
        exclusive_only(lock_mode)?;
        // SAFETY: C string from the caller.
        let owner = unsafe { req_str(lock_owner) }?.to_string();
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let b = img.backend.clone();
        rt::block_on(async move { b.lock_break(&owner).await })?;
        Ok(0)
    })
}
