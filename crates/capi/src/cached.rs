//! The rbd cache in front of an open image: an [`ImageBackend`] that sends
//! I/O through a `quarry-rbdcache` cache and writes the cache back (or
//! drops it) around the operations that need it, as librbd does.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quarry_rbdcache::{Backend, Cache, CacheConfig, Stats};

use crate::engine::{
    CError, CResult, DiffExtent, ImageBackend, ImageInfo, ParentInfo, PreReleaseHook, SnapInfo,
};

/// The engine's image as the cache's backend.
struct Under(Arc<dyn ImageBackend>);

#[async_trait]
impl Backend for Under {
    type Error = CError;
    async fn read(&self, off: u64, len: u64) -> CResult<Bytes> {
        self.0.read(off, len).await
    }
    async fn write(&self, off: u64, data: Bytes) -> CResult<()> {
        self.0.write(off, data).await
    }
    async fn discard(&self, off: u64, len: u64) -> CResult<()> {
        self.0.discard(off, len).await
    }
    async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> CResult<()> {
        self.0.write_zeroes(off, len, thick).await
    }
    async fn flush(&self) -> CResult<()> {
        self.0.flush().await
    }
}

/// An open image behind the rbd cache (writeback or writethrough mode).
pub struct CachedBackend {
    inner: Arc<dyn ImageBackend>,
    /// Shared with the exclusive lock's pre-release hook.
    cache: Arc<Cache<Under>>,
}

impl CachedBackend {
    /// Put a cache with `cfg` in front of `inner`.
    pub fn new(inner: Arc<dyn ImageBackend>, cfg: CacheConfig) -> CachedBackend {
        let cache = Arc::new(Cache::new(Under(inner.clone()), cfg, &crate::rt::handle()));
        CachedBackend { inner, cache }
    }

    /// The cache's counters.
    pub fn stats(&self) -> Stats {
        self.cache.stats()
    }
}

#[async_trait]
impl ImageBackend for CachedBackend {
    async fn info(&self) -> CResult<ImageInfo> {
        self.inner.info().await
    }
    async fn read(&self, off: u64, len: u64) -> CResult<Bytes> {
        self.cache.read(off, len).await
    }
    async fn write(&self, off: u64, data: Bytes) -> CResult<()> {
        self.cache.write(off, data).await
    }
    async fn discard(&self, off: u64, len: u64) -> CResult<()> {
        self.cache.discard(off, len).await
    }
    async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> CResult<()> {
        self.cache.write_zeroes(off, len, thick).await
    }
    async fn flush(&self) -> CResult<()> {
        self.cache.flush().await
    }
    async fn resize(&self, size: u64) -> CResult<()> {
        self.cache.sync().await?;
        let r = self.inner.resize(size).await;
        // Bytes past the (new) end no longer exist; a later grow reads zeros.
        self.cache.purge(size, u64::MAX);
        r
    }
    async fn snap_list(&self) -> CResult<Vec<SnapInfo>> {
        self.inner.snap_list().await
    }
    async fn group(&self) -> CResult<Option<(quarry_rados::PoolId, String)>> {
        self.inner.group().await
    }
    async fn snap_group_namespace(
        &self,
        snap_id: u64,
    ) -> CResult<(quarry_rados::PoolId, String, String)> {
        self.inner.snap_group_namespace(snap_id).await
    }
    async fn snap_create(&self, name: &str) -> CResult<()> {
        // The snapshot must hold every write acknowledged before it.
        self.cache.sync().await?;
        self.inner.snap_create(name).await
    }
    async fn snap_remove(&self, name: &str) -> CResult<()> {
        self.inner.snap_remove(name).await
    }
    async fn snap_remove_by_id(&self, id: u64) -> CResult<()> {
        self.inner.snap_remove_by_id(id).await
    }
    async fn update_features(&self, features: u64, enabled: bool) -> CResult<()> {
        self.inner.update_features(features, enabled).await
    }
    async fn watchers(&self) -> CResult<Vec<(String, u64, u64)>> {
        self.inner.watchers().await
    }
    async fn snap_rollback(&self, name: &str) -> CResult<()> {
        self.cache.sync().await?;
        let r = self.inner.snap_rollback(name).await;
        self.cache.purge(0, u64::MAX);
        r
    }
    async fn snap_protect(&self, name: &str) -> CResult<()> {
        self.inner.snap_protect(name).await
    }
    async fn snap_unprotect(&self, name: &str) -> CResult<()> {
        self.inner.snap_unprotect(name).await
    }
    async fn snap_rename(&self, from: &str, to: &str) -> CResult<()> {
        self.inner.snap_rename(from, to).await
    }
    async fn parent(&self) -> CResult<ParentInfo> {
        self.inner.parent().await
    }
    async fn children(&self, descendants: bool) -> CResult<Vec<quarry_rbd::ChildInfo>> {
        self.inner.children(descendants).await
    }
    async fn flatten(&self) -> CResult<()> {
        self.cache.sync().await?;
        self.inner.flatten().await
    }
    async fn rebuild_object_map(&self) -> CResult<()> {
        // Written-back data first: the map is made from what exists.
        self.cache.sync().await?;
        self.inner.rebuild_object_map().await
    }
    async fn sparsify(&self, sparse_size: u64) -> CResult<()> {
        // Dirty cached data first, so the zeros found are the current ones
        // (sparsify changes no byte: the cache stays valid).
        self.cache.sync().await?;
        self.inner.sparsify(sparse_size).await
    }
    async fn copy_to(
        &self,
        io: &crate::engine::IoTarget,
        dest: &str,
        opts: &quarry_rbd::CopyOptions,
        deep: bool,
    ) -> CResult<()> {
        // The copy reads through the image: cached writes first.
        self.cache.sync().await?;
        self.inner.copy_to(io, dest, opts, deep).await
    }
    fn snap_limit(&self) -> CResult<u64> {
        self.inner.snap_limit()
    }
    async fn set_snap_limit(&self, limit: u64) -> CResult<()> {
        self.inner.set_snap_limit(limit).await
    }
    async fn diff(
        &self,
        fromsnap: Option<&str>,
        off: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
    ) -> CResult<Vec<DiffExtent>> {
        // Allocation must include acknowledged writes still in the cache.
        self.cache.sync().await?;
        self.inner
            .diff(fromsnap, off, len, include_parent, whole_object)
            .await
    }
    async fn image_config(&self) -> CResult<Vec<(String, String)>> {
        self.inner.image_config().await
    }
    async fn metadata_get(&self, key: &str) -> CResult<String> {
        self.inner.metadata_get(key).await
    }
    async fn metadata_set(&self, key: &str, value: &str) -> CResult<()> {
        self.inner.metadata_set(key, value).await
    }
    async fn metadata_remove(&self, key: &str) -> CResult<()> {
        self.inner.metadata_remove(key).await
    }
    async fn metadata_list(&self) -> CResult<Vec<(String, String)>> {
        self.inner.metadata_list().await
    }
    async fn refresh(&self) -> CResult<()> {
        // rbd_invalidate_cache: dirty data is written back first, then
        // every clean byte is dropped (another client may have written).
        let r = self.cache.invalidate().await;
        self.inner.refresh().await?;
        r
    }
    async fn set_snap(&self, snap: Option<quarry_rbd::SnapSpec>) -> CResult<()> {
        // Dirty data goes to the head first; what is cached belongs to the
        // old view, so it is dropped again once the new one is in place
        // (reads may have filled it meanwhile).
        self.cache.invalidate().await?;
        self.inner.set_snap(snap).await?;
        self.cache.invalidate().await
    }
    fn set_timestamp_intervals(&self, t: quarry_rbd::TimestampIntervals) {
        self.inner.set_timestamp_intervals(t);
    }
    async fn close(&self) -> CResult<()> {
        let r = self.cache.close().await;
        if std::env::var_os("QUARRY_LOG_CACHE").is_some() {
            eprintln!("quarry: cache at close: {:?}", self.cache.stats());
        }
        self.inner.close().await?;
        r
    }
    async fn lock_acquire(&self) -> CResult<()> {
        self.inner.lock_acquire().await
    }
    async fn lock_release(&self) -> CResult<()> {
        self.inner.lock_release().await
    }
    fn is_lock_owner(&self) -> bool {
        self.inner.is_lock_owner()
    }
    async fn lock_owners(&self) -> CResult<Vec<String>> {
        self.inner.lock_owners().await
    }
    async fn lock_break(&self, owner: &str) -> CResult<()> {
        self.inner.lock_break(owner).await
    }
    async fn advisory_lock(&self, cookie: &str, tag: Option<&str>) -> CResult<()> {
        self.inner.advisory_lock(cookie, tag).await
    }
    async fn advisory_unlock(&self, cookie: &str) -> CResult<()> {
        self.inner.advisory_unlock(cookie).await
    }
    async fn break_lock(&self, client: &str, cookie: &str) -> CResult<()> {
        self.inner.break_lock(client, cookie).await
    }
    async fn list_lockers(&self) -> CResult<quarry_rbd::ImageLocks> {
        self.inner.list_lockers().await
    }
    fn set_pre_release_hook(&self, hook: PreReleaseHook) {
        // Before the lock goes to another client: the caller's hook, then
        // dirty data written back and clean data dropped (the next owner
        // will write), as librbd flushes and invalidates on release.
        let cache = Arc::downgrade(&self.cache);
        self.inner.set_pre_release_hook(Arc::new(move || {
            let outer = hook();
            let cache = cache.clone();
            Box::pin(async move {
                outer.await?;
                if let Some(c) = cache.upgrade() {
                    c.invalidate().await?;
                }
                Ok(())
            })
        }));
    }
}
