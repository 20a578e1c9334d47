//! Compound object operations, their results, and snapshot contexts.
//!
//! Semantics follow RADOS (what librados documents for `rados_*_op_*`):
//!
//! * A request names one object and carries a list of ops applied in order,
//!   atomically: if any op fails, nothing of the request is applied and the
//!   error of the first failing op is returned.
//! * A request that contains any mutating op is a write. Writes must target
//!   `snap == NOSNAP` (else `EROFS`). Before a write modifies an existing
//!   head, if `snapc.seq` is greater than the object's `SnapSet::seq`, the
//!   current head is first preserved as a clone (object-granular
//!   copy-on-write) labelled with the snaps in `snapc.snaps` that are newer
//!   than `SnapSet::seq`; then `SnapSet::seq` becomes `snapc.seq`.
//! * Reads at a snap id see the object as it was when that snapshot was
//!   taken: the oldest clone whose label includes an id >= snap and which
//!   covers it, else the head if no clone was taken since; `ENOENT` if the
//!   object did not exist then.
//! * Every successful write bumps the object's version (strictly
//!   increasing per object, never reused even after remove + recreate).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{PoolId, SnapId, NOSNAP};

/// Which object a request addresses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// The pool.
    pub pool: PoolId,
    /// Namespace inside the pool; "" is the default namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectId {
    /// An object in the default namespace.
    pub fn new(pool: PoolId, name: impl Into<String>) -> Self {
        ObjectId {
            pool,
            namespace: String::new(),
            name: name.into(),
        }
    }

    /// An object in a namespace.
    pub fn with_namespace(
        pool: PoolId,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ObjectId {
            pool,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A snapshot context carried by writes: the newest snap id the writer
/// knows of (`seq`) and every live snap id, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapContext {
    /// Newest snapshot sequence number known to the writer.
    pub seq: SnapId,
    /// Existing snapshot ids, strictly descending, each <= `seq`.
    pub snaps: Vec<SnapId>,
}

impl SnapContext {
    /// Whether the context is well formed (RADOS rejects others with EINVAL).
    pub fn is_valid(&self) -> bool {
        self.snaps.windows(2).all(|w| w[0] > w[1])
            && self.snaps.first().is_none_or(|&s| s <= self.seq)
            && self.seq != NOSNAP
    }
}

/// One operation inside a compound request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    // ---- guards (read-only) ----
    /// Fail with `ENOENT` unless the object exists.
    AssertExists,
    /// Compare-and-swap guard on the object version: fail with `ERANGE` if
    /// the object's version is lower, `EOVERFLOW` if higher (as RADOS).
    /// A missing object has version 0.
    AssertVersion(u64),

    // ---- reads ----
    /// Size, mtime and version. `ENOENT` if absent.
    Stat,
    /// Read `len` bytes at `off` (`len == 0` means to the end). Returns fewer
    /// bytes at the end of the object; holes read as zeros. `ENOENT` if absent.
    Read {
        /// Byte offset.
        off: u64,
        /// Length, 0 = to the end.
        len: u64,
    },
    /// Like `Read`, but returns only the extents that hold data (written and
    /// not zeroed/punched), and their bytes concatenated.
    SparseRead {
        /// Byte offset.
        off: u64,
        /// Length, 0 = to the end.
        len: u64,
    },
    /// One xattr; `ENODATA` if unset.
    GetXattr(String),
    /// All xattrs.
    GetXattrs,
    /// Omap entries with key > `start_after` and starting with `prefix`, in
    /// key order, at most `max` (0 = unlimited). A missing object has none
    /// only when combined with `AssertExists` failing first; alone it is `ENOENT`.
    OmapGetVals {
        /// Exclusive lower bound ("" = from the start).
        start_after: String,
        /// Key prefix filter ("" = all).
        prefix: String,
        /// Maximum entries returned (0 = unlimited).
        max: u64,
    },
    /// The omap values of exactly these keys (absent keys are omitted).
    OmapGetValsByKeys(Vec<String>),
    /// The object's clones and snap set (like `rados_list_snaps`); works on
    /// objects whose head was removed but clones remain. `ENOENT` if neither.
    ListSnaps,

    // ---- writes ----
    /// Create the object if absent; with `exclusive`, `EEXIST` if present.
    Create {
        /// Fail if the object exists.
        exclusive: bool,
    },
    /// Write bytes at an offset, creating the object and extending its size.
    Write {
        /// Byte offset.
        off: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Replace the whole object data (size becomes `data.len()`).
    WriteFull(Bytes),
    /// Zero a range without changing the size beyond it; space is freed.
    /// Zeroing past the end does not extend the object. No-op if absent.
    Zero {
        /// Byte offset.
        off: u64,
        /// Length.
        len: u64,
    },
    /// Set the size: shrinking frees data past it, growing adds a hole.
    /// Creates the object if absent.
    Truncate(u64),
    /// Remove the head (clones needed by snapshots stay). `ENOENT` if absent.
    Remove,
    /// Set an xattr (creates the object if absent).
    SetXattr(String, Bytes),
    /// Remove an xattr (`ENODATA` if unset).
    RmXattr(String),
    /// Set omap keys (creates the object if absent).
    OmapSetVals(BTreeMap<String, Bytes>),
    /// Remove omap keys (absent keys are ignored).
    OmapRmKeys(Vec<String>),
    /// Remove every omap key.
    OmapClear,
    /// Roll the head back to its state at `snap` (RADOS
    /// `selfmanaged_snap_rollback`): if the object did not exist at `snap`
    /// the head is removed. Subject to the same clone-on-write as any write.
    Rollback(SnapId),
}

impl Op {
    /// Whether this op is a guard (`AssertExists`, `AssertVersion`): it
    /// fails the request or outputs nothing.
    pub fn is_guard(&self) -> bool {
        matches!(self, Op::AssertExists | Op::AssertVersion(_))
    }

    /// Whether this op mutates the object.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Create { .. }
                | Op::Write { .. }
                | Op::WriteFull(_)
                | Op::Zero { .. }
                | Op::Truncate(_)
                | Op::Remove
                | Op::SetXattr(..)
                | Op::RmXattr(_)
                | Op::OmapSetVals(_)
                | Op::OmapRmKeys(_)
                | Op::OmapClear
                | Op::Rollback(_)
        )
    }
}

/// Stat result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStat {
    /// Logical size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// Object version (bumped on every write).
    pub version: u64,
}

/// One clone of an object, as `ListSnaps` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneInfo {
    /// Clone id: the newest snap id it serves, or `NOSNAP` for the head.
    pub clone: SnapId,
    /// Snap ids this clone serves, ascending (empty for the head).
    pub snaps: Vec<SnapId>,
    /// Size of the object in this clone.
    pub size: u64,
    /// Extents (offset, length) where this clone is known to be identical
    /// to the next newer clone (or the head), ascending. Empty for the head.
    pub overlap: Vec<(u64, u64)>,
}

/// The snapshot state of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapSet {
    /// Newest snap seq the object has seen from a writer.
    pub seq: SnapId,
    /// Clones oldest first, then the head (if it exists) last.
    pub clones: Vec<CloneInfo>,
}

/// Output of one op, in request order. Writes produce `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutput {
    /// Nothing (guards and writes).
    None,
    /// `Stat`.
    Stat(ObjectStat),
    /// `Read` and `GetXattr`.
    Data(Bytes),
    /// `SparseRead`: extents (offset, length) ascending, and their bytes.
    Sparse(Vec<(u64, u64)>, Bytes),
    /// `GetXattrs`.
    Xattrs(BTreeMap<String, Bytes>),
    /// `OmapGetVals` / `OmapGetValsByKeys`, with `more` true if `max` cut the list.
    Omap(BTreeMap<String, Bytes>, bool),
    /// `ListSnaps`.
    Snaps(SnapSet),
}

/// A compound request on one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRequest {
    /// Target object.
    pub oid: ObjectId,
    /// Snapshot to read at (`NOSNAP` = head; writes require `NOSNAP`).
    pub snap: SnapId,
    /// Snapshot context for writes.
    pub snapc: SnapContext,
    /// The ops, applied in order, atomically.
    pub ops: Vec<Op>,
}

/// The result of a successful request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpReply {
    /// One output per op.
    pub outputs: Vec<OpOutput>,
    /// Object version after the request (unchanged for reads; 0 if absent).
    pub version: u64,
}

impl OpRequest {
    /// A request on the head with an empty snap context.
    pub fn new(oid: ObjectId) -> Self {
        OpRequest {
            oid,
            snap: NOSNAP,
            snapc: SnapContext::default(),
            ops: Vec::new(),
        }
    }

    /// Read at a snapshot.
    pub fn at_snap(mut self, snap: SnapId) -> Self {
        self.snap = snap;
        self
    }

    /// Use this snap context for writes.
    pub fn with_snapc(mut self, snapc: SnapContext) -> Self {
        self.snapc = snapc;
        self
    }

    /// Append an op.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Whether any op mutates the object.
    pub fn is_write(&self) -> bool {
        self.ops.iter().any(Op::is_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapc_validity() {
        assert!(SnapContext::default().is_valid());
        assert!(SnapContext {
            seq: 5,
            snaps: vec![5, 3, 1]
        }
        .is_valid());
        assert!(!SnapContext {
            seq: 4,
            snaps: vec![5, 3]
        }
        .is_valid());
        assert!(!SnapContext {
            seq: 5,
            snaps: vec![3, 3]
        }
        .is_valid());
        assert!(!SnapContext {
            seq: 5,
            snaps: vec![1, 3]
        }
        .is_valid());
    }

    #[test]
    fn write_detection() {
        let r = OpRequest::new(ObjectId::new(1, "a")).op(Op::Stat);
        assert!(!r.is_write());
        assert!(r.op(Op::Remove).is_write());
    }
}
