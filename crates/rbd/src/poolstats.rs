//! `rbd pool stats` / `rbd_pool_stats_get`: how many images a pool (or
//! namespace) holds, their snapshots and provisioned bytes, for the images
//! in use and for those in the trash, read from the image headers.

use futures::{StreamExt, TryStreamExt};

use crate::header::read_header;
use crate::layout::header_oid;
use crate::rbd::Rbd;
use crate::{IoCtx, RbdError, Result};

/// Headers read at once.
const PARALLEL_HEADERS: usize = 16;

/// Totals over a set of images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageTotals {
    /// Images.
    pub count: u64,
    /// Sum of the images' current sizes.
    pub provisioned_bytes: u64,
    /// Sum over the images of the largest of their size and their
    /// snapshots' sizes (what they may hold at most).
    pub max_provisioned_bytes: u64,
    /// Snapshots of these images.
    pub snapshots: u64,
}

/// A pool's (namespace's) images: in use, and in the trash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Images listed in the directory.
    pub images: ImageTotals,
    /// Images in the trash.
    pub trash: ImageTotals,
}

impl Rbd {
    /// Image counts, snapshots and provisioned bytes of `io`'s images and
    /// trashed images (`rbd pool stats`). An image removed while it is
    /// counted is left out.
    pub async fn pool_stats(&self, io: &IoCtx) -> Result<PoolStats> {
        let images = self.list(io).await?.into_iter().map(|e| e.id).collect();
        let trash = self
            .trash_list(io)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        Ok(PoolStats {
            images: self.totals(io, images).await?,
            trash: self.totals(io, trash).await?,
        })
    }

    async fn totals(&self, io: &IoCtx, ids: Vec<String>) -> Result<ImageTotals> {
        let rados = self.rados().as_ref();
        let headers = futures::stream::iter(ids.into_iter().map(|id| async move {
            let what = format!("image id {id} in {}", io.spec(""));
            match read_header(rados, &io.oid(header_oid(&id)), &what).await {
                Ok(h) => Ok(Some(h)),
                Err(RbdError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .buffer_unordered(PARALLEL_HEADERS);
        headers
            .try_fold(ImageTotals::default(), |mut t, h| async move {
                if let Some(h) = h {
                    let max = h.snaps.values().map(|s| s.size).fold(h.size, u64::max);
                    t.count += 1;
                    t.provisioned_bytes += h.size;
                    t.max_provisioned_bytes += max;
                    t.snapshots += h.snaps.len() as u64;
                }
                Ok(t)
            })
            .await
    }
}
