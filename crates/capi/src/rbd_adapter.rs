//! [`ImageEngine`] / [`ImageBackend`] on `quarry-rbd`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quarry_common::Errno;
use quarry_rados::{PoolId, Rados};
use quarry_rbd::{CreateOptions, DiffOptions, Image, OpenOptions, Rbd, RbdError, SnapSpec};

use crate::engine::{
    CError, CResult, CreateOpts, DiffExtent, ImageBackend, ImageEngine, ImageInfo, IoTarget,
    ParentInfo, SnapInfo,
};

impl From<RbdError> for CError {
    fn from(e: RbdError) -> CError {
        CError::new(e.errno(), e.to_string())
    }
}

fn io(t: &IoTarget) -> quarry_rbd::IoCtx {
    quarry_rbd::IoCtx::new(t.pool, t.pool_name.clone(), t.namespace.clone())
}

fn create_options(o: &CreateOpts) -> CResult<CreateOptions> {
    if o.stripe_unit != 0 && o.stripe_unit != 1u64 << o.order {
        return Err(CError::new(
            Errno::EINVAL,
            "fancy striping is not supported",
        ));
    }
    if o.stripe_count > 1 {
        return Err(CError::new(
            Errno::EINVAL,
            "fancy striping is not supported",
        ));
    }
    Ok(CreateOptions {
        order: o.order as u8,
        features: Some(o.features),
    })
}

struct Engine {
    rbd: Rbd,
    /// `rbd_move_to_trash_on_remove`: removal moves the image to the trash
    /// with this deferment (seconds) instead.
    trash_on_remove: Option<u64>,
}

#[async_trait]
impl ImageEngine for Engine {
    async fn pool_stats(&self, t: &IoTarget) -> CResult<quarry_rbd::PoolStats> {
        Ok(self.rbd.pool_stats(&io(t)).await?)
    }

    async fn create(&self, t: &IoTarget, name: &str, opts: &CreateOpts) -> CResult<()> {
        let o = create_options(opts)?;
        Ok(self.rbd.create(&io(t), name, opts.size, &o).await?)
    }

    async fn remove(&self, t: &IoTarget, name: &str) -> CResult<()> {
        match self.trash_on_remove {
            Some(delay) => {
                self.rbd.trash_move(&io(t), name, delay).await?;
                Ok(())
            }
            None => Ok(self.rbd.remove(&io(t), name).await?),
        }
    }

    async fn rename(&self, t: &IoTarget, from: &str, to: &str) -> CResult<()> {
        Ok(self.rbd.rename(&io(t), from, to).await?)
    }

    async fn open(
        &self,
        t: &IoTarget,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> CResult<Arc<dyn ImageBackend>> {
        let opts = OpenOptions {
            read_only,
            snap: snap.map(|s| SnapSpec::Name(s.to_string())),
        };
        let img = self.rbd.open(&io(t), name, &opts).await?;
        Ok(Arc::new(Backend {
            img,
            rbd: Clone::clone(&self.rbd),
        }))
    }

    async fn open_by_id(
        &self,
        t: &IoTarget,
        id: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> CResult<(Arc<dyn ImageBackend>, String)> {
        let opts = OpenOptions {
            read_only,
            snap: snap.map(|s| SnapSpec::Name(s.to_string())),
        };
        let img = self.rbd.open_by_id(&io(t), id, &opts).await?;
        let name = img.name().to_string();
        Ok((
            Arc::new(Backend {
                img,
                rbd: Clone::clone(&self.rbd),
            }),
            name,
        ))
    }

    async fn list(&self, t: &IoTarget) -> CResult<Vec<(String, String)>> {
        let mut v: Vec<(String, String)> = self
            .rbd
            .list(&io(t))
            .await?
            .into_iter()
            .map(|e| (e.id, e.name))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(v)
    }

    async fn clone_image(
        &self,
        pt: &IoTarget,
        parent: &str,
        snap: &str,
        ct: &IoTarget,
        child: &str,
        opts: &CreateOpts,
    ) -> CResult<()> {
        let o = create_options(opts)?;
        Ok(self
            .rbd
            .clone(&io(pt), parent, snap, &io(ct), child, &o)
            .await?)
    }

    async fn namespace_exists(&self, pool: PoolId, ns: &str) -> CResult<bool> {
        let t = self.rbd.ioctx(pool, ns).await?;
        Ok(self.rbd.namespace_exists(&t).await?)
    }

    async fn namespace_create(&self, t: &IoTarget, ns: &str) -> CResult<()> {
        let mut t = io(t);
        t.namespace = ns.to_string();
        Ok(self.rbd.namespace_create(&t).await?)
    }

    async fn namespace_remove(&self, t: &IoTarget, ns: &str) -> CResult<()> {
        let mut t = io(t);
        t.namespace = ns.to_string();
        Ok(self.rbd.namespace_remove(&t).await?)
    }

    async fn trash_move(&self, t: &IoTarget, name: &str, delay: u64) -> CResult<()> {
        self.rbd.trash_move(&io(t), name, delay).await?;
        Ok(())
    }

    async fn trash_get(&self, t: &IoTarget, id: &str) -> CResult<quarry_rbd::TrashEntry> {
        Ok(self.rbd.trash_get(&io(t), id).await?)
    }

    async fn trash_list(&self, t: &IoTarget) -> CResult<Vec<quarry_rbd::TrashEntry>> {
        Ok(self.rbd.trash_list(&io(t)).await?)
    }

    async fn trash_remove(&self, t: &IoTarget, id: &str, force: bool) -> CResult<()> {
        Ok(self.rbd.trash_remove(&io(t), id, force).await?)
    }

    async fn trash_restore(&self, t: &IoTarget, id: &str, name: &str) -> CResult<()> {
        Ok(self.rbd.trash_restore(&io(t), id, Some(name)).await?)
    }

    async fn trash_purge(&self, t: &IoTarget, expire_ts: Option<u64>) -> CResult<()> {
        let r = self.rbd.trash_purge(&io(t), expire_ts).await?;
        match r.kept.into_iter().next() {
            None => Ok(()),
            Some((_, e)) => Err(e.into()),
        }
    }

    async fn migration_prepare(
        &self,
        sio: &IoTarget,
        src: &str,
        dio: &IoTarget,
        dst: &str,
        order: u8,
        features: Option<u64>,
    ) -> CResult<()> {
        let o = CreateOptions { order, features };
        Ok(self
            .rbd
            .migration_prepare(&io(sio), src, &io(dio), dst, &o)
            .await?)
    }

    async fn migration_execute(
        &self,
        t: &IoTarget,
        name: &str,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> CResult<()> {
        Ok(self.rbd.migration_execute(&io(t), name, progress).await?)
    }

    async fn migration_commit(&self, t: &IoTarget, name: &str) -> CResult<()> {
        Ok(self.rbd.migration_commit(&io(t), name).await?)
    }

    async fn migration_abort(&self, t: &IoTarget, name: &str) -> CResult<()> {
        Ok(self.rbd.migration_abort(&io(t), name).await?)
    }

    async fn migration_status(
        &self,
        t: &IoTarget,
        name: &str,
    ) -> CResult<quarry_rbd::MigrationSpec> {
        Ok(self.rbd.migration_status(&io(t), name).await?)
    }

    async fn group_create(&self, t: &IoTarget, name: &str) -> CResult<()> {
        Ok(self.rbd.group_create(&io(t), name).await?)
    }

    async fn group_remove(&self, t: &IoTarget, name: &str) -> CResult<()> {
        Ok(self.rbd.group_remove(&io(t), name).await?)
    }

    async fn group_list(&self, t: &IoTarget) -> CResult<Vec<String>> {
        Ok(self.rbd.group_list(&io(t)).await?)
    }

    async fn group_rename(&self, t: &IoTarget, src: &str, dst: &str) -> CResult<()> {
        Ok(self.rbd.group_rename(&io(t), src, dst).await?)
    }

    async fn group_image_add(
        &self,
        gt: &IoTarget,
        group: &str,
        it: &IoTarget,
        image: &str,
    ) -> CResult<()> {
        Ok(self
            .rbd
            .group_image_add(&io(gt), group, &io(it), image)
            .await?)
    }

    async fn group_image_remove(
        &self,
        gt: &IoTarget,
        group: &str,
        it: &IoTarget,
        image: &str,
    ) -> CResult<()> {
        Ok(self
            .rbd
            .group_image_remove(&io(gt), group, &io(it), image)
            .await?)
    }

    async fn group_image_list(
        &self,
        gt: &IoTarget,
        group: &str,
    ) -> CResult<Vec<quarry_rbd::GroupImageInfo>> {
        Ok(self.rbd.group_image_list(&io(gt), group).await?)
    }

    async fn group_snap_create(&self, gt: &IoTarget, group: &str, snap: &str) -> CResult<()> {
        Ok(self.rbd.group_snap_create(&io(gt), group, snap).await?)
    }

    async fn group_snap_remove(&self, gt: &IoTarget, group: &str, snap: &str) -> CResult<()> {
        Ok(self.rbd.group_snap_remove(&io(gt), group, snap).await?)
    }

    async fn group_snap_rename(
        &self,
        gt: &IoTarget,
        group: &str,
        src: &str,
        dst: &str,
    ) -> CResult<()> {
        Ok(self.rbd.group_snap_rename(&io(gt), group, src, dst).await?)
    }

    async fn group_snap_rollback(&self, gt: &IoTarget, group: &str, snap: &str) -> CResult<()> {
        Ok(self.rbd.group_snap_rollback(&io(gt), group, snap).await?)
    }

    async fn group_snap_list(
        &self,
        gt: &IoTarget,
        group: &str,
    ) -> CResult<Vec<quarry_rbd::GroupSnapInfo>> {
        Ok(self.rbd.group_snap_list(&io(gt), group).await?)
    }

    async fn namespace_list(&self, t: &IoTarget) -> CResult<Vec<String>> {
        let mut t = io(t);
        t.namespace = String::new();
        let mut v = self.rbd.namespace_list(&t).await?;
        v.sort();
        Ok(v)
    }

    async fn pool_metadata_get(&self, t: &IoTarget, key: &str) -> CResult<String> {
        let v = self.rbd.pool_metadata_get(&io(t), key).await?;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    async fn pool_metadata_set(&self, t: &IoTarget, key: &str, value: &str) -> CResult<()> {
        Ok(self
            .rbd
            .pool_metadata_set(&io(t), key, Bytes::copy_from_slice(value.as_bytes()))
            .await?)
    }

    async fn pool_metadata_remove(&self, t: &IoTarget, key: &str) -> CResult<()> {
        Ok(self.rbd.pool_metadata_remove(&io(t), key).await?)
    }

    async fn pool_metadata_list(&self, t: &IoTarget) -> CResult<Vec<(String, String)>> {
        Ok(self
            .rbd
            .pool_metadata_list(&io(t))
            .await?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    async fn pool_config(&self, t: &IoTarget) -> CResult<Vec<(String, String)>> {
        // `rbd config pool set` = pool metadata `conf_<option>`.
        Ok(self
            .rbd
            .pool_metadata_list(&io(t))
            .await?
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(CONF_PREFIX)
                    .map(|k| (k.to_string(), String::from_utf8_lossy(&v).into_owned()))
            })
            .collect())
    }
}

struct Backend {
    img: Image,
    /// The engine's entry point (copies create images).
    rbd: Rbd,
}

/// Image metadata keys that carry per-image config overrides.
const CONF_PREFIX: &str = "conf_";

#[async_trait]
impl ImageBackend for Backend {
    async fn info(&self) -> CResult<ImageInfo> {
        let s = self.img.stat();
        Ok(ImageInfo {
            size: s.size,
            order: s.order as u32,
            block_name_prefix: s.block_name_prefix,
            features: s.features,
            flags: s.flags,
            stripe_unit: s.obj_size,
            stripe_count: 1,
            id: s.id,
            name: s.name,
            create_timestamp_ns: s.create_timestamp_ns,
            access_timestamp_ns: s.access_timestamp_ns,
            modify_timestamp_ns: s.modify_timestamp_ns,
        })
    }

    async fn read(&self, off: u64, len: u64) -> CResult<Bytes> {
        Ok(self.img.read(off, len).await?)
    }

    async fn write(&self, off: u64, data: Bytes) -> CResult<()> {
        self.img.write(off, data).await?;
        Ok(())
    }

    async fn discard(&self, off: u64, len: u64) -> CResult<()> {
        self.img.discard(off, len).await?;
        Ok(())
    }

    async fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> CResult<()> {
        let flags = if thick {
            quarry_rbd::WRITE_ZEROES_FLAG_THICK_PROVISION
        } else {
            0
        };
        self.img.write_zeroes(off, len, flags).await?;
        Ok(())
    }

    async fn flush(&self) -> CResult<()> {
        Ok(self.img.flush().await?)
    }

    async fn resize(&self, size: u64) -> CResult<()> {
        Ok(self.img.resize(size).await?)
    }

    async fn snap_list(&self) -> CResult<Vec<SnapInfo>> {
        Ok(self
            .img
            .snap_list()
            .await?
            .into_iter()
            .map(|s| SnapInfo {
                id: s.id,
                size: s.size,
                name: s.name,
                protected: s.protected,
                timestamp: s.timestamp_ns / 1_000_000_000,
                group: s.group,
            })
            .collect())
    }

    async fn snap_create(&self, name: &str) -> CResult<()> {
        self.img.snap_create(name).await?;
        Ok(())
    }

    async fn snap_remove(&self, name: &str) -> CResult<()> {
        Ok(self.img.snap_remove(name).await?)
    }

    async fn snap_remove_by_id(&self, id: u64) -> CResult<()> {
        Ok(self.img.snap_remove_by_id(id).await?)
    }

    async fn update_features(&self, features: u64, enabled: bool) -> CResult<()> {
        Ok(self.img.update_features(features, enabled).await?)
    }

    async fn watchers(&self) -> CResult<Vec<(String, u64, u64)>> {
        Ok(self
            .img
            .watchers()
            .await?
            .into_iter()
            .map(|w| (w.addr, w.client, w.cookie))
            .collect())
    }

    async fn snap_rollback(&self, name: &str) -> CResult<()> {
        Ok(self.img.snap_rollback(name).await?)
    }

    async fn snap_protect(&self, name: &str) -> CResult<()> {
        Ok(self.img.snap_protect(name).await?)
    }

    async fn snap_unprotect(&self, name: &str) -> CResult<()> {
        Ok(self.img.snap_unprotect(name).await?)
    }

    async fn snap_rename(&self, from: &str, to: &str) -> CResult<()> {
        Ok(self.img.snap_rename(from, to).await?)
    }

    async fn parent(&self) -> CResult<ParentInfo> {
        let p = self.img.parent_info().await?;
        Ok(ParentInfo {
            pool_id: p.pool_id,
            pool_name: p.pool_name,
            pool_namespace: p.namespace,
            image_id: p.image_id,
            image_name: p.image_name,
            snap_id: p.snap_id,
            snap_name: p.snap_name,
            overlap: p.overlap,
            in_trash: p.in_trash,
        })
    }

    async fn children(&self, descendants: bool) -> CResult<Vec<quarry_rbd::ChildInfo>> {
        Ok(if descendants {
            self.img.descendants().await?
        } else {
            self.img.children().await?
        })
    }

    async fn flatten(&self) -> CResult<()> {
        Ok(self.img.flatten(|_, _| ()).await?)
    }

    async fn rebuild_object_map(&self) -> CResult<()> {
        Ok(self.img.rebuild_object_map().await?)
    }

    async fn sparsify(&self, sparse_size: u64) -> CResult<()> {
        Ok(self.img.sparsify(sparse_size, |_, _| ()).await?)
    }

    async fn copy_to(
        &self,
        t: &IoTarget,
        dest: &str,
        opts: &quarry_rbd::CopyOptions,
        deep: bool,
    ) -> CResult<()> {
        let dio = io(t);
        if deep {
            self.rbd
                .deep_copy(&self.img, &dio, dest, opts, |_, _| ())
                .await?;
        } else {
            self.rbd
                .copy(&self.img, &dio, dest, opts, |_, _| ())
                .await?;
        }
        Ok(())
    }

    fn snap_limit(&self) -> CResult<u64> {
        Ok(self.img.snap_limit())
    }

    async fn set_snap_limit(&self, limit: u64) -> CResult<()> {
        Ok(self.img.set_snap_limit(limit).await?)
    }

    async fn diff(
        &self,
        fromsnap: Option<&str>,
        off: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
    ) -> CResult<Vec<DiffExtent>> {
        let opts = DiffOptions {
            from_snap: fromsnap.map(str::to_string),
            include_parent,
            whole_object,
        };
        Ok(self
            .img
            .diff(off, len, &opts)
            .await?
            .into_iter()
            .map(|e| DiffExtent {
                off: e.offset,
                len: e.len,
                exists: e.exists,
            })
            .collect())
    }

    async fn image_config(&self) -> CResult<Vec<(String, String)>> {
        Ok(self
            .metadata_list()
            .await?
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(CONF_PREFIX).map(|k| (k.to_string(), v)))
            .collect())
    }

    async fn metadata_get(&self, key: &str) -> CResult<String> {
        let v = self.img.metadata_get(key).await?;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    async fn metadata_set(&self, key: &str, value: &str) -> CResult<()> {
        Ok(self
            .img
            .metadata_set(key, Bytes::copy_from_slice(value.as_bytes()))
            .await?)
    }

    async fn metadata_remove(&self, key: &str) -> CResult<()> {
        Ok(self.img.metadata_remove(key).await?)
    }

    async fn metadata_list(&self) -> CResult<Vec<(String, String)>> {
        Ok(self
            .img
            .metadata_list("", 0)
            .await?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    async fn refresh(&self) -> CResult<()> {
        Ok(self.img.invalidate_cache().await?)
    }

    async fn set_snap(&self, snap: Option<quarry_rbd::SnapSpec>) -> CResult<()> {
        Ok(self.img.set_snap(snap).await?)
    }

    fn set_timestamp_intervals(&self, t: quarry_rbd::TimestampIntervals) {
        self.img.set_timestamp_intervals(t);
    }

    async fn close(&self) -> CResult<()> {
        Ok(self.img.close().await?)
    }

    async fn lock_acquire(&self) -> CResult<()> {
        Ok(self.img.lock_acquire().await?)
    }

    async fn lock_release(&self) -> CResult<()> {
        Ok(self.img.lock_release().await?)
    }

    fn is_lock_owner(&self) -> bool {
        self.img.is_exclusive_lock_owner()
    }

    async fn lock_owners(&self) -> CResult<Vec<String>> {
        Ok(self
            .img
            .lock_owners()
            .await?
            .into_iter()
            .map(|o| o.entity)
            .collect())
    }

    async fn lock_break(&self, owner: &str) -> CResult<()> {
        Ok(self.img.lock_break(owner).await?)
    }

    async fn advisory_lock(&self, cookie: &str, tag: Option<&str>) -> CResult<()> {
        match tag {
            Some(t) => self.img.lock_shared(cookie, t).await?,
            None => self.img.lock_exclusive(cookie).await?,
        }
        Ok(())
    }

    async fn advisory_unlock(&self, cookie: &str) -> CResult<()> {
        Ok(self.img.unlock(cookie).await?)
    }

    async fn break_lock(&self, client: &str, cookie: &str) -> CResult<()> {
        Ok(self.img.break_lock(client, cookie).await?)
    }

    async fn list_lockers(&self) -> CResult<quarry_rbd::ImageLocks> {
        Ok(self.img.list_lockers().await?)
    }

    async fn group(&self) -> CResult<Option<(PoolId, String)>> {
        Ok(self.rbd.image_group(self.img.ioctx(), &self.img).await?)
    }

    async fn snap_group_namespace(&self, snap_id: u64) -> CResult<(PoolId, String, String)> {
        let snaps = self.img.snap_list().await?;
        let s = snaps
            .into_iter()
            .find(|s| s.id == snap_id)
            .ok_or_else(|| CError::new(Errno::ENOENT, format!("no snapshot with id {snap_id}")))?;
        let ns = s.group.ok_or_else(|| {
            CError::new(
                Errno::EINVAL,
                format!("snapshot {} is not a group snapshot", s.name),
            )
        })?;
        // The group lives in the image's namespace, in its own pool.
        let gio = self.rbd.ioctx(ns.pool, &self.img.ioctx().namespace).await?;
        let group = self.rbd.group_name(&gio, &ns.group_id).await?;
        let snap = self
            .rbd
            .group_snap_list(&gio, &group)
            .await?
            .into_iter()
            .find(|g| g.id == ns.snap_id)
            .ok_or_else(|| {
                CError::new(
                    Errno::ENOENT,
                    format!("group snapshot id {} of group {group}", ns.snap_id),
                )
            })?;
        Ok((ns.pool, group, snap.name))
    }

    fn set_pre_release_hook(&self, hook: crate::engine::PreReleaseHook) {
        self.img.set_pre_release_hook(Arc::new(move || {
            let fut = hook();
            Box::pin(async move {
                fut.await.map_err(|e| quarry_rbd::RbdError::Rados {
                    context: "flushing before handing over the exclusive lock".into(),
                    source: quarry_rados::RadosError::new(e.errno, e.msg),
                })
            })
        }));
    }
}

/// The engine for a connection.
pub fn engine(
    rados: Arc<dyn Rados>,
    fence: quarry_rbd::FencePolicy,
    trash_on_remove: Option<u64>,
) -> Arc<dyn ImageEngine> {
    Arc::new(Engine {
        rbd: Rbd::with_fence_policy(rados, fence),
        trash_on_remove,
    })
}
