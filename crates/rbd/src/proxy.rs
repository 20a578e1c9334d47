//! Header operations proxied to the exclusive-lock owner, as librbd's
//! image-watcher requests.
//!
//! With the exclusive-lock feature, a handle that does not own the lock
//! does not change the header itself: it sends the operation (snapshot
//! create/remove/rename/protect/unprotect, resize, flatten, feature
//! update) to the owner as a notify on the header object. The owner runs
//! its pre-release hook (the C library flushes its cache), quiesces its
//! I/O (the operation takes its `gate`), performs the operation as its own
//! (so a snapshot's object-map copy and the owner's snap context change
//! together: the snapshot is crash-consistent), notifies the other handles
//! and answers with the result; an error's errno and text reach the
//! requester unchanged.
//!
//! Protocol (JSON, versioned by the op name): the request carries a
//! request id unique per requester handle; the owner answers `done` (with
//! the result) if the operation finished within [`ANSWER_WAIT`], else
//! `in_progress`, and the requester asks again with the same id. The owner
//! remembers each request id (and its outcome, for [`DONE_KEEP`]), so a
//! request sent again (a poll, or a notify resent after a lost answer)
//! never runs the operation twice; it answers from that record even after
//! it lost the lock. An owner of an older version answers `unknown`: the
//! requester then runs the operation itself (the behaviour before proxying).
//!
//! The requester runs the operation itself, as owner, when nobody owns
//! the lock (it takes the lock first, without asking anyone, as librbd
//! does: an owner appearing halfway would otherwise race the snapshot's map
//! copy) or when the owner is dead (its lock is broken and the owner
//! fenced, as for a write). An owner that does not answer a request within
//! the lock's request timeout is treated exactly as for a lock request: it
//! is fenced (blocklisted) and its lock broken, then the requester runs the
//! operation as the new owner. That is safe: the old owner can no longer
//! write, so no write of its old snap context can land after the
//! snapshot's map copy. Rollback is never proxied (librbd does not): it
//! takes the lock (asking the owner to hand it over) and runs locally.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_common::Errno;
use quarry_rados::{RadosError, SnapId};
use serde::{Deserialize, Serialize};

use crate::error::RbdError;
use crate::image::{Image, Inner};
use crate::SnapSpec;

/// How long the owner waits for a proxied operation before answering
/// `in_progress` (the requester asks again); well under the request timeout.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long the owner remembers a finished request's outcome.
const DONE_KEEP: Duration = Duration::from_secs(600);
/// Bound on a proxied operation other than flatten (which may run long
/// while its owner keeps answering `in_progress`): then `ETIMEDOUT`.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// A header operation that can be proxied to the lock owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProxyOp {
    SnapCreate {
        name: String,
    },
    SnapRemove {
        name: Option<String>,
        id: Option<SnapId>,
    },
    SnapRename {
        src: String,
        dst: String,
    },
    SnapProtect {
        name: String,
    },
    SnapUnprotect {
        name: String,
    },
    Resize {
        size: u64,
    },
    Flatten,
    /// A live migration's copy (see `migration.rs`).
    MigrationExecute,
    /// `rbd object-map rebuild`.
    RebuildObjectMap,
    UpdateFeatures {
        features: u64,
        enabled: bool,
    },
}

impl ProxyOp {
    /// The request's `op` field (an older owner answers `unknown`).
    pub fn name(&self) -> &'static str {
        match self {
            ProxyOp::SnapCreate { .. } => "snap_create",
            ProxyOp::SnapRemove { .. } => "snap_remove",
            ProxyOp::SnapRename { .. } => "snap_rename",
            ProxyOp::SnapProtect { .. } => "snap_protect",
            ProxyOp::SnapUnprotect { .. } => "snap_unprotect",
            ProxyOp::Resize { .. } => "resize",
            ProxyOp::Flatten => "flatten",
            ProxyOp::MigrationExecute => "migration_execute",
            ProxyOp::RebuildObjectMap => "rebuild_object_map",
            ProxyOp::UpdateFeatures { .. } => "update_features",
        }
    }

    /// Whether `op` names a proxied operation this version knows.
    pub fn known(op: &str) -> bool {
        matches!(
            op,
            "snap_create"
                | "snap_remove"
                | "snap_rename"
                | "snap_protect"
                | "snap_unprotect"
                | "resize"
                | "flatten"
                | "migration_execute"
                | "rebuild_object_map"
                | "update_features"
        )
    }

    /// Copies a whole image: bounded by time only while its owner answers.
    pub fn is_long(&self) -> bool {
        matches!(self, ProxyOp::Flatten | ProxyOp::MigrationExecute)
    }

    pub fn snap_remove(spec: &SnapSpec) -> ProxyOp {
        match spec {
            SnapSpec::Name(n) => ProxyOp::SnapRemove {
                name: Some(n.clone()),
                id: None,
            },
            SnapSpec::Id(i) => ProxyOp::SnapRemove {
                name: None,
                id: Some(*i),
            },
        }
    }
}

/// An [`RbdError`] as it crosses the wire: variant, errno and texts, so
/// the requester returns the very error the owner met.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub kind: String,
    pub errno: i32,
    #[serde(default)]
    pub a: String,
    #[serde(default)]
    pub b: String,
}

impl From<&RbdError> for WireError {
    fn from(e: &RbdError) -> WireError {
        let (kind, a, b) = match e {
            RbdError::NotFound { what } => ("not_found", what.clone(), String::new()),
            RbdError::Exists { what } => ("exists", what.clone(), String::new()),
            RbdError::Busy { what, why } => ("busy", what.clone(), why.clone()),
            RbdError::ReadOnly { what } => ("read_only", what.clone(), String::new()),
            RbdError::NotEmpty { what, why } => ("not_empty", what.clone(), why.clone()),
            RbdError::Invalid { why } => ("invalid", why.clone(), String::new()),
            RbdError::Unsupported { what } => ("unsupported", what.clone(), String::new()),
            RbdError::Corrupt { what } => ("corrupt", what.clone(), String::new()),
            RbdError::Contention { what } => ("contention", what.clone(), String::new()),
            RbdError::Closed { what } => ("closed", what.clone(), String::new()),
            RbdError::NotPermitted { what, why } => ("not_permitted", what.clone(), why.clone()),
            RbdError::Incomplete { what, why } => ("incomplete", what.clone(), why.clone()),
            RbdError::InGroup { what, group } => ("in_group", what.clone(), group.clone()),
            RbdError::Rados { context, source } => {
                ("rados", context.clone(), source.context.clone())
            }
        };
        WireError {
            kind: kind.into(),
            errno: e.errno().code(),
            a,
            b,
        }
    }
}

impl From<WireError> for RbdError {
    fn from(w: WireError) -> RbdError {
        let WireError { kind, errno, a, b } = w;
        match kind.as_str() {
            "not_found" => RbdError::NotFound { what: a },
            "exists" => RbdError::Exists { what: a },
            "busy" => RbdError::Busy { what: a, why: b },
            "read_only" => RbdError::ReadOnly { what: a },
            "not_empty" => RbdError::NotEmpty { what: a, why: b },
            "invalid" => RbdError::Invalid { why: a },
            "unsupported" => RbdError::Unsupported { what: a },
            "corrupt" => RbdError::Corrupt { what: a },
            "contention" => RbdError::Contention { what: a },
            "closed" => RbdError::Closed { what: a },
            "not_permitted" => RbdError::NotPermitted { what: a, why: b },
            "incomplete" => RbdError::Incomplete { what: a, why: b },
            "in_group" => RbdError::InGroup { what: a, group: b },
            // "rados" and kinds of newer versions: the errno is what counts.
            _ => RbdError::Rados {
                context: a,
                source: RadosError::new(Errno::from_code(errno), b),
            },
        }
    }
}

/// What the owner's run of a proxied request came to.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Finished: the value (a snapshot's id, else 0) or the error.
    Done(std::result::Result<u64, WireError>),
    /// The lock had moved on before the operation started: nothing done.
    NotOwner,
}

/// Key of a proxied request: requester's client id, watch cookie, request id.
pub(crate) type RequestKey = (u64, u64, u64);

/// One request the owner has seen.
struct Seen {
    at: Instant,
    outcome: tokio::sync::watch::Receiver<Option<Outcome>>,
}

/// The owner's record of proxied requests (see the module docs).
#[derive(Default)]
pub(crate) struct ProxyState {
    seen: std::sync::Mutex<HashMap<RequestKey, Seen>>,
    /// Ids of this handle's own requests.
    next_id: std::sync::atomic::AtomicU64,
}

impl ProxyState {
    /// A fresh request id for this handle.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// How the owner answers one proxied request.
pub(crate) enum Reply {
    Done(std::result::Result<u64, WireError>),
    InProgress,
    NotOwner,
}

impl Inner {
    /// Owner side: start (once per request key) or look up a proxied
    /// operation and wait up to [`ANSWER_WAIT`] for its outcome.
    pub(crate) async fn answer_proxied(self: Arc<Self>, key: RequestKey, op: ProxyOp) -> Reply {
        let mut rx = {
            let mut seen = self.proxy.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, s| s.outcome.borrow().is_none() || s.at.elapsed() < DONE_KEEP);
            match seen.get(&key) {
                Some(s) => s.outcome.clone(),
                None => {
                    if !self.owned.load(Ordering::Acquire) {
                        return Reply::NotOwner;
                    }
                    if self.lock.managed.load(Ordering::Acquire) {
                        // rbd_lock_acquire: the owner keeps the image to
                        // itself; others' changes fail as their writes do.
                        let e = RbdError::read_only(format!(
                            "image {} (exclusive lock held in exclusive mode)",
                            self.spec()
                        ));
                        return Reply::Done(Err(WireError::from(&e)));
                    }
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    seen.insert(
                        key,
                        Seen {
                            at: Instant::now(),
                            outcome: rx.clone(),
                        },
                    );
                    let inner = self.clone();
                    tokio::spawn(async move {
                        tracing::debug!(image = %inner.spec(), op = op.name(), requester = key.0, "running a proxied operation");
                        let out = inner.run_proxied(&op).await;
                        tracing::debug!(image = %inner.spec(), op = op.name(), ?out, "proxied operation finished");
                        let _ = tx.send(Some(out));
                    });
                    rx
                }
            }
        };
        let waited = tokio::time::timeout(ANSWER_WAIT, rx.wait_for(|o| o.is_some())).await;
        match waited {
            Ok(Ok(o)) => match o.clone() {
                Some(Outcome::Done(r)) => Reply::Done(r),
                Some(Outcome::NotOwner) => Reply::NotOwner,
                None => Reply::InProgress,
            },
            // The running task never drops its sender before sending.
            Ok(Err(_)) => Reply::NotOwner,
            Err(_) => Reply::InProgress,
        }
    }

    /// Owner side: run `op` as this handle's own, under the lock: the
    /// pre-release hook (what the C library accepted reaches the image),
    /// then the operation (which quiesces this handle's I/O), then the
    /// header-update notification to the other handles.
    async fn run_proxied(self: &Arc<Self>, op: &ProxyOp) -> Outcome {
        let img = Image::alias(self.clone());
        let r = {
            let _op = self.lock.op.lock().await;
            if !self.owned.load(Ordering::Acquire) {
                return Outcome::NotOwner;
            }
            let hooked = match self.pre_release_hook() {
                Some(h) => h().await,
                None => Ok(()),
            };
            match hooked {
                Ok(()) => img.execute_here(op, &mut |_, _| {}).await,
                Err(e) => Err(e),
            }
        };
        if r.is_ok() {
            self.notify_header_update().await;
        }
        Outcome::Done(r.map_err(|e| WireError::from(&e)))
    }
}

/// Requester side: [`ETIMEDOUT`](Errno::ETIMEDOUT) for an owner that keeps
/// answering `in_progress` past [`OP_TIMEOUT`].
pub(crate) fn timed_out(what: &str, owner: Option<u64>) -> RbdError {
    let who = owner.map_or("the exclusive lock owner".to_string(), |o| {
        format!("the exclusive lock owner client.{o}")
    });
    RbdError::rados(
        format!("{what}: {who} did not finish it within {OP_TIMEOUT:?}"),
        RadosError::new(Errno::ETIMEDOUT, "proxied operation timed out"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_the_wire_unchanged() {
        let errs = [
            RbdError::exists("snapshot rbd/img@s"),
            RbdError::not_found("snapshot rbd/img@x"),
            RbdError::busy("snapshot rbd/img@s", "it is protected"),
            RbdError::read_only("image rbd/img"),
            RbdError::invalid("bad"),
            RbdError::rados("trimming", RadosError::new(Errno::ENOSPC, "full")),
        ];
        for e in errs {
            let w = WireError::from(&e);
            let json = serde_json::to_vec(&w).unwrap();
            let back: WireError = serde_json::from_slice(&json).unwrap();
            let e2 = RbdError::from(back);
            assert_eq!(e2, e);
            assert_eq!(e2.to_string(), e.to_string());
        }
        // A kind this version does not know keeps its errno.
        let w = WireError {
            kind: "future".into(),
            errno: Errno::ENOSPC.code(),
            a: "x".into(),
            b: "y".into(),
        };
        assert_eq!(RbdError::from(w).errno(), Errno::ENOSPC);
    }

    #[test]
    fn ops_round_trip_and_are_known() {
        let ops = [
            ProxyOp::SnapCreate { name: "s".into() },
            ProxyOp::snap_remove(&SnapSpec::Id(4)),
            ProxyOp::SnapRename {
                src: "a".into(),
                dst: "b".into(),
            },
            ProxyOp::SnapProtect { name: "s".into() },
            ProxyOp::SnapUnprotect { name: "s".into() },
            ProxyOp::Resize { size: 1 << 20 },
            ProxyOp::Flatten,
            ProxyOp::MigrationExecute,
            ProxyOp::RebuildObjectMap,
            ProxyOp::UpdateFeatures {
                features: 8,
                enabled: true,
            },
        ];
        for op in ops {
            assert!(ProxyOp::known(op.name()));
            let j = serde_json::to_vec(&op).unwrap();
            assert_eq!(serde_json::from_slice::<ProxyOp>(&j).unwrap(), op);
        }
        assert!(!ProxyOp::known("request_lock"));
    }
}
