//! librbd's consistency-group calls (`rbd_group_*`, `rbd_get_group`,
//! `rbd_snap_get_group_namespace`): named sets of images snapshotted and
//! rolled back together (see `quarry_rbd`'s group module for how).
//!
//! # Safety
//! As in `ffi_rbd`: each export has the contract of its declaration in
//! Ceph's headers; NULL pointers are refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};
use std::future::Future;
use std::sync::Arc;

use quarry_common::Errno;
use quarry_rbd::{GroupImageState, GroupSnapState};

use crate::engine::{CError, CResult, ImageEngine, IoTarget};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::ffi_rbd::{img_of, ImageT};
use crate::rt;
use crate::util::{array_out, c_free, c_strdup, guard, int, names_out, nonnull, req_str};

/// `RBD_SNAP_CREATE_SKIP_QUIESCE`.
const SNAP_CREATE_SKIP_QUIESCE: u32 = 1 << 0;
/// `RBD_SNAP_CREATE_IGNORE_QUIESCE_ERROR`.
const SNAP_CREATE_IGNORE_QUIESCE_ERROR: u32 = 1 << 1;

/// `rbd_group_info_t` (16 bytes).
#[repr(C)]
pub struct RbdGroupInfo {
    /// Group name (malloc'd; freed by `rbd_group_info_cleanup`).
    pub name: *mut c_char,
    /// Group pool id (-1: not in a group).
    pub pool: i64,
}

/// `rbd_group_image_info_t` (24 bytes).
#[repr(C)]
pub struct RbdGroupImageInfo {
    /// Image name (malloc'd).
    pub name: *mut c_char,
    /// Image pool id.
    pub pool: i64,
    /// `rbd_group_image_state_t`: ATTACHED 0, INCOMPLETE 1.
    pub state: c_int,
}

/// `rbd_group_snap_info_t` (16 bytes).
#[repr(C)]
pub struct RbdGroupSnapInfo {
    /// Group snapshot name (malloc'd).
    pub name: *mut c_char,
    /// `rbd_group_snap_state_t`: INCOMPLETE 0, COMPLETE 1.
    pub state: c_int,
}

/// `rbd_snap_group_namespace_t` (24 bytes).
#[repr(C)]
pub struct RbdSnapGroupNamespace {
    /// Group pool id.
    pub group_pool: i64,
    /// Group name (malloc'd).
    pub group_name: *mut c_char,
    /// Group snapshot name (malloc'd).
    pub group_snap_name: *mut c_char,
}

/// `-ERANGE` unless `size` is `sizeof(T)` (librbd's struct-size checks).
fn check_size<T>(size: usize, what: &str) -> CResult<()> {
    let want = std::mem::size_of::<T>();
    if size != want {
        return Err(CError::new(
            Errno::ERANGE,
            format!("{what} size {size} is not sizeof = {want}"),
        ));
    }
    Ok(())
}

/// Run `f(engine, target, args)` on one ioctx and a list of C strings.
unsafe fn with_group<F, Fut, T>(io: IoCtxT, strs: &[*const c_char], f: F) -> CResult<T>
where
    F: FnOnce(Arc<dyn ImageEngine>, IoTarget, Vec<String>) -> Fut,
    Fut: Future<Output = CResult<T>> + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: handle from the caller.
    let io = unsafe { ioctx(io) }?;
    let mut args = Vec::with_capacity(strs.len());
    for p in strs {
        // SAFETY: C strings from the caller.
        args.push(unsafe { req_str(*p) }?.to_string());
    }
    rt::block_on(f(io.conn.engine.clone(), io.target(), args))
}

/// Create consistency group `name` (`-EEXIST` if taken).
#[no_mangle]
pub unsafe extern "C" fn rbd_group_create(io: IoCtxT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_group(io, &[name], |e, t, a| async move {
                e.group_create(&t, &a[0]).await
            })
        }?;
        Ok(0)
    })
}

/// Remove group `name`: its snapshots go, its images leave it.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_remove(io: IoCtxT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_group(io, &[name], |e, t, a| async move {
                e.group_remove(&t, &a[0]).await
            })
        }?;
        Ok(0)
    })
}

/// Group names, NUL-separated; `-ERANGE` with `*size` set when short;
/// returns the number of bytes used.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_list(io: IoCtxT, names: *mut c_char, size: *mut usize) -> c_int {
    int(|| {
        nonnull(size)?;
        // SAFETY: forwarded contract.
        let list = unsafe { with_group(io, &[], |e, t, _| async move { e.group_list(&t).await }) }?;
        // SAFETY: the caller's buffer and size.
        let used = unsafe { names_out(list.iter().map(String::as_str), names, size) }?;
        i32::try_from(used).map_err(|_| Errno::ERANGE.into())
    })
}

/// Rename group `src` to `dest` (`-ENOENT`, `-EEXIST`).
#[no_mangle]
pub unsafe extern "C" fn rbd_group_rename(
    io: IoCtxT,
    src: *const c_char,
    dest: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_group(io, &[src, dest], |e, t, a| async move {
                e.group_rename(&t, &a[0], &a[1]).await
            })
        }?;
        Ok(0)
    })
}

/// Free the name [`rbd_get_group`] filled in.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_info_cleanup(info: *mut RbdGroupInfo, info_size: usize) {
    guard((), || {
        if info.is_null() || info_size != std::mem::size_of::<RbdGroupInfo>() {
            return;
        }
        // SAFETY: filled by rbd_get_group.
        unsafe {
            c_free((*info).name);
            (*info).name = std::ptr::null_mut();
        }
    })
}

/// Run a call on a group ioctx + name and an image ioctx + name.
unsafe fn group_and_image<F, Fut>(
    group_io: IoCtxT,
    group: *const c_char,
    image_io: IoCtxT,
    image: *const c_char,
    f: F,
) -> c_int
where
    F: FnOnce(Arc<dyn ImageEngine>, IoTarget, String, IoTarget, String) -> Fut,
    Fut: Future<Output = CResult<()>> + Send + 'static,
{
    int(|| {
        // SAFETY: handles and C strings from the caller.
        let gio = unsafe { ioctx(group_io) }?;
        // SAFETY: as above.
        let iio = unsafe { ioctx(image_io) }?;
        // SAFETY: as above.
        let group = unsafe { req_str(group) }?.to_string();
        // SAFETY: as above.
        let image = unsafe { req_str(image) }?.to_string();
        rt::block_on(f(
            gio.conn.engine.clone(),
            gio.target(),
            group,
            iio.target(),
            image,
        ))?;
        Ok(0)
    })
}

/// Add image `image_name` of `image_p` to group `group_name` of `group_p`
/// (`-EEXIST` if it is in a group already).
#[no_mangle]
pub unsafe extern "C" fn rbd_group_image_add(
    group_p: IoCtxT,
    group_name: *const c_char,
    image_p: IoCtxT,
    image_name: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        group_and_image(
            group_p,
            group_name,
            image_p,
            image_name,
            |e, gt, g, it, i| async move { e.group_image_add(&gt, &g, &it, &i).await },
        )
    }
}

/// Take image `image_name` of `image_p` out of group `group_name`.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_image_remove(
    group_p: IoCtxT,
    group_name: *const c_char,
    image_p: IoCtxT,
    image_name: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        group_and_image(
            group_p,
            group_name,
            image_p,
            image_name,
            |e, gt, g, it, i| async move { e.group_image_remove(&gt, &g, &it, &i).await },
        )
    }
}

/// A group's images; `-ERANGE` with `*num_entries` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_image_list(
    group_p: IoCtxT,
    group_name: *const c_char,
    images: *mut RbdGroupImageInfo,
    group_image_info_size: usize,
    num_entries: *mut usize,
) -> c_int {
    int(|| {
        nonnull(num_entries)?;
        check_size::<RbdGroupImageInfo>(group_image_info_size, "rbd_group_image_info_t")?;
        // SAFETY: forwarded contract.
        let list = unsafe {
            with_group(group_p, &[group_name], |e, t, a| async move {
                e.group_image_list(&t, &a[0]).await
            })
        }?;
        // SAFETY: the caller's array and count.
        unsafe {
            array_out(&list, images, num_entries, |m| RbdGroupImageInfo {
                name: c_strdup(&m.name),
                pool: m.pool_id,
                state: match m.state {
                    GroupImageState::Attached => 0,
                    GroupImageState::Incomplete => 1,
                },
            })
        }?;
        Ok(0)
    })
}

/// Free the names of `len` entries filled by [`rbd_group_image_list`].
#[no_mangle]
pub unsafe extern "C" fn rbd_group_image_list_cleanup(
    images: *mut RbdGroupImageInfo,
    group_image_info_size: usize,
    len: usize,
) {
    guard((), || {
        if images.is_null() || group_image_info_size != std::mem::size_of::<RbdGroupImageInfo>() {
            return;
        }
        for i in 0..len {
            // SAFETY: entries filled by rbd_group_image_list.
            unsafe {
                let e = &mut *images.add(i);
                c_free(e.name);
                e.name = std::ptr::null_mut();
            }
        }
    })
}

/// Take a crash-consistent snapshot of every image of the group. `flags`:
/// `RBD_SNAP_CREATE_SKIP_QUIESCE` or `..._IGNORE_QUIESCE_ERROR` (there
/// are no quiesce hooks), others `-EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_snap_create2(
    group_p: IoCtxT,
    group_name: *const c_char,
    snap_name: *const c_char,
    flags: u32,
) -> c_int {
    int(|| {
        let known = SNAP_CREATE_SKIP_QUIESCE | SNAP_CREATE_IGNORE_QUIESCE_ERROR;
        if flags & !known != 0 || flags == known {
            return Err(CError::new(
                Errno::EINVAL,
                format!("invalid snapshot create flags {flags:#x}"),
            ));
        }
        // SAFETY: forwarded contract.
        unsafe {
            with_group(group_p, &[group_name, snap_name], |e, t, a| async move {
                e.group_snap_create(&t, &a[0], &a[1]).await
            })
        }?;
        Ok(0)
    })
}

/// Remove group snapshot `snap_name` (and its image snapshots).
#[no_mangle]
pub unsafe extern "C" fn rbd_group_snap_remove(
    group_p: IoCtxT,
    group_name: *const c_char,
    snap_name: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_group(group_p, &[group_name, snap_name], |e, t, a| async move {
                e.group_snap_remove(&t, &a[0], &a[1]).await
            })
        }?;
        Ok(0)
    })
}

/// Rename a group snapshot (`-ENOENT`, `-EEXIST`).
#[no_mangle]
pub unsafe extern "C" fn rbd_group_snap_rename(
    group_p: IoCtxT,
    group_name: *const c_char,
    old_snap_name: *const c_char,
    new_snap_name: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_group(
                group_p,
                &[group_name, old_snap_name, new_snap_name],
                |e, t, a| async move { e.group_snap_rename(&t, &a[0], &a[1], &a[2]).await },
            )
        }?;
        Ok(0)
    })
}

/// Roll every image of the group back to group snapshot `snap_name`.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_snap_rollback(
    group_p: IoCtxT,
    group_name: *const c_char,
    snap_name: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: forwarded contract.
        unsafe {
            with_group(group_p, &[group_name, snap_name], |e, t, a| async move {
                e.group_snap_rollback(&t, &a[0], &a[1]).await
            })
        }?;
        Ok(0)
    })
}

/// A group's snapshots; `-ERANGE` with `*num_entries` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_group_snap_list(
    group_p: IoCtxT,
    group_name: *const c_char,
    snaps: *mut RbdGroupSnapInfo,
    group_snap_info_size: usize,
    num_entries: *mut usize,
) -> c_int {
    int(|| {
        nonnull(num_entries)?;
        check_size::<RbdGroupSnapInfo>(group_snap_info_size, "rbd_group_snap_info_t")?;
        // SAFETY: forwarded contract.
        let list = unsafe {
            with_group(group_p, &[group_name], |e, t, a| async move {
                e.group_snap_list(&t, &a[0]).await
            })
        }?;
        // SAFETY: the caller's array and count.
        unsafe {
            array_out(&list, snaps, num_entries, |s| RbdGroupSnapInfo {
                name: c_strdup(&s.name),
                state: match s.state {
                    GroupSnapState::Incomplete => 0,
                    GroupSnapState::Complete => 1,
                },
            })
        }?;
        Ok(0)
    })
}

/// Free the names of `len` entries filled by [`rbd_group_snap_list`].
#[no_mangle]
pub unsafe extern "C" fn rbd_group_snap_list_cleanup(
    snaps: *mut RbdGroupSnapInfo,
    group_snap_info_size: usize,
    len: usize,
) {
    guard((), || {
        if snaps.is_null() || group_snap_info_size != std::mem::size_of::<RbdGroupSnapInfo>() {
            return;
        }
        for i in 0..len {
            // SAFETY: entries filled by rbd_group_snap_list.
            unsafe {
                let e = &mut *snaps.add(i);
                c_free(e.name);
                e.name = std::ptr::null_mut();
            }
        }
    })
}

/// The image's group: name "" and pool -1 when it is in none.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_group(
    image: ImageT,
    group_info: *mut RbdGroupInfo,
    group_info_size: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(group_info)?;
        check_size::<RbdGroupInfo>(group_info_size, "rbd_group_info_t")?;
        let b = img.backend.clone();
        let g = rt::block_on(async move { b.group().await })?;
        let (pool, name) = g.unwrap_or((-1, String::new()));
        // SAFETY: non-null, caller-owned struct of the checked size.
        unsafe {
            group_info.write(RbdGroupInfo {
                name: c_strdup(&name),
                pool,
            })
        };
        Ok(0)
    })
}

/// The group snapshot image snapshot `snap_id` belongs to (`-EINVAL` for
/// a snapshot outside the group namespace, `-ENOENT` for no such id).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_group_namespace(
    image: ImageT,
    snap_id: u64,
    group_snap: *mut RbdSnapGroupNamespace,
    group_snap_size: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(group_snap)?;
        check_size::<RbdSnapGroupNamespace>(group_snap_size, "rbd_snap_group_namespace_t")?;
        let b = img.backend.clone();
        let (pool, group, snap) =
            rt::block_on(async move { b.snap_group_namespace(snap_id).await })?;
        // SAFETY: non-null, caller-owned struct of the checked size.
        unsafe {
            group_snap.write(RbdSnapGroupNamespace {
                group_pool: pool,
                group_name: c_strdup(&group),
                group_snap_name: c_strdup(&snap),
            })
        };
        Ok(0)
    })
}

/// Free the strings [`rbd_snap_get_group_namespace`] filled in.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_group_namespace_cleanup(
    group_snap: *mut RbdSnapGroupNamespace,
    group_snap_size: usize,
) {
    guard((), || {
        if group_snap.is_null() || group_snap_size != std::mem::size_of::<RbdSnapGroupNamespace>() {
            return;
        }
        // SAFETY: filled by rbd_snap_get_group_namespace.
        unsafe {
            let s = &mut *group_snap;
            c_free(s.group_name);
            s.group_name = std::ptr::null_mut();
            c_free(s.group_snap_name);
            s.group_snap_name = std::ptr::null_mut();
        }
    })
}
