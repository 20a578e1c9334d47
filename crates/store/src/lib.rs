//! Quarry's local durable object store and the embedded object-layer backend.
//!
//! * [`Store`]: objects with sparse, checksummed data (crc32c per 4 KiB
//!   block, verified on every read), omap, xattrs and self-managed snapshot
//!   clones, in one redb database. Writes are group-committed by a single
//!   writer thread; an `Ok` means the write is on stable storage.
//! * [`Embedded`]: the [`quarry_rados::Rados`] trait on top of a `Store`, for
//!   tests and single-process use (pools, snap ids and watches).
//!
//! Architecture invariant: this crate implements object semantics only; it
//! knows nothing of images, placement or the network.

mod codec;
mod embedded;
mod exec;
mod store;
mod tables;
mod wal;

pub use codec::BLOCK_SIZE;
pub use embedded::Embedded;
pub use exec::MAX_OBJECT_SIZE;
pub use store::{Store, StoreUsage, MAX_BATCH, QUEUE_CAPACITY};
