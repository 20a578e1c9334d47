//! The segmented data log: where data blocks and the metadata redo live.
//!
//! Every batch the writer applies becomes one *record* appended to the
//! active segment file: the batch's data blocks, then its physical redo
//! (see `tables`; the redo's `data` entries point into the record's own
//! data). One fdatasync of the segment makes both durable, so a batch costs
//! one sequential write and one flush, and a large write is written once.
//! redb holds metadata only and is committed non-durably every few
//! milliseconds; a *checkpoint* (durable redb commit) records the log
//! position it covers, and recovery replays the records after it.
//!
//! Record: magic u32 | lsn u64 | data length u32 | redo length u32 |
//! crc32c(lsn, lengths, data, redo) u32 | data | redo. Records carry
//! consecutive LSNs; recovery stops at the first record that is torn, has
//! a bad checksum or breaks the LSN sequence, and cuts the log there.
//!
//! Segments are named by a growing id; the writer rolls to a new one once
//! the active one passes the segment size. Space comes back by compaction:
//! the live blocks of a sealed segment (index entry still pointing at
//! them) are copied through the writer into the active segment, and the
//! file is let go after the next checkpoint no longer needs it.
//!
//! A file let go is kept as a *spare* (`<id>.spare`, at most
//! [`MAX_SPARES`]) and renamed to become the next segment instead of
//! creating one: on ext4 an unlink frees (and, mounted with `discard`,
//! discards) 64 MiB and a new file's fallocated extents are converted on
//! their first writes; here discards took a third of the disk's time
//! under 4 MiB writes. A reused file still holds its old records past the
//! new ones. They are never mistaken for new ones: every record of a file
//! let go was covered by a durable checkpoint, so its LSN is below every
//! LSN written after it, and a log is read only as a run of consecutive
//! LSNs (recovery, compaction). A segment's records are the run of
//! consecutive LSNs from its start; a record breaking the run ends the
//! segment, not the log (the next segment must start with the next LSN).
//!
//! Large runs of a write's blocks go around the page cache: a record's
//! data section may hold unreferenced pad bytes before an extent so that
//! the extent starts on a 4 KiB boundary of the file, and then (if its
//! blocks sit in 4 KiB-aligned memory, as pooled receive buffers do) that
//! run is written with O_DIRECT through a second descriptor, the rest of
//! the record (header, small data, redo) buffered. The record format is
//! unchanged (pad bytes are data no index entry points to, covered by the
//! record's checksum like any data), and the same fdatasync makes every
//! part durable: O_DIRECT only skips the copy into the page cache, it does
//! not flush the disk's write cache. See [`DirectMode`] for which writes.
//!
//! Architecture invariant: a record is acknowledged only after fdatasync;
//! a segment is deleted only when no durable index entry points into it
//! and no record in it lies past the durable checkpoint.

use std::collections::BTreeMap;

use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const MAGIC: u32 = 0x474C_5751; // "QWLG"
/// Bytes of a record header.
pub const HDR: usize = 24;
/// Default size after which the writer rolls to a new segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted by recovery and compaction (a batch is bounded
/// by the writer's batch limits well below this).
pub const MAX_RECORD: u64 = 256 << 20;
/// Alignment O_DIRECT needs of file offsets, lengths and memory.
pub const DIRECT_ALIGN: usize = 4096;
/// Least bytes of an aligned run of blocks written with O_DIRECT: below
/// this the page-cache copy is cheap and the extra system call is not.
pub const DIRECT_MIN: usize = 256 << 10;

/// Which large writes go to the data log with O_DIRECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectMode {
    /// None (every record buffered).
    Off,
    /// Those whose request says its data need not be cached (a replica's
    /// copy: read only if the replica becomes primary). The default.
    Hinted,
    /// Every large aligned run of a write's blocks.
    All,
}

impl DirectMode {
    /// The mode `QUARRY_STORE_DIRECT` (`off`, `hinted`, `all`) names, for
    /// measurements; `Hinted` when unset or unknown.
    pub fn from_env() -> DirectMode {
        match std::env::var("QUARRY_STORE_DIRECT").as_deref() {
            Ok("off") => DirectMode::Off,
            Ok("all") => DirectMode::All,
            _ => DirectMode::Hinted,
        }
    }
}

/// Bytes written with O_DIRECT by this process (diagnostics and tests).
pub static DIRECT_BYTES: AtomicU64 = AtomicU64::new(0);

/// One segment: a file, or a buffer for the in-memory store.
pub enum SegFile {
    /// On disk.
    Disk(DiskSeg),
    /// In memory.
    Mem(RwLock<Vec<u8>>),
}

/// A segment file: its buffered descriptor, and an O_DIRECT one opened on
/// the first direct write.
pub struct DiskSeg {
    f: File,
    path: PathBuf,
    /// `None` once opening it failed (a file system without O_DIRECT).
    direct: OnceLock<Option<File>>,
    /// Set when a direct write was refused: the rest go buffered.
    no_direct: AtomicBool,
    /// A spare reused (see the module doc): its blocks past the log's end
    /// hold old records, not preallocated zeros.
    reused: bool,
}

impl DiskSeg {
    fn new(f: File, path: PathBuf) -> DiskSeg {
        DiskSeg {
            f,
            path,
            direct: OnceLock::new(),
            no_direct: AtomicBool::new(false),
            reused: false,
        }
    }

    /// The O_DIRECT descriptor, if the file system gives one.
    fn direct(&self) -> Option<&File> {
        if self.no_direct.load(Ordering::Relaxed) {
            return None;
        }
        self.direct
            .get_or_init(|| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                    .ok()
            })
            .as_ref()
    }

    /// Write `bufs` (each 4 KiB-aligned in memory and length) at the
    /// aligned offset `off`, with O_DIRECT when possible. Falls back to a
    /// buffered write if the file system refuses (EINVAL).
    fn write_direct(&self, bufs: &[&[u8]], off: u64) -> io::Result<()> {
        debug_assert!(off.is_multiple_of(DIRECT_ALIGN as u64));
        debug_assert!(bufs.iter().all(|b| aligned(b)));
        if let Some(d) = self.direct() {
            match pwritev_all(d, bufs, off) {
                Ok(()) => {
                    let n: usize = bufs.iter().map(|b| b.len()).sum();
                    DIRECT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Nothing of a refused direct write is written; the
                    // buffered one below writes all of it.
                    self.no_direct.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        pwritev_all(&self.f, bufs, off)
    }
}

/// Whether `b` may be written with O_DIRECT (aligned address and length).
fn aligned(b: &[u8]) -> bool {
    (b.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
        && b.len().is_multiple_of(DIRECT_ALIGN)
        && !b.is_empty()
}

impl SegFile {
    /// Whether this is a reused spare (old records past the log's end
    /// instead of preallocated zeros): records written into it end on a
    /// page boundary (see [`RecordBuf::write_at`]) and need no zeros ahead.
    pub fn reused(&self) -> bool {
        matches!(self, SegFile::Disk(d) if d.reused)
    }

    /// Read exactly `buf.len()` bytes at `off`.
    pub fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        match self {
            SegFile::Disk(d) => d.f.read_exact_at(buf, off),
            SegFile::Mem(m) => {
                let m = m.read().unwrap_or_else(|e| e.into_inner());
                let s = usize::try_from(off)
                    .ok()
                    .and_then(|o| m.get(o..o.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(s);
                Ok(())
            }
        }
    }

    /// Read exactly `buf.len()` bytes at `off` only if they are all in the
    /// page cache (`preadv2` with `RWF_NOWAIT`): `Ok(false)` if a disk read
    /// would be needed (the failed read has started the kernel's readahead),
    /// so a caller on an async worker can try again later or read where
    /// blocking is fine instead of stalling the worker on the disk. A
    /// kernel or filesystem without `RWF_NOWAIT` gets an ordinary read.
    pub fn read_exact_at_cached(&self, buf: &mut [u8], off: u64) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let f = match self {
            SegFile::Disk(d) => &d.f,
            SegFile::Mem(_) => return self.read_exact_at(buf, off).map(|()| true),
        };
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let iov = libc::iovec {
                iov_base: rest.as_mut_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            let pos = off
                .checked_add(done as u64)
                .and_then(|p| libc::off_t::try_from(p).ok())
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: one iovec over `rest`, which is valid writable memory
            // of `iov_len` bytes for the duration of the call.
            let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, pos, libc::RWF_NOWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(false),
                    Some(libc::EINTR) => continue,
                    Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                        f.read_exact_at(rest, off + done as u64)?;
                        return Ok(true);
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                // Past the end, or (RWF_NOWAIT) nothing of the rest cached
                // yet: the blocking read tells the two apart.
                return Ok(false);
            }
            done += n as usize;
        }
        Ok(true)
    }

    /// Write all of `buf` at `off`.
    pub fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        match self {
            SegFile::Disk(d) => d.f.write_all_at(buf, off),
            SegFile::Mem(m) => {
                let mut m = m.write().unwrap_or_else(|e| e.into_inner());
                let o = off as usize;
                if m.len() < o + buf.len() {
                    m.resize(o + buf.len(), 0);
                }
                m[o..o + buf.len()].copy_from_slice(buf);
                Ok(())
            }
        }
    }

    /// fdatasync (nothing in memory).
    pub fn sync_data(&self) -> io::Result<()> {
        match self {
            SegFile::Disk(d) => d.f.sync_data(),
            SegFile::Mem(_) => Ok(()),
        }
    }

    /// Write zeros over `[from, to)` (space past the log's end, which reads
    /// as zeros already) and start their writeback without waiting for it.
    /// Why: preallocated space is an unwritten extent on ext4, and the first
    /// write into each of its blocks makes that write's fdatasync also
    /// convert the extent and write the inode (on this host's journal-less
    /// ext4 a synchronous metadata write before the cache flush; with a
    /// journal, a journal commit). Zeros written here ahead of small records
    /// take that conversion out of their fdatasyncs, once per range, and
    /// leave the pages cached, so a record's partial last page needs no
    /// read or zeroing. Safe because the range lies past every record
    /// (the caller's invariant): its bytes read as zeros before and after,
    /// whatever a crash leaves of it. In memory: nothing to do.
    pub fn zero_range(&self, from: u64, to: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let SegFile::Disk(d) = self else {
            return Ok(());
        };
        if to <= from {
            return Ok(());
        }
        let mut bufs: Vec<&[u8]> = Vec::new();
        let mut left = to - from;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            bufs.push(&ZEROS[..n]);
            left -= n as u64;
        }
        pwritev_all(&d.f, &bufs, from)?;
        let (Ok(off), Ok(len)) = (
            libc::off64_t::try_from(from),
            libc::off64_t::try_from(to - from),
        ) else {
            return Ok(());
        };
        // SAFETY: sync_file_range on a descriptor we own; no memory passed.
        // Only starts writeback (no WAIT flags): the records' own fdatasync
        // remains what makes anything durable.
        let _ = unsafe {
            libc::sync_file_range(d.f.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        Ok(())
    }

    /// Current length.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            SegFile::Disk(d) => Ok(d.f.metadata()?.len()),
            SegFile::Mem(m) => Ok(m.read().unwrap_or_else(|e| e.into_inner()).len() as u64),
        }
    }

    /// Drop the space after `len` when the segment is sealed (not synced:
    /// a crash may leave the zeros, or a reused file's old records, which
    /// both end the segment).
    pub fn seal_at(&self, len: u64) -> io::Result<()> {
        match self {
            SegFile::Disk(d) if d.f.metadata()?.len() > len => d.f.set_len(len),
            _ => Ok(()),
        }
    }

    /// Cut to `len` bytes (zeros after it up to `prealloc`), durably.
    fn truncate(&self, len: u64, prealloc: u64) -> io::Result<()> {
        match self {
            SegFile::Disk(d) => {
                d.f.set_len(len)?;
                preallocate(&d.f, len, prealloc);
                d.f.sync_all()
            }
            SegFile::Mem(m) => {
                m.write()
                    .unwrap_or_else(|e| e.into_inner())
                    .truncate(len as usize);
                Ok(())
            }
        }
    }
}

/// Bytes of zeros the writer keeps written ahead of the append point (see
/// [`SegFile::zero_range`]).
pub const ZERO_AHEAD: u64 = 1 << 20;
/// The writer zeroes again once less than this is left zeroed ahead.
pub const ZERO_LOW: u64 = 256 << 10;
/// Records larger than this start no zeroing: large writes pay the
/// unwritten-extent conversion once per record anyway, and zeroing ahead
/// of them would write the log's bytes twice.
pub const ZERO_MAX_RECORD: u64 = 128 << 10;

/// Source of the zeros written by [`SegFile::zero_range`].
static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

/// Allocate `[from, to)` of a segment file up front (reading as zeros):
/// a record appended past the end of a file makes its fdatasync also
/// journal the file's new size, which cost ~1-5 ms per 4 KiB write here
/// against ~0.15 ms for a write into allocated space. Best effort: on a
/// file system without fallocate the log just appends.
fn preallocate(f: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    if to <= from {
        return;
    }
    let (Ok(off), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(to - from),
    ) else {
        return;
    };
    // SAFETY: fallocate on an open file descriptor we own; no memory is
    // passed.
    let _ = unsafe { libc::fallocate(f.as_raw_fd(), 0, off, len) };
}

/// Where a record or block lies: segment id and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Segment id.
    pub seg: u32,
    /// Byte offset in the segment.
    pub off: u64,
}

impl Pos {
    /// 12 bytes: seg u32 LE, off u64 LE.
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.seg.to_le_bytes());
        b[4..].copy_from_slice(&self.off.to_le_bytes());
        b
    }

    /// Inverse of [`Pos::encode`].
    pub fn decode(b: &[u8]) -> Option<Pos> {
        Some(Pos {
            seg: u32::from_le_bytes(b.get(..4)?.try_into().ok()?),
            off: u64::from_le_bytes(b.get(4..12)?.try_into().ok()?),
        })
    }
}

/// The set of segments, shared by the writer (appends, creates, deletes)
/// and readers (preads through index entries).
pub struct Segments {
    dir: Option<PathBuf>,
    map: RwLock<BTreeMap<u32, Arc<SegFile>>>,
    /// Bumped whenever a segment is deleted: a reader whose read failed
    /// on a missing segment retries if it changed (its read transaction
    /// predated a compaction).
    removed: AtomicU64,
    /// Which large writes go with O_DIRECT.
    direct: DirectMode,
    /// Spare files (segments let go), reused by [`Segments::create`].
    spares: Mutex<Vec<PathBuf>>,
    /// How many segments were made from spares.
    reused: AtomicU64,
}

/// Most spare segment files kept (each holds a segment's worth of disk).
/// A sweep lets segments go a checkpoint at a time, and a checkpoint comes
/// every 256 MiB of log: four 64 MiB segments. With two kept, half of
/// them were still deleted (and discarded) under 4 MiB writes.
pub const MAX_SPARES: usize = 4;

fn seg_name(id: u32) -> String {
    format!("{id:010}.qseg")
}

fn spare_name(id: u32) -> String {
    format!("{id:010}.spare")
}

/// A segment taken out of the log by [`Segments::detach`]: its file, and
/// the open segment (shared with readers that still hold it).
pub struct Detached {
    path: PathBuf,
    id: u32,
    file: Arc<SegFile>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_file(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Segments {
    /// Open every segment file under `dir` (`None`: in memory, empty).
    pub fn open(dir: Option<&Path>) -> io::Result<Segments> {
        let mut map = BTreeMap::new();
        let mut spares = Vec::new();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)?;
            for e in std::fs::read_dir(dir)? {
                let e = e?;
                let name = e.file_name();
                if name.to_str().is_some_and(|n| n.ends_with(".spare")) {
                    spares.push(e.path());
                    continue;
                }
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".qseg"))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(e.path())?;
                map.insert(id, Arc::new(SegFile::Disk(DiskSeg::new(f, e.path()))));
            }
        }
        spares.sort();
        // More than kept (a smaller limit in an older version): delete them.
        for p in spares.split_off(spares.len().min(MAX_SPARES)) {
            remove_file(&p)?;
        }
        Ok(Segments {
            dir: dir.map(Path::to_path_buf),
            map: RwLock::new(map),
            removed: AtomicU64::new(0),
            direct: DirectMode::from_env(),
            spares: Mutex::new(spares),
            reused: AtomicU64::new(0),
        })
    }

    /// Which large writes go to the log with O_DIRECT.
    pub fn direct_mode(&self) -> DirectMode {
        self.direct
    }

    /// A segment, if it exists.
    pub fn get(&self, id: u32) -> Option<Arc<SegFile>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Segment ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Create segment `id`, durably named in the directory, from a spare
    /// when there is one, else a new file with `prealloc` bytes allocated
    /// (truncating any file of that name).
    pub fn create(&self, id: u32, prealloc: u64) -> io::Result<Arc<SegFile>> {
        if let Some(f) = self.reuse_spare(id, prealloc) {
            let f = Arc::new(f);
            self.map
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, f.clone());
            return Ok(f);
        }
        let f = match &self.dir {
            Some(dir) => {
                let path = dir.join(seg_name(id));
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                preallocate(&f, 0, prealloc);
                f.sync_all()?;
                sync_dir(dir)?;
                SegFile::Disk(DiskSeg::new(f, path))
            }
            None => SegFile::Mem(RwLock::new(Vec::new())),
        };
        let f = Arc::new(f);
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, f.clone());
        Ok(f)
    }

    /// Segment `id` made from a spare (renamed, then the directory synced,
    /// so the name is durable before any record in it is acknowledged).
    /// `None` if there is none or reusing it failed (the spare is then
    /// deleted, best effort, and the caller creates a new file).
    fn reuse_spare(&self, id: u32, prealloc: u64) -> Option<SegFile> {
        let dir = self.dir.as_ref()?;
        let spare = lock(&self.spares).pop()?;
        let path = dir.join(seg_name(id));
        let reuse = || -> io::Result<SegFile> {
            std::fs::rename(&spare, &path)?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let len = f.metadata()?.len();
            if len < prealloc {
                // A spare shorter than a segment: the rest as a new file's.
                preallocate(&f, len, prealloc);
                f.sync_all()?;
            }
            sync_dir(dir)?;
            let mut d = DiskSeg::new(f, path.clone());
            d.reused = true;
            Ok(SegFile::Disk(d))
        };
        match reuse() {
            Ok(f) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                Some(f)
            }
            Err(e) => {
                eprintln!(
                    "quarry-store: reusing spare data log segment {}: {e}; creating a new one",
                    spare.display()
                );
                let _ = remove_file(&spare);
                None
            }
        }
    }

    /// Delete segment `id`.
    pub fn remove(&self, id: u32) -> io::Result<()> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.removed.fetch_add(1, Ordering::SeqCst);
        if let Some(dir) = &self.dir {
            match std::fs::remove_file(dir.join(seg_name(id))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Take segment `id` out of the log (readers no longer find it) and
    /// return it for the caller to let go ([`Segments::retire`]); `None` in
    /// memory. That is left to the caller so that it can be done off the
    /// writer thread: it is not needed for safety (a segment that survives
    /// a crash holds nothing live and is let go after the next open).
    pub fn detach(&self, id: u32) -> Option<Detached> {
        let file = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.removed.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.as_ref()?;
        Some(Detached {
            path: dir.join(seg_name(id)),
            id,
            file: file?,
        })
    }

    /// Let detached segments go: each becomes a spare while fewer than
    /// [`MAX_SPARES`] are kept and nobody else holds it open (a reader that
    /// took it before it was detached could otherwise read the next
    /// segment's records where it expected this one's blocks), else it is
    /// deleted; then the directory is synced once.
    pub fn retire(&self, files: Vec<Detached>) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut first_err = None;
        for Detached { path, id, file } in files {
            let alone = Arc::strong_count(&file) == 1;
            drop(file);
            let keep = alone && lock(&self.spares).len() < MAX_SPARES;
            let r = if keep {
                let spare = dir.join(spare_name(id));
                std::fs::rename(&path, &spare).map(|()| lock(&self.spares).push(spare))
            } else {
                remove_file(&path)
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        sync_dir(dir)?;
        first_err.map_or(Ok(()), Err)
    }

    /// How many segments were made from spares so far.
    pub fn reuses(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Bytes held by spare files.
    pub fn spare_bytes(&self) -> u64 {
        lock(&self.spares)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    }

    /// How many segments were deleted so far (see `removed`).
    pub fn removals(&self) -> u64 {
        self.removed.load(Ordering::SeqCst)
    }

    /// Read `len` bytes at `off` of segment `seg`.
    pub fn read(&self, seg: u32, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.get(seg).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("data log segment {seg} is missing"),
            )
        })?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// Read exactly `buf.len()` bytes at `off` of segment `seg` into `buf`.
    pub fn read_into(&self, seg: u32, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let f = self.get(seg).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("data log segment {seg} is missing"),
            )
        })?;
        f.read_exact_at(buf, off)
    }

    /// [`Segments::read_into`] only if every byte is in the page cache
    /// (see [`SegFile::read_exact_at_cached`]); `Ok(false)` otherwise.
    pub fn read_into_cached(&self, seg: u32, off: u64, buf: &mut [u8]) -> io::Result<bool> {
        let f = self.get(seg).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("data log segment {seg} is missing"),
            )
        })?;
        f.read_exact_at_cached(buf, off)
    }

    /// Total bytes of every segment.
    pub fn bytes(&self) -> u64 {
        let segs: Vec<Arc<SegFile>> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        segs.iter().map(|s| s.len().unwrap_or(0)).sum()
    }

    /// Size of one segment (0 if missing).
    pub fn len_of(&self, id: u32) -> u64 {
        self.get(id).and_then(|s| s.len().ok()).unwrap_or(0)
    }
}

fn crc(lsn: u64, data_len: u32, redo_len: u32, data: &[u8], redo: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&lsn.to_le_bytes());
    c = crc32c::crc32c_append(c, &data_len.to_le_bytes());
    c = crc32c::crc32c_append(c, &redo_len.to_le_bytes());
    c = crc32c::crc32c_append(c, data);
    crc32c::crc32c_append(c, redo)
}

/// Most buffers per `pwritev` call (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// One piece of a record being built.
enum Chunk {
    /// Bytes the record owns (header, copied or merged blocks, redo).
    Owned(Vec<u8>),
    /// A caller's buffer (a write's payload), written in place by
    /// `pwritev`: the payload is never copied on its way to the log. With
    /// its plain crc32c when the caller computed it (a full block), so
    /// sealing the record need not hash it again, and whether it may be
    /// written with O_DIRECT (see [`RecordBuf::push_block`]).
    Shared(Bytes, Option<u32>, bool),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b, _, _) => b,
        }
    }

    /// Whether this chunk may be part of an O_DIRECT run.
    fn direct(&self) -> bool {
        matches!(self, Chunk::Shared(b, _, true) if aligned(b))
    }
}

/// Least capacity of a new owned chunk of a record (under glibc's mmap
/// threshold, so it comes from the heap without fresh page faults).
const OWNED_CHUNK: usize = 64 << 10;

/// A record being built: `HDR` bytes of header space, then its data, then
/// (once sealed) its redo, as a list of pieces written with one `pwritev`.
pub struct RecordBuf {
    chunks: Vec<Chunk>,
    len: usize,
}

impl RecordBuf {
    /// An empty record (header space only).
    pub fn new() -> Self {
        let mut h = Vec::with_capacity(16 << 10);
        h.resize(HDR, 0);
        RecordBuf {
            chunks: vec![Chunk::Owned(h)],
            len: HDR,
        }
    }

    /// Bytes so far (header included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append a copy of `d`. A full owned chunk is never grown: a new one
    /// of at least [`OWNED_CHUNK`] bytes follows it, so the record's bytes
    /// are copied once (growing one vector by reallocation copied a batch
    /// of small writes about twice more and faulted in fresh pages).
    pub fn push_slice(&mut self, d: &[u8]) {
        self.len += d.len();
        if let Some(Chunk::Owned(v)) = self.chunks.last_mut() {
            if v.capacity() - v.len() >= d.len() {
                v.extend_from_slice(d);
                return;
            }
        }
        let mut v = Vec::with_capacity(d.len().max(OWNED_CHUNK));
        v.extend_from_slice(d);
        self.chunks.push(Chunk::Owned(v));
    }

    /// Append a full block `b` without copying it, with its plain crc32c
    /// (the record's checksum then combines it instead of hashing `b`).
    /// `direct`: it may be written with O_DIRECT, which happens if it is
    /// aligned (memory and file offset) and part of a run of at least
    /// [`DIRECT_MIN`] such blocks.
    pub fn push_block(&mut self, b: Bytes, raw_crc: u32, direct: bool) {
        self.len += b.len();
        let crc = (b.len() as u64 == crate::codec::BLOCK_SIZE).then_some(raw_crc);
        self.chunks.push(Chunk::Shared(b, crc, direct));
    }

    /// Append zeros so that the next byte lies at a multiple of
    /// [`DIRECT_ALIGN`] in the file, the record starting at file offset
    /// `at` (pad bytes are data no index entry points to).
    pub fn pad_to_page(&mut self, at: u64) {
        let end = at + self.len as u64;
        let pad = (DIRECT_ALIGN as u64 - end % DIRECT_ALIGN as u64) % DIRECT_ALIGN as u64;
        if pad > 0 {
            self.push_slice(&[0u8; DIRECT_ALIGN][..pad as usize]);
        }
    }

    /// `len` bytes at offset `s` of the record, if it has them.
    pub fn read(&self, s: usize, len: usize) -> Option<Vec<u8>> {
        let end = s.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        let mut at = 0usize;
        for c in &self.chunks {
            let b = c.bytes();
            let (cs, ce) = (at, at + b.len());
            at = ce;
            if ce <= s || cs >= end {
                continue;
            }
            out.extend_from_slice(&b[s.max(cs) - cs..end.min(ce) - cs]);
        }
        Some(out)
    }

    /// Finish the record with `lsn`: append the redo (moved, not copied)
    /// and fill in the header.
    pub fn seal(&mut self, lsn: u64, redo: Vec<u8>) {
        let data_len = (self.len - HDR) as u32;
        let redo_len = redo.len() as u32;
        let mut c = crc32c::crc32c(&lsn.to_le_bytes());
        c = crc32c::crc32c_append(c, &data_len.to_le_bytes());
        c = crc32c::crc32c_append(c, &redo_len.to_le_bytes());
        for (i, ch) in self.chunks.iter().enumerate() {
            c = match ch {
                Chunk::Shared(_, Some(raw), _) => crate::codec::crc_append_block(c, *raw),
                _ => {
                    let b = ch.bytes();
                    crc32c::crc32c_append(c, if i == 0 { &b[HDR..] } else { b })
                }
            };
        }
        c = crc32c::crc32c_append(c, &redo);
        if !redo.is_empty() {
            self.len += redo.len();
            self.chunks.push(Chunk::Owned(redo));
        }
        if let Some(Chunk::Owned(h)) = self.chunks.first_mut() {
            h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            h[4..12].copy_from_slice(&lsn.to_le_bytes());
            h[12..16].copy_from_slice(&data_len.to_le_bytes());
            h[16..20].copy_from_slice(&redo_len.to_le_bytes());
            h[20..24].copy_from_slice(&c.to_le_bytes());
        }
    }

    /// Write the whole record at `off` of `seg`: runs of at least
    /// [`DIRECT_MIN`] bytes of aligned blocks marked direct with O_DIRECT,
    /// the rest buffered. Durable only after the segment's fdatasync.
    ///
    /// In a reused segment the record's last page is filled up with zeros
    /// (past the record, so past the log's end): a buffered write that
    /// covers part of a page not in the page cache makes the kernel read
    /// that page from the disk first, on this thread, and a reused file's
    /// pages past the log's end are old data, not unwritten extents (which
    /// it would zero without reading). The next record then starts in a
    /// cached page.
    pub fn write_at(&self, seg: &SegFile, off: u64) -> io::Result<()> {
        match seg {
            SegFile::Disk(d) => {
                let mut runs = self.runs(off);
                let end = off + self.len as u64;
                let pad = (end.next_multiple_of(DIRECT_ALIGN as u64) - end) as usize;
                if d.reused && pad > 0 {
                    match runs.last_mut() {
                        Some((false, _, bufs)) => bufs.push(&ZEROS[..pad]),
                        _ => runs.push((false, end, vec![&ZEROS[..pad]])),
                    }
                }
                for (direct, at, bufs) in runs {
                    if direct {
                        d.write_direct(&bufs, at)?;
                    } else {
                        pwritev_all(&d.f, &bufs, at)?;
                    }
                }
                Ok(())
            }
            SegFile::Mem(_) => {
                let mut all = Vec::with_capacity(self.len);
                for c in &self.chunks {
                    all.extend_from_slice(c.bytes());
                }
                seg.write_all_at(&all, off)
            }
        }
    }
}

impl RecordBuf {
    /// The record at file offset `off` cut into runs written by one
    /// `pwritev` each: (direct, file offset, buffers), in order.
    fn runs(&self, off: u64) -> Vec<(bool, u64, Vec<&[u8]>)> {
        let mut out: Vec<(bool, u64, Vec<&[u8]>)> = Vec::new();
        let (mut at, mut i) = (off, 0usize);
        while i < self.chunks.len() {
            // The longest direct-capable run starting here, if aligned.
            let mut j = i;
            let mut n = 0usize;
            if at.is_multiple_of(DIRECT_ALIGN as u64) {
                while j < self.chunks.len() && self.chunks[j].direct() {
                    n += self.chunks[j].bytes().len();
                    j += 1;
                }
            }
            let (direct, end) = if n >= DIRECT_MIN {
                (true, j)
            } else {
                (false, j.max(i + 1))
            };
            let bufs: Vec<&[u8]> = self.chunks[i..end].iter().map(Chunk::bytes).collect();
            let len: usize = bufs.iter().map(|b| b.len()).sum();
            match out.last_mut() {
                // Consecutive buffered pieces go in one call.
                Some((false, _, prev)) if !direct => prev.extend(bufs),
                _ => out.push((direct, at, bufs)),
            }
            at += len as u64;
            i = end;
        }
        out
    }
}

impl Default for RecordBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// Write every buffer of `bufs`, back to back, at `off` of `f`.
fn pwritev_all(f: &File, bufs: &[&[u8]], mut off: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let (mut i, mut skip) = (0usize, 0usize);
    while i < bufs.len() {
        let iov: Vec<libc::iovec> = bufs[i..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(k, b)| {
                let b = if k == 0 { &b[skip..] } else { b };
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect();
        let pos = libc::off_t::try_from(off)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: every iovec points into a live slice of `bufs` (borrowed
        // for this call) with its exact length; pwritev only reads them.
        let n =
            unsafe { libc::pwritev(f.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, pos) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
        if n == 0 && iov.iter().any(|v| v.iov_len > 0) {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        off += n as u64;
        while i < bufs.len() {
            let rem = bufs[i].len() - skip;
            if n >= rem {
                n -= rem;
                i += 1;
                skip = 0;
            } else {
                skip += n;
                break;
            }
        }
    }
    Ok(())
}

/// A record read back from a segment.
pub struct Record {
    /// Its LSN.
    pub lsn: u64,
    /// The whole record (header, data, redo).
    pub buf: Vec<u8>,
    /// Length of its data section.
    pub data_len: usize,
}

impl Record {
    /// The redo section.
    pub fn redo(&self) -> &[u8] {
        &self.buf[HDR + self.data_len..]
    }

    /// Bytes the record takes in the segment.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }
}

/// Whether `off` is the end of the written part of `seg`: past its end,
/// or zeros where a record header would be (preallocated space).
pub fn at_end(seg: &SegFile, off: u64, file_len: u64) -> bool {
    if off + HDR as u64 > file_len {
        return true;
    }
    let mut hdr = [0u8; HDR];
    seg.read_exact_at(&mut hdr, off).is_ok() && hdr.iter().all(|&b| b == 0)
}

/// Read the record at `off` of `seg` (`None`: torn, corrupt, or past the end).
pub fn read_record(seg: &SegFile, off: u64, file_len: u64) -> Option<Record> {
    if off + HDR as u64 > file_len {
        return None;
    }
    let mut hdr = [0u8; HDR];
    seg.read_exact_at(&mut hdr, off).ok()?;
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let lsn = u64::from_le_bytes(hdr[4..12].try_into().ok()?);
    let (data_len, redo_len, want) = (word(12), word(16), word(20));
    let total = HDR as u64 + data_len as u64 + redo_len as u64;
    if total > MAX_RECORD || off + total > file_len {
        return None;
    }
    let mut buf = vec![0u8; total as usize];
    seg.read_exact_at(&mut buf, off).ok()?;
    let (data, redo) = buf[HDR..].split_at(data_len as usize);
    if crc(lsn, data_len, redo_len, data, redo) != want {
        return None;
    }
    Some(Record {
        lsn,
        buf,
        data_len: data_len as usize,
    })
}

/// A record's header and redo, read without its data (compaction reads
/// only the live blocks a redo leads it to, each checked against the
/// index's own per-block checksums; the record's checksum, which covers
/// the data too, is not verified here).
pub struct RecordHead {
    /// Its LSN.
    pub lsn: u64,
    /// Bytes the record takes in the segment.
    pub len: u64,
    /// Length of its data section.
    pub data_len: u64,
    /// The redo section.
    pub redo: Vec<u8>,
}

/// Read the header and redo of the record at `off` of `seg` (`None`: no
/// record header there, lengths out of bounds, or a read error).
pub fn read_head(seg: &SegFile, off: u64, file_len: u64) -> Option<RecordHead> {
    if off + HDR as u64 > file_len {
        return None;
    }
    let mut hdr = [0u8; HDR];
    seg.read_exact_at(&mut hdr, off).ok()?;
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let lsn = u64::from_le_bytes(hdr[4..12].try_into().ok()?);
    let (data_len, redo_len) = (word(12) as u64, word(16) as u64);
    let total = HDR as u64 + data_len + redo_len;
    if total > MAX_RECORD || off + total > file_len {
        return None;
    }
    let mut redo = vec![0u8; redo_len as usize];
    seg.read_exact_at(&mut redo, off + HDR as u64 + data_len)
        .ok()?;
    Some(RecordHead {
        lsn,
        len: total,
        data_len,
        redo,
    })
}

/// Read the valid records after checkpoint `(cp_lsn, from)`: consecutive
/// LSNs from `cp_lsn + 1`, across segments in id order. Returns them and
/// the position where the log ends (where the next record goes). A
/// segment ends at its first record that is torn, corrupt or out of
/// sequence (a reused file's old records, or zeros past a seal that a
/// crash undid); the log goes on only if the next segment starts with the
/// next LSN.
pub fn recover(segs: &Segments, cp_lsn: u64, from: Pos) -> io::Result<(Vec<Record>, Pos)> {
    let mut out: Vec<Record> = Vec::new();
    let mut end = from;
    let mut next_lsn = cp_lsn + 1;
    let mut pos = from;
    loop {
        let Some(f) = segs.get(pos.seg) else {
            break;
        };
        let len = f.len()?;
        let mut found = false;
        while let Some(r) = read_record(&f, pos.off, len) {
            if r.lsn != next_lsn {
                break;
            }
            next_lsn += 1;
            pos.off += r.len();
            end = pos;
            found = true;
            out.push(r);
        }
        if !found && pos != from {
            break;
        }
        // Past this segment's last record: the log may go on in the next.
        pos = Pos {
            seg: pos.seg + 1,
            off: 0,
        };
    }
    Ok((out, end))
}

/// After recovery: cut the log at `end` (stale bytes after it must never
/// be mistaken for records later; zeros up to `prealloc`) and delete
/// segments after it.
pub fn cut(segs: &Segments, end: Pos, prealloc: u64) -> io::Result<Arc<SegFile>> {
    for id in segs.ids() {
        if id > end.seg {
            segs.remove(id)?;
        }
    }
    match segs.get(end.seg) {
        Some(f) => {
            // Stale bytes after the end (a torn record, or records of a
            // batch never acknowledged) are replaced by zeros.
            f.truncate(end.off, prealloc)?;
            Ok(f)
        }
        None => segs.create(end.seg, prealloc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of exactly `total` bytes (header included) with LSN `lsn`,
    /// its data filled with `fill`.
    fn record(lsn: u64, total: usize, fill: u8) -> RecordBuf {
        let redo = vec![7u8; 16];
        let mut r = RecordBuf::new();
        r.push_slice(&vec![fill; total - HDR - redo.len()]);
        r.seal(lsn, redo);
        assert_eq!(r.len(), total);
        r
    }

    /// Append records `lsns` to `seg` from `off`; the end.
    fn append(seg: &SegFile, mut off: u64, lsns: &[u64], total: usize) -> u64 {
        for &l in lsns {
            record(l, total, l as u8).write_at(seg, off).unwrap();
            off += total as u64;
        }
        off
    }

    fn lsns(segs: &Segments, cp: u64, from: Pos) -> (Vec<u64>, Pos) {
        let (recs, end) = recover(segs, cp, from).unwrap();
        (recs.iter().map(|r| r.lsn).collect(), end)
    }

    #[test]
    fn old_records_past_a_segments_end_end_that_segment_not_the_log() {
        // Segment 1 holds records 7 and 8, then an old record (LSN 2) that
        // a reused file kept past a seal a crash undid; segment 2 goes on
        // with 9 and 10. Recovery must read all four new records.
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(Some(dir.path())).unwrap();
        let s1 = segs.create(1, 1 << 20).unwrap();
        let end1 = append(&s1, 0, &[7, 8], 8192);
        append(&s1, end1, &[2], 8192);
        let s2 = segs.create(2, 1 << 20).unwrap();
        let end2 = append(&s2, 0, &[9, 10], 8192);
        let (got, end) = lsns(&segs, 6, Pos { seg: 1, off: 0 });
        assert_eq!(got, vec![7, 8, 9, 10]);
        assert_eq!(end, Pos { seg: 2, off: end2 });
        // The next segment must start with the next LSN: one that starts
        // with anything else is not part of the log.
        let s3 = segs.create(3, 1 << 20).unwrap();
        append(&s3, 0, &[12], 8192);
        let (got, _) = lsns(&segs, 6, Pos { seg: 1, off: 0 });
        assert_eq!(got, vec![7, 8, 9, 10]);
    }

    #[test]
    fn a_reused_file_yields_only_its_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(Some(dir.path())).unwrap();
        let s1 = segs.create(1, 1 << 20).unwrap();
        // Page-sized records: no padding, so an old record lies exactly
        // where the next new one would go.
        append(&s1, 0, &[1, 2, 3], 8192);
        drop(s1);
        let d = segs.detach(1).unwrap();
        segs.retire(vec![d]).unwrap();
        assert!(dir.path().join(spare_name(1)).exists());
        let s2 = segs.create(2, 1 << 20).unwrap();
        assert!(s2.reused());
        assert_eq!(segs.reuses(), 1);
        assert!(!dir.path().join(spare_name(1)).exists());
        // Renamed to the new segment's name, durably.
        assert!(dir.path().join(seg_name(2)).exists());
        let end = append(&s2, 0, &[4], 8192);
        let (got, e) = lsns(&segs, 3, Pos { seg: 2, off: 0 });
        assert_eq!(got, vec![4], "an old record was read as new");
        assert_eq!(e, Pos { seg: 2, off: end });
        // Nothing new in it at all (a crash right after the roll).
        let (got, e) = lsns(&segs, 4, Pos { seg: 2, off: end });
        assert!(got.is_empty());
        assert_eq!(e, Pos { seg: 2, off: end });
        // Reopened, the directory still holds exactly that log.
        drop(s2);
        let segs = Segments::open(Some(dir.path())).unwrap();
        assert_eq!(lsns(&segs, 3, Pos { seg: 2, off: 0 }).0, vec![4]);
    }

    #[test]
    fn records_in_a_reused_file_end_on_a_page_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(Some(dir.path())).unwrap();
        let s1 = segs.create(1, 1 << 20).unwrap();
        append(&s1, 0, &[1, 2], 16384);
        drop(s1);
        segs.retire(vec![segs.detach(1).unwrap()]).unwrap();
        let s2 = segs.create(2, 1 << 20).unwrap();
        // 5000 bytes: the rest of its second page is zeroed, the old bytes
        // after that page are left alone.
        let end = append(&s2, 0, &[3], 5000);
        let bytes = std::fs::read(dir.path().join(seg_name(2))).unwrap();
        assert!(bytes[end as usize..8192].iter().all(|&b| b == 0));
        assert!(
            bytes[8192..16368].iter().all(|&b| b == 1),
            "old data changed"
        );
        // A fresh file gets no such padding (its space reads as zeros).
        let s3 = segs.create(3, 1 << 20).unwrap();
        assert!(!s3.reused());
        let end = append(&s3, 0, &[4], 5000);
        assert_eq!(s3.len().unwrap(), 1 << 20);
        assert_eq!(end, 5000);
    }

    #[test]
    fn a_segment_still_held_open_is_deleted_not_reused() {
        // A reader that took the segment before it was detached could read
        // another segment's records where it expects its blocks.
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(Some(dir.path())).unwrap();
        let s1 = segs.create(1, 1 << 20).unwrap();
        append(&s1, 0, &[1], 8192);
        let d = segs.detach(1).unwrap();
        segs.retire(vec![d]).unwrap();
        assert!(!dir.path().join(seg_name(1)).exists());
        assert!(!dir.path().join(spare_name(1)).exists());
        let mut buf = [0u8; 8];
        s1.read_exact_at(&mut buf, HDR as u64).unwrap();
        assert_eq!(buf, [1u8; 8], "the holder still reads the old file");
        let s2 = segs.create(2, 1 << 20).unwrap();
        assert!(!s2.reused());
        assert_eq!(segs.reuses(), 0);
    }

    #[test]
    fn spares_are_kept_up_to_the_limit_and_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(Some(dir.path())).unwrap();
        let mut detached = Vec::new();
        for id in 1..=(MAX_SPARES as u32 + 2) {
            let s = segs.create(id, 64 << 10).unwrap();
            append(&s, 0, &[id as u64], 8192);
            drop(s);
            detached.push(segs.detach(id).unwrap());
        }
        segs.retire(detached).unwrap();
        let spares = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .filter(|e| {
                    let n = e.as_ref().unwrap().file_name();
                    n.to_str().unwrap().ends_with(".spare")
                })
                .count()
        };
        assert_eq!(spares(dir.path()), MAX_SPARES);
        assert_eq!(segs.spare_bytes(), MAX_SPARES as u64 * (64 << 10));
        let segs = Segments::open(Some(dir.path())).unwrap();
        assert!(segs.ids().is_empty(), "a spare was taken for a segment");
        assert!(segs.create(10, 64 << 10).unwrap().reused());
        assert_eq!(spares(dir.path()), MAX_SPARES - 1);
    }
}
