//! `quarry-fsx`: random operations on images through the image engine,
//! checked byte for byte against a plain in-memory model — Ceph's `rbd fsx`
//! idea applied to Quarry.
//!
//! The model of an image is just its bytes. That is enough for every
//! operation exercised here: a clone starts as a copy of its parent
//! snapshot's bytes (reads falling through to the parent must produce
//! exactly those), shrinking a clone and growing it again exposes zeros
//! (the overlap shrank), flatten changes nothing visible, rollback restores
//! the snapshot's bytes and size, discard and write-zeroes read as zeros.
//!
//! A run is fully determined by its seed (our own PRNG, stable forever), so
//! a failure prints the seed, the failing op number and the last ops, and
//! `quarry-fsx --seed N --ops M` replays it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::Rados;
use quarry_rbd::{
    CreateOptions, DiffOptions, Image, IoCtx, OpenOptions, Rbd, RbdError, SnapSpec,
    WRITE_ZEROES_FLAG_THICK_PROVISION,
};
use quarry_store::Embedded;

/// SplitMix64: tiny, fast, and fixed forever, so seeds stay reproducible
/// across dependency upgrades (unlike `rand`'s `StdRng`).
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// Fill a buffer with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct FsxConfig {
    /// PRNG seed: the same seed replays the same run.
    pub seed: u64,
    /// Number of random operations.
    pub ops: u64,
    /// Largest image size in bytes.
    pub max_size: u64,
    /// Most images alive at once (parents and clones).
    pub max_images: usize,
    /// Store directory; `None` = in-memory store (no reopen ops then).
    pub dir: Option<PathBuf>,
    /// Percent chance per op of closing everything and reopening the store
    /// (a simulated crash: nothing is shut down cleanly), disk only.
    pub reopen_pct: u64,
    /// How many recent ops a failure report shows.
    pub log_tail: usize,
}

impl Default for FsxConfig {
    fn default() -> Self {
        FsxConfig {
            seed: 1,
            ops: 1000,
            max_size: 6 << 20,
            max_images: 8,
            dir: None,
            reopen_pct: 0,
            log_tail: 40,
        }
    }
}

/// Counters of a successful run.
#[derive(Clone, Debug, Default)]
pub struct FsxReport {
    /// Ops executed, by name.
    pub counts: BTreeMap<&'static str, u64>,
    /// Bytes compared against the model.
    pub bytes_verified: u64,
}

/// A failed run: everything needed to reproduce and understand it.
#[derive(Debug)]
pub struct FsxFailure {
    /// The run's seed.
    pub seed: u64,
    /// Index of the failing op.
    pub op: u64,
    /// What went wrong.
    pub message: String,
    /// The last ops before the failure, oldest first.
    pub recent: Vec<String>,
}

impl fmt::Display for FsxFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fsx failed at op {} (seed {}; replay: quarry-fsx --seed {} --ops {}): {}",
            self.op,
            self.seed,
            self.seed,
            self.op + 1,
            self.message
        )?;
        writeln!(f, "last {} ops:", self.recent.len())?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FsxFailure {}

struct MSnap {
    name: String,
    data: Vec<u8>,
    protected: bool,
    children: usize,
}

struct MImage {
    name: String,
    data: Vec<u8>,
    snaps: Vec<MSnap>,
    parent: Option<(String, String)>,
    /// The parent snapshot this image was cloned from, until it is removed:
    /// flatten keeps the child link while the clone's own snapshots still
    /// read through the parent (no deep-flatten), so unprotect may be
    /// refused even after flatten.
    link: Option<(String, String)>,
    handle: Option<Image>,
}

struct Run {
    cfg: FsxConfig,
    rng: Prng,
    /// The embedded store when fsx owns it (`None` on an external backend,
    /// e.g. a cluster: no reopen ops then).
    embedded: Option<Arc<Embedded>>,
    rbd: Rbd,
    io: IoCtx,
    images: Vec<MImage>,
    counter: u64,
    log: VecDeque<String>,
    report: FsxReport,
    /// Index of the next op (for failure reports and progress).
    next_op: u64,
    /// The op under way, shared with whoever watches for a stall.
    current: Arc<std::sync::Mutex<String>>,
}

type Step = Result<(), String>;

fn fail(what: impl fmt::Display, e: RbdError) -> String {
    format!("{what}: unexpected error {e} (errno {:?})", e.errno())
}

fn compare(what: &str, off: u64, got: &[u8], want: &[u8]) -> Step {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: read returned {} bytes, model has {}",
            got.len(),
            want.len()
        ));
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        return Err(format!(
            "{what}: byte at image offset {} is {:#04x}, model says {:#04x}",
            off + i as u64,
            got[i],
            want[i]
        ));
    }
    Ok(())
}

async fn open_backend(cfg: &FsxConfig) -> Result<Arc<Embedded>, String> {
    match &cfg.dir {
        Some(d) => Embedded::open(d).map_err(|e| format!("open store {}: {e}", d.display())),
        None => Embedded::open_memory().map_err(|e| format!("open memory store: {e}")),
    }
}

impl Run {
    fn note(&mut self, line: String) {
        if self.log.len() == self.cfg.log_tail {
            self.log.pop_front();
        }
        if let Ok(mut c) = self.current.lock() {
            c.clone_from(&line);
        }
        self.log.push_back(line);
    }

    fn count(&mut self, what: &'static str) {
        *self.report.counts.entry(what).or_default() += 1;
    }

    fn handle(&self, i: usize) -> Result<&Image, String> {
        self.images[i]
            .handle
            .as_ref()
            .ok_or_else(|| format!("image {} has no open handle", self.images[i].name))
    }

    fn pick_image(&mut self) -> usize {
        self.rng.below(self.images.len() as u64) as usize
    }

    /// A range inside `size`, biased to straddle object boundaries.
    fn pick_range(&mut self, size: u64, max_len: u64) -> (u64, u64) {
        let off = self.rng.below(size);
        let room = size - off;
        let len = 1 + self.rng.below(max_len.min(room));
        (off, len)
    }

    async fn create_image(&mut self) -> Step {
        self.counter += 1;
        let name = format!("img{}", self.counter);
        let orders = [12u8, 14, 16, 20, 22];
        let order = orders[self.rng.below(orders.len() as u64) as usize];
        let size = self.rng.below(self.cfg.max_size + 1);
        self.note(format!("create {name} size={size} order={order}"));
        let opts = CreateOptions {
            order,
            features: None,
        };
        self.rbd
            .create(&self.io, &name, size, &opts)
            .await
            .map_err(|e| fail(format!("create {name}"), e))?;
        let handle = self
            .rbd
            .open(&self.io, &name, &OpenOptions::default())
            .await
            .map_err(|e| fail(format!("open {name}"), e))?;
        self.images.push(MImage {
            name,
            data: vec![0; size as usize],
            snaps: Vec::new(),
            parent: None,
            link: None,
            handle: Some(handle),
        });
        self.count("create");
        Ok(())
    }

    async fn op_write(&mut self) -> Step {
        let i = self.pick_image();
        let size = self.images[i].data.len() as u64;
        if size == 0 {
            return Ok(());
        }
        let (off, len) = self.pick_range(size, 3 << 16);
        let mut buf = vec![0u8; len as usize];
        self.rng.fill(&mut buf);
        self.note(format!("write {} off={off} len={len}", self.images[i].name));
        let n = self
            .handle(i)?
            .write(off, Bytes::from(buf.clone()))
            .await
            .map_err(|e| fail("write", e))?;
        if n != len {
            return Err(format!("write returned {n}, expected {len}"));
        }
        self.images[i].data[off as usize..(off + len) as usize].copy_from_slice(&buf);
        self.count("write");
        Ok(())
    }

    async fn op_read(&mut self) -> Step {
        let i = self.pick_image();
        let size = self.images[i].data.len() as u64;
        if size == 0 {
            return Ok(());
        }
        let (off, len) = self.pick_range(size, 3 << 16);
        self.note(format!("read {} off={off} len={len}", self.images[i].name));
        let got = self
            .handle(i)?
            .read(off, len)
            .await
            .map_err(|e| fail("read", e))?;
        let want = &self.images[i].data[off as usize..(off + len) as usize];
        compare("read", off, &got, want)?;
        self.report.bytes_verified += len;
        self.count("read");
        Ok(())
    }

    async fn op_zero(&mut self, discard: bool) -> Step {
        let i = self.pick_image();
        let size = self.images[i].data.len() as u64;
        if size == 0 {
            return Ok(());
        }
        let (off, len) = self.pick_range(size, 1 << 20);
        let name = self.images[i].name.clone();
        let r = if discard {
            self.note(format!("discard {name} off={off} len={len}"));
            self.handle(i)?.discard(off, len).await
        } else {
            let flags = if self.rng.chance(50) {
                WRITE_ZEROES_FLAG_THICK_PROVISION
            } else {
                0
            };
            self.note(format!(
                "write_zeroes {name} off={off} len={len} flags={flags}"
            ));
            self.handle(i)?.write_zeroes(off, len, flags).await
        };
        r.map_err(|e| fail(if discard { "discard" } else { "write_zeroes" }, e))?;
        self.images[i].data[off as usize..(off + len) as usize].fill(0);
        self.count(if discard { "discard" } else { "write_zeroes" });
        Ok(())
    }

    async fn op_resize(&mut self) -> Step {
        let i = self.pick_image();
        let new = self.rng.below(self.cfg.max_size + 1);
        self.note(format!(
            "resize {} {} -> {new}",
            self.images[i].name,
            self.images[i].data.len()
        ));
        self.handle(i)?
            .resize(new)
            .await
            .map_err(|e| fail("resize", e))?;
        self.images[i].data.resize(new as usize, 0);
        self.count("resize");
        Ok(())
    }

    async fn op_snap_create(&mut self) -> Step {
        let i = self.pick_image();
        if self.images[i].snaps.len() >= 6 {
            return Ok(());
        }
        self.counter += 1;
        let name = format!("s{}", self.counter);
        self.note(format!("snap create {}@{name}", self.images[i].name));
        self.handle(i)?
            .snap_create(&name)
            .await
            .map_err(|e| fail("snap create", e))?;
        let data = self.images[i].data.clone();
        self.images[i].snaps.push(MSnap {
            name,
            data,
            protected: false,
            children: 0,
        });
        self.count("snap_create");
        Ok(())
    }

    fn pick_snap(&mut self, i: usize) -> Option<usize> {
        let n = self.images[i].snaps.len() as u64;
        (n > 0).then(|| self.rng.below(n) as usize)
    }

    async fn op_snap_remove(&mut self) -> Step {
        let i = self.pick_image();
        let Some(s) = self.pick_snap(i) else {
            return Ok(());
        };
        let name = self.images[i].snaps[s].name.clone();
        self.note(format!("snap rm {}@{name}", self.images[i].name));
        let r = self.handle(i)?.snap_remove(&name).await;
        if self.images[i].snaps[s].protected {
            match r {
                Err(e) if e.errno() == Errno::EBUSY => {
                    self.count("snap_remove_refused");
                    return Ok(());
                }
                other => {
                    return Err(format!(
                        "snap rm of protected snapshot {name}: expected EBUSY, got {other:?}"
                    ))
                }
            }
        }
        r.map_err(|e| fail("snap rm", e))?;
        self.images[i].snaps.remove(s);
        self.count("snap_remove");
        Ok(())
    }

    async fn op_rollback(&mut self) -> Step {
        let i = self.pick_image();
        let Some(s) = self.pick_snap(i) else {
            return Ok(());
        };
        let name = self.images[i].snaps[s].name.clone();
        self.note(format!("snap rollback {}@{name}", self.images[i].name));
        self.handle(i)?
            .snap_rollback(&name)
            .await
            .map_err(|e| fail("rollback", e))?;
        self.images[i].data = self.images[i].snaps[s].data.clone();
        self.count("rollback");
        Ok(())
    }

    async fn op_read_snap(&mut self) -> Step {
        let i = self.pick_image();
        let Some(s) = self.pick_snap(i) else {
            return Ok(());
        };
        let name = self.images[i].snaps[s].name.clone();
        let size = self.images[i].snaps[s].data.len() as u64;
        let opts = OpenOptions {
            read_only: true,
            snap: Some(SnapSpec::Name(name.clone())),
        };
        let img_name = self.images[i].name.clone();
        let h = self
            .rbd
            .open(&self.io, &img_name, &opts)
            .await
            .map_err(|e| fail(format!("open {img_name}@{name}"), e))?;
        if h.size() != size {
            return Err(format!(
                "{img_name}@{name}: size {} but the snapshot was taken at {size}",
                h.size()
            ));
        }
        if size > 0 {
            let (off, len) = self.pick_range(size, 2 << 20);
            self.note(format!("read {img_name}@{name} off={off} len={len}"));
            let got = h.read(off, len).await.map_err(|e| fail("read snap", e))?;
            let want = &self.images[i].snaps[s].data[off as usize..(off + len) as usize];
            compare(&format!("read {img_name}@{name}"), off, &got, want)?;
            self.report.bytes_verified += len;
            // A snapshot is read-only, whatever the handle asked for.
            match h.write(off, Bytes::from_static(b"x")).await {
                Err(e) if e.errno() == Errno::EROFS => {}
                other => return Err(format!("write to snapshot: expected EROFS, got {other:?}")),
            }
        }
        h.close().await.map_err(|e| fail("close snap handle", e))?;
        self.count("read_snap");
        Ok(())
    }

    async fn op_protect(&mut self, protect: bool) -> Step {
        let i = self.pick_image();
        let Some(s) = self.pick_snap(i) else {
            return Ok(());
        };
        let name = self.images[i].snaps[s].name.clone();
        let was = self.images[i].snaps[s].protected;
        if protect == was {
            return Ok(());
        }
        let img = self.images[i].name.clone();
        if protect {
            self.note(format!("snap protect {img}@{name}"));
            self.handle(i)?
                .snap_protect(&name)
                .await
                .map_err(|e| fail("protect", e))?;
            self.images[i].snaps[s].protected = true;
            self.count("protect");
        } else {
            self.note(format!("snap unprotect {img}@{name}"));
            let r = self.handle(i)?.snap_unprotect(&name).await;
            if self.images[i].snaps[s].children > 0 {
                match r {
                    Err(e) if e.errno() == Errno::EBUSY => {
                        self.count("unprotect_refused");
                        return Ok(());
                    }
                    other => {
                        return Err(format!(
                            "unprotect {img}@{name} with clones: expected EBUSY, got {other:?}"
                        ))
                    }
                }
            }
            let key = (img.clone(), name.clone());
            let linked = self.images.iter().any(|m| m.link.as_ref() == Some(&key));
            match r {
                Err(e) if linked && e.errno() == Errno::EBUSY => {
                    self.count("unprotect_refused");
                    return Ok(());
                }
                r => r.map_err(|e| fail("unprotect", e))?,
            }
            self.images[i].snaps[s].protected = false;
            self.count("unprotect");
        }
        Ok(())
    }

    async fn op_clone(&mut self) -> Step {
        if self.images.len() >= self.cfg.max_images {
            return Ok(());
        }
        let i = self.pick_image();
        let Some(s) = self.pick_snap(i) else {
            return Ok(());
        };
        if !self.images[i].snaps[s].protected {
            return Ok(());
        }
        self.counter += 1;
        let child = format!("clone{}", self.counter);
        let parent = self.images[i].name.clone();
        let snap = self.images[i].snaps[s].name.clone();
        self.note(format!("clone {parent}@{snap} -> {child}"));
        self.rbd
            .clone(
                &self.io,
                &parent,
                &snap,
                &self.io,
                &child,
                &CreateOptions::default(),
            )
            .await
            .map_err(|e| fail("clone", e))?;
        let handle = self
            .rbd
            .open(&self.io, &child, &OpenOptions::default())
            .await
            .map_err(|e| fail(format!("open {child}"), e))?;
        let data = self.images[i].snaps[s].data.clone();
        self.images[i].snaps[s].children += 1;
        self.images.push(MImage {
            name: child,
            data,
            snaps: Vec::new(),
            parent: Some((parent.clone(), snap.clone())),
            link: Some((parent, snap)),
            handle: Some(handle),
        });
        self.count("clone");
        Ok(())
    }

    fn release_parent(&mut self, parent: &(String, String)) {
        if let Some(p) = self.images.iter_mut().find(|m| m.name == parent.0) {
            if let Some(s) = p.snaps.iter_mut().find(|s| s.name == parent.1) {
                s.children = s.children.saturating_sub(1);
            }
        }
    }

    async fn op_flatten(&mut self) -> Step {
        let i = self.pick_image();
        let Some(parent) = self.images[i].parent.clone() else {
            return Ok(());
        };
        self.note(format!("flatten {}", self.images[i].name));
        let mut calls = 0u64;
        self.handle(i)?
            .flatten(|_, _| calls += 1)
            .await
            .map_err(|e| fail("flatten", e))?;
        self.images[i].parent = None;
        self.release_parent(&parent);
        self.count("flatten");
        Ok(())
    }

    async fn op_remove(&mut self) -> Step {
        if self.images.len() <= 1 {
            return Ok(());
        }
        let i = self.pick_image();
        if !self.images[i].snaps.is_empty() && self.rng.chance(50) {
            // Refused while snapshots exist.
            let name = self.images[i].name.clone();
            match self.rbd.remove(&self.io, &name).await {
                Err(e) if e.errno() == Errno::ENOTEMPTY || e.errno() == Errno::EBUSY => {
                    self.count("remove_refused");
                    return Ok(());
                }
                other => {
                    return Err(format!(
                        "rm {name} with snapshots: expected ENOTEMPTY, got {other:?}"
                    ))
                }
            }
        }
        let name = self.images[i].name.clone();
        // Purge (`rbd snap purge`) when no clone depends on a snapshot,
        // so images with history get removed too and clones keep coming.
        if !self.images[i].snaps.is_empty() {
            let busy = self.images[i].snaps.iter().any(|sn| {
                let key = (name.clone(), sn.name.clone());
                sn.children > 0 || self.images.iter().any(|m| m.link.as_ref() == Some(&key))
            });
            if busy {
                return Ok(());
            }
            self.note(format!("snap purge {name}"));
            while let Some(sn) = self.images[i].snaps.pop() {
                let h = self.handle(i)?;
                if sn.protected {
                    h.snap_unprotect(&sn.name)
                        .await
                        .map_err(|e| fail(format!("purge: unprotect {name}@{}", sn.name), e))?;
                }
                h.snap_remove(&sn.name)
                    .await
                    .map_err(|e| fail(format!("purge: snap rm {name}@{}", sn.name), e))?;
            }
        }
        self.note(format!("rm {name}"));
        if let Some(h) = self.images[i].handle.take() {
            h.close().await.map_err(|e| fail("close", e))?;
        }
        self.rbd
            .remove(&self.io, &name)
            .await
            .map_err(|e| fail(format!("rm {name}"), e))?;
        let m = self.images.remove(i);
        if let Some(p) = &m.parent {
            self.release_parent(p);
        }
        self.count("remove");
        Ok(())
    }

    /// Exact diff since a snapshot must cover every byte that changed.
    async fn op_diff(&mut self) -> Step {
        let i = self.pick_image();
        let Some(s) = self.pick_snap(i) else {
            return Ok(());
        };
        let snap = self.images[i].snaps[s].name.clone();
        let size = self.images[i].data.len() as u64;
        if size == 0 {
            return Ok(());
        }
        self.note(format!("diff {} from {snap}", self.images[i].name));
        let opts = DiffOptions {
            from_snap: Some(snap.clone()),
            include_parent: false,
            whole_object: self.rng.chance(30),
        };
        let exts = self
            .handle(i)?
            .diff(0, size, &opts)
            .await
            .map_err(|e| fail("diff", e))?;
        let mut last_end = 0u64;
        for e in &exts {
            if e.offset < last_end || e.len == 0 || e.offset + e.len > size {
                return Err(format!(
                    "diff extents not ascending/inside the image: {exts:?}"
                ));
            }
            last_end = e.offset + e.len;
        }
        let old = &self.images[i].snaps[s].data;
        let now = &self.images[i].data;
        let mut idx = 0usize;
        for (pos, &after) in now.iter().enumerate() {
            let before = old.get(pos).copied().unwrap_or(0);
            if before == after {
                continue;
            }
            while idx < exts.len() && exts[idx].offset + exts[idx].len <= pos as u64 {
                idx += 1;
            }
            let covered = idx < exts.len() && exts[idx].offset <= pos as u64;
            if !covered {
                let near: Vec<_> = exts
                    .iter()
                    .filter(|e| {
                        e.offset + e.len + (1 << 20) > pos as u64
                            && e.offset < pos as u64 + (1 << 20)
                    })
                    .collect();
                return Err(format!(
                    "diff from {snap} (whole_object={}) misses changed byte at {pos} (was {before:#04x}, now {:#04x}); {} extents, those within 1 MiB: {near:?}",
                    opts.whole_object,
                    after,
                    exts.len()
                ));
            }
        }
        self.count("diff");
        Ok(())
    }

    async fn verify_all(&mut self) -> Step {
        for i in 0..self.images.len() {
            let size = self.images[i].data.len() as u64;
            let h = self.handle(i)?;
            if h.size() != size {
                return Err(format!(
                    "{}: size {} but model has {size}",
                    self.images[i].name,
                    h.size()
                ));
            }
            if size == 0 {
                continue;
            }
            let got = h.read(0, size).await.map_err(|e| fail("verify read", e))?;
            compare(
                &format!("verify {}", self.images[i].name),
                0,
                &got,
                &self.images[i].data,
            )?;
            self.report.bytes_verified += size;
        }
        self.count("verify_all");
        Ok(())
    }

    /// Read every image and every snapshot through handles opened afresh
    /// (headers and object maps loaded from the store, nothing cached) and
    /// compare them with the model.
    async fn verify_cold(&mut self) -> Step {
        for i in 0..self.images.len() {
            let name = self.images[i].name.clone();
            let mut views: Vec<(Option<String>, Vec<u8>)> =
                vec![(None, self.images[i].data.clone())];
            views.extend(
                self.images[i]
                    .snaps
                    .iter()
                    .map(|s| (Some(s.name.clone()), s.data.clone())),
            );
            for (snap, want) in views {
                let what = match &snap {
                    Some(s) => format!("{name}@{s}"),
                    None => name.clone(),
                };
                let opts = OpenOptions {
                    read_only: true,
                    snap: snap.map(SnapSpec::Name),
                };
                let h = self
                    .rbd
                    .open(&self.io, &name, &opts)
                    .await
                    .map_err(|e| fail(format!("cold open {what}"), e))?;
                if h.size() != want.len() as u64 {
                    return Err(format!(
                        "cold {what}: size {} but model has {}",
                        h.size(),
                        want.len()
                    ));
                }
                if !want.is_empty() {
                    let got = h
                        .read(0, want.len() as u64)
                        .await
                        .map_err(|e| fail(format!("cold read {what}"), e))?;
                    compare(&format!("cold verify {what}"), 0, &got, &want)?;
                    self.report.bytes_verified += want.len() as u64;
                }
                h.close()
                    .await
                    .map_err(|e| fail(format!("close cold handle of {what}"), e))?;
            }
        }
        self.count("verify_cold");
        Ok(())
    }

    /// Drop every handle and the store without a clean shutdown, reopen.
    async fn op_reopen(&mut self) -> Step {
        self.note("reopen store (simulated crash)".into());
        for m in &mut self.images {
            m.handle = None;
        }
        // Release the old store (its file lock) before reopening: swap in
        // a throwaway in-memory backend so nothing refers to it any more.
        let placeholder = Embedded::open_memory().map_err(|e| format!("placeholder store: {e}"))?;
        self.rbd = Rbd::new(placeholder.client());
        self.embedded = Some(placeholder);
        // Dropped handles release their last references from tasks they
        // spawn (unwatch), so the file lock may take a moment to go.
        let mut tries = 0;
        let embedded = loop {
            match open_backend(&self.cfg).await {
                Ok(e) => break e,
                Err(e) if tries < 500 && e.contains("already open") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let rados: Arc<dyn Rados> = embedded.client();
        self.embedded = Some(embedded);
        self.rbd = Rbd::new(rados);
        self.io = self
            .rbd
            .ioctx("rbd", "")
            .await
            .map_err(|e| fail("ioctx after reopen", e))?;
        for i in 0..self.images.len() {
            let name = self.images[i].name.clone();
            let h = self
                .rbd
                .open(&self.io, &name, &OpenOptions::default())
                .await
                .map_err(|e| fail(format!("reopen {name}"), e))?;
            self.images[i].handle = Some(h);
        }
        self.count("reopen");
        self.verify_all().await
    }

    async fn step(&mut self) -> Step {
        if self.images.is_empty() {
            return self.create_image().await;
        }
        let roll = self.rng.below(100);
        match roll {
            0..=29 => self.op_write().await,
            30..=47 => self.op_read().await,
            48..=52 => self.op_zero(true).await,
            53..=56 => self.op_zero(false).await,
            57..=61 => self.op_resize().await,
            62..=67 => self.op_snap_create().await,
            68..=70 => self.op_snap_remove().await,
            71..=73 => self.op_rollback().await,
            74..=78 => self.op_read_snap().await,
            79..=81 => self.op_protect(true).await,
            82..=83 => self.op_protect(false).await,
            84..=87 => self.op_clone().await,
            88..=89 => self.op_flatten().await,
            90..=91 => self.op_remove().await,
            92..=94 => self.op_diff().await,
            95..=96 => {
                if self.images.len() < self.cfg.max_images {
                    self.create_image().await
                } else {
                    self.op_read().await
                }
            }
            _ => {
                // Only on-disk runs roll for a reopen (as always: in-memory
                // seeds keep replaying the same ops).
                if self.cfg.dir.is_some()
                    && self.embedded.is_some()
                    && self.rng.chance(self.cfg.reopen_pct * 25)
                {
                    self.op_reopen().await
                } else {
                    self.verify_all().await
                }
            }
        }
    }
}

/// Run one fsx session on an embedded store (in memory, or on disk in
/// `cfg.dir`). Returns counters, or a reproducible failure.
pub async fn run(cfg: FsxConfig) -> Result<FsxReport, FsxFailure> {
    let seed = cfg.seed;
    let setup = async {
        let embedded = open_backend(&cfg).await?;
        let rados: Arc<dyn Rados> = embedded.client();
        rados
            .pool_create("rbd")
            .await
            .map_err(|e| format!("pool create: {e}"))?;
        Ok::<_, String>((embedded, rados))
    };
    let (embedded, rados) = setup.await.map_err(|message| FsxFailure {
        seed,
        op: 0,
        message,
        recent: Vec::new(),
    })?;
    let mut fsx = Fsx::start(cfg, rados, "rbd", Some(embedded)).await?;
    let ops = fsx.run.cfg.ops;
    fsx.ops(ops).await?;
    fsx.verify().await?;
    Ok(fsx.run.report)
}

/// Run one fsx session through any object-layer backend (e.g. the
/// networked cluster client) in an existing pool: `cfg.ops` random ops,
/// then a full verification. No reopen ops (fsx does not own the store;
/// `cfg.dir` must be `None`): a seed runs the ops it runs in memory.
pub async fn run_on(
    cfg: FsxConfig,
    rados: Arc<dyn Rados>,
    pool: &str,
) -> Result<FsxReport, FsxFailure> {
    let mut fsx = Fsx::new(cfg, rados, pool).await?;
    let ops = fsx.run.cfg.ops;
    fsx.ops(ops).await?;
    fsx.verify().await?;
    Ok(fsx.run.report)
}

/// A session that runs in steps, so a caller can act between them (cut a
/// link, kill a daemon) and verify everything at the end.
pub struct Fsx {
    run: Run,
}

impl Fsx {
    /// A session on `rados`, with images in the existing pool `pool`.
    /// Image names carry no per-run prefix: use a pool per session.
    pub async fn new(cfg: FsxConfig, rados: Arc<dyn Rados>, pool: &str) -> Result<Fsx, FsxFailure> {
        Fsx::start(cfg, rados, pool, None).await
    }

    async fn start(
        cfg: FsxConfig,
        rados: Arc<dyn Rados>,
        pool: &str,
        embedded: Option<Arc<Embedded>>,
    ) -> Result<Fsx, FsxFailure> {
        let seed = cfg.seed;
        let rbd = Rbd::new(rados);
        let io = rbd.ioctx(pool, "").await.map_err(|e| FsxFailure {
            seed,
            op: 0,
            message: fail("ioctx", e),
            recent: Vec::new(),
        })?;
        Ok(Fsx {
            run: Run {
                rng: Prng::new(seed),
                cfg,
                embedded,
                rbd,
                io,
                images: Vec::new(),
                counter: 0,
                log: VecDeque::new(),
                report: FsxReport::default(),
                next_op: 0,
                current: Default::default(),
            },
        })
    }

    /// Run `n` more random ops (the PRNG continues: `ops(a)` then `ops(b)`
    /// does exactly what `ops(a + b)` does).
    pub async fn ops(&mut self, n: u64) -> Result<(), FsxFailure> {
        for _ in 0..n {
            let r = self.run.step().await;
            self.check(r)?;
            self.run.next_op += 1;
        }
        Ok(())
    }

    /// Read every image whole and compare it with the model.
    pub async fn verify(&mut self) -> Result<(), FsxFailure> {
        let r = self.run.verify_all().await;
        self.check(r)
    }

    /// Read every image and snapshot through freshly opened handles
    /// (stored headers and object maps, no cached state) against the model.
    pub async fn verify_cold(&mut self) -> Result<(), FsxFailure> {
        let r = self.run.verify_cold().await;
        self.check(r)
    }

    /// The op under way (or the last one run), as the failure report
    /// names it; readable from another task while an op hangs.
    pub fn current_op(&self) -> Arc<std::sync::Mutex<String>> {
        self.run.current.clone()
    }

    /// Ops run so far.
    pub fn ops_done(&self) -> u64 {
        self.run.next_op
    }

    /// Counters so far.
    pub fn report(&self) -> &FsxReport {
        &self.run.report
    }

    fn check(&self, r: Step) -> Result<(), FsxFailure> {
        r.map_err(|message| FsxFailure {
            seed: self.run.cfg.seed,
            op: self.run.next_op,
            message,
            recent: self.run.log.iter().cloned().collect(),
        })
    }
}
