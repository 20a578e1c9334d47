//! Export and import of one object's complete state: its record (snap set,
//! head and clone metadata with their versions and xattrs), every data
//! block and omap entry of every instance, and its snapshot-index entry.
//!
//! Recovery uses this so a recovered replica is *identical* to the
//! authority, clones and versions included. The format is physical (raw
//! table entries, keys relative to the object's key), so nothing is
//! re-executed: block checksums travel with the blocks and are verified by
//! the importer's later reads exactly as on the exporter. A data entry's
//! value is the block's stored crc32c (LE) then its bytes, read from the
//! data log; the importer appends the bytes to its own log.
//!
//! Format: magic `QOX1`, then entries `[table u8][key len u32 LE][key
//! suffix][value len u32 LE][value]`. An absent object exports as `None`.
//! Object keys are prefix-free (every component is escaped and
//! terminated), so "every key starting with the object key" is exactly the
//! object's entries.

use std::collections::HashMap;

use quarry_rados::{RadosError, Result};
use redb::ReadableTable;

use crate::codec::{self, ObjRecord, BLOCK_SIZE};
use crate::exec::{sio, RTable};
use crate::extent::{self, ExtPtr};
use crate::tables::{BlockSource, Tbl, WTables};

const MAGIC: &[u8; 4] = b"QOX1";

/// Tables holding per-object entries (pool counters and `sys` are not).
const OBJ_TABLES: [Tbl; 4] = [Tbl::Meta, Tbl::Data, Tbl::Omap, Tbl::Snapped];

fn push_entry(out: &mut Vec<u8>, which: Tbl, suffix: &[u8], val: &[u8]) -> Result<()> {
    let len =
        |n: usize| u32::try_from(n).map_err(|_| RadosError::io("object export entry too large"));
    out.push(which as u8);
    out.extend_from_slice(&len(suffix.len())?.to_le_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(&len(val.len())?.to_le_bytes());
    out.extend_from_slice(val);
    Ok(())
}

/// Export the object whose key is `okey` from readable tables (`None` if
/// it has neither a head nor clones).
pub fn export<M: RTable, D: RTable, O: RTable, S: RTable>(
    meta: &M,
    data: &D,
    blocks: &dyn BlockSource,
    omap: &O,
    snapped: &S,
    okey: &[u8],
) -> Result<Option<Vec<u8>>> {
    let Some(rec) = meta.get(okey).map_err(sio)? else {
        return Ok(None);
    };
    let mut out = MAGIC.to_vec();
    push_entry(&mut out, Tbl::Meta, &[], rec.value())?;
    drop(rec);
    let hi = codec::prefix_end(okey);
    // Data as one entry per block (crc32c then bytes), whatever the
    // extents: the format does not depend on how the index groups blocks.
    let mut val = Vec::with_capacity(4 + BLOCK_SIZE as usize);
    let mut suffix = Vec::with_capacity(16);
    for (k, v) in prefixed(data, okey, hi.as_deref())? {
        let ks = k.get(okey.len()..).unwrap_or_default();
        let (Some(inst), Some(first)) = (
            ks.get(..8),
            codec::block_index(&k, k.len().saturating_sub(8)),
        ) else {
            return Err(RadosError::io("corrupted data key in an export"));
        };
        let p = ExtPtr::decode(&v)
            .ok_or_else(|| RadosError::io("corrupted data index entry in an export"))?;
        let run = blocks.read_at(p.seg, p.off, p.bytes() as usize)?;
        for i in 0..p.blocks() {
            let o = (i * BLOCK_SIZE) as usize;
            val.clear();
            // Raw bytes with their stored checksum: a corrupt block stays
            // detectably corrupt on the importer.
            val.extend_from_slice(&p.crcs[i as usize].to_le_bytes());
            val.extend_from_slice(&run[o..o + p.block_len(i)]);
            suffix.clear();
            suffix.extend_from_slice(inst);
            suffix.extend_from_slice(&(first + i).to_be_bytes());
            push_entry(&mut out, Tbl::Data, &suffix, &val)?;
        }
    }
    for (k, v) in prefixed(omap, okey, hi.as_deref())? {
        let suffix = k.get(okey.len()..).unwrap_or_default();
        push_entry(&mut out, Tbl::Omap, suffix, &v)?;
    }
    if snapped.get(okey).map_err(sio)?.is_some() {
        push_entry(&mut out, Tbl::Snapped, &[], &[])?;
    }
    Ok(Some(out))
}

/// Every entry of `t` in `[lo, hi)`.
fn prefixed<T: RTable>(t: &T, lo: &[u8], hi: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let iter = match hi {
        Some(hi) => t.range::<&[u8]>(lo..hi),
        None => t.range::<&[u8]>(lo..),
    }
    .map_err(sio)?;
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item.map_err(sio)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// A parsed export: the record and the raw entries.
pub struct Parsed<'a> {
    /// The object's record.
    pub rec: ObjRecord,
    entries: Vec<(Tbl, &'a [u8], &'a [u8])>,
}

/// Validate an export before anything is changed: a corrupt or truncated
/// one is refused whole (EIO), never half-installed.
pub fn parse<'a>(buf: &'a [u8], what: &dyn std::fmt::Display) -> Result<Parsed<'a>> {
    let bad = |why: &str| RadosError::io(format!("bad object export for {what}: {why}"));
    let mut b = buf
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("magic"))?;
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (h, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(h)
    }
    fn bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize;
        take(b, n)
    }
    let mut rec = None;
    let mut entries = Vec::new();
    while !b.is_empty() {
        let t = take(&mut b, 1).ok_or_else(|| bad("truncated"))?[0];
        let which = *OBJ_TABLES
            .iter()
            .find(|x| **x as u8 == t)
            .ok_or_else(|| bad("unknown table"))?;
        let k = bytes(&mut b).ok_or_else(|| bad("truncated key"))?;
        let v = bytes(&mut b).ok_or_else(|| bad("truncated value"))?;
        match which {
            Tbl::Meta | Tbl::Snapped if !k.is_empty() => return Err(bad("keyed record")),
            Tbl::Meta => rec = Some(ObjRecord::decode(v, what)?),
            // An instance id (8 bytes) starts every data and omap key.
            Tbl::Data | Tbl::Omap if k.len() < 8 => return Err(bad("short instance key")),
            // An instance id and a block index; crc32c and 1..=4096 bytes.
            Tbl::Data if k.len() < 16 || v.len() < 5 || v.len() > 4 + BLOCK_SIZE as usize => {
                return Err(bad("malformed data block"))
            }
            _ => {}
        }
        entries.push((which, k, v));
    }
    Ok(Parsed {
        rec: rec.ok_or_else(|| bad("no record"))?,
        entries,
    })
}

/// What a deep scrub compares of one copy of an object: a digest of its
/// complete export (record, every instance's blocks with their stored
/// checksums, omap, snapshot-index entry) and how many of its data blocks
/// no longer match their stored checksum (damaged on this copy's disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportDigest {
    /// crc32c of the whole export.
    pub crc: u32,
    /// Length of the export in bytes.
    pub len: u64,
    /// Data blocks whose bytes fail their stored crc32c.
    pub bad_blocks: u32,
}

/// Digest an export (see [`ExportDigest`]) and check every data block
/// against its stored checksum. Exports are canonical (one entry per
/// block whatever the extents), so two in-sync copies digest alike.
pub fn digest(buf: &[u8], what: &dyn std::fmt::Display) -> Result<ExportDigest> {
    let p = parse(buf, what)?;
    let mut bad_blocks = 0u32;
    for (which, suffix, val) in &p.entries {
        if *which != Tbl::Data {
            continue;
        }
        // `parse` checked the lengths: instance id, block index; crc, bytes.
        let blk = codec::block_index(suffix, 8)
            .ok_or_else(|| RadosError::io(format!("malformed data key in the export of {what}")))?;
        let stored = u32::from_le_bytes([val[0], val[1], val[2], val[3]]);
        if codec::block_crc(blk, &val[4..]) != stored {
            bad_blocks += 1;
        }
    }
    Ok(ExportDigest {
        crc: crc32c::crc32c(buf),
        len: buf.len() as u64,
        bad_blocks,
    })
}

/// (objects, stored bytes) an object's record accounts for.
pub fn weight(rec: &ObjRecord) -> (u64, u64) {
    let mut n = rec.clones.len() as u64;
    let mut b: u64 = rec.clones.iter().map(|c| c.inst.stored).sum();
    if let Some(h) = &rec.head {
        n += 1;
        b += h.stored;
    }
    (n, b)
}

/// Highest version in a record (head or clones).
pub fn max_version(rec: &ObjRecord) -> u64 {
    rec.clones
        .iter()
        .map(|c| c.inst.version)
        .chain(rec.head.iter().map(|h| h.version))
        .max()
        .unwrap_or(0)
}

/// Remove every entry of the object `okey`; returns its old record, if any.
pub fn wipe(
    t: &mut WTables<'_>,
    okey: &[u8],
    what: &dyn std::fmt::Display,
) -> Result<Option<ObjRecord>> {
    let old = match t.table(Tbl::Meta).get(okey).map_err(sio)? {
        Some(v) => Some(ObjRecord::decode(v.value(), what)?),
        None => None,
    };
    if old.is_none() && t.table(Tbl::Snapped).get(okey).map_err(sio)?.is_none() {
        // Data and omap entries exist only under a record (flush writes the
        // record in the same request), so there is nothing else to delete.
        return Ok(None);
    }
    let hi = codec::prefix_end(okey);
    for which in OBJ_TABLES {
        t.del_range(which, okey, hi.as_deref())?;
    }
    Ok(old)
}

/// Write a parsed export's entries under `okey` (after [`wipe`]).
/// Adjacent full blocks of one instance become one extent again, and a
/// block whose bytes equal the previous instance's at the same index (a
/// clone and the head it was taken from, see `exec::copy_extents`) points
/// at that instance's copy instead of being appended again, so a
/// recovered replica shares what its source shared.
pub fn install(t: &mut WTables<'_>, okey: &[u8], p: &Parsed<'_>) -> Result<()> {
    /// Where an installed block lies, with its checksum and bytes.
    type Loc<'a> = (u32, u64, u32, &'a [u8]);
    /// Blocks waiting to be written as one extent: fresh bytes, or a run of
    /// the previous instance's blocks lying back to back at (seg, off).
    struct Run<'a> {
        ikey: Vec<u8>,
        first: u64,
        blocks: Vec<&'a [u8]>,
        crcs: Vec<u32>,
        shared: Option<(u32, u64)>,
    }
    impl Run<'_> {
        fn last(&self) -> u32 {
            self.blocks.last().map_or(0, |b| b.len() as u32)
        }
    }
    fn put<'a>(t: &mut WTables<'_>, r: Run<'a>, locs: &mut HashMap<u64, Loc<'a>>) -> Result<()> {
        let n = r.crcs.len() as u64;
        let last = r.last();
        // `parse` allows repeated keys: never let two extents overlap.
        t.punch(&r.ikey, r.first, r.first + n)?;
        let key = codec::block_key(&r.ikey, r.first);
        let (seg, off) = match r.shared {
            Some((seg, off)) => {
                let e = ExtPtr {
                    seg,
                    off,
                    last,
                    crcs: r.crcs.clone(),
                };
                t.put(Tbl::Data, &key, &e.encode())?;
                (seg, off)
            }
            None => {
                let data = r.blocks.concat();
                let e = t.put_extent(&key, &data, last, r.crcs.clone())?;
                (e.seg, e.off)
            }
        };
        for (i, (b, crc)) in r.blocks.iter().zip(&r.crcs).enumerate() {
            let at = off + i as u64 * BLOCK_SIZE;
            locs.insert(r.first + i as u64, (seg, at, *crc, *b));
        }
        Ok(())
    }
    /// Where `prev` (an instance's blocks) holds the same bytes at `blk`.
    fn same_in(prev: &HashMap<u64, Loc<'_>>, blk: u64, crc: u32, d: &[u8]) -> Option<(u32, u64)> {
        prev.get(&blk)
            .filter(|&&(_, _, c, b)| c == crc && b == d)
            .map(|&(seg, off, _, _)| (seg, off))
    }
    let mut run: Option<Run<'_>> = None;
    // Blocks of the instance being installed, and of the one before it.
    let mut locs: HashMap<u64, Loc<'_>> = HashMap::new();
    let mut prev: HashMap<u64, Loc<'_>> = HashMap::new();
    let mut inst: Vec<u8> = Vec::new();
    let mut key = Vec::with_capacity(okey.len() + 32);
    for (which, suffix, val) in &p.entries {
        key.clear();
        key.extend_from_slice(okey);
        key.extend_from_slice(suffix);
        if *which != Tbl::Data {
            t.put(*which, &key, val)?;
            continue;
        }
        // `parse` checked the lengths.
        let blk = codec::block_index(&key, key.len() - 8)
            .ok_or_else(|| RadosError::io("malformed data key in an export"))?;
        let ikey = &key[..key.len() - 8];
        let crc = u32::from_le_bytes([val[0], val[1], val[2], val[3]]);
        let d: &[u8] = &val[4..];
        let same = same_in(&prev, blk, crc, d);
        if let Some(r) = run.as_mut() {
            let n = r.crcs.len() as u64;
            let follows = r.ikey == ikey
                && r.first + n == blk
                && r.last() as u64 == BLOCK_SIZE
                && n < extent::MAX_EXTENT_BLOCKS;
            let fits = match (r.shared, same) {
                (None, None) => true,
                (Some((seg, off)), Some((s2, o2))) => s2 == seg && o2 == off + n * BLOCK_SIZE,
                _ => false,
            };
            if follows && fits {
                r.blocks.push(d);
                r.crcs.push(crc);
                continue;
            }
        }
        if let Some(r) = run.take() {
            put(t, r, &mut locs)?;
        }
        let same = if inst != ikey {
            prev = std::mem::take(&mut locs);
            inst = ikey.to_vec();
            // A new instance shares with the one just finished.
            same_in(&prev, blk, crc, d)
        } else {
            same
        };
        run = Some(Run {
            ikey: ikey.to_vec(),
            first: blk,
            blocks: vec![d],
            crcs: vec![crc],
            shared: same,
        });
    }
    if let Some(r) = run {
        put(t, r, &mut locs)?;
    }
    Ok(())
}
