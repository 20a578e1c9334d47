//! A pipelined frame connection: many requests in flight, matched by
//! request id; frames with request id 0 are pushes, handed to a callback.
//! Used by the monitor client and by monitors talking to each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::BufWriter;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use quarry_proto::{read_frame_signed, write_frame_signed, Frame, FrameError, FrameSigner};

/// Requests queued for the writer at most (bounded, as every queue).
const WRITE_QUEUE: usize = 256;

/// Why a call on a connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// Could not connect in time or at all.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection broke (the request may or may not have been served).
    #[error("connection to {0} lost: {1}")]
    Lost(String, String),
    /// No reply in time.
    #[error("no reply from {0} within {1:?}")]
    Timeout(String, Duration),
    /// The peer speaks another wire version (another release).
    #[error("monitor {0}: {1}")]
    Version(String, String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

/// Handler for pushed frames (request id 0); must not block.
pub type PushHandler = Box<dyn Fn(Frame) + Send + Sync>;

/// One pipelined connection.
pub struct Conn {
    addr: String,
    tx: mpsc::Sender<Frame>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    closed_rx: tokio::sync::watch::Receiver<bool>,
    reader: tokio::task::JoinHandle<()>,
    /// Set when the peer turned out to speak another wire version.
    version_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping the connection ends its tasks (the writer ends when `tx` goes).
        self.reader.abort();
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addr", &self.addr).finish()
    }
}

impl Conn {
    /// Connect to `addr` within `timeout`, without authenticating (the
    /// handshake then runs as calls on the connection, unsigned; tests of
    /// the handshake use it). Clients use [`crate::connect_authenticated`].
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        on_push: Option<PushHandler>,
    ) -> Result<Conn, ConnError> {
        let stream = tcp_connect(addr, timeout).await?;
        Ok(Conn::start(stream, addr, on_push, None))
    }

    /// Start the pipelined I/O tasks on a connected (and, with `signers`,
    /// authenticated) stream: with signers every frame is signed and
    /// every received frame's signature checked before it is handed on.
    pub fn start(
        stream: TcpStream,
        addr: &str,
        on_push: Option<PushHandler>,
        signers: Option<(FrameSigner, FrameSigner)>,
    ) -> Conn {
        let (mut wsig, mut rsig) = match signers {
            Some((w, r)) => (Some(w), Some(r)),
            None => (None, None),
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        // Buffered: a frame's header, body and trailer in one read syscall.
        let mut rd = tokio::io::BufReader::new(rd);
        let (tx, mut rx) = mpsc::channel::<Frame>(WRITE_QUEUE);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
        let closed_tx = Arc::new(closed_tx);

        let wclosed = closed.clone();
        let wclosed_tx = closed_tx.clone();
        tokio::spawn(async move {
            let mut w = BufWriter::new(wr);
            while let Some(f) = rx.recv().await {
                let mut res = write_frame_signed(&mut w, &f, wsig.as_mut()).await;
                // Flush only when nothing else is queued: batches small frames.
                if res.is_ok() && rx.is_empty() {
                    res = tokio::io::AsyncWriteExt::flush(&mut w)
                        .await
                        .map_err(FrameError::from);
                }
                if res.is_err() {
                    break;
                }
            }
            wclosed.store(true, Ordering::Release);
            let _ = wclosed_tx.send(true);
        });

        let rpending = pending.clone();
        let rclosed = closed.clone();
        let raddr = addr.to_string();
        let version_error: Arc<Mutex<Option<String>>> = Arc::default();
        let rversion = version_error.clone();
        let reader = tokio::spawn(async move {
            loop {
                match read_frame_signed(&mut rd, rsig.as_mut()).await {
                    Ok(f) if f.kind == quarry_proto::K_VERSION_MISMATCH => {
                        if let Ok(mut v) = rversion.lock() {
                            *v = Some(
                                f.decode()
                                    .unwrap_or_else(|_| "wire version mismatch".into()),
                            );
                        }
                        break;
                    }
                    Err(FrameError::BadVersion(v)) => {
                        if let Ok(mut slot) = rversion.lock() {
                            *slot = Some(FrameError::BadVersion(v).to_string());
                        }
                        break;
                    }
                    Ok(f) if f.request_id == 0 => {
                        if let Some(h) = &on_push {
                            h(f);
                        }
                    }
                    Ok(f) => {
                        let waiter = rpending
                            .lock()
                            .ok()
                            .and_then(|mut p| p.remove(&f.request_id));
                        if let Some(w) = waiter {
                            let _ = w.send(f);
                        }
                    }
                    Err(e @ (FrameError::BadSignature { .. } | FrameError::Sequence { .. })) => {
                        // Callers see the connection lost and reconnect.
                        tracing::warn!("dropping connection to monitor {raddr}: {e}");
                        break;
                    }
                    Err(e) => {
                        if !matches!(e, FrameError::Closed) {
                            tracing::debug!("connection to {raddr}: {e}");
                        }
                        break;
                    }
                }
            }
            rclosed.store(true, Ordering::Release);
            let _ = closed_tx.send(true);
            // Dropping the senders wakes every waiter with an error.
            if let Ok(mut p) = rpending.lock() {
                p.clear();
            }
        });
        Conn {
            addr: addr.to_string(),
            tx,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            closed_rx,
            reader,
            version_error,
        }
    }

    /// The error for a call on a closed connection: a wire version
    /// mismatch if that is why it closed.
    fn lost(&self, what: &str) -> ConnError {
        match self.version_error.lock().ok().and_then(|v| v.clone()) {
            Some(msg) => ConnError::Version(self.addr.clone(), msg),
            None => ConnError::Lost(self.addr.clone(), what.into()),
        }
    }

    /// Peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed or closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Give the connection up (a silent peer): calls waiting on it fail
    /// at once (as lost) instead of at their timeouts.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader.abort();
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }

    /// Resolves when the connection closes.
    pub async fn closed(&self) {
        let mut rx = self.closed_rx.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Send `frame` (its request id is replaced) and wait for the reply.
    pub async fn call(&self, mut frame: Frame, timeout: Duration) -> Result<Frame, ConnError> {
        if self.is_closed() {
            return Err(self.lost("closed"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        frame.request_id = id;
        let (otx, orx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, otx);
        }
        // The reader marks the connection closed before clearing `pending`:
        // checking again here means no call waits on a dead connection.
        if self.is_closed() {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(self.lost("closed"));
        }
        let res = tokio::time::timeout(timeout, async {
            self.tx
                .send(frame)
                .await
                .map_err(|_| ConnError::Lost(self.addr.clone(), "writer gone".into()))?;
            orx.await.map_err(|_| self.lost("closed before reply"))
        })
        .await;
        match res {
            Ok(r) => r,
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(ConnError::Timeout(self.addr.clone(), timeout))
            }
        }
    }
}

/// Open a TCP connection to `addr` within `timeout`.
pub async fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, ConnError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(ConnError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnError::Connect {
            addr: addr.to_string(),
            reason: format!("timed out after {timeout:?}"),
        }),
    }
}
