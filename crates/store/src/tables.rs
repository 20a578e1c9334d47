//! The redb tables and the one way to mutate them.
//!
//! Every mutation of a write transaction goes through [`WTables`], which can
//! record it as a physical redo entry (table, key, value). The writer thread
//! appends a batch's redo entries to the write-ahead log before committing
//! the batch (see `wal`), and recovery replays them with [`replay`]. Physical
//! redo makes replay trivially deterministic: no op is re-executed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use quarry_rados::{RadosError, Result};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::codec::{self, BLOCK_SIZE};
use crate::exec::{sio, Raw};
use crate::extent::{self, ExtPtr};
use crate::seglog::{self, Pos, Segments};

/// Where block bytes are read from: the data log's segments (readers), or
/// the writer's tables, which also see the record being built.
pub trait BlockSource {
    /// `len` raw bytes at `off` of segment `seg`.
    fn read_at(&self, seg: u32, off: u64, len: usize) -> Result<Vec<u8>>;

    /// `buf.len()` raw bytes at `off` of segment `seg`, into `buf`.
    fn read_into(&self, seg: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(&self.read_at(seg, off, buf.len())?);
        Ok(())
    }
}

impl BlockSource for Segments {
    fn read_at(&self, seg: u32, off: u64, len: usize) -> Result<Vec<u8>> {
        self.read(seg, off, len)
            .map_err(|e| RadosError::io(format!("data log segment {seg} at {off}: {e}")))
    }

    fn read_into(&self, seg: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        self.read_into(seg, off, buf)
            .map_err(|e| RadosError::io(format!("data log segment {seg} at {off}: {e}")))
    }
}

/// The data log's segments, read only where the bytes are in the page
/// cache: a read that would go to the disk fails (EIO) and sets `missed`,
/// so the caller retries it where blocking is fine. Never reported as a
/// read error of the object (the caller checks `missed` first).
pub struct CachedOnly<'a> {
    /// The segments read.
    pub segs: &'a Segments,
    /// Set when a read needed the disk.
    pub missed: std::cell::Cell<bool>,
}

impl BlockSource for CachedOnly<'_> {
    fn read_at(&self, seg: u32, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_into(seg, off, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&self, seg: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        match self.segs.read_into_cached(seg, off, buf) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.missed.set(true);
                Err(RadosError::io(format!(
                    "data log segment {seg} at {off}: not in the page cache"
                )))
            }
            Err(e) => Err(RadosError::io(format!(
                "data log segment {seg} at {off}: {e}"
            ))),
        }
    }
}

/// (segment, data length) behind a `data` table value.
fn ptr_len(v: &[u8]) -> Option<(u32, u64)> {
    ExtPtr::head(v)
}

/// The tables (see `store` for what each holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tbl {
    /// Object records.
    Meta = 0,
    /// Data blocks.
    Data = 1,
    /// Omap entries.
    Omap = 2,
    /// Index of objects with clones.
    Snapped = 3,
    /// Per-pool counters.
    Pools = 4,
    /// Small records of upper layers and the WAL checkpoint.
    Sys = 5,
}

const ALL: [Tbl; 6] = [
    Tbl::Meta,
    Tbl::Data,
    Tbl::Omap,
    Tbl::Snapped,
    Tbl::Pools,
    Tbl::Sys,
];

impl Tbl {
    /// The table's definition.
    pub fn def(self) -> TableDefinition<'static, Raw, Raw> {
        TableDefinition::new(match self {
            Tbl::Meta => "meta",
            Tbl::Data => "data",
            Tbl::Omap => "omap",
            Tbl::Snapped => "snapped",
            Tbl::Pools => "pool_counters",
            Tbl::Sys => "sys",
        })
    }

    fn from_u8(v: u8) -> Option<Tbl> {
        ALL.get(v as usize).copied()
    }
}

const PUT: u8 = 1;
const DEL: u8 = 2;
const DEL_RANGE: u8 = 3;

/// The data-log record a batch is building: its position and bytes so far
/// (header space, then the data blocks).
struct RecBuf {
    pos: Pos,
    buf: seglog::RecordBuf,
}

/// An extent's bytes: the caller's buffers, or bytes to copy.
#[derive(Clone, Copy)]
enum Parts<'a> {
    /// Blocks and each one's plain crc32c.
    Shared(&'a [Bytes], &'a [u32]),
    Copy(&'a [u8]),
}

/// The open tables of a write transaction, with an optional redo recorder,
/// the data-log record being built, and the live-byte change per segment.
pub struct WTables<'t> {
    t: Vec<Table<'t, Raw, Raw>>,
    redo: Option<Vec<u8>>,
    segs: Arc<Segments>,
    rec: Option<RecBuf>,
    live: HashMap<u32, i64>,
    /// Large fresh extents go to the log with O_DIRECT (see
    /// [`WTables::set_direct`]).
    direct: bool,
}

impl BlockSource for WTables<'_> {
    fn read_at(&self, seg: u32, off: u64, len: usize) -> Result<Vec<u8>> {
        if let Some(r) = &self.rec {
            if r.pos.seg == seg && off >= r.pos.off {
                // In the record being built (not written to the file yet).
                let s = (off - r.pos.off) as usize;
                return r
                    .buf
                    .read(s, len)
                    .ok_or_else(|| RadosError::io("data pointer past the record being built"));
            }
        }
        self.segs.read_at(seg, off, len)
    }
}

impl<'t> WTables<'t> {
    /// Open every table; record redo entries if `record`.
    pub fn open(txn: &'t WriteTransaction, record: bool, segs: Arc<Segments>) -> Result<Self> {
        let t = ALL
            .iter()
            .map(|d| txn.open_table(d.def()).map_err(sio))
            .collect::<Result<Vec<_>>>()?;
        Ok(WTables {
            t,
            redo: record.then(Vec::new),
            segs,
            rec: None,
            live: HashMap::new(),
            direct: false,
        })
    }

    /// Whether the fresh extents put from now on may be written to the log
    /// with O_DIRECT (page-aligned in the file, not copied into the page
    /// cache), from the store's [`seglog::DirectMode`] and the request's
    /// hint `uncached` (its data need not stay in the page cache).
    pub fn set_direct(&mut self, uncached: bool) {
        self.direct = match self.segs.direct_mode() {
            seglog::DirectMode::Off => false,
            seglog::DirectMode::Hinted => uncached,
            seglog::DirectMode::All => true,
        };
    }

    /// Start building the next data-log record, which will lie at `pos`.
    pub fn start_record(&mut self, pos: Pos) {
        self.rec = Some(RecBuf {
            pos,
            buf: seglog::RecordBuf::new(),
        });
    }

    /// Seal the record being built with `lsn`: (its position, its bytes),
    /// or `None` if the batch changed nothing. Starts no new record.
    /// Bytes of data the open record holds so far (0 without one).
    pub fn record_len(&self) -> usize {
        self.rec.as_ref().map_or(0, |r| r.buf.len())
    }

    pub fn finish_record(&mut self, lsn: u64) -> Option<(Pos, seglog::RecordBuf)> {
        let redo = self.take_redo();
        let mut rec = self.rec.take()?;
        if redo.is_empty() && rec.buf.len() == seglog::HDR {
            return None;
        }
        rec.buf.seal(lsn, redo);
        Some((rec.pos, rec.buf))
    }

    /// Live data bytes gained (lost, if negative) per segment since the
    /// last call.
    pub fn take_live(&mut self) -> HashMap<u32, i64> {
        std::mem::take(&mut self.live)
    }

    fn account(&mut self, which: Tbl, old: Option<&[u8]>, new: Option<&[u8]>) -> Option<usize> {
        if which != Tbl::Data {
            return old.map(<[u8]>::len);
        }
        if let Some((seg, len)) = new.and_then(ptr_len) {
            *self.live.entry(seg).or_default() += len as i64;
        }
        let p = ptr_len(old?);
        if let Some((seg, len)) = p {
            *self.live.entry(seg).or_default() -= len as i64;
        }
        Some(p.map_or(0, |(_, len)| len as usize))
    }

    /// Store an extent of fresh blocks at `key` (the instance's key then
    /// `first`, the first block's index): append them to the record being
    /// built and index them, each block's crc32c computed here. `blocks`
    /// are full blocks but the last (1..=BLOCK_SIZE bytes). The caller
    /// then calls [`WTables::trim_after_put`] with the value this replaced.
    /// Returns the data bytes stored and that value.
    pub fn put_blocks(
        &mut self,
        key: &[u8],
        first: u64,
        blocks: &[Bytes],
    ) -> Result<(u64, Option<Vec<u8>>)> {
        let mut crcs = Vec::with_capacity(blocks.len());
        let mut raw = Vec::with_capacity(blocks.len());
        let mut last = 0;
        // A received payload's blocks were hashed once on receipt.
        let known = quarry_common::blockcrc::known(blocks);
        for (i, b) in blocks.iter().enumerate() {
            if b.is_empty() || b.len() as u64 > BLOCK_SIZE {
                return Err(RadosError::io("local store: bad block length"));
            }
            if i + 1 < blocks.len() && b.len() as u64 != BLOCK_SIZE {
                return Err(RadosError::io("local store: short block inside an extent"));
            }
            // One pass over the bytes: the block's checksum and the log
            // record's are both derived from its plain crc32c.
            let r = match &known {
                Some(k) => k[i],
                None => crc32c::crc32c(b),
            };
            debug_assert_eq!(r, crc32c::crc32c(b), "remembered block crc");
            crcs.push(if b.len() as u64 == BLOCK_SIZE {
                codec::block_crc_from_raw(first + i as u64, r)
            } else {
                codec::block_crc(first + i as u64, b)
            });
            raw.push(r);
            last = b.len() as u32;
        }
        let direct = self.direct;
        let (len, old, _) =
            self.put_extent_parts(key, Parts::Shared(blocks, &raw), last, crcs, direct)?;
        Ok((len, old))
    }

    /// Store an extent of existing blocks (compaction's moves) without
    /// copying them into the record: `blocks` with each one's plain
    /// crc32c, keeping the stored checksums `crcs` (checked by the caller).
    /// Returns the new index entry.
    pub fn put_extent_blocks(
        &mut self,
        key: &[u8],
        blocks: &[Bytes],
        raw: &[u32],
        last: u32,
        crcs: Vec<u32>,
    ) -> Result<ExtPtr> {
        debug_assert_eq!(blocks.len(), raw.len());
        Ok(self
            .put_extent_parts(key, Parts::Shared(blocks, raw), last, crcs, false)?
            .2)
    }

    /// Store an extent whose bytes are `data` with the given checksums
    /// (imports keep a block's stored checksum, so a corrupted block stays
    /// detectably corrupted). Returns the new index entry.
    pub fn put_extent(
        &mut self,
        key: &[u8],
        data: &[u8],
        last: u32,
        crcs: Vec<u32>,
    ) -> Result<ExtPtr> {
        Ok(self
            .put_extent_parts(key, Parts::Copy(data), last, crcs, false)?
            .2)
    }

    fn put_extent_parts(
        &mut self,
        key: &[u8],
        parts: Parts<'_>,
        last: u32,
        crcs: Vec<u32>,
        direct: bool,
    ) -> Result<(u64, Option<Vec<u8>>, ExtPtr)> {
        let rec = self
            .rec
            .as_mut()
            .ok_or_else(|| RadosError::io("local store: block write outside a log record"))?;
        let n = crcs.len() as u64;
        let len: u64 = match parts {
            Parts::Shared(b, _) => b.iter().map(|p| p.len() as u64).sum(),
            Parts::Copy(d) => d.len() as u64,
        };
        if n == 0
            || n > extent::MAX_EXTENT_BLOCKS
            || last == 0
            || last as u64 > BLOCK_SIZE
            || len != (n - 1) * BLOCK_SIZE + last as u64
        {
            return Err(RadosError::io("local store: malformed extent"));
        }
        let off = match parts {
            // Small pieces are copied (one iovec each would cost more).
            Parts::Shared(b, raw) if len >= 16 << 10 => Self::push_fresh(rec, b, raw, len, direct),
            Parts::Shared(b, _) => {
                let at = rec.pos.off + rec.buf.len() as u64;
                for d in b {
                    rec.buf.push_slice(d);
                }
                at
            }
            Parts::Copy(d) => {
                let at = rec.pos.off + rec.buf.len() as u64;
                rec.buf.push_slice(d);
                at
            }
        };
        let p = ExtPtr {
            seg: rec.pos.seg,
            off,
            last,
            crcs,
        };
        let (old, _) = self.put_old(Tbl::Data, key, &p.encode())?;
        Ok((len, old, p))
    }

    /// Store fresh blocks of an extent of `len` bytes into the record and
    /// return where its first byte lies: page-aligned, after pad bytes, if
    /// it will be written with O_DIRECT.
    fn push_fresh(rec: &mut RecBuf, b: &[Bytes], raw: &[u32], len: u64, direct: bool) -> u64 {
        let direct = direct
            && len >= seglog::DIRECT_MIN as u64
            && b.first()
                .is_some_and(|f| (f.as_ptr() as usize).is_multiple_of(seglog::DIRECT_ALIGN));
        if direct {
            rec.buf.pad_to_page(rec.pos.off);
        }
        let at = rec.pos.off + rec.buf.len() as u64;
        debug_assert!(!direct || at.is_multiple_of(seglog::DIRECT_ALIGN as u64));
        for (d, r) in b.iter().zip(raw) {
            rec.buf.push_block(d.clone(), *r, direct);
        }
        at
    }

    /// After a put of blocks `[b0, b1)` at `b0` that replaced `old` (the
    /// value that was at `b0`, if any): remove the rest of the range from
    /// older extents, as [`WTables::punch`] would have before the put (an
    /// overwrite of a whole extent costs one index write). Returns the data
    /// bytes removed (`old`'s included).
    pub fn trim_after_put(
        &mut self,
        ikey: &[u8],
        b0: u64,
        b1: u64,
        old: Option<Vec<u8>>,
    ) -> Result<u64> {
        let mut removed = 0u64;
        match old {
            Some(v) => {
                let p = ExtPtr::decode(&v).ok_or_else(extent::corrupt_entry)?;
                removed += p.bytes();
                if b0 + p.blocks() > b1 {
                    // It reached past the range: nothing else starts inside.
                    let t = p.slice(b1 - b0, p.blocks());
                    removed -= t.bytes();
                    self.put(Tbl::Data, &codec::block_key(ikey, b1), &t.encode())?;
                    return Ok(removed);
                }
            }
            None if b0 > 0 => {
                // The last extent starting before b0 may reach into the range.
                let lo = codec::block_key(ikey, b0);
                let before = {
                    let mut r = self
                        .table(Tbl::Data)
                        .range::<&[u8]>(ikey..lo.as_slice())
                        .map_err(sio)?;
                    match r.next_back() {
                        Some(item) => {
                            let (k, v) = item.map_err(sio)?;
                            let s = codec::block_index(k.value(), ikey.len())
                                .ok_or_else(extent::corrupt_entry)?;
                            let p = ExtPtr::decode(v.value()).ok_or_else(extent::corrupt_entry)?;
                            Some((s, p))
                        }
                        None => None,
                    }
                };
                if let Some((s, p)) = before {
                    let e = s + p.blocks();
                    if e > b0 {
                        let head = p.slice(0, b0 - s);
                        removed += p.bytes() - head.bytes();
                        self.put(Tbl::Data, &codec::block_key(ikey, s), &head.encode())?;
                        if e > b1 {
                            let t = p.slice(b1 - s, p.blocks());
                            removed -= t.bytes();
                            self.put(Tbl::Data, &codec::block_key(ikey, b1), &t.encode())?;
                            return Ok(removed);
                        }
                    }
                }
            }
            None => {}
        }
        if b1 > b0 + 1 {
            // Extents starting inside the range (after b0): deleted, the
            // last one's part past b1 kept.
            let ents = extent::overlapping(self.table(Tbl::Data), ikey, b0 + 1, b1)?;
            let mut tail = None;
            let mut any = false;
            for (s, p) in ents {
                if s <= b0 {
                    continue;
                }
                any = true;
                removed += p.bytes();
                if s + p.blocks() > b1 {
                    let t = p.slice(b1 - s, p.blocks());
                    removed -= t.bytes();
                    tail = Some(t);
                }
            }
            if any {
                let lo = codec::block_key(ikey, b0 + 1);
                let hi = codec::block_key(ikey, b1);
                self.del_range(Tbl::Data, &lo, Some(&hi))?;
            }
            if let Some(t) = tail {
                self.put(Tbl::Data, &codec::block_key(ikey, b1), &t.encode())?;
            }
        }
        Ok(removed)
    }

    /// Remove blocks `[b0, b1)` of the instance `ikey` from the index:
    /// extents inside the range are deleted, those reaching past it are
    /// trimmed to the part outside (their bytes stay where they are).
    /// Returns the data bytes removed.
    pub fn punch(&mut self, ikey: &[u8], b0: u64, b1: u64) -> Result<u64> {
        let ents = extent::overlapping(self.table(Tbl::Data), ikey, b0, b1)?;
        let mut removed = 0u64;
        let mut delete = false;
        let mut tail = None;
        for (s, p) in ents {
            let e = s + p.blocks();
            removed += p.bytes();
            if s < b0 {
                let head = p.slice(0, b0 - s);
                removed -= head.bytes();
                // Same key: replaces the whole extent.
                self.put(Tbl::Data, &codec::block_key(ikey, s), &head.encode())?;
            } else {
                delete = true;
            }
            if e > b1 {
                let t = p.slice(b1 - s, p.blocks());
                removed -= t.bytes();
                tail = Some(t);
            }
        }
        if delete {
            let lo = codec::block_key(ikey, b0);
            let hi = codec::block_key(ikey, b1);
            self.del_range(Tbl::Data, &lo, Some(&hi))?;
        }
        if let Some(t) = tail {
            self.put(Tbl::Data, &codec::block_key(ikey, b1), &t.encode())?;
        }
        Ok(removed)
    }

    /// Read access to a table.
    pub fn table(&self, which: Tbl) -> &Table<'t, Raw, Raw> {
        &self.t[which as usize]
    }

    fn rec(&mut self, kind: u8, which: Tbl, a: &[u8], b: Option<&[u8]>) {
        if let Some(r) = self.redo.as_mut() {
            r.push(kind);
            r.push(which as u8);
            r.extend_from_slice(&(a.len() as u32).to_le_bytes());
            r.extend_from_slice(a);
            match b {
                Some(b) => {
                    r.push(1);
                    r.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    r.extend_from_slice(b);
                }
                None => r.push(0),
            }
        }
    }

    /// Insert; returns the length of the value replaced, if any.
    pub fn put(&mut self, which: Tbl, k: &[u8], v: &[u8]) -> Result<Option<usize>> {
        Ok(self.put_old(which, k, v)?.1)
    }

    /// Insert; returns the value replaced, if any, and its length (as
    /// [`WTables::put`]).
    fn put_old(
        &mut self,
        which: Tbl,
        k: &[u8],
        v: &[u8],
    ) -> Result<(Option<Vec<u8>>, Option<usize>)> {
        self.rec(PUT, which, k, Some(v));
        let old = self.t[which as usize].insert(k, v).map_err(sio)?;
        let old = old.map(|o| o.value().to_vec());
        let n = self.account(which, old.as_deref(), Some(v));
        Ok((old, n))
    }

    /// Delete; returns the length of the value removed, if any.
    pub fn del(&mut self, which: Tbl, k: &[u8]) -> Result<Option<usize>> {
        self.rec(DEL, which, k, None);
        let old = self.t[which as usize].remove(k).map_err(sio)?;
        let old = old.map(|o| o.value().to_vec());
        Ok(self.account(which, old.as_deref(), None))
    }

    /// Delete every key in `[lo, hi)` (`hi = None`: to the end); returns the
    /// total length of the values removed (of the data, for `data`) and
    /// how many there were.
    pub fn del_range(&mut self, which: Tbl, lo: &[u8], hi: Option<&[u8]>) -> Result<(u64, u64)> {
        self.rec(DEL_RANGE, which, lo, hi);
        // Keys are collected (in chunks) and removed one by one: redb 2.6's
        // range removal (`extract_from_if`, `retain_in`) never mutates pages
        // in place, so each key it deletes copies its leaf and the path to
        // the root (~20 us per key on a large index), while `remove`
        // changes a page this transaction already copied in place.
        const CHUNK: usize = 4096;
        let (mut bytes, mut n) = (0u64, 0u64);
        let mut from = lo.to_vec();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            keys.clear();
            {
                let t = &self.t[which as usize];
                let iter = match hi {
                    Some(hi) => t.range::<&[u8]>(from.as_slice()..hi),
                    None => t.range::<&[u8]>(from.as_slice()..),
                }
                .map_err(sio)?;
                for item in iter.take(CHUNK) {
                    keys.push(item.map_err(sio)?.0.value().to_vec());
                }
            }
            for k in &keys {
                let t = &mut self.t[which as usize];
                let Some(v) = t.remove(k.as_slice()).map_err(sio)? else {
                    continue;
                };
                if which == Tbl::Data {
                    if let Some((seg, len)) = ptr_len(v.value()) {
                        bytes += len;
                        *self.live.entry(seg).or_default() -= len as i64;
                    }
                } else {
                    bytes += v.value().len() as u64;
                }
                n += 1;
            }
            if keys.len() < CHUNK {
                return Ok((bytes, n));
            }
            // Continue after the last key removed.
            let Some(last) = keys.last() else {
                return Ok((bytes, n));
            };
            from.clear();
            from.extend_from_slice(last);
            from.push(0);
        }
    }

    /// Take the recorded redo entries.
    pub fn take_redo(&mut self) -> Vec<u8> {
        // The next batch's redo starts with room for as much as this one's
        // (up to 1 MiB): growing it by reallocation cost ~4% of the writer.
        self.redo
            .as_mut()
            .map(|r| {
                let cap = r.len().min(1 << 20);
                std::mem::replace(r, Vec::with_capacity(cap))
            })
            .unwrap_or_default()
    }
}

/// One parsed redo entry.
pub enum Redo<'a> {
    /// Insert or replace.
    Put(Tbl, &'a [u8], &'a [u8]),
    /// Delete one key.
    Del(Tbl, &'a [u8]),
    /// Delete `[lo, hi)`.
    DelRange(Tbl, &'a [u8], Option<&'a [u8]>),
}

/// Apply recorded redo entries (from the data log).
pub fn replay(t: &mut WTables<'_>, body: &[u8]) -> Result<()> {
    for e in parse(body)? {
        match e {
            Redo::Put(which, a, v) => {
                t.put(which, a, v)?;
            }
            Redo::Del(which, a) => {
                t.del(which, a)?;
            }
            Redo::DelRange(which, a, hi) => {
                t.del_range(which, a, hi)?;
            }
        }
    }
    Ok(())
}

/// Parse recorded redo entries.
pub fn parse(mut body: &[u8]) -> Result<Vec<Redo<'_>>> {
    let bad = || RadosError::io("corrupted redo entry in the data log");
    let mut out = Vec::new();
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (h, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(h)
    }
    fn bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize;
        take(b, n)
    }
    while !body.is_empty() {
        let hdr = take(&mut body, 2).ok_or_else(bad)?;
        let which = Tbl::from_u8(hdr[1]).ok_or_else(bad)?;
        let a = bytes(&mut body).ok_or_else(bad)?;
        let b = match take(&mut body, 1).ok_or_else(bad)?[0] {
            0 => None,
            1 => Some(bytes(&mut body).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        out.push(match (hdr[0], b) {
            (PUT, Some(v)) => Redo::Put(which, a, v),
            (DEL, None) => Redo::Del(which, a),
            (DEL_RANGE, hi) => Redo::DelRange(which, a, hi),
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

/// Live data bytes per segment in a `data` table (at open).
pub fn live_bytes<T: ReadableTable<Raw, Raw>>(data: &T) -> Result<HashMap<u32, u64>> {
    let mut live: HashMap<u32, u64> = HashMap::new();
    for item in data.iter().map_err(sio)? {
        let (_, v) = item.map_err(sio)?;
        if let Some((seg, len)) = ptr_len(v.value()) {
            *live.entry(seg).or_default() += len;
        }
    }
    Ok(live)
}
