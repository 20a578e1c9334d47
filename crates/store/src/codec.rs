//! On-disk encodings: order-preserving keys and checksummed records.
//!
//! Architecture invariant: nothing read from disk is trusted. Every decoder
//! here is bounds-checked and every record carries a crc32c, so a corrupted
//! database yields an `EIO` error naming what was being read, never a panic
//! and never wrong data.

use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_rados::{PoolId, RadosError, SnapId};

/// Data block size: the unit of checksumming and of sparseness.
pub const BLOCK_SIZE: u64 = 4096;
/// Format tag of object records (bumped on incompatible changes).
const REC_FORMAT: u8 = 1;
/// Format tag of pool counter records.
const POOL_FORMAT: u8 = 1;

// ---------------------------------------------------------------- keys

/// Pool ids are signed; flipping the sign bit makes big-endian bytes sort
/// like the numbers.
pub fn pool_prefix(pool: PoolId) -> [u8; 8] {
    ((pool as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`pool_prefix`].
pub fn parse_pool_prefix(key: &[u8]) -> Option<PoolId> {
    let b: [u8; 8] = key.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as PoolId)
}

/// Append `s` escaped so that the encoding is self-delimiting and sorts like
/// the raw bytes: 0x00 becomes 0x00 0xFF, the terminator is 0x00 0x01.
fn push_escaped(out: &mut Vec<u8>, s: &[u8]) {
    // Whole runs between NULs at once: names rarely hold a NUL, and a
    // byte-by-byte push was ~1/14 of the store's instructions per 4 KiB read.
    let mut runs = s.split(|&b| b == 0);
    if let Some(first) = runs.next() {
        out.extend_from_slice(first);
    }
    for run in runs {
        out.extend_from_slice(&[0, 0xFF]);
        out.extend_from_slice(run);
    }
    out.extend_from_slice(&[0, 1]);
}

/// Parse one escaped component; returns it and the rest.
fn take_escaped(buf: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == 0 {
            match buf.get(i + 1)? {
                0xFF => out.push(0),
                1 => return Some((out, &buf[i + 2..])),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(buf[i]);
            i += 1;
        }
    }
    None
}

/// Key prefix of a namespace inside a pool.
pub fn ns_prefix(pool: PoolId, ns: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + ns.len());
    k.extend_from_slice(&pool_prefix(pool));
    push_escaped(&mut k, ns.as_bytes());
    k
}

/// Key of a logical object (all its instances share it as a prefix).
pub fn obj_key(pool: PoolId, ns: &str, name: &str) -> Vec<u8> {
    // Sized for both components and their terminators up front: built for
    // every op, the name's append would otherwise reallocate (a malloc,
    // copy and free per write on the OSD's store writer).
    let mut k = Vec::with_capacity(12 + ns.len() + name.len());
    k.extend_from_slice(&pool_prefix(pool));
    push_escaped(&mut k, ns.as_bytes());
    push_escaped(&mut k, name.as_bytes());
    k
}

/// Decode an object key back into (namespace, name).
pub fn parse_obj_key(key: &[u8]) -> Option<(String, String)> {
    let rest = key.get(8..)?;
    let (ns, rest) = take_escaped(rest)?;
    let (name, rest) = take_escaped(rest)?;
    if !rest.is_empty() {
        return None;
    }
    Some((String::from_utf8(ns).ok()?, String::from_utf8(name).ok()?))
}

/// Key prefix of one instance (head = NOSNAP, or a clone id) of an object.
pub fn inst_key(okey: &[u8], inst: SnapId) -> Vec<u8> {
    let mut k = Vec::with_capacity(okey.len() + 16);
    k.extend_from_slice(okey);
    k.extend_from_slice(&inst.to_be_bytes());
    k
}

/// Key of one data block of an instance.
pub fn block_key(ikey: &[u8], blk: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(ikey.len() + 8);
    k.extend_from_slice(ikey);
    k.extend_from_slice(&blk.to_be_bytes());
    k
}

/// Block index from a block key of the instance whose key has `ikey_len` bytes.
pub fn block_index(key: &[u8], ikey_len: usize) -> Option<u64> {
    let b: [u8; 8] = key.get(ikey_len..)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Key of one omap entry of an instance.
pub fn omap_key(ikey: &[u8], k: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(ikey.len() + k.len());
    out.extend_from_slice(ikey);
    out.extend_from_slice(k.as_bytes());
    out
}

/// The smallest key greater than every key starting with `prefix`
/// (`None` if there is none, i.e. the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// ---------------------------------------------------------------- checksummed values

/// crc32c of a data block, seeded with its index so that a block stored
/// under the wrong index (a misdirected write) is detected too.
pub fn block_crc(blk: u64, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&blk.to_be_bytes()), data)
}

/// crc32c of `a` followed by a full 4 KiB block, from crc32c(a) and the
/// block's own crc32c (the shared operator in `quarry_common::blockcrc`),
/// so a large write's payload is hashed once for both its block
/// checksums and its log record's checksum.
pub fn crc_append_block(crc_a: u32, crc_block: u32) -> u32 {
    const _: () = assert!(BLOCK_SIZE as usize == quarry_common::blockcrc::BLOCK);
    quarry_common::blockcrc::append_block(crc_a, crc_block)
}

/// [`block_crc`] of a full block from its plain crc32c (see [`crc_append_block`]).
pub fn block_crc_from_raw(blk: u64, raw: u32) -> u32 {
    crc_append_block(crc32c::crc32c(&blk.to_be_bytes()), raw)
}

/// Encode a block value: crc32c (LE) then the data.
#[cfg(test)]
pub fn encode_block_into(out: &mut [u8], blk: u64, data: &[u8]) {
    out[..4].copy_from_slice(&block_crc(blk, data).to_le_bytes());
    out[4..].copy_from_slice(data);
}

/// Verify a block value and return its data; `None` on mismatch.
#[cfg(test)]
pub fn decode_block(blk: u64, val: &[u8]) -> Option<&[u8]> {
    if val.len() < 4 || val.len() > 4 + BLOCK_SIZE as usize {
        return None;
    }
    let crc = u32::from_le_bytes(val[..4].try_into().ok()?);
    let data = &val[4..];
    (block_crc(blk, data) == crc).then_some(data)
}

/// Encode an omap value: crc32c (LE) of the value then the value.
pub fn encode_omap_val(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + v.len());
    out.extend_from_slice(&crc32c::crc32c(v).to_le_bytes());
    out.extend_from_slice(v);
    out
}

/// Verify an omap value; `None` on mismatch.
pub fn decode_omap_val(val: &[u8]) -> Option<&[u8]> {
    let crc = u32::from_le_bytes(val.get(..4)?.try_into().ok()?);
    let v = &val[4..];
    (crc32c::crc32c(v) == crc).then_some(v)
}

// ---------------------------------------------------------------- records

/// Metadata of one instance (head or clone) of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstMeta {
    /// Logical size.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: u64,
    /// Version of the write that produced this state.
    pub version: u64,
    /// Bytes held in data blocks (sparse accounting).
    pub stored: u64,
    /// Number of omap entries (so whole-omap copies/deletes can be skipped).
    pub omap_count: u64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Bytes>,
}

/// One clone of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloneMeta {
    /// Clone id: the newest snap it serves at creation.
    pub id: SnapId,
    /// Snaps it serves, ascending.
    pub snaps: Vec<SnapId>,
    /// Extents identical to the next newer clone or the head, ascending, disjoint.
    pub overlap: Vec<(u64, u64)>,
    /// Its state.
    pub inst: InstMeta,
}

/// The record of a logical object: snap set, head (if it exists), clones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjRecord {
    /// Newest snap seq seen from a writer.
    pub seq: SnapId,
    /// The head, if it exists.
    pub head: Option<InstMeta>,
    /// Clones, ascending by id.
    pub clones: Vec<CloneMeta>,
}

/// Per-pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Heads + clones.
    pub objects: u64,
    /// Bytes in data blocks.
    pub bytes: u64,
    /// Last object version handed out in the pool (versions are per pool,
    /// so they never repeat for an object even across remove + recreate).
    pub last_version: u64,
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.0);
        self.0.extend_from_slice(&crc.to_le_bytes());
        self.0
    }
}

/// A bounds-checked reader; every failure is a `None` that callers turn into EIO.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    /// Check the trailing crc and strip it.
    fn checked(buf: &'a [u8]) -> Option<Self> {
        let n = buf.len().checked_sub(4)?;
        let crc = u32::from_le_bytes(buf[n..].try_into().ok()?);
        (crc32c::crc32c(&buf[..n]) == crc).then_some(Dec(&buf[..n]))
    }
    fn u8(&mut self) -> Option<u8> {
        let (&v, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.0.get(..8)?;
        let v = u64::from_le_bytes(b.try_into().ok()?);
        self.0 = &self.0[8..];
        Some(v)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }
    /// A count of items each at least `min_item` bytes long: bounded by what is left,
    /// so a corrupted count can't make us allocate wildly.
    fn count(&mut self, min_item: usize) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n.checked_mul(min_item)? <= self.0.len()).then_some(n)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn enc_inst(e: &mut Enc, i: &InstMeta) {
    e.u64(i.size);
    e.u64(i.mtime_ns);
    e.u64(i.version);
    e.u64(i.stored);
    e.u64(i.omap_count);
    e.u64(i.xattrs.len() as u64);
    for (k, v) in &i.xattrs {
        e.bytes(k.as_bytes());
        e.bytes(v);
    }
}

fn dec_inst(d: &mut Dec) -> Option<InstMeta> {
    let size = d.u64()?;
    let mtime_ns = d.u64()?;
    let version = d.u64()?;
    let stored = d.u64()?;
    let omap_count = d.u64()?;
    let n = d.count(16)?;
    let mut xattrs = BTreeMap::new();
    for _ in 0..n {
        let k = String::from_utf8(d.bytes()?.to_vec()).ok()?;
        let v = Bytes::copy_from_slice(d.bytes()?);
        xattrs.insert(k, v);
    }
    Some(InstMeta {
        size,
        mtime_ns,
        version,
        stored,
        omap_count,
        xattrs,
    })
}

impl ObjRecord {
    /// Serialize with a trailing crc32c.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::with_capacity(128));
        e.u8(REC_FORMAT);
        e.u64(self.seq);
        match &self.head {
            Some(h) => {
                e.u8(1);
                enc_inst(&mut e, h);
            }
            None => e.u8(0),
        }
        e.u64(self.clones.len() as u64);
        for c in &self.clones {
            e.u64(c.id);
            e.u64(c.snaps.len() as u64);
            for s in &c.snaps {
                e.u64(*s);
            }
            e.u64(c.overlap.len() as u64);
            for (o, l) in &c.overlap {
                e.u64(*o);
                e.u64(*l);
            }
            enc_inst(&mut e, &c.inst);
        }
        e.finish()
    }

    /// Parse and verify; `EIO` naming `what` if the bytes are not a valid record.
    pub fn decode(buf: &[u8], what: &dyn std::fmt::Display) -> Result<Self, RadosError> {
        Self::decode_opt(buf)
            .ok_or_else(|| RadosError::io(format!("corrupted metadata of object {what}")))
    }

    fn decode_opt(buf: &[u8]) -> Option<Self> {
        let mut d = Dec::checked(buf)?;
        if d.u8()? != REC_FORMAT {
            return None;
        }
        let seq = d.u64()?;
        let head = match d.u8()? {
            0 => None,
            1 => Some(dec_inst(&mut d)?),
            _ => return None,
        };
        let n = d.count(8)?;
        let mut clones = Vec::with_capacity(n);
        for _ in 0..n {
            let id = d.u64()?;
            let ns = d.count(8)?;
            let snaps = (0..ns).map(|_| d.u64()).collect::<Option<Vec<_>>>()?;
            let no = d.count(16)?;
            let overlap = (0..no)
                .map(|_| Some((d.u64()?, d.u64()?)))
                .collect::<Option<Vec<_>>>()?;
            let inst = dec_inst(&mut d)?;
            clones.push(CloneMeta {
                id,
                snaps,
                overlap,
                inst,
            });
        }
        d.done().then_some(ObjRecord { seq, head, clones })
    }
}

impl PoolCounters {
    /// Serialize with a trailing crc32c.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::with_capacity(32));
        e.u8(POOL_FORMAT);
        e.u64(self.objects);
        e.u64(self.bytes);
        e.u64(self.last_version);
        e.finish()
    }

    /// Parse and verify; `EIO` if corrupted.
    pub fn decode(buf: &[u8], pool: PoolId) -> Result<Self, RadosError> {
        let parse = || {
            let mut d = Dec::checked(buf)?;
            if d.u8()? != POOL_FORMAT {
                return None;
            }
            let c = PoolCounters {
                objects: d.u64()?,
                bytes: d.u64()?,
                last_version: d.u64()?,
            };
            d.done().then_some(c)
        };
        parse().ok_or_else(|| RadosError::io(format!("corrupted counters of pool {pool}")))
    }
}

/// Generic checksummed blob helpers for small records owned by other
/// modules (the embedded backend's pool registry).
pub mod blob {
    use super::{Dec, Enc};

    /// A writer of length-prefixed fields.
    pub struct Writer(Enc);

    impl Default for Writer {
        fn default() -> Self {
            Writer(Enc(Vec::new()))
        }
    }

    impl Writer {
        /// Append a u64.
        pub fn u64(&mut self, v: u64) {
            self.0.u64(v)
        }
        /// Append a byte string.
        pub fn bytes(&mut self, v: &[u8]) {
            self.0.bytes(v)
        }
        /// Finish, appending the crc32c.
        pub fn finish(self) -> Vec<u8> {
            self.0.finish()
        }
    }

    /// A bounds-checked reader of what [`Writer`] wrote.
    pub struct Reader<'a>(Dec<'a>);

    impl<'a> Reader<'a> {
        /// Verify the crc; `None` if corrupted.
        pub fn new(buf: &'a [u8]) -> Option<Self> {
            Dec::checked(buf).map(Reader)
        }
        /// Read a u64.
        pub fn u64(&mut self) -> Option<u64> {
            self.0.u64()
        }
        /// Read a byte string.
        pub fn bytes(&mut self) -> Option<&'a [u8]> {
            self.0.bytes()
        }
        /// A count of items at least `min_item` bytes each.
        pub fn count(&mut self, min_item: usize) -> Option<usize> {
            self.0.count(min_item)
        }
        /// Whether everything was consumed.
        pub fn done(&self) -> bool {
            self.0.done()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_block_crcs_equal_hashing_the_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20u64 {
            let block: Vec<u8> = (0..BLOCK_SIZE)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let raw = crc32c::crc32c(&block);
            assert_eq!(
                block_crc_from_raw(round * 977, raw),
                block_crc(round * 977, &block)
            );
            let prefix = crc32c::crc32c(&x.to_le_bytes());
            assert_eq!(
                crc_append_block(prefix, raw),
                crc32c::crc32c_append(prefix, &block)
            );
        }
        // A changed byte changes the combined value (not a constant).
        let a = crc_append_block(1, crc32c::crc32c(&[0u8; 4096]));
        let mut one = [0u8; 4096];
        one[4095] = 1;
        assert_ne!(a, crc_append_block(1, crc32c::crc32c(&one)));
    }

    /// Keys are on disk: the escaping must stay byte for byte what it
    /// was (each NUL as 0x00 0xFF, the component ended by 0x00 0x01).
    #[test]
    fn escaping_is_the_on_disk_format() {
        fn bytewise(s: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for &b in s {
                if b == 0 {
                    out.extend_from_slice(&[0, 0xFF]);
                } else {
                    out.push(b);
                }
            }
            out.extend_from_slice(&[0, 1]);
            out
        }
        let cases: [&[u8]; 8] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"rbd_data.1.0",
            b"\0a",
            b"a\0",
            b"a\0\0b\0",
        ];
        for c in cases {
            let mut got = Vec::new();
            push_escaped(&mut got, c);
            assert_eq!(got, bytewise(c), "{c:?}");
            assert_eq!(take_escaped(&got), Some((c.to_vec(), &[][..])));
        }
        assert_eq!(
            obj_key(1, "", "a\0")[8..],
            [b'\0', 1, b'a', 0, 0xFF, 0, 1][..]
        );
    }

    #[test]
    fn keys_sort_like_components() {
        let a = obj_key(1, "", "a");
        let ab = obj_key(1, "", "ab");
        let a0 = obj_key(1, "", "a\0");
        let ns = obj_key(1, "n", "a");
        let p0 = obj_key(-1, "zz", "zz");
        assert!(a < a0 && a0 < ab && ab < ns);
        assert!(p0 < a);
        assert_eq!(parse_obj_key(&a0), Some((String::new(), "a\0".into())));
        assert!(a.starts_with(&ns_prefix(1, "")));
        assert!(!ns.starts_with(&ns_prefix(1, "")));
    }

    #[test]
    fn record_roundtrip_and_corruption() {
        let mut r = ObjRecord {
            seq: 3,
            head: Some(InstMeta {
                size: 10,
                xattrs: [("k".to_string(), Bytes::from_static(b"v"))].into(),
                ..Default::default()
            }),
            clones: vec![CloneMeta {
                id: 2,
                snaps: vec![1, 2],
                overlap: vec![(0, 5)],
                inst: InstMeta::default(),
            }],
        };
        let enc = r.encode();
        assert_eq!(ObjRecord::decode(&enc, &"x").unwrap(), r);
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(ObjRecord::decode(&bad, &"x").is_err());
        }
        r.head = None;
        assert_eq!(ObjRecord::decode(&r.encode(), &"x").unwrap(), r);
    }

    #[test]
    fn block_crc_detects_flip_and_misplacement() {
        let data = vec![7u8; 100];
        let mut v = vec![0u8; 104];
        encode_block_into(&mut v, 5, &data);
        assert_eq!(decode_block(5, &v), Some(&data[..]));
        assert_eq!(decode_block(6, &v), None);
        v[50] ^= 1;
        assert_eq!(decode_block(5, &v), None);
    }
}
