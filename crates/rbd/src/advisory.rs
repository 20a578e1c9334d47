//! Advisory image locks: `rbd lock add|ls|rm`, librbd's `rbd_lock_exclusive`,
//! `rbd_lock_shared`, `rbd_unlock`, `rbd_break_lock`, `rbd_list_lockers`.
//!
//! They are object locks ([`quarry_rados::objlock`]) named [`ADVISORY_LOCK`]
//! on the image's header object. In Ceph the advisory lock and the
//! exclusive-lock feature's lock are one `cls_lock` lock (`rbd_lock`), so
//! each keeps the other out; here they are two records on the same object,
//! and every change of either is a compare-and-swap on that object's
//! version, which keeps them exclusive just as well:
//!
//! * `rbd lock add` while a client holds the exclusive lock is `EBUSY`;
//! * a handle cannot take the exclusive lock (its writes fail with
//!   `EBUSY`) while an advisory lock is held;
//! * listing shows the exclusive lock's owner as librbd does (exclusive,
//!   tag `internal`, cookie `auto <n>`), and breaking that holder breaks
//!   the exclusive lock (fencing its owner first, see `lock.rs`).
//!
//! A holder is `client.<instance id>` with its cookie: unlocking works
//! only from the client instance that locked (as Ceph's global id); any
//! client may break. With `rbd_blocklist_on_break_lock` the broken
//! holder's address is blocklisted first, as librbd does.

use quarry_common::Errno;
use quarry_rados::objlock::{self, LockRequest};
use quarry_rados::RadosError;

use crate::error::{RbdError, Result};
use crate::image::Image;
use crate::lock;

/// Name of the advisory lock on a header object (xattr `lock.rbd_advisory`).
pub(crate) const ADVISORY_LOCK: &str = "rbd_advisory";
/// librbd's tag on the exclusive-lock feature's lock.
const INTERNAL_TAG: &str = "internal";

/// One holder of an image lock, as `rbd_list_lockers` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLocker {
    /// `client.<instance id>`.
    pub client: String,
    /// The lock id (the holder's cookie; `auto <n>` for the exclusive lock).
    pub cookie: String,
    /// The holder's address (`ip:0/<instance id>`; empty if unknown).
    pub addr: String,
}

/// The locks held on an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageLocks {
    /// Whether the holders hold it exclusively.
    pub exclusive: bool,
    /// Tag of a shared lock (`internal` for the exclusive-lock feature's).
    pub tag: String,
    /// Holders (none: unlocked).
    pub lockers: Vec<ImageLocker>,
}

fn rados_err(what: &str, doing: &str, e: RadosError) -> RbdError {
    match e.errno {
        Errno::ENOENT if doing == "locking" => RbdError::not_found(what.to_string()),
        _ => RbdError::rados(format!("{doing} {what}"), e),
    }
}

impl Image {
    /// `rbd_lock_exclusive`: take the advisory lock exclusively under
    /// `cookie`. `EBUSY` if anyone holds a lock on the image (the
    /// exclusive-lock feature's included), `EEXIST` if this client holds it
    /// under `cookie` already.
    pub async fn lock_exclusive(&self, cookie: &str) -> Result<()> {
        self.advisory_lock(true, cookie, "").await
    }

    /// `rbd_lock_shared`: take the advisory lock shared with `tag` under
    /// `cookie` (`EBUSY` if held exclusively or with another tag).
    pub async fn lock_shared(&self, cookie: &str, tag: &str) -> Result<()> {
        self.advisory_lock(false, cookie, tag).await
    }

    async fn advisory_lock(&self, exclusive: bool, cookie: &str, tag: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let what = format!("image {}", inner.spec());
        let rados = inner.rados.as_ref();
        let req = LockRequest {
            exclusive,
            cookie,
            tag,
            description: "",
            duration: None,
            flags: 0,
            create: false,
        };
        objlock::lock(rados, &inner.header_oid, ADVISORY_LOCK, &req, |attrs| {
            match lock::record_from_xattrs(attrs, &what) {
                Ok(Some(r)) => Err(RadosError::new(
                    Errno::EBUSY,
                    format!("{what}: the exclusive lock is held by client.{}", r.client),
                )),
                Ok(None) => Ok(()),
                Err(e) => Err(RadosError::new(e.errno(), e.to_string())),
            }
        })
        .await
        .map_err(|e| rados_err(&what, "locking", e))?;
        inner.notify_header_update().await;
        Ok(())
    }

    /// `rbd_unlock`: release this client's advisory lock held under
    /// `cookie` (`ENOENT` if it holds none).
    pub async fn unlock(&self, cookie: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let what = format!("image {}", inner.spec());
        let rados = inner.rados.as_ref();
        objlock::remove(
            rados,
            &inner.header_oid,
            ADVISORY_LOCK,
            &objlock::entity_of(rados),
            cookie,
        )
        .await
        .map_err(|e| rados_err(&what, "unlocking", e))?;
        inner.notify_header_update().await;
        Ok(())
    }

    /// `rbd_break_lock` / `rbd lock rm`: remove the lock `client` holds
    /// under `cookie` (`ENOENT` if there is no such holder). The holder is
    /// blocklisted first when `rbd_blocklist_on_break_lock` says so.
    pub async fn break_lock(&self, client: &str, cookie: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let what = format!("image {}", inner.spec());
        let rados = inner.rados.as_ref();
        // The exclusive-lock feature's holder, listed as librbd does.
        let owners = lock::owners_of(rados, &inner.header_oid, &what).await?;
        if owners
            .iter()
            .any(|o| o.entity == client && o.cookie == cookie)
        {
            return self.lock_break(client).await;
        }
        let info = objlock::info(rados, &inner.header_oid, ADVISORY_LOCK)
            .await
            .map_err(|e| rados_err(&what, "reading the locks of", e))?;
        let Some(l) = info
            .lockers
            .iter()
            .find(|l| l.entity == client && l.cookie == cookie)
        else {
            return Err(RbdError::not_found(format!(
                "lock {cookie:?} of {client} on {what}"
            )));
        };
        if client != objlock::entity_of(rados) {
            lock::fence_addr(rados, &what, client, &l.addr, inner.lock.fence).await?;
        }
        objlock::remove(rados, &inner.header_oid, ADVISORY_LOCK, client, cookie)
            .await
            .map_err(|e| rados_err(&what, "breaking a lock of", e))?;
        inner.notify_header_update().await;
        Ok(())
    }

    /// `rbd_list_lockers` / `rbd lock ls`: who holds a lock on the image.
    pub async fn list_lockers(&self) -> Result<ImageLocks> {
        let inner = &self.inner;
        inner.check_open()?;
        let what = format!("image {}", inner.spec());
        let rados = inner.rados.as_ref();
        let owners = lock::owners_of(rados, &inner.header_oid, &what).await?;
        if !owners.is_empty() {
            return Ok(ImageLocks {
                exclusive: true,
                tag: INTERNAL_TAG.into(),
                lockers: owners
                    .into_iter()
                    .map(|o| ImageLocker {
                        client: o.entity,
                        cookie: o.cookie,
                        addr: o.addr,
                    })
                    .collect(),
            });
        }
        let info = objlock::info(rados, &inner.header_oid, ADVISORY_LOCK)
            .await
            .map_err(|e| rados_err(&what, "reading the locks of", e))?;
        Ok(ImageLocks {
            exclusive: info.exclusive,
            tag: info.tag,
            lockers: info
                .lockers
                .into_iter()
                .map(|l| ImageLocker {
                    client: l.entity,
                    cookie: l.cookie,
                    addr: l.addr,
                })
                .collect(),
        })
    }
}
