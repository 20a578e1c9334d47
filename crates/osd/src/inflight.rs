//! Client ops a primary is executing now (received, not yet answered), by
//! op id, so a resend that races its original (the client resent after a
//! connection drop or a map change while the original still waits for its
//! replicas or the store) waits for the original's outcome instead of
//! running a second time (a guarded op would fail its guard, a plain one
//! would apply twice). Ceph keeps in-progress op ids for the same reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

/// A client op id: (client global id, tid).
pub(crate) type OpId = (u64, u64);

/// The op ids of one PG's client ops in flight on this primary.
#[derive(Default)]
pub(crate) struct InFlight {
    /// Op id → (registration token, closed when the op finishes).
    ops: Mutex<HashMap<OpId, (u64, watch::Receiver<()>)>>,
    next_token: AtomicU64,
}

/// What to do with an op whose id [`InFlight::claim`] looked up.
pub(crate) enum Claim<'a, T> {
    /// Already applied: answer with what the duplicate index knows.
    Done(T),
    /// The same op is in flight: [`wait`] for it, then claim again.
    Wait(watch::Receiver<()>),
    /// Run it; the id stays registered until the guard drops.
    Run(Running<'a>),
}

/// Registration of an op in flight; dropping it (the op answered, failed
/// or was abandoned) releases the resends waiting for it.
pub(crate) struct Running<'a> {
    set: &'a InFlight,
    id: OpId,
    token: u64,
    /// Dropped after the id left the table: waiters that wake up and claim
    /// again never find this run.
    _done: watch::Sender<()>,
}

impl std::fmt::Debug for Running<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("id", &self.id).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single inserts and removes: consistent across a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl InFlight {
    /// Look `id` up: in flight (wait), else applied per `done` (the
    /// duplicate index, consulted under this table's lock: an op enters
    /// the index before it leaves this table, so a resend always finds it
    /// in one of them), else register it to run.
    pub(crate) fn claim<T>(&self, id: OpId, done: impl FnOnce() -> Option<T>) -> Claim<'_, T> {
        let mut ops = lock(&self.ops);
        if let Some((_, rx)) = ops.get(&id) {
            return Claim::Wait(rx.clone());
        }
        if let Some(t) = done() {
            return Claim::Done(t);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(());
        ops.insert(id, (token, rx));
        Claim::Run(Running {
            set: self,
            id,
            token,
            _done: tx,
        })
    }

    /// How many ops are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.ops).len()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut ops = lock(&self.set.ops);
        if ops.get(&self.id).is_some_and(|(t, _)| *t == self.token) {
            ops.remove(&self.id);
        }
    }
}

/// Resolves when the run `rx` came from finished, whatever its outcome.
pub(crate) async fn wait(mut rx: watch::Receiver<()>) {
    // Nothing is ever sent: `changed` fails once the sender is dropped.
    while rx.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run<T>(c: Claim<'_, T>) -> Running<'_> {
        match c {
            Claim::Run(r) => r,
            Claim::Wait(_) => panic!("expected to run, got wait"),
            Claim::Done(_) => panic!("expected to run, got done"),
        }
    }

    #[tokio::test]
    async fn resend_waits_for_the_original_then_sees_its_outcome() {
        let f = InFlight::default();
        let applied: Mutex<Option<u64>> = Mutex::new(None);
        let done = || *lock(&applied);
        let original = run(f.claim((1, 7), done));
        // Another op id is independent.
        let other = run(f.claim((1, 8), done));
        assert_eq!(f.len(), 2);
        let Claim::Wait(rx) = f.claim((1, 7), done) else {
            panic!("a resend of an op in flight must wait");
        };
        let waiter = tokio::spawn(wait(rx));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "released before the original finished"
        );
        // The original succeeds: recorded as applied, then released.
        *lock(&applied) = Some(42);
        drop(original);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter is released")
            .expect("waiter task");
        match f.claim((1, 7), done) {
            Claim::Done(v) => assert_eq!(v, 42),
            _ => panic!("the resend must get the original's outcome"),
        }
        drop(other);
        assert_eq!(f.len(), 0);
    }

    #[tokio::test]
    async fn resend_of_a_failed_original_runs() {
        let f = InFlight::default();
        let done = || None::<u64>;
        let original = run(f.claim((2, 1), done));
        let Claim::Wait(rx) = f.claim((2, 1), done) else {
            panic!("must wait");
        };
        // Fails (or its interval ends): nothing recorded, released.
        drop(original);
        tokio::time::timeout(Duration::from_secs(10), wait(rx))
            .await
            .expect("released");
        let again = run(f.claim((2, 1), done));
        assert_eq!(f.len(), 1);
        // While the rerun is in flight, a third copy waits for it.
        assert!(matches!(f.claim((2, 1), done), Claim::Wait(_)));
        drop(again);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_stale_guard_does_not_remove_a_newer_registration() {
        let f = InFlight::default();
        let done = || None::<u64>;
        let first = run(f.claim((3, 1), done));
        // Simulate the entry having been replaced by a newer run (as if
        // the first had been released and the op claimed again).
        let first_token = first.token;
        lock(&f.ops).remove(&(3, 1));
        let second = run(f.claim((3, 1), done));
        assert_ne!(first_token, second.token);
        drop(first);
        assert!(
            matches!(f.claim((3, 1), done), Claim::Wait(_)),
            "the newer run stays registered"
        );
        drop(second);
        assert!(matches!(f.claim((3, 1), done), Claim::Run(_)));
    }
}
