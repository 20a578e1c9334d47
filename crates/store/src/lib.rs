//! Quarry's local durable object store and the embedded object-layer backend.
//!
//! * [`Store`]: objects with sparse, checksummed data (crc32c per 4 KiB
//!   block, verified on every read), omap, xattrs and self-managed snapshot
//!   clones, in one redb database. Writes are group-committed by a single
//!   writer thread; an `Ok` means the write is on stable storage.
//! * [`Embedded`]: the [`quarry_rados::Rados`] trait on top of a `Store`, for
//!   tests and single-process use (pools, snap ids and watches).
//!
//! Design, in brief (details in each module):
//!
//! * **Layout** (`store`): one redb database with byte-keyed tables for
//!   object records (snap set, head and clone metadata, xattrs), the data
//!   index by extents (`extent`: runs of 4 KiB blocks in the data log, a
//!   crc32c per block, absent = hole), omap entries, an index
//!   of objects that have clones, per-pool counters (objects, bytes, last
//!   version) and a small `sys` table. Keys are order-preserving encodings
//!   of (pool, namespace, name, instance, block | omap key).
//! * **Execution** (`exec`): a request is staged in memory against the
//!   current state and flushed only if every op succeeded, so one request is
//!   atomic even though many share a transaction.
//! * **Group commit and durability** (`store`, `wal`): one writer thread
//!   drains a bounded queue and applies a batch of requests; a syncer
//!   thread appends the batch's physical redo to a preallocated write-ahead
//!   log, fdatasyncs once (for every batch queued meanwhile) and answers
//!   everyone, while the writer applies the next batch. The redb transaction
//!   stays open for up to 500 ms across batches (50 ms once a read was
//!   routed to the writer) and is then committed non-durably, after the
//!   syncer drained (reads of
//!   objects it changed are served by the writer meanwhile). redb is made
//!   durable on its own at checkpoints (log full, big batches, close);
//!   recovery replays the log past the last checkpoint.
//! * **Snapshots**: object-granular copy-on-write as RADOS does it: the
//!   first write after a snapshot makes the head's blocks, omap and xattrs
//!   a clone labelled with the new snaps (blocks by reference: the clone's
//!   index entries point at the head's bytes in the data log, no copy); clones track their overlap with the
//!   next newer instance; trimming drops snap ids from labels and deletes
//!   clones no snapshot needs.
//!
//! Architecture invariant: this crate implements object semantics only; it
//! knows nothing of images, placement or the network.

mod codec;
mod embedded;
mod exec;
mod export;
mod extent;
mod seglog;
mod store;
mod tables;

pub use codec::BLOCK_SIZE;
pub use embedded::Embedded;
pub use exec::{MAX_OBJECT_SIZE, MAX_OVERLAP_RANGES};
pub use export::{digest as export_digest, ExportDigest};
pub use store::{
    CachedRead, Logged, PendingOp, Store, StoreOptions, StoreUsage, SysUpdates, MAX_BATCH,
    QUEUE_CAPACITY,
};

/// Bytes this process wrote to data logs with O_DIRECT (the large writes
/// of requests marked [`Logged::uncached`]; diagnostics and tests).
pub fn direct_bytes() -> u64 {
    seglog::DIRECT_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}
