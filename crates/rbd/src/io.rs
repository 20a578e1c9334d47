//! The data path: read, write, discard, write_zeroes, flush, copy-up.
//!
//! A request is split into per-object pieces that run concurrently (at
//! most `PARALLEL_OPS_MAX` in flight); no lock is held across an await
//! except the async `gate` (shared) and, for object-map transitions, one
//! striped per-object lock.
//!
//! Object-map protocol per object (head view, map valid):
//! * before an op that leaves the object existing, the state must be
//!   `EXISTS`; if it is not, the new state is stored first (under the
//!   object's stripe lock, exclusively) — once per object per snapshot;
//! * after removing an object the state becomes `NONEXISTENT`;
//! * a read of a `NONEXISTENT` object issues no object-layer op.
//!
//! Clones: a piece inside the parent overlap is written with
//! `[AssertExists, op]`; `ENOENT` means the object was never copied up, so
//! the parent's bytes for the whole object (clipped to the overlap) are read
//! and written together with the new data in ONE compound op starting with
//! an exclusive `Create` (a concurrent copy-up of the same object loses with
//! `EEXIST` and just applies its op).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, OpRequest, SnapContext, SnapId, SnapSet, NOSNAP};

use crate::error::{RbdError, Result};
use crate::image::{Image, Inner, View, PARALLEL_OPS_MAX};
use crate::layout::{map_extents, ObjExtent};
use crate::objmap::{self, OBJECT_EXISTS, OBJECT_NONEXISTENT};
use crate::{FEATURE_DEEP_FLATTEN, FEATURE_EXCLUSIVE_LOCK, WRITE_ZEROES_FLAG_THICK_PROVISION};

/// Granularity at which copy-up skips runs of zeros in the parent's data.
const COPYUP_ZERO_BLOCK: usize = 4096;

/// A shared page of zeros, so that holes cost no allocation.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

fn zeros(len: u64) -> Bytes {
    if len as usize <= ZEROS.len() {
        Bytes::from_static(&ZEROS[..len as usize])
    } else {
        Bytes::from(vec![0u8; len as usize])
    }
}

/// `data` extended with zeros to `len` bytes.
fn pad(data: Bytes, len: u64) -> Bytes {
    debug_assert!(data.len() as u64 <= len);
    if data.len() as u64 >= len {
        return data;
    }
    if data.is_empty() {
        return zeros(len);
    }
    let mut b = BytesMut::with_capacity(len as usize);
    b.extend_from_slice(&data);
    b.resize(len as usize, 0);
    b.freeze()
}

/// librbd's `clip_io`: zero-length requests are always valid, a request
/// starting at or past the end is `EINVAL`, one crossing it is clipped.
fn clip(inner: &Inner, view: &View, off: u64, len: u64) -> Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    if off >= view.size {
        return Err(RbdError::invalid(format!(
            "offset {off} is at or past the end ({}) of {}",
            view.size,
            inner.what(view)
        )));
    }
    Ok(len.min(view.size - off))
}

/// The object's bytes that are inside the image (the last object may be partial).
fn obj_len_in_image(view: &View, objno: u64) -> u64 {
    let start = objno << view.order();
    view.obj_size().min(view.size.saturating_sub(start))
}

/// Read `[off, off+len)` of a view; the range must be inside it.
pub(crate) fn read_range(
    inner: Arc<Inner>,
    view: Arc<View>,
    off: u64,
    len: u64,
) -> BoxFuture<'static, Result<Bytes>> {
    async move {
        debug_assert!(off + len <= view.size || len == 0);
        let exts = map_extents(view.order(), off, len);
        if exts.len() == 1 {
            return read_object(&inner, &view, exts[0]).await;
        }
        let parts: Vec<Bytes> =
            futures::stream::iter(exts.into_iter().map(|e| read_object(&inner, &view, e)))
                .buffered(PARALLEL_OPS_MAX)
                .try_collect()
                .await?;
        let mut out = BytesMut::with_capacity(len as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        debug_assert_eq!(out.len() as u64, len);
        Ok(out.freeze())
    }
    .boxed()
}

async fn read_object(inner: &Arc<Inner>, view: &Arc<View>, e: ObjExtent) -> Result<Bytes> {
    let img_off = e.image_off(view.order());
    // With exclusive-lock, another client may create objects while this
    // handle does not own the lock: then "absent" in the cached map is not
    // trusted (as librbd), only snapshot maps and the owner's map are.
    let trusted = view.snap != NOSNAP
        || view.header.features & FEATURE_EXCLUSIVE_LOCK == 0
        || inner.owned.load(std::sync::atomic::Ordering::Acquire);
    if trusted && view.map.get(e.objno) == Some(OBJECT_NONEXISTENT) {
        return read_parent(view, img_off, e.len).await;
    }
    let req = OpRequest::new(inner.data_oid(e.objno))
        .at_snap(view.snap)
        .op(Op::Read {
            off: e.obj_off,
            len: e.len,
        });
    match inner.rados.operate(req).await {
        Ok(reply) => match reply.outputs.into_iter().next() {
            Some(OpOutput::Data(d)) if d.len() as u64 <= e.len => Ok(pad(d, e.len)),
            Some(OpOutput::Data(d)) => Err(RbdError::corrupt(format!(
                "object {} of {} returned {} bytes for a {}-byte read",
                e.objno,
                inner.what(view),
                d.len(),
                e.len
            ))),
            _ => Err(RbdError::corrupt(format!(
                "object {} of {}: read returned no data",
                e.objno,
                inner.what(view)
            ))),
        },
        Err(err) if err.errno == Errno::ENOENT => read_parent(view, img_off, e.len).await,
        Err(err) => Err(RbdError::rados(
            format!("reading object {} of {}", e.objno, inner.what(view)),
            err,
        )),
    }
}

/// What the parent shows at `[img_off, img_off+len)` of a child view:
/// parent bytes inside the overlap, zeros past it (and for non-clones).
pub(crate) async fn read_parent(view: &View, img_off: u64, len: u64) -> Result<Bytes> {
    match &view.parent {
        Some(p) => read_parent_upto(p, view.overlap(), img_off, len).await,
        None => Ok(zeros(len)),
    }
}

/// What parent `p` shows at `[img_off, img_off+len)` of a child whose
/// overlap is `overlap` (a snapshot's may differ from the head's).
pub(crate) async fn read_parent_upto(
    p: &crate::image::ParentLink,
    overlap: u64,
    img_off: u64,
    len: u64,
) -> Result<Bytes> {
    if img_off >= overlap {
        return Ok(zeros(len));
    }
    let pv = p.image.inner.view();
    let n = len
        .min(overlap - img_off)
        .min(pv.size.saturating_sub(img_off));
    if n == 0 {
        return Ok(zeros(len));
    }
    let data = read_range(p.image.inner.clone(), pv, img_off, n).await?;
    Ok(pad(data, len))
}

/// What a request does to one object.
#[derive(Clone, Debug)]
enum Mutation {
    /// Write these bytes at the piece's offset.
    Write(Bytes),
    /// Make the piece read as zeros, freeing space where possible.
    Zero,
}

/// The stripe guard held across one object's op (held only for its Drop).
#[allow(dead_code)]
enum StripeGuard<'a> {
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Make sure the map says `EXISTS` before an op that leaves the object
/// existing. Returns the stripe guard to hold across the op and whether
/// the state was just stored (`false`: it came from the cache, which may
/// be stale if another client removed the object since).
async fn ensure_exists_state<'a>(
    inner: &'a Inner,
    view: &View,
    objno: u64,
) -> Result<(StripeGuard<'a>, bool)> {
    let mut stored = false;
    loop {
        let g = inner.stripe(objno).read().await;
        match view.map.get(objno) {
            None | Some(OBJECT_EXISTS) => return Ok((StripeGuard::Shared(g), stored)),
            Some(_) => {}
        }
        drop(g);
        {
            let _w = inner.stripe(objno).write().await;
            if view.map.get(objno).is_some_and(|s| s != OBJECT_EXISTS) {
                store_exists(inner, view, objno).await?;
                stored = true;
            }
        }
        // Loop to take the shared guard; the state cannot go back to
        // anything but EXISTS except through a removal, which re-checks.
    }
}

async fn store_exists(inner: &Inner, view: &View, objno: u64) -> Result<()> {
    if let Err(e) =
        objmap::store_state(inner.rados.as_ref(), &view.map_oid, objno, OBJECT_EXISTS).await
    {
        // Unknown stored state now: never trust this map again.
        view.map.invalidate();
        return Err(e);
    }
    view.map.set(objno, OBJECT_EXISTS);
    Ok(())
}

/// The object turned out to be absent although the cache said it exists
/// (another client removed it): store `EXISTS` again before recreating it,
/// holding the stripe exclusively.
async fn force_exists_state<'a>(
    inner: &'a Inner,
    view: &View,
    objno: u64,
) -> Result<StripeGuard<'a>> {
    let w = inner.stripe(objno).write().await;
    if view.map.get(objno).is_some() {
        store_exists(inner, view, objno).await?;
    }
    Ok(StripeGuard::Exclusive(w))
}

async fn operate_ops(
    inner: &Inner,
    view: &View,
    objno: u64,
    ops: Vec<Op>,
) -> std::result::Result<(), quarry_rados::RadosError> {
    let mut req = OpRequest::new(inner.data_oid(objno)).with_snapc(view.snapc.clone());
    req.ops = ops;
    inner.rados.operate(req).await.map(|_| ())
}

/// Split a buffer into runs of non-zero blocks (offsets relative to it).
pub(crate) fn nonzero_runs(data: &Bytes) -> Vec<(u64, Bytes)> {
    let mut runs = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + COPYUP_ZERO_BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(pos),
            (true, Some(s)) => {
                runs.push((s as u64, data.slice(s..pos)));
                start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = start {
        runs.push((s as u64, data.slice(s..)));
    }
    runs
}

/// How many bytes of object `objno` a view with parent overlap `overlap`
/// and size `size` reads from the parent.
fn parent_len_in_object(order: u8, objno: u64, overlap: u64, size: u64) -> u64 {
    let start = objno << order;
    let end = (start + (1u64 << order)).min(overlap.min(size));
    end.saturating_sub(start)
}

/// How many bytes of object `objno` snapshot `rec` reads from the head's
/// parent `head_parent` (0 if it has no parent or another one).
pub(crate) fn snap_parent_len(
    order: u8,
    objno: u64,
    rec: &crate::header::SnapRecord,
    head_parent: &crate::header::ParentSpec,
) -> u64 {
    match &rec.parent {
        Some(p) if p.same_source(head_parent) => {
            parent_len_in_object(order, objno, p.overlap, rec.size)
        }
        _ => 0,
    }
}

/// Whether a copy-up of `objno` is deep (deep-flatten), and under which
/// snap context: the parent's data is created "before" the newest run of
/// snapshots that each read exactly the bytes the head copies up from the
/// same parent, so they read it from the object (the next write with the
/// image's snap context clones it for them) instead of through the
/// parent. The snapshots older than that run are in the context: the
/// object stays absent at them (it has no head now), so they read what
/// they read before (their own clone, their own parent link, or zeros).
/// Usually the run is every snapshot (an empty context); a migration's
/// copied snapshots (no parent) come before it. A newest snapshot that
/// reads fewer bytes (taken before a shrink, or with no parent) would see
/// data it never had: then the copy-up is the old way and the snapshots
/// keep their parent reference (flatten then leaves them linked).
fn copy_up_deep_snapc(view: &View, objno: u64, head_len: u64) -> Option<SnapContext> {
    let p = view.parent.as_ref()?;
    if view.snap != NOSNAP || view.header.features & FEATURE_DEEP_FLATTEN == 0 {
        return None;
    }
    let reads = |s: &crate::header::SnapRecord| {
        snap_parent_len(view.order(), objno, s, &p.spec) == head_len
    };
    let run = view
        .header
        .snaps
        .values()
        .rev()
        .take_while(|s| reads(s))
        .count();
    if run == 0 {
        return None;
    }
    let older: Vec<SnapId> = view
        .header
        .snaps
        .keys()
        .take(view.header.snaps.len() - run)
        .rev()
        .copied()
        .collect();
    Some(SnapContext {
        seq: older.first().copied().unwrap_or(0),
        snaps: older,
    })
}

/// Before a deep copy-up: mark the object existing in every snapshot's
/// object map (the map must never say NONEXISTENT for an object a
/// snapshot can read). `EXISTS`, not librbd's `EXISTS_CLEAN` for later
/// snapshots: "changed" is always a safe answer for fast-diff. A snapshot
/// without a stored map (object-map enabled later) gets none.
async fn mark_exists_in_snap_maps(inner: &Inner, view: &View, objno: u64) -> Result<()> {
    if !view.has_object_map() {
        return Ok(());
    }
    let ids: Vec<SnapId> = view.header.snaps.keys().copied().collect();
    futures::stream::iter(ids.into_iter().map(|snap| {
        let oid = inner.map_oid(snap);
        async move {
            objmap::store_state_if_exists(inner.rados.as_ref(), &oid, objno, OBJECT_EXISTS).await
        }
    }))
    .buffer_unordered(PARALLEL_OPS_MAX)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Copy object `objno` up from the parent and apply `extra` in the same
/// compound op. If someone else created it first, apply `extra` alone.
/// Deep copy-up (see [`copy_up_deep_snapc`]) takes two ops instead: the
/// parent's data with an empty snap context, then `extra` with the
/// image's. A crash between them leaves an object holding exactly the
/// parent's bytes, which is what head and snapshots read before.
async fn copy_up(inner: &Inner, view: &View, objno: u64, extra: Vec<Op>) -> Result<()> {
    let start = objno << view.order();
    let end = (start + view.obj_size()).min(view.overlap());
    let pdata = if end > start {
        read_parent(view, start, end - start).await?
    } else {
        Bytes::new()
    };
    copy_up_data(inner, view, objno, pdata, extra).await
}

/// [`copy_up`] with the parent's bytes for the object's overlap already
/// read (a protected parent snapshot never changes, so they stay right).
async fn copy_up_data(
    inner: &Inner,
    view: &View,
    objno: u64,
    pdata: Bytes,
    extra: Vec<Op>,
) -> Result<()> {
    let start = objno << view.order();
    let end = (start + view.obj_size()).min(view.overlap());
    debug_assert_eq!(pdata.len() as u64, end.saturating_sub(start));
    let runs = nonzero_runs(&pdata);
    // All zeros: snapshots read zeros through the parent as from nothing.
    let deep = if runs.is_empty() {
        None
    } else {
        copy_up_deep_snapc(view, objno, end.saturating_sub(start))
    };
    if let Some(snapc) = deep {
        mark_exists_in_snap_maps(inner, view, objno).await?;
        let mut ops = vec![Op::Create { exclusive: true }];
        ops.extend(runs.into_iter().map(|(off, data)| Op::Write { off, data }));
        let mut req = OpRequest::new(inner.data_oid(objno)).with_snapc(snapc);
        req.ops = ops;
        match inner.rados.operate(req).await {
            Ok(_) => {}
            Err(e) if e.errno == Errno::EEXIST => {}
            Err(e) => {
                return Err(RbdError::rados(
                    format!("deep copy-up of object {objno} of {}", inner.what(view)),
                    e,
                ))
            }
        }
        if extra.is_empty() {
            return Ok(());
        }
        return operate_ops(inner, view, objno, extra).await.map_err(|e| {
            RbdError::rados(format!("writing object {objno} of {}", inner.what(view)), e)
        });
    }
    let mut ops = vec![Op::Create { exclusive: true }];
    ops.extend(runs.into_iter().map(|(off, data)| Op::Write { off, data }));
    ops.extend(extra.iter().cloned());
    match operate_ops(inner, view, objno, ops).await {
        Ok(()) => Ok(()),
        Err(e) if e.errno == Errno::EEXIST => {
            if extra.is_empty() {
                return Ok(());
            }
            operate_ops(inner, view, objno, extra).await.map_err(|e| {
                RbdError::rados(format!("writing object {objno} of {}", inner.what(view)), e)
            })
        }
        Err(e) => Err(RbdError::rados(
            format!("copying up object {objno} of {}", inner.what(view)),
            e,
        )),
    }
}

/// Flatten step: copy one object up unless it exists or the parent has only zeros there
/// (`keep_zeros`: zeros too, for a parent link that will be replaced by
/// another whose data may differ there).
/// The object map is not asked: `EXISTS` is stored before the object is
/// created, so after a failed copy-up (or an interrupted flatten) it names
/// an absent object, and skipping it would detach the parent from data
/// never copied.
pub(crate) async fn copy_up_if_absent(
    inner: &Inner,
    view: &View,
    objno: u64,
    keep_zeros: bool,
) -> Result<()> {
    let start = objno << view.order();
    let end = (start + view.obj_size()).min(view.overlap());
    if end <= start {
        return Ok(());
    }
    let probe = OpRequest::new(inner.data_oid(objno)).op(Op::Stat);
    match inner.rados.operate(probe).await {
        Ok(_) => return Ok(()),
        Err(e) if e.errno == Errno::ENOENT => {}
        Err(e) => {
            return Err(RbdError::rados(
                format!("probing object {objno} of {}", inner.what(view)),
                e,
            ))
        }
    }
    let pdata = read_parent(view, start, end - start).await?;
    if !keep_zeros && pdata.iter().all(|&b| b == 0) {
        // Nothing to copy: once detached, the absent object reads as zeros too.
        return Ok(());
    }
    let (_g, _) = ensure_exists_state(inner, view, objno).await?;
    // The parent's bytes read above: reading them again doubled flatten's
    // parent reads.
    copy_up_data(inner, view, objno, pdata, vec![]).await
}

/// Whether snapshot `snap` reads an object with snap set `ss` (RADOS'
/// resolution, as the object layer's: the head if no clone was taken
/// since `snap`, else the oldest clone at or after it whose label reaches
/// back to it).
fn exists_at(ss: &SnapSet, snap: SnapId) -> bool {
    let head = ss.clones.last().is_some_and(|c| c.clone == NOSNAP);
    if snap > ss.seq {
        return head;
    }
    ss.clones
        .iter()
        .filter(|c| c.clone != NOSNAP)
        .find(|c| c.clone >= snap)
        .is_some_and(|c| c.snaps.first().is_some_and(|&s| s <= snap))
}

/// A snapshot deep flatten checks: its id, how many bytes of the object
/// it reads from the parent, and its object map.
pub(crate) struct SnapCheck<'a> {
    pub snap: SnapId,
    pub parent_len: u64,
    pub map: &'a objmap::ObjectMap,
}

/// Deep flatten, after the head's copy-up of `objno`: which of `snaps`
/// still read non-zero parent data in this object, so must keep their
/// parent reference. A snapshot reads through to the parent where the
/// object does not exist at it (copied up with the snap context before
/// deep copy-up, or recreated after a removal) or its object map says
/// NONEXISTENT; where it reads the object, the flatten changes nothing
/// for it.
pub(crate) async fn snaps_needing_parent(
    inner: &Inner,
    view: &View,
    objno: u64,
    snaps: &[SnapCheck<'_>],
) -> Result<Vec<SnapId>> {
    let Some(p) = &view.parent else {
        return Ok(Vec::new());
    };
    if snaps.is_empty() {
        return Ok(Vec::new());
    }
    let req = OpRequest::new(inner.data_oid(objno)).op(Op::ListSnaps);
    let ss = match inner.rados.operate(req).await {
        Ok(reply) => match reply.outputs.into_iter().next() {
            Some(OpOutput::Snaps(ss)) => ss,
            _ => {
                return Err(RbdError::corrupt(format!(
                    "object {objno} of {}: ListSnaps returned nothing",
                    inner.what(view)
                )))
            }
        },
        Err(e) if e.errno == Errno::ENOENT => SnapSet::default(),
        Err(e) => {
            return Err(RbdError::rados(
                format!(
                    "listing snapshots of object {objno} of {}",
                    inner.what(view)
                ),
                e,
            ))
        }
    };
    let mut through: Vec<&SnapCheck<'_>> = Vec::new();
    for c in snaps.iter().filter(|c| c.parent_len > 0) {
        let absent = !exists_at(&ss, c.snap)
            || (c.map.get(objno) == Some(OBJECT_NONEXISTENT)
                // The map was loaded before this flatten's copy-up, which
                // may have marked the object since: ask the stored map.
                && objmap::load_state(inner.rados.as_ref(), &inner.map_oid(c.snap), objno)
                    .await?
                    .is_some_and(|s| !objmap::may_exist(s)));
        if absent {
            through.push(c);
        }
    }
    let Some(max) = through.iter().map(|c| c.parent_len).max() else {
        return Ok(Vec::new());
    };
    let start = objno << view.order();
    let pdata = read_parent_upto(p, start + max, start, max).await?;
    Ok(through
        .into_iter()
        .filter(|c| pdata[..c.parent_len as usize].iter().any(|&b| b != 0))
        .map(|c| c.snap)
        .collect())
}

/// Apply one mutation to one object.
async fn mutate_object(inner: &Inner, view: &View, e: ObjExtent, m: Mutation) -> Result<()> {
    let what = || format!("object {} of {}", e.objno, inner.what(view));
    let start = e.objno << view.order();
    let in_overlap = view.parent.is_some() && start < view.overlap();
    let in_image = obj_len_in_image(view, e.objno);
    let covers = e.obj_off == 0 && e.len >= in_image;
    let reaches_end = e.obj_off + e.len >= in_image;
    let state = view.map.get(e.objno);

    if let Mutation::Zero = m {
        if !in_overlap {
            if state == Some(OBJECT_NONEXISTENT) {
                return Ok(()); // already reads as zeros
            }
            if covers {
                // Whole object: remove it (snapshots keep their clone).
                let _w = inner.stripe(e.objno).write().await;
                match operate_ops(inner, view, e.objno, vec![Op::Remove]).await {
                    Ok(()) => {}
                    Err(err) if err.errno == Errno::ENOENT => {}
                    Err(err) => return Err(RbdError::rados(format!("removing {}", what()), err)),
                }
                if view.map.get(e.objno).is_some_and(objmap::may_exist) {
                    if let Err(err) = objmap::store_state(
                        inner.rados.as_ref(),
                        &view.map_oid,
                        e.objno,
                        OBJECT_NONEXISTENT,
                    )
                    .await
                    {
                        view.map.invalidate();
                        return Err(err);
                    }
                    view.map.set(e.objno, OBJECT_NONEXISTENT);
                }
                return Ok(());
            }
            let (_g, _) = ensure_exists_state(inner, view, e.objno).await?;
            // Neither op creates an absent object, so a stale cached state is harmless.
            let ops = if reaches_end {
                vec![Op::AssertExists, Op::Truncate(e.obj_off)]
            } else {
                vec![Op::Zero {
                    off: e.obj_off,
                    len: e.len,
                }]
            };
            return match operate_ops(inner, view, e.objno, ops).await {
                Ok(()) => Ok(()),
                Err(err) if err.errno == Errno::ENOENT => Ok(()),
                Err(err) => Err(RbdError::rados(format!("zeroing {}", what()), err)),
            };
        }
        // Inside the parent overlap the object must stay (empty or zeroed)
        // so the parent's data does not show through.
        let op = if covers {
            Op::Truncate(0)
        } else if reaches_end {
            Op::Truncate(e.obj_off)
        } else {
            Op::Zero {
                off: e.obj_off,
                len: e.len,
            }
        };
        return apply(inner, view, e.objno, op, true, covers).await;
    }

    let Mutation::Write(data) = m else {
        unreachable!("Zero handled above")
    };
    debug_assert_eq!(data.len() as u64, e.len);
    apply(
        inner,
        view,
        e.objno,
        Op::Write {
            off: e.obj_off,
            data,
        },
        in_overlap,
        false,
    )
    .await
}

/// Apply `op` (which leaves the object existing) to one object, keeping the
/// object map invariant and copying up from the parent when `in_overlap`.
/// `no_copy_up`: the op rewrites the whole object, parent data is not needed.
async fn apply(
    inner: &Inner,
    view: &View,
    objno: u64,
    op: Op,
    in_overlap: bool,
    no_copy_up: bool,
) -> Result<()> {
    let what = || format!("object {objno} of {}", inner.what(view));
    let (g, stored) = ensure_exists_state(inner, view, objno).await?;
    // When the map's EXISTS came from the cache, guard the op so that an
    // object removed meanwhile by another client is noticed before the op
    // recreates it behind the stored map's back.
    let guard = in_overlap || (!stored && view.map.get(objno).is_some());
    if !guard {
        return operate_ops(inner, view, objno, vec![op])
            .await
            .map_err(|err| RbdError::rados(format!("writing {}", what()), err));
    }
    match operate_ops(inner, view, objno, vec![Op::AssertExists, op.clone()]).await {
        Ok(()) => return Ok(()),
        Err(err) if err.errno == Errno::ENOENT => {}
        Err(err) => return Err(RbdError::rados(format!("writing {}", what()), err)),
    }
    let _g = if stored || view.map.get(objno).is_none() {
        g
    } else {
        drop(g);
        force_exists_state(inner, view, objno).await?
    };
    if in_overlap && !no_copy_up {
        copy_up(inner, view, objno, vec![op]).await
    } else {
        operate_ops(inner, view, objno, vec![op])
            .await
            .map_err(|err| RbdError::rados(format!("writing {}", what()), err))
    }
}

/// Run per-object mutations concurrently.
async fn mutate_range(
    inner: &Inner,
    view: &View,
    off: u64,
    len: u64,
    data: Option<Bytes>,
) -> Result<()> {
    let exts = map_extents(view.order(), off, len);
    let mutation = |e: &ObjExtent| match &data {
        Some(d) => Mutation::Write(d.slice(e.buf_off as usize..(e.buf_off + e.len) as usize)),
        None => Mutation::Zero,
    };
    if let [e] = exts[..] {
        // One object (most writes): awaited directly. `FuturesUnordered`
        // wakes its task after polling every future once, and on the
        // caller's thread that wake turned the operation into a runtime
        // task and woke an I/O thread to poll it: one thread hand-off more
        // per write than a read (which has this shortcut too).
        return mutate_object(inner, view, e, mutation(&e)).await;
    }
    let muts = exts.into_iter().map(|e| {
        let m = mutation(&e);
        mutate_object(inner, view, e, m)
    });
    futures::stream::iter(muts)
        .buffer_unordered(PARALLEL_OPS_MAX)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

impl Image {
    /// Read `len` bytes at `off`. Clipped at the end of the image (the
    /// result is shorter); `EINVAL` if `off` is at/after the end and
    /// `len > 0`. Never-written ranges read as zeros (or the parent's data
    /// within a clone's overlap).
    pub async fn read(&self, off: u64, len: u64) -> Result<Bytes> {
        let inner = &self.inner;
        inner.check_open()?;
        let _g = inner.gate.read().await;
        let view = inner.view();
        let len = clip(inner, &view, off, len)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        inner.touch(&view, false);
        read_range(inner.clone(), view, off, len).await
    }

    /// Write `data` at `off`; returns the bytes written (clipped at the end
    /// of the image). `EROFS` on read-only handles/snapshots, `EINVAL` if
    /// `off` is at/after the end.
    pub async fn write(&self, off: u64, data: Bytes) -> Result<u64> {
        let inner = &self.inner;
        let _g = inner.write_gate().await?;
        let view = inner.view();
        let len = clip(inner, &view, off, data.len() as u64)?;
        if len == 0 {
            return Ok(0);
        }
        inner.touch(&view, true);
        mutate_range(inner, &view, off, len, Some(data.slice(..len as usize))).await?;
        Ok(len)
    }

    /// Discard `[off, off+len)`: whole objects are removed (kept as empty
    /// whiteouts inside a clone's overlap), partial pieces zeroed. The range
    /// reads as zeros afterwards (stronger than librbd's
    /// `rbd_skip_partial_discard`, which may leave sub-64-KiB pieces).
    /// Returns the bytes discarded (clipped).
    pub async fn discard(&self, off: u64, len: u64) -> Result<u64> {
        let inner = &self.inner;
        let _g = inner.write_gate().await?;
        let view = inner.view();
        let len = clip(inner, &view, off, len)?;
        if len == 0 {
            return Ok(0);
        }
        inner.touch(&view, true);
        mutate_range(inner, &view, off, len, None).await?;
        Ok(len)
    }

    /// Make `[off, off+len)` read as zeros. `flags` 0 may deallocate (like
    /// discard); [`WRITE_ZEROES_FLAG_THICK_PROVISION`] writes real zeros.
    /// Unknown flag bits are `EINVAL`. Returns the bytes zeroed (clipped).
    pub async fn write_zeroes(&self, off: u64, len: u64, flags: u32) -> Result<u64> {
        if flags & !WRITE_ZEROES_FLAG_THICK_PROVISION != 0 {
            return Err(RbdError::invalid(format!(
                "unknown write_zeroes flags {flags:#x}"
            )));
        }
        if flags & WRITE_ZEROES_FLAG_THICK_PROVISION == 0 {
            return self.discard(off, len).await;
        }
        let inner = &self.inner;
        let _g = inner.write_gate().await?;
        let view = inner.view();
        let len = clip(inner, &view, off, len)?;
        if len == 0 {
            return Ok(0);
        }
        inner.touch(&view, true);
        let exts = map_extents(view.order(), off, len);
        futures::stream::iter(
            exts.into_iter()
                .map(|e| mutate_object(inner, &view, e, Mutation::Write(zeros(e.len)))),
        )
        .buffer_unordered(PARALLEL_OPS_MAX)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(len)
    }

    /// Flush: every acknowledged write is already durable (the object layer
    /// acknowledges only durable writes and Quarry has no write-back cache),
    /// so this only checks that the handle is open.
    pub async fn flush(&self) -> Result<()> {
        self.inner.check_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        let mut v = vec![0u8; 5 * COPYUP_ZERO_BLOCK];
        v[COPYUP_ZERO_BLOCK + 3] = 1;
        v[2 * COPYUP_ZERO_BLOCK] = 2;
        v[4 * COPYUP_ZERO_BLOCK + 10] = 3;
        let r = nonzero_runs(&Bytes::from(v));
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].0, r[0].1.len()),
            (COPYUP_ZERO_BLOCK as u64, 2 * COPYUP_ZERO_BLOCK)
        );
        assert_eq!(
            (r[1].0, r[1].1.len()),
            (4 * COPYUP_ZERO_BLOCK as u64, COPYUP_ZERO_BLOCK)
        );
        assert!(nonzero_runs(&Bytes::from(vec![0u8; 10])).is_empty());
        assert_eq!(nonzero_runs(&Bytes::from(vec![1u8; 10]))[0].1.len(), 10);
    }

    #[test]
    fn padding() {
        assert_eq!(pad(Bytes::from_static(b"ab"), 4).as_ref(), b"ab\0\0");
        assert_eq!(pad(Bytes::new(), 3).as_ref(), b"\0\0\0");
        assert_eq!(zeros(5).len(), 5);
        assert_eq!(zeros(2 << 20).len(), 2 << 20);
    }
}
