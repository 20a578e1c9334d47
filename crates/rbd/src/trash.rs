//! The image trash (`rbd trash mv|ls|restore|rm|purge`): deferred removal.
//!
//! A trashed image keeps its id, header and data; only its directory entry
//! moves to the pool/namespace's `rbd_trash` object (omap `id_<id>` -> a
//! JSON [`TrashEntry`]). Each step that spans two objects records where it
//! is in the entry's [`TrashState`], so an interrupted move, restore or
//! removal is finished (or refused with a clear error) by repeating it:
//! - move: entry `Moving`, then the directory entry goes, then `Normal`;
//! - restore: entry `Restoring`, then the directory entry comes back, then
//!   the trash entry goes;
//! - remove: entry `Removing`, then the image's objects, then the entry.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quarry_rados::{Op, OpRequest};
use serde::{Deserialize, Serialize};

use crate::error::{RadosContext, RbdError, Result};
use crate::layout::{self, dir_id_key, dir_name_key, DIRECTORY, TRASH};
use crate::rbd::{dir_unlink, lookup_id, omap_cas, omap_list, omap_read};
use crate::{IoCtx, Rbd};

const TRASH_PREFIX: &str = "id_";

/// Who put an image in the trash (`rbd_trash_image_source_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrashSource {
    /// A user (`rbd trash mv`, `rbd_trash_move`): `RBD_TRASH_IMAGE_SOURCE_USER` (0).
    User,
    /// A live migration's source, hidden until the migration is committed
    /// or aborted: `RBD_TRASH_IMAGE_SOURCE_MIGRATION` (2).
    Migration,
}

impl TrashSource {
    /// librbd's number for it.
    pub fn code(self) -> i32 {
        match self {
            TrashSource::User => 0,
            TrashSource::Migration => 2,
        }
    }

    /// What `rbd trash ls -l` prints.
    pub fn label(self) -> &'static str {
        match self {
            TrashSource::User => "USER",
            TrashSource::Migration => "MIGRATION",
        }
    }
}

/// Where a trash entry's multi-object change stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrashState {
    /// In the trash, nothing pending.
    Normal,
    /// Being moved in: the directory entry may still exist.
    Moving,
    /// Being removed: its objects may be partly gone.
    Removing,
    /// Being restored: the directory entry may already be back.
    Restoring,
}

/// One trashed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// The image id (the key of the entry).
    #[serde(skip)]
    pub id: String,
    /// The name it had.
    pub name: String,
    /// Who trashed it.
    pub source: TrashSource,
    /// When it was trashed (Unix seconds).
    pub deletion_time: u64,
    /// Until when it may not be removed without force (Unix seconds).
    pub deferment_end_time: u64,
    /// Where a pending change stands.
    pub state: TrashState,
}

impl TrashEntry {
    fn encode(&self) -> Bytes {
        // Serializing plain fields cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(id: &str, v: &[u8]) -> Result<TrashEntry> {
        let mut e: TrashEntry = serde_json::from_slice(v)
            .map_err(|err| RbdError::corrupt(format!("trash entry of image id {id}: {err}")))?;
        e.id = id.to_string();
        Ok(e)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key(id: &str) -> String {
    format!("{TRASH_PREFIX}{id}")
}

/// The name trashed image `id` had, if it is in `io`'s trash.
pub(crate) async fn trashed_name(
    rados: &dyn quarry_rados::Rados,
    io: &IoCtx,
    id: &str,
) -> Result<Option<String>> {
    let k = key(id);
    let (_, m) = omap_read(rados, &io.oid(TRASH), vec![k.clone()]).await?;
    m.get(&k)
        .map(|v| TrashEntry::decode(id, v).map(|e| e.name))
        .transpose()
}

/// What one [`Rbd::trash_purge`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Ids removed.
    pub removed: Vec<String>,
    /// Expired entries that could not be removed, with why (snapshots left,
    /// still open, half moved).
    pub kept: Vec<(String, RbdError)>,
}

impl Rbd {
    /// Move image `name` to the trash, removable after `delay_secs`
    /// (`rbd_trash_move`). Returns its id. `ENOENT` if absent, `EBUSY`
    /// while a client has it open. Repeating an interrupted move finishes it.
    pub async fn trash_move(&self, io: &IoCtx, name: &str, delay_secs: u64) -> Result<String> {
        self.trash_move_as(io, name, delay_secs, TrashSource::User)
            .await
    }

    /// [`Rbd::trash_move`] recording who moved it.
    pub(crate) async fn trash_move_as(
        &self,
        io: &IoCtx,
        name: &str,
        delay_secs: u64,
        source: TrashSource,
    ) -> Result<String> {
        let rados = self.rados().as_ref();
        let spec = io.spec(name);
        let id = match lookup_id(rados, io, name).await {
            Ok(id) => id,
            Err(RbdError::NotFound { .. }) => {
                // An interrupted move left the entry `Moving` with the
                // directory entry already gone: finish it.
                let pending = self
                    .trash_list(io)
                    .await?
                    .into_iter()
                    .find(|e| e.state == TrashState::Moving && e.name == name);
                match pending {
                    Some(e) => {
                        self.trash_set_state(io, &e.id, &[TrashState::Moving], TrashState::Normal)
                            .await?;
                        return Ok(e.id);
                    }
                    None => return Err(RbdError::not_found(format!("image {spec}"))),
                }
            }
            Err(e) => return Err(e),
        };
        let header_oid = io.oid(layout::header_oid(&id));
        // A group member cannot be removed (EMLINK), so it is not deferred
        // for removal either: refused now rather than at purge time.
        match crate::header::read_header(rados, &header_oid, &format!("image {spec}")).await {
            Ok(h) => {
                let live = match &h.group {
                    Some(g) => crate::group::group_exists(rados, &io.namespace, g).await?,
                    None => false,
                };
                if let Some(g) = h.group.filter(|_| live) {
                    return Err(RbdError::InGroup {
                        what: format!("image {spec}"),
                        group: g.group_id,
                    });
                }
            }
            Err(RbdError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        match rados.list_watchers(&header_oid).await {
            Ok(w) if !w.is_empty() => {
                return Err(RbdError::busy(
                    format!("image {spec}"),
                    format!("it is open by {} client(s)", w.len()),
                ))
            }
            Ok(_) => {}
            // A half-removed image (directory entry only) may go to the trash too.
            Err(e) if e.errno == quarry_common::Errno::ENOENT => {}
            Err(e) => return Err(RbdError::rados(format!("listing watchers of {spec}"), e)),
        }
        let now = unix_now();
        let mut entry = TrashEntry {
            id: id.clone(),
            name: name.to_string(),
            source,
            deletion_time: now,
            deferment_end_time: now.saturating_add(delay_secs),
            state: TrashState::Moving,
        };
        let k = key(&id);
        let what = format!("trash entry of {spec}");
        omap_cas(rados, &io.oid(TRASH), vec![k.clone()], |m| {
            if let Some(v) = m.get(&k) {
                let old = TrashEntry::decode(&id, v)?;
                if old.state != TrashState::Moving {
                    return Err(RbdError::exists(what.clone()));
                }
            }
            Ok((BTreeMap::from([(k.clone(), entry.encode())]), vec![]))
        })
        .await?;
        dir_unlink(rados, io, name, &id).await?;
        entry.state = TrashState::Normal;
        self.trash_put(io, &entry).await?;
        Ok(id)
    }

    /// The trash entry of image `id` (`rbd_trash_get`; `ENOENT`).
    pub async fn trash_get(&self, io: &IoCtx, id: &str) -> Result<TrashEntry> {
        let k = key(id);
        let (_, m) = omap_read(self.rados().as_ref(), &io.oid(TRASH), vec![k.clone()]).await?;
        match m.get(&k) {
            Some(v) => TrashEntry::decode(id, v),
            None => Err(RbdError::not_found(format!(
                "image id {id} in the trash of {}",
                io.spec("")
            ))),
        }
    }

    /// Every trash entry of `io`, sorted by id (`rbd_trash_list`).
    pub async fn trash_list(&self, io: &IoCtx) -> Result<Vec<TrashEntry>> {
        let m = omap_list(self.rados().as_ref(), &io.oid(TRASH), TRASH_PREFIX).await?;
        m.iter()
            .map(|(k, v)| TrashEntry::decode(&k[TRASH_PREFIX.len()..], v))
            .collect()
    }

    /// Put image `id` back in the directory under `new_name` (or the name
    /// it had) (`rbd_trash_restore`). `ENOENT` if not in the trash,
    /// `EEXIST` if the name is taken, `EBUSY` while it is being removed.
    pub async fn trash_restore(&self, io: &IoCtx, id: &str, new_name: Option<&str>) -> Result<()> {
        let entry = self.trash_get(io, id).await?;
        self.refuse_migration_source(io, &entry).await?;
        self.trash_restore_entry(io, entry, new_name).await
    }

    /// [`Rbd::trash_restore`] of an entry already read (a migration's
    /// abort restores its source this way).
    pub(crate) async fn trash_restore_entry(
        &self,
        io: &IoCtx,
        entry: TrashEntry,
        new_name: Option<&str>,
    ) -> Result<()> {
        let rados = self.rados().as_ref();
        let id = entry.id.as_str();
        let name = match new_name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => entry.name.clone(),
        };
        layout::validate_image_name(&name)?;
        self.trash_set_state(
            io,
            id,
            &[TrashState::Normal, TrashState::Restoring],
            TrashState::Restoring,
        )
        .await?;
        let nk = dir_name_key(&name);
        let ik = dir_id_key(id);
        let linked = omap_cas(rados, &io.oid(DIRECTORY), vec![nk.clone()], |m| {
            match m.get(&nk) {
                // Finishing an interrupted restore.
                Some(v) if v.as_ref() == id.as_bytes() => Ok((BTreeMap::new(), vec![])),
                Some(_) => Err(RbdError::exists(format!("image {}", io.spec(&name)))),
                None => Ok((
                    BTreeMap::from([
                        (nk.clone(), Bytes::from(id.to_string())),
                        (ik.clone(), Bytes::from(name.clone())),
                    ]),
                    vec![],
                )),
            }
        })
        .await;
        if let Err(e) = linked {
            // Leave the entry as it was; the error says why.
            self.trash_revert(io, id, TrashState::Restoring).await;
            return Err(e);
        }
        self.trash_unlink(io, id).await
    }

    /// Remove trashed image `id` and its data (`rbd_trash_remove`).
    /// `EPERM` before its deferment ends unless `force`, `ENOTEMPTY` while
    /// it has snapshots, `EBUSY` while open or being restored, `EUCLEAN`
    /// if it was not fully moved to the trash.
    pub async fn trash_remove(&self, io: &IoCtx, id: &str, force: bool) -> Result<()> {
        let entry = self.trash_get(io, id).await?;
        self.refuse_migration_source(io, &entry).await?;
        self.trash_remove_entry(io, entry, force, false).await
    }

    /// [`Rbd::trash_remove`] of an entry already read (a migration's
    /// commit removes its source this way).
    pub(crate) async fn trash_remove_entry(
        &self,
        io: &IoCtx,
        entry: TrashEntry,
        force: bool,
        migration_step: bool,
    ) -> Result<()> {
        let id = entry.id.as_str();
        let what = format!("image {} (id {id}) in the trash", io.spec(&entry.name));
        if !force && unix_now() < entry.deferment_end_time {
            return Err(RbdError::NotPermitted {
                what,
                why: "its deferment time has not expired".into(),
            });
        }
        match entry.state {
            TrashState::Moving => {
                return Err(RbdError::Incomplete {
                    what,
                    why: "it was not fully moved to the trash; repeat the move".into(),
                })
            }
            TrashState::Restoring => return Err(RbdError::busy(what, "it is being restored")),
            TrashState::Normal | TrashState::Removing => {}
        }
        self.trash_set_state(
            io,
            id,
            &[TrashState::Normal, TrashState::Removing],
            TrashState::Removing,
        )
        .await?;
        if let Err(e) = self
            .remove_objects(io, id, &io.spec(&entry.name), migration_step)
            .await
        {
            self.trash_revert(io, id, TrashState::Removing).await;
            return Err(e);
        }
        self.trash_unlink(io, id).await
    }

    /// A migration's source leaves the trash only through `rbd migration
    /// commit` (removed) or `abort` (restored): `EBUSY` while its header
    /// still records the migration. Once the record is gone (an abort that
    /// could not restore it), the entry is an ordinary one.
    async fn refuse_migration_source(&self, io: &IoCtx, e: &TrashEntry) -> Result<()> {
        if e.source != TrashSource::Migration {
            return Ok(());
        }
        let what = format!("image {} (id {}) in the trash", io.spec(&e.name), e.id);
        let oid = io.oid(crate::layout::header_oid(&e.id));
        match crate::header::read_header(self.rados().as_ref(), &oid, &what).await {
            Ok(h) if h.migration.is_some() => Err(RbdError::busy(
                what,
                "it is the source of a live migration; commit or abort the migration instead",
            )),
            Ok(_) | Err(RbdError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Take entry `id` out of the trash (the last step of a restore or removal).
    async fn trash_unlink(&self, io: &IoCtx, id: &str) -> Result<()> {
        let req = OpRequest::new(io.oid(TRASH)).op(Op::OmapRmKeys(vec![key(id)]));
        self.rados()
            .operate(req)
            .await
            .ctx(|| format!("removing image id {id} from the trash"))?;
        Ok(())
    }

    /// After a failed restore or removal, put entry `id` back from `from` to
    /// `Normal`. The caller returns the step's own error; if this fails too
    /// the entry stays in `from`, which repeating the command handles, and
    /// the failure is logged.
    async fn trash_revert(&self, io: &IoCtx, id: &str, from: TrashState) {
        if let Err(e) = self
            .trash_set_state(io, id, &[from], TrashState::Normal)
            .await
        {
            tracing::warn!("trash entry of image id {id} stays {from:?}: {e}");
        }
    }

    /// Remove every user-trashed image whose deferment ended at or before
    /// `expired_before` (Unix seconds; now if `None`) (`rbd_trash_purge`).
    /// Entries that cannot go (snapshots left, open, half moved) are kept
    /// and reported; other errors stop the purge.
    pub async fn trash_purge(
        &self,
        io: &IoCtx,
        expired_before: Option<u64>,
    ) -> Result<PurgeReport> {
        let ts = expired_before.unwrap_or_else(unix_now);
        let mut report = PurgeReport::default();
        for e in self.trash_list(io).await? {
            if e.source != TrashSource::User || e.deferment_end_time > ts {
                continue;
            }
            match self.trash_remove(io, &e.id, true).await {
                Ok(()) => report.removed.push(e.id),
                Err(RbdError::NotFound { .. }) => {}
                Err(
                    err @ (RbdError::NotEmpty { .. }
                    | RbdError::Busy { .. }
                    | RbdError::Incomplete { .. }),
                ) => report.kept.push((e.id, err)),
                Err(err) => return Err(err),
            }
        }
        Ok(report)
    }

    /// Move entry `id` from one of `from` to `to` atomically (`ENOENT` if
    /// gone, `EBUSY` if in another state).
    async fn trash_set_state(
        &self,
        io: &IoCtx,
        id: &str,
        from: &[TrashState],
        to: TrashState,
    ) -> Result<()> {
        let k = key(id);
        let what = format!("image id {id} in the trash of {}", io.spec(""));
        omap_cas(
            self.rados().as_ref(),
            &io.oid(TRASH),
            vec![k.clone()],
            |m| {
                let v = m.get(&k).ok_or_else(|| RbdError::not_found(what.clone()))?;
                let mut e = TrashEntry::decode(id, v)?;
                if e.state == to {
                    return Ok((BTreeMap::new(), vec![]));
                }
                if !from.contains(&e.state) {
                    return Err(RbdError::busy(what.clone(), format!("it is {:?}", e.state)));
                }
                e.state = to;
                Ok((BTreeMap::from([(k.clone(), e.encode())]), vec![]))
            },
        )
        .await
    }

    async fn trash_put(&self, io: &IoCtx, e: &TrashEntry) -> Result<()> {
        let req = OpRequest::new(io.oid(TRASH))
            .op(Op::OmapSetVals(BTreeMap::from([(key(&e.id), e.encode())])));
        self.rados()
            .operate(req)
            .await
            .ctx(|| format!("updating the trash entry of image id {}", e.id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_corrupt() {
        let e = TrashEntry {
            id: "abc".into(),
            name: "vm1".into(),
            source: TrashSource::User,
            deletion_time: 10,
            deferment_end_time: 20,
            state: TrashState::Normal,
        };
        assert_eq!(TrashEntry::decode("abc", &e.encode()), Ok(e));
        let err = TrashEntry::decode("abc", b"{not json").unwrap_err();
        assert!(matches!(err, RbdError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("image id abc"), "{err}");
    }
}
