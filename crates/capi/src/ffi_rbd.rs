//! The librbd C exports (`rbd_*`).
//!
//! # Safety
//! Every export is `unsafe extern "C"` with the contract of the matching
//! declaration in Ceph's headers: handles come from the matching create or
//! open call and are live; buffers are valid for the lengths passed.
//! NULL pointers are checked and refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quarry_common::Errno;

use crate::cluster::lock;
use crate::completion::{Callback, Completion, EVENT_TYPE_EVENTFD, EVENT_TYPE_PIPE};
use crate::engine::{CError, CResult, CreateOpts, IoTarget};
use crate::ffi_rados::{ioctx, IoCtxT};
use crate::image::{apply_overrides, Image};
use crate::rt;
use crate::util::{
    array_out, c_free, c_strdup, copy_out, copy_out_len, guard, int, names_out, nonnull, opt_str,
    req_str, ssize, NEG_EIO, NEG_ENOTSUP,
};

/// `rbd_image_t`.
pub type ImageT = *mut c_void;
/// `rbd_completion_t`.
pub type CompT = *mut c_void;

/// `RBD_MAX_BLOCK_NAME_SIZE`.
pub const RBD_MAX_BLOCK_NAME_SIZE: usize = 24;
/// `RBD_MAX_IMAGE_NAME_SIZE`.
pub const RBD_MAX_IMAGE_NAME_SIZE: usize = 96;
/// `RBD_WRITE_ZEROES_FLAG_THICK_PROVISION`.
pub const RBD_WRITE_ZEROES_FLAG_THICK_PROVISION: c_int = 1;

/// `rbd_image_info_t` (160 bytes on x86_64).
#[repr(C)]
pub struct RbdImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size.
    pub obj_size: u64,
    /// Number of objects.
    pub num_objs: u64,
    /// Object size order.
    pub order: c_int,
    /// `rbd_data.<id>`, NUL-terminated.
    pub block_name_prefix: [c_char; RBD_MAX_BLOCK_NAME_SIZE],
    /// Parent pool id or -1.
    pub parent_pool: i64,
    /// Parent image name or "".
    pub parent_name: [c_char; RBD_MAX_IMAGE_NAME_SIZE],
}

/// `rbd_snap_info_t` (24 bytes).
#[repr(C)]
pub struct RbdSnapInfo {
    /// Snap id.
    pub id: u64,
    /// Image size at the snapshot.
    pub size: u64,
    /// Name (malloc'd, freed by `rbd_snap_list_end`).
    pub name: *const c_char,
}

/// `rbd_image_spec_t` (16 bytes).
#[repr(C)]
pub struct RbdImageSpec {
    /// Image id (malloc'd).
    pub id: *mut c_char,
    /// Image name (malloc'd).
    pub name: *mut c_char,
}

/// `rbd_linked_image_spec_t` (48 bytes).
#[repr(C)]
pub struct RbdLinkedImageSpec {
    /// Pool id.
    pub pool_id: i64,
    /// Pool name.
    pub pool_name: *mut c_char,
    /// Pool namespace.
    pub pool_namespace: *mut c_char,
    /// Image id.
    pub image_id: *mut c_char,
    /// Image name.
    pub image_name: *mut c_char,
    /// Whether in the trash.
    pub trash: bool,
}

/// `rbd_snap_spec_t` (24 bytes).
#[repr(C)]
pub struct RbdSnapSpec {
    /// Snap id.
    pub id: u64,
    /// Namespace type (user = 0).
    pub namespace_type: c_int,
    /// Name.
    pub name: *mut c_char,
}

/// Borrow the image behind a handle.
///
/// # Safety
/// `p` must be NULL or a live handle from `rbd_open*`.
pub(crate) unsafe fn img_of<'a>(p: ImageT) -> CResult<&'a Arc<Image>> {
    nonnull(p)?;
    // SAFETY: p is a live Box<Arc<Image>> per the caller's contract.
    Ok(unsafe { &*(p as *const Arc<Image>) })
}

/// Report librbd 1.16.0 (pacific).
#[no_mangle]
pub unsafe extern "C" fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int) {
    guard((), || {
        for (p, v) in [(major, 1), (minor, 16), (extra, 0)] {
            if !p.is_null() {
                // SAFETY: non-null out-pointer from the caller.
                unsafe { *p = v };
            }
        }
    })
}

/// `rbd_default_features` of the cluster an ioctx belongs to.
pub(crate) fn default_features(io: IoCtxT) -> CResult<u64> {
    // SAFETY: handle from the caller.
    let io = unsafe { ioctx(io) }?;
    let conf = lock(&io.cluster.conf).clone();
    Ok(conf.get_u64("rbd_default_features"))
}

pub(crate) fn create_impl(
    io: IoCtxT,
    name: *const c_char,
    size: u64,
    features: Option<u64>,
    order: *mut c_int,
    stripe: (u64, u64),
) -> CResult<i32> {
    // SAFETY: handle and C string from the caller.
    let io = unsafe { ioctx(io) }?;
    // SAFETY: as above.
    let name = unsafe { req_str(name) }?.to_string();
    if name.is_empty() {
        return Err(Errno::EINVAL.into());
    }
    let conf = lock(&io.cluster.conf).clone();
    let mut ord = if order.is_null() {
        0
    } else {
        // SAFETY: non-null in/out pointer.
        unsafe { *order }
    };
    if ord == 0 {
        ord = conf.get_u64("rbd_default_order") as c_int;
    }
    if !(12..=25).contains(&ord) {
        return Err(CError::new(Errno::EDOM, "order out of range"));
    }
    let features = match features {
        Some(f) => f,
        None => conf.get_u64("rbd_default_features"),
    };
    let opts = CreateOpts {
        size,
        order: ord as u32,
        features,
        stripe_unit: stripe.0,
        stripe_count: stripe.1,
    };
    let engine = io.conn.engine.clone();
    let target = io.target();
    rt::block_on(async move { engine.create(&target, &name, &opts).await })?;
    if !order.is_null() {
        // SAFETY: non-null in/out pointer.
        unsafe { *order = ord };
    }
    Ok(0)
}

/// Create an image (`*order` 0 = default 22, written back).
#[no_mangle]
pub unsafe extern "C" fn rbd_create(
    io: IoCtxT,
    name: *const c_char,
    size: u64,
    order: *mut c_int,
) -> c_int {
    int(|| create_impl(io, name, size, None, order, (0, 0)))
}

/// Create an image with features.
#[no_mangle]
pub unsafe extern "C" fn rbd_create2(
    io: IoCtxT,
    name: *const c_char,
    size: u64,
    features: u64,
    order: *mut c_int,
) -> c_int {
    int(|| create_impl(io, name, size, Some(features), order, (0, 0)))
}

/// Create an image with features and striping.
#[no_mangle]
pub unsafe extern "C" fn rbd_create3(
    io: IoCtxT,
    name: *const c_char,
    size: u64,
    features: u64,
    order: *mut c_int,
    stripe_unit: u64,
    stripe_count: u64,
) -> c_int {
    int(|| {
        create_impl(
            io,
            name,
            size,
            Some(features),
            order,
            (stripe_unit, stripe_count),
        )
    })
}

/// Remove an image.
#[no_mangle]
pub unsafe extern "C" fn rbd_remove(io: IoCtxT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.remove(&target, &name).await })?;
        Ok(0)
    })
}

/// Remove an image (progress callback called once at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_remove_with_progress(
    io: IoCtxT,
    name: *const c_char,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    let r = unsafe { rbd_remove(io, name) };
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Rename an image.
#[no_mangle]
pub unsafe extern "C" fn rbd_rename(io: IoCtxT, src: *const c_char, dst: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let src = unsafe { req_str(src) }?.to_string();
        // SAFETY: as above.
        let dst = unsafe { req_str(dst) }?.to_string();
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.rename(&target, &src, &dst).await })?;
        Ok(0)
    })
}

fn open_impl(
    io: IoCtxT,
    name: *const c_char,
    out: *mut ImageT,
    snap: *const c_char,
    read_only: bool,
) -> CResult<i32> {
    open_any(io, name, false, out, snap, read_only)
}

/// Open by name, or by id if `by_id` (`key` is then the image id).
fn open_any(
    io: IoCtxT,
    key: *const c_char,
    by_id: bool,
    out: *mut ImageT,
    snap: *const c_char,
    read_only: bool,
) -> CResult<i32> {
    // SAFETY: handle and C strings from the caller.
    let io = unsafe { ioctx(io) }?;
    // SAFETY: as above.
    let key = unsafe { req_str(key) }?.to_string();
    // SAFETY: as above.
    let snap = unsafe { opt_str(snap) }?.map(str::to_string);
    nonnull(out)?;
    let engine = io.conn.engine.clone();
    let target = io.target();
    let ro = read_only || snap.is_some();
    let s = snap.clone();
    let (backend, name, info, pool_cfg, image_cfg) = rt::block_on(async move {
        let (b, name) = if by_id {
            engine.open_by_id(&target, &key, s.as_deref(), ro).await?
        } else {
            (engine.open(&target, &key, s.as_deref(), ro).await?, key)
        };
        let info = b.info().await?;
        let pool_cfg = engine.pool_config(&target).await.unwrap_or_default();
        let image_cfg = b.image_config().await.unwrap_or_default();
        Ok::<_, CError>((b, name, info, pool_cfg, image_cfg))
    })?;
    let mut conf = lock(&io.cluster.conf).clone();
    apply_overrides(&mut conf, &pool_cfg, &image_cfg);
    backend.set_timestamp_intervals(quarry_rbd::TimestampIntervals::from_options(
        conf.get_u64("rbd_atime_update_interval"),
        conf.get_u64("rbd_mtime_update_interval"),
    ));
    let img = Arc::new(Image::new(
        backend,
        ro,
        info.size,
        &conf,
        &name,
        snap.as_deref(),
    ));
    crate::ffi_lock::install_release_hook(&img);
    // SAFETY: out non-null caller storage.
    unsafe { *out = Box::into_raw(Box::new(img)) as ImageT };
    Ok(0)
}

/// Open an image (at a snapshot → read-only).
#[no_mangle]
pub unsafe extern "C" fn rbd_open(
    io: IoCtxT,
    name: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
) -> c_int {
    int(|| open_impl(io, name, image, snap_name, false))
}

/// Open an image read-only.
#[no_mangle]
pub unsafe extern "C" fn rbd_open_read_only(
    io: IoCtxT,
    name: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
) -> c_int {
    int(|| open_impl(io, name, image, snap_name, true))
}

/// Open an image by id (also one in the trash; at a snapshot → read-only).
#[no_mangle]
pub unsafe extern "C" fn rbd_open_by_id(
    io: IoCtxT,
    id: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
) -> c_int {
    int(|| open_any(io, id, true, image, snap_name, false))
}

/// Open an image by id read-only.
#[no_mangle]
pub unsafe extern "C" fn rbd_open_by_id_read_only(
    io: IoCtxT,
    id: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
) -> c_int {
    int(|| open_any(io, id, true, image, snap_name, true))
}

/// An asynchronous open: done synchronously, then the completion fires
/// with 0 or the open's negative errno (the call itself returns 0, as
/// librbd's does once the request is queued).
fn aio_open_any(
    io: IoCtxT,
    key: *const c_char,
    by_id: bool,
    image: *mut ImageT,
    snap_name: *const c_char,
    read_only: bool,
    c: CompT,
) -> CResult<i32> {
    nonnull(c)?;
    let r = match open_any(io, key, by_id, image, snap_name, read_only) {
        Ok(_) => 0,
        Err(e) => e.errno.negated(),
    };
    // SAFETY: live completion handle.
    unsafe { Completion::from_handle(c) }.finish(r as i64, None);
    Ok(0)
}

/// Open asynchronously: done synchronously, then the completion fires.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_open(
    io: IoCtxT,
    name: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
    c: CompT,
) -> c_int {
    int(|| aio_open_any(io, name, false, image, snap_name, false, c))
}

/// Open read-only asynchronously.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_open_read_only(
    io: IoCtxT,
    name: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
    c: CompT,
) -> c_int {
    int(|| aio_open_any(io, name, false, image, snap_name, true, c))
}

/// Open by id asynchronously (also an image in the trash).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_open_by_id(
    io: IoCtxT,
    id: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
    c: CompT,
) -> c_int {
    int(|| aio_open_any(io, id, true, image, snap_name, false, c))
}

/// Open by id read-only asynchronously.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_open_by_id_read_only(
    io: IoCtxT,
    id: *const c_char,
    image: *mut ImageT,
    snap_name: *const c_char,
    c: CompT,
) -> c_int {
    int(|| aio_open_any(io, id, true, image, snap_name, true, c))
}

fn close_impl(p: ImageT) -> CResult<i32> {
    nonnull(p)?;
    // SAFETY: p came from Box::into_raw in open; consumed once here.
    let img = unsafe { Box::from_raw(p as *mut Arc<Image>) };
    let img: Arc<Image> = *img;
    rt::block_on(async move {
        let barrier = img.writes.barrier();
        img.writes.wait_before(barrier).await;
        let deferred = img.take_deferred_error();
        if !img.read_only {
            img.backend.flush().await?;
        }
        img.backend.close().await?;
        deferred
    })?;
    Ok(0)
}

/// Close an image: wait for in-flight writes, flush, release.
#[no_mangle]
pub unsafe extern "C" fn rbd_close(image: ImageT) -> c_int {
    int(|| close_impl(image))
}

/// Close asynchronously.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_close(image: ImageT, c: CompT) -> c_int {
    int(|| {
        nonnull(c)?;
        nonnull(image)?;
        let r = match close_impl(image) {
            Ok(_) => 0,
            Err(e) => e.errno.negated(),
        };
        // SAFETY: live completion handle.
        unsafe { Completion::from_handle(c) }.finish(r as i64, None);
        Ok(0)
    })
}

fn info_of(img: &Arc<Image>) -> CResult<crate::engine::ImageInfo> {
    let b = img.backend.clone();
    let info = rt::block_on(async move { b.info().await })?;
    img.set_size(info.size);
    Ok(info)
}

fn parent_of(img: &Arc<Image>) -> CResult<crate::engine::ParentInfo> {
    let b = img.backend.clone();
    rt::block_on(async move { b.parent().await })
}

/// Fill `rbd_image_info_t` (`infosize` is ignored, as librbd does).
#[no_mangle]
pub unsafe extern "C" fn rbd_stat(
    image: ImageT,
    info: *mut RbdImageInfo,
    _infosize: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(info)?;
        let i = info_of(img)?;
        let parent = parent_of(img).ok();
        let obj_size = 1u64 << i.order;
        let mut out = RbdImageInfo {
            size: i.size,
            obj_size,
            num_objs: i.size.div_ceil(obj_size),
            order: i.order as c_int,
            block_name_prefix: [0; RBD_MAX_BLOCK_NAME_SIZE],
            parent_pool: parent.as_ref().map_or(-1, |p| p.pool_id),
            parent_name: [0; RBD_MAX_IMAGE_NAME_SIZE],
        };
        for (d, s) in out.block_name_prefix.iter_mut().zip(
            i.block_name_prefix
                .bytes()
                .take(RBD_MAX_BLOCK_NAME_SIZE - 1),
        ) {
            *d = s as c_char;
        }
        if let Some(p) = &parent {
            for (d, s) in out
                .parent_name
                .iter_mut()
                .zip(p.image_name.bytes().take(RBD_MAX_IMAGE_NAME_SIZE - 1))
            {
                *d = s as c_char;
            }
        }
        // SAFETY: info non-null, points to the caller's struct.
        unsafe { info.write(out) };
        Ok(0)
    })
}

macro_rules! u64_getter {
    ($(#[$m:meta])* $name:ident, |$i:ident| $e:expr) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(image: ImageT, out: *mut u64) -> c_int {
            int(|| {
                // SAFETY: handle from the caller.
                let img = unsafe { img_of(image) }?;
                nonnull(out)?;
                let $i = info_of(img)?;
                // SAFETY: out non-null.
                unsafe { *out = $e };
                Ok(0)
            })
        }
    };
}

u64_getter!(
    /// Image size.
    rbd_get_size, |i| i.size);
u64_getter!(
    /// Feature bits.
    rbd_get_features, |i| i.features);
u64_getter!(
    /// Flag bits.
    rbd_get_flags, |i| i.flags);
u64_getter!(
    /// Stripe unit.
    rbd_get_stripe_unit, |i| if i.stripe_unit == 0 { 1u64 << i.order } else { i.stripe_unit });
u64_getter!(
    /// Stripe count.
    rbd_get_stripe_count, |i| i.stripe_count.max(1));
u64_getter!(
    /// Operation features (none).
    rbd_get_op_features, |_i| 0);

/// Always format 2.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_old_format(image: ImageT, old: *mut u8) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        unsafe { img_of(image) }?;
        nonnull(old)?;
        // SAFETY: out non-null.
        unsafe { *old = 0 };
        Ok(0)
    })
}

/// Data pool id: the image's own pool (no separate data pools).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_data_pool_id(image: ImageT) -> i64 {
    guard(NEG_EIO as i64, || {
        // SAFETY: handle from the caller.
        match unsafe { img_of(image) } {
            Ok(_) => -1,
            Err(e) => e.errno.negated() as i64,
        }
    })
}

/// Image id into `id` (-ERANGE if short).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_id(image: ImageT, id: *mut c_char, len: usize) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let i = info_of(img)?;
        // SAFETY: id valid for len bytes.
        unsafe { copy_out(&i.id, id, len) }?;
        Ok(0)
    })
}

/// Image name; `*len` updated, -ERANGE if short.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_name(image: ImageT, name: *mut c_char, len: *mut usize) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(len)?;
        let n = img.name.clone();
        // SAFETY: name valid for *len bytes, per the caller.
        unsafe { copy_out_len(&n, name, len) }?;
        Ok(0)
    })
}

/// `rbd_data.<id>`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_block_name_prefix(
    image: ImageT,
    prefix: *mut c_char,
    len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let i = info_of(img)?;
        // SAFETY: prefix valid for len bytes.
        unsafe { copy_out(&i.block_name_prefix, prefix, len) }?;
        Ok(0)
    })
}

/// Parent overlap (0 for non-clones).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_overlap(image: ImageT, overlap: *mut u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(overlap)?;
        let v = match parent_of(img) {
            Ok(p) => p.overlap,
            Err(e) if e.errno == Errno::ENOENT => 0,
            Err(e) => return Err(e),
        };
        // SAFETY: non-null.
        unsafe { *overlap = v };
        Ok(0)
    })
}

/// Parent pool/image/snap names; -ENOENT for non-clones; NULL/0 buffers OK.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_parent_info(
    image: ImageT,
    pool: *mut c_char,
    pool_len: usize,
    name: *mut c_char,
    name_len: usize,
    snap: *mut c_char,
    snap_len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let p = parent_of(img)?;
        for (s, buf, len) in [
            (&p.pool_name, pool, pool_len),
            (&p.image_name, name, name_len),
            (&p.snap_name, snap, snap_len),
        ] {
            if !buf.is_null() {
                // SAFETY: buf valid for len bytes.
                unsafe { copy_out(s, buf, len) }?;
            }
        }
        Ok(0)
    })
}

/// Parent image and snapshot specs (strings freed by the cleanup calls).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_parent(
    image: ImageT,
    parent: *mut RbdLinkedImageSpec,
    snap: *mut RbdSnapSpec,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(parent)?;
        nonnull(snap)?;
        let p = parent_of(img)?;
        // SAFETY: both out-pointers non-null.
        unsafe {
            parent.write(RbdLinkedImageSpec {
                pool_id: p.pool_id,
                pool_name: c_strdup(&p.pool_name),
                pool_namespace: c_strdup(&p.pool_namespace),
                image_id: c_strdup(&p.image_id),
                image_name: c_strdup(&p.image_name),
                trash: p.in_trash,
            });
            snap.write(RbdSnapSpec {
                id: p.snap_id,
                namespace_type: 0,
                name: c_strdup(&p.snap_name),
            });
        }
        Ok(0)
    })
}

fn linked_specs(
    image: ImageT,
    images: *mut RbdLinkedImageSpec,
    max_images: *mut usize,
    descendants: bool,
) -> CResult<i32> {
    // SAFETY: handle from the caller.
    let img = unsafe { img_of(image) }?;
    nonnull(max_images)?;
    let b = img.backend.clone();
    let list = rt::block_on(async move { b.children(descendants).await })?;
    // SAFETY: the caller's array and count.
    unsafe {
        array_out(&list, images, max_images, |c| RbdLinkedImageSpec {
            pool_id: c.pool_id,
            pool_name: c_strdup(&c.pool_name),
            pool_namespace: c_strdup(&c.namespace),
            image_id: c_strdup(&c.image_id),
            image_name: c_strdup(&c.image_name),
            trash: c.in_trash,
        })
    }?;
    Ok(0)
}

/// Clones of the image's snapshot (of every snapshot at the head);
/// `-ERANGE` with `*max_images` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_list_children3(
    image: ImageT,
    images: *mut RbdLinkedImageSpec,
    max_images: *mut usize,
) -> c_int {
    int(|| linked_specs(image, images, max_images, false))
}

/// [`rbd_list_children3`] with the clones' clones, and so on.
#[no_mangle]
pub unsafe extern "C" fn rbd_list_descendants(
    image: ImageT,
    images: *mut RbdLinkedImageSpec,
    max_images: *mut usize,
) -> c_int {
    int(|| linked_specs(image, images, max_images, true))
}

/// Free the strings of `num` specs filled by [`rbd_list_children3`].
#[no_mangle]
pub unsafe extern "C" fn rbd_linked_image_spec_list_cleanup(
    images: *mut RbdLinkedImageSpec,
    num: usize,
) {
    guard((), || {
        if images.is_null() {
            return;
        }
        for i in 0..num {
            // SAFETY: images has num entries filled by us.
            unsafe { rbd_linked_image_spec_cleanup(images.add(i)) };
        }
    })
}

/// Free the strings of a linked image spec.
#[no_mangle]
pub unsafe extern "C" fn rbd_linked_image_spec_cleanup(spec: *mut RbdLinkedImageSpec) {
    guard((), || {
        if spec.is_null() {
            return;
        }
        // SAFETY: spec points to a struct filled by us; strings from malloc.
        unsafe {
            let s = &mut *spec;
            for p in [
                &mut s.pool_name,
                &mut s.pool_namespace,
                &mut s.image_id,
                &mut s.image_name,
            ] {
                c_free(*p);
                *p = std::ptr::null_mut();
            }
        }
    })
}

/// Free the name of a snap spec.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_spec_cleanup(spec: *mut RbdSnapSpec) {
    guard((), || {
        if spec.is_null() {
            return;
        }
        // SAFETY: spec filled by us; name from malloc.
        unsafe {
            c_free((*spec).name);
            (*spec).name = std::ptr::null_mut();
        }
    })
}

fn sync_resize(img: &Arc<Image>, size: u64, allow_shrink: bool) -> CResult<i32> {
    img.check_writable()?;
    let b = img.backend.clone();
    let i2 = img.clone();
    rt::block_on(async move {
        let barrier = i2.writes.barrier();
        i2.writes.wait_before(barrier).await;
        if !allow_shrink && size < b.info().await?.size {
            return Err(CError::new(Errno::EINVAL, "shrinking not allowed"));
        }
        b.resize(size).await
    })?;
    // `size` is raw; with encryption loaded the handle's size is the data
    // area's, which the backend's info reports.
    info_of(img)?;
    Ok(0)
}

/// Grow or shrink.
#[no_mangle]
pub unsafe extern "C" fn rbd_resize(image: ImageT, size: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        sync_resize(img, size, true)
    })
}

/// Resize with a shrink guard and progress callback.
#[no_mangle]
pub unsafe extern "C" fn rbd_resize2(
    image: ImageT,
    size: u64,
    allow_shrink: bool,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    let r = int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        sync_resize(img, size, allow_shrink)
    });
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Resize with a progress callback.
#[no_mangle]
pub unsafe extern "C" fn rbd_resize_with_progress(
    image: ImageT,
    size: u64,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_resize2(image, size, true, cb, cbdata) }
}

// ---- synchronous I/O ----

fn do_read(img: &Arc<Image>, off: u64, len: u64) -> CResult<Bytes> {
    let n = img.clip(off, len)?;
    if n == 0 {
        return Ok(Bytes::new());
    }
    let barrier = img.writes.barrier();
    let img2 = img.clone();
    rt::block_on(async move {
        img2.writes.wait_overlapping(barrier, off, off + n).await;
        img2.backend.read(off, n).await
    })
}

/// Read; returns the byte count (clipped at the end of the image).
#[no_mangle]
pub unsafe extern "C" fn rbd_read(image: ImageT, ofs: u64, len: usize, buf: *mut c_char) -> isize {
    ssize(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        if len > 0 {
            nonnull(buf)?;
        }
        let d = do_read(img, ofs, len as u64)?;
        let n = d.len().min(len);
        // SAFETY: buf valid for len >= n bytes.
        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), buf.cast::<u8>(), n) };
        Ok(n as isize)
    })
}

/// Read with op flags (ignored).
#[no_mangle]
pub unsafe extern "C" fn rbd_read2(
    image: ImageT,
    ofs: u64,
    len: usize,
    buf: *mut c_char,
    _op_flags: c_int,
) -> isize {
    // SAFETY: forwarded contract.
    unsafe { rbd_read(image, ofs, len, buf) }
}

/// A registered in-flight mutation; dropping it (also on a panic) ends it.
struct WriteTicket {
    img: Arc<Image>,
    id: u64,
}

impl WriteTicket {
    fn new(img: &Arc<Image>, off: u64, end: u64) -> WriteTicket {
        WriteTicket {
            img: img.clone(),
            id: img.writes.start(off, end),
        }
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        self.img.writes.end(self.id);
    }
}

/// A synchronous mutation of `[off, off+len)`, ordered after earlier
/// overlapping ones and acknowledged when durable.
fn mutate<F, Fut>(img: &Arc<Image>, off: u64, len: u64, f: F) -> CResult<()>
where
    F: FnOnce(Arc<dyn crate::engine::ImageBackend>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CResult<()>> + Send + 'static,
{
    img.check_writable()?;
    let end = off.saturating_add(len);
    let ticket = WriteTicket::new(img, off, end);
    let img2 = img.clone();
    rt::block_on(async move {
        img2.writes.wait_overlapping(ticket.id, off, end).await;
        let r = f(img2.backend.clone()).await;
        drop(ticket);
        r
    })
}

/// Write; returns the byte count (clipped at the end of the image).
#[no_mangle]
pub unsafe extern "C" fn rbd_write(
    image: ImageT,
    ofs: u64,
    len: usize,
    buf: *const c_char,
) -> isize {
    ssize(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let n = img.clip(ofs, len as u64)?;
        if n == 0 {
            return Ok(0);
        }
        nonnull(buf)?;
        // SAFETY: buf valid for len >= n bytes.
        let data = Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts(buf.cast::<u8>(), n as usize)
        });
        mutate(
            img,
            ofs,
            n,
            move |b| async move { b.write(ofs, data).await },
        )?;
        Ok(n as isize)
    })
}

/// Write with op flags (ignored; every write is durable on completion).
#[no_mangle]
pub unsafe extern "C" fn rbd_write2(
    image: ImageT,
    ofs: u64,
    len: usize,
    buf: *const c_char,
    _op_flags: c_int,
) -> isize {
    // SAFETY: forwarded contract.
    unsafe { rbd_write(image, ofs, len, buf) }
}

/// Discard; returns the length.
#[no_mangle]
pub unsafe extern "C" fn rbd_discard(image: ImageT, ofs: u64, len: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let n = img.clip(ofs, len)?;
        if n > 0 {
            mutate(img, ofs, n, move |b| async move { b.discard(ofs, n).await })?;
        }
        Ok(n.min(i32::MAX as u64) as i32)
    })
}

/// Zero a range; returns the length.
#[no_mangle]
pub unsafe extern "C" fn rbd_write_zeroes(
    image: ImageT,
    ofs: u64,
    len: usize,
    zero_flags: c_int,
    _op_flags: c_int,
) -> isize {
    ssize(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        if zero_flags & !RBD_WRITE_ZEROES_FLAG_THICK_PROVISION != 0 {
            return Err(Errno::EINVAL.into());
        }
        img.check_writable()?;
        let n = img.clip(ofs, len as u64)?;
        let thick = zero_flags & RBD_WRITE_ZEROES_FLAG_THICK_PROVISION != 0;
        if n > 0 {
            mutate(img, ofs, n, move |b| async move {
                b.write_zeroes(ofs, n, thick).await
            })?;
        }
        Ok(n as isize)
    })
}

/// Flush: every write completed before is durable when this returns.
#[no_mangle]
pub unsafe extern "C" fn rbd_flush(image: ImageT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.flushed.store(true, Ordering::Release);
        let barrier = img.writes.barrier();
        let i2 = img.clone();
        rt::block_on(async move {
            i2.writes.wait_before(barrier).await;
            i2.take_deferred_error()?;
            i2.backend.flush().await
        })?;
        Ok(0)
    })
}

/// Drop cached data and re-read the image header (after live migration).
#[no_mangle]
pub unsafe extern "C" fn rbd_invalidate_cache(image: ImageT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let i2 = img.clone();
        rt::block_on(async move {
            let barrier = i2.writes.barrier();
            i2.writes.wait_before(barrier).await;
            i2.backend.refresh().await
        })?;
        info_of(img)?;
        Ok(0)
    })
}

// ---- asynchronous I/O ----

/// Create a completion.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_create_completion(
    cb_arg: *mut c_void,
    complete_cb: Option<Callback>,
    c: *mut CompT,
) -> c_int {
    int(|| {
        nonnull(c)?;
        // SAFETY: c non-null caller storage.
        unsafe { *c = Completion::create(cb_arg, complete_cb, None) };
        Ok(0)
    })
}

/// Whether complete (already 1 inside the callback).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_is_complete(c: CompT) -> c_int {
    int(|| {
        nonnull(c)?;
        // SAFETY: live completion.
        Ok(unsafe { Completion::from_handle(c) }.is_complete() as i32)
    })
}

/// Wait until the callback has returned.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_wait_for_complete(c: CompT) -> c_int {
    int(|| {
        nonnull(c)?;
        // SAFETY: live completion.
        unsafe { Completion::from_handle(c) }.wait();
        Ok(0)
    })
}

/// Bytes for reads (clipped), 0 for other ops, or -errno.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_get_return_value(c: CompT) -> isize {
    ssize(|| {
        nonnull(c)?;
        // SAFETY: live completion.
        Ok(unsafe { Completion::from_handle(c) }.return_value() as isize)
    })
}

/// The `cb_arg` given at creation.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_get_arg(c: CompT) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        if c.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: live completion.
        unsafe { Completion::from_handle(c) }.arg()
    })
}

/// Release the caller's reference (safe inside the callback).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_release(c: CompT) {
    guard((), || {
        if !c.is_null() {
            // SAFETY: live completion; the caller gives up its count.
            unsafe { Completion::release(c) }
        }
    })
}

/// Take a completion for an accepted submission.
fn accept(c: CompT) -> CResult<Arc<Completion>> {
    nonnull(c)?;
    // SAFETY: live completion handle from the caller.
    Ok(unsafe { Completion::from_handle(c) })
}

fn events_of(img: &Image) -> Option<Arc<crate::completion::EventQueue>> {
    img.events.enabled().then(|| img.events.clone())
}

/// Submit a mutation of `[off, off+len)`: validated synchronously,
/// completed through `c`. With `may_ack_early` (plain writes) and a
/// write-around cache, the completion fires once the write holds its share
/// of `rbd_cache_max_dirty` and is queued behind earlier overlapping
/// mutations; a later failure is reported by the next flush.
#[allow(clippy::too_many_arguments)]
fn aio_mutation<F, Fut>(
    img: &Arc<Image>,
    c: CompT,
    check: CResult<()>,
    off: u64,
    len: u64,
    may_ack_early: bool,
    f: F,
) -> CResult<i32>
where
    F: FnOnce(Arc<dyn crate::engine::ImageBackend>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CResult<()>> + Send + 'static,
{
    let comp = accept(c)?;
    let ev = events_of(img);
    if let Err(e) = check.and_then(|_| img.check_writable()) {
        comp.finish(e.errno.negated() as i64, ev);
        return Ok(0);
    }
    let end = off.saturating_add(len);
    let ticket = WriteTicket::new(img, off, end);
    let budget = if may_ack_early {
        img.early_ack_budget(len)
    } else {
        None
    };
    let img2 = img.clone();
    let guard_comp = comp.clone();
    let guard_ev = ev.clone();
    rt::spawn_guarded(
        async move {
            let mut early = None;
            if let Some(sem) = budget {
                // len <= max_dirty <= u32::MAX (checked by early_ack_budget).
                if let Ok(permit) = sem.acquire_many_owned(len as u32).await {
                    comp.clone().finish(0, ev.clone());
                    early = Some(permit);
                }
            }
            img2.writes.wait_overlapping(ticket.id, off, end).await;
            let r = f(img2.backend.clone()).await;
            drop(ticket);
            match (early, r) {
                (Some(_permit), Ok(())) => {}
                (Some(_permit), Err(e)) => img2.defer_error(e),
                (None, r) => {
                    let ret = match r {
                        Ok(()) => 0,
                        Err(e) => e.errno.negated() as i64,
                    };
                    comp.finish(ret, ev);
                }
            }
        },
        move || guard_comp.finish(-5, guard_ev),
    );
    Ok(0)
}

/// Scatter targets of a read, as `(address, length)` pairs.
type Scatter = Vec<(usize, usize)>;

fn aio_read_impl(img: &Arc<Image>, c: CompT, off: u64, targets: Scatter) -> CResult<i32> {
    let comp = accept(c)?;
    let ev = events_of(img);
    let total: u64 = targets.iter().map(|t| t.1 as u64).sum();
    let n = match img.clip(off, total) {
        Ok(n) => n,
        Err(e) => {
            comp.finish(e.errno.negated() as i64, ev);
            return Ok(0);
        }
    };
    let barrier = img.writes.barrier();
    let img2 = img.clone();
    let guard_comp = comp.clone();
    let guard_ev = ev.clone();
    rt::spawn_guarded(
        async move {
            let r = if n == 0 {
                Ok(Bytes::new())
            } else {
                img2.writes.wait_overlapping(barrier, off, off + n).await;
                img2.backend.read(off, n).await
            };
            let ret = match r {
                Ok(data) => {
                    let mut pos = 0usize;
                    for (addr, len) in targets {
                        if pos >= data.len() {
                            break;
                        }
                        let k = len.min(data.len() - pos);
                        // SAFETY: the caller keeps each buffer valid for its
                        // length until the completion fires (librbd contract).
                        unsafe {
                            std::ptr::copy_nonoverlapping(data[pos..].as_ptr(), addr as *mut u8, k)
                        };
                        pos += k;
                    }
                    pos as i64
                }
                Err(e) => e.errno.negated() as i64,
            };
            comp.finish(ret, ev);
        },
        move || guard_comp.finish(-5, guard_ev),
    );
    Ok(0)
}

/// Asynchronous read.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_read(
    image: ImageT,
    off: u64,
    len: usize,
    buf: *mut c_char,
    c: CompT,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        if len > 0 {
            nonnull(buf)?;
        }
        aio_read_impl(img, c, off, vec![(buf as usize, len)])
    })
}

/// Asynchronous read with op flags (ignored).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_read2(
    image: ImageT,
    off: u64,
    len: usize,
    buf: *mut c_char,
    c: CompT,
    _op_flags: c_int,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_aio_read(image, off, len, buf, c) }
}

/// Copy an iovec array (validated) at submit time.
///
/// # Safety
/// `iov` must be valid for `iovcnt` entries.
unsafe fn iovecs(iov: *const libc::iovec, iovcnt: c_int) -> CResult<Scatter> {
    if iovcnt < 0 {
        return Err(Errno::EINVAL.into());
    }
    if iovcnt == 0 {
        return Ok(Vec::new());
    }
    nonnull(iov)?;
    // SAFETY: iov valid for iovcnt entries per the caller.
    let v = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        if e.iov_len > 0 && e.iov_base.is_null() {
            return Err(Errno::EINVAL.into());
        }
        out.push((e.iov_base as usize, e.iov_len));
    }
    Ok(out)
}

/// Asynchronous vectored read.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_readv(
    image: ImageT,
    iov: *const libc::iovec,
    iovcnt: c_int,
    off: u64,
    c: CompT,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: iov valid for iovcnt entries.
        let targets = unsafe { iovecs(iov, iovcnt) }?;
        aio_read_impl(img, c, off, targets)
    })
}

fn aio_write_impl(img: &Arc<Image>, c: CompT, off: u64, data: Bytes) -> CResult<i32> {
    let clipped = img.clip(off, data.len() as u64);
    let (check, data) = match clipped {
        Ok(n) => (Ok(()), data.slice(..n as usize)),
        Err(e) => (Err(e), Bytes::new()),
    };
    let n = data.len() as u64;
    aio_mutation(img, c, check, off, n, true, move |b| async move {
        if data.is_empty() {
            Ok(())
        } else {
            b.write(off, data).await
        }
    })
}

/// Asynchronous write.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_write(
    image: ImageT,
    off: u64,
    len: usize,
    buf: *const c_char,
    c: CompT,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let data = if len == 0 {
            Bytes::new()
        } else {
            nonnull(buf)?;
            // SAFETY: buf valid for len bytes; copied now.
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
        };
        aio_write_impl(img, c, off, data)
    })
}

/// Asynchronous write with op flags (ignored).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_write2(
    image: ImageT,
    off: u64,
    len: usize,
    buf: *const c_char,
    c: CompT,
    _op_flags: c_int,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_aio_write(image, off, len, buf, c) }
}

/// Asynchronous vectored write (data gathered at submit).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_writev(
    image: ImageT,
    iov: *const libc::iovec,
    iovcnt: c_int,
    off: u64,
    c: CompT,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: iov valid for iovcnt entries.
        let v = unsafe { iovecs(iov, iovcnt) }?;
        let total: usize = v.iter().map(|e| e.1).sum();
        let mut buf = BytesMut::with_capacity(total);
        for (addr, len) in v {
            if len > 0 {
                // SAFETY: each iovec buffer is valid for its length.
                buf.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(addr as *const u8, len)
                });
            }
        }
        aio_write_impl(img, c, off, buf.freeze())
    })
}

/// Asynchronous discard.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_discard(image: ImageT, off: u64, len: u64, c: CompT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let (check, n) = match img.clip(off, len) {
            Ok(n) => (Ok(()), n),
            Err(e) => (Err(e), 0),
        };
        aio_mutation(img, c, check, off, n, false, move |b| async move {
            if n == 0 {
                Ok(())
            } else {
                b.discard(off, n).await
            }
        })
    })
}

/// Asynchronous zeroing (`THICK_PROVISION` writes real zeros).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_write_zeroes(
    image: ImageT,
    off: u64,
    len: usize,
    c: CompT,
    zero_flags: c_int,
    _op_flags: c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let thick = zero_flags & RBD_WRITE_ZEROES_FLAG_THICK_PROVISION != 0;
        let (check, n) = if zero_flags & !RBD_WRITE_ZEROES_FLAG_THICK_PROVISION != 0 {
            (Err(CError::new(Errno::EINVAL, "unknown zero flags")), 0)
        } else {
            match img.clip(off, len as u64) {
                Ok(n) => (Ok(()), n),
                Err(e) => (Err(e), 0),
            }
        };
        aio_mutation(img, c, check, off, n, false, move |b| async move {
            if n == 0 {
                Ok(())
            } else {
                b.write_zeroes(off, n, thick).await
            }
        })
    })
}

/// Asynchronous flush: completes after every earlier write completed and
/// the engine made them durable.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_flush(image: ImageT, c: CompT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let comp = accept(c)?;
        let ev = events_of(img);
        img.flushed.store(true, Ordering::Release);
        let barrier = img.writes.barrier();
        let img2 = img.clone();
        let guard_comp = comp.clone();
        let guard_ev = ev.clone();
        rt::spawn_guarded(
            async move {
                img2.writes.wait_before(barrier).await;
                let r = match img2.take_deferred_error() {
                    Ok(()) => img2.backend.flush().await,
                    Err(e) => Err(e),
                };
                let ret = match r {
                    Ok(()) => 0,
                    Err(e) => e.errno.negated() as i64,
                };
                comp.finish(ret, ev);
            },
            move || guard_comp.finish(-5, guard_ev),
        );
        Ok(0)
    })
}

/// Register an eventfd (type 2) or pipe (type 1) for poll-mode completion.
#[no_mangle]
pub unsafe extern "C" fn rbd_set_image_notification(image: ImageT, fd: c_int, ty: c_int) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        if ty != EVENT_TYPE_EVENTFD && ty != EVENT_TYPE_PIPE {
            return Err(Errno::EINVAL.into());
        }
        img.events.set_notification(fd, ty);
        Ok(0)
    })
}

/// Pop up to `numcomp` completed completions; returns the count.
#[no_mangle]
pub unsafe extern "C" fn rbd_poll_io_events(
    image: ImageT,
    comps: *mut CompT,
    numcomp: c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        if numcomp <= 0 {
            return Ok(0);
        }
        nonnull(comps)?;
        let got = img.events.pop(numcomp as usize);
        for (i, c) in got.iter().enumerate() {
            // SAFETY: comps has room for numcomp >= got.len() entries.
            unsafe { *comps.add(i) = *c };
        }
        Ok(got.len() as i32)
    })
}

// ---- snapshots ----

fn snaps_of(img: &Arc<Image>) -> CResult<Vec<crate::engine::SnapInfo>> {
    let b = img.backend.clone();
    rt::block_on(async move { b.snap_list().await })
}

/// List snapshots: `-ERANGE` with `*max_snaps = n + 1` when short; else
/// fills `n` entries plus a zeroed sentinel and returns `n`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_list(
    image: ImageT,
    snaps: *mut RbdSnapInfo,
    max_snaps: *mut c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(max_snaps)?;
        // SAFETY: non-null.
        let max = unsafe { *max_snaps };
        let list = snaps_of(img)?;
        if !snaps.is_null() && max > 0 {
            // SAFETY: snaps has room for max entries; zeroed is valid.
            unsafe { std::ptr::write_bytes(snaps, 0, max as usize) };
        }
        let need = list.len() + 1;
        if max < 0 || (max as usize) < need || snaps.is_null() {
            // SAFETY: non-null.
            unsafe { *max_snaps = need as c_int };
            return Err(Errno::ERANGE.into());
        }
        for (i, s) in list.iter().enumerate() {
            // SAFETY: i < max.
            unsafe {
                snaps.add(i).write(RbdSnapInfo {
                    id: s.id,
                    size: s.size,
                    name: c_strdup(&s.name),
                })
            };
        }
        // SAFETY: list.len() < max.
        unsafe {
            snaps.add(list.len()).write(RbdSnapInfo {
                id: 0,
                size: 0,
                name: std::ptr::null(),
            })
        };
        Ok(list.len() as i32)
    })
}

/// Free the names of a snapshot list, up to the sentinel.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_list_end(snaps: *mut RbdSnapInfo) {
    guard((), || {
        if snaps.is_null() {
            return;
        }
        let mut i = 0;
        loop {
            // SAFETY: the list was filled by rbd_snap_list and ends with a
            // NULL-name sentinel.
            let e = unsafe { &mut *snaps.add(i) };
            if e.name.is_null() {
                break;
            }
            // SAFETY: name from c_strdup.
            unsafe { c_free(e.name as *mut c_char) };
            e.name = std::ptr::null();
            i += 1;
        }
    })
}

macro_rules! snap_op {
    ($(#[$m:meta])* $name:ident, $method:ident, $writes:expr) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(image: ImageT, snap: *const c_char) -> c_int {
            int(|| {
                // SAFETY: handle and C string from the caller.
                let img = unsafe { img_of(image) }?;
                // SAFETY: as above.
                let snap = unsafe { req_str(snap) }?.to_string();
                if $writes {
                    img.check_writable()?;
                }
                let i2 = img.clone();
                rt::block_on(async move {
                    let barrier = i2.writes.barrier();
                    i2.writes.wait_before(barrier).await;
                    i2.backend.$method(&snap).await
                })?;
                Ok(0)
            })
        }
    };
}

snap_op!(
    /// Create a snapshot (after in-flight writes complete).
    rbd_snap_create, snap_create, true);
snap_op!(
    /// Remove a snapshot.
    rbd_snap_remove, snap_remove, true);
snap_op!(
    /// Protect a snapshot.
    rbd_snap_protect, snap_protect, false);
snap_op!(
    /// Unprotect a snapshot.
    rbd_snap_unprotect, snap_unprotect, false);

/// Create a snapshot with flags and progress (flags accepted).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_create2(
    image: ImageT,
    snap: *const c_char,
    _flags: u32,
    _cb: *mut c_void,
    _cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_snap_create(image, snap) }
}

/// Remove a snapshot with flags (`RBD_SNAP_REMOVE_UNPROTECT` honoured).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_remove2(
    image: ImageT,
    snap: *const c_char,
    flags: u32,
    _cb: *mut c_void,
    _cbdata: *mut c_void,
) -> c_int {
    if flags & 1 != 0 {
        // SAFETY: forwarded contract.
        let r = unsafe { rbd_snap_unprotect(image, snap) };
        if r < 0 && r != -libc::EINVAL {
            return r;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { rbd_snap_remove(image, snap) }
}

/// Roll the head back to a snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_rollback(image: ImageT, snap: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let snap = unsafe { req_str(snap) }?.to_string();
        img.check_writable()?;
        let i2 = img.clone();
        rt::block_on(async move {
            let barrier = i2.writes.barrier();
            i2.writes.wait_before(barrier).await;
            i2.backend.snap_rollback(&snap).await
        })?;
        info_of(img)?;
        Ok(0)
    })
}

/// Switch the handle to the snapshot named `snap` (NULL: back to the head),
/// as librbd: reads then see the snapshot and its size, writes are refused
/// with `-EROFS` until the head is set again; `-ENOENT` for an unknown
/// snapshot (the handle stays where it was). In-flight writes finish first.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_set(image: ImageT, snap: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string (or NULL) from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let spec = unsafe { opt_str(snap) }?.map(|s| quarry_rbd::SnapSpec::Name(s.to_string()));
        set_snap(img, spec)
    })
}

/// [`rbd_snap_set`] by snapshot id (`CEPH_NOSNAP`: back to the head).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_set_by_id(image: ImageT, snap_id: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        let spec = (snap_id != quarry_rados::NOSNAP).then_some(quarry_rbd::SnapSpec::Id(snap_id));
        set_snap(img, spec)
    })
}

fn set_snap(img: &Arc<Image>, spec: Option<quarry_rbd::SnapSpec>) -> CResult<i32> {
    use std::sync::atomic::Ordering;
    let to_snap = spec.is_some();
    // Refuse writes before the view changes (a write cached for write-back
    // after it would fail at the snapshot once acknowledged); allow them
    // again only once the head is back.
    let was = if to_snap {
        img.at_snap.swap(true, Ordering::AcqRel)
    } else {
        img.at_snap.load(Ordering::Acquire)
    };
    let i2 = img.clone();
    let r = rt::block_on(async move {
        let barrier = i2.writes.barrier();
        i2.writes.wait_before(barrier).await;
        i2.backend.set_snap(spec).await
    });
    match r {
        Ok(()) => img.at_snap.store(to_snap, Ordering::Release),
        Err(e) => {
            img.at_snap.store(was, Ordering::Release);
            return Err(e);
        }
    }
    info_of(img)?;
    Ok(0)
}

/// Rename a snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_rename(
    image: ImageT,
    from: *const c_char,
    to: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let from = unsafe { req_str(from) }?.to_string();
        // SAFETY: as above.
        let to = unsafe { req_str(to) }?.to_string();
        let b = img.backend.clone();
        rt::block_on(async move { b.snap_rename(&from, &to).await })?;
        Ok(0)
    })
}

/// Whether a snapshot is protected.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_is_protected(
    image: ImageT,
    snap: *const c_char,
    is_protected: *mut c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let snap = unsafe { req_str(snap) }?;
        nonnull(is_protected)?;
        let s = snaps_of(img)?
            .into_iter()
            .find(|s| s.name == snap)
            .ok_or(Errno::ENOENT)?;
        // SAFETY: non-null.
        unsafe { *is_protected = s.protected as c_int };
        Ok(0)
    })
}

/// Whether a snapshot exists.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_exists(
    image: ImageT,
    snap: *const c_char,
    exists: *mut bool,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let snap = unsafe { req_str(snap) }?;
        nonnull(exists)?;
        let e = snaps_of(img)?.iter().any(|s| s.name == snap);
        // SAFETY: non-null.
        unsafe { *exists = e };
        Ok(0)
    })
}

/// Snapshot id by name.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_id(
    image: ImageT,
    snap: *const c_char,
    id: *mut u64,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let snap = unsafe { req_str(snap) }?;
        nonnull(id)?;
        let s = snaps_of(img)?
            .into_iter()
            .find(|s| s.name == snap)
            .ok_or(Errno::ENOENT)?;
        // SAFETY: non-null.
        unsafe { *id = s.id };
        Ok(0)
    })
}

/// Snapshot name by id; `*len` updated, -ERANGE if short.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_name(
    image: ImageT,
    id: u64,
    name: *mut c_char,
    len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(len)?;
        let s = snaps_of(img)?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(Errno::ENOENT)?;
        // SAFETY: name valid for *len bytes, per the caller.
        unsafe { copy_out_len(&s.name, name, len) }?;
        Ok(0)
    })
}

/// Snapshot creation time.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_timestamp(
    image: ImageT,
    id: u64,
    ts: *mut libc::timespec,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(ts)?;
        let s = snaps_of(img)?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(Errno::ENOENT)?;
        // SAFETY: non-null.
        unsafe {
            (*ts).tv_sec = s.timestamp as libc::time_t;
            (*ts).tv_nsec = 0;
        }
        Ok(0)
    })
}

/// The image's snapshot limit (`UINT64_MAX`: none).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_limit(image: ImageT, limit: *mut u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(limit)?;
        let l = img.backend.snap_limit()?;
        // SAFETY: non-null.
        unsafe { *limit = l };
        Ok(0)
    })
}

/// Set the image's snapshot limit (`UINT64_MAX` removes it; `-ERANGE`
/// below the current count).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_set_limit(image: ImageT, limit: u64) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let b = img.backend.clone();
        rt::block_on(async move { b.set_snap_limit(limit).await })?;
        Ok(0)
    })
}

/// Copy up all parent data and detach from the parent.
#[no_mangle]
pub unsafe extern "C" fn rbd_flatten(image: ImageT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let b = img.backend.clone();
        rt::block_on(async move { b.flatten().await })?;
        Ok(0)
    })
}

/// Make the head's object map again from the objects that exist (for a
/// lost or damaged map); `-EINVAL` without the object-map feature. The
/// progress callback is called once, at the end.
#[no_mangle]
pub unsafe extern "C" fn rbd_rebuild_object_map(
    image: ImageT,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    let r = int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let b = img.backend.clone();
        rt::block_on(async move { b.rebuild_object_map().await })?;
        Ok(0)
    });
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Flatten with a progress callback (called once at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_flatten_with_progress(
    image: ImageT,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    let r = unsafe { rbd_flatten(image) };
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Deallocate the image's zeroed data in chunks of `sparse_size` bytes (a
/// power of two, at least 4096; `-EINVAL` otherwise); reads are unchanged.
#[no_mangle]
pub unsafe extern "C" fn rbd_sparsify(image: ImageT, sparse_size: usize) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        let b = img.backend.clone();
        rt::block_on(async move { b.sparsify(sparse_size as u64).await })?;
        Ok(0)
    })
}

/// [`rbd_sparsify`] with a progress callback (called once, at the end).
#[no_mangle]
pub unsafe extern "C" fn rbd_sparsify_with_progress(
    image: ImageT,
    sparse_size: usize,
    cb: Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>,
    cbdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    let r = unsafe { rbd_sparsify(image, sparse_size) };
    // SAFETY: the caller's callback and data.
    unsafe { crate::util::progress_done(r, cb, cbdata) }
}

/// Report allocated (or changed since `fromsnap`) extents in increasing,
/// non-overlapping order; a negative callback return stops and is returned.
#[no_mangle]
pub unsafe extern "C" fn rbd_diff_iterate2(
    image: ImageT,
    fromsnap: *const c_char,
    ofs: u64,
    len: u64,
    include_parent: u8,
    whole_object: u8,
    cb: Option<unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int>,
    arg: *mut c_void,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let from = unsafe { opt_str(fromsnap) }?.map(str::to_string);
        let cb = cb.ok_or(Errno::EINVAL)?;
        let size = img.size();
        let end = ofs.saturating_add(len).min(size.max(ofs));
        if len == 0 || ofs >= end {
            return Ok(0);
        }
        let b = img.backend.clone();
        let mut ext = rt::block_on(async move {
            b.diff(
                from.as_deref(),
                ofs,
                end - ofs,
                include_parent != 0,
                whole_object != 0,
            )
            .await
        })?;
        ext.sort_by_key(|e| e.off);
        let mut next = ofs;
        for e in ext {
            // Clip into the range and past what was already reported, so
            // the callbacks are strictly increasing and non-overlapping.
            let s = e.off.max(next);
            let t = e.off.saturating_add(e.len).min(end);
            if t <= s {
                continue;
            }
            // SAFETY: user callback with user data.
            let r = unsafe { cb(s, (t - s) as usize, e.exists as c_int, arg) };
            if r < 0 {
                return Ok(r);
            }
            next = t;
        }
        Ok(0)
    })
}

/// Older diff API (whole_object = 0).
#[no_mangle]
pub unsafe extern "C" fn rbd_diff_iterate(
    image: ImageT,
    fromsnap: *const c_char,
    ofs: u64,
    len: u64,
    cb: Option<unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int>,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_diff_iterate2(image, fromsnap, ofs, len, 1, 0, cb, arg) }
}

// ---- pool level ----

fn list_of(io: IoCtxT) -> CResult<Vec<(String, String)>> {
    // SAFETY: handle from the caller.
    let io = unsafe { ioctx(io) }?;
    let engine = io.conn.engine.clone();
    let target = io.target();
    rt::block_on(async move { engine.list(&target).await })
}

/// Image names, NUL-separated; `-ERANGE` with `*size` set when short;
/// returns the number of bytes used.
#[no_mangle]
pub unsafe extern "C" fn rbd_list(io: IoCtxT, names: *mut c_char, size: *mut usize) -> c_int {
    int(|| {
        nonnull(size)?;
        let list = list_of(io)?;
        // SAFETY: the caller's buffer and size.
        let used = unsafe { names_out(list.iter().map(|(_, n)| n.as_str()), names, size) }?;
        Ok(i32::try_from(used).unwrap_or(i32::MAX))
    })
}

/// Image specs; `-ERANGE` with `*max_images` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_list2(
    io: IoCtxT,
    images: *mut RbdImageSpec,
    max_images: *mut usize,
) -> c_int {
    int(|| {
        nonnull(max_images)?;
        let list = list_of(io)?;
        // SAFETY: the caller's array and count.
        unsafe {
            array_out(&list, images, max_images, |(id, name)| RbdImageSpec {
                id: c_strdup(id),
                name: c_strdup(name),
            })
        }?;
        Ok(0)
    })
}

/// Free the strings of an image spec list.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_spec_list_cleanup(images: *mut RbdImageSpec, num: usize) {
    guard((), || {
        if images.is_null() {
            return;
        }
        for i in 0..num {
            // SAFETY: images has num entries filled by rbd_list2.
            unsafe {
                let e = &mut *images.add(i);
                c_free(e.id);
                c_free(e.name);
                e.id = std::ptr::null_mut();
                e.name = std::ptr::null_mut();
            }
        }
    })
}

/// Free one image spec's strings.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_spec_cleanup(image: *mut RbdImageSpec) {
    // SAFETY: forwarded contract.
    unsafe { rbd_image_spec_list_cleanup(image, 1) }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn clone_impl(
    p_io: IoCtxT,
    p_name: *const c_char,
    p_snap: *const c_char,
    c_io: IoCtxT,
    c_name: *const c_char,
    features: Option<u64>,
    c_order: *mut c_int,
    stripe: (u64, u64),
) -> CResult<i32> {
    // SAFETY: handles and C strings from the caller.
    let pio = unsafe { ioctx(p_io) }?;
    // SAFETY: as above.
    let cio = unsafe { ioctx(c_io) }?;
    // SAFETY: as above.
    let p_name = unsafe { req_str(p_name) }?.to_string();
    // SAFETY: as above.
    let p_snap = unsafe { req_str(p_snap) }?.to_string();
    // SAFETY: as above.
    let c_name = unsafe { req_str(c_name) }?.to_string();
    let conf = lock(&cio.cluster.conf).clone();
    let order = if c_order.is_null() {
        0
    } else {
        // SAFETY: non-null.
        unsafe { *c_order }
    };
    if order != 0 && !(12..=25).contains(&order) {
        return Err(CError::new(Errno::EDOM, "order out of range"));
    }
    let opts = CreateOpts {
        size: 0,
        order: order as u32,
        features: match features {
            Some(f) => f,
            None => conf.get_u64("rbd_default_features"),
        },
        stripe_unit: stripe.0,
        stripe_count: stripe.1,
    };
    let engine = cio.conn.engine.clone();
    let (pt, ct): (IoTarget, IoTarget) = (pio.target(), cio.target());
    rt::block_on(async move {
        engine
            .clone_image(&pt, &p_name, &p_snap, &ct, &c_name, &opts)
            .await
    })?;
    Ok(0)
}

/// Clone `parent@snap` (v1 semantics: the snapshot must be protected).
#[no_mangle]
pub unsafe extern "C" fn rbd_clone(
    p_io: IoCtxT,
    p_name: *const c_char,
    p_snap: *const c_char,
    c_io: IoCtxT,
    c_name: *const c_char,
    features: u64,
    c_order: *mut c_int,
) -> c_int {
    int(|| {
        clone_impl(
            p_io,
            p_name,
            p_snap,
            c_io,
            c_name,
            Some(features),
            c_order,
            (0, 0),
        )
    })
}

/// Clone with striping.
#[no_mangle]
pub unsafe extern "C" fn rbd_clone2(
    p_io: IoCtxT,
    p_name: *const c_char,
    p_snap: *const c_char,
    c_io: IoCtxT,
    c_name: *const c_char,
    features: u64,
    c_order: *mut c_int,
    stripe_unit: u64,
    stripe_count: c_int,
) -> c_int {
    int(|| {
        clone_impl(
            p_io,
            p_name,
            p_snap,
            c_io,
            c_name,
            Some(features),
            c_order,
            (stripe_unit, stripe_count.max(0) as u64),
        )
    })
}

/// Whether a namespace exists (`""` → -EINVAL).
#[no_mangle]
pub unsafe extern "C" fn rbd_namespace_exists(
    io: IoCtxT,
    name: *const c_char,
    exists: *mut bool,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        nonnull(exists)?;
        if name.is_empty() {
            return Err(Errno::EINVAL.into());
        }
        let engine = io.conn.engine.clone();
        let pool = io.pool;
        let e = rt::block_on(async move { engine.namespace_exists(pool, &name).await })?;
        // SAFETY: non-null.
        unsafe { *exists = e };
        Ok(0)
    })
}

/// Create a namespace.
#[no_mangle]
pub unsafe extern "C" fn rbd_namespace_create(io: IoCtxT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        if name.is_empty() {
            return Err(Errno::EINVAL.into());
        }
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.namespace_create(&target, &name).await })?;
        Ok(0)
    })
}

/// Remove an empty namespace.
#[no_mangle]
pub unsafe extern "C" fn rbd_namespace_remove(io: IoCtxT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        if name.is_empty() {
            return Err(Errno::EINVAL.into());
        }
        let engine = io.conn.engine.clone();
        let target = io.target();
        rt::block_on(async move { engine.namespace_remove(&target, &name).await })?;
        Ok(0)
    })
}

/// Namespace names, NUL-separated; `-ERANGE` with `*size` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_namespace_list(
    io: IoCtxT,
    names: *mut c_char,
    size: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        nonnull(size)?;
        let engine = io.conn.engine.clone();
        let target = io.target();
        let list = rt::block_on(async move { engine.namespace_list(&target).await })?;
        let mut out = Vec::new();
        for n in &list {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        // SAFETY: non-null.
        let have = unsafe { *size };
        // SAFETY: non-null.
        unsafe { *size = out.len() };
        if have < out.len() {
            return Err(Errno::ERANGE.into());
        }
        if !out.is_empty() {
            nonnull(names)?;
            // SAFETY: names holds have >= out.len() bytes.
            unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), names.cast::<u8>(), out.len()) };
        }
        Ok(out.len() as c_int)
    })
}

// ---- metadata ----

/// Image metadata value; `*len` updated, -ERANGE if short.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_get(
    image: ImageT,
    key: *const c_char,
    value: *mut c_char,
    len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        nonnull(len)?;
        let b = img.backend.clone();
        let v = rt::block_on(async move { b.metadata_get(&key).await })?;
        // SAFETY: value valid for *len bytes, per the caller.
        unsafe { copy_out_len(&v, value, len) }?;
        Ok(0)
    })
}

/// Set image metadata.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_set(
    image: ImageT,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        // SAFETY: as above.
        let value = unsafe { req_str(value) }?.to_string();
        let b = img.backend.clone();
        rt::block_on(async move { b.metadata_set(&key, &value).await })?;
        Ok(0)
    })
}

/// Remove image metadata.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_remove(image: ImageT, key: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(key) }?.to_string();
        let b = img.backend.clone();
        rt::block_on(async move { b.metadata_remove(&key).await })?;
        Ok(0)
    })
}

/// List image metadata after `start` (at most `max`, 0 = all): keys and
/// values as NUL-separated lists; `-ERANGE` with both lengths set if short.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_list(
    image: ImageT,
    start: *const c_char,
    max: u64,
    keys: *mut c_char,
    key_len: *mut usize,
    values: *mut c_char,
    vals_len: *mut usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: as above.
        let start = unsafe { opt_str(start) }?.unwrap_or("").to_string();
        nonnull(key_len)?;
        nonnull(vals_len)?;
        let b = img.backend.clone();
        let all = rt::block_on(async move { b.metadata_list().await })?;
        // SAFETY: the caller's buffers, as this call's contract.
        unsafe { fill_kv_list(&all, &start, max, keys, key_len, values, vals_len) }
    })
}

/// The entries of `all` after `start` (at most `max`, 0 = all) as two
/// NUL-separated lists into `keys`/`values`, whose capacities `*key_len`/
/// `*vals_len` say; both lengths needed are written back, and `-ERANGE`
/// returned if either is short (librbd's metadata listings).
///
/// # Safety
/// `key_len`/`vals_len` non-null; the buffers valid for their lengths.
pub(crate) unsafe fn fill_kv_list(
    all: &[(String, String)],
    start: &str,
    max: u64,
    keys: *mut c_char,
    key_len: *mut usize,
    values: *mut c_char,
    vals_len: *mut usize,
) -> CResult<i32> {
    let mut k = Vec::new();
    let mut v = Vec::new();
    for (key, val) in all
        .iter()
        .filter(|(key, _)| start.is_empty() || key.as_str() > start)
        .take(if max == 0 { usize::MAX } else { max as usize })
    {
        k.extend_from_slice(key.as_bytes());
        k.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    // SAFETY: both length pointers non-null (the caller's contract).
    let (have_k, have_v) = unsafe { (*key_len, *vals_len) };
    // SAFETY: as above.
    unsafe {
        *key_len = k.len();
        *vals_len = v.len();
    }
    if have_k < k.len() || have_v < v.len() {
        return Err(Errno::ERANGE.into());
    }
    for (src, dst) in [(&k, keys), (&v, values)] {
        if !src.is_empty() {
            nonnull(dst)?;
            // SAFETY: dst has room for src.len() bytes (checked above).
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.cast::<u8>(), src.len()) };
        }
    }
    Ok(0)
}

/// Namespace type of a snapshot: user (0), or group (1) for a group
/// snapshot's image snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_namespace_type(
    image: ImageT,
    snap_id: u64,
    ty: *mut c_int,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        nonnull(ty)?;
        let snaps = snaps_of(img)?;
        let Some(s) = snaps.iter().find(|s| s.id == snap_id) else {
            return Err(Errno::ENOENT.into());
        };
        let t = if s.group.is_some() { 1 } else { 0 };
        // SAFETY: non-null.
        unsafe { *ty = t };
        Ok(0)
    })
}

// ---- deliberately unsupported ----

// ---- encryption (see crypto.rs) ----

use zeroize::Zeroizing;

/// librbd's `rbd_encryption_luks1_format_options_t` and `..._luks2_...`.
#[repr(C)]
struct LuksFormatOptions {
    alg: c_int,
    passphrase: *const c_char,
    passphrase_size: usize,
}

/// librbd's `rbd_encryption_luks_format_options_t` (load either version).
#[repr(C)]
struct LuksAnyOptions {
    passphrase: *const c_char,
    passphrase_size: usize,
}

/// librbd's `rbd_encryption_spec_t`.
#[repr(C)]
struct EncryptionSpec {
    format: c_int,
    opts: *mut c_void,
    opts_size: usize,
}

/// `RBD_ENCRYPTION_FORMAT_LUKS1/LUKS2/LUKS` as (version or either, the
/// passphrase, the algorithm of a new header).
type EncryptionArgs = (
    Option<quarry_luks::Format>,
    Zeroizing<Vec<u8>>,
    Option<quarry_luks::Alg>,
);

/// Read an options struct of `format` (`EINVAL` on a size mismatch, an
/// unknown format or algorithm, as librbd).
///
/// # Safety
/// `opts` points to `opts_size` readable bytes.
unsafe fn encryption_args(
    format: c_int,
    opts: *const c_void,
    opts_size: usize,
) -> CResult<EncryptionArgs> {
    nonnull(opts)?;
    let bad = |what: &str| CError::new(Errno::EINVAL, format!("encryption options: {what}"));
    let pass = |p: *const c_char, n: usize| -> CResult<Zeroizing<Vec<u8>>> {
        if n > 0 {
            nonnull(p)?;
            // SAFETY: the caller's passphrase of n bytes.
            let b = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) };
            Ok(Zeroizing::new(b.to_vec()))
        } else {
            Ok(Zeroizing::new(Vec::new()))
        }
    };
    match format {
        0 | 1 => {
            if opts_size != std::mem::size_of::<LuksFormatOptions>() {
                return Err(bad("wrong size for the luks1/luks2 options"));
            }
            // SAFETY: size checked; the caller's struct.
            let o = unsafe { &*opts.cast::<LuksFormatOptions>() };
            // Only a format reads the algorithm (librbd's load ignores it,
            // and python3-rbd leaves it unset there).
            let alg = match o.alg {
                0 => Some(quarry_luks::Alg::Aes128),
                1 => Some(quarry_luks::Alg::Aes256),
                _ => None,
            };
            let f = if format == 0 {
                quarry_luks::Format::Luks1
            } else {
                quarry_luks::Format::Luks2
            };
            Ok((Some(f), pass(o.passphrase, o.passphrase_size)?, alg))
        }
        2 => {
            if opts_size != std::mem::size_of::<LuksAnyOptions>() {
                return Err(bad("wrong size for the luks options"));
            }
            // SAFETY: size checked; the caller's struct.
            let o = unsafe { &*opts.cast::<LuksAnyOptions>() };
            Ok((None, pass(o.passphrase, o.passphrase_size)?, None))
        }
        _ => Err(bad("unknown format")),
    }
}

/// Write a LUKS1 or LUKS2 header at the start of the image and encrypt
/// this handle's I/O with it from now on (librbd 16: the size becomes the
/// data area's; `rbd_resize` still takes the raw size).
#[no_mangle]
pub unsafe extern "C" fn rbd_encryption_format(
    image: ImageT,
    format: c_int,
    opts: *mut c_void,
    opts_size: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        img.check_writable()?;
        // SAFETY: the caller's options.
        let (f, pass, alg) = unsafe { encryption_args(format, opts, opts_size) }?;
        let Some(f) = f else {
            return Err(CError::new(
                Errno::EINVAL,
                "encryption format needs luks1 or luks2, not either",
            ));
        };
        let Some(alg) = alg else {
            return Err(CError::new(
                Errno::EINVAL,
                "encryption options: unknown algorithm",
            ));
        };
        let c = img.crypto.clone();
        rt::block_on(async move { c.format(f, alg, pass).await })?;
        info_of(img)?;
        Ok(0)
    })
}

/// Unlock the image's LUKS header with a passphrase and encrypt this
/// handle's I/O with it (`EPERM`: wrong passphrase; `EINVAL`: no such
/// header; `EEXIST`: already loaded).
#[no_mangle]
pub unsafe extern "C" fn rbd_encryption_load(
    image: ImageT,
    format: c_int,
    opts: *mut c_void,
    opts_size: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let img = unsafe { img_of(image) }?;
        // SAFETY: the caller's options.
        let (f, pass, _) = unsafe { encryption_args(format, opts, opts_size) }?;
        let c = img.crypto.clone();
        rt::block_on(async move { c.load(f, pass).await })?;
        info_of(img)?;
        Ok(0)
    })
}

/// `rbd_encryption_load` from specs; one spec (the image and its ancestors
/// share one header and key). Several (a clone with its own key over its
/// parent's) is layered encryption, not implemented: -EOPNOTSUPP.
#[no_mangle]
pub unsafe extern "C" fn rbd_encryption_load2(
    image: ImageT,
    specs: *const c_void,
    count: usize,
) -> c_int {
    if count != 1 {
        return if count == 0 {
            -libc::EINVAL
        } else {
            NEG_ENOTSUP
        };
    }
    if specs.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: one spec from the caller.
    let s = unsafe { &*specs.cast::<EncryptionSpec>() };
    // SAFETY: forwarded contract.
    unsafe { rbd_encryption_load(image, s.format, s.opts, s.opts_size) }
}
