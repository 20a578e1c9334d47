//! Live migration of an image to another pool, namespace or name
//! (`rbd migration prepare|execute|commit|abort`, librbd's
//! `rbd_migration_*`).
//!
//! How it maps onto clones: `prepare` hides the source in its pool's trash
//! (source `MIGRATION`) and creates the destination as a clone of the
//! source's *head* (a parent link with snap id `NOSNAP`), so the
//! destination serves reads at once (objects it does not have yet read
//! through to the source) and its writes copy up what they touch.
//! `execute` is a flatten of the destination (every object copied up, then
//! the parent link dropped; proxied to the handle owning the exclusive
//! lock if a VM has the image open). `commit` removes the source, `abort`
//! removes the destination and puts the source back under its name. Both
//! headers carry a [`MigrationSpec`] until then.
//!
//! The source must not be open (clients move to the destination: `EBUSY`
//! otherwise). Its snapshots move with it: `prepare` copies their data
//! into the destination's objects as the same snapshots (new ids, same
//! names, sizes, times and protection; see `history.rs`) before the
//! destination exists, so only the head is copied live; a snapshot with
//! clones is refused (`EBUSY`: librbd would relink the clones). A source
//! that is itself a clone stays one: `execute` copies only the objects the
//! source has and relinks the head to the source's parent (its snapshots'
//! copies are flat); if a snapshot taken on the destination meanwhile
//! still reads the source afterwards, `execute` fails rather than let
//! `commit` remove data that snapshot needs.

use quarry_rados::NOSNAP;
use serde::{Deserialize, Serialize};

use crate::error::{RbdError, Result};
use std::collections::BTreeMap;

use quarry_rados::SnapId;

use crate::header::{read_header, update_header, ParentSpec, SnapRecord};
use crate::rbd::{lookup_id, read_dir_for_create, validate_features, validate_geometry};
use crate::trash::TrashSource;
use crate::{layout, CreateOptions, IoCtx, OpenOptions, Rbd, FEATURE_LAYERING};

/// Close snapshot handles, logging failures (nothing was written through
/// them).
async fn close_all(images: Vec<crate::Image>) {
    for img in images {
        if let Err(e) = img.close().await {
            tracing::warn!("migration: closing a source snapshot: {e}");
        }
    }
}

/// Which end of a migration an image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationRole {
    /// The image being moved (in the trash meanwhile).
    Source,
    /// The image it moves to (listed under its new name).
    Destination,
}

/// Where a migration stands (`rbd_image_migration_state_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationState {
    /// Prepared: the destination reads through to the source.
    Prepared,
    /// `execute` is copying (or was interrupted: run it again).
    Executing,
    /// Every object copied: ready to commit.
    Executed,
}

impl MigrationState {
    /// librbd's number for it.
    pub fn code(self) -> i32 {
        match self {
            MigrationState::Prepared => 2,
            MigrationState::Executing => 3,
            MigrationState::Executed => 4,
        }
    }

    /// What `rbd status` prints.
    pub fn label(self) -> &'static str {
        match self {
            MigrationState::Prepared => "prepared",
            MigrationState::Executing => "executing",
            MigrationState::Executed => "executed",
        }
    }
}

/// One end of a migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationEnd {
    /// Pool id.
    pub pool_id: quarry_rados::PoolId,
    /// Pool name when the migration was prepared.
    pub pool_name: String,
    /// Namespace.
    pub namespace: String,
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
}

impl MigrationEnd {
    fn ioctx(&self) -> IoCtx {
        IoCtx::new(self.pool_id, self.pool_name.clone(), self.namespace.clone())
    }

    fn spec(&self) -> String {
        self.ioctx().spec(&self.name)
    }
}

/// A live migration as both images' headers record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// Which end the image holding this record is.
    pub role: MigrationRole,
    /// The image moved.
    pub source: MigrationEnd,
    /// Where it moves to.
    pub dest: MigrationEnd,
    /// Where it stands.
    pub state: MigrationState,
}

impl Rbd {
    /// Start moving image `src_name` of `src_io` to `dst_name` in `dst_io`
    /// (`rbd_migration_prepare`): the destination can be opened and used
    /// at once. `EBUSY` while the source is open or already migrating,
    /// `EOPNOTSUPP` if it has snapshots, `EEXIST` if the destination name
    /// is taken, `ENOENT` if the source does not exist.
    pub async fn migration_prepare(
        &self,
        src_io: &IoCtx,
        src_name: &str,
        dst_io: &IoCtx,
        dst_name: &str,
        opts: &CreateOptions,
    ) -> Result<()> {
        layout::validate_image_name(dst_name)?;
        let rados = self.rados().clone();
        let sspec = src_io.spec(src_name);
        let sid = lookup_id(rados.as_ref(), src_io, src_name).await?;
        let soid = src_io.oid(layout::header_oid(&sid));
        let what = format!("image {sspec}");
        let mut sh = read_header(rados.as_ref(), &soid, &what).await?;
        if sh.migration.is_some() {
            return Err(RbdError::busy(what, "it is already being migrated"));
        }
        if sh.group.is_some() && !self.clear_stale_group_link(src_io, &sid, &what).await? {
            // The link was stale and is gone.
            sh = read_header(rados.as_ref(), &soid, &what).await?;
        }
        if sh.group.is_some() {
            // Its group would lose track of it (and commit could not
            // remove the source).
            return Err(RbdError::busy(
                what,
                "it belongs to a consistency group; remove it from the group first",
            ));
        }
        if let Some(s) = sh.snaps.values().find(|s| s.group.is_some()) {
            return Err(RbdError::Unsupported {
                what: format!(
                    "migrating {sspec}: its snapshot {} belongs to a group snapshot",
                    s.name
                ),
            });
        }
        for s in sh.snaps.values() {
            // Their clones would have to follow (librbd relinks them);
            // Quarry does not yet.
            let kids = crate::rbd::list_children(rados.as_ref(), src_io, &sid, s.id).await?;
            if !kids.is_empty() {
                return Err(RbdError::busy(
                    what,
                    format!(
                        "its snapshot {} has {} clone(s); flatten or remove them first",
                        s.name,
                        kids.len()
                    ),
                ));
            }
        }
        let snap_ids: Vec<SnapId> = sh.snaps.keys().copied().collect();
        // The same name in the same pool is allowed (to change the object
        // size or features): the source leaves the directory first.
        let same_name = src_io.pool_id == dst_io.pool_id
            && src_io.namespace == dst_io.namespace
            && src_name == dst_name;
        let watchers = rados
            .list_watchers(&soid)
            .await
            .map_err(|e| RbdError::rados(format!("listing watchers of {sspec}"), e))?;
        if !watchers.is_empty() {
            return Err(RbdError::busy(
                what,
                format!(
                    "it is open by {} client(s); stop them before preparing a migration",
                    watchers.len()
                ),
            ));
        }
        let features = validate_features(opts.features.unwrap_or(sh.features))?;
        if features & FEATURE_LAYERING == 0 {
            return Err(RbdError::invalid(
                "a migration destination needs the layering feature",
            ));
        }
        let order = if opts.order == 0 {
            sh.order
        } else {
            opts.order
        };
        validate_geometry(sh.size, order, features)?;
        self.check_namespace(dst_io).await?;
        let did = crate::rbd::new_image_id();
        if !same_name {
            // Refused before anything changes; read again after the move.
            read_dir_for_create(rados.as_ref(), dst_io, dst_name, &did).await?;
        }
        let mut spec = MigrationSpec {
            role: MigrationRole::Source,
            source: MigrationEnd {
                pool_id: src_io.pool_id,
                pool_name: src_io.pool_name.clone(),
                namespace: src_io.namespace.clone(),
                name: src_name.to_string(),
                id: sid.clone(),
            },
            dest: MigrationEnd {
                pool_id: dst_io.pool_id,
                pool_name: dst_io.pool_name.clone(),
                namespace: dst_io.namespace.clone(),
                name: dst_name.to_string(),
                id: did.clone(),
            },
            state: MigrationState::Prepared,
        };
        // Source marked first, then hidden: an interrupted prepare leaves a
        // source that `rbd migration abort` (or a new prepare after it)
        // can find by its record; nothing is deleted before the
        // destination exists.
        let rec = spec.clone();
        update_header(&rados, &soid, &what, |h| {
            if h.migration.as_ref().is_some_and(|m| *m != rec) {
                return Err(RbdError::busy(what.clone(), "it is already being migrated"));
            }
            if h.group.is_some() {
                return Err(RbdError::busy(
                    what.clone(),
                    "it was added to a consistency group meanwhile",
                ));
            }
            if !h.snaps.keys().copied().eq(snap_ids.iter().copied()) {
                return Err(RbdError::busy(
                    what.clone(),
                    "its snapshots changed meanwhile",
                ));
            }
            h.migration = Some(rec.clone());
            Ok(())
        })
        .await?;
        // After a failed step: the step's own error is returned; if this
        // fails too, `rbd migration abort` finishes it (logged).
        let undo_mark = || async {
            let r = update_header(&rados, &soid, &what, |h| {
                h.migration = None;
                Ok(())
            })
            .await;
            if let Err(e) = r {
                tracing::warn!("migration of {sspec}: clearing the source's record failed: {e}");
            }
        };
        if let Err(e) = self
            .trash_move_as(src_io, src_name, 0, TrashSource::Migration)
            .await
        {
            undo_mark().await;
            return Err(e);
        }
        spec.role = MigrationRole::Destination;
        let parent = ParentSpec {
            pool: src_io.pool_id,
            namespace: src_io.namespace.clone(),
            image_id: sid.clone(),
            snap_id: NOSNAP,
            overlap: sh.size,
        };
        let made = async {
            let snaps = self
                .dest_snaps(dst_io, &did, order, src_io, &sid, &sh)
                .await?;
            let ids: Vec<SnapId> = snaps.keys().copied().collect();
            let created = async {
                let dir = read_dir_for_create(rados.as_ref(), dst_io, dst_name, &did).await?;
                self.create_internal(
                    dst_io,
                    dst_name,
                    &did,
                    dir,
                    sh.size,
                    order,
                    features,
                    Some(parent),
                    None,
                    Some(spec),
                    snaps,
                )
                .await
            }
            .await;
            if created.is_err() {
                // The history copied under them goes with the ids.
                for id in ids {
                    crate::image::release_snap_id(rados.as_ref(), dst_io.pool_id, id).await;
                }
            }
            created
        }
        .await;
        if let Err(e) = made {
            // Put the source back as it was.
            if let Ok(entry) = self.trash_get(src_io, &sid).await {
                if let Err(err) = self.trash_restore_entry(src_io, entry, None).await {
                    tracing::warn!("migration of {sspec}: restoring the source failed: {err}");
                }
            }
            undo_mark().await;
            return Err(e);
        }
        Ok(())
    }

    /// The destination's snapshots for a source with snapshots: the same
    /// names, sizes, times and protection, new ids from the destination's
    /// pool (ascending as the source's), their data copied into the
    /// destination's objects (see `history.rs`) before it exists. On
    /// failure the ids are given back (the pool then drops whatever was
    /// written under them).
    async fn dest_snaps(
        &self,
        dst_io: &IoCtx,
        did: &str,
        order: u8,
        src_io: &IoCtx,
        sid: &str,
        sh: &crate::header::Header,
    ) -> Result<BTreeMap<SnapId, SnapRecord>> {
        let rados = self.rados().as_ref();
        let mut out = BTreeMap::new();
        let r = self
            .dest_snaps_inner(dst_io, did, order, src_io, sid, sh, &mut out)
            .await;
        if r.is_err() {
            for &id in out.keys() {
                crate::image::release_snap_id(rados, dst_io.pool_id, id).await;
            }
        }
        r.map(|_| out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn dest_snaps_inner(
        &self,
        dst_io: &IoCtx,
        did: &str,
        order: u8,
        src_io: &IoCtx,
        sid: &str,
        sh: &crate::header::Header,
        out: &mut BTreeMap<SnapId, SnapRecord>,
    ) -> Result<()> {
        let rados = self.rados().as_ref();
        // Ascending source ids give ascending destination ids: the order
        // of the history is kept.
        for s in sh.snaps.values() {
            let id = rados
                .snap_create(dst_io.pool_id)
                .await
                .map_err(|e| RbdError::rados("allocating a snap id for the destination", e))?;
            out.insert(
                id,
                SnapRecord {
                    id,
                    name: s.name.clone(),
                    size: s.size,
                    timestamp_ns: s.timestamp_ns,
                    protection: s.protection,
                    // Its data is its own (copied by `copy_history`).
                    parent: None,
                    group: None,
                },
            );
        }
        if out.is_empty() {
            return Ok(());
        }
        let mut sources = Vec::with_capacity(sh.snaps.len());
        for s in sh.snaps.values() {
            let opts = OpenOptions {
                read_only: true,
                snap: Some(crate::SnapSpec::Id(s.id)),
            };
            match self.open_by_id(src_io, sid, &opts).await {
                Ok(img) => sources.push(img),
                Err(e) => {
                    close_all(sources).await;
                    return Err(e);
                }
            }
        }
        let ids: Vec<SnapId> = out.keys().copied().collect();
        let copied = crate::history::copy_history(rados, dst_io, did, order, &sources, &ids).await;
        close_all(sources).await;
        copied
    }

    /// Remove every snapshot of image `id` (unprotected first): one end
    /// of a migration about to be removed with its history (the source
    /// after `execute` copied it, the destination on `abort`). `EBUSY` if
    /// a snapshot has clones.
    async fn purge_snaps(&self, io: &IoCtx, id: &str) -> Result<()> {
        let img = match self.open_by_id(io, id, &OpenOptions::default()).await {
            Ok(img) => img,
            // Removed by an interrupted step.
            Err(RbdError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let purged = async {
            for s in img.snap_list().await? {
                if s.protected {
                    img.snap_unprotect(&s.name).await?;
                }
                img.snap_remove_by_id(s.id).await?;
            }
            Ok::<(), RbdError>(())
        }
        .await;
        let closed = img.close().await;
        purged?;
        closed
    }

    /// The migration record of image `name` (either end: the destination
    /// by its name, the source by its old name while it is in the trash).
    pub async fn migration_status(&self, io: &IoCtx, name: &str) -> Result<MigrationSpec> {
        let rados = self.rados().as_ref();
        let id = match lookup_id(rados, io, name).await {
            Ok(id) => id,
            Err(RbdError::NotFound { .. }) => self
                .trash_list(io)
                .await?
                .into_iter()
                .find(|e| e.source == TrashSource::Migration && e.name == name)
                .map(|e| e.id)
                .ok_or_else(|| RbdError::not_found(format!("image {}", io.spec(name))))?,
            Err(e) => return Err(e),
        };
        let h = read_header(
            rados,
            &io.oid(layout::header_oid(&id)),
            &format!("image {}", io.spec(name)),
        )
        .await?;
        h.migration.ok_or_else(|| {
            RbdError::invalid(format!("image {} is not being migrated", io.spec(name)))
        })
    }

    /// The record as the destination's header holds it (its state is kept
    /// there), found through either end's name.
    async fn migration_dest(&self, io: &IoCtx, name: &str) -> Result<MigrationSpec> {
        let m = self.migration_status(io, name).await?;
        if m.role == MigrationRole::Destination {
            return Ok(m);
        }
        match self.end_header(&m.dest).await {
            Ok(h) => h.migration.ok_or_else(|| {
                RbdError::invalid(format!("image {} is not being migrated", m.dest.spec()))
            }),
            // An interrupted prepare (or abort): the source's record is all
            // there is; abort finishes from it.
            Err(RbdError::NotFound { .. }) => Ok(MigrationSpec {
                role: MigrationRole::Destination,
                ..m
            }),
            Err(e) => Err(e),
        }
    }

    /// The header of one end.
    async fn end_header(&self, end: &MigrationEnd) -> Result<crate::header::Header> {
        let io = end.ioctx();
        read_header(
            self.rados().as_ref(),
            &io.oid(layout::header_oid(&end.id)),
            &format!("image {}", end.spec()),
        )
        .await
    }

    /// Change one end's migration record by compare-and-swap.
    async fn update_record<F>(&self, end: &MigrationEnd, mut f: F) -> Result<()>
    where
        F: FnMut(&mut Option<MigrationSpec>, &str) -> Result<()>,
    {
        let io = end.ioctx();
        let what = format!("image {}", end.spec());
        update_header(
            self.rados(),
            &io.oid(layout::header_oid(&end.id)),
            &what,
            |h| f(&mut h.migration, &what),
        )
        .await
        .map(|_| ())
    }

    async fn set_dest_state(&self, m: &MigrationSpec, state: MigrationState) -> Result<()> {
        self.update_record(&m.dest, |rec, what| match rec.as_mut() {
            Some(r) => {
                r.state = state;
                Ok(())
            }
            None => Err(RbdError::invalid(format!("{what} is not being migrated"))),
        })
        .await
    }

    /// Copy every object of the source into the destination
    /// (`rbd_migration_execute`); `progress(done, total)` after each
    /// object. Repeating an interrupted execute finishes it.
    pub async fn migration_execute<F>(&self, io: &IoCtx, name: &str, progress: F) -> Result<()>
    where
        F: FnMut(u64, u64) + Send,
    {
        let m = self.migration_dest(io, name).await?;
        if m.state == MigrationState::Executed {
            return Ok(());
        }
        self.set_dest_state(&m, MigrationState::Executing).await?;
        let dio = m.dest.ioctx();
        let img = self
            .open_by_id(&dio, &m.dest.id, &OpenOptions::default())
            .await?;
        // (Does nothing once the source link is gone: an interrupted
        // execute copied everything already.)
        let copied = img.migration_execute(progress).await;
        let closed = img.close().await;
        copied?;
        closed?;
        // Commit removes the source: nothing may still read it.
        let h = self.end_header(&m.dest).await?;
        let reads_source = |p: &ParentSpec| {
            p.pool == m.source.pool_id
                && p.namespace == m.source.namespace
                && p.image_id == m.source.id
        };
        let still: Vec<&str> = h
            .snaps
            .values()
            .filter(|s| s.parent.as_ref().is_some_and(reads_source))
            .map(|s| s.name.as_str())
            .collect();
        if h.parent.as_ref().is_some_and(reads_source) || !still.is_empty() {
            return Err(RbdError::busy(
                format!("image {}", m.dest.spec()),
                format!(
                    "snapshot(s) {} of the destination still read data of the source \
                     that could not be copied under them; the source is kept \
                     (remove those snapshots and run execute again, or abort)",
                    still.join(", ")
                ),
            ));
        }
        self.set_dest_state(&m, MigrationState::Executed).await
    }

    /// Finish a migration after `execute` (`rbd_migration_commit`): the
    /// source is deleted and the destination becomes an ordinary image.
    /// `EINVAL` before every object was copied.
    pub async fn migration_commit(&self, io: &IoCtx, name: &str) -> Result<()> {
        let m = self.migration_dest(io, name).await?;
        if m.state != MigrationState::Executed {
            return Err(RbdError::invalid(format!(
                "migration of {} to {} is {}: run `rbd migration execute` first",
                m.source.spec(),
                m.dest.spec(),
                m.state.label()
            )));
        }
        let sio = m.source.ioctx();
        match self.trash_get(&sio, &m.source.id).await {
            Ok(entry) => {
                // Copied with their history by `execute`.
                self.purge_snaps(&sio, &m.source.id).await?;
                self.trash_remove_entry(&sio, entry, true, true).await?
            }
            // Removed by an interrupted commit.
            Err(RbdError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.update_record(&m.dest, |rec, _| {
            *rec = None;
            Ok(())
        })
        .await
    }

    /// Undo a migration (`rbd_migration_abort`): the destination and every
    /// write made to it are deleted, the source is back under its name.
    /// `EBUSY` while the destination is open.
    pub async fn migration_abort(&self, io: &IoCtx, name: &str) -> Result<()> {
        let m = self.migration_dest(io, name).await?;
        let dio = m.dest.ioctx();
        let sio = m.source.ioctx();
        // The source goes back under its name: refused before anything is
        // removed if another image took that name meanwhile.
        match lookup_id(self.rados().as_ref(), &sio, &m.source.name).await {
            Ok(id) if id != m.source.id => {
                return Err(RbdError::exists(format!(
                    "another image named {} (the source goes back under that name)",
                    m.source.spec()
                )))
            }
            Ok(_) | Err(RbdError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        // Found by id: it may have been renamed (or moved to the trash)
        // since; gone already after an interrupted abort.
        let rados = self.rados().clone();
        let spec = m.dest.spec();
        match crate::rbd::lookup_name(rados.as_ref(), &dio, &m.dest.id).await? {
            Some(n) => {
                self.purge_snaps(&dio, &m.dest.id).await?;
                self.remove_objects(&dio, &m.dest.id, &spec, true).await?;
                crate::rbd::dir_unlink(rados.as_ref(), &dio, &n, &m.dest.id).await?;
            }
            None => match self.trash_get(&dio, &m.dest.id).await {
                Ok(entry) => {
                    self.purge_snaps(&dio, &m.dest.id).await?;
                    self.trash_remove_entry(&dio, entry, true, true).await?
                }
                Err(RbdError::NotFound { .. }) => {
                    self.remove_objects(&dio, &m.dest.id, &spec, true).await?
                }
                Err(e) => return Err(e),
            },
        }
        self.update_record(&m.source, |rec, _| {
            *rec = None;
            Ok(())
        })
        .await?;
        match self.trash_get(&sio, &m.source.id).await {
            Ok(entry) => {
                self.trash_restore_entry(&sio, entry, Some(&m.source.name))
                    .await
            }
            // Restored by an interrupted abort.
            Err(RbdError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
