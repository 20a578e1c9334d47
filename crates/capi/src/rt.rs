//! The library's own threads: a tokio runtime for I/O (created lazily on
//! first use) and one callback thread.
//!
//! An asynchronous operation is first polled on the submitting thread
//! ([`spawn_guarded`]): its request frame goes onto the socket from there,
//! and the operation becomes a runtime task only when something wakes it
//! (the reply), on the thread that woke it. Completion callbacks run one at
//! a time, as librbd's `io_context_pool` does, never on the submitting
//! thread: on the I/O thread that finished the operation when no other
//! callback is running ([`run_completion`]), else on the `quarry-cb`
//! thread. A callback that makes a blocking call from an I/O thread is
//! safe: [`block_on`] hands that thread's work to another one first.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use tokio::runtime::Runtime;

thread_local! {
    /// Whether this thread is one of the runtime's (workers and blocking pool).
    static IO_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn on_io_thread() -> bool {
    IO_THREAD.with(|c| c.get())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `QUARRY_LOG=<level>` (`error` .. `trace`, as for the tools) sends the
/// library's logs to the host process's stderr; unset, the library logs
/// nothing. The only way to see, e.g., lock hand-overs inside QEMU.
fn init_logging() {
    let Ok(v) = std::env::var("QUARRY_LOG") else {
        return;
    };
    if v.trim().is_empty() {
        return;
    }
    match v
        .trim()
        .parse::<tracing_subscriber::filter::LevelFilter>()
    {
        Ok(level) => {
            // Fails only if the host already installed a subscriber: keep it.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_max_level(level)
                .try_init();
        }
        Err(_) => eprintln!(
            "quarry: QUARRY_LOG={v:?}: expected one of off, error, warn, info, debug, trace; not logging"
        ),
    }
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        init_logging();
        let threads = std::env::var("QUARRY_CLIENT_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| (1..=64).contains(&n))
            .unwrap_or(2);
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("quarry-io")
            .on_thread_start(|| IO_THREAD.with(|c| c.set(true)))
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            // Without threads nothing can work; abort with a message
            // rather than unwind across the C boundary.
            Err(e) => {
                eprintln!("quarry: cannot start I/O threads: {e}");
                std::process::abort()
            }
        }
    })
}

/// A handle on the library's runtime (for background tasks such as the
/// rbd cache's flusher).
pub fn handle() -> tokio::runtime::Handle {
    runtime().handle().clone()
}

/// Run a future on the library's runtime and wait for its output on the
/// calling thread (the synchronous C calls).
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    // From an I/O thread (a completion callback making a blocking call),
    // hand this worker's queued tasks to another thread before waiting, or
    // the task the caller waits for could be stuck behind it.
    let got = if on_io_thread() {
        tokio::task::block_in_place(|| rx.recv())
    } else {
        rx.recv()
    };
    match got {
        Ok(v) => v,
        // The task panicked (its sender was dropped): surface as a panic
        // that the export's catch_unwind turns into -EIO.
        Err(_) => panic!("quarry: internal task failed"),
    }
}

/// Asynchronous operations started and not finished yet.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one operation in [`IN_FLIGHT`] while it lives.
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether another operation than the one just counted is in flight.
fn others_in_flight(n: &AtomicUsize) -> bool {
    n.load(Ordering::Acquire) > 1
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
type PanicHook = Box<dyn FnOnce() + Send + 'static>;

/// An operation polled first on the submitting thread; the first wake
/// after that turns it into a runtime task.
struct Lazy {
    /// The operation until a task takes it (`None` once finished or taken).
    fut: Mutex<Option<BoxFut>>,
    on_panic: Mutex<Option<PanicHook>>,
    spawned: AtomicBool,
}

impl Lazy {
    fn panicked(&self) {
        eprintln!("quarry: internal error (panic) in an I/O task; completing with -EIO");
        if let Some(f) = lock(&self.on_panic).take() {
            f();
        }
    }
}

impl Wake for Lazy {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.spawned.swap(true, Ordering::AcqRel) {
            // Already a task: that task's own poll registered its waker
            // with everything the operation waits on.
            return;
        }
        let me = self.clone();
        runtime().spawn(async move {
            // Waits (briefly) if the submitting thread is still in the
            // first poll, which holds the lock.
            let fut = lock(&me.fut).take();
            if let Some(fut) = fut {
                if CatchUnwind(fut).await.is_err() {
                    me.panicked();
                }
            }
        });
    }
}

/// Polls the inner future, turning a panic into `Err`.
struct CatchUnwind(BoxFut);

impl Future for CatchUnwind {
    type Output = Result<(), ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let f = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Start an operation whose completion must fire even if Quarry panics
/// inside it: on a panic, `on_panic` runs (it completes with -EIO).
///
/// The operation is polled once here, on the caller's thread (inside the
/// runtime's context), so its request is sent without waking an I/O
/// thread; whatever wakes it next (the reply) makes it a task on the
/// runtime. Completions it fires from here go to the callback thread.
/// While other operations are in flight it is spawned on the runtime
/// instead (at queue depth > 1 the I/O threads are awake anyway, and the
/// submitting thread must not become the bottleneck). With
/// `QUARRY_CLIENT_SPIN_US` set, a lone operation's caller then spins up to
/// that long for it to finish before returning ([`SpinPolicy`]).
pub fn spawn_guarded<F>(fut: F, on_panic: impl FnOnce() + Send + 'static)
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = runtime();
    let busy = InFlight::enter();
    if others_in_flight(&IN_FLIGHT) {
        let fut = async move {
            let _busy = busy;
            fut.await
        };
        // Other operations are in flight (queue depth > 1): the I/O threads
        // are awake anyway and batch frames per syscall; polling here would
        // make the submitting thread the bottleneck.
        // One task that catches its own panic (a second task awaiting the
        // first's JoinHandle cost a task and a wake-up per operation).
        rt.spawn(async move {
            if CatchUnwind(Box::pin(fut)).await.is_err() {
                eprintln!("quarry: internal error (panic) in an I/O task; completing with -EIO");
                on_panic();
            }
        });
        return;
    }
    let done = Arc::new(AtomicBool::new(false));
    let finished = Finished(done.clone());
    let fut = async move {
        let _busy = busy;
        // Dropped after the operation (and a completion it ran inline)
        // ended, also when it panics or is dropped unfinished.
        let _finished = finished;
        fut.await
    };
    let _ctx = rt.enter();
    let lazy = Arc::new(Lazy {
        fut: Mutex::new(Some(Box::pin(fut))),
        on_panic: Mutex::new(Some(Box::new(on_panic))),
        spawned: AtomicBool::new(false),
    });
    let waker = Waker::from(lazy.clone());
    let mut cx = Context::from_waker(&waker);
    let mut slot = lock(&lazy.fut);
    let Some(f) = slot.as_mut() else { return };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(&mut cx))) {
        Ok(Poll::Pending) => {
            // Unlocked first: the task the reply starts takes the slot.
            drop(slot);
            spin_until(&done, spin_policy());
        }
        Ok(Poll::Ready(())) => *slot = None,
        Err(_) => {
            *slot = None;
            drop(slot);
            lazy.panicked();
        }
    }
}

/// Sets its flag when dropped: the operation it lives in has ended.
struct Finished(Arc<AtomicBool>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Bounded, adaptive spinning of the submitting thread at queue depth 1
/// (`QUARRY_CLIENT_SPIN_US`, microseconds, 0 = off).
///
/// After a lone operation's request is on the socket, the submitting
/// thread (fio's, QEMU's) usually goes to sleep in `poll` on the image's
/// eventfd and is woken by the I/O thread that completes the operation: one
/// thread wake-up per I/O (tens of microseconds on a VM). Spinning for a
/// short budget instead lets the completion land while that thread is
/// still running, so its `poll` returns at once. The spin costs CPU: it
/// happens only when this is the only operation in flight, ends as soon as
/// the operation finishes, and backs off (skips spinning for up to 64
/// operations, doubling per miss) while replies keep taking longer than
/// the budget.
pub struct SpinPolicy {
    /// Budget per operation; zero disables spinning.
    budget: std::time::Duration,
    /// Operations left to run without spinning (back-off after misses).
    skip: AtomicUsize,
    /// Current back-off length (0, 1, 2, 4, ... [`SPIN_BACKOFF_MAX`]).
    backoff: AtomicUsize,
}

/// Longest back-off after repeated misses, in operations.
const SPIN_BACKOFF_MAX: usize = 64;
/// Largest accepted budget: spinning longer than a millisecond would only
/// burn a core.
const SPIN_MAX_US: u64 = 1000;

impl SpinPolicy {
    /// A policy with `budget_us` microseconds per operation (clamped to
    /// [`SPIN_MAX_US`]; 0 = off).
    pub fn new(budget_us: u64) -> SpinPolicy {
        SpinPolicy {
            budget: std::time::Duration::from_micros(budget_us.min(SPIN_MAX_US)),
            skip: AtomicUsize::new(0),
            backoff: AtomicUsize::new(0),
        }
    }

    /// The budget parsed from a `QUARRY_CLIENT_SPIN_US` value: a whole
    /// number of microseconds; anything else (or nothing) means off.
    pub fn from_setting(v: Option<&str>) -> SpinPolicy {
        let us = v.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        SpinPolicy::new(us)
    }

    /// The budget per operation (zero when off).
    pub fn budget(&self) -> std::time::Duration {
        self.budget
    }

    /// Whether the next operation should spin (consumes one skipped turn
    /// while backing off).
    pub fn should_spin(&self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Record a spin's outcome: a hit resets the back-off, a miss doubles it
    /// and skips that many operations.
    pub fn record(&self, hit: bool) {
        if hit {
            self.backoff.store(0, Ordering::Relaxed);
            return;
        }
        let b = self.backoff.load(Ordering::Relaxed);
        let next = (b * 2).clamp(1, SPIN_BACKOFF_MAX);
        self.backoff.store(next, Ordering::Relaxed);
        self.skip.store(next, Ordering::Relaxed);
    }
}

fn spin_policy() -> &'static SpinPolicy {
    static P: OnceLock<SpinPolicy> = OnceLock::new();
    P.get_or_init(|| {
        SpinPolicy::from_setting(std::env::var("QUARRY_CLIENT_SPIN_US").ok().as_deref())
    })
}

/// Spin until `done` is set or the policy's budget runs out.
fn spin_until(done: &AtomicBool, policy: &SpinPolicy) {
    if !policy.should_spin() {
        return;
    }
    let start = std::time::Instant::now();
    let budget = policy.budget();
    loop {
        for _ in 0..64 {
            if done.load(Ordering::Acquire) {
                policy.record(true);
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= budget {
            policy.record(done.load(Ordering::Acquire));
            return;
        }
        // Let any other runnable thread on this core (an OSD, the I/O
        // thread about to complete this operation) go first: on a busy
        // machine a pure spin would delay the very reply it waits for.
        std::thread::yield_now();
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

fn callback_sender() -> &'static Mutex<mpsc::Sender<Job>> {
    static TX: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("quarry-cb".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking callback job must not kill the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = spawned {
            eprintln!("quarry: cannot start the callback thread: {e}");
            std::process::abort();
        }
        Mutex::new(tx)
    })
}

/// Held while a completion callback runs (wherever it runs): completion
/// callbacks are never concurrent.
static COMPLETION_LOCK: Mutex<()> = Mutex::new(());

/// Run a completion's callback job: inline when called on an I/O thread
/// and no other completion callback is running (one thread hop fewer per
/// I/O), otherwise on the callback thread. Never on a caller's thread.
pub fn run_completion(job: impl FnOnce() + Send + 'static) {
    if on_io_thread() {
        if let Ok(_g) = COMPLETION_LOCK.try_lock() {
            // A panicking callback must not unwind into the runtime.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            return;
        }
    }
    run_callback(move || {
        let _g = lock(&COMPLETION_LOCK);
        job()
    });
}

/// Queue a job on the callback thread (serialized, FIFO).
pub fn run_callback(job: impl FnOnce() + Send + 'static) {
    let tx = match callback_sender().lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    if let Err(e) = tx.send(Box::new(job)) {
        // The thread is gone (cannot happen while the process lives): run
        // the job here so the completion still fires exactly once.
        (e.0)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_setting_parses_microseconds_and_defaults_to_off() {
        assert!(SpinPolicy::from_setting(None).budget().is_zero());
        assert!(SpinPolicy::from_setting(Some("")).budget().is_zero());
        assert!(SpinPolicy::from_setting(Some("abc")).budget().is_zero());
        assert!(SpinPolicy::from_setting(Some("-5")).budget().is_zero());
        assert!(SpinPolicy::from_setting(Some("0")).budget().is_zero());
        assert_eq!(
            SpinPolicy::from_setting(Some(" 40 ")).budget(),
            std::time::Duration::from_micros(40)
        );
        // Clamped: a huge budget would only burn a core.
        assert_eq!(
            SpinPolicy::from_setting(Some("5000000")).budget(),
            std::time::Duration::from_micros(SPIN_MAX_US)
        );
        assert!(!SpinPolicy::new(0).should_spin());
    }

    #[test]
    fn spin_backs_off_after_misses_and_resumes_after_a_hit() {
        let p = SpinPolicy::new(50);
        assert!(p.should_spin());
        // Each miss doubles the number of operations that skip spinning.
        let mut expect = 1;
        for _ in 0..10 {
            p.record(false);
            for _ in 0..expect {
                assert!(!p.should_spin());
            }
            assert!(p.should_spin());
            expect = (expect * 2).min(SPIN_BACKOFF_MAX);
        }
        assert_eq!(expect, SPIN_BACKOFF_MAX);
        // A hit ends the back-off: the next miss skips one operation again.
        p.record(true);
        assert!(p.should_spin());
        p.record(false);
        assert!(!p.should_spin());
        assert!(p.should_spin());
    }

    #[test]
    fn spin_stops_when_the_operation_finishes_or_the_budget_ends() {
        // Finished already: returns without using the budget, as a hit.
        let p = SpinPolicy::new(SPIN_MAX_US);
        let done = AtomicBool::new(true);
        spin_until(&done, &p);
        assert!(p.should_spin(), "a hit must not start a back-off");
        // Never finishes: returns (bounded) and counts a miss.
        let p = SpinPolicy::new(20);
        let never = AtomicBool::new(false);
        spin_until(&never, &p);
        assert!(!p.should_spin(), "a miss must skip the next operation");
        // Finished by another thread while spinning (the I/O thread's
        // completion): a hit.
        let p = SpinPolicy::new(SPIN_MAX_US);
        let flag = Arc::new(AtomicBool::new(false));
        let f2 = flag.clone();
        let t = std::thread::spawn(move || f2.store(true, Ordering::Release));
        t.join().expect("setter thread");
        spin_until(&flag, &p);
        assert!(p.should_spin());
        // The guard sets the flag however the operation ends.
        let flag = Arc::new(AtomicBool::new(false));
        drop(Finished(flag.clone()));
        assert!(flag.load(Ordering::Acquire));
    }
}
