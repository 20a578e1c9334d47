//! The bookkeeping of notifications waiting for their watchers' acks,
//! shared by the OSD (which delivers them over the network) and the
//! embedded backend (which calls the watch callbacks in process).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::{NotifyAck, NotifyResult, Watcher};

/// One notification in flight: who has yet to ack, what came back.
struct Pending {
    waiting: Vec<Watcher>,
    acks: Vec<NotifyAck>,
    wake: Arc<tokio::sync::Notify>,
}

/// Notifications in flight, by notify id (ids start at 1).
#[derive(Default)]
pub struct PendingNotifies {
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
}

impl PendingNotifies {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        // The map stays consistent across a panic (single insert/remove calls).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a notification that `waiting` must ack; returns its id.
    pub fn start(&self, waiting: Vec<Watcher>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let p = Pending {
            waiting,
            acks: Vec::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
        };
        self.lock().insert(id, p);
        id
    }

    /// Record an ack; one for an unknown or finished notification, or from
    /// a watcher not waited for (or already acked), is ignored.
    pub fn ack(&self, notify_id: u64, client: u64, cookie: u64, payload: Bytes) {
        let mut n = self.lock();
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

    /// Wait until every watcher of notification `id` acked or `deadline`
    /// passed, then forget it: the acks, and who did not answer in time.
    pub async fn finish(&self, id: u64, deadline: tokio::time::Instant) -> NotifyResult {
        let wake = self.lock().get(&id).map(|p| p.wake.clone());
        if let Some(wake) = wake {
            loop {
                if self.lock().get(&id).is_none_or(|p| p.waiting.is_empty()) {
                    break;
                }
                // An ack between the check and here left a permit: no lost wake-up.
                if tokio::time::timeout_at(deadline, wake.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        self.lock()
            .remove(&id)
            .map(|p| NotifyResult {
                acks: p.acks,
                timeouts: p.waiting,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn w(client: u64, cookie: u64) -> Watcher {
        Watcher {
            client,
            cookie,
            addr: String::new(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn acks_timeouts_and_strays() {
        let n = PendingNotifies::default();
        let id = n.start(vec![w(1, 10), w(2, 20)]);
        assert_eq!(id, 1);
        n.ack(id, 1, 10, Bytes::from_static(b"a"));
        n.ack(id, 1, 10, Bytes::from_static(b"again")); // already acked
        n.ack(id, 3, 30, Bytes::new()); // not waited for
        n.ack(99, 2, 20, Bytes::new()); // unknown notification
                                        // Watcher 2 never acks: its timeout ends the wait.
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        let r = n.finish(id, soon).await;
        assert_eq!(r.acks.len(), 1);
        assert_eq!(r.acks[0].payload, Bytes::from_static(b"a"));
        assert_eq!(r.timeouts, vec![w(2, 20)]);
        // Finished: a late ack is ignored, the id is not reused.
        n.ack(id, 2, 20, Bytes::new());
        let id2 = n.start(vec![w(2, 20)]);
        assert_eq!(id2, 2);
        n.ack(id2, 2, 20, Bytes::new());
        // All acked: returns without waiting for the (far) deadline.
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let r = n.finish(id2, far).await;
        assert!(r.timeouts.is_empty() && r.acks.len() == 1);
    }
}
