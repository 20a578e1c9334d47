//! Reusable receive buffers for large frame payloads.
//!
//! A 4 MiB object write arrives as a 4 MiB payload. Allocated fresh, its
//! pages are mapped and zeroed by the kernel on first touch (the socket
//! read) and unmapped when the frame is dropped: in a profile of 4 MiB
//! sequential writes that page-fault work was ~20 % of OSD CPU, as much
//! as the copy into the page cache. Payloads of [`POOL_MIN`] up to
//! [`POOL_BUF`] bytes are therefore read into buffers taken from a small
//! process-wide pool; the `Bytes` handed out owns the buffer and puts it
//! back when its last clone is dropped (after the replicas' sends and the
//! store's write, which use the same buffer). At most [`POOL_MAX`] idle
//! buffers are kept, and [`trim`] frees those idle for a while, so a
//! daemon at rest gives the memory back.
//!
//! Pooled buffers start on a 4 KiB boundary ([`POOL_ALIGN`]): a payload's
//! 4 KiB blocks then sit in page-aligned memory, which the store needs to
//! write them to its data log with O_DIRECT (DMA from this buffer, no copy
//! into the page cache).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Payloads at least this large are read into pooled buffers (smaller
/// ones are cheap to allocate and would waste a pooled buffer).
pub const POOL_MIN: usize = 256 << 10;
/// Capacity of one pooled buffer: the largest object write Quarry's image
/// layer issues (one 4 MiB object).
pub const POOL_BUF: usize = 4 << 20;
/// Most idle buffers kept (bounds the memory the pool holds).
pub const POOL_MAX: usize = 8;
/// Alignment of a pooled buffer's first byte (a page: what O_DIRECT needs).
pub const POOL_ALIGN: usize = 4096;

/// [`POOL_BUF`] zeroed bytes at a [`POOL_ALIGN`]-aligned address.
struct Aligned(std::ptr::NonNull<u8>);

// SAFETY: the buffer is plain bytes owned by this value alone.
unsafe impl Send for Aligned {}
// SAFETY: shared access only reads (`&self` gives `&[u8]`).
unsafe impl Sync for Aligned {}

fn layout() -> std::alloc::Layout {
    // Constant, valid arguments (power-of-two alignment, size a multiple).
    std::alloc::Layout::from_size_align(POOL_BUF, POOL_ALIGN)
        .unwrap_or_else(|_| unreachable!("constant pool layout"))
}

impl Aligned {
    fn new() -> Aligned {
        let l = layout();
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { std::alloc::alloc_zeroed(l) };
        match std::ptr::NonNull::new(p) {
            Some(p) => Aligned(p),
            None => std::alloc::handle_alloc_error(l),
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: POOL_BUF initialized bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), POOL_BUF) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: POOL_BUF initialized bytes owned (exclusively) by self.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), POOL_BUF) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), layout()) }
    }
}

/// Idle buffers, each with the time it was returned.
static POOL: Mutex<Vec<(Aligned, Instant)>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<(Aligned, Instant)>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// crc32c of pooled payloads as verified on receipt: (address, length,
/// crc). An entry is removed before its buffer can be reused, and a
/// payload's bytes never change while it is shared, so a frame forwarding
/// the same bytes (a primary's RepOp to its replicas) reuses the crc
/// instead of hashing 4 MiB again per replica.
static VERIFIED: Mutex<Vec<(usize, usize, u32)>> = Mutex::new(Vec::new());

fn verified() -> std::sync::MutexGuard<'static, Vec<(usize, usize, u32)>> {
    VERIFIED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Record the verified crc32c of a payload read into a pooled buffer.
pub(crate) fn remember_crc(data: &Bytes, crc: u32) {
    if (POOL_MIN..=POOL_BUF).contains(&data.len()) {
        verified().push((data.as_ptr() as usize, data.len(), crc));
    }
}

/// Whether `data` is a whole payload read into a pooled buffer (its
/// buffer forgets what is remembered about it before it is reused).
pub(crate) fn is_pooled(data: &Bytes) -> bool {
    (POOL_MIN..=POOL_BUF).contains(&data.len())
}

/// The crc32c recorded for exactly these bytes of a pooled buffer, if any.
pub(crate) fn known_crc(data: &[u8]) -> Option<u32> {
    if !(POOL_MIN..=POOL_BUF).contains(&data.len()) {
        return None;
    }
    let key = (data.as_ptr() as usize, data.len());
    verified()
        .iter()
        .find(|&&(p, l, _)| (p, l) == key)
        .map(|&(_, _, c)| c)
}

/// A pooled buffer holding `len` payload bytes; returned to the pool on drop.
pub struct PoolBuf {
    buf: Option<Aligned>,
    len: usize,
}

impl PoolBuf {
    /// A buffer for a payload of `len` bytes, if `len` is in the pooled range.
    pub fn take(len: usize) -> Option<PoolBuf> {
        if !(POOL_MIN..=POOL_BUF).contains(&len) {
            return None;
        }
        // A reused one holds stale bytes the read overwrites (a fresh one
        // is zeroed: aligned allocations are not calloc'ed, but buffers
        // are reused, so that memset is rare).
        let buf = pool().pop().map(|(b, _)| b).unwrap_or_else(Aligned::new);
        Some(PoolBuf {
            buf: Some(buf),
            len,
        })
    }

    /// The payload bytes, to read into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(b) => &mut b.as_mut_slice()[..self.len],
            None => &mut [],
        }
    }

    /// Hand the filled buffer out as `Bytes` (no copy).
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.as_slice()[..self.len],
            None => &[],
        }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else {
            return;
        };
        // Forget its crc before the buffer can be handed out again.
        let at = buf.as_slice().as_ptr() as usize;
        verified().retain(|&(p, _, _)| p != at);
        quarry_common::blockcrc::forget(at);
        let mut p = pool();
        if p.len() < POOL_MAX {
            p.push((buf, Instant::now()));
        }
    }
}

/// Free the pooled buffers idle for at least `idle` (a daemon calls this
/// periodically, so memory goes back to the kernel when load stops).
pub fn trim(idle: Duration) {
    let now = Instant::now();
    let freed: Vec<_> = {
        let mut p = pool();
        let (keep, old): (Vec<_>, Vec<_>) = p
            .drain(..)
            .partition(|(_, t)| now.duration_since(*t) < idle);
        *p = keep;
        old
    };
    drop(freed);
}

/// Idle buffers in the pool (for tests and diagnostics).
pub fn idle() -> usize {
    pool().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the process-wide pool, so counts are not raced by
    // another test of this crate reading large frames concurrently.
    #[test]
    fn buffers_come_back_are_bounded_and_trimmed() {
        assert!(PoolBuf::take(POOL_MIN - 1).is_none());
        assert!(PoolBuf::take(POOL_BUF + 1).is_none());
        trim(Duration::ZERO);
        let mut b = PoolBuf::take(POOL_BUF).expect("in range");
        assert_eq!(
            b.as_ref().as_ptr() as usize % POOL_ALIGN,
            0,
            "page-aligned for O_DIRECT"
        );
        b.bytes_mut().fill(7);
        let bytes = b.freeze();
        let part = bytes.slice(10..20);
        crate::bufpool::remember_crc(&bytes, 42);
        assert_eq!(known_crc(&bytes), Some(42));
        assert_eq!(known_crc(&bytes[1..]), None, "other bytes, other crc");
        // Block crcs remembered on receipt are found for the payload's
        // blocks and forgotten with the buffer's crc (checked below).
        let (crc, blocks) = quarry_common::blockcrc::hash_blocks(&bytes);
        assert_eq!(crc, crc32c::crc32c(&bytes));
        quarry_common::blockcrc::remember(&bytes, blocks);
        let blk = bytes.slice(4096..8192);
        assert_eq!(
            quarry_common::blockcrc::known(std::slice::from_ref(&blk)),
            Some(vec![crc32c::crc32c(&blk)])
        );
        drop(blk);
        let whole = bytes.clone();
        drop(bytes);
        assert_eq!(known_crc(&whole), Some(42));
        drop(whole);
        assert_eq!(idle(), 0, "a live slice keeps the buffer");
        assert_eq!(&part[..], &[7u8; 10]);
        drop(part);
        assert_eq!(idle(), 1, "the last clone returns it");
        assert!(
            verified().is_empty(),
            "a returned buffer's crc is forgotten"
        );
        // Reused: the stale bytes are there, and the length is the new one.
        let b = PoolBuf::take(POOL_MIN).expect("in range");
        assert_eq!(idle(), 0);
        assert_eq!(
            quarry_common::blockcrc::known(&[&b.as_ref()[4096..8192]]),
            None,
            "a returned buffer's block crcs are forgotten"
        );
        assert_eq!(b.as_ref().len(), POOL_MIN);
        drop(b);
        let many: Vec<_> = (0..POOL_MAX + 3)
            .map(|_| PoolBuf::take(POOL_BUF).expect("in range"))
            .collect();
        drop(many);
        assert_eq!(idle(), POOL_MAX, "never more than POOL_MAX idle");
        trim(Duration::from_secs(3600));
        assert_eq!(idle(), POOL_MAX, "recently used buffers stay");
        trim(Duration::ZERO);
        assert_eq!(idle(), 0);
    }
}
