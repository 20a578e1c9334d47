//! Image encryption on an open handle (`rbd_encryption_format`,
//! `rbd_encryption_load`): an [`ImageBackend`] in front of the image that,
//! once a LUKS header is formatted or loaded, shifts every offset past the
//! header, encrypts writes and decrypts reads (`quarry-luks`), and reports
//! the size of the data area. Until then it passes everything through.
//!
//! As librbd 16: the size (`rbd_stat`, `rbd_get_size`) is the data area's,
//! `rbd_resize` takes the raw size (QEMU's `encrypt.format` create path
//! relies on it), and a write that does not cover whole encryption sectors
//! is a read-modify-write of its edge sectors. Those run one at a time and
//! never beside an aligned write (`rmw`), since the write tracker orders
//! overlapping byte ranges only, and two writes into different bytes of one
//! sector would otherwise each write back the other's old bytes.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use quarry_common::Errno;
use quarry_luks::{Crypto, LuksError};
use zeroize::Zeroizing;

use crate::engine::{
    CError, CResult, DiffExtent, ImageBackend, ImageInfo, IoTarget, ParentInfo, PreReleaseHook,
    SnapInfo,
};

impl From<LuksError> for CError {
    fn from(e: LuksError) -> CError {
        CError::new(Errno::from_code(e.errno()), e.to_string())
    }
}

/// An open image with (once loaded) its encryption.
pub struct CryptoBackend {
    inner: Arc<dyn ImageBackend>,
    crypto: OnceLock<Arc<Crypto>>,
    /// Shared by aligned writes, exclusive for read-modify-writes.
    rmw: tokio::sync::RwLock<()>,
}

impl CryptoBackend {
    /// Pass-through in front of `inner` until encryption is loaded.
    pub fn new(inner: Arc<dyn ImageBackend>) -> CryptoBackend {
        CryptoBackend {
            inner,
            crypto: OnceLock::new(),
            rmw: tokio::sync::RwLock::new(()),
        }
    }

    /// The loaded encryption, if any.
    pub fn crypto(&self) -> Option<&Arc<Crypto>> {
        self.crypto.get()
    }

    fn set(&self, c: Crypto) -> CResult<()> {
        self.crypto
            .set(Arc::new(c))
            .map_err(|_| CError::new(Errno::EEXIST, "encryption is already loaded"))
    }

    /// Write a new LUKS header to the raw image and use it (`EEXIST` if
    /// encryption is loaded already).
    pub async fn format(
        &self,
        format: quarry_luks::Format,
        alg: quarry_luks::Alg,
        passphrase: Zeroizing<Vec<u8>>,
    ) -> CResult<()> {
        if self.crypto().is_some() {
            return Err(CError::new(Errno::EEXIST, "encryption is already loaded"));
        }
        let info = self.inner.info().await?;
        let object_size = 1u64 << info.order;
        let (header, crypto) = tokio::task::spawn_blocking(move || {
            quarry_luks::format(format, alg, &passphrase, object_size, info.size)
        })
        .await
        .map_err(|e| CError::new(Errno::EIO, e.to_string()))??;
        self.inner.write(0, Bytes::from(header)).await?;
        self.inner.flush().await?;
        self.set(crypto)
    }

    /// Unlock the image's LUKS header with a passphrase (`want`: only that
    /// version; `None`: either).
    pub async fn load(
        &self,
        want: Option<quarry_luks::Format>,
        passphrase: Zeroizing<Vec<u8>>,
    ) -> CResult<()> {
        if self.crypto().is_some() {
            return Err(CError::new(Errno::EEXIST, "encryption is already loaded"));
        }
        let size = self.inner.info().await?.size;
        let probe = self
            .inner
            .read(0, quarry_luks::PROBE_BYTES.min(size))
            .await?;
        let len = tokio::task::spawn_blocking(move || quarry_luks::header_len(&probe, want))
            .await
            .map_err(|e| CError::new(Errno::EIO, e.to_string()))??;
        if len >= size {
            return Err(CError::new(
                Errno::EINVAL,
                format!("LUKS header ({len} bytes) does not fit the image ({size} bytes)"),
            ));
        }
        let header = self.inner.read(0, len).await?;
        let crypto =
            tokio::task::spawn_blocking(move || quarry_luks::load(&header, want, &passphrase))
                .await
                .map_err(|e| CError::new(Errno::EIO, e.to_string()))??;
        self.set(crypto)
    }

    /// Sector-aligned `[a, b)` around `[off, off+len)`.
    fn widen(c: &Crypto, off: u64, len: u64) -> (u64, u64) {
        let s = c.sector_size();
        (off / s * s, (off + len).div_ceil(s) * s)
    }

    async fn read_data(&self, c: &Crypto, off: u64, len: u64) -> CResult<Bytes> {
        let (a, b) = Self::widen(c, off, len);
        let raw = self.inner.read(c.data_offset() + a, b - a).await?;
        let mut buf = BytesMut::zeroed((b - a) as usize);
        // A short read past the raw end reads as zeros (holes); never
        // more than asked for, whatever the layer below returned.
        let n = raw.len().min(buf.len());
        buf[..n].copy_from_slice(&raw[..n]);
        c.decrypt(&mut buf, a);
        let start = (off - a) as usize;
        Ok(buf.freeze().slice(start..start + len as usize))
    }

    async fn write_data(&self, c: &Crypto, off: u64, data: Bytes) -> CResult<()> {
        let len = data.len() as u64;
        let (a, b) = Self::widen(c, off, len);
        if a == off && b == off + len {
            let _shared = self.rmw.read().await;
            let mut buf = BytesMut::from(&data[..]);
            c.encrypt(&mut buf, a);
            return self.inner.write(c.data_offset() + a, buf.freeze()).await;
        }
        let _alone = self.rmw.write().await;
        let old = self.read_data(c, a, b - a).await?;
        let mut buf = BytesMut::from(&old[..]);
        let at = (off - a) as usize;
        buf[at..at + data.len()].copy_from_slice(&data);
        c.encrypt(&mut buf, a);
        self.inner.write(c.data_offset() + a, buf.freeze()).await
    }

    /// Zero `[off, off+len)` as encrypted zeros, as librbd does, so that
    /// every LUKS reader (dm-crypt, QEMU's driver) reads zeros there too;
    /// in writes of at most [`ZERO_CHUNK`] bytes.
    async fn zero_data(&self, c: &Crypto, off: u64, len: u64) -> CResult<()> {
        let end = off + len;
        let mut at = off;
        while at < end {
            let n = (end - at).min(ZERO_CHUNK);
            self.write_data(c, at, Bytes::from(vec![0u8; n as usize]))
                .await?;
            at += n;
        }
        Ok(())
    }

    /// Discard whole sectors only: their raw zeros read back as zeros
    /// here (other LUKS readers see unspecified data, as after any
    /// discard); partial edge sectors keep their data.
    async fn discard_data(&self, c: &Crypto, off: u64, len: u64) -> CResult<()> {
        let s = c.sector_size();
        let a = off.div_ceil(s) * s;
        let b = (off + len) / s * s;
        if a >= b {
            return Ok(());
        }
        let _shared = self.rmw.read().await;
        self.inner.discard(c.data_offset() + a, b - a).await
    }
}

/// Largest write of encrypted zeros.
const ZERO_CHUNK: u64 = 4 << 20;

#[async_trait]
impl ImageBackend for CryptoBackend {
    async fn info(&self) -> CResult<ImageInfo> {
        let mut info = self.inner.info().await?;
        if let Some(c) = self.crypto() {
            info.size = info.size.saturating_sub(c.data_offset());
        }
        Ok(info)
    }
    async fn read(&self, off: u64, len: u64) -> CResult<Bytes> {
        match self.crypto() {
            Some(c) => self.read_data(c, off, len).await,
            None => self.inner.read(off, len).await,
        }
    }
    async fn write(&self, off: u64, data: Bytes) -> CResult<()> {
        match self.crypto() {
            Some(c) => self.write_data(c, off, data).await,
            None => self.inner.write(off, data).await,
        }
    }
    async fn discard(&self, off: u64, len: u64) -> CResult<()> {
        match self.crypto() {
            Some(c) => self.discard_data(c, off, len).await,
            None => self.inner.discard(off, len).await,
        }
    }
    async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> CResult<()> {
        match self.crypto() {
            Some(c) => self.zero_data(c, off, len).await,
            None => self.inner.write_zeroes(off, len, thick).await,
        }
    }
    async fn diff(
        &self,
        fromsnap: Option<&str>,
        off: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
    ) -> CResult<Vec<DiffExtent>> {
        let Some(c) = self.crypto() else {
            return self
                .inner
                .diff(fromsnap, off, len, include_parent, whole_object)
                .await;
        };
        let d = c.data_offset();
        let raw = self
            .inner
            .diff(fromsnap, off + d, len, include_parent, whole_object)
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|e| {
                // Clip to the data area, then back to data-area offsets.
                let a = e.off.max(d + off);
                let b = (e.off + e.len).min(d + off + len);
                (a < b).then(|| DiffExtent {
                    off: a - d,
                    len: b - a,
                    exists: e.exists,
                })
            })
            .collect())
    }
    async fn flush(&self) -> CResult<()> {
        self.inner.flush().await
    }
    async fn resize(&self, size: u64) -> CResult<()> {
        self.inner.resize(size).await
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
        self.inner.snap_rollback(name).await
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
        self.inner.flatten().await
    }
    async fn rebuild_object_map(&self) -> CResult<()> {
        self.inner.rebuild_object_map().await
    }
    async fn sparsify(&self, sparse_size: u64) -> CResult<()> {
        self.inner.sparsify(sparse_size).await
    }
    async fn copy_to(
        &self,
        io: &IoTarget,
        dest: &str,
        opts: &quarry_rbd::CopyOptions,
        deep: bool,
    ) -> CResult<()> {
        self.inner.copy_to(io, dest, opts, deep).await
    }
    fn snap_limit(&self) -> CResult<u64> {
        self.inner.snap_limit()
    }
    async fn set_snap_limit(&self, limit: u64) -> CResult<()> {
        self.inner.set_snap_limit(limit).await
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
        self.inner.refresh().await
    }
    async fn set_snap(&self, snap: Option<quarry_rbd::SnapSpec>) -> CResult<()> {
        self.inner.set_snap(snap).await
    }
    fn set_timestamp_intervals(&self, t: quarry_rbd::TimestampIntervals) {
        self.inner.set_timestamp_intervals(t)
    }
    async fn close(&self) -> CResult<()> {
        self.inner.close().await
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
        self.inner.set_pre_release_hook(hook)
    }
}
