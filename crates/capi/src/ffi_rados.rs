//! The librados C exports (`rados_*`).
//!
//! # Safety
//! Every export is `unsafe extern "C"` with the contract of the matching
//! declaration in Ceph's headers: handles come from the matching create or
//! open call and are live; buffers are valid for the lengths passed.
//! NULL pointers are checked and refused with -EINVAL.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest};

use crate::cluster::{lock, Cluster, IoCtx};
use crate::completion::{Callback, Completion};
use crate::config::Level;
use crate::engine::{CError, CResult};
use crate::rt;
use crate::util::{copy_out, guard, int, nonnull, opt_str, req_str, NEG_EINVAL};

/// `rados_t`.
pub type RadosT = *mut c_void;
/// `rados_ioctx_t`.
pub type IoCtxT = *mut c_void;

/// Borrow the cluster behind a handle.
///
/// # Safety
/// `p` must be NULL or a live handle from `rados_create*`.
pub unsafe fn cluster<'a>(p: RadosT) -> CResult<&'a Arc<Cluster>> {
    nonnull(p)?;
    // SAFETY: p is a live Box<Arc<Cluster>> per the caller's contract.
    Ok(unsafe { &*(p as *const Arc<Cluster>) })
}

/// Borrow the ioctx behind a handle.
///
/// # Safety
/// `p` must be NULL or a live handle from `rados_ioctx_create`.
pub unsafe fn ioctx<'a>(p: IoCtxT) -> CResult<&'a Arc<IoCtx>> {
    nonnull(p)?;
    // SAFETY: p is a live Box<Arc<IoCtx>> per the caller's contract.
    Ok(unsafe { &*(p as *const Arc<IoCtx>) })
}

fn new_cluster(out: *mut RadosT, c: Cluster) -> CResult<i32> {
    nonnull(out)?;
    let b = Box::new(Arc::new(c));
    // SAFETY: out is non-null and points to caller storage for a pointer.
    unsafe { *out = Box::into_raw(b) as RadosT };
    Ok(0)
}

/// Report librados 3.0.0 (pacific).
#[no_mangle]
pub unsafe extern "C" fn rados_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int) {
    guard((), || {
        for (p, v) in [(major, 3), (minor, 0), (extra, 0)] {
            if !p.is_null() {
                // SAFETY: non-null out-pointer from the caller.
                unsafe { *p = v };
            }
        }
    })
}

/// Create a handle for `client.<id>` (NULL id → admin).
#[no_mangle]
pub unsafe extern "C" fn rados_create(cluster: *mut RadosT, id: *const c_char) -> c_int {
    int(|| {
        // SAFETY: id is NULL or a C string.
        let id = unsafe { opt_str(id) }?.unwrap_or("admin");
        new_cluster(cluster, Cluster::new("client", id, None)?)
    })
}

/// Create a handle with a cluster name and a full `type.id` name.
#[no_mangle]
pub unsafe extern "C" fn rados_create2(
    pcluster: *mut RadosT,
    clustername: *const c_char,
    name: *const c_char,
    _flags: u64,
) -> c_int {
    int(|| {
        // SAFETY: C strings or NULL.
        let cname = unsafe { opt_str(clustername) }?;
        // SAFETY: as above.
        let name = unsafe { opt_str(name) }?.unwrap_or("client.admin");
        let Some((ty, id)) = name.split_once('.') else {
            return Err(Errno::EINVAL.into());
        };
        if ty.is_empty() || id.is_empty() {
            return Err(Errno::EINVAL.into());
        }
        new_cluster(pcluster, Cluster::new(ty, id, cname)?)
    })
}

/// Connect: the embedded store (`quarry_embedded_dir`) or the cluster.
#[no_mangle]
pub unsafe extern "C" fn rados_connect(c: RadosT) -> c_int {
    int(|| {
        // SAFETY: handle from rados_create.
        let c = unsafe { cluster(c) }?;
        if c.connection().is_ok() {
            return Ok(-libc::EISCONN);
        }
        c.connect()?;
        Ok(0)
    })
}

/// Drop the handle (ioctxs and images keep the connection alive).
#[no_mangle]
pub unsafe extern "C" fn rados_shutdown(c: RadosT) {
    guard((), || {
        if !c.is_null() {
            // SAFETY: c came from Box::into_raw in rados_create*; consumed once.
            drop(unsafe { Box::from_raw(c as *mut Arc<Cluster>) });
        }
    })
}

/// Read a config file (NULL: `$CEPH_CONF` or the default search).
#[no_mangle]
pub unsafe extern "C" fn rados_conf_read_file(c: RadosT, path: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let path = unsafe { opt_str(path) }?;
        lock(&c.conf).read_file(path)?;
        Ok(0)
    })
}

/// Set an option at the override level (-ENOENT unknown, -EINVAL bad value).
#[no_mangle]
pub unsafe extern "C" fn rados_conf_set(
    c: RadosT,
    option: *const c_char,
    value: *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let option = unsafe { req_str(option) }?;
        // SAFETY: as above.
        let value = unsafe { req_str(value) }?;
        lock(&c.conf).set(Level::Override, option, value)?;
        Ok(0)
    })
}

/// Read an option's effective value into `buf` (-ENAMETOOLONG if short).
#[no_mangle]
pub unsafe extern "C" fn rados_conf_get(
    c: RadosT,
    option: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let option = unsafe { req_str(option) }?;
        let v = lock(&c.conf).get(option)?;
        nonnull(buf)?;
        // SAFETY: buf valid for len bytes per the API contract.
        unsafe { copy_out(&v, buf, len) }.map_err(|_| CError::from(Errno::ENAMETOOLONG))?;
        Ok(0)
    })
}

/// Parse the environment variable `var` (NULL: `CEPH_ARGS`) as arguments.
#[no_mangle]
pub unsafe extern "C" fn rados_conf_parse_env(c: RadosT, var: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let var = unsafe { opt_str(var) }?.unwrap_or("CEPH_ARGS");
        if let Ok(v) = std::env::var(var) {
            lock(&c.conf).parse_env_string(&v)?;
        }
        Ok(0)
    })
}

/// Parse command-line arguments (`--opt value`).
#[no_mangle]
pub unsafe extern "C" fn rados_conf_parse_argv(
    c: RadosT,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let c = unsafe { cluster(c) }?;
        let mut args = Vec::new();
        if argc > 0 {
            nonnull(argv)?;
            for i in 0..argc as usize {
                // SAFETY: argv has argc entries, each NULL or a C string.
                if let Some(s) = unsafe { opt_str(*argv.add(i)) }? {
                    args.push(s.to_string());
                }
            }
        }
        // The first element is the program name, as in main's argv.
        if !args.is_empty() {
            args.remove(0);
        }
        lock(&c.conf).parse_args(&args)?;
        Ok(0)
    })
}

/// Open an I/O context on a pool (-ENOENT if it does not exist).
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_create(
    c: RadosT,
    pool_name: *const c_char,
    out: *mut IoCtxT,
) -> c_int {
    let handle = c as usize;
    int(|| {
        // SAFETY: handle and C string from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(pool_name) }?.to_string();
        nonnull(out)?;
        let conn = c.connection()?;
        let rados = conn.rados.clone();
        let lookup = name.clone();
        let pool = rt::block_on(async move { rados.pool_lookup(&lookup).await })?;
        let io = IoCtx {
            conn,
            cluster: c.clone(),
            pool,
            pool_name: name,
            namespace: Mutex::new(String::new()),
            read_snap: Mutex::new(quarry_rados::NOSNAP),
            write_snapc: Mutex::new(quarry_rados::SnapContext::default()),
            handle,
        };
        // SAFETY: out is non-null caller storage.
        unsafe { *out = Box::into_raw(Box::new(Arc::new(io))) as IoCtxT };
        Ok(0)
    })
}

/// Open an I/O context by pool id.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_create2(c: RadosT, pool_id: i64, out: *mut IoCtxT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let cl = unsafe { cluster(c) }?;
        nonnull(out)?;
        let conn = cl.connection()?;
        let rados = conn.rados.clone();
        let pools = rt::block_on(async move { rados.pool_list().await })?;
        let p = pools
            .into_iter()
            .find(|p| p.id == pool_id)
            .ok_or(Errno::ENOENT)?;
        let io = IoCtx {
            conn,
            cluster: cl.clone(),
            pool: p.id,
            pool_name: p.name,
            namespace: Mutex::new(String::new()),
            read_snap: Mutex::new(quarry_rados::NOSNAP),
            write_snapc: Mutex::new(quarry_rados::SnapContext::default()),
            handle: c as usize,
        };
        // SAFETY: out is non-null caller storage.
        unsafe { *out = Box::into_raw(Box::new(Arc::new(io))) as IoCtxT };
        Ok(0)
    })
}

/// Destroy an I/O context.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_destroy(io: IoCtxT) {
    guard((), || {
        if !io.is_null() {
            // SAFETY: io came from Box::into_raw; consumed once.
            drop(unsafe { Box::from_raw(io as *mut Arc<IoCtx>) });
        }
    })
}

/// Select a namespace (NULL or "" = default).
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_set_namespace(io: IoCtxT, ns: *const c_char) {
    guard((), || {
        // SAFETY: handle and C string from the caller.
        let Ok(io) = (unsafe { ioctx(io) }) else {
            return;
        };
        // SAFETY: as above.
        let ns = unsafe { opt_str(ns) }.ok().flatten().unwrap_or("");
        *lock(&io.namespace) = ns.to_string();
    })
}

/// Current namespace into `buf`; returns its length.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_namespace(
    io: IoCtxT,
    buf: *mut c_char,
    len: u32,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        let ns = lock(&io.namespace).clone();
        // SAFETY: buf valid for len bytes.
        unsafe { copy_out(&ns, buf, len as usize) }?;
        Ok(ns.len() as i32)
    })
}

/// The cluster handle an ioctx was created from.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_cluster(io: IoCtxT) -> RadosT {
    guard(std::ptr::null_mut(), || {
        // SAFETY: handle from the caller.
        match unsafe { ioctx(io) } {
            Ok(io) => io.handle as RadosT,
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Pool id of an ioctx.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_id(io: IoCtxT) -> i64 {
    guard(-5, || {
        // SAFETY: handle from the caller.
        match unsafe { ioctx(io) } {
            Ok(io) => io.pool,
            Err(e) => e.errno.negated() as i64,
        }
    })
}

/// Pool name of an ioctx; returns its length.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_pool_name(
    io: IoCtxT,
    buf: *mut c_char,
    len: u32,
) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: buf valid for len bytes.
        unsafe { copy_out(&io.pool_name, buf, len as usize) }?;
        Ok(io.pool_name.len() as i32)
    })
}

/// Look a pool's id up by name.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_lookup(c: RadosT, name: *const c_char) -> i64 {
    guard(-5, || {
        let r = (|| -> CResult<i64> {
            // SAFETY: handle and C string from the caller.
            let c = unsafe { cluster(c) }?;
            // SAFETY: as above.
            let name = unsafe { req_str(name) }?.to_string();
            let rados = c.connection()?.rados.clone();
            Ok(rt::block_on(async move { rados.pool_lookup(&name).await })?)
        })();
        r.unwrap_or_else(|e| e.errno.negated() as i64)
    })
}

/// Create a pool.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_create(c: RadosT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        let rados = c.connection()?.rados.clone();
        rt::block_on(async move { rados.pool_create(&name).await })?;
        Ok(0)
    })
}

/// Delete a pool.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_delete(c: RadosT, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let c = unsafe { cluster(c) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(name) }?.to_string();
        let rados = c.connection()?.rados.clone();
        rt::block_on(async move { rados.pool_delete(&name).await })?;
        Ok(0)
    })
}

/// List pool names as NUL-separated strings ending with an empty one;
/// returns the length needed (the buffer is filled only if it fits).
#[no_mangle]
pub unsafe extern "C" fn rados_pool_list(c: RadosT, buf: *mut c_char, len: usize) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let c = unsafe { cluster(c) }?;
        let rados = c.connection()?.rados.clone();
        let pools = rt::block_on(async move { rados.pool_list().await })?;
        let mut out = Vec::new();
        for p in pools {
            out.extend_from_slice(p.name.as_bytes());
            out.push(0);
        }
        out.push(0);
        if !buf.is_null() && out.len() <= len {
            // SAFETY: buf holds len >= out.len() bytes.
            unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), buf.cast::<u8>(), out.len()) };
        }
        Ok(out.len() as i32)
    })
}

/// `struct rados_cluster_stat_t`.
#[repr(C)]
pub struct RadosClusterStat {
    /// Total KiB.
    pub kb: u64,
    /// Used KiB.
    pub kb_used: u64,
    /// Available KiB.
    pub kb_avail: u64,
    /// Objects.
    pub num_objects: u64,
}

/// `struct rados_pool_stat_t`.
#[repr(C)]
#[derive(Default)]
pub struct RadosPoolStat {
    /// Bytes used.
    pub num_bytes: u64,
    /// KiB used.
    pub num_kb: u64,
    /// Objects.
    pub num_objects: u64,
    /// Clones.
    pub num_object_clones: u64,
    /// Objects × replicas.
    pub num_object_copies: u64,
    /// Missing on primary.
    pub num_objects_missing_on_primary: u64,
    /// Unfound.
    pub num_objects_unfound: u64,
    /// Degraded.
    pub num_objects_degraded: u64,
    /// Reads.
    pub num_rd: u64,
    /// KiB read.
    pub num_rd_kb: u64,
    /// Writes.
    pub num_wr: u64,
    /// KiB written.
    pub num_wr_kb: u64,
    /// User bytes.
    pub num_user_bytes: u64,
    /// Compression input.
    pub compressed_bytes_orig: u64,
    /// Compression output.
    pub compressed_bytes: u64,
    /// Compression allocation.
    pub compressed_bytes_alloc: u64,
}

/// Cluster-wide capacity: the OSDs' filesystems as their latest reports to
/// the monitors give them (the embedded store's filesystem when embedded),
/// raw used space, and the objects of every pool.
#[no_mangle]
pub unsafe extern "C" fn rados_cluster_stat(c: RadosT, out: *mut RadosClusterStat) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let c = unsafe { cluster(c) }?;
        nonnull(out)?;
        let conn = c.connection()?;
        let (total, avail, objects) = rt::block_on(async move {
            let (total, avail) = crate::mon_command::capacity(&conn).await?;
            let mut o = 0u64;
            for p in conn.rados.pool_list().await? {
                o += conn.rados.pool_stat(p.id).await?.num_objects;
            }
            Ok::<_, CError>((total, avail, o))
        })?;
        // SAFETY: out non-null, points to caller's struct.
        unsafe {
            *out = RadosClusterStat {
                kb: total / 1024,
                kb_used: total.saturating_sub(avail) / 1024,
                kb_avail: avail / 1024,
                num_objects: objects,
            }
        };
        Ok(0)
    })
}

/// Pool usage.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_pool_stat(io: IoCtxT, out: *mut RadosPoolStat) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        let io = unsafe { ioctx(io) }?;
        nonnull(out)?;
        let rados = io.conn.rados.clone();
        let pool = io.pool;
        let s = rt::block_on(async move { rados.pool_stat(pool).await })?;
        // SAFETY: out non-null, points to caller's struct.
        unsafe {
            *out = RadosPoolStat {
                num_bytes: s.num_bytes,
                num_kb: s.num_bytes.div_ceil(1024),
                num_objects: s.num_objects,
                num_object_copies: s.num_objects,
                num_user_bytes: s.num_bytes,
                ..Default::default()
            }
        };
        Ok(0)
    })
}

/// Instance id of this client.
#[no_mangle]
pub unsafe extern "C" fn rados_get_instance_id(c: RadosT) -> u64 {
    guard(0, || {
        // SAFETY: handle from the caller.
        match unsafe { cluster(c) }.and_then(|c| c.connection()) {
            Ok(conn) => conn.rados.instance_id(),
            Err(_) => 0,
        }
    })
}

/// Nothing to wait for: maps are always current for the object layer.
#[no_mangle]
pub unsafe extern "C" fn rados_wait_for_latest_osdmap(c: RadosT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        unsafe { cluster(c) }?.connection()?;
        Ok(0)
    })
}

/// Free a buffer returned by librados (we return libc-malloc'd buffers).
#[no_mangle]
pub unsafe extern "C" fn rados_buffer_free(buf: *mut c_char) {
    // SAFETY: buf is NULL or from libc malloc.
    guard((), || unsafe { crate::util::c_free(buf) })
}

// ---- objects ----

fn oid(io: &IoCtx, name: &str) -> ObjectId {
    ObjectId::with_namespace(io.pool, lock(&io.namespace).clone(), name)
}

/// A request on `name` with the ioctx's read snapshot and write snap
/// context; `EROFS` for writes while reads go to a snapshot (librados).
pub(crate) fn request(io: &IoCtx, name: &str, ops: Vec<Op>) -> CResult<OpRequest> {
    let mut req = OpRequest::new(oid(io, name));
    req.ops = ops;
    let snap = *lock(&io.read_snap);
    if req.is_write() {
        if snap != quarry_rados::NOSNAP {
            return Err(CError::new(
                Errno::EROFS,
                "writes go to the head: the ioctx reads a snapshot",
            ));
        }
        req.snapc = lock(&io.write_snapc).clone();
    } else {
        req.snap = snap;
    }
    Ok(req)
}

/// Run `ops` on `name` and wait (the ioctx's snapshots applied).
pub(crate) fn run_ops(io: &IoCtx, name: &str, ops: Vec<Op>) -> CResult<Vec<OpOutput>> {
    let req = request(io, name, ops)?;
    let rados = io.conn.rados.clone();
    Ok(rt::block_on(async move { rados.operate(req).await })?.outputs)
}

/// # Safety
/// `buf` must be valid for `len` bytes (or len 0).
pub(crate) unsafe fn bytes_from(buf: *const c_char, len: usize) -> CResult<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    nonnull(buf)?;
    // SAFETY: buf valid for len bytes per the caller.
    Ok(Bytes::copy_from_slice(unsafe {
        std::slice::from_raw_parts(buf.cast::<u8>(), len)
    }))
}

/// Write `len` bytes at `off` of an object.
#[no_mangle]
pub unsafe extern "C" fn rados_write(
    io: IoCtxT,
    o: *const c_char,
    buf: *const c_char,
    len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        run_ops(io, name, vec![Op::Write { off, data }])?;
        Ok(0)
    })
}

/// Replace an object's data.
#[no_mangle]
pub unsafe extern "C" fn rados_write_full(
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
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        run_ops(io, name, vec![Op::WriteFull(data)])?;
        Ok(0)
    })
}

/// Read up to `len` bytes; returns the count.
#[no_mangle]
pub unsafe extern "C" fn rados_read(
    io: IoCtxT,
    o: *const c_char,
    buf: *mut c_char,
    len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        if len == 0 {
            return Ok(0);
        }
        nonnull(buf)?;
        let out = run_ops(
            io,
            name,
            vec![Op::Read {
                off,
                len: len as u64,
            }],
        )?;
        let data = match out.into_iter().next() {
            Some(OpOutput::Data(d)) => d,
            _ => Bytes::new(),
        };
        let n = data.len().min(len);
        // SAFETY: buf valid for len >= n bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.cast::<u8>(), n) };
        Ok(n as i32)
    })
}

/// Remove an object.
#[no_mangle]
pub unsafe extern "C" fn rados_remove(io: IoCtxT, o: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        run_ops(io, name, vec![Op::Remove])?;
        Ok(0)
    })
}

/// Truncate or extend an object.
#[no_mangle]
pub unsafe extern "C" fn rados_trunc(io: IoCtxT, o: *const c_char, size: u64) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        run_ops(io, name, vec![Op::Truncate(size)])?;
        Ok(0)
    })
}

/// Size and mtime of an object.
#[no_mangle]
pub unsafe extern "C" fn rados_stat(
    io: IoCtxT,
    o: *const c_char,
    psize: *mut u64,
    pmtime: *mut libc::time_t,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        let out = run_ops(io, name, vec![Op::Stat])?;
        if let Some(OpOutput::Stat(s)) = out.first() {
            if !psize.is_null() {
                // SAFETY: non-null out-pointer.
                unsafe { *psize = s.size };
            }
            if !pmtime.is_null() {
                // SAFETY: non-null out-pointer.
                unsafe { *pmtime = (s.mtime_ns / 1_000_000_000) as libc::time_t };
            }
        }
        Ok(0)
    })
}

/// Read an xattr; returns its length.
#[no_mangle]
pub unsafe extern "C" fn rados_getxattr(
    io: IoCtxT,
    o: *const c_char,
    name: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let obj = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(name) }?;
        let out = run_ops(io, obj, vec![Op::GetXattr(key.to_string())])?;
        let data = match out.into_iter().next() {
            Some(OpOutput::Data(d)) => d,
            _ => Bytes::new(),
        };
        if data.len() > len {
            return Err(Errno::ERANGE.into());
        }
        if !data.is_empty() {
            nonnull(buf)?;
            // SAFETY: buf valid for len >= data.len() bytes.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.cast::<u8>(), data.len()) };
        }
        Ok(data.len() as i32)
    })
}

/// Set an xattr.
#[no_mangle]
pub unsafe extern "C" fn rados_setxattr(
    io: IoCtxT,
    o: *const c_char,
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
        run_ops(io, obj, vec![Op::SetXattr(key.to_string(), data)])?;
        Ok(0)
    })
}

/// Remove an xattr.
#[no_mangle]
pub unsafe extern "C" fn rados_rmxattr(io: IoCtxT, o: *const c_char, name: *const c_char) -> c_int {
    int(|| {
        // SAFETY: handle and C strings from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let obj = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let key = unsafe { req_str(name) }?;
        run_ops(io, obj, vec![Op::RmXattr(key.to_string())])?;
        Ok(0)
    })
}

// ---- aio ----

/// Create a completion with "complete" and "safe" callbacks.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_create_completion(
    cb_arg: *mut c_void,
    cb_complete: Option<Callback>,
    cb_safe: Option<Callback>,
    pc: *mut *mut c_void,
) -> c_int {
    int(|| {
        nonnull(pc)?;
        // SAFETY: pc non-null caller storage.
        unsafe { *pc = Completion::create(cb_arg, cb_complete, cb_safe) };
        Ok(0)
    })
}

/// Create a completion with one callback.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_create_completion2(
    cb_arg: *mut c_void,
    cb_complete: Option<Callback>,
    pc: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rados_aio_create_completion(cb_arg, cb_complete, None, pc) }
}

/// Wait until the operation completed and its callback returned.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_wait_for_complete(c: *mut c_void) -> c_int {
    int(|| {
        nonnull(c)?;
        // SAFETY: live completion handle from the caller.
        unsafe { Completion::from_handle(c) }.wait();
        Ok(0)
    })
}

/// Same as [`rados_aio_wait_for_complete`] (callbacks are always waited for).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_wait_for_complete_and_cb(c: *mut c_void) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rados_aio_wait_for_complete(c) }
}

/// Whether the operation completed.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_is_complete(c: *mut c_void) -> c_int {
    int(|| {
        nonnull(c)?;
        // SAFETY: live completion handle from the caller.
        Ok(unsafe { Completion::from_handle(c) }.is_complete() as i32)
    })
}

/// Same as [`rados_aio_is_complete`].
#[no_mangle]
pub unsafe extern "C" fn rados_aio_is_complete_and_cb(c: *mut c_void) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rados_aio_is_complete(c) }
}

/// The operation's result (bytes for reads, 0 for writes, -errno).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_get_return_value(c: *mut c_void) -> c_int {
    int(|| {
        nonnull(c)?;
        // SAFETY: live completion handle from the caller.
        Ok(unsafe { Completion::from_handle(c) }.return_value() as i32)
    })
}

/// Release the caller's reference.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_release(c: *mut c_void) {
    guard((), || {
        if !c.is_null() {
            // SAFETY: live completion handle; the caller gives up its count.
            unsafe { Completion::release(c) }
        }
    })
}

/// Wait for all in-flight aio of this ioctx: every aio is durable when it
/// completes, so nothing is pending beyond what the caller waits for.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_flush(io: IoCtxT) -> c_int {
    int(|| {
        // SAFETY: handle from the caller.
        unsafe { ioctx(io) }?;
        Ok(0)
    })
}

pub(crate) fn submit(
    io: &IoCtx,
    name: &str,
    c: *mut c_void,
    ops: Vec<Op>,
    on_read: Option<(usize, usize)>,
) -> CResult<i32> {
    let req = request(io, name, ops)?;
    submit_with(io, req, c, on_read, |rados, req| async move {
        rados
            .operate(req)
            .await
            .map(|r| r.outputs)
            .map_err(|e| e.errno.negated() as i64)
    })
}

/// [`submit`] for a write op with appends or cmpexts (`deferred_ops`).
fn submit_deferred(
    io: &IoCtx,
    name: &str,
    c: *mut c_void,
    ops: Vec<Op>,
    steps: crate::deferred_ops::Steps,
) -> CResult<i32> {
    let template = request(io, name, vec![Op::Create { exclusive: false }])?;
    submit_with(io, template, c, None, move |rados, template| {
        crate::deferred_ops::operate(rados, template, ops, steps)
    })
}

/// Run `run(rados, req)` in the background in the object's submission
/// order and finish completion `c` with its result (for a read with
/// `on_read = (buf, len)`, its bytes copied there and their count).
pub(crate) fn submit_with<F, Fut>(
    io: &IoCtx,
    req: OpRequest,
    c: *mut c_void,
    on_read: Option<(usize, usize)>,
    run: F,
) -> CResult<i32>
where
    F: FnOnce(Arc<dyn quarry_rados::Rados>, OpRequest) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<OpOutput>, i64>> + Send + 'static,
{
    nonnull(c)?;
    // SAFETY: live completion handle from the caller.
    let comp = unsafe { Completion::from_handle(c) };
    let conn = io.conn.clone();
    let parts = conn.order.enter(&req.oid);
    let guard_comp = comp.clone();
    let guard_ev = None;
    rt::spawn_guarded(
        async move {
            let mut slot = conn.order.slot(req.oid.clone(), parts);
            slot.ready().await;
            let r = run(conn.rados.clone(), req).await;
            drop(slot);
            let ret = match r {
                Ok(outputs) => match (on_read, outputs.into_iter().next()) {
                    (Some((buf, len)), Some(OpOutput::Data(d))) => {
                        let n = d.len().min(len);
                        // SAFETY: the caller keeps buf valid for len bytes until
                        // the completion fires (librados contract).
                        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), buf as *mut u8, n) };
                        n as i64
                    }
                    _ => 0,
                },
                Err(r) => r,
            };
            comp.finish(ret, None);
        },
        move || guard_comp.finish(-5, guard_ev),
    );
    Ok(0)
}

/// Asynchronous write.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_write(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    buf: *const c_char,
    len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle, C string and buffer from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        submit(io, name, c, vec![Op::Write { off, data }], None)
    })
}

/// Asynchronous full-object write.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_write_full(
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
        // SAFETY: as above.
        let data = unsafe { bytes_from(buf, len) }?;
        submit(io, name, c, vec![Op::WriteFull(data)], None)
    })
}

/// Asynchronous read; the completion's value is the byte count.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_read(
    io: IoCtxT,
    o: *const c_char,
    c: *mut c_void,
    buf: *mut c_char,
    len: usize,
    off: u64,
) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        if len > 0 {
            nonnull(buf)?;
        }
        submit(
            io,
            name,
            c,
            vec![Op::Read {
                off,
                len: len as u64,
            }],
            Some((buf as usize, len)),
        )
    })
}

/// Asynchronous remove.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_remove(io: IoCtxT, o: *const c_char, c: *mut c_void) -> c_int {
    int(|| {
        // SAFETY: handle and C string from the caller.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        submit(io, name, c, vec![Op::Remove], None)
    })
}

// ---- write ops ----

/// A compound write being built.
#[derive(Default)]
pub struct WriteOp {
    pub(crate) ops: Vec<Op>,
    /// Appends and cmpexts, resolved against the object at operate time
    /// (`deferred_ops`).
    pub(crate) steps: crate::deferred_ops::Steps,
    /// Set when an op could not be added (bad arguments, or an op Quarry
    /// does not support): the adders return nothing, so the operate call
    /// reports it instead of applying the others as if all were there.
    pub(crate) refused: Option<CError>,
}

impl WriteOp {
    /// Remember the first refusal.
    pub(crate) fn refuse(&mut self, e: CError) {
        self.refused.get_or_insert(e);
    }

    /// The ops to apply, or the refusal.
    fn to_apply(&self) -> CResult<Vec<Op>> {
        match &self.refused {
            Some(e) => Err(e.clone()),
            None => Ok(self.ops.clone()),
        }
    }

    /// The deferred steps, moved out for one operate call (a write op is
    /// applied once; librados releases it after).
    fn take_steps(&mut self) -> CResult<crate::deferred_ops::Steps> {
        crate::deferred_ops::check(&self.ops, &self.steps)?;
        Ok(std::mem::take(&mut self.steps))
    }
}

/// Add the op `make` builds to the write op at `p` (nothing for a NULL
/// handle); a failure to build it refuses the whole write op.
///
/// # Safety
/// `p` must be NULL or a live handle from `rados_create_write_op`.
pub(crate) unsafe fn add_op(p: *mut c_void, make: impl FnOnce() -> CResult<Op>) {
    guard((), || {
        // SAFETY: the caller's contract.
        if let Some(w) = unsafe { wop(p) } {
            match make() {
                Ok(op) => w.ops.push(op),
                Err(e) => w.refuse(e),
            }
        }
    })
}

/// # Safety
/// `p` must be NULL or a live handle from `rados_create_write_op`.
pub(crate) unsafe fn wop<'a>(p: *mut c_void) -> Option<&'a mut WriteOp> {
    if p.is_null() {
        None
    } else {
        // SAFETY: p is a live Box<WriteOp> per the contract.
        Some(unsafe { &mut *(p as *mut WriteOp) })
    }
}

/// New compound write.
#[no_mangle]
pub unsafe extern "C" fn rados_create_write_op() -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(WriteOp::default())) as *mut c_void
    })
}

/// Free a compound write.
#[no_mangle]
pub unsafe extern "C" fn rados_release_write_op(op: *mut c_void) {
    guard((), || {
        if !op.is_null() {
            // SAFETY: op came from Box::into_raw; consumed once.
            drop(unsafe { Box::from_raw(op as *mut WriteOp) });
        }
    })
}

/// Flags on a compound write (accepted, no effect needed).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_set_flags(_op: *mut c_void, _flags: c_int) {}

/// Add: zero a range.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_zero(op: *mut c_void, off: u64, len: u64) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::Zero { off, len });
        }
    })
}

/// Add: write bytes.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_write(
    op: *mut c_void,
    buf: *const c_char,
    len: usize,
    off: u64,
) {
    // SAFETY: live write op and buffer, per the caller.
    unsafe {
        add_op(op, || {
            Ok(Op::Write {
                off,
                data: bytes_from(buf, len)?,
            })
        })
    }
}

/// Add: replace the data.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_write_full(
    op: *mut c_void,
    buf: *const c_char,
    len: usize,
) {
    // SAFETY: live write op and buffer, per the caller.
    unsafe { add_op(op, || Ok(Op::WriteFull(bytes_from(buf, len)?))) }
}

/// Add: create (exclusive if `exclusive != 0`).
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_create(
    op: *mut c_void,
    exclusive: c_int,
    _category: *const c_char,
) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::Create {
                exclusive: exclusive != 0,
            });
        }
    })
}

/// Add: remove.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_remove(op: *mut c_void) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::Remove);
        }
    })
}

/// Add: truncate.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_truncate(op: *mut c_void, off: u64) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::Truncate(off));
        }
    })
}

/// Add: version assertion.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_assert_version(op: *mut c_void, ver: u64) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::AssertVersion(ver));
        }
    })
}

/// Add: existence assertion.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_assert_exists(op: *mut c_void) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::AssertExists);
        }
    })
}

/// Add: set an xattr.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_setxattr(
    op: *mut c_void,
    name: *const c_char,
    value: *const c_char,
    len: usize,
) {
    // SAFETY: live write op, C string and buffer, per the caller.
    unsafe {
        add_op(op, || {
            Ok(Op::SetXattr(
                req_str(name)?.to_string(),
                bytes_from(value, len)?,
            ))
        })
    }
}

/// Add: remove an xattr.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_rmxattr(op: *mut c_void, name: *const c_char) {
    // SAFETY: live write op and C string, per the caller.
    unsafe { add_op(op, || Ok(Op::RmXattr(req_str(name)?.to_string()))) }
}

/// Add: clear the omap.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_clear(op: *mut c_void) {
    guard((), || {
        // SAFETY: live write op.
        if let Some(w) = unsafe { wop(op) } {
            w.ops.push(Op::OmapClear);
        }
    })
}

/// Apply a compound write synchronously.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_operate(
    op: *mut c_void,
    io: IoCtxT,
    o: *const c_char,
    _mtime: *mut libc::time_t,
    _flags: c_int,
) -> c_int {
    int(|| {
        // SAFETY: live write op, handle and C string.
        let w = unsafe { wop(op) }.ok_or(Errno::EINVAL)?;
        // SAFETY: as above.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        let ops = w.to_apply()?;
        if w.steps.is_empty() {
            run_ops(io, name, ops)?;
            return Ok(0);
        }
        let steps = w.take_steps()?;
        let template = request(io, name, vec![Op::Create { exclusive: false }])?;
        let rados = io.conn.rados.clone();
        match rt::block_on(crate::deferred_ops::operate(rados, template, ops, steps)) {
            Ok(_) => Ok(0),
            Err(r) => Ok(i32::try_from(r).unwrap_or(i32::MIN)),
        }
    })
}

/// Apply a compound write asynchronously.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_write_op_operate(
    op: *mut c_void,
    io: IoCtxT,
    c: *mut c_void,
    o: *const c_char,
    _mtime: *mut libc::time_t,
    _flags: c_int,
) -> c_int {
    int(|| {
        // SAFETY: live write op, handle and C string.
        let w = unsafe { wop(op) }.ok_or(Errno::EINVAL)?;
        // SAFETY: as above.
        let io = unsafe { ioctx(io) }?;
        // SAFETY: as above.
        let name = unsafe { req_str(o) }?;
        let ops = w.to_apply()?;
        if w.steps.is_empty() {
            return submit(io, name, c, ops, None);
        }
        let steps = w.take_steps()?;
        submit_deferred(io, name, c, ops, steps)
    })
}

/// Monitor commands are not served by this library.
#[no_mangle]
pub unsafe extern "C" fn rados_mon_command(
    c: RadosT,
    cmd: *const *const c_char,
    cmdlen: usize,
    _inbuf: *const c_char,
    _inbuflen: usize,
    outbuf: *mut *mut c_char,
    outbuflen: *mut usize,
    outs: *mut *mut c_char,
    outslen: *mut usize,
) -> c_int {
    // The status string goes back on failure too, as Ceph's does.
    let give = |out: &[u8], status: &str| {
        // SAFETY: each out-pointer is checked for NULL before the write.
        unsafe {
            if !outbuf.is_null() {
                *outbuf = crate::util::malloc_copy(out);
            }
            if !outbuflen.is_null() {
                *outbuflen = out.len();
            }
            if !outs.is_null() {
                *outs = crate::util::malloc_copy(status.as_bytes());
            }
            if !outslen.is_null() {
                *outslen = status.len();
            }
        }
    };
    let r = (|| -> CResult<(Vec<u8>, String)> {
        // SAFETY: handle from the caller.
        let c = unsafe { cluster(c) }?;
        let conn = c.connection()?;
        nonnull(cmd)?;
        let mut text = String::new();
        for i in 0..cmdlen {
            // SAFETY: cmd holds cmdlen C strings.
            let part = unsafe { req_str(*cmd.add(i)) }?;
            text.push_str(part);
        }
        rt::block_on(async move { crate::mon_command::run(&conn, &text).await })
    })();
    match r {
        Ok((out, status)) => {
            give(&out, &status);
            0
        }
        Err(e) => {
            give(&[], &e.msg);
            e.errno.negated()
        }
    }
}

/// Used by the tests: `NEG_EINVAL` re-exported to keep the constant live.
pub const _EINVAL: i32 = NEG_EINVAL;
