//! `rbd sparsify`: give back the space of data objects' zeroed parts.
//!
//! Each existing data object is read with its version; chunks of
//! `sparse_size` bytes (aligned in the object) that are all zeros are
//! punched (`Zero`), zeros at the end are cut off (`Truncate`), and an
//! object that is all zeros is removed (outside a clone's parent overlap;
//! inside it an empty object stays, so the parent's data never shows
//! through). Every change is guarded by the version read, so a write that
//! lands in between makes the object be left as it is: sparsify never
//! changes what the image reads.

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, OpRequest};

use crate::error::{RbdError, Result};
use crate::image::{Image, Inner, View};
use crate::layout::num_objects;
use crate::objmap::{self, OBJECT_NONEXISTENT};

/// The smallest sparse size librbd accepts.
pub const SPARSE_SIZE_MIN: u64 = 4096;

/// What sparsify does to one object's data `d` (as long as the object):
/// `None` if nothing, else the ops to run after the version guard.
fn plan(d: &[u8], sparse: u64, keep_object: bool) -> Option<Vec<Op>> {
    let len = d.len() as u64;
    if d.iter().all(|&b| b == 0) {
        return match (len, keep_object) {
            (0, true) => None,
            (_, true) => Some(vec![Op::Truncate(0)]),
            (_, false) => Some(vec![Op::Remove]),
        };
    }
    // Zero chunks, merged into runs.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut off = 0u64;
    while off < len {
        let end = (off + sparse).min(len);
        if d[off as usize..end as usize].iter().all(|&b| b == 0) {
            match runs.last_mut() {
                Some((_, e)) if *e == off => *e = end,
                _ => runs.push((off, end)),
            }
        }
        off = end;
    }
    let mut ops = Vec::new();
    for (s, e) in runs {
        ops.push(if e == len {
            Op::Truncate(s)
        } else {
            Op::Zero { off: s, len: e - s }
        });
    }
    (!ops.is_empty()).then_some(ops)
}

/// Sparsify one object; `Ok(false)` if another writer changed it meanwhile
/// (left alone).
async fn sparsify_object(inner: &Inner, view: &View, objno: u64, sparse: u64) -> Result<bool> {
    if view.map.get(objno) == Some(OBJECT_NONEXISTENT) {
        return Ok(true);
    }
    let what = || format!("object {objno} of {}", inner.what(view));
    let oid = inner.data_oid(objno);
    let read = OpRequest::new(oid.clone())
        .op(Op::Stat)
        .op(Op::Read { off: 0, len: 0 });
    let reply = match inner.rados.operate(read).await {
        Ok(r) => r,
        Err(e) if e.errno == Errno::ENOENT => return Ok(true),
        Err(e) => return Err(RbdError::rados(format!("reading {}", what()), e)),
    };
    let (mut version, mut data) = (None, Bytes::new());
    for out in reply.outputs {
        match out {
            OpOutput::Stat(s) => version = Some(s.version),
            OpOutput::Data(d) => data = d,
            _ => {}
        }
    }
    let version = version.ok_or_else(|| RbdError::corrupt(format!("{}: no stat", what())))?;
    let start = objno << view.order();
    let keep_object = view.parent.is_some() && start < view.overlap();
    let Some(ops) = plan(&data, sparse, keep_object) else {
        return Ok(true);
    };
    let removes = matches!(ops[..], [Op::Remove]);
    let _w = inner.stripe(objno).write().await;
    let mut req = OpRequest::new(oid).with_snapc(view.snapc.clone());
    req.ops = std::iter::once(Op::AssertVersion(version))
        .chain(ops)
        .collect();
    match inner.rados.operate(req).await {
        Ok(_) => {}
        Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW | Errno::ENOENT) => {
            return Ok(false)
        }
        Err(e) => return Err(RbdError::rados(format!("sparsifying {}", what()), e)),
    }
    if removes && view.map.get(objno).is_some_and(objmap::may_exist) {
        if let Err(e) = objmap::store_state(
            inner.rados.as_ref(),
            &view.map_oid,
            objno,
            OBJECT_NONEXISTENT,
        )
        .await
        {
            view.map.invalidate();
            return Err(e);
        }
        view.map.set(objno, OBJECT_NONEXISTENT);
    }
    Ok(true)
}

impl Image {
    /// Give back the space of zeroed data (`rbd sparsify`): in each data
    /// object, runs of all-zero `sparse_size` chunks are deallocated and
    /// all-zero objects removed. What the image reads never changes.
    /// `sparse_size`: a power of two of at least 4 KiB (`EINVAL`
    /// otherwise), capped at the object size. `EROFS` on read-only
    /// handles. `progress(done, total)` after each object.
    pub async fn sparsify<F>(&self, sparse_size: u64, mut progress: F) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        if sparse_size < SPARSE_SIZE_MIN || !sparse_size.is_power_of_two() {
            return Err(RbdError::invalid(format!(
                "sparse size {sparse_size} must be a power of two of at least {SPARSE_SIZE_MIN}"
            )));
        }
        let inner = &self.inner;
        let _g = inner.write_gate().await?;
        let view = inner.view();
        let sparse = sparse_size.min(view.obj_size());
        let total = num_objects(view.size, view.order());
        let mut skipped = 0u64;
        for objno in 0..total {
            if !sparsify_object(inner, &view, objno, sparse).await? {
                skipped += 1;
            }
            progress(objno + 1, total);
        }
        if skipped > 0 {
            tracing::debug!(
                "sparsify {}: {skipped} objects changed meanwhile, left as they were",
                inner.spec()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let mut d = vec![0u8; 16384];
        assert!(matches!(
            plan(&d, 4096, false).as_deref(),
            Some([Op::Remove])
        ));
        assert!(matches!(
            plan(&d, 4096, true).as_deref(),
            Some([Op::Truncate(0)])
        ));
        assert!(plan(&[], 4096, true).is_none());
        d[5000] = 1;
        // Chunk 1 has data; chunk 0 zero, chunks 2-3 zero at the end.
        let p = plan(&d, 4096, false).expect("ops");
        assert_eq!(p, vec![Op::Zero { off: 0, len: 4096 }, Op::Truncate(8192)]);
        // A partly zero chunk is kept whole.
        assert!(plan(&d[4096..8192], 4096, false).is_none());
        let full = vec![1u8; 8192];
        assert!(plan(&full, 4096, false).is_none());
    }
}
