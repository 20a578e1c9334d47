//! Watch notifications on the primary: deliver a notify to every watch of
//! an object (an `Event` frame on the watch's connection) and collect the
//! acks until all arrived or the notifier's timeout passed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quarry_client::wire::{Event, K_EVENT};
use quarry_proto::Frame;
use quarry_rados::{NotifyAck, NotifyResult, ObjectId, Watcher, NOTIFY_TIMEOUT_MAX};
use tokio::sync::mpsc;

/// A watch to deliver to: who, and its connection's send queue.
pub(crate) struct Target {
    pub watcher: Watcher,
    pub conn: mpsc::WeakSender<Frame>,
}

struct Pending {
    waiting: Vec<Watcher>,
    acks: Vec<NotifyAck>,
    wake: Arc<tokio::sync::Notify>,
}

/// Notifications in flight on this OSD, by notify id.
#[derive(Default)]
pub(crate) struct Notifies {
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let wake = Arc::new(tokio::sync::Notify::new());
        lock(&self.pending).insert(
            id,
            Pending {
                waiting: targets.iter().map(|t| t.watcher.clone()).collect(),
                acks: Vec::new(),
                wake: wake.clone(),
            },
        );
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
        loop {
            if lock(&self.pending)
                .get(&id)
                .is_none_or(|p| p.waiting.is_empty())
            {
                break;
            }
            if tokio::time::timeout_at(deadline, wake.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        lock(&self.pending)
            .remove(&id)
            .map(|p| NotifyResult {
                acks: p.acks,
                timeouts: p.waiting,
            })
            .unwrap_or_default()
    }

    /// Record an ack; unknown or finished notifications are ignored.
    pub fn ack(&self, notify_id: u64, client: u64, cookie: u64, payload: Bytes) {
        let mut n = lock(&self.pending);
        let Some(p) = n.get_mut(&notify_id) else {
            return;
        };
        let Some(i) = p
            .waiting
            .iter()
            .position(|w| w.client == client && w.cookie == cookie)
        else {
            return;
        };
        p.waiting.remove(i);
        p.acks.push(NotifyAck {
            client,
            cookie,
            payload,
        });
        if p.waiting.is_empty() {
            p.wake.notify_one();
        }
    }
}
