//! `quarry-capi`: Ceph's librbd/librados C ABI on Quarry.
//!
//! One cdylib (`libquarry_capi.so`) exports every `rbd_*` and `rados_*`
//! symbol that Debian's QEMU 7.2 (`block-rbd.so`), fio 3.33 and libvirt's rbd
//! storage backend import, with the prototypes and struct layouts of Ceph
//! 16.2.15's `librbd.h`/`librados.h`.
//!
//! # One library, two names, one state
//! The SONAME is `librados.so.2`; `librbd.so.1` and `librados.so.2` are both
//! symlinks to the same file. glibc maps a file once per process: when a
//! consumer needs `librbd.so.1` then `librados.so.2`, the second name is
//! satisfied by SONAME match and/or by the (device, inode) identity of the
//! already-mapped file, so there is one copy of every global (the runtime,
//! the embedded-store registry) and a `rados_ioctx_t` from `rados_*` is valid
//! in `rbd_open`. Installing two *copies* (different inodes) would break this;
//! the install step must use symlinks (or hard links).
//!
//! # Threads
//! All I/O runs on the library's own tokio runtime (`quarry-io` threads,
//! started on first use). Completion callbacks run on one `quarry-cb` thread,
//! one at a time, never on the submitting thread; a completion fires exactly
//! once iff the submit call returned 0.
//!
//! Architecture invariant: this crate translates C calls to the image engine
//! and the object layer; it knows nothing of placement, object layout or the
//! network protocol. Every export catches panics (returning -EIO) and checks
//! pointers.

/// The library's own Rust allocations go to mimalloc: the host's malloc
/// (glibc) was ~12% of the client's CPU at 4 KiB random reads, much of it
/// `posix_memalign` for tokio's cache-line-aligned tasks. Buffers handed to
/// the caller to `free()` are still allocated with `libc::malloc`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cached;
pub mod cluster;
pub mod completion;
pub mod config;
pub mod crypto;
mod deferred_ops;
pub mod engine;
pub mod ffi_advisory;
pub mod ffi_app;
pub mod ffi_cluster_info;
pub mod ffi_copy;
pub mod ffi_group;
pub mod ffi_image_admin;
pub mod ffi_list;
pub mod ffi_lock;
pub mod ffi_migration;
pub mod ffi_objops;
pub mod ffi_omap;
pub mod ffi_pool_stats;
pub mod ffi_rados;
pub mod ffi_rbd;
pub mod ffi_snap;
pub mod ffi_trash;
pub mod ffi_watch;
pub mod ffi_xattrs;
pub mod image;
mod mon_command;
mod net;
pub mod opts;
mod rbd_adapter;
mod rt;
pub mod unsupported;
pub mod util;
