//! Changed-extent iteration (`rbd_diff_iterate2`) and disk usage.
//!
//! Whole-object mode answers from the object maps alone (no data-object
//! round trips): since creation, an object is reported if it exists in the
//! end view's map; since snapshot S, if its existence differs between S and
//! the end, or any map after S up to the end says `EXISTS` ("written in
//! that epoch"). Exact mode narrows the candidate objects the same way and
//! then asks the object layer (`ListSnaps`) which byte ranges of the clones
//! between S and the end differ (the complement of their `overlap`). Without
//! a valid object map every object in range is examined with `ListSnaps`.

use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, OpRequest, SnapId, SnapSet, NOSNAP};

use futures::{StreamExt, TryStreamExt};

use crate::error::{RbdError, Result};
use crate::image::{Image, Inner, View, PARALLEL_OPS_MAX};
use crate::objmap::{self, OBJECT_EXISTS};
use crate::{DiffExtent, DiffOptions};

/// Changed extents of one object: `(obj_off, len, exists)`.
type ObjExtents = Vec<(u64, u64, bool)>;

/// The stored maps a diff needs, when all are trustworthy.
struct Maps {
    /// Map at the from-snapshot (None = diff since creation).
    from: Option<Vec<u8>>,
    /// Maps of the snapshots after `from` up to the end, and the end's own.
    after: Vec<Vec<u8>>,
    /// The end view's map.
    end: Vec<u8>,
}

fn st(m: &[u8], objno: u64) -> u8 {
    usize::try_from(objno)
        .ok()
        .and_then(|i| m.get(i).copied())
        .unwrap_or(0)
}

/// Index of the clone (or head) in `ss.clones` that serves reads at `snap`.
fn serving(ss: &SnapSet, snap: SnapId) -> Option<usize> {
    if snap == NOSNAP {
        return ss.clones.iter().position(|c| c.clone == NOSNAP);
    }
    for (i, c) in ss.clones.iter().enumerate() {
        if c.clone == NOSNAP {
            // No clone was taken since `snap`: the head served it if it
            // already existed then (it was last written before `snap`).
            return (snap > ss.seq).then_some(i);
        }
        if c.clone >= snap {
            return c
                .snaps
                .first()
                .is_some_and(|&oldest| oldest <= snap)
                .then_some(i);
        }
    }
    None
}

/// Sorted, merged union of intervals `(off, len)`.
fn union(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|&(_, l)| l > 0);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (o, l) in v {
        match out.last_mut() {
            Some((po, pl)) if *po + *pl >= o => *pl = (*pl).max(o + l - *po),
            _ => out.push((o, l)),
        }
    }
    out
}

/// `[0, span)` minus the given sorted intervals.
fn complement(covered: &[(u64, u64)], span: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cur = 0;
    for &(o, l) in covered {
        if o > cur {
            out.push((cur, o.min(span) - cur));
        }
        cur = cur.max(o + l);
        if cur >= span {
            break;
        }
    }
    if cur < span {
        out.push((cur, span - cur));
    }
    out.retain(|&(_, l)| l > 0);
    out
}

async fn list_snaps(inner: &Inner, view: &View, objno: u64) -> Result<SnapSet> {
    let req = OpRequest::new(inner.data_oid(objno)).op(Op::ListSnaps);
    match inner.rados.operate(req).await {
        Ok(reply) => match reply.outputs.into_iter().next() {
            Some(OpOutput::Snaps(ss)) => Ok(ss),
            _ => Err(RbdError::corrupt(format!(
                "object {objno} of {}: ListSnaps returned nothing",
                inner.what(view)
            ))),
        },
        Err(e) if e.errno == Errno::ENOENT => Ok(SnapSet::default()),
        Err(e) => Err(RbdError::rados(
            format!("listing snaps of object {objno} of {}", inner.what(view)),
            e,
        )),
    }
}

/// Changed extents of one object between `from` and the view, as
/// `(obj_off, len, exists)` ascending. In a clone, an absent object shows
/// the parent's data up to the overlap of its time (`ov_from` for the
/// from-snapshot, the view's overlap now), so an object that appears,
/// disappears or whose overlap moved changes there even without own data.
#[allow(clippy::too_many_arguments)]
async fn object_diff(
    inner: &Inner,
    view: &View,
    objno: u64,
    from: Option<SnapId>,
    ov_from: u64,
    maps: Option<&Maps>,
    whole: bool,
) -> Result<ObjExtents> {
    let obj_start = objno << view.order();
    let len_in_image = view.obj_size().min(view.size.saturating_sub(obj_start));
    let par = |ov: u64| ov.saturating_sub(obj_start).min(len_in_image);
    let (pf, pe) = (par(ov_from), par(view.overlap()));
    let finish = |v: ObjExtents, exists_now: bool| -> ObjExtents {
        let v: ObjExtents = v.into_iter().filter(|&(_, l, _)| l > 0).collect();
        if whole && !v.is_empty() {
            vec![(0, len_in_image, exists_now)]
        } else {
            v
        }
    };
    let mut ss = None;
    let (ef, ee, dirty) = match maps {
        Some(m) => (
            from.is_some()
                && m.from
                    .as_ref()
                    .is_some_and(|f| objmap::may_exist(st(f, objno))),
            objmap::may_exist(st(&m.end, objno)),
            m.after.iter().any(|a| st(a, objno) == OBJECT_EXISTS),
        ),
        None => {
            let s = list_snaps(inner, view, objno).await?;
            let ee = serving(&s, view.snap).is_some();
            let ef = from.is_some_and(|f| serving(&s, f).is_some());
            ss = Some(s);
            (ef, ee, true)
        }
    };
    match (ef, ee) {
        (false, false) => {
            if from.is_none() || pf == pe {
                return Ok(vec![]);
            }
            let (a, b) = (pf.min(pe), pf.max(pe));
            Ok(finish(vec![(a, b - a, pe > pf)], pe > 0))
        }
        (true, false) => Ok(finish(
            vec![(0, pe, true), (pe, len_in_image - pe, false)],
            pe > 0,
        )),
        (false, true) => {
            if whole {
                return Ok(vec![(0, len_in_image, true)]);
            }
            let s = match ss {
                Some(s) => s,
                None => list_snaps(inner, view, objno).await?,
            };
            let size =
                serving(&s, view.snap).map_or(len_in_image, |i| s.clones[i].size.min(len_in_image));
            let mut v = vec![(0, size, true)];
            if from.is_some() && pf > size {
                v.push((size, pf - size, false));
            }
            Ok(finish(v, true))
        }
        (true, true) => {
            if !dirty {
                return Ok(vec![]);
            }
            if whole && maps.is_some() {
                return Ok(vec![(0, len_in_image, true)]);
            }
            let s = match ss {
                Some(s) => s,
                None => list_snaps(inner, view, objno).await?,
            };
            let (Some(f), Some(e)) = (from.and_then(|f| serving(&s, f)), serving(&s, view.snap))
            else {
                // The object layer's view disagrees with the maps: report the
                // whole object (over-reporting is always safe).
                return Ok(vec![(0, len_in_image, true)]);
            };
            if f == e {
                return Ok(vec![]);
            }
            if f > e {
                return Ok(vec![(0, len_in_image, true)]);
            }
            let mut changed = Vec::new();
            for k in f..e {
                let (a, b) = (&s.clones[k], &s.clones[k + 1]);
                changed.extend(complement(&union(a.overlap.clone()), a.size.max(b.size)));
            }
            let end_size = s.clones[e].size;
            let mut out = Vec::new();
            for (o, l) in union(changed) {
                let (o, end) = (o.min(len_in_image), (o + l).min(len_in_image));
                if end <= o {
                    continue;
                }
                if end <= end_size {
                    out.push((o, end - o, true));
                } else if o >= end_size {
                    out.push((o, end - o, false));
                } else {
                    out.push((o, end_size - o, true));
                    out.push((end_size, end - end_size, false));
                }
            }
            Ok(finish(out, true))
        }
    }
}

impl Image {
    async fn load_maps(&self, view: &View, from: Option<SnapId>) -> Result<Option<Maps>> {
        if !view.has_object_map() || !view.map.is_valid() {
            return Ok(None);
        }
        let rados = self.inner.rados.as_ref();
        let load = |snap: SnapId| {
            let oid = self.inner.map_oid(snap);
            async move { objmap::load(rados, &oid).await }
        };
        let from_map = match from {
            None => None,
            Some(f) => match load(f).await? {
                Some(m) => Some(m),
                None => return Ok(None),
            },
        };
        let mut after = Vec::new();
        if let Some(f) = from {
            for (&id, _) in view.header.snaps.range(f + 1..) {
                if view.snap != NOSNAP && id >= view.snap {
                    break;
                }
                match load(id).await? {
                    Some(m) => after.push(m),
                    None => return Ok(None),
                }
            }
        }
        let end = view.map.snapshot();
        after.push(end.clone());
        Ok(Some(Maps {
            from: from_map,
            after,
            end,
        }))
    }

    /// Extents of `[off, off+len)` that differ between `opts.from_snap` (or
    /// image creation) and the current view, ascending and non-overlapping,
    /// clipped to the range and the image size. `ENOENT` for an unknown
    /// from-snapshot, `EINVAL` if it is not older than the current view.
    pub async fn diff(&self, off: u64, len: u64, opts: &DiffOptions) -> Result<Vec<DiffExtent>> {
        let inner = &self.inner;
        inner.check_open()?;
        let view = inner.view();
        let from = match &opts.from_snap {
            None => None,
            Some(name) => {
                let rec = view.header.snap_by_name(name).ok_or_else(|| {
                    RbdError::not_found(format!("snapshot {}@{name}", inner.spec()))
                })?;
                if view.snap != NOSNAP && rec.id >= view.snap {
                    return Err(RbdError::invalid(format!(
                        "from-snapshot {name} is not older than the snapshot being diffed"
                    )));
                }
                Some(rec.id)
            }
        };
        // The from-snapshot's parent overlap (0 without a parent).
        let ov_from = from
            .and_then(|f| view.header.snaps.get(&f))
            .and_then(|r| r.parent.as_ref().map(|p| p.overlap.min(r.size)))
            .unwrap_or(0);
        let end = off
            .checked_add(len)
            .ok_or_else(|| RbdError::invalid("diff range overflows"))?
            .min(view.size);
        if off >= end {
            return Ok(vec![]);
        }
        let order = view.order();
        let first = off >> order;
        let last = (end - 1) >> order;
        let maps = self.load_maps(&view, from).await?;
        let whole = opts.whole_object;
        let per_obj: Vec<(u64, ObjExtents)> = futures::stream::iter((first..=last).map(|o| {
            let (view, maps) = (&view, maps.as_ref());
            async move {
                Ok::<_, RbdError>((
                    o,
                    object_diff(inner, view, o, from, ov_from, maps, whole).await?,
                ))
            }
        }))
        .buffered(PARALLEL_OPS_MAX)
        .try_collect()
        .await?;

        // Parent data shows through absent objects within the overlap.
        let overlap = view.overlap();
        let parent_exts = if opts.include_parent && from.is_none() && overlap > off {
            match &view.parent {
                Some(p) => {
                    let popts = DiffOptions {
                        from_snap: None,
                        include_parent: true,
                        whole_object: whole,
                    };
                    let pend = end.min(overlap);
                    Box::pin(p.image.diff(off, pend - off, &popts)).await?
                }
                None => vec![],
            }
        } else {
            vec![]
        };

        let clip = |s: u64, l: u64| -> Option<(u64, u64)> {
            let a = s.max(off);
            let b = (s + l).min(end);
            (b > a).then_some((a, b - a))
        };
        let mut out = Vec::new();
        let mut pi = 0;
        for (o, exts) in per_obj {
            let base = o << order;
            let obj_end = base + view.obj_size();
            let child_has = match &maps {
                Some(m) => objmap::may_exist(st(&m.end, o)),
                None => !exts.is_empty(),
            };
            if !child_has && !parent_exts.is_empty() && base < overlap {
                let lim = obj_end.min(overlap);
                while pi < parent_exts.len() && parent_exts[pi].offset + parent_exts[pi].len <= base
                {
                    pi += 1;
                }
                let mut pieces = Vec::new();
                let mut k = pi;
                while k < parent_exts.len() && parent_exts[k].offset < lim {
                    let e = parent_exts[k];
                    let a = e.offset.max(base);
                    let b = (e.offset + e.len).min(lim);
                    if b > a && e.exists {
                        pieces.push((a, b - a));
                    }
                    k += 1;
                }
                if whole && !pieces.is_empty() {
                    pieces = vec![(base, lim - base)];
                }
                for (a, l) in union(pieces) {
                    if let Some((a, l)) = clip(a, l) {
                        out.push(DiffExtent {
                            offset: a,
                            len: l,
                            exists: true,
                        });
                    }
                }
            }
            for (a, l, exists) in exts {
                if let Some((a, l)) = clip(base + a, l) {
                    out.push(DiffExtent {
                        offset: a,
                        len: l,
                        exists,
                    });
                }
            }
        }
        debug_assert!(out
            .windows(2)
            .all(|w| w[0].offset + w[0].len <= w[1].offset));
        Ok(out)
    }

    /// `rbd_diff_iterate2`: call `cb(offset, len, exists)` for each extent
    /// of [`Image::diff`] in increasing order. A negative return from `cb`
    /// stops the iteration and is returned as `Ok(value)`; otherwise `Ok(0)`.
    pub async fn diff_iterate<F>(
        &self,
        off: u64,
        len: u64,
        opts: &DiffOptions,
        mut cb: F,
    ) -> Result<i32>
    where
        F: FnMut(u64, u64, bool) -> i32,
    {
        for e in self.diff(off, len, opts).await? {
            let r = cb(e.offset, e.len, e.exists);
            if r < 0 {
                return Ok(r);
            }
        }
        Ok(0)
    }

    /// Bytes allocated by this view's own objects at object granularity
    /// (what `rbd du` reports as USED with fast-diff).
    pub async fn disk_usage(&self) -> Result<u64> {
        let opts = DiffOptions {
            from_snap: None,
            include_parent: false,
            whole_object: true,
        };
        Ok(self
            .diff(0, self.size(), &opts)
            .await?
            .iter()
            .map(|e| e.len)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_rados::CloneInfo;

    #[test]
    fn intervals() {
        assert_eq!(
            union(vec![(5, 5), (0, 3), (3, 1), (20, 0)]),
            vec![(0, 4), (5, 5)]
        );
        assert_eq!(complement(&[(2, 3), (8, 10)], 12), vec![(0, 2), (5, 3)]);
        assert_eq!(complement(&[], 4), vec![(0, 4)]);
        assert_eq!(complement(&[(0, 4)], 4), vec![]);
    }

    #[test]
    fn serving_clone() {
        let clone = |id, snaps: Vec<u64>| CloneInfo {
            clone: id,
            snaps,
            size: 10,
            overlap: vec![],
        };
        // created before snap 3, written after snap 3 and after snap 6
        let ss = SnapSet {
            seq: 6,
            clones: vec![
                clone(3, vec![3]),
                clone(6, vec![5, 6]),
                clone(NOSNAP, vec![]),
            ],
        };
        assert_eq!(serving(&ss, 3), Some(0));
        assert_eq!(serving(&ss, 5), Some(1));
        assert_eq!(serving(&ss, 6), Some(1));
        assert_eq!(serving(&ss, 9), Some(2));
        assert_eq!(serving(&ss, NOSNAP), Some(2));
        // created after snap 4 (seq 4), never cloned
        let ss = SnapSet {
            seq: 4,
            clones: vec![clone(NOSNAP, vec![])],
        };
        assert_eq!(serving(&ss, 4), None);
        assert_eq!(serving(&ss, 7), Some(0));
        // created after snap 2, snap 4, written again: clone labelled [4]
        let ss = SnapSet {
            seq: 4,
            clones: vec![clone(4, vec![4]), clone(NOSNAP, vec![])],
        };
        assert_eq!(serving(&ss, 2), None);
        assert_eq!(serving(&ss, 4), Some(0));
    }
}
