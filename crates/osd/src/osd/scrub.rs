//! Deep scrub and repair of a PG (`ceph pg deep-scrub`, `ceph pg repair`).
//!
//! Read repair only heals a copy that a client read hits, and clients read
//! from the primary: a damaged replica stays unnoticed until a failover
//! makes it the copy that is read, maybe after the good ones are gone. A
//! deep scrub finds it first. The primary compares every object's copies
//! on the acting set: each OSD digests its own copy's complete export and
//! checks every data block against its stored crc32c, so only digests
//! cross the network. An object is compared under the PG's write lock,
//! after every member applied each op up to the primary's newest version,
//! so no write runs meanwhile and in-sync copies digest alike (exports are
//! canonical). A copy that is damaged, unreadable, missing, extra or
//! different from the authoritative copy (the primary's if undamaged, else
//! the first undamaged replica's) is inconsistent; repair rewrites it from
//! the authoritative copy with recovery's own pull and push.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_client::wire::{
    InconsistentObject, ObjDigest, Request, Resp, ScrubCopy, ScrubReport, Ver, WireError,
};
use quarry_common::Errno;
use quarry_map::{Epoch, OsdId, PgId};
use quarry_monc::PgScrubErrors;
use quarry_rados::ObjectId;

use super::{Active, Osd, Pg, WResult};

/// How long a member waits to have applied the ops the primary had
/// assigned when it began comparing an object (they are already on the
/// wire; a member that never gets there is re-peered anyway).
const CATCH_UP: Duration = Duration::from_secs(10);

/// One copy as the scrub saw it: its digest (`None`: the object is absent
/// there), or why it could not be read there (an I/O error: damaged).
type Copy = Result<Option<ObjDigest>, String>;

/// Digest of an export, or why it is unreadable.
fn digest_of(export: &[u8], oid: &ObjectId) -> Result<ObjDigest, String> {
    quarry_store::export_digest(export, &oid.name)
        .map(|d| ObjDigest {
            crc: d.crc,
            len: d.len,
            bad_blocks: d.bad_blocks,
        })
        .map_err(|e| e.to_string())
}

/// Whether a copy can serve as the authoritative one.
fn undamaged(c: &Copy) -> bool {
    match c {
        Ok(None) => true,
        Ok(Some(d)) => d.bad_blocks == 0,
        Err(_) => false,
    }
}

/// What is wrong with copy `c` on `osd`, given the authoritative copy
/// `auth` (its OSD and digest), or `None` if nothing is.
fn fault(osd: OsdId, c: &Copy, auth: Option<(OsdId, Option<ObjDigest>)>) -> Option<String> {
    match c {
        Err(e) => Some(format!("osd.{osd}: read error: {e}")),
        Ok(Some(d)) if d.bad_blocks > 0 => Some(format!(
            "osd.{osd}: {} data block(s) fail their checksum",
            d.bad_blocks
        )),
        Ok(d) => match auth {
            Some((a, ad)) if a != osd && ad != *d => Some(match (ad, d) {
                (Some(_), None) => format!("osd.{osd}: missing (osd.{a} has it)"),
                (None, Some(_)) => format!("osd.{osd}: holds it, osd.{a} does not"),
                _ => format!("osd.{osd}: differs from osd.{a}'s copy"),
            }),
            _ => None,
        },
    }
}

/// Ceph-style error codes for copy `c` on `osd` against the authoritative
/// copy (see [`ScrubCopy::errors`]); empty for a good copy.
fn copy_errors(osd: OsdId, c: &Copy, auth: Option<(OsdId, Option<ObjDigest>)>) -> Vec<String> {
    let code = match c {
        Err(_) => Some("read_error"),
        Ok(Some(d)) if d.bad_blocks > 0 => Some("read_error"),
        Ok(d) => match auth {
            Some((a, ad)) if a != osd && ad != *d => Some(match (ad, d) {
                (Some(_), None) => "missing",
                (None, Some(_)) => "unexpected_copy",
                _ => "digest_mismatch",
            }),
            _ => None,
        },
    };
    code.into_iter().map(str::to_string).collect()
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a PG this OSD now leads is first due for a scheduled deep scrub:
/// `every` after its last one (`stamp`, unix seconds, from the monitors),
/// at once if that is past; a PG never scrubbed falls in the first round,
/// `every` x (1 + `spread`) after this OSD started (`start`), so a new
/// cluster's PGs are not all read back to back.
fn first_due(
    now: Instant,
    now_unix: u64,
    stamp: Option<u64>,
    start: Instant,
    every: Duration,
    spread: f64,
) -> Instant {
    match stamp {
        Some(t) => {
            let since = Duration::from_secs(now_unix.saturating_sub(t));
            now + every.saturating_sub(since)
        }
        None => start + every.mul_f64(1.0 + spread),
    }
}

/// A fraction in [0, 0.5) fixed per (OSD, PG): where in the first round of
/// scheduled scrubs this PG falls.
fn spread(osd: OsdId, pg: PgId) -> f64 {
    let x = ((u64::from(osd) << 48) ^ ((pg.pool as u64) << 24) ^ u64::from(pg.seed))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 11) as f64 / (1u64 << 53) as f64 * 0.5
}

impl Osd {
    /// Deep-scrub `pg`, whose active primary this OSD is (`active`); with
    /// `repair`, rewrite every inconsistent copy from the authoritative one.
    pub(super) async fn deep_scrub(
        &self,
        pg: PgId,
        p: &Pg,
        active: &Active,
        repair: bool,
    ) -> WResult<ScrubReport> {
        let mut names = BTreeSet::new();
        for &m in &active.acting {
            for o in self.objects_of(m, pg).await? {
                names.insert((o.namespace, o.name));
            }
        }
        let mut report = ScrubReport {
            pg: Some(pg),
            epoch: active.epoch,
            acting: active.acting.clone(),
            ..Default::default()
        };
        for (namespace, name) in names {
            if p.active.borrow().as_ref() != Some(active) {
                return Err(WireError::retry(
                    self.map().epoch + 1,
                    format!("pg {pg} changed interval during its scrub"),
                ));
            }
            let oid = ObjectId {
                pool: pg.pool,
                namespace,
                name,
            };
            if let Some(bad) = self
                .scrub_object(pg, p, active, &oid, repair, &mut report.repaired)
                .await?
            {
                report.inconsistent.push(bad);
            }
            report.objects += 1;
        }
        self.record_scrub(pg, &report).await;
        tracing::info!(
            osd = self.id,
            %pg,
            objects = report.objects,
            inconsistent = report.inconsistent.len(),
            repaired = report.repaired,
            "deep scrub{} done",
            if repair { " and repair" } else { "" }
        );
        Ok(report)
    }

    /// Compare (and with `repair` fix) the copies of one object.
    async fn scrub_object(
        &self,
        pg: PgId,
        p: &Pg,
        active: &Active,
        oid: &ObjectId,
        repair: bool,
        repaired: &mut u64,
    ) -> WResult<Option<InconsistentObject>> {
        // No write of the PG starts while the lock is held; those already
        // assigned reach every member (RepOps apply in version order).
        let _g = p.write_lock.lock().await;
        let upto = *p.last.borrow();
        self.store_barrier().await?;
        let mut local = None;
        let mine: Copy = match self.read_state(pg, oid).await {
            Ok((exists, data)) => {
                let c = if exists {
                    digest_of(&data, oid).map(Some)
                } else {
                    Ok(None)
                };
                local = Some((exists, data));
                c
            }
            Err(e) if e.errno == Errno::EIO.code() && e.retry_epoch.is_none() => Err(e.msg),
            Err(e) => return Err(e),
        };
        let mut copies: Vec<(OsdId, Copy)> = vec![(self.id, mine)];
        for &m in active.acting.iter().filter(|&&m| m != self.id) {
            let req = Request::ScrubObject {
                pg,
                epoch: active.epoch,
                oid: oid.clone(),
                upto,
            };
            let c = match self.peer_call(m, req, Bytes::new()).await {
                Ok((Resp::Digest(d), _)) => Ok(d),
                Ok(_) => {
                    return Err(WireError::new(
                        Errno::EIO,
                        format!("osd.{m}: unexpected reply to a scrub"),
                    ))
                }
                // Its copy could not be read there: damaged.
                Err(e) if e.errno == Errno::EIO.code() && e.retry_epoch.is_none() => Err(e.msg),
                Err(e) => return Err(e),
            };
            copies.push((m, c));
        }
        let auth = copies
            .iter()
            .find(|(_, c)| undamaged(c))
            .and_then(|(m, c)| c.as_ref().ok().map(|d| (*m, *d)));
        let mut errors = Vec::new();
        let mut bad: Vec<OsdId> = Vec::new();
        for (m, c) in &copies {
            if let Some(why) = fault(*m, c, auth) {
                errors.push(why);
                bad.push(*m);
            }
        }
        if errors.is_empty() {
            return Ok(None);
        }
        let shards = copies
            .iter()
            .map(|(m, c)| ScrubCopy {
                osd: *m,
                digest: c.as_ref().ok().and_then(|d| d.map(|d| d.crc)),
                errors: copy_errors(*m, c, auth),
            })
            .collect();
        tracing::warn!(osd = self.id, %pg, obj = %oid.name, "deep scrub: {}", errors.join("; "));
        let fixed = repair && auth.is_some();
        match (repair, auth) {
            (false, _) => {}
            (true, None) => errors.push("no undamaged copy to repair from".to_string()),
            (true, Some((a, _))) => {
                let (exists, data) = match local.filter(|_| a == self.id) {
                    Some(s) => s,
                    None => match self
                        .peer_call(a, Request::Pull { oid: oid.clone() }, Bytes::new())
                        .await?
                    {
                        (Resp::Export(e), d) => (e, d),
                        _ => return Err(WireError::new(Errno::EIO, "bad Pull reply")),
                    },
                };
                for &m in &bad {
                    if m == self.id {
                        self.install(pg, oid, exists, data.clone()).await?;
                    } else {
                        let push = Request::Push {
                            pg,
                            epoch: active.epoch,
                            oid: oid.clone(),
                            exists,
                        };
                        self.peer_call(m, push, data.clone()).await?;
                    }
                    *repaired += 1;
                    tracing::info!(osd = self.id, %pg, obj = %oid.name, "repaired osd.{m}'s copy from osd.{a}'s");
                }
            }
        }
        Ok(Some(InconsistentObject {
            namespace: oid.namespace.clone(),
            name: oid.name.clone(),
            errors,
            auth: auth.map(|(a, _)| a),
            bad_copies: bad,
            repaired: fixed,
            copies: shards,
        }))
    }

    /// Keep what a finished scrub of `pg` left inconsistent (for `rados
    /// list-inconsistent-obj`) and tell the monitors how many bad copies
    /// remain (for `ceph health`), before the scrub's caller hears of it; a
    /// report the monitors did not take is retried with the beacons.
    async fn record_scrub(&self, pg: PgId, report: &ScrubReport) {
        let left: Vec<InconsistentObject> = report
            .inconsistent
            .iter()
            .filter(|o| !o.repaired)
            .cloned()
            .collect();
        let summary = PgScrubErrors {
            pg,
            errors: left.iter().map(|o| o.bad_copies.len().max(1) as u32).sum(),
            objects: left.len() as u32,
        };
        super::lock(&self.scrub_results).insert(
            pg,
            ScrubReport {
                inconsistent: left,
                ..report.clone()
            },
        );
        match self.monc.pg_scrubbed(summary).await {
            Ok(()) => {
                super::lock(&self.scrub_unreported).remove(&pg);
            }
            Err(e) => {
                tracing::warn!(osd = self.id, %pg, "scrub result not recorded by the monitors (retried): {e}");
                super::lock(&self.scrub_unreported).insert(pg, summary);
            }
        }
    }

    /// Send the monitors the scrub summaries they have not taken yet.
    pub(super) async fn report_pending_scrubs(&self) {
        let pending: Vec<PgScrubErrors> = super::lock(&self.scrub_unreported)
            .values()
            .copied()
            .collect();
        for summary in pending {
            if self.monc.pg_scrubbed(summary).await.is_ok() {
                let mut u = super::lock(&self.scrub_unreported);
                // Unless a newer scrub replaced it meanwhile.
                if u.get(&summary.pg) == Some(&summary) {
                    u.remove(&summary.pg);
                }
            }
        }
    }

    /// What the last scrub of `pg` here left inconsistent (`ENOENT`: not
    /// scrubbed here since this OSD started).
    pub(super) fn last_scrub(&self, pg: PgId) -> WResult<ScrubReport> {
        super::lock(&self.scrub_results)
            .get(&pg)
            .cloned()
            .ok_or_else(|| {
                WireError::new(
                    Errno::ENOENT,
                    format!("No scrub information available for pg {pg}"),
                )
            })
    }

    /// Deep-scrub each PG this OSD is the active primary for once per
    /// `every` (`osd_deep_scrub_interval`) after its last deep scrub, as
    /// the monitors recorded it (whoever was primary then; see
    /// [`first_due`]), repairing what it finds if `auto_repair`
    /// (`osd_scrub_auto_repair`). A scrub that fails (the PG changed
    /// interval, a peer did not answer) is tried again next tick.
    pub(super) async fn scrub_loop(self: Arc<Self>, every: Duration, auto_repair: bool) {
        let tick = (every / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let start = Instant::now();
        // When each PG is next due; the monitors' stamps, fetched whenever
        // a PG without a due time appears (this OSD started or became its
        // primary) and kept until the next such fetch.
        let mut due: HashMap<PgId, Instant> = HashMap::new();
        let mut stamps: HashMap<PgId, u64> = HashMap::new();
        loop {
            tokio::time::sleep(tick).await;
            let pgs: Vec<(PgId, Arc<Pg>)> = super::lock(&self.pgs)
                .iter()
                .map(|(id, p)| (*id, p.clone()))
                .collect();
            let led = |p: &Pg| {
                p.active
                    .borrow()
                    .as_ref()
                    .is_some_and(|a| a.acting.first() == Some(&self.id))
            };
            // PGs no longer led here are forgotten (a later lead re-reads
            // their stamp: another primary may have scrubbed them).
            due.retain(|pg, _| pgs.iter().any(|(id, p)| id == pg && led(p)));
            if pgs.iter().any(|(id, p)| led(p) && !due.contains_key(id)) {
                match self.monc.scrub_stamps().await {
                    Ok(v) => stamps = v.into_iter().collect(),
                    Err(e) => {
                        tracing::debug!(osd = self.id, "scrub stamps: {e}");
                        continue;
                    }
                }
            }
            for (pg, p) in pgs {
                let Some(active) = p.active.borrow().clone() else {
                    continue;
                };
                if active.acting.first() != Some(&self.id) {
                    continue;
                }
                let at = *due.entry(pg).or_insert_with(|| {
                    first_due(
                        Instant::now(),
                        unix_now(),
                        stamps.get(&pg).copied(),
                        start,
                        every,
                        spread(self.id, pg),
                    )
                });
                if Instant::now() < at {
                    continue;
                }
                match self.deep_scrub(pg, &p, &active, auto_repair).await {
                    Ok(_) => {
                        due.insert(pg, Instant::now() + every);
                    }
                    Err(e) => tracing::debug!(osd = self.id, %pg, "scheduled deep scrub: {e}"),
                }
            }
        }
    }

    /// A member's side of a scrub: the digest of its copy of `oid` once it
    /// has applied every op of `pg` up to `upto` (`None`: absent here). An
    /// unreadable copy is `EIO`.
    pub(super) async fn scrub_copy(
        &self,
        pg: PgId,
        epoch: Epoch,
        oid: ObjectId,
        upto: Ver,
    ) -> WResult<Option<ObjDigest>> {
        let p = self.pg(pg)?;
        if epoch < p.interval.load(Ordering::SeqCst) {
            return Err(WireError::new(Errno::ESHUTDOWN, "stale scrub"));
        }
        let mut last = p.last.subscribe();
        // (The guard `wait_for` returns must not live across an await.)
        let caught_up = matches!(
            tokio::time::timeout(CATCH_UP, last.wait_for(|v| *v >= upto)).await,
            Ok(Ok(_))
        );
        if !caught_up {
            return Err(WireError::new(
                Errno::EAGAIN,
                format!(
                    "osd.{}: pg {pg} did not reach {upto} in time for the scrub",
                    self.id
                ),
            ));
        }
        let _g = p.write_lock.lock().await;
        self.store_barrier().await?;
        match self.read_state(pg, &oid).await? {
            (true, d) => digest_of(&d, &oid)
                .map(Some)
                .map_err(|e| WireError::new(Errno::EIO, e)),
            (false, _) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(crc: u32, bad: u32) -> Option<ObjDigest> {
        Some(ObjDigest {
            crc,
            len: 100,
            bad_blocks: bad,
        })
    }

    #[test]
    fn first_scheduled_scrubs_are_spread_over_half_an_interval() {
        let v: Vec<f64> = (0..64)
            .map(|seed| spread(0, PgId { pool: 2, seed }))
            .collect();
        assert!(v.iter().all(|x| (0.0..0.5).contains(x)));
        // Not bunched: both halves of the window get PGs.
        assert!(v.iter().any(|&x| x < 0.25) && v.iter().any(|&x| x >= 0.25));
        assert_ne!(
            spread(0, PgId { pool: 2, seed: 1 }),
            spread(1, PgId { pool: 2, seed: 1 })
        );
    }

    #[test]
    fn scheduled_scrubs_follow_the_last_stamp_across_restarts() {
        let start = Instant::now();
        let now = start + Duration::from_secs(5);
        let week = Duration::from_secs(7 * 86400);
        // Scrubbed a day ago (by this OSD before a restart, or another
        // primary): due six days from now, not a week after this start.
        let t = first_due(now, 1_000_000, Some(1_000_000 - 86400), start, week, 0.2);
        assert_eq!(t, now + Duration::from_secs(6 * 86400));
        // Overdue: at once.
        let t = first_due(now, 2_000_000, Some(1), start, week, 0.2);
        assert_eq!(t, now);
        // Never scrubbed: in the first round, spread after the start.
        let t = first_due(now, 1_000_000, None, start, week, 0.25);
        assert_eq!(t, start + week.mul_f64(1.25));
    }

    #[test]
    fn faults_name_each_bad_copy_against_the_authoritative_one() {
        let auth = Some((0, d(7, 0)));
        assert_eq!(fault(0, &Ok(d(7, 0)), auth), None);
        assert_eq!(fault(1, &Ok(d(7, 0)), auth), None);
        assert!(fault(1, &Ok(d(7, 2)), auth)
            .is_some_and(|s| s.contains("2 data block(s) fail their checksum")));
        assert!(fault(2, &Ok(d(8, 0)), auth).is_some_and(|s| s.contains("differs from osd.0")));
        assert!(fault(2, &Ok(None), auth).is_some_and(|s| s.contains("missing")));
        assert!(
            fault(2, &Ok(d(7, 0)), Some((0, None))).is_some_and(|s| s.contains("osd.0 does not"))
        );
        assert!(fault(1, &Err("EIO".into()), auth).is_some_and(|s| s.contains("read error")));
        // The same cases as error codes, per copy.
        assert!(copy_errors(1, &Ok(d(7, 0)), auth).is_empty());
        assert_eq!(copy_errors(1, &Ok(d(7, 2)), auth), ["read_error"]);
        assert_eq!(copy_errors(1, &Err("EIO".into()), auth), ["read_error"]);
        assert_eq!(copy_errors(2, &Ok(d(8, 0)), auth), ["digest_mismatch"]);
        assert_eq!(copy_errors(2, &Ok(None), auth), ["missing"]);
        assert_eq!(
            copy_errors(2, &Ok(d(7, 0)), Some((0, None))),
            ["unexpected_copy"]
        );
        // The authoritative copy is never at fault against itself.
        assert!(copy_errors(0, &Ok(None), Some((0, None))).is_empty());
        // Without an undamaged copy only damage is reported.
        assert_eq!(fault(1, &Ok(d(9, 0)), None), None);
        assert!(!undamaged(&Ok(d(1, 1))));
        assert!(undamaged(&Ok(None)));
        assert!(!undamaged(&Err(String::new())));
    }
}
