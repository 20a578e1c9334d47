//! Write-op steps that depend on the object's current state: `append`
//! (at the size the object has when the step runs) and `cmpext` (compare a
//! range before anything is written). The OSDs have no such ops, so the
//! write op is resolved here: the object's size, version and compared
//! ranges are read in one request, the appends become writes at known
//! offsets, and the whole write op is sent guarded by that version; if
//! another client changed the object in between, it starts over. The
//! result is what librados gives: all steps applied atomically, or none.

use std::ffi::c_int;
use std::sync::Arc;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{Op, OpOutput, OpRequest, Rados, RadosError};

use crate::engine::{CError, CResult};

/// Tries before giving up on an object other clients keep changing.
const TRIES: usize = 1000;

/// A step resolved at operate time.
#[derive(Debug)]
pub(crate) enum Deferred {
    /// `rados_write_op_append`.
    Append(Bytes),
    /// `rados_write_op_cmpext`: `*prval` gets 0 or the mismatch value.
    CmpExt { off: u64, cmp: Bytes, prval: Prval },
}

/// The caller's `int *prval` (NULL allowed), written once the op ran; the
/// caller keeps it valid until then (librados contract).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prval(pub *mut c_int);

// SAFETY: the pointer is only written when the operation completes, while
// the caller guarantees it stays valid; no other access happens meanwhile.
unsafe impl Send for Prval {}
// SAFETY: as above: shared references only read the pointer value.
unsafe impl Sync for Prval {}

impl Prval {
    fn set(self, v: c_int) {
        if !self.0.is_null() {
            // SAFETY: see the type's comment.
            unsafe { *self.0 = v };
        }
    }
}

/// What a resolved write op needs besides its plain ops: `(index in ops
/// before which the step runs, step)`, in the order they were added.
pub(crate) type Steps = Vec<(usize, Deferred)>;

/// Check at operate time what this module cannot resolve: a `cmpext` after
/// a step that changes data would compare the object before that step, and
/// an append after a rollback cannot know its offset.
pub(crate) fn check(ops: &[Op], steps: &Steps) -> CResult<()> {
    let changes_data = |o: &Op| {
        matches!(
            o,
            Op::Write { .. }
                | Op::WriteFull(_)
                | Op::Zero { .. }
                | Op::Truncate(_)
                | Op::Remove
                | Op::Rollback(_)
        )
    };
    for (k, (at, s)) in steps.iter().enumerate() {
        match s {
            Deferred::CmpExt { cmp, .. } => {
                if cmp.is_empty() {
                    return Err(CError::new(Errno::EINVAL, "cmpext of zero bytes"));
                }
                let earlier_append = steps[..k]
                    .iter()
                    .any(|(_, s)| matches!(s, Deferred::Append(_)));
                if earlier_append || ops[..*at].iter().any(changes_data) {
                    return Err(CError::new(
                        Errno::EOPNOTSUPP,
                        "cmpext after a data change in the same write op",
                    ));
                }
            }
            Deferred::Append(_) => {
                if ops[..*at].iter().any(|o| matches!(o, Op::Rollback(_))) {
                    return Err(CError::new(
                        Errno::EOPNOTSUPP,
                        "append after a rollback in the same write op",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Size after `op` applied to an object of `size` bytes.
fn size_after(op: &Op, size: u64) -> u64 {
    match op {
        Op::Write { off, data } => size.max(off + data.len() as u64),
        Op::WriteFull(d) => d.len() as u64,
        Op::Truncate(n) => *n,
        Op::Remove => 0,
        _ => size,
    }
}

/// Apply `ops` with `steps` to the object of `template` (whose ops are
/// replaced). `Err` is the write op's negative result: an errno, or a
/// cmpext mismatch value.
pub(crate) async fn operate(
    rados: Arc<dyn Rados>,
    template: OpRequest,
    ops: Vec<Op>,
    steps: Steps,
) -> Result<Vec<OpOutput>, i64> {
    let fail = |e: RadosError| e.errno.negated() as i64;
    let cmps: Vec<(u64, &Bytes, Prval)> = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Deferred::CmpExt { off, cmp, prval } => Some((*off, cmp, *prval)),
            Deferred::Append(_) => None,
        })
        .collect();
    let mut look = template.clone();
    look.ops = std::iter::once(Op::Stat)
        .chain(cmps.iter().map(|(off, cmp, _)| Op::Read {
            off: *off,
            len: cmp.len() as u64,
        }))
        .collect();
    for _ in 0..TRIES {
        let (size, version, reads) = match rados.operate(look.clone()).await {
            Ok(r) => {
                let mut out = r.outputs.into_iter();
                let (size, version) = match out.next() {
                    Some(OpOutput::Stat(s)) => (s.size, s.version),
                    _ => return Err(Errno::EIO.negated() as i64),
                };
                let reads: Vec<Bytes> = out
                    .map(|o| match o {
                        OpOutput::Data(d) => d,
                        _ => Bytes::new(),
                    })
                    .collect();
                (size, version, reads)
            }
            // No object: size 0, version 0 (which the guard accepts for a
            // missing object).
            // A cmpext on it fails as `rados_cmpext` does.
            Err(e) if e.errno == Errno::ENOENT && cmps.is_empty() => (0, 0, Vec::new()),
            Err(e) => return Err(fail(e)),
        };
        let mut mismatch = 0;
        for ((_, cmp, prval), got) in cmps.iter().zip(&reads) {
            let r = crate::ffi_objops::cmpext_result(cmp, got);
            prval.set(r as c_int);
            if r != 0 && mismatch == 0 {
                mismatch = r;
            }
        }
        if mismatch != 0 {
            return Err(mismatch);
        }
        // The plain ops with the appends placed at the size they meet.
        let mut resolved = vec![Op::AssertVersion(version)];
        let mut cur = size;
        let mut pending = steps.iter().peekable();
        for (i, op) in ops.iter().chain(std::iter::once(&Op::Stat)).enumerate() {
            while let Some((at, s)) = pending.peek() {
                if *at != i {
                    break;
                }
                if let Deferred::Append(data) = s {
                    let w = Op::Write {
                        off: cur,
                        data: data.clone(),
                    };
                    cur = size_after(&w, cur);
                    resolved.push(w);
                }
                pending.next();
            }
            if i < ops.len() {
                cur = size_after(op, cur);
                resolved.push(op.clone());
            }
        }
        let mut req = template.clone();
        req.ops = resolved;
        match rados.operate(req).await {
            Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW) => continue,
            Err(e) => return Err(fail(e)),
            // The outputs of the plain ops (the version guard's dropped).
            Ok(r) => return Ok(r.outputs.into_iter().skip(1).collect()),
        }
    }
    Err(Errno::EBUSY.negated() as i64)
}
