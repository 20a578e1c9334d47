//! The exclusive lock (`RBD_FEATURE_EXCLUSIVE_LOCK`), librbd's semantics.
//!
//! The lock is a record in the header object's xattr [`LOCK_XATTR`] naming
//! the owner: client instance id + the cookie of the owner's header watch.
//! It changes only by compare-and-swap on the header's object version, so
//! two clients can never both believe they took it.
//!
//! * A handle takes the lock before its first write (automatic policy). If
//!   another live handle owns it, it sends a `request_lock` notify on the
//!   header; the owner (cooperative, as librbd) acks `releasing` at once,
//!   then lets its in-flight writes finish, runs the pre-release hook (the
//!   C library flushes its cache) and removes the record; the requester
//!   retries until the record is gone and takes it. On taking the lock the
//!   handle re-reads header and object map, so it sees everything the
//!   previous owner acknowledged.
//! * An owner whose watch is gone (process killed, connection lost), or
//!   that does not answer a request within [`REQUEST_TIMEOUT`] (stopped,
//!   hung, cut off), is dead: the requester first blocklists its address
//!   (fencing, `rbd_blocklist_on_break_lock`: OSDs then refuse its every
//!   request with `ESHUTDOWN`, and the requester's own later ops carry a
//!   map epoch at which that holds) and then breaks its lock (replaces the
//!   record by CAS). `rbd lock rm` / `rbd_lock_break` fence the same way.
//! * [`Image::lock_acquire`] (`rbd_lock_acquire`) switches the handle to the
//!   managed policy: it never hands the lock over (requests are answered
//!   `refused`, the requester's write fails with `EROFS`), and it never
//!   takes the lock implicitly again: after [`Image::lock_release`] writes
//!   fail with `EROFS`, as librbd's standard policy.
//!
//! On the embedded backend (one process) there is nobody to fence: the
//! blocklist call answers `EOPNOTSUPP` and the break goes ahead.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use quarry_common::Errno;
use quarry_rados::{
    NotifyEvent, ObjectId, Op, OpOutput, OpRequest, Rados, WatchCallback, WatchError, WatchEvent,
    Watcher,
};
use serde::{Deserialize, Serialize};

use crate::advisory::ADVISORY_LOCK;
use crate::error::{RadosContext, RbdError, Result};
use crate::header::{self, Header};
use crate::image::{Image, Inner};
use crate::objmap;
use crate::proxy::{ProxyOp, Reply, WireError};
use crate::{FEATURE_EXCLUSIVE_LOCK, FEATURE_OBJECT_MAP};

/// Header xattr holding the lock record (JSON [`LockRecord`]).
pub(crate) const LOCK_XATTR: &str = "lock.rbd_lock";
/// How long a requester waits for the owner's answer to one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handle that handed the lock over on request leaves it to
/// the requester (which looks every [`RETRY_PAUSE`]) before asking for it
/// back: without it a handle that writes without pause took the lock back
/// at once every time, and the requester never got it.
const HANDOVER_GRACE: Duration = Duration::from_millis(100);
/// How often a hand-over in progress is looked at (by the requester for
/// the record to go, by the releaser for the requester to take it).
const HANDOVER_POLL: Duration = Duration::from_millis(2);
/// Bound on taking the lock from a live owner that does not let go.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a header change waits for the image's other open handles to
/// re-read the header.
const HEADER_UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while the lock changes hands.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a broken owner stays blocklisted when
/// `rbd_blocklist_expire_seconds` is 0 (Ceph: the monitor's default,
/// `mon_osd_blocklist_default_expire`, one hour).
const BLOCKLIST_EXPIRE: Duration = Duration::from_secs(3600);

/// Whether and for how long the owner of a broken lock is blocklisted
/// (`rbd_blocklist_on_break_lock`, `rbd_blocklist_expire_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FencePolicy {
    /// Blocklist the old owner before its lock is broken.
    pub blocklist: bool,
    /// For this long (`None`: the default hour).
    pub expire: Option<Duration>,
}

impl Default for FencePolicy {
    fn default() -> Self {
        FencePolicy {
            blocklist: true,
            expire: None,
        }
    }
}

impl FencePolicy {
    /// From the two options' values (`expire_secs` 0: the default).
    pub fn from_options(blocklist: bool, expire_secs: u64) -> FencePolicy {
        FencePolicy {
            blocklist,
            expire: (expire_secs > 0).then(|| Duration::from_secs(expire_secs)),
        }
    }
}

/// Called before the lock is handed over (the C library flushes its
/// write-back cache there); its error aborts the hand-off.
pub type PreReleaseHook = Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Who holds the lock, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRecord {
    /// Owner's client instance id.
    pub client: u64,
    /// Cookie of the owner's header watch.
    pub cookie: u64,
    /// Whether the owner took it with `rbd_lock_acquire` (never handed over).
    pub managed: bool,
    /// The owner's client address (`ip:0/<instance id>`), to fence it even
    /// after its watch is gone. Empty in records of older versions.
    #[serde(default)]
    pub addr: String,
}

/// A lock owner as `rbd_lock_get_owners` / `rbd lock ls` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOwner {
    /// `client.<instance id>`.
    pub entity: String,
    /// The owner's header watch cookie (librbd's lock cookie is `auto <n>`).
    pub cookie: String,
    /// The owner's client address, `ip:0/<instance id>` (empty if unknown).
    pub addr: String,
}

/// A notification on the header: `request_lock`, `header_update`, or a
/// proxied operation (`proxy.rs`: `id` and `args` set). Fields added since
/// the first version default, and older versions ignore them.
#[derive(Serialize, Deserialize)]
struct Request {
    op: String,
    client: u64,
    cookie: u64,
    /// The requester's id of a proxied operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// A proxied operation's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<ProxyOp>,
}

/// A watcher's answer. `result`: `ok`, `releasing`, `refused`, `not_owner`,
/// `unknown` (an op this version does not know), and for proxied
/// operations `done` (with `error` or `value`) or `in_progress`.
#[derive(Serialize, Deserialize)]
struct Answer {
    result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<u64>,
}

impl Answer {
    fn plain(result: &str) -> Answer {
        Answer {
            result: result.into(),
            error: None,
            value: None,
        }
    }
}

/// What the lock owner said to a proxied request (requester side).
pub(crate) enum ProxyAnswer {
    /// It ran the operation: its result.
    Done(Result<u64>),
    /// Still running: ask again with the same id.
    InProgress,
    /// The lock changed hands (or was released): look again.
    NotOwner,
    /// An owner of an older version: run the operation here.
    Unknown,
    /// Its watch exists but it did not answer in time.
    Unresponsive,
    /// Its watch is gone (it died or closed meanwhile): look again.
    Gone,
}

/// Lock state of one handle.
#[derive(Default)]
pub(crate) struct LockState {
    /// Serializes acquire/release of this handle.
    pub op: tokio::sync::Mutex<()>,
    /// Managed policy (`rbd_lock_acquire` was called).
    pub managed: std::sync::atomic::AtomicBool,
    pub hook: std::sync::Mutex<Option<PreReleaseHook>>,
    /// What breaking another owner's lock does to that owner.
    pub fence: FencePolicy,
    /// When this handle last handed the lock over on request (see
    /// [`HANDOVER_GRACE`]).
    pub handed_over: std::sync::Mutex<Option<tokio::time::Instant>>,
}

fn what(inner: &Inner) -> String {
    format!("image {}", inner.spec())
}

/// One look at the header object for the lock: the record and the header
/// (both at `version`: a compare-and-swap of the record at that version
/// proves the header unchanged too), and the object's watchers.
pub(crate) struct LockProbe {
    rec: Option<LockRecord>,
    /// A holder of the advisory lock (`advisory.rs`), which keeps the
    /// exclusive lock from being taken.
    advisory: Option<String>,
    version: u64,
    header: Header,
    watchers: Vec<Watcher>,
}

impl LockProbe {
    /// Whether the owner named by `rec` still has its header watch.
    fn alive(&self, rec: &LockRecord) -> bool {
        has_watch(&self.watchers, rec)
    }
}

/// Whether `watchers` hold the header watch of the owner `rec` names.
fn has_watch(watchers: &[Watcher], rec: &LockRecord) -> bool {
    watchers
        .iter()
        .any(|w| w.client == rec.client && w.cookie == rec.cookie)
}

/// Read record, header and watchers together (two requests in flight).
async fn probe(inner: &Inner) -> Result<LockProbe> {
    let what = what(inner);
    let (h, w) = futures::join!(
        header::read_header_with_xattrs(inner.rados.as_ref(), &inner.header_oid, &what, true),
        inner.rados.list_watchers(&inner.header_oid)
    );
    let (header, attrs) = h?;
    let watchers = w.ctx(|| format!("listing watchers of {what}"))?;
    let advisory = quarry_rados::objlock::from_xattrs(&attrs, &inner.header_oid, ADVISORY_LOCK)
        .map_err(|e| RbdError::rados(format!("reading the advisory lock of {what}"), e))?
        .lockers
        .into_iter()
        .next()
        .map(|l| l.entity);
    Ok(LockProbe {
        rec: record_from_xattrs(&attrs, &what)?,
        advisory,
        version: header.version,
        header,
        watchers,
    })
}

/// The lock record among a header's xattrs.
pub(crate) fn record_from_xattrs(
    m: &BTreeMap<String, Bytes>,
    what: &str,
) -> Result<Option<LockRecord>> {
    m.get(LOCK_XATTR)
        .map(|b| {
            serde_json::from_slice(b).map_err(|e| RbdError::Corrupt {
                what: format!("lock record of {what}: {e}"),
            })
        })
        .transpose()
}

/// Read the lock record and the header version it belongs to.
async fn read_record(inner: &Inner) -> Result<(Option<LockRecord>, u64)> {
    read_record_of(inner.rados.as_ref(), &inner.header_oid, &what(inner)).await
}

async fn read_record_of(
    rados: &dyn Rados,
    header: &ObjectId,
    what: &str,
) -> Result<(Option<LockRecord>, u64)> {
    let req = OpRequest::new(header.clone()).op(Op::GetXattrs);
    let rep = match rados.operate(req).await {
        Ok(r) => r,
        Err(e) if e.errno == Errno::ENOENT => return Err(RbdError::not_found(what)),
        Err(e) => return Err(RbdError::rados(format!("reading the lock of {what}"), e)),
    };
    let rec = match rep.outputs.first() {
        Some(OpOutput::Xattrs(m)) => record_from_xattrs(m, what)?,
        _ => None,
    };
    Ok((rec, rep.version))
}

/// Replace the record (`None` removes it) if the header is still at
/// `version`. `Ok(false)`: lost the race.
async fn cas_record(inner: &Inner, version: u64, rec: Option<&LockRecord>) -> Result<bool> {
    cas_record_of(
        inner.rados.as_ref(),
        &inner.header_oid,
        &what(inner),
        version,
        rec,
    )
    .await
}

async fn cas_record_of(
    rados: &dyn Rados,
    header: &ObjectId,
    what: &str,
    version: u64,
    rec: Option<&LockRecord>,
) -> Result<bool> {
    let mut req = OpRequest::new(header.clone())
        .op(Op::AssertExists)
        .op(Op::AssertVersion(version));
    req = match rec {
        Some(r) => {
            let v = serde_json::to_vec(r).map_err(|e| RbdError::invalid(e.to_string()))?;
            req.op(Op::SetXattr(LOCK_XATTR.into(), Bytes::from(v)))
        }
        None => req.op(Op::RmXattr(LOCK_XATTR.into())),
    };
    match rados.operate(req).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.errno, Errno::ERANGE | Errno::EOVERFLOW | Errno::ENODATA) => Ok(false),
        Err(e) => Err(RbdError::rados(format!("updating the lock of {what}"), e)),
    }
}

/// The owner of the lock on `header`, if any (`rbd lock ls`).
pub(crate) async fn owners_of(
    rados: &dyn Rados,
    header: &ObjectId,
    what: &str,
) -> Result<Vec<LockOwner>> {
    let (rec, _) = read_record_of(rados, header, what).await?;
    let Some(r) = rec else { return Ok(Vec::new()) };
    let addr = rados
        .list_watchers(header)
        .await
        .ctx(|| format!("listing watchers of {what}"))?
        .into_iter()
        .find(|w| w.client == r.client && w.cookie == r.cookie)
        .map(|w| w.addr)
        .unwrap_or_else(|| r.addr.clone());
    Ok(vec![LockOwner {
        entity: format!("client.{}", r.client),
        cookie: format!("auto {}", r.cookie),
        addr,
    }])
}

/// Remove the lock of `owner` (`client.<id>`) on `header`; returns the
/// record removed. `ENOENT` if unlocked, `EBUSY` if held by someone else.
pub(crate) async fn break_of(
    rados: &dyn Rados,
    header: &ObjectId,
    what: &str,
    owner: &str,
    policy: FencePolicy,
) -> Result<LockRecord> {
    for _ in 0..100 {
        let (rec, version) = read_record_of(rados, header, what).await?;
        let Some(r) = rec else {
            return Err(RbdError::not_found(format!("lock of {what}")));
        };
        if format!("client.{}", r.client) != owner {
            return Err(RbdError::busy(
                what,
                format!("the lock is held by client.{}, not {owner}", r.client),
            ));
        }
        fence(rados, header, what, &r, policy).await?;
        if cas_record_of(rados, header, what, version, None).await? {
            return Ok(r);
        }
    }
    Err(RbdError::Contention {
        what: format!("lock of {what}"),
    })
}

/// Blocklist the owner of `rec` before its lock is broken (Ceph's
/// `rbd_blocklist_on_break_lock`), unless it is this very client instance
/// (another handle of this process: fencing it would fence ourselves).
/// The owner's watch address is preferred; the record's is the fallback
/// for an owner without a watch.
async fn fence(
    rados: &dyn Rados,
    header: &ObjectId,
    what: &str,
    rec: &LockRecord,
    policy: FencePolicy,
) -> Result<()> {
    if rec.client == rados.instance_id() {
        return Ok(());
    }
    let owner = format!("client.{}", rec.client);
    if !policy.blocklist {
        return fence_addr(rados, what, &owner, "", policy).await;
    }
    let watch_addr = rados
        .list_watchers(header)
        .await
        .ctx(|| format!("listing watchers of {what}"))?
        .into_iter()
        .find(|w| w.client == rec.client && w.cookie == rec.cookie)
        .map(|w| w.addr);
    let addr = watch_addr.unwrap_or_else(|| rec.addr.clone());
    fence_addr(rados, what, &owner, &addr, policy).await
}

/// Blocklist `owner` (a lock holder, `client.<id>`) at `addr` before its
/// lock on `what` is broken, as `policy` says; an unknown (empty) address
/// is only logged.
pub(crate) async fn fence_addr(
    rados: &dyn Rados,
    what: &str,
    owner: &str,
    addr: &str,
    policy: FencePolicy,
) -> Result<()> {
    if !policy.blocklist {
        tracing::warn!(%what, %owner, "breaking the lock without blocklisting its owner (rbd_blocklist_on_break_lock = false)");
        return Ok(());
    }
    if addr.is_empty() {
        tracing::warn!(%what, %owner, "lock owner's address unknown: not blocklisted");
        return Ok(());
    }
    match rados
        .blocklist_add(addr, policy.expire.unwrap_or(BLOCKLIST_EXPIRE))
        .await
    {
        Ok(()) => {
            tracing::info!(%what, %owner, %addr, "blocklisted the lock owner");
            Ok(())
        }
        // Embedded backend: one process, nobody else to fence.
        Err(e) if e.errno == Errno::EOPNOTSUPP => Ok(()),
        Err(e) => Err(RbdError::rados(
            format!("blocklisting {owner} ({addr}), owner of the lock of {what}"),
            e,
        )),
    }
}

/// Whether the owner named by `rec` still has its header watch.
async fn owner_alive(inner: &Inner, rec: &LockRecord) -> Result<bool> {
    let w = inner
        .rados
        .list_watchers(&inner.header_oid)
        .await
        .ctx(|| format!("listing watchers of {}", what(inner)))?;
    Ok(has_watch(&w, rec))
}

impl Inner {
    /// Whether writes need the exclusive lock on this handle.
    pub(crate) fn lock_required(&self) -> bool {
        !self.read_only
            && self.watch_cookie().is_some()
            && self.view().header.features & FEATURE_EXCLUSIVE_LOCK != 0
    }

    fn my_record(&self, managed: bool) -> Option<LockRecord> {
        Some(LockRecord {
            client: self.rados.instance_id(),
            cookie: self.watch_cookie()?,
            managed,
            addr: String::new(),
        })
    }

    fn is_me(&self, rec: &LockRecord) -> bool {
        rec.client == self.rados.instance_id() && Some(rec.cookie) == self.watch_cookie()
    }

    /// Take the lock for this handle. `request`: ask a live owner to hand
    /// it over (automatic policy); otherwise a live owner is `EROFS`.
    pub(crate) async fn acquire_lock(&self, request: bool, managed: bool) -> Result<()> {
        self.acquire_lock_from(request, managed, None, None).await
    }

    /// [`Inner::acquire_lock`], with the owner `(client, cookie)` already
    /// known not to answer requests (a proxied request timed out): its lock
    /// is broken (and the owner fenced) without asking it again.
    ///
    /// `seed`: a [`LockProbe`] the caller just made (see [`Inner::lock_probe`]),
    /// used as the first look; a stale one only fails the compare-and-swap.
    pub(crate) async fn acquire_lock_from(
        &self,
        request: bool,
        managed: bool,
        unresponsive: Option<(u64, u64)>,
        seed: Option<LockProbe>,
    ) -> Result<()> {
        let _op = self.lock.op.lock().await;
        if self.owned.load(Ordering::Acquire) {
            return Ok(());
        }
        let handed = self
            .lock
            .handed_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(at) = handed {
            // Fairness: the requester takes it first (or the grace ends).
            while tokio::time::Instant::now() < at + HANDOVER_GRACE {
                let (rec, _) = read_record(self).await?;
                if rec.is_some_and(|r| !self.is_me(&r)) {
                    break;
                }
                tokio::time::sleep(HANDOVER_POLL).await;
            }
        }
        tracing::debug!(image = %self.spec(), cookie = ?self.watch_cookie(), "acquiring the exclusive lock");
        let mut me = self.my_record(managed).ok_or_else(|| {
            RbdError::read_only(format!("{} (opened without a header watch)", what(self)))
        })?;
        let mut first = Some(match seed {
            Some(p) => p,
            None => probe(self).await?,
        });
        // Our watch's address (display only) from the first look's watchers.
        me.addr = first
            .iter()
            .flat_map(|p| p.watchers.iter())
            .find(|w| w.client == me.client && w.cookie == me.cookie)
            .map(|w| w.addr.clone())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        // An owner that let a request time out: (client, cookie).
        let mut unresponsive = unresponsive;
        loop {
            self.check_open()?;
            let p = match first.take() {
                Some(p) => p,
                None => probe(self).await?,
            };
            let take = match &p.rec {
                None => true,
                Some(r) if self.is_me(r) => true,
                Some(r) if unresponsive == Some((r.client, r.cookie)) => true,
                // The probe's watcher list was read alongside the record,
                // so it may predate the watch of an owner whose record it
                // shows: a watch missing there is looked for again in a
                // list read after the record, before the owner counts as
                // dead (breaking a live owner's lock would fence it).
                Some(r) => !p.alive(r) && !owner_alive(self, r).await?,
            };
            let LockProbe {
                rec,
                version,
                header,
                advisory,
                ..
            } = p;
            if let (true, Some(holder)) = (take, advisory) {
                // As in Ceph, where both are one lock: writes fail while
                // someone holds the image with `rbd lock add`.
                return Err(RbdError::busy(
                    what(self),
                    format!(
                        "it is locked by {holder} (rbd lock ls shows it; rbd lock rm breaks it)"
                    ),
                ));
            }
            if take {
                if let Some(old) = rec.as_ref().filter(|r| !self.is_me(r)) {
                    tracing::info!(
                        image = %self.spec(),
                        owner = old.client,
                        "breaking the exclusive lock of a dead or unresponsive owner"
                    );
                    // Fence first: once the record is ours, the old owner
                    // must not be able to write any more.
                    fence(
                        self.rados.as_ref(),
                        &self.header_oid,
                        &what(self),
                        old,
                        self.lock.fence,
                    )
                    .await?;
                }
                // The view must hold everything the previous owner
                // acknowledged. The header: a successful compare-and-swap
                // at `version` proves the one read with the record
                // current. The object map (another object): read after
                // the look that found the lock free (the previous owner's
                // map writes were acknowledged before it let go, and a
                // dead owner was fenced above), alongside the swap; if
                // the swap fails it is thrown away.
                let map_oid = self.map_oid(self.view().snap);
                let (swapped, map) = futures::join!(cas_record(self, version, Some(&me)), async {
                    if header.features & FEATURE_OBJECT_MAP != 0 {
                        objmap::load(self.rados.as_ref(), &map_oid).await.map(Some)
                    } else {
                        Ok(None)
                    }
                });
                if swapped? {
                    let _g = self.gate.write().await;
                    self.install_fresh(header, map?).await?;
                    self.owned.store(true, Ordering::Release);
                    tracing::debug!(image = %self.spec(), "took the exclusive lock");
                    return Ok(());
                }
                continue;
            }
            let Some(owner) = rec else { continue };
            if !request {
                return Err(RbdError::read_only(format!(
                    "{} (exclusive lock held by client.{})",
                    what(self),
                    owner.client
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RbdError::busy(
                    what(self),
                    format!(
                        "the exclusive lock owner client.{} did not release it",
                        owner.client
                    ),
                ));
            }
            let req = Request {
                op: "request_lock".into(),
                client: me.client,
                cookie: me.cookie,
                id: None,
                args: None,
            };
            let payload = serde_json::to_vec(&req).map_err(|e| RbdError::invalid(e.to_string()))?;
            let res = self
                .rados
                .notify(&self.header_oid, Bytes::from(payload), REQUEST_TIMEOUT)
                .await
                .ctx(|| format!("requesting the lock of {}", what(self)))?;
            tracing::debug!(
                image = %self.spec(),
                owner = owner.client,
                owner_cookie = owner.cookie,
                acks = res.acks.len(),
                timeouts = res.timeouts.len(),
                "lock request answered"
            );
            let answer = res
                .acks
                .iter()
                .find(|a| a.client == owner.client && a.cookie == owner.cookie)
                .and_then(|a| serde_json::from_slice::<Answer>(&a.payload).ok());
            if answer.is_none()
                && res
                    .timeouts
                    .iter()
                    .any(|w| w.client == owner.client && w.cookie == owner.cookie)
            {
                // Its watch exists but it did not answer in time (stopped,
                // hung, cut off): treat it as dead, as librbd does once
                // the owner's watch times out.
                tracing::warn!(
                    image = %self.spec(),
                    owner = owner.client,
                    "the exclusive lock owner did not answer a lock request"
                );
                unresponsive = Some((owner.client, owner.cookie));
                continue;
            }
            if answer.is_some_and(|a| a.result == "refused") {
                return Err(RbdError::read_only(format!(
                    "{} (exclusive lock held by client.{} in exclusive mode)",
                    what(self),
                    owner.client
                )));
            }
            // The owner lets go at once (or when its operation ends): look
            // again after HANDOVER_POLL, then at doubling intervals (a long
            // operation of the owner costs a few reads per request, not
            // hundreds), so a hand-over costs a few ms rather than a whole
            // pause; the request is repeated every RETRY_PAUSE.
            let until = tokio::time::Instant::now() + RETRY_PAUSE;
            let mut poll = HANDOVER_POLL;
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(
                    poll.min(until.saturating_duration_since(tokio::time::Instant::now())),
                )
                .await;
                poll *= 2;
                if read_record(self).await?.0.is_none() {
                    break;
                }
            }
        }
    }

    /// The hook run before this handle hands over the lock or re-reads a
    /// header changed elsewhere (see [`PreReleaseHook`]).
    pub(crate) fn pre_release_hook(&self) -> Option<PreReleaseHook> {
        self.lock
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hand the lock over (cooperative release, or close): hook, quiesce,
    /// drop the record. No-op when not owned.
    pub(crate) async fn release_lock(&self) -> Result<()> {
        let _op = self.lock.op.lock().await;
        if !self.owned.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(h) = self.pre_release_hook() {
            // Before the gate: the hook's own writes still need the lock.
            h().await?;
        }
        tracing::debug!(image = %self.spec(), "releasing the exclusive lock");
        let _g = self.gate.write().await;
        self.owned.store(false, Ordering::Release);
        for _ in 0..100 {
            let (rec, version) = read_record(self).await?;
            match rec {
                Some(r) if self.is_me(&r) => {
                    if cas_record(self, version, None).await? {
                        return Ok(());
                    }
                }
                // Broken by someone else: nothing left to remove.
                _ => return Ok(()),
            }
        }
        Err(RbdError::Contention {
            what: format!("lock of {}", what(self)),
        })
    }

    /// Tell the image's other open handles that the header changed and
    /// wait (bounded) until each has re-read it, as librbd's header-update
    /// notification: a handle flushes what it accepted, drains its
    /// in-flight I/O and reloads header and object map before it answers,
    /// so everything it writes afterwards carries the new snap context and
    /// size. A snapshot taken while a VM writes is thereby crash-consistent
    /// (it holds the writes the VM issued before its handle re-read the
    /// header, and none after), and a resize is seen at once. A handle that
    /// does not answer in time (stopped, cut off) reloads when it reads the
    /// notification later; that is logged, and the change stands.
    pub(crate) async fn notify_header_update(&self) {
        let Some(cookie) = self.watch_cookie() else {
            return;
        };
        let req = Request {
            op: "header_update".into(),
            client: self.rados.instance_id(),
            cookie,
            id: None,
            args: None,
        };
        let Ok(payload) = serde_json::to_vec(&req) else {
            return;
        };
        match self
            .rados
            .notify(
                &self.header_oid,
                Bytes::from(payload),
                HEADER_UPDATE_TIMEOUT,
            )
            .await
        {
            Ok(res) if res.timeouts.is_empty() => {
                tracing::debug!(image = %self.spec(), handles = res.acks.len(), "header update acknowledged");
            }
            Ok(res) => tracing::warn!(
                image = %self.spec(),
                late = ?res.timeouts.iter().map(|t| t.client).collect::<Vec<_>>(),
                "header update: some open handles did not re-read the header within {HEADER_UPDATE_TIMEOUT:?}"
            ),
            Err(e) => {
                tracing::warn!(image = %self.spec(), "header update notification failed: {e}")
            }
        }
    }

    /// Re-read header and object map on another handle's notification:
    /// first what this handle accepted (the pre-release hook: the C
    /// library's cache and early-acknowledged writes), then with I/O
    /// drained.
    async fn reload_for_update(&self) -> Result<()> {
        if self.check_open().is_err() {
            return Ok(());
        }
        if let Some(h) = self.pre_release_hook() {
            h().await?;
        }
        let _g = self.gate.write().await;
        self.reload_fresh().await
    }

    /// The header watch was interrupted (`ENOTCONN`: registered again,
    /// but header-update notifications sent meanwhile were missed) or
    /// ended: re-read the header as if one had arrived, so a snapshot or
    /// resize made during the gap is seen before the next write.
    async fn handle_watch_error(self: Arc<Self>, e: WatchError) {
        if e.errno != Errno::ENOTCONN {
            tracing::warn!(image = %self.spec(), "header watch ended: {}", e.errno);
            return;
        }
        tracing::info!(image = %self.spec(), "header watch was interrupted; re-reading the header");
        if let Err(err) = self.reload_for_update().await {
            tracing::warn!(image = %self.spec(), "re-reading the header after a watch interruption: {err}");
        }
    }

    /// Answer a notification on the header. A lock request is answered
    /// at once (`releasing`) and the hand-over runs after: the answer
    /// proves the owner alive however long its cache takes to flush, so a
    /// requester breaks (and fences) only owners that cannot answer.
    async fn handle_notify(self: Arc<Self>, ev: NotifyEvent) {
        let req: Option<Request> = serde_json::from_slice(&ev.payload).ok();
        let mut release = false;
        let answer = match req {
            Some(r) if r.op == "header_update" => {
                let from_me =
                    r.client == self.rados.instance_id() && Some(r.cookie) == self.watch_cookie();
                if !from_me {
                    if let Err(e) = self.reload_for_update().await {
                        tracing::warn!(image = %self.spec(), "re-reading the header after a change elsewhere: {e}");
                    }
                }
                Answer::plain("ok")
            }
            Some(r) if r.op == "request_lock" => {
                let from_me =
                    r.client == self.rados.instance_id() && Some(r.cookie) == self.watch_cookie();
                if from_me || !self.owned.load(Ordering::Acquire) {
                    Answer::plain("not_owner")
                } else if self.lock.managed.load(Ordering::Acquire) {
                    Answer::plain("refused")
                } else {
                    release = true;
                    Answer::plain("releasing")
                }
            }
            Some(Request {
                op,
                client,
                cookie,
                id: Some(id),
                args: Some(args),
            }) if ProxyOp::known(&op) && op == args.name() => {
                let from_me =
                    client == self.rados.instance_id() && Some(cookie) == self.watch_cookie();
                if from_me {
                    Answer::plain("not_owner")
                } else {
                    match self
                        .clone()
                        .answer_proxied((client, cookie, id), args)
                        .await
                    {
                        Reply::Done(Ok(v)) => Answer {
                            result: "done".into(),
                            error: None,
                            value: Some(v),
                        },
                        Reply::Done(Err(e)) => Answer {
                            result: "done".into(),
                            error: Some(e),
                            value: None,
                        },
                        Reply::InProgress => Answer::plain("in_progress"),
                        Reply::NotOwner => Answer::plain("not_owner"),
                    }
                }
            }
            _ => Answer::plain("unknown"),
        };
        tracing::debug!(image = %self.spec(), cookie = ev.cookie, result = %answer.result, "header notification");
        let ans = serde_json::to_vec(&answer).unwrap_or_default();
        let _ = self
            .rados
            .notify_ack(&ev.oid, ev.notify_id, ev.cookie, Bytes::from(ans))
            .await;
        if release {
            match self.release_lock().await {
                Ok(()) => {
                    *self
                        .lock
                        .handed_over
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
                }
                Err(e) => {
                    tracing::warn!(image = %self.spec(), "could not release the exclusive lock: {e}")
                }
            }
        }
    }

    /// The lock's owner `(client, cookie, alive)` (`None`: nobody holds
    /// it), alive by the watcher list read alongside the record (a lag
    /// there only sends the caller to [`Inner::acquire_lock_from`], which
    /// looks again before it breaks anything), and the look itself, to
    /// seed that call: taking a free lock then starts with its
    /// compare-and-swap.
    pub(crate) async fn lock_probe(&self) -> Result<(LockProbe, Option<(u64, u64, bool)>)> {
        let p = probe(self).await?;
        let owner = p
            .rec
            .as_ref()
            .map(|r| (r.client, r.cookie, self.is_me(r) || p.alive(r)));
        Ok((p, owner))
    }

    /// Whether `(client, cookie)` is this handle.
    pub(crate) fn is_me_id(&self, client: u64, cookie: u64) -> bool {
        client == self.rados.instance_id() && Some(cookie) == self.watch_cookie()
    }

    /// Requester side: send proxied operation `op` (request `id`) to the
    /// lock owner `(client, cookie)` and read its answer.
    pub(crate) async fn send_proxied(
        &self,
        owner: (u64, u64),
        id: u64,
        op: &ProxyOp,
    ) -> Result<ProxyAnswer> {
        let Some(cookie) = self.watch_cookie() else {
            return Ok(ProxyAnswer::Unknown);
        };
        let req = Request {
            op: op.name().into(),
            client: self.rados.instance_id(),
            cookie,
            id: Some(id),
            args: Some(op.clone()),
        };
        let payload = serde_json::to_vec(&req).map_err(|e| RbdError::invalid(e.to_string()))?;
        let res = self
            .rados
            .notify(&self.header_oid, Bytes::from(payload), REQUEST_TIMEOUT)
            .await
            .ctx(|| format!("sending {} to the lock owner of {}", op.name(), what(self)))?;
        let ack = res
            .acks
            .iter()
            .find(|a| a.client == owner.0 && a.cookie == owner.1);
        let Some(ack) = ack else {
            if res
                .timeouts
                .iter()
                .any(|w| w.client == owner.0 && w.cookie == owner.1)
            {
                return Ok(ProxyAnswer::Unresponsive);
            }
            return Ok(ProxyAnswer::Gone);
        };
        // An empty or unreadable answer: a watcher that does not speak
        // this protocol, treated as an older version.
        let Ok(a) = serde_json::from_slice::<Answer>(&ack.payload) else {
            return Ok(ProxyAnswer::Unknown);
        };
        Ok(match a.result.as_str() {
            "done" => ProxyAnswer::Done(match a.error {
                Some(e) => Err(RbdError::from(e)),
                None => Ok(a.value.unwrap_or(0)),
            }),
            "in_progress" => ProxyAnswer::InProgress,
            "not_owner" => ProxyAnswer::NotOwner,
            _ => ProxyAnswer::Unknown,
        })
    }
}

/// The header watch's callback: notifications are handled on the runtime.
pub(crate) fn watch_callback(slot: Arc<std::sync::OnceLock<Weak<Inner>>>) -> WatchCallback {
    Arc::new(move |ev: WatchEvent| {
        let inner = slot.get().and_then(Weak::upgrade);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match inner {
            Some(inner) => match ev {
                WatchEvent::Notify(ev) => {
                    rt.spawn(inner.handle_notify(ev));
                }
                WatchEvent::Error(e) => {
                    rt.spawn(inner.handle_watch_error(e));
                }
            },
            None => {
                // Handle gone or not built yet: not the owner.
                let _ = rt;
            }
        }
    })
}

impl Image {
    /// `rbd_lock_acquire(RBD_LOCK_MODE_EXCLUSIVE)`: take the lock and keep
    /// it (managed policy: requests from other clients are refused).
    /// `EROFS` if another live client holds it, `EINVAL` if the image lacks
    /// the exclusive-lock feature or the handle is read-only.
    pub async fn lock_acquire(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        if !inner.lock_required() {
            return Err(RbdError::invalid(format!(
                "{} has no exclusive-lock feature or is read-only",
                what(inner)
            )));
        }
        inner.lock.managed.store(true, Ordering::Release);
        inner.acquire_lock(false, true).await?;
        // Already owned (automatic): record the managed policy too.
        let (rec, version) = read_record(inner).await?;
        if let Some(r) = rec.filter(|r| inner.is_me(r) && !r.managed) {
            let m = LockRecord { managed: true, ..r };
            cas_record(inner, version, Some(&m)).await?;
        }
        Ok(())
    }

    /// `rbd_lock_release`: give the lock up. `EINVAL` if not the owner.
    pub async fn lock_release(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        if !inner.owned.load(Ordering::Acquire) {
            return Err(RbdError::invalid(format!(
                "this handle does not own the lock of {}",
                what(inner)
            )));
        }
        inner.release_lock().await
    }

    /// `rbd_is_exclusive_lock_owner`.
    pub fn is_exclusive_lock_owner(&self) -> bool {
        self.inner.owned.load(Ordering::Acquire)
    }

    /// `rbd_lock_get_owners`: the current owner (read fresh), if any.
    pub async fn lock_owners(&self) -> Result<Vec<LockOwner>> {
        let inner = &self.inner;
        inner.check_open()?;
        owners_of(inner.rados.as_ref(), &inner.header_oid, &what(inner)).await
    }

    /// `rbd_lock_break`: remove the lock of `owner` (`client.<id>`).
    /// `ENOENT` if nobody holds it, `EBUSY` if someone else does.
    pub async fn lock_break(&self, owner: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let r = break_of(
            inner.rados.as_ref(),
            &inner.header_oid,
            &what(inner),
            owner,
            inner.lock.fence,
        )
        .await?;
        if inner.is_me(&r) {
            inner.owned.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Run `hook` before every hand-over of the lock (the C library
    /// flushes its write-back cache there).
    pub fn set_pre_release_hook(&self, hook: PreReleaseHook) {
        *self
            .inner
            .lock
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }
}
