//! Request execution: stage a compound request in memory, then flush it.
//!
//! A request is first *staged* against a read view of the tables (a read
//! transaction, or the batch's write transaction as it stands): every op is
//! checked and applied to an in-memory overlay of the object (its record,
//! dirty blocks, dirty omap keys). Only if every op succeeds is the overlay
//! *flushed* into the write transaction. This is what makes one request
//! atomic while many requests share one redb transaction (group commit):
//! a failing request has touched nothing, so the others commit unaffected.
//!
//! Architecture invariant: staging never writes; flushing never fails for a
//! semantic reason (only for a storage error, which aborts the whole batch).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{
    CloneInfo, ObjectId, ObjectStat, Op, OpOutput, OpReply, OpRequest, RadosError, Result, SnapId,
    SnapSet, NOSNAP,
};
use redb::ReadableTable;

use crate::codec::{self, CloneMeta, InstMeta, ObjRecord, BLOCK_SIZE};
use crate::extent;
use crate::tables::{BlockSource, Tbl, WTables};

/// Largest object size accepted (1 TiB); larger writes are `EFBIG`.
pub const MAX_OBJECT_SIZE: u64 = 1 << 40;
/// Longest object name, namespace, xattr name or omap key, in bytes.
pub const MAX_NAME_LEN: usize = 4096;
/// Largest single xattr or omap value, in bytes.
pub const MAX_VALUE_LEN: usize = 16 << 20;
/// Largest read served in one op (reads past it are cut, as RADOS caps them).
pub const MAX_READ_LEN: u64 = 1 << 30;

/// The key and value type of every byte-keyed table.
pub type Raw = &'static [u8];

/// A readable byte-keyed table (read-only or inside a write transaction).
pub trait RTable: ReadableTable<Raw, Raw> {}
impl<T: ReadableTable<Raw, Raw>> RTable for T {}

/// Map a storage-engine error to EIO.
pub fn sio<E: fmt::Display>(e: E) -> RadosError {
    RadosError::io(format!("local store: {e}"))
}

/// Object name for messages: `pool/namespace/name`.
pub struct Name<'a>(pub &'a ObjectId);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.namespace.is_empty() {
            write!(f, "{}/{}", self.0.pool, self.0.name)
        } else {
            write!(f, "{}/{}/{}", self.0.pool, self.0.namespace, self.0.name)
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Where an instance's committed content comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// The blocks/omap stored in the tables under this instance id.
    Inst(SnapId),
    /// Nothing (after WriteFull, Remove, ...).
    Empty,
}

/// Staged data of an instance: a base plus dirty blocks.
#[derive(Clone, Debug)]
struct DataState {
    base: Base,
    /// Base blocks with index >= limit are gone (truncated).
    limit: u64,
    /// Overlay: `None` = block deleted. Data never longer than a block and
    /// never extending past the object size. Full blocks of a write are
    /// slices of the request's buffer (not copied until the log record).
    dirty: BTreeMap<u64, Option<Bytes>>,
}

impl DataState {
    fn of(inst: SnapId) -> Self {
        DataState {
            base: Base::Inst(inst),
            limit: u64::MAX,
            dirty: BTreeMap::new(),
        }
    }
    fn empty() -> Self {
        DataState {
            base: Base::Empty,
            limit: 0,
            dirty: BTreeMap::new(),
        }
    }
}

/// Staged omap of an instance: a base plus dirty keys.
#[derive(Clone, Debug)]
struct OmapState {
    base: Base,
    dirty: BTreeMap<String, Option<Bytes>>,
}

impl OmapState {
    fn of(inst: SnapId) -> Self {
        OmapState {
            base: Base::Inst(inst),
            dirty: BTreeMap::new(),
        }
    }
    fn empty() -> Self {
        OmapState {
            base: Base::Empty,
            dirty: BTreeMap::new(),
        }
    }
}

/// Which instance serves a read at a snap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The head.
    Head,
    /// The clone at this index of `ObjRecord::clones`.
    Clone(usize),
    /// The object did not exist at that snap.
    Missing,
}

/// RADOS' snap resolution: the head if no clone was taken since `snap`,
/// else the oldest clone with id >= snap if its label reaches back to it.
pub fn resolve(rec: &ObjRecord, snap: SnapId) -> Target {
    if snap == NOSNAP || snap > rec.seq {
        return if rec.head.is_some() {
            Target::Head
        } else {
            Target::Missing
        };
    }
    match rec.clones.iter().position(|c| c.id >= snap) {
        Some(i) if rec.clones[i].snaps.first().is_some_and(|&s| s <= snap) => Target::Clone(i),
        _ => Target::Missing,
    }
}

/// Remove `[off, off+len)` from a sorted extent list.
pub fn subtract(ov: &mut Vec<(u64, u64)>, off: u64, len: u64) {
    if len == 0 {
        return;
    }
    let end = off.saturating_add(len);
    let mut out = Vec::with_capacity(ov.len() + 1);
    for &(o, l) in ov.iter() {
        let e = o + l;
        if e <= off || o >= end {
            out.push((o, l));
            continue;
        }
        if o < off {
            out.push((o, off - o));
        }
        if e > end {
            out.push((end, e - end));
        }
    }
    *ov = out;
}

/// Intersection of two sorted extent lists.
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (ao, ae) = (a[i].0, a[i].0 + a[i].1);
        let (bo, be) = (b[j].0, b[j].0 + b[j].1);
        let (o, e) = (ao.max(bo), ae.min(be));
        if o < e {
            out.push((o, e - o));
        }
        if ae < be {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Read access to the data and omap tables (and the data log) for one object.
struct Src<'t, D, O> {
    data: &'t D,
    blocks: &'t dyn BlockSource,
    omap: &'t O,
    okey: &'t [u8],
    oid: &'t ObjectId,
}

impl<D: RTable, O: RTable> Src<'_, D, O> {
    fn corrupt_block(&self, inst: SnapId, blk: u64) -> RadosError {
        let which = if inst == NOSNAP {
            "head".to_string()
        } else {
            format!("clone {inst}")
        };
        RadosError::io(format!(
            "checksum mismatch in object {} ({which}) block {blk} (offset {})",
            Name(self.oid),
            blk.saturating_mul(BLOCK_SIZE)
        ))
    }

    /// One block of an instance's staged data (`None` = hole).
    fn block(&self, ds: &DataState, blk: u64) -> Result<Option<Bytes>> {
        if let Some(d) = ds.dirty.get(&blk) {
            return Ok(d.clone());
        }
        Ok(self.base_blocks(ds, blk, blk + 1)?.pop().map(|(_, d)| d))
    }

    /// Name the object and block on a failed log read.
    fn read_err<T>(&self, inst: SnapId, blk: u64, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            RadosError::io(format!(
                "{}: reading object {} instance {inst:#x} block {blk}",
                e.context,
                Name(self.oid)
            ))
        })
    }

    /// Present blocks of the base (ignoring the overlay) with index in
    /// `[start, end)`, ascending, each checked against its crc32c: one
    /// pread per extent, each block a slice of it.
    fn base_blocks(&self, ds: &DataState, start: u64, end: u64) -> Result<Vec<(u64, Bytes)>> {
        let mut out = Vec::new();
        let Base::Inst(inst) = ds.base else {
            return Ok(out);
        };
        let bend = end.min(ds.limit);
        if start >= bend {
            return Ok(out);
        }
        let ikey = codec::inst_key(self.okey, inst);
        let ents = extent::overlapping(self.data, &ikey, start, bend).map_err(|e| {
            RadosError::io(format!(
                "{}: object {} instance {inst:#x} blocks {start}..{bend}",
                e.context,
                Name(self.oid)
            ))
        })?;
        for (s, p) in ents {
            let (from, to) = (start.max(s) - s, bend.min(s + p.blocks()) - s);
            if from >= to {
                continue;
            }
            let part = p.slice(from, to);
            let run = Bytes::from(
                self.read_err(
                    inst,
                    s + from,
                    self.blocks
                        .read_at(part.seg, part.off, part.bytes() as usize),
                )?,
            );
            for i in 0..part.blocks() {
                let blk = s + from + i;
                let o = (i * BLOCK_SIZE) as usize;
                let d = run.slice(o..o + part.block_len(i));
                if codec::block_crc(blk, &d) != part.crcs[i as usize] {
                    return Err(self.corrupt_block(inst, blk));
                }
                out.push((blk, d));
            }
        }
        Ok(out)
    }

    /// Read bytes `[off, end)` of the staged data into `buf` (zeroed, as
    /// long as the range), every block checked. Without an overlay the
    /// log is read straight into `buf` (no copy for whole blocks).
    fn read_into(&self, ds: &DataState, off: u64, end: u64, buf: &mut [u8]) -> Result<()> {
        let (b0, b1) = (off / BLOCK_SIZE, end.div_ceil(BLOCK_SIZE));
        let inst = match ds.base {
            Base::Inst(i) if ds.dirty.is_empty() => i,
            _ => {
                for (blk, d) in self.blocks(ds, b0, b1)? {
                    copy_block_into(buf, off, end, blk, &d);
                }
                return Ok(());
            }
        };
        let bend = b1.min(ds.limit);
        if b0 >= bend {
            return Ok(());
        }
        let ikey = codec::inst_key(self.okey, inst);
        let ents = extent::overlapping(self.data, &ikey, b0, bend).map_err(|e| {
            RadosError::io(format!(
                "{}: object {} instance {inst:#x} blocks {b0}..{bend}",
                e.context,
                Name(self.oid)
            ))
        })?;
        let mut tmp = Vec::new();
        for (s, p) in ents {
            let (from, to) = (b0.max(s) - s, bend.min(s + p.blocks()) - s);
            if from >= to {
                continue;
            }
            let part = p.slice(from, to);
            let first = s + from;
            let (ps, pe) = (first * BLOCK_SIZE, first * BLOCK_SIZE + part.bytes());
            let inside = ps >= off && pe <= end;
            let dst: &mut [u8] = if inside {
                &mut buf[(ps - off) as usize..(pe - off) as usize]
            } else {
                tmp.resize(part.bytes() as usize, 0);
                &mut tmp
            };
            self.read_err(inst, first, self.blocks.read_into(part.seg, part.off, dst))?;
            for i in 0..part.blocks() {
                let o = (i * BLOCK_SIZE) as usize;
                if codec::block_crc(first + i, &dst[o..o + part.block_len(i)])
                    != part.crcs[i as usize]
                {
                    return Err(self.corrupt_block(inst, first + i));
                }
            }
            if !inside {
                let (s, e) = (ps.max(off), pe.min(end));
                if s < e {
                    buf[(s - off) as usize..(e - off) as usize]
                        .copy_from_slice(&tmp[(s - ps) as usize..(e - ps) as usize]);
                }
            }
        }
        Ok(())
    }

    /// Present blocks with index in `[start, end)`, ascending, verified.
    fn blocks(&self, ds: &DataState, start: u64, end: u64) -> Result<Vec<(u64, Bytes)>> {
        let mut out: BTreeMap<u64, Bytes> = self
            .base_blocks(ds, start, end)?
            .into_iter()
            .filter(|(blk, _)| !ds.dirty.contains_key(blk))
            .collect();
        for (&blk, d) in ds.dirty.range(start..end) {
            if let Some(d) = d {
                out.insert(blk, d.clone());
            }
        }
        Ok(out.into_iter().filter(|(_, d)| !d.is_empty()).collect())
    }

    fn corrupt_omap(&self, key: &[u8]) -> RadosError {
        RadosError::io(format!(
            "checksum mismatch in omap of object {} (key {:?})",
            Name(self.oid),
            String::from_utf8_lossy(key)
        ))
    }

    fn omap_get(&self, os: &OmapState, key: &str) -> Result<Option<Bytes>> {
        if let Some(v) = os.dirty.get(key) {
            return Ok(v.clone());
        }
        let Base::Inst(inst) = os.base else {
            return Ok(None);
        };
        let k = codec::omap_key(&codec::inst_key(self.okey, inst), key);
        match self.omap.get(k.as_slice()).map_err(sio)? {
            None => Ok(None),
            Some(v) => {
                let d = codec::decode_omap_val(v.value())
                    .ok_or_else(|| self.corrupt_omap(key.as_bytes()))?;
                Ok(Some(Bytes::copy_from_slice(d)))
            }
        }
    }

    /// Entries with key > start_after and starting with prefix, at most max (0 = all).
    fn omap_list(
        &self,
        os: &OmapState,
        start_after: &str,
        prefix: &str,
        max: u64,
    ) -> Result<(BTreeMap<String, Bytes>, bool)> {
        let wanted = |k: &str| k > start_after && k.starts_with(prefix);
        let limit = if max == 0 { usize::MAX } else { max as usize };
        let mut out = BTreeMap::new();
        if let Base::Inst(inst) = os.base {
            let ikey = codec::inst_key(self.okey, inst);
            let from = if prefix > start_after {
                prefix
            } else {
                start_after
            };
            let lo = codec::omap_key(&ikey, from);
            let hi = codec::prefix_end(&codec::omap_key(&ikey, prefix));
            let iter = match &hi {
                Some(hi) => self.omap.range::<&[u8]>(lo.as_slice()..hi.as_slice()),
                None => self.omap.range::<&[u8]>(lo.as_slice()..),
            }
            .map_err(sio)?;
            let mut taken = 0usize;
            for item in iter {
                let (k, v) = item.map_err(sio)?;
                let kb = k.value().get(ikey.len()..).unwrap_or_default();
                let key = std::str::from_utf8(kb).map_err(|_| self.corrupt_omap(kb))?;
                if !wanted(key) || os.dirty.contains_key(key) {
                    continue;
                }
                let val = codec::decode_omap_val(v.value()).ok_or_else(|| self.corrupt_omap(kb))?;
                out.insert(key.to_string(), Bytes::copy_from_slice(val));
                taken += 1;
                // One more than the limit tells whether the list was cut.
                if taken > limit {
                    break;
                }
            }
        }
        for (k, v) in &os.dirty {
            if let Some(v) = v {
                if wanted(k) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        let more = out.len() > limit;
        if more {
            out = out.into_iter().take(limit).collect();
        }
        Ok((out, more))
    }
}

/// A staged write, ready to be flushed into a write transaction.
pub struct Plan {
    okey: Vec<u8>,
    rec: ObjRecord,
    orig_head: Option<InstMeta>,
    hd: DataState,
    ho: OmapState,
    new_clone: Option<SnapId>,
}

/// Result of staging a request.
pub struct Staged {
    /// The reply to send if the request commits.
    pub reply: OpReply,
    /// What to write; `None` for reads and for writes that changed nothing.
    pub plan: Option<Plan>,
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.len() > MAX_NAME_LEN {
        return Err(RadosError::new(
            Errno::ENAMETOOLONG,
            format!("{what} longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

fn check_value(what: &str, v: &[u8]) -> Result<()> {
    if v.len() > MAX_VALUE_LEN {
        return Err(RadosError::new(
            Errno::E2BIG,
            format!("{what} larger than {MAX_VALUE_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Validate an `(off, len)` range and return its end.
fn range_end(oid: &ObjectId, off: u64, len: u64) -> Result<u64> {
    let end = off.checked_add(len).ok_or_else(|| {
        RadosError::invalid(format!(
            "offset {off} + length {len} overflows on object {}",
            Name(oid)
        ))
    })?;
    Ok(end)
}

fn check_size(oid: &ObjectId, end: u64) -> Result<()> {
    if end > MAX_OBJECT_SIZE {
        return Err(RadosError::new(
            Errno::EFBIG,
            format!(
                "object {} would grow to {end} bytes (max {MAX_OBJECT_SIZE})",
                Name(oid)
            ),
        ));
    }
    Ok(())
}

/// Load an object's record (`None` if it has no head and no clones).
pub fn load_record<M: RTable>(meta: &M, okey: &[u8], oid: &ObjectId) -> Result<Option<ObjRecord>> {
    match meta.get(okey).map_err(sio)? {
        None => Ok(None),
        Some(v) => ObjRecord::decode(v.value(), &Name(oid)).map(Some),
    }
}

/// Stage `req` against the given tables. `last_version` is the pool's last
/// handed-out version; a write that changes the object takes the next one,
/// and `mtime_ns` as its modification time (this clock's if `None`).
pub fn stage<M: RTable, D: RTable, O: RTable>(
    meta: &M,
    data: &D,
    blocks: &dyn BlockSource,
    omap: &O,
    req: &OpRequest,
    last_version: u64,
    mtime_ns: Option<u64>,
) -> Result<Staged> {
    let oid = &req.oid;
    if oid.name.is_empty() {
        return Err(RadosError::invalid("empty object name"));
    }
    check_name("object name", &oid.name)?;
    check_name("namespace", &oid.namespace)?;
    let is_write = req.is_write();
    if is_write {
        if req.snap != NOSNAP {
            return Err(RadosError::new(
                Errno::EROFS,
                format!("write to snapshot {} of object {}", req.snap, Name(oid)),
            ));
        }
        if !req.snapc.is_valid() {
            return Err(RadosError::invalid(format!(
                "invalid snap context {:?} for object {}",
                req.snapc,
                Name(oid)
            )));
        }
    }
    let okey = codec::obj_key(oid.pool, &oid.namespace, &oid.name);
    let src = Src {
        data,
        blocks,
        omap,
        okey: &okey,
        oid,
    };
    let loaded = load_record(meta, &okey, oid)?;
    let mut rec = loaded.unwrap_or_default();
    let orig_head = rec.head.clone();
    let mut hd = DataState::of(NOSNAP);
    let mut ho = OmapState::of(NOSNAP);
    let mut new_clone = None;

    // Reads at a snapshot see one fixed instance.
    let snap_view: Option<(Option<InstMeta>, DataState, OmapState)> = if req.snap != NOSNAP {
        Some(match resolve(&rec, req.snap) {
            Target::Head => (
                rec.head.clone(),
                DataState::of(NOSNAP),
                OmapState::of(NOSNAP),
            ),
            Target::Clone(i) => {
                let c = &rec.clones[i];
                (
                    Some(c.inst.clone()),
                    DataState::of(c.id),
                    OmapState::of(c.id),
                )
            }
            Target::Missing => (None, DataState::empty(), OmapState::empty()),
        })
    } else {
        None
    };

    // Clone-on-write: preserve the head before the first modification.
    if is_write && req.snapc.seq > rec.seq {
        if let Some(h) = &rec.head {
            let label: Vec<SnapId> = req
                .snapc
                .snaps
                .iter()
                .rev()
                .copied()
                .filter(|&s| s > rec.seq)
                .collect();
            if let Some(&id) = label.last() {
                rec.clones.push(CloneMeta {
                    id,
                    snaps: label,
                    overlap: if h.size > 0 {
                        vec![(0, h.size)]
                    } else {
                        vec![]
                    },
                    inst: h.clone(),
                });
                new_clone = Some(id);
            }
        }
        rec.seq = req.snapc.seq;
    }

    let enoent = || RadosError::not_found(format!("object {} does not exist", Name(oid)));
    let mut outputs = Vec::with_capacity(req.ops.len());
    for op in &req.ops {
        // The instance reads look at: the fixed snap view, or the staged head.
        let (vinst, vdata, vomap) = match &snap_view {
            Some((i, d, o)) => (i.as_ref(), d, o),
            None => (rec.head.as_ref(), &hd, &ho),
        };
        let out = match op {
            Op::AssertExists => {
                vinst.ok_or_else(enoent)?;
                OpOutput::None
            }
            Op::AssertVersion(v) => {
                let cur = vinst.map_or(0, |i| i.version);
                if cur < *v {
                    return Err(RadosError::new(
                        Errno::ERANGE,
                        format!(
                            "object {} version {cur} is older than asserted {v}",
                            Name(oid)
                        ),
                    ));
                }
                if cur > *v {
                    return Err(RadosError::new(
                        Errno::EOVERFLOW,
                        format!(
                            "object {} version {cur} is newer than asserted {v}",
                            Name(oid)
                        ),
                    ));
                }
                OpOutput::None
            }
            Op::Stat => {
                let i = vinst.ok_or_else(enoent)?;
                OpOutput::Stat(ObjectStat {
                    size: i.size,
                    mtime_ns: i.mtime_ns,
                    version: i.version,
                })
            }
            Op::Read { off, len } => {
                let i = vinst.ok_or_else(enoent)?;
                let (off, end) = read_range(oid, i.size, *off, *len)?;
                let mut buf = vec![0u8; (end - off) as usize];
                if end > off {
                    src.read_into(vdata, off, end, &mut buf)?;
                }
                OpOutput::Data(Bytes::from(buf))
            }
            Op::SparseRead { off, len } => {
                let i = vinst.ok_or_else(enoent)?;
                let (off, end) = read_range(oid, i.size, *off, *len)?;
                let mut extents: Vec<(u64, u64)> = Vec::new();
                let mut buf = Vec::new();
                if end > off {
                    let (b0, b1) = (off / BLOCK_SIZE, end.div_ceil(BLOCK_SIZE));
                    for (blk, d) in src.blocks(vdata, b0, b1)? {
                        let bs = blk * BLOCK_SIZE;
                        let s = bs.max(off);
                        let e = (bs + d.len() as u64).min(end);
                        if s >= e {
                            continue;
                        }
                        buf.extend_from_slice(&d[(s - bs) as usize..(e - bs) as usize]);
                        match extents.last_mut() {
                            Some((o, l)) if *o + *l == s => *l += e - s,
                            _ => extents.push((s, e - s)),
                        }
                    }
                }
                OpOutput::Sparse(extents, Bytes::from(buf))
            }
            Op::GetXattr(name) => {
                let i = vinst.ok_or_else(enoent)?;
                let v = i.xattrs.get(name).ok_or_else(|| {
                    RadosError::new(
                        Errno::ENODATA,
                        format!("no xattr {name:?} on object {}", Name(oid)),
                    )
                })?;
                OpOutput::Data(v.clone())
            }
            Op::GetXattrs => OpOutput::Xattrs(vinst.ok_or_else(enoent)?.xattrs.clone()),
            Op::OmapGetVals {
                start_after,
                prefix,
                max,
            } => {
                vinst.ok_or_else(enoent)?;
                let (m, more) = src.omap_list(vomap, start_after, prefix, *max)?;
                OpOutput::Omap(m, more)
            }
            Op::OmapGetValsByKeys(keys) => {
                vinst.ok_or_else(enoent)?;
                let mut m = BTreeMap::new();
                for k in keys {
                    if let Some(v) = src.omap_get(vomap, k)? {
                        m.insert(k.clone(), v);
                    }
                }
                OpOutput::Omap(m, false)
            }
            Op::ListSnaps => {
                if rec.head.is_none() && rec.clones.is_empty() {
                    return Err(enoent());
                }
                let mut clones: Vec<CloneInfo> = rec
                    .clones
                    .iter()
                    .map(|c| CloneInfo {
                        clone: c.id,
                        snaps: c.snaps.clone(),
                        size: c.inst.size,
                        overlap: c.overlap.clone(),
                    })
                    .collect();
                if let Some(h) = &rec.head {
                    clones.push(CloneInfo {
                        clone: NOSNAP,
                        snaps: vec![],
                        size: h.size,
                        overlap: vec![],
                    });
                }
                OpOutput::Snaps(SnapSet {
                    seq: rec.seq,
                    clones,
                })
            }

            // ---- writes: always on the staged head ----
            Op::Create { exclusive } => {
                if rec.head.is_some() {
                    if *exclusive {
                        return Err(RadosError::new(
                            Errno::EEXIST,
                            format!("object {} already exists", Name(oid)),
                        ));
                    }
                } else {
                    create_head(&mut rec, &mut hd, &mut ho);
                }
                OpOutput::None
            }
            Op::Write { off, data } => {
                write(&src, &mut rec, &mut hd, &mut ho, *off, data)?;
                OpOutput::None
            }
            Op::WriteFull(data) => {
                check_size(oid, data.len() as u64)?;
                if rec.head.is_none() {
                    create_head(&mut rec, &mut hd, &mut ho);
                }
                hd = DataState::empty();
                if let Some(h) = rec.head.as_mut() {
                    h.size = 0;
                }
                newest_overlap_sub(&mut rec, 0, u64::MAX);
                write(&src, &mut rec, &mut hd, &mut ho, 0, data)?;
                OpOutput::None
            }
            Op::Zero { off, len } => {
                let end = range_end(oid, *off, *len)?;
                if let Some(size) = rec.head.as_ref().map(|h| h.size) {
                    let end = end.min(size);
                    if *off < end {
                        zero(&src, &mut hd, *off, end)?;
                        newest_overlap_sub(&mut rec, *off, end - *off);
                    }
                }
                OpOutput::None
            }
            Op::Truncate(size) => {
                check_size(oid, *size)?;
                if rec.head.is_none() {
                    create_head(&mut rec, &mut hd, &mut ho);
                }
                truncate(&src, &mut rec, &mut hd, *size)?;
                OpOutput::None
            }
            Op::Remove => {
                if rec.head.is_none() {
                    return Err(enoent());
                }
                remove_head(&mut rec, &mut hd, &mut ho);
                OpOutput::None
            }
            Op::SetXattr(name, v) => {
                check_name("xattr name", name)?;
                check_value("xattr value", v)?;
                if rec.head.is_none() {
                    create_head(&mut rec, &mut hd, &mut ho);
                }
                if let Some(h) = rec.head.as_mut() {
                    h.xattrs.insert(name.clone(), v.clone());
                }
                OpOutput::None
            }
            Op::RmXattr(name) => {
                let h = rec.head.as_mut().ok_or_else(enoent)?;
                if h.xattrs.remove(name).is_none() {
                    return Err(RadosError::new(
                        Errno::ENODATA,
                        format!("no xattr {name:?} on object {}", Name(oid)),
                    ));
                }
                OpOutput::None
            }
            Op::OmapSetVals(kv) => {
                for (k, v) in kv {
                    check_name("omap key", k)?;
                    check_value("omap value", v)?;
                }
                if rec.head.is_none() {
                    create_head(&mut rec, &mut hd, &mut ho);
                }
                for (k, v) in kv {
                    ho.dirty.insert(k.clone(), Some(v.clone()));
                }
                OpOutput::None
            }
            Op::OmapRmKeys(keys) => {
                rec.head.as_ref().ok_or_else(enoent)?;
                for k in keys {
                    ho.dirty.insert(k.clone(), None);
                }
                OpOutput::None
            }
            Op::OmapClear => {
                rec.head.as_ref().ok_or_else(enoent)?;
                ho = OmapState::empty();
                OpOutput::None
            }
            Op::Rollback(snap) => {
                match resolve(&rec, *snap) {
                    Target::Head => {}
                    Target::Missing => {
                        if rec.head.is_some() {
                            remove_head(&mut rec, &mut hd, &mut ho);
                        }
                    }
                    Target::Clone(i) => {
                        let c = &rec.clones[i];
                        // The clone made by this very request is the
                        // pre-request head, still stored as the head.
                        let inst = if Some(c.id) == new_clone {
                            NOSNAP
                        } else {
                            c.id
                        };
                        rec.head = Some(c.inst.clone());
                        hd = DataState::of(inst);
                        ho = OmapState::of(inst);
                        newest_overlap_sub(&mut rec, 0, u64::MAX);
                    }
                }
                OpOutput::None
            }
        };
        outputs.push(out);
    }

    if !is_write {
        let version = rec.head.as_ref().map_or(0, |h| h.version);
        return Ok(Staged {
            reply: OpReply { outputs, version },
            plan: None,
        });
    }
    if orig_head.is_none() && rec.head.is_none() && new_clone.is_none() {
        // Nothing existed and nothing was created (e.g. Zero on a missing
        // object): no state change, no version.
        return Ok(Staged {
            reply: OpReply {
                outputs,
                version: 0,
            },
            plan: None,
        });
    }
    let version = last_version + 1;
    if let Some(h) = rec.head.as_mut() {
        h.version = version;
        h.mtime_ns = mtime_ns.unwrap_or_else(now_ns);
    }
    Ok(Staged {
        reply: OpReply { outputs, version },
        plan: Some(Plan {
            okey,
            rec,
            orig_head,
            hd,
            ho,
            new_clone,
        }),
    })
}

/// Clamp a read to the object and the read cap; returns (off, end).
fn read_range(oid: &ObjectId, size: u64, off: u64, len: u64) -> Result<(u64, u64)> {
    let end = if len == 0 {
        size
    } else {
        range_end(oid, off, len)?.min(size)
    };
    let off = off.min(end);
    if end - off > MAX_READ_LEN {
        return Err(RadosError::invalid(format!(
            "read of {} bytes from object {} exceeds {MAX_READ_LEN}",
            end - off,
            Name(oid)
        )));
    }
    Ok((off, end))
}

/// Copy the part of block `blk` (data `d`) inside `[off, end)` into `buf`
/// (which holds `[off, end)`).
fn copy_block_into(buf: &mut [u8], off: u64, end: u64, blk: u64, d: &[u8]) {
    let bs = blk * BLOCK_SIZE;
    let s = bs.max(off);
    let e = (bs + d.len() as u64).min(end);
    if s < e {
        buf[(s - off) as usize..(e - off) as usize]
            .copy_from_slice(&d[(s - bs) as usize..(e - bs) as usize]);
    }
}

fn create_head(rec: &mut ObjRecord, hd: &mut DataState, ho: &mut OmapState) {
    rec.head = Some(InstMeta::default());
    // Whatever the table holds under the head key is stale (nothing, as a
    // removed head's blocks are deleted), but be explicit.
    *hd = DataState::empty();
    *ho = OmapState::empty();
}

fn remove_head(rec: &mut ObjRecord, hd: &mut DataState, ho: &mut OmapState) {
    rec.head = None;
    *hd = DataState::empty();
    *ho = OmapState::empty();
    newest_overlap_sub(rec, 0, u64::MAX);
}

/// Most ranges a clone's overlap list keeps. The list is a hint (a diff
/// reports its complement as changed), so dropping a range only makes
/// diffs report more; without a bound, random small writes after a
/// snapshot split it into up to one range per 4 KiB block, and every write
/// to the object re-encodes its record with the whole list.
pub const MAX_OVERLAP_RANGES: usize = 64;

/// A head change in `[off, off+len)`: the newest clone no longer matches there.
fn newest_overlap_sub(rec: &mut ObjRecord, off: u64, len: u64) {
    if let Some(c) = rec.clones.last_mut() {
        subtract(&mut c.overlap, off, len);
        cap_overlap(&mut c.overlap, MAX_OVERLAP_RANGES);
    }
}

/// Drop the shortest ranges of a sorted extent list until at most `max`
/// remain (what is left is still a subset of the unchanged bytes).
pub fn cap_overlap(ov: &mut Vec<(u64, u64)>, max: usize) {
    while ov.len() > max {
        let shortest = ov
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.1)
            .map(|(i, _)| i);
        match shortest {
            Some(i) => {
                ov.remove(i);
            }
            None => break,
        }
    }
}

fn write<D: RTable, O: RTable>(
    src: &Src<'_, D, O>,
    rec: &mut ObjRecord,
    hd: &mut DataState,
    ho: &mut OmapState,
    off: u64,
    data: &Bytes,
) -> Result<()> {
    let end = range_end(src.oid, off, data.len() as u64)?;
    check_size(src.oid, end)?;
    if rec.head.is_none() {
        create_head(rec, hd, ho);
    }
    let mut pos = off;
    while pos < end {
        let blk = pos / BLOCK_SIZE;
        let in_off = (pos - blk * BLOCK_SIZE) as usize;
        let n = ((BLOCK_SIZE as usize) - in_off).min((end - pos) as usize);
        let chunk = &data[(pos - off) as usize..(pos - off) as usize + n];
        if n == BLOCK_SIZE as usize {
            let s = (pos - off) as usize;
            hd.dirty.insert(blk, Some(data.slice(s..s + n)));
        } else {
            let mut b = src.block(hd, blk)?.map(|b| b.to_vec()).unwrap_or_default();
            if b.len() < in_off + n {
                b.resize(in_off + n, 0);
            }
            b[in_off..in_off + n].copy_from_slice(chunk);
            hd.dirty.insert(blk, Some(Bytes::from(b)));
        }
        pos += n as u64;
    }
    if let Some(h) = rec.head.as_mut() {
        h.size = h.size.max(end);
    }
    newest_overlap_sub(rec, off, end - off);
    Ok(())
}

/// Zero `[off, end)`, which lies inside the object.
fn zero<D: RTable, O: RTable>(
    src: &Src<'_, D, O>,
    hd: &mut DataState,
    off: u64,
    end: u64,
) -> Result<()> {
    let mut pos = off;
    while pos < end {
        let blk = pos / BLOCK_SIZE;
        let bs = blk * BLOCK_SIZE;
        let in_off = (pos - bs) as usize;
        let in_end = ((end - bs).min(BLOCK_SIZE)) as usize;
        if in_off == 0 && in_end == BLOCK_SIZE as usize {
            hd.dirty.insert(blk, None);
        } else if let Some(b) = src.block(hd, blk)? {
            let mut b = b.to_vec();
            if in_end >= b.len() {
                // Zeroing to the end of the stored data: shorten it.
                b.truncate(in_off.min(b.len()));
            } else if in_off < b.len() {
                b[in_off..in_end].fill(0);
            }
            hd.dirty
                .insert(blk, (!b.is_empty()).then(|| Bytes::from(b)));
        }
        pos = bs + in_end as u64;
    }
    Ok(())
}

fn truncate<D: RTable, O: RTable>(
    src: &Src<'_, D, O>,
    rec: &mut ObjRecord,
    hd: &mut DataState,
    size: u64,
) -> Result<()> {
    let cur = rec.head.as_ref().map_or(0, |h| h.size);
    if size < cur {
        let keep = size.div_ceil(BLOCK_SIZE);
        if !size.is_multiple_of(BLOCK_SIZE) {
            let blk = size / BLOCK_SIZE;
            if let Some(mut b) = src.block(hd, blk)? {
                b.truncate((size - blk * BLOCK_SIZE) as usize);
                hd.dirty.insert(blk, (!b.is_empty()).then_some(b));
            }
        }
        hd.limit = hd.limit.min(keep);
        let stale: Vec<u64> = hd.dirty.range(keep..).map(|(k, _)| *k).collect();
        for k in stale {
            hd.dirty.remove(&k);
        }
        newest_overlap_sub(rec, size, u64::MAX);
    }
    if let Some(h) = rec.head.as_mut() {
        h.size = size;
    }
    Ok(())
}

// ---------------------------------------------------------------- flushing

/// Storage errors while flushing abort the whole batch (they are never a
/// request's own failure, which staging has already ruled out).
pub type FlushResult<T> = Result<T>;

/// Delete every key under `prefix` (from `from` on, if given); returns the
/// total value length removed minus `per_value_overhead` per entry.
fn delete_prefix(
    t: &mut WTables<'_>,
    which: Tbl,
    prefix: &[u8],
    from: Option<&[u8]>,
    per_value_overhead: u64,
) -> FlushResult<(u64, u64)> {
    let hi = codec::prefix_end(prefix);
    let (bytes, n) = t.del_range(which, from.unwrap_or(prefix), hi.as_deref())?;
    Ok((bytes.saturating_sub(n * per_value_overhead), n))
}

/// Copy every entry under `from_prefix` (below `below`, if given) to the
/// same suffix under `to_prefix` (omap: values copied raw; data goes
/// through [`copy_extents`]).
fn copy_prefix(
    t: &mut WTables<'_>,
    which: Tbl,
    from_prefix: &[u8],
    to_prefix: &[u8],
    below: Option<&[u8]>,
    per_value_overhead: u64,
) -> FlushResult<(u64, u64)> {
    let hi = match below {
        Some(b) => Some(b.to_vec()),
        None => codec::prefix_end(from_prefix),
    };
    let mut items = Vec::new();
    {
        let table = t.table(which);
        let iter = match &hi {
            Some(hi) => table.range::<&[u8]>(from_prefix..hi.as_slice()),
            None => table.range::<&[u8]>(from_prefix..),
        }
        .map_err(sio)?;
        for item in iter {
            let (k, v) = item.map_err(sio)?;
            let suffix = k.value().get(from_prefix.len()..).unwrap_or_default();
            let mut nk = to_prefix.to_vec();
            nk.extend_from_slice(suffix);
            items.push((nk, v.value().to_vec()));
        }
    }
    let (mut bytes, mut n) = (0u64, 0u64);
    for (k, v) in items {
        bytes += (v.len() as u64).saturating_sub(per_value_overhead);
        n += 1;
        t.put(which, &k, &v)?;
    }
    Ok((bytes, n))
}

/// Copy the extents of instance `from` (blocks below `limit`) to the
/// empty instance `to` by reference: `to`'s index entries point at the
/// same bytes of the data log (a snapshot's clone or a rollback costs one
/// index entry per extent, not a copy of the object). Every instance of an
/// object keeps each block at its block index, which is what lets
/// compaction find all of a record's users from its redo (see
/// `store::compact_step`); each entry counts in its segment's live bytes,
/// so a segment is deleted only once no instance points into it. Returns
/// the data bytes the new entries cover.
fn copy_extents(t: &mut WTables<'_>, from: &[u8], to: &[u8], limit: u64) -> FlushResult<u64> {
    let ents = extent::overlapping(t.table(Tbl::Data), from, 0, limit)?;
    let mut bytes = 0u64;
    for (s, p) in ents {
        let p = if s + p.blocks() > limit {
            p.slice(0, limit - s)
        } else {
            p
        };
        bytes += p.bytes();
        t.put(Tbl::Data, &codec::block_key(to, s), &p.encode())?;
    }
    Ok(bytes)
}

/// Write the overlay onto the head `ikey`: runs of adjacent present blocks
/// become one extent each (up to [`extent::MAX_EXTENT_BLOCKS`], a short
/// block ends a run), deleted blocks are punched. Returns (bytes added,
/// bytes removed).
fn flush_dirty(
    t: &mut WTables<'_>,
    ikey: &[u8],
    dirty: BTreeMap<u64, Option<Bytes>>,
) -> FlushResult<(u64, u64)> {
    let (mut added, mut removed) = (0u64, 0u64);
    let mut run: Vec<Bytes> = Vec::new();
    let mut run_start = 0u64;
    let mut holes: Option<(u64, u64)> = None;
    let flush_run = |t: &mut WTables<'_>, start: u64, run: &mut Vec<Bytes>| -> Result<(u64, u64)> {
        if run.is_empty() {
            return Ok((0, 0));
        }
        let n = run.len() as u64;
        let (put, old) = t.put_blocks(&codec::block_key(ikey, start), start, run)?;
        let gone = t.trim_after_put(ikey, start, start + n, old)?;
        run.clear();
        Ok((put, gone))
    };
    for (blk, d) in dirty {
        match d.filter(|d| !d.is_empty()) {
            Some(d) => {
                if let Some((h0, h1)) = holes.take() {
                    removed += t.punch(ikey, h0, h1)?;
                }
                let joins = !run.is_empty()
                    && run_start + run.len() as u64 == blk
                    && run.len() < extent::MAX_EXTENT_BLOCKS as usize
                    && run.last().is_some_and(|b| b.len() as u64 == BLOCK_SIZE);
                if !joins {
                    let (a, r) = flush_run(t, run_start, &mut run)?;
                    added += a;
                    removed += r;
                    run_start = blk;
                }
                run.push(d);
            }
            None => {
                let (a, r) = flush_run(t, run_start, &mut run)?;
                added += a;
                removed += r;
                holes = match holes {
                    Some((h0, h1)) if h1 == blk => Some((h0, blk + 1)),
                    Some((h0, h1)) => {
                        removed += t.punch(ikey, h0, h1)?;
                        Some((blk, blk + 1))
                    }
                    None => Some((blk, blk + 1)),
                };
            }
        }
    }
    let (a, r) = flush_run(t, run_start, &mut run)?;
    added += a;
    removed += r;
    if let Some((h0, h1)) = holes {
        removed += t.punch(ikey, h0, h1)?;
    }
    Ok((added, removed))
}

/// Delta of pool counters caused by a flush.
#[derive(Default, Debug, Clone, Copy)]
pub struct Delta {
    /// Change in object count (heads + clones).
    pub objects: i64,
    /// Change in stored data bytes.
    pub bytes: i64,
}

/// Flush a staged plan into the write transaction.
pub fn flush(t: &mut WTables<'_>, mut plan: Plan) -> FlushResult<Delta> {
    let okey = &plan.okey;
    let head_key = codec::inst_key(okey, NOSNAP);
    let orig_stored = plan.orig_head.as_ref().map_or(0, |h| h.stored);
    let orig_omap = plan.orig_head.as_ref().map_or(0, |h| h.omap_count);
    let mut delta = Delta::default();

    // 1. Preserve the pre-request head as the new clone.
    if let Some(id) = plan.new_clone {
        let ckey = codec::inst_key(okey, id);
        if orig_stored > 0 {
            copy_extents(t, &head_key, &ckey, u64::MAX)?;
        }
        if orig_omap > 0 {
            copy_prefix(t, Tbl::Omap, &head_key, &ckey, None, 0)?;
        }
        if let Some(c) = plan.rec.clones.iter_mut().find(|c| c.id == id) {
            c.inst.stored = orig_stored;
            c.inst.omap_count = orig_omap;
        }
        delta.objects += 1;
        delta.bytes += orig_stored as i64;
    }

    // 2. The head's data: base first, then the dirty overlay.
    let mut stored = orig_stored;
    let mut omap_count = orig_omap;
    match plan.hd.base {
        Base::Inst(NOSNAP) => {
            if plan.hd.limit != u64::MAX && stored > 0 {
                let b = t.punch(&head_key, plan.hd.limit, u64::MAX)?;
                stored -= b.min(stored);
            }
        }
        Base::Empty => {
            if stored > 0 {
                delete_prefix(t, Tbl::Data, &head_key, None, 0)?;
                stored = 0;
            }
        }
        Base::Inst(x) => {
            if stored > 0 {
                delete_prefix(t, Tbl::Data, &head_key, None, 0)?;
            }
            let xkey = codec::inst_key(okey, x);
            stored = copy_extents(t, &xkey, &head_key, plan.hd.limit)?;
        }
    }
    let (added, removed) = flush_dirty(t, &head_key, std::mem::take(&mut plan.hd.dirty))?;
    stored = (stored + added).saturating_sub(removed);

    // 3. The head's omap, the same way.
    match plan.ho.base {
        Base::Inst(NOSNAP) => {}
        Base::Empty => {
            if omap_count > 0 {
                delete_prefix(t, Tbl::Omap, &head_key, None, 0)?;
                omap_count = 0;
            }
        }
        Base::Inst(x) => {
            if omap_count > 0 {
                delete_prefix(t, Tbl::Omap, &head_key, None, 0)?;
            }
            let xkey = codec::inst_key(okey, x);
            let (_, n) = copy_prefix(t, Tbl::Omap, &xkey, &head_key, None, 0)?;
            omap_count = n;
        }
    }
    for (k, v) in std::mem::take(&mut plan.ho.dirty) {
        let key = codec::omap_key(&head_key, &k);
        let old = match v {
            Some(v) => {
                omap_count += 1;
                t.put(Tbl::Omap, &key, &codec::encode_omap_val(&v))?
            }
            None => t.del(Tbl::Omap, &key)?,
        };
        if old.is_some() {
            omap_count = omap_count.saturating_sub(1);
        }
    }

    // 4. Counters and the record.
    match (&plan.orig_head, &plan.rec.head) {
        (None, Some(_)) => delta.objects += 1,
        (Some(_), None) => delta.objects -= 1,
        _ => {}
    }
    delta.bytes += stored as i64 - orig_stored as i64;
    if let Some(h) = plan.rec.head.as_mut() {
        h.stored = stored;
        h.omap_count = omap_count;
    }
    if plan.rec.head.is_none() && plan.rec.clones.is_empty() {
        t.del(Tbl::Meta, okey)?;
    } else {
        t.put(Tbl::Meta, okey, &plan.rec.encode())?;
    }
    if plan.new_clone.is_some() {
        t.put(Tbl::Snapped, okey, &[])?;
    }
    Ok(delta)
}

/// Drop `removed` snaps from the labels of one object's clones, deleting
/// clones left with no snap. Returns (bytes freed, clones deleted).
pub fn trim_object(
    t: &mut WTables<'_>,
    okey: &[u8],
    rec: &mut ObjRecord,
    removed: &std::collections::BTreeSet<SnapId>,
) -> FlushResult<(u64, u64)> {
    let (mut freed, mut dropped) = (0u64, 0u64);
    let mut i = 0;
    while i < rec.clones.len() {
        rec.clones[i].snaps.retain(|s| !removed.contains(s));
        if !rec.clones[i].snaps.is_empty() {
            i += 1;
            continue;
        }
        let c = rec.clones.remove(i);
        let ckey = codec::inst_key(okey, c.id);
        if c.inst.stored > 0 {
            delete_prefix(t, Tbl::Data, &ckey, None, 0)?;
        }
        if c.inst.omap_count > 0 {
            delete_prefix(t, Tbl::Omap, &ckey, None, 0)?;
        }
        freed += c.inst.stored;
        dropped += 1;
        // The older clone matched the dropped one on its overlap, and the
        // dropped one matched the next newer on its own: both must hold.
        if i > 0 {
            let older = &mut rec.clones[i - 1];
            older.overlap = intersect(&older.overlap, &c.overlap);
            cap_overlap(&mut older.overlap, MAX_OVERLAP_RANGES);
        }
    }
    if rec.head.is_none() && rec.clones.is_empty() {
        t.del(Tbl::Meta, okey)?;
    } else {
        t.put(Tbl::Meta, okey, &rec.encode())?;
    }
    if rec.clones.is_empty() {
        t.del(Tbl::Snapped, okey)?;
    }
    Ok((freed, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_math() {
        let mut v = vec![(0, 10), (20, 10)];
        subtract(&mut v, 5, 20);
        assert_eq!(v, vec![(0, 5), (25, 5)]);
        subtract(&mut v, 0, u64::MAX);
        assert!(v.is_empty());
        assert_eq!(
            intersect(&[(0, 10), (20, 10)], &[(5, 20)]),
            vec![(5, 5), (20, 5)]
        );
        let mut v = vec![(0, 4), (10, 1), (20, 3), (30, 2)];
        cap_overlap(&mut v, 2);
        assert_eq!(v, vec![(0, 4), (20, 3)]);
        cap_overlap(&mut v, 5);
        assert_eq!(v, vec![(0, 4), (20, 3)]);
    }

    #[test]
    fn resolution() {
        let mut rec = ObjRecord {
            seq: 5,
            head: Some(InstMeta::default()),
            clones: vec![
                CloneMeta {
                    id: 2,
                    snaps: vec![1, 2],
                    ..Default::default()
                },
                CloneMeta {
                    id: 5,
                    snaps: vec![4, 5],
                    ..Default::default()
                },
            ],
        };
        assert_eq!(resolve(&rec, 1), Target::Clone(0));
        assert_eq!(resolve(&rec, 2), Target::Clone(0));
        assert_eq!(resolve(&rec, 3), Target::Missing);
        assert_eq!(resolve(&rec, 4), Target::Clone(1));
        assert_eq!(resolve(&rec, 6), Target::Head);
        rec.head = None;
        assert_eq!(resolve(&rec, 6), Target::Missing);
    }
}
