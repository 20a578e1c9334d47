//! The library's own threads: a tokio runtime for I/O (created lazily on
//! first use, never driving work on the caller's thread) and one callback
//! thread that runs user completion callbacks one at a time, as librbd's
//! `io_context_pool` does (callbacks are never concurrent and never run on
//! the submitting thread).

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let threads = std::env::var("QUARRY_CLIENT_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| (1..=64).contains(&n))
            .unwrap_or(2);
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("quarry-io")
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
    match rx.recv() {
        Ok(v) => v,
        // The task panicked (its sender was dropped): surface as a panic
        // that the export's catch_unwind turns into -EIO.
        Err(_) => panic!("quarry: internal task failed"),
    }
}

/// Spawn an operation whose completion must fire even if Quarry panics
/// inside it: on a panic, `on_panic` runs (it completes with -EIO).
pub fn spawn_guarded<F>(fut: F, on_panic: impl FnOnce() + Send + 'static)
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = runtime();
    let inner = rt.spawn(fut);
    rt.spawn(async move {
        if inner.await.is_err() {
            eprintln!("quarry: internal error (panic) in an I/O task; completing with -EIO");
            on_panic();
        }
    });
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
