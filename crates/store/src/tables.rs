//! The redb tables and the one way to mutate them.
//!
//! Every mutation of a write transaction goes through [`WTables`], which can
//! record it as a physical redo entry (table, key, value). The writer thread
//! appends a batch's redo entries to the write-ahead log before committing
//! the batch (see `wal`), and recovery replays them with [`replay`]. Physical
//! redo makes replay trivially deterministic: no op is re-executed.

use quarry_rados::{RadosError, Result};
use redb::{Table, TableDefinition, WriteTransaction};

use crate::exec::{sio, Raw};

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

fn take_all(_: &[u8], _: &[u8]) -> bool {
    true
}

/// The open tables of a write transaction, with an optional redo recorder.
pub struct WTables<'t> {
    t: Vec<Table<'t, Raw, Raw>>,
    redo: Option<Vec<u8>>,
}

impl<'t> WTables<'t> {
    /// Open every table; record redo entries if `record`.
    pub fn open(txn: &'t WriteTransaction, record: bool) -> Result<Self> {
        let t = ALL
            .iter()
            .map(|d| txn.open_table(d.def()).map_err(sio))
            .collect::<Result<Vec<_>>>()?;
        Ok(WTables {
            t,
            redo: record.then(Vec::new),
        })
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
        self.rec(PUT, which, k, Some(v));
        let old = self.t[which as usize].insert(k, v).map_err(sio)?;
        Ok(old.map(|o| o.value().len()))
    }

    /// Delete; returns the length of the value removed, if any.
    pub fn del(&mut self, which: Tbl, k: &[u8]) -> Result<Option<usize>> {
        self.rec(DEL, which, k, None);
        let old = self.t[which as usize].remove(k).map_err(sio)?;
        Ok(old.map(|o| o.value().len()))
    }

    /// Delete every key in `[lo, hi)` (`hi = None`: to the end); returns the
    /// total length of the values removed and how many there were.
    pub fn del_range(&mut self, which: Tbl, lo: &[u8], hi: Option<&[u8]>) -> Result<(u64, u64)> {
        self.rec(DEL_RANGE, which, lo, hi);
        let t = &mut self.t[which as usize];
        let iter = match hi {
            Some(hi) => t.extract_from_if::<&[u8], _>(lo..hi, take_all),
            None => t.extract_from_if::<&[u8], _>(lo.., take_all),
        }
        .map_err(sio)?;
        let (mut bytes, mut n) = (0u64, 0u64);
        for item in iter {
            let (_, v) = item.map_err(sio)?;
            bytes += v.value().len() as u64;
            n += 1;
        }
        Ok((bytes, n))
    }

    /// Bytes of redo recorded so far.
    pub fn redo_len(&self) -> usize {
        self.redo.as_ref().map_or(0, Vec::len)
    }

    /// Take the recorded redo entries.
    pub fn take_redo(&mut self) -> Vec<u8> {
        self.redo.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// Apply recorded redo entries (from the write-ahead log).
pub fn replay(t: &mut WTables<'_>, mut body: &[u8]) -> Result<()> {
    let bad = || RadosError::io("corrupted redo entry in the write-ahead log");
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
        match (hdr[0], b) {
            (PUT, Some(v)) => {
                t.put(which, a, v)?;
            }
            (DEL, None) => {
                t.del(which, a)?;
            }
            (DEL_RANGE, hi) => {
                t.del_range(which, a, hi)?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}
