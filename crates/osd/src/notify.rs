//! Watch notifications on the primary: deliver a notify to every watch of
//! an object (an `Event` frame on the watch's connection) and collect the
//! acks until all arrived or the notifier's timeout passed.

use std::time::Duration;

use bytes::Bytes;
use quarry_client::wire::{Event, K_EVENT};
use quarry_proto::Frame;
use quarry_rados::notify::PendingNotifies;
use quarry_rados::{NotifyResult, ObjectId, Watcher, NOTIFY_TIMEOUT_MAX};
use tokio::sync::mpsc;

/// A watch to deliver to: who, and its connection's send queue.
pub(crate) struct Target {
    pub watcher: Watcher,
    pub conn: mpsc::WeakSender<Frame>,
}

/// Notifications in flight on this OSD, by notify id.
#[derive(Default)]
pub(crate) struct Notifies {
    pending: PendingNotifies,
}

impl Notifies {
    /// Deliver `payload` to `targets` and wait for their acks.
    pub async fn run(
        &self,
        oid: ObjectId,
        notifier: u64,
        payload: Bytes,
        timeout: Duration,
        targets: Vec<Target>,
    ) -> NotifyResult {
        let id = self
            .pending
            .start(targets.iter().map(|t| t.watcher.clone()).collect());
        let deadline = tokio::time::Instant::now() + timeout.min(NOTIFY_TIMEOUT_MAX);
        for t in targets {
            let ev = Event::Notify {
                oid: oid.clone(),
                notify_id: id,
                cookie: t.watcher.cookie,
                notifier,
                payload: payload.clone(),
            };
            let (Ok(frame), Some(tx)) =
                (Frame::new(K_EVENT, 0, &ev, Bytes::new()), t.conn.upgrade())
            else {
                continue; // connection gone: the watcher times out
            };
            let _ = tokio::time::timeout_at(deadline, tx.send(frame)).await;
        }
        self.pending.finish(id, deadline).await
    }

    /// Record an ack; unknown or finished notifications are ignored.
    pub fn ack(&self, notify_id: u64, client: u64, cookie: u64, payload: Bytes) {
        self.pending.ack(notify_id, client, cookie, payload);
    }
}
