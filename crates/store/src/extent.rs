//! The data index by extents.
//!
//! The `data` table maps (object, instance, first block) to one *extent*:
//! a run of blocks written together whose bytes lie back to back in one
//! data-log record (block `i` of the extent at `off + i * BLOCK_SIZE`).
//! Every block but the last is a full 4 KiB; the last may be shorter (a
//! short block always ends an extent). The value keeps a crc32c per block
//! (seeded by the block's index in the object), so a read of any part of
//! an extent still checks every block it returns.
//!
//! Invariants: the extents of one instance never overlap (an overwrite
//! first *punches* the range: older extents are deleted, or trimmed to the
//! part outside it, keeping their bytes where they are); each extent's
//! bytes belong to it alone (a clone copies bytes, never shares them), and
//! an extent (or the piece of one left by a trim) always lies inside the
//! record whose redo put the extent first, under the same instance and
//! block numbers. Compaction relies on the last two (see `store`).

use quarry_rados::{RadosError, Result};

use crate::codec::{self, BLOCK_SIZE};
use crate::exec::{sio, RTable};

/// Most blocks in one extent (256 KiB): a 4 MiB write is 16 index
/// entries, and an index value stays under 300 bytes, which matters as a
/// small overwrite inside an extent rewrites (and logs as redo) the trimmed
/// pieces with their checksums.
pub const MAX_EXTENT_BLOCKS: u64 = 64;

/// Bytes of an extent value before its checksums.
const HEAD_LEN: usize = 20;

/// A `data` index entry: where an extent's bytes lie in the data log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtPtr {
    /// Segment id.
    pub seg: u32,
    /// Byte offset of the first block in the segment.
    pub off: u64,
    /// Length of the last block (1..=BLOCK_SIZE); the others are full.
    pub last: u32,
    /// crc32c of each block, seeded with its block index; one per block.
    pub crcs: Vec<u32>,
}

impl ExtPtr {
    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.crcs.len() as u64
    }

    /// Data bytes.
    pub fn bytes(&self) -> u64 {
        (self.blocks() - 1) * BLOCK_SIZE + self.last as u64
    }

    /// Length of block `i` (relative).
    pub fn block_len(&self, i: u64) -> usize {
        if i + 1 == self.blocks() {
            self.last as usize
        } else {
            BLOCK_SIZE as usize
        }
    }

    /// The part covering relative blocks `[from, to)` (`from < to <= blocks`).
    pub fn slice(&self, from: u64, to: u64) -> ExtPtr {
        ExtPtr {
            seg: self.seg,
            off: self.off + from * BLOCK_SIZE,
            last: self.block_len(to - 1) as u32,
            crcs: self.crcs[from as usize..to as usize].to_vec(),
        }
    }

    /// seg u32 | off u64 | blocks u32 | last u32 | crc u32 per block, LE.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD_LEN + 4 * self.crcs.len());
        b.extend_from_slice(&self.seg.to_le_bytes());
        b.extend_from_slice(&self.off.to_le_bytes());
        b.extend_from_slice(&(self.crcs.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.last.to_le_bytes());
        for c in &self.crcs {
            b.extend_from_slice(&c.to_le_bytes());
        }
        b
    }

    /// Inverse of [`ExtPtr::encode`]; `None` if malformed.
    pub fn decode(v: &[u8]) -> Option<ExtPtr> {
        let (seg, bytes) = Self::head(v)?;
        let n = (v.len() - HEAD_LEN) / 4;
        let crcs = v[HEAD_LEN..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>();
        let off = u64::from_le_bytes(v[4..12].try_into().ok()?);
        let last = (bytes - (n as u64 - 1) * BLOCK_SIZE) as u32;
        Some(ExtPtr {
            seg,
            off,
            last,
            crcs,
        })
    }

    /// (segment, data bytes) of an encoded value, checked like `decode`
    /// but without decoding the checksums.
    pub fn head(v: &[u8]) -> Option<(u32, u64)> {
        let n = u32::from_le_bytes(v.get(12..16)?.try_into().ok()?) as u64;
        let last = u32::from_le_bytes(v.get(16..20)?.try_into().ok()?) as u64;
        if n == 0 || n > MAX_EXTENT_BLOCKS || v.len() as u64 != HEAD_LEN as u64 + 4 * n {
            return None;
        }
        if last == 0 || last > BLOCK_SIZE {
            return None;
        }
        let seg = u32::from_le_bytes(v[..4].try_into().ok()?);
        Some((seg, (n - 1) * BLOCK_SIZE + last))
    }
}

/// The error for a malformed index entry.
pub fn corrupt_entry() -> RadosError {
    RadosError::io("local store: corrupted data index entry")
}

/// The extents of instance `ikey` overlapping blocks `[b0, b1)`,
/// ascending by first block: (first block, extent).
pub fn overlapping<D: RTable>(
    data: &D,
    ikey: &[u8],
    b0: u64,
    b1: u64,
) -> Result<Vec<(u64, ExtPtr)>> {
    let mut out = Vec::new();
    if b0 >= b1 {
        return Ok(out);
    }
    let lo = codec::block_key(ikey, b0);
    let hi = codec::block_key(ikey, b1);
    let entry = |k: &[u8], v: &[u8]| -> Result<(u64, ExtPtr)> {
        let s = codec::block_index(k, ikey.len()).ok_or_else(corrupt_entry)?;
        let p = ExtPtr::decode(v).ok_or_else(corrupt_entry)?;
        Ok((s, p))
    };
    // The last extent starting at or before b0 is the only one before the
    // range that may reach into it (extents never overlap). The range is
    // open on the left: a bounded start costs redb a second descent with
    // key comparisons (~1/8 of an OSD's CPU per 4 KiB read), an unbounded
    // one only follows the leftmost pointers. The greatest key <= lo
    // either starts with `ikey` (then it lies in [ikey, lo], as the
    // bounded range's last key would) or is less than `ikey` (this
    // instance has no key <= lo).
    let before = data
        .range::<&[u8]>(..=lo.as_slice())
        .map_err(sio)?
        .next_back();
    if let Some(item) = before {
        let (k, v) = item.map_err(sio)?;
        if k.value().starts_with(ikey) {
            let (s, p) = entry(k.value(), v.value())?;
            if s + p.blocks() > b0 {
                out.push((s, p));
            }
        }
    }
    if b1 > b0 + 1 {
        let next = codec::block_key(ikey, b0 + 1);
        for item in data
            .range::<&[u8]>(next.as_slice()..hi.as_slice())
            .map_err(sio)?
        {
            let (k, v) = item.map_err(sio)?;
            out.push(entry(k.value(), v.value())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Raw;
    use redb::{Database, TableDefinition};

    const T: TableDefinition<'static, Raw, Raw> = TableDefinition::new("data");

    fn ext(n: u64) -> ExtPtr {
        ExtPtr {
            seg: 1,
            off: 0,
            last: BLOCK_SIZE as u32,
            crcs: (0..n as u32).collect(),
        }
    }

    /// Instance keys of different lengths and a shared prefix: the lookup
    /// of one must never return another's extent, whatever sorts before it.
    #[test]
    fn overlapping_finds_exactly_the_extents_of_its_instance() {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let a: &[u8] = b"obj-a\0";
        let b: &[u8] = b"obj-b\0";
        let empty: &[u8] = b"obj-ab\0";
        // (instance, first block, blocks), extents of one instance disjoint.
        let layout: &[(&[u8], u64, u64)] =
            &[(a, 0, 4), (a, 10, 64), (a, 200, 1), (b, 5, 3), (b, 8, 1)];
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(T).unwrap();
            for (i, first, n) in layout {
                t.insert(
                    codec::block_key(i, *first).as_slice(),
                    ext(*n).encode().as_slice(),
                )
                .unwrap();
            }
        }
        w.commit().unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        for ikey in [a, b, empty] {
            for b0 in 0..260u64 {
                for len in [1u64, 2, 7, 64] {
                    let got: Vec<(u64, u64)> = overlapping(&t, ikey, b0, b0 + len)
                        .unwrap()
                        .into_iter()
                        .map(|(s, p)| (s, p.blocks()))
                        .collect();
                    let want: Vec<(u64, u64)> = layout
                        .iter()
                        .filter(|(i, f, n)| *i == ikey && *f < b0 + len && f + n > b0)
                        .map(|(_, f, n)| (*f, *n))
                        .collect();
                    assert_eq!(
                        got,
                        want,
                        "{:?} [{b0}, {})",
                        String::from_utf8_lossy(ikey),
                        b0 + len
                    );
                }
            }
        }
    }
}
