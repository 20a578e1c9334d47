//! A live migration's snapshot history (see `migration.rs`).
//!
//! `prepare` copies the source's snapshots into the destination's data
//! objects before the destination exists under its name: for each object,
//! each snapshot's content is written in snapshot order, every write under
//! the snap context as it was just before that snapshot (so the object
//! layer clones it for exactly the snapshots it belongs to), and the head
//! is removed at the end under the full snap context. Each object is then
//! clones only: the destination's snapshots read their own data, and its
//! head (absent everywhere) reads through to the source's head like any
//! migration's. Nobody can open the destination while this runs, so no
//! reader ever sees an object half built.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use quarry_rados::{ObjectId, Op, OpRequest, SnapContext, SnapId};

use crate::error::{RbdError, Result};
use crate::image::{Image, PARALLEL_OPS_MAX};
use crate::layout::{self, num_objects};
use crate::IoCtx;

/// The ops that make an object that `exists` (or not) hold `data`
/// (`None`: nothing, the head removed).
fn content_ops(data: Option<&Bytes>, exists: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    match (data, exists) {
        (Some(d), exists) => {
            ops.push(if exists {
                Op::Truncate(0)
            } else {
                Op::Create { exclusive: true }
            });
            ops.extend(
                crate::io::nonzero_runs(d)
                    .into_iter()
                    .map(|(off, data)| Op::Write { off, data }),
            );
        }
        (None, true) => ops.push(Op::Remove),
        (None, false) => {}
    }
    ops
}

/// The snap context just before snapshot `i` of `ids` (ascending).
fn snapc_before(ids: &[SnapId], i: usize) -> SnapContext {
    SnapContext {
        seq: if i == 0 { 0 } else { ids[i - 1] },
        snaps: ids[..i].iter().rev().copied().collect(),
    }
}

/// Write one object's history: `contents[i]` is what the object holds at
/// destination snapshot `ids[i]` (ascending); the head is left absent.
async fn build_object(
    rados: &dyn quarry_rados::Rados,
    oid: &ObjectId,
    ids: &[SnapId],
    contents: &[Option<Bytes>],
) -> Result<()> {
    debug_assert_eq!(ids.len(), contents.len());
    let mut exists = false;
    let mut last: Option<&Bytes> = None;
    // One step per snapshot, then the head's removal under every snapshot.
    for i in 0..=ids.len() {
        let data = contents.get(i).and_then(|c| c.as_ref());
        if i < ids.len() && data == last {
            // Unchanged since the previous snapshot: the clone the next
            // write makes serves both.
            continue;
        }
        last = data;
        let ops = content_ops(data, exists);
        if ops.is_empty() {
            continue;
        }
        let mut req = OpRequest::new(oid.clone()).with_snapc(snapc_before(ids, i));
        req.ops = ops;
        rados
            .operate(req)
            .await
            .map_err(|e| RbdError::rados(format!("copying the history of {}", oid.name), e))?;
        exists = data.is_some();
    }
    Ok(())
}

/// Copy the history of `sources` (the source opened at each of its
/// snapshots, oldest first) into the data objects of image `dest_id` in
/// `dest_io` with object size order `order`, as snapshots `ids` (the
/// destination's, ascending, one per source snapshot).
pub(crate) async fn copy_history(
    rados: &dyn quarry_rados::Rados,
    dest_io: &IoCtx,
    dest_id: &str,
    order: u8,
    sources: &[Image],
    ids: &[SnapId],
) -> Result<()> {
    if sources.len() != ids.len() {
        return Err(RbdError::invalid(
            "migration: one destination snapshot per source snapshot",
        ));
    }
    let span = sources.iter().map(|s| s.size()).max().unwrap_or(0);
    let obj = 1u64 << order;
    futures::stream::iter((0..num_objects(span, order)).map(|o| async move {
        let start = o * obj;
        let mut contents = Vec::with_capacity(sources.len());
        for s in sources {
            let end = (start + obj).min(s.size());
            if end <= start {
                contents.push(None);
                continue;
            }
            let d = s.read(start, end - start).await?;
            contents.push((!d.iter().all(|&b| b == 0)).then_some(d));
        }
        if contents.iter().all(Option::is_none) {
            return Ok(());
        }
        let oid = dest_io.oid(layout::data_oid(dest_id, o));
        build_object(rados, &oid, ids, &contents).await
    }))
    .buffer_unordered(PARALLEL_OPS_MAX / 4)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snap_contexts_before_each_snapshot() {
        let ids = [4, 9, 12];
        assert_eq!(snapc_before(&ids, 0), SnapContext::default());
        let c = snapc_before(&ids, 2);
        assert_eq!((c.seq, c.snaps), (9, vec![9, 4]));
        let c = snapc_before(&ids, 3);
        assert_eq!((c.seq, c.snaps), (12, vec![12, 9, 4]));
    }

    #[test]
    fn content_ops_create_replace_and_remove() {
        let d = Bytes::from(vec![1u8; 8192]);
        assert!(matches!(
            content_ops(Some(&d), false)[0],
            Op::Create { exclusive: true }
        ));
        assert!(matches!(content_ops(Some(&d), true)[0], Op::Truncate(0)));
        assert!(matches!(content_ops(None, true)[..], [Op::Remove]));
        assert!(content_ops(None, false).is_empty());
    }
}
