//! Whole-image copies: [`Rbd::copy`] (`rbd cp`, `rbd_copy*`: what one view
//! reads, into a new image) and [`Rbd::deep_copy`] (`rbd deep cp`,
//! `rbd_deep_copy`: every snapshot too, and a clone stays a clone of the
//! same parent snapshot unless flattened).
//!
//! Both go through the public image API (diff, read, write, discard,
//! resize, snapshots), so every rule of those calls (locks, object maps,
//! copy-up, snap contexts) holds for the copy as for any client's writes.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::rbd::Rbd;
use crate::{
    CreateOptions, DiffExtent, DiffOptions, Image, IoCtx, OpenOptions, ParentInfo, PoolRef,
    RbdError, Result, SnapInfo, SnapSpec,
};

/// Bytes per read/write request of a copy.
const COPY_CHUNK: u64 = 4 << 20;
/// Copy requests in flight.
const COPY_PARALLEL: usize = 4;
/// Granularity of zero detection: all-zero blocks are not written.
const SPARSE_BLOCK: usize = 4096;

/// Options of [`Rbd::copy`] and [`Rbd::deep_copy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Object size order of the copy; 0 = the source's.
    pub order: u8,
    /// Features of the copy; `None` = the source's.
    pub features: Option<u64>,
    /// Deep copy only: give the copy the parent's data instead of making it
    /// a clone of the same parent snapshot (`rbd deep cp --flatten`).
    pub flatten: bool,
}

impl CopyOptions {
    fn create_options(&self, src: &Image) -> CreateOptions {
        CreateOptions {
            order: if self.order == 0 {
                src.stat().order
            } else {
                self.order
            },
            features: Some(self.features.unwrap_or_else(|| src.features())),
        }
    }
}

/// Write `data` at `off` in `dst`, skipping all-zero blocks; where `dst`
/// may already hold data (or show its parent's), zero blocks are discarded
/// instead so that they read as zeros there too.
async fn write_sparse(dst: &Image, off: u64, data: Bytes, dst_may_hold: bool) -> Result<()> {
    let zero = |s: usize| {
        let e = (s + SPARSE_BLOCK).min(data.len());
        data[s..e].iter().all(|&b| b == 0)
    };
    let mut i = 0;
    while i < data.len() {
        let start = i;
        let z = zero(i);
        while i < data.len() && zero(i) == z {
            i += SPARSE_BLOCK;
        }
        let end = i.min(data.len());
        if !z {
            dst.write(off + start as u64, data.slice(start..end))
                .await?;
        } else if dst_may_hold {
            dst.discard(off + start as u64, (end - start) as u64)
                .await?;
        }
    }
    Ok(())
}

impl Image {
    /// Write `data` at `off`, leaving all-zero 4 KiB blocks unwritten, so
    /// holes in the source stay holes (`rbd import`, copies).
    pub async fn write_sparse(&self, off: u64, data: Bytes) -> Result<()> {
        write_sparse(self, off, data, false).await
    }
}

/// Make `dst` read what `src` reads in each extent: data extents are read
/// and written (zeros skipped or discarded, see [`write_sparse`]), extents
/// without data discarded where `dst` may hold something. `progress` gets
/// the bytes of each finished piece.
async fn copy_extents(
    src: &Image,
    dst: &Image,
    extents: &[DiffExtent],
    dst_may_hold: bool,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<()> {
    // Pieces never cross a chunk boundary, so the requests stay object-sized.
    let mut pieces = Vec::new();
    for e in extents {
        let mut o = e.offset;
        let end = e.offset + e.len;
        while o < end {
            let n = (COPY_CHUNK - o % COPY_CHUNK).min(end - o);
            pieces.push((o, n, e.exists));
            o += n;
        }
    }
    let mut done = futures::stream::iter(pieces.into_iter().map(|(off, len, exists)| async move {
        if exists {
            let data = src.read(off, len).await?;
            if data.len() as u64 != len {
                return Err(RbdError::invalid(format!(
                    "short read of {} at {off}: {} of {len} bytes",
                    src.inner.spec(),
                    data.len()
                )));
            }
            write_sparse(dst, off, data, dst_may_hold).await?;
        } else if dst_may_hold {
            dst.discard(off, len).await?;
        }
        Ok::<u64, RbdError>(len)
    }))
    .buffer_unordered(COPY_PARALLEL);
    while let Some(n) = done.try_next().await? {
        progress(n);
    }
    Ok(())
}

/// Copy every image-meta key (config overrides included), as librbd does.
async fn copy_metadata(src: &Image, dst: &Image) -> Result<()> {
    for (k, v) in src.metadata_list("", 0).await? {
        dst.metadata_set(&k, v).await?;
    }
    Ok(())
}

/// The parent of a view, `None` without one.
async fn parent_of(img: &Image) -> Result<Option<ParentInfo>> {
    match img.parent_info().await {
        Ok(p) => Ok(Some(p)),
        Err(RbdError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The parent overlap of a view, 0 without a parent.
async fn overlap_of(img: &Image) -> Result<u64> {
    Ok(parent_of(img).await?.map_or(0, |p| p.overlap))
}

/// Close `img`, keeping the first error of `r` and the close.
async fn close_after<T>(img: Image, r: Result<T>) -> Result<T> {
    let c = img.close().await;
    let v = r?;
    c?;
    Ok(v)
}

impl Rbd {
    /// `rbd cp`: a new image `dio/name` that reads what `src`'s current view
    /// (head or snapshot) reads, parent data included, with `src`'s
    /// image-meta. Sparse: all-zero 4 KiB blocks are not written. `EEXIST`
    /// if the name is taken; on a later failure the partial copy stays (as
    /// librbd's). `progress(done, total)` in bytes.
    pub async fn copy<F>(
        &self,
        src: &Image,
        dio: &IoCtx,
        name: &str,
        opts: &CopyOptions,
        mut progress: F,
    ) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        if opts.flatten {
            return Err(RbdError::invalid("flatten is an option of deep copies"));
        }
        let size = src.size();
        self.create(dio, name, size, &opts.create_options(src))
            .await?;
        let dst = self.open(dio, name, &OpenOptions::default()).await?;
        let r = async {
            copy_metadata(src, &dst).await?;
            let diff = DiffOptions {
                from_snap: None,
                include_parent: true,
                whole_object: false,
            };
            let ext = src.diff(0, size, &diff).await?;
            let data: Vec<DiffExtent> = ext.into_iter().filter(|e| e.exists).collect();
            let total = data.iter().map(|e| e.len).sum::<u64>();
            let mut done = 0;
            progress(0, total);
            copy_extents(src, &dst, &data, false, &mut |n| {
                done += n;
                progress(done, total);
            })
            .await?;
            dst.flush().await
        }
        .await;
        close_after(dst, r).await
    }

    /// `rbd deep cp`: a new image `dio/name` with `src`'s snapshots (up to
    /// and including the one `src` is at, if any; same names, protected
    /// ones protected), its head, and its image-meta. Each snapshot costs
    /// only what changed since the previous one. A clone's copy is a clone
    /// of the same parent snapshot holding only the clone's own data,
    /// unless `opts.flatten`. `EINVAL` when that parent cannot be named (in
    /// the trash: flatten instead). On a failure after creation the partial
    /// copy stays. `progress(done, total)`, in bytes of the views copied.
    pub async fn deep_copy<F>(
        &self,
        src: &Image,
        dio: &IoCtx,
        name: &str,
        opts: &CopyOptions,
        mut progress: F,
    ) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        let end = src.snap_id();
        let snaps: Vec<SnapInfo> = src
            .snap_list()
            .await?
            .into_iter()
            .filter(|s| end.is_none_or(|e| s.id <= e))
            .collect();
        let copts = opts.create_options(src);
        let open_snap = |s: &SnapInfo| {
            let o = OpenOptions {
                read_only: true,
                snap: Some(SnapSpec::Id(s.id)),
            };
            let id = src.id().to_string();
            async move { self.open_by_id(src.ioctx(), &id, &o).await }
        };

        // The oldest view decides how the copy starts: a clone of the same
        // parent snapshot, or an empty image.
        let first = match snaps.first() {
            Some(s) => Some(open_snap(s).await?),
            None => None,
        };
        let first_view = first.as_ref().unwrap_or(src);
        let parent = parent_of(first_view).await?.filter(|_| !opts.flatten);
        let first_size = first_view.size();
        if let Some(f) = first {
            f.close().await?;
        }
        match &parent {
            Some(p) => {
                if p.image_name.is_empty() || p.snap_name.is_empty() || p.in_trash {
                    return Err(RbdError::invalid(format!(
                        "the parent of {} ({}/{}@{}) cannot be cloned by name; \
                         deep copy with flatten instead",
                        src.inner.spec(),
                        p.pool_name,
                        p.image_id,
                        p.snap_id
                    )));
                }
                let pio = self.ioctx(PoolRef::Id(p.pool_id), &p.namespace).await?;
                self.clone(&pio, &p.image_name, &p.snap_name, dio, name, &copts)
                    .await?;
            }
            None => self.create(dio, name, first_size, &copts).await?,
        }
        let dst = self.open(dio, name, &OpenOptions::default()).await?;
        let is_clone = parent.is_some();
        let total = snaps.iter().map(|s| s.size).sum::<u64>() + end.map_or(src.size(), |_| 0);
        let r = async {
            copy_metadata(src, &dst).await?;
            let mut done = 0u64;
            progress(0, total);
            let mut prev: Option<String> = None;
            // Each snapshot in id order, then the head (when `src` is at it).
            for step in snaps.iter().map(Some).chain(end.is_none().then_some(None)) {
                let view = match step {
                    Some(s) => Some(open_snap(s).await?),
                    None => None,
                };
                let h = view.as_ref().unwrap_or(src);
                let r = async {
                    let size = h.size();
                    if is_clone {
                        // A shrink cuts a clone's overlap for good: make the
                        // copy's as short before growing it back.
                        let want = overlap_of(h).await?;
                        if want < overlap_of(&dst).await? {
                            dst.resize(want).await?;
                        }
                    }
                    if dst.size() != size {
                        dst.resize(size).await?;
                    }
                    // In a clone, an object that exists hides the parent
                    // over its whole extent (zeros past its end, an empty
                    // one is a whiteout), which exact extents do not show:
                    // clones copy whole objects (as librbd's deep copy).
                    let diff = DiffOptions {
                        from_snap: prev.clone(),
                        include_parent: !is_clone && prev.is_none(),
                        whole_object: is_clone,
                    };
                    let ext = h.diff(0, size, &diff).await?;
                    let may_hold = is_clone || prev.is_some();
                    copy_extents(h, &dst, &ext, may_hold, &mut |_| {}).await?;
                    dst.flush().await?;
                    if let Some(s) = step {
                        dst.snap_create(&s.name).await?;
                        if s.protected {
                            dst.snap_protect(&s.name).await?;
                        }
                    }
                    Ok(size)
                }
                .await;
                let size = match view {
                    Some(v) => close_after(v, r).await?,
                    None => r?,
                };
                done += size;
                progress(done, total);
                prev = step.map(|s| s.name.clone());
            }
            // The source's head was flattened after its oldest snapshot:
            // its own objects now hold the parent's data, so the copy's do
            // too, and only the link is left to cut.
            if is_clone && end.is_none() && parent_of(src).await?.is_none() {
                dst.flatten(|_, _| {}).await?;
            }
            dst.flush().await
        }
        .await;
        close_after(dst, r).await
    }
}
