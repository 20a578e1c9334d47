//! The write-ahead log that makes small writes cost one fdatasync.
//!
//! A redb durable commit rewrites a B-tree path per touched table plus its
//! allocator state and header, then fsyncs: several scattered pages per
//! commit, and as much CPU as the writes themselves. Instead, the writer
//! thread makes each batch durable by appending its physical redo (see
//! `tables`) to this log and calling fdatasync once — a sequential write
//! into a preallocated file, as cheap as durability gets — and commits the
//! redb transaction that holds many such batches non-durably, every few
//! milliseconds.
//!
//! Every so often (log full, a large batch, shutdown) a batch is committed
//! to redb durably instead: a *checkpoint*. It records its sequence number
//! (LSN) in the `sys` table, and the log starts over at offset 0. Recovery
//! replays the valid, consecutive records with LSN above the checkpoint.
//!
//! Record: magic u32 | body length u32 | lsn u64 | crc32c(lsn, body) u32 | body.
//! Architecture invariant: a record is acknowledged only after fdatasync,
//! and the redb state it describes is never published to readers before.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const MAGIC: u32 = 0x4C41_5751; // "QWAL"
const HDR: usize = 20;

/// Size of the preallocated log file. Checkpoints (durable redb commits)
/// stall the writer for tens of milliseconds; with an 8 MiB log a 4 KiB
/// random-write load checkpointed every ~1000 writes and the stalls set
/// the p99 and halved QD32 throughput (cluster_bench: 4 MiB → 16 MiB
/// between checkpoints took QD32 from ~2.4k to ~4.1k IOPS, QD1 mean from
/// ~1.1 ms to ~0.7 ms).
pub const WAL_BYTES: u64 = 32 << 20;
/// Once this much log is written, the next batch checkpoints. Between
/// checkpoints redb cannot reuse pages it frees (its non-durable commits
/// only free at the next durable one), so this also bounds how much the
/// database file grows per cycle.
pub const CHECKPOINT_AT: u64 = 16 << 20;
/// Batches whose redo exceeds this skip the log and checkpoint instead
/// (large writes would otherwise be written twice).
pub const MAX_RECORD: usize = 1 << 20;

/// Log records as (LSN, redo body), in log order.
pub type Records = Vec<(u64, Vec<u8>)>;

/// The log file and where the next record goes.
pub struct Wal {
    file: Arc<File>,
    off: u64,
}

fn crc(lsn: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), body)
}

impl Wal {
    /// Open or create the log; returns it and every valid record in order
    /// (consecutive LSNs from offset 0).
    pub fn open(path: &Path) -> io::Result<(Wal, Records)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < WAL_BYTES {
            // Write real zeros: overwriting allocated blocks later makes
            // fdatasync flush data only, never block-allocation metadata.
            let zeros = vec![0u8; 1 << 20];
            let mut off = len;
            while off < WAL_BYTES {
                let n = (WAL_BYTES - off).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], off)?;
                off += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut records = Vec::new();
        let mut off = 0u64;
        let mut hdr = [0u8; HDR];
        loop {
            if off + HDR as u64 > WAL_BYTES || file.read_exact_at(&mut hdr, off).is_err() {
                break;
            }
            let magic = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let blen = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as u64;
            let lsn = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
            let want = u32::from_le_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
            if magic != MAGIC || off + HDR as u64 + blen > WAL_BYTES {
                break;
            }
            if let Some(&(prev, _)) = records.last() {
                if lsn != prev + 1 {
                    break;
                }
            }
            let mut body = vec![0u8; blen as usize];
            if file.read_exact_at(&mut body, off + HDR as u64).is_err() || crc(lsn, &body) != want {
                break;
            }
            records.push((lsn, body));
            off += HDR as u64 + blen;
        }
        Ok((
            Wal {
                file: Arc::new(file),
                off: 0,
            },
            records,
        ))
    }

    /// Whether a record with this body fits before the end of the file.
    pub fn fits(&self, body_len: usize) -> bool {
        body_len <= MAX_RECORD
            && self.off < CHECKPOINT_AT
            && self.off + (HDR + body_len) as u64 <= WAL_BYTES
    }

    /// Reserve the next record's place and encode it: (offset, bytes).
    /// The caller writes it (see [`write_durable`]) before acknowledging
    /// anything it covers; reserving in LSN order keeps the log contiguous.
    pub fn encode(&mut self, lsn: u64, body: &[u8]) -> (u64, Vec<u8>) {
        let mut buf = Vec::with_capacity(HDR + body.len());
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&lsn.to_le_bytes());
        buf.extend_from_slice(&crc(lsn, body).to_le_bytes());
        buf.extend_from_slice(body);
        let off = self.off;
        self.off += buf.len() as u64;
        (off, buf)
    }

    /// The log file, shared with the thread that writes encoded records.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// After a checkpoint: the next record goes to offset 0 again. Older
    /// records behind it have smaller LSNs, so recovery stops at them.
    pub fn reset(&mut self) {
        self.off = 0;
    }
}

/// Write encoded records (offset, bytes; in log order) and make them
/// durable with one fdatasync. Adjacent records go out in one write.
pub fn write_durable(file: &File, recs: &[(u64, Vec<u8>)]) -> io::Result<()> {
    let mut i = 0;
    let mut joined = Vec::new();
    while i < recs.len() {
        let (off, first) = &recs[i];
        let mut end = *off + first.len() as u64;
        let mut j = i + 1;
        while j < recs.len() && recs[j].0 == end {
            end += recs[j].1.len() as u64;
            j += 1;
        }
        if j == i + 1 {
            file.write_all_at(first, *off)?;
        } else {
            joined.clear();
            for (_, b) in &recs[i..j] {
                joined.extend_from_slice(b);
            }
            file.write_all_at(&joined, *off)?;
        }
        i = j;
    }
    if !recs.is_empty() {
        file.sync_data()?;
    }
    Ok(())
}
