//! The plain crc32c of each 4 KiB block of a large received payload,
//! computed once on receipt and reused by the local store.
//!
//! A 4 MiB object write used to be hashed twice on every replica: whole,
//! to check the frame's data checksum, and again per 4 KiB block for the
//! store's per-block checksums (~8 % of OSD CPU together in a profile of
//! 4 MiB sequential writes). The frame reader now hashes each block once
//! and derives the frame's checksum from the block crcs by crc32c
//! combine; the block crcs are remembered here for the payload's buffer,
//! and the store takes them instead of hashing the same bytes again.
//!
//! Only buffers whose owner calls [`forget`] before the memory can hold
//! other bytes may be remembered (the frame reader's pooled receive
//! buffers): an entry is keyed by address, and a payload's bytes never
//! change while anything still holds it.

use std::sync::{Mutex, MutexGuard, OnceLock};

/// Bytes per block (the store's block size).
pub const BLOCK: usize = 4096;

/// (address, length, plain crc32c of each block) of remembered payloads.
type Entry = (usize, usize, Vec<u32>);

static MEMO: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn memo() -> MutexGuard<'static, Vec<Entry>> {
    MEMO.lock().unwrap_or_else(|e| e.into_inner())
}

/// The crc32c "append 4096 zero bytes" operator: a linear map of the crc
/// register over GF(2), column `n` the image of bit `n` (zlib's combine,
/// computed once for the block size instead of per call).
fn zeros_op_block() -> &'static [u32; 32] {
    static OP: OnceLock<[u32; 32]> = OnceLock::new();
    OP.get_or_init(|| std::array::from_fn(|n| crc32c::crc32c_combine(1 << n, 0, BLOCK)))
}

/// The same operator applied a byte of the register at a time: entry
/// `[k][b]` is the image of `b << 8k`. Built once (4 KiB).
fn zeros_op_bytes() -> &'static [[u32; 256]; 4] {
    static T: OnceLock<[[u32; 256]; 4]> = OnceLock::new();
    T.get_or_init(|| {
        let op = zeros_op_block();
        std::array::from_fn(|k| {
            std::array::from_fn(|b| {
                (0..8)
                    .filter(|i| b >> i & 1 == 1)
                    .fold(0, |acc, i| acc ^ op[8 * k + i])
            })
        })
    })
}

/// crc32c of `a` followed by a full 4 KiB block, from crc32c(a) and the
/// block's own crc32c: four table lookups instead of a pass over the block.
/// (It runs three times per block of a large write on every OSD: the
/// frame check, the seeded block checksum and the log record's checksum;
/// as a loop over the register's 32 bits it was ~5 % of the OSDs' CPU in
/// a profile of 4 MiB sequential writes.)
pub fn append_block(crc_a: u32, crc_block: u32) -> u32 {
    let t = zeros_op_bytes();
    let [b0, b1, b2, b3] = crc_a.to_le_bytes();
    t[0][b0 as usize] ^ t[1][b1 as usize] ^ t[2][b2 as usize] ^ t[3][b3 as usize] ^ crc_block
}

/// crc32c of `data` and the plain crc32c of each of its [`BLOCK`]-byte
/// pieces (the last may be shorter), in one pass over the bytes.
pub fn hash_blocks(data: &[u8]) -> (u32, Vec<u32>) {
    let mut crcs = Vec::with_capacity(data.len().div_ceil(BLOCK));
    let mut whole = 0u32;
    for c in data.chunks(BLOCK) {
        let r = crc32c::crc32c(c);
        whole = if c.len() == BLOCK {
            append_block(whole, r)
        } else {
            crc32c::crc32c_combine(whole, r, c.len())
        };
        crcs.push(r);
    }
    (whole, crcs)
}

/// Remember the block crcs of `data` (see the module doc for which
/// buffers may be remembered).
pub fn remember(data: &[u8], crcs: Vec<u32>) {
    debug_assert_eq!(crcs.len(), data.len().div_ceil(BLOCK));
    memo().push((data.as_ptr() as usize, data.len(), crcs));
}

/// Forget what was remembered for the buffer at `at` (before its memory
/// may hold other bytes).
pub fn forget(at: usize) {
    let mut m = memo();
    if !m.is_empty() {
        m.retain(|&(p, _, _)| p != at);
    }
}

/// The plain crc32c of each of `blocks` if every one is a full block lying
/// at a block boundary of one remembered payload, back to back.
pub fn known<B: AsRef<[u8]>>(blocks: &[B]) -> Option<Vec<u32>> {
    let first = blocks.first()?.as_ref().as_ptr() as usize;
    let m = memo();
    let (base, _, crcs) = m.iter().find(|&&(p, l, _)| first >= p && first < p + l)?;
    let rel = first - base;
    if !rel.is_multiple_of(BLOCK) {
        return None;
    }
    let i0 = rel / BLOCK;
    let mut out = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.iter().enumerate() {
        let b = b.as_ref();
        if b.len() != BLOCK || b.as_ptr() as usize != first + i * BLOCK {
            return None;
        }
        out.push(*crcs.get(i0 + i)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_block_is_crc32c_of_the_concatenation() {
        let blk: Vec<u8> = (0..BLOCK).map(|i| (i * 7 % 253) as u8).collect();
        let rb = crc32c::crc32c(&blk);
        for a in [b"".as_slice(), b"x", b"some prefix bytes", &blk[..100]] {
            let mut cat = a.to_vec();
            cat.extend_from_slice(&blk);
            assert_eq!(append_block(crc32c::crc32c(a), rb), crc32c::crc32c(&cat));
        }
        // Every bit of the register, against the library's combine.
        for n in 0..32 {
            let v = 1u32 << n;
            assert_eq!(append_block(v, rb), crc32c::crc32c_combine(v, rb, BLOCK));
        }
        assert_eq!(
            append_block(0xdead_beef, 0x1234_5678),
            crc32c::crc32c_combine(0xdead_beef, 0x1234_5678, BLOCK)
        );
    }

    #[test]
    fn block_crcs_combine_to_the_whole_and_are_found_by_address() {
        let data: Vec<u8> = (0..5 * BLOCK + 100).map(|i| (i * 31 % 251) as u8).collect();
        let (whole, crcs) = hash_blocks(&data);
        assert_eq!(whole, crc32c::crc32c(&data));
        assert_eq!(crcs.len(), 6);
        for (i, c) in data.chunks(BLOCK).enumerate() {
            assert_eq!(crcs[i], crc32c::crc32c(c));
        }
        remember(&data, crcs.clone());
        let blocks: Vec<&[u8]> = data[BLOCK..4 * BLOCK].chunks(BLOCK).collect();
        assert_eq!(known(&blocks), Some(crcs[1..4].to_vec()));
        // Not at a block boundary, not full, not back to back: unknown.
        assert_eq!(known(&[&data[10..10 + BLOCK]]), None);
        assert_eq!(known(&[&data[5 * BLOCK..]]), None);
        assert_eq!(known(&[&data[0..BLOCK], &data[2 * BLOCK..3 * BLOCK]]), None);
        let other = vec![0u8; BLOCK];
        assert_eq!(known(&[other.as_slice()]), None);
        forget(data.as_ptr() as usize);
        assert_eq!(known(&blocks), None);
    }
}
