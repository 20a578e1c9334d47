//! One authenticated, pipelined connection to an OSD.
//!
//! A request is written to the socket by the thread that sends it when it
//! is the only one in flight and nothing is queued (no hand-off to another
//! task: one thread wake-up fewer per request at queue depth 1); otherwise,
//! or for what the socket does not take at once, it is queued and a writer
//! task drains the queue, many frames per `writev` (at depth > 1 one
//! syscall per request cost more CPU than the hand-off). A reader task matches
//! responses to callers by request id through oneshot channels. In-flight
//! requests are bounded by a semaphore.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quarry_auth::Ticket;
use quarry_common::Errno;
use quarry_proto::stream::{Stream, WriteHalf};
use quarry_proto::{
    read_frame, read_frame_signed, write_frame, Frame, FrameError, FrameSigner, Role, SignPolicy,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::wire::{
    AuthProof, AuthResult, Challenge, Hello, Request, Response, K_AUTH, K_AUTH_RESULT, K_CHALLENGE,
    K_EVENT, K_HELLO, K_REQUEST, K_RESPONSE,
};

/// Most requests in flight on one connection before callers wait.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Bytes queued for the writer before senders wait.
const SEND_QUEUE_BYTES: usize = 8 << 20;
/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;
/// Send buffer asked for on each connection (the kernel doubles it): a
/// 4 MiB write's frame is 4 MiB + ~130 bytes, and under Linux's default
/// autotuning ceiling (`tcp_wmem` max, 4 MiB) its last ~3 KiB could not
/// be queued until the peer had read the rest, so every such frame cost a
/// second wake-up of the sender (writability, then the writer task) on
/// both hops of a replicated write, 1.6-7 ms each in a strace of 4 MiB
/// writes on a loaded host.
const SEND_BUF: usize = 4 << 20;

/// Why a connection or a call on it failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP connect or socket error.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Peer.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The peer refused our credentials (or failed to prove its own).
    #[error("authentication error talking to {addr}: {msg}")]
    Auth {
        /// Peer.
        addr: String,
        /// Reason.
        msg: String,
    },
    /// The connection is gone; the request may or may not have been applied.
    #[error("connection to {0} closed")]
    Closed(String),
    /// A framing or codec failure.
    #[error("protocol error with {addr}: {source}")]
    Frame {
        /// Peer.
        addr: String,
        /// Cause.
        source: FrameError,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {0} timed out")]
    Timeout(String),
    /// The peer runs another release whose wire version differs: retrying
    /// cannot help (`EOPNOTSUPP`).
    #[error("{addr}: {msg}")]
    Version {
        /// Peer.
        addr: String,
        /// Both versions, in words.
        msg: String,
    },
}

impl ConnError {
    /// errno as a client call reports it.
    pub fn errno(&self) -> Errno {
        match self {
            ConnError::Auth { .. } => Errno::EACCES,
            ConnError::Timeout(_) => Errno::ETIMEDOUT,
            ConnError::Version { .. } => Errno::EOPNOTSUPP,
            ConnError::Frame { source, .. } => source.errno(),
            _ => Errno::ENOTCONN,
        }
    }

    /// Whether retrying later (after a map change) makes sense.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ConnError::Auth { .. } | ConnError::Version { .. })
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent across a panic (single insert/remove calls).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending side: the socket and the bytes it has not taken yet.
/// Bytes reach the socket only under this lock, so frames go out whole and
/// in the order their senders took it.
struct Out {
    /// `None` once the connection is closed.
    sock: Option<Arc<WriteHalf>>,
    /// Encoded frames not written yet (the first possibly in part).
    queue: VecDeque<Bytes>,
    queued: usize,
    /// The `Conn` is gone: the writer task ends once the queue is written.
    ending: bool,
    /// Signs each frame as it is queued (under this lock, so in the order
    /// the frames go out); `None` on an unsigned connection.
    sig: Option<FrameSigner>,
}

impl Out {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.queued += b.len();
            self.queue.push_back(b);
        }
    }

    /// Drop `n` written bytes from the front of the queue.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                let _ = front.split_to(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }

    /// Write as much of the queue as the socket takes without blocking.
    /// `Ok(true)`: all written.
    fn write_some(&mut self) -> std::io::Result<bool> {
        let Some(sock) = self.sock.clone() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        while !self.queue.is_empty() {
            let iov: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            match sock.try_write_vectored(&iov) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// The sending side shared by senders and the writer task.
struct Sender {
    out: Mutex<Out>,
    /// Wakes the writer task: something is queued.
    kick: Notify,
    /// Wakes senders waiting for queue space.
    space: Notify,
}

/// An open connection to an OSD.
pub struct Conn {
    addr: String,
    /// This end's IP as the peer sees it (blocklist entries name it).
    local_ip: Option<std::net::IpAddr>,
    out: Arc<Sender>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    slots: Arc<Semaphore>,
    /// The reader and writer tasks, aborted by [`Conn::close`].
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// A duplicate of the socket, so [`Conn::close`] can make the close
    /// abortive whatever state the tasks are in.
    sock: Mutex<Option<std::os::fd::OwnedFd>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // As a dropped channel did: what is queued still goes out, then the
        // writer task ends and the socket's sending side is shut.
        lock(&self.out.out).ending = true;
        self.out.kick.notify_one();
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addr", &self.addr).finish()
    }
}

async fn expect_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    addr: &str,
    kind: u8,
) -> Result<Frame, ConnError> {
    let f = read_frame(s).await.map_err(|e| match e {
        FrameError::Closed => ConnError::Auth {
            addr: addr.to_string(),
            msg: "connection closed during authentication".into(),
        },
        e => ferr(addr)(e),
    })?;
    if f.kind != kind {
        return Err(ConnError::Frame {
            addr: addr.to_string(),
            source: FrameError::Codec(format!("expected kind {kind}, got {}", f.kind)),
        });
    }
    Ok(f)
}

fn ferr(addr: &str) -> impl Fn(FrameError) -> ConnError + '_ {
    move |e| match e {
        FrameError::BadVersion(_) => ConnError::Version {
            addr: addr.to_string(),
            msg: e.to_string(),
        },
        e => ConnError::Frame {
            addr: addr.to_string(),
            source: e,
        },
    }
}

/// The first number in a `/proc/sys` file, if readable.
fn sysctl_first(path: &str) -> Option<usize> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Ask for [`SEND_BUF`] when the kernel would grant more than its
/// autotuning allows (`2 x min(SEND_BUF, wmem_max)` above `tcp_wmem`'s
/// max); otherwise leave autotuning alone, since a set size also stops it
/// (with the stock `wmem_max` of 208 KiB a set size would shrink the buffer).
fn widen_send_buffer(s: &Stream) {
    let Stream::Tcp(s) = s else {
        // A Unix socket's buffer is no TCP window: left at its default.
        return;
    };
    static GRANTED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let want = GRANTED.get_or_init(|| {
        let wmem_max = sysctl_first("/proc/sys/net/core/wmem_max")?;
        let auto_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
            .ok()?
            .split_whitespace()
            .nth(2)?
            .parse::<usize>()
            .ok()?;
        let ask = SEND_BUF.min(wmem_max);
        (2 * ask > auto_max).then_some(ask)
    });
    if let Some(ask) = *want {
        let _ = socket2::SockRef::from(s).set_send_buffer_size(ask);
    }
}

/// The signers (sending, receiving) of a connection whose frames are signed.
type Signers = Option<(FrameSigner, FrameSigner)>;

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    addr: &str,
    ticket: &Ticket,
) -> Result<Signers, ConnError> {
    let cn = quarry_auth::random_nonce();
    let policy = SignPolicy::global();
    let hello = Hello {
        ticket: ticket.blob.to_vec(),
        client_nonce: cn,
        sign: policy.sign,
    };
    write_frame(
        s,
        &Frame::new(K_HELLO, 0, &hello, Bytes::new()).map_err(ferr(addr))?,
    )
    .await
    .map_err(ferr(addr))?;
    let f = read_frame(s).await.map_err(ferr(addr))?;
    if f.kind == quarry_proto::K_VERSION_MISMATCH {
        return Err(ConnError::Version {
            addr: addr.to_string(),
            msg: f
                .decode()
                .unwrap_or_else(|_| "wire version mismatch".into()),
        });
    }
    if f.kind == K_AUTH_RESULT {
        // Refused at the ticket stage.
        let r: AuthResult = f.decode().map_err(ferr(addr))?;
        return Err(ConnError::Auth {
            addr: addr.to_string(),
            msg: r.err().map(|e| e.msg).unwrap_or_else(|| "refused".into()),
        });
    }
    if f.kind != K_CHALLENGE {
        return Err(ferr(addr)(FrameError::Codec(format!(
            "expected challenge, got kind {}",
            f.kind
        ))));
    }
    let ch: Challenge = f.decode().map_err(ferr(addr))?;
    let mode = SignPolicy::mode_byte(policy.sign, ch.sign);
    let want = quarry_auth::server_session_proof(&ticket.session_key, &cn, &ch.server_nonce, mode);
    if !quarry_auth::ticket::check_session_proof(&want, &ch.server_proof) {
        return Err(ConnError::Auth {
            addr: addr.to_string(),
            msg: "the OSD failed to prove it holds the service key".into(),
        });
    }
    let signed = SignPolicy::negotiated(policy.sign, ch.sign);
    // An OSD is always a daemon; whether this is a cluster connection
    // depends on this process (an OSD talking to a peer, or a client).
    if let Some(msg) = policy.check(signed, true) {
        // Leave before proving anything: the OSD sees the connection close.
        return Err(ConnError::Auth {
            addr: addr.to_string(),
            msg,
        });
    }
    let proof = AuthProof {
        client_proof: quarry_auth::session_proof(&ticket.session_key, &cn, &ch.server_nonce, mode),
    };
    write_frame(
        s,
        &Frame::new(K_AUTH, 0, &proof, Bytes::new()).map_err(ferr(addr))?,
    )
    .await
    .map_err(ferr(addr))?;
    let f = expect_frame(s, addr, K_AUTH_RESULT).await?;
    let r: AuthResult = f.decode().map_err(ferr(addr))?;
    r.map_err(|e| ConnError::Auth {
        addr: addr.to_string(),
        msg: e.msg,
    })?;
    Ok(signed.then(|| {
        let key = quarry_auth::session_frame_key(&ticket.session_key, &cn, &ch.server_nonce);
        FrameSigner::pair(&key, Role::Connector)
    }))
}

/// Where connections hand unsolicited `K_EVENT` frames (watch
/// notifications), and how they say they had to drop one.
#[derive(Clone, Debug)]
pub struct EventSink {
    /// The bounded queue the client's event loop drains.
    pub tx: mpsc::Sender<Frame>,
    /// Set when an event was dropped because the queue was full.
    pub lost: Arc<AtomicBool>,
}

impl Conn {
    /// Connect to `addr`, authenticate with `ticket`, start the I/O tasks.
    pub async fn connect(
        addr: &str,
        ticket: &Ticket,
        timeout: Duration,
    ) -> Result<Arc<Conn>, ConnError> {
        Self::connect_with_events(addr, ticket, timeout, None).await
    }

    /// [`Conn::connect`], handing unsolicited `K_EVENT` frames (watch
    /// notifications) to `events`; they are dropped (and `lost` set) when
    /// it is full.
    pub async fn connect_with_events(
        addr: &str,
        ticket: &Ticket,
        timeout: Duration,
        events: Option<EventSink>,
    ) -> Result<Arc<Conn>, ConnError> {
        let fut = async {
            // The OSD's Unix socket if it is in this network namespace
            // (see `quarry_proto::stream`), else TCP.
            let local = match quarry_proto::stream::local_enabled() {
                true => quarry_proto::stream::connect_local(addr).await.ok(),
                false => None,
            };
            let mut s = match local {
                Some(u) => Stream::Unix(u),
                None => Stream::Tcp(TcpStream::connect(addr).await.map_err(|source| {
                    ConnError::Connect {
                        addr: addr.to_string(),
                        source,
                    }
                })?),
            };
            s.set_nodelay();
            widen_send_buffer(&s);
            let signers = handshake(&mut s, addr, ticket).await?;
            Ok::<_, ConnError>((s, signers))
        };
        let (s, signers) = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ConnError::Timeout(addr.to_string()))??;
        Ok(Self::start(s, addr.to_string(), events, signers))
    }

    fn start(s: Stream, addr: String, events: Option<EventSink>, signers: Signers) -> Arc<Conn> {
        let (wsig, mut rsig) = match signers {
            Some((w, r)) => (Some(w), Some(r)),
            None => (None, None),
        };
        let raddr = addr.clone();
        let local_ip = match &s {
            Stream::Tcp(t) => t.local_addr().ok().map(|a| a.ip()),
            // In the OSD's namespace: a TCP connection to its address
            // would have come from that same address.
            Stream::Unix(_) => addr.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()),
        };
        use std::os::fd::AsFd;
        let sock = s.as_fd().try_clone_to_owned().ok();
        let (rd, wr) = s.into_split();
        // Buffered: header, body and payload of a frame in one read syscall.
        let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
        let out = Arc::new(Sender {
            out: Mutex::new(Out {
                sock: Some(Arc::new(wr)),
                queue: VecDeque::new(),
                queued: 0,
                ending: false,
                sig: wsig,
            }),
            kick: Notify::new(),
            space: Notify::new(),
        });
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let conn = Arc::new(Conn {
            addr,
            local_ip,
            out: out.clone(),
            pending: pending.clone(),
            next_id: AtomicU64::new(1),
            closed: closed.clone(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            tasks: Mutex::new(Vec::new()),
            sock: Mutex::new(sock),
        });
        let wclosed = closed.clone();
        let writer = tokio::spawn(async move {
            // Drains what senders could not write at once.
            'run: loop {
                out.kick.notified().await;
                // Let the runtime run its other ready tasks first (they are
                // often more requests for this socket: replies come in
                // bursts at queue depth > 1), so one writev carries them all.
                // A deferred task runs once its worker has nothing else to do.
                tokio::task::yield_now().await;
                loop {
                    let sock = {
                        let mut o = lock(&out.out);
                        let r = o.write_some();
                        out.space.notify_waiters();
                        match r {
                            Ok(true) if o.ending => break 'run,
                            Ok(true) => continue 'run,
                            Ok(false) => o.sock.clone(),
                            Err(_) => break 'run,
                        }
                    };
                    let Some(sock) = sock else { break 'run };
                    if sock.writable().await.is_err() {
                        break 'run;
                    }
                }
            }
            wclosed.store(true, Ordering::SeqCst);
            // Senders see `closed` (or a write error); none waits for room.
            lock(&out.out).sock = None;
            out.space.notify_waiters();
        });
        let reader = tokio::spawn(async move {
            loop {
                match read_frame_signed(&mut rd, rsig.as_mut()).await {
                    Ok(f) if f.kind == K_RESPONSE => {
                        let tx = lock(&pending).remove(&f.request_id);
                        if let Some(tx) = tx {
                            let _ = tx.send(f);
                        }
                    }
                    Ok(f) if f.kind == K_EVENT => {
                        if let Some(ev) = &events {
                            // Never block the reader: a dropped event shows
                            // up as a timed-out watcher to the notifier, and
                            // the watchers are told they missed one.
                            if ev.tx.try_send(f).is_err() {
                                ev.lost.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    Ok(_) => {} // Nothing else is expected; ignore.
                    Err(e) => {
                        if matches!(
                            e,
                            FrameError::BadSignature { .. } | FrameError::Sequence { .. }
                        ) {
                            // Callers resend on a new connection; say why.
                            tracing::warn!("dropping connection to OSD {raddr}: {e}");
                        }
                        break;
                    }
                }
            }
            closed.store(true, Ordering::SeqCst);
            // Dropping the senders wakes every waiting caller with Closed.
            lock(&pending).clear();
        });
        *lock(&conn.tasks) = vec![writer.abort_handle(), reader.abort_handle()];
        conn
    }

    /// Close the connection now: every request waiting on it fails with
    /// [`ConnError::Closed`] (its caller resends elsewhere). Used when the
    /// map says the peer went down or restarted: a peer cut off by the
    /// network never resets the TCP connection itself, and what was queued
    /// on it would otherwise wait for TCP's retransmission back-off.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(fd) = lock(&self.sock).take() {
            // Reset instead of FIN: frames still in the kernel's send buffer
            // are discarded, so a request sent before a link cut cannot
            // reach the peer after the link returns and be applied late.
            let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        {
            let mut o = lock(&self.out.out);
            o.sock = None;
            o.queue.clear();
            o.queued = 0;
        }
        self.out.space.notify_waiters();
        lock(&self.pending).clear();
    }

    /// This end's IP address, as the OSD sees it.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.local_ip
    }

    /// Whether the connection has failed (callers reconnect).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Requests sent and not answered yet.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether requests other than the caller's hold an in-flight slot.
    fn others_in_flight(&self) -> bool {
        self.slots.available_permits() + 1 < MAX_IN_FLIGHT
    }

    /// Put a frame on the socket, or behind what is queued for it.
    async fn write(&self, frame: &Frame) -> Result<(), ConnError> {
        let hdr = frame.header().map_err(ferr(&self.addr))?;
        loop {
            // Registered before the check so a wake between the two counts.
            let space = self.out.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut o = lock(&self.out.out);
                if o.sock.is_none() || self.is_closed() {
                    return Err(ConnError::Closed(self.addr.clone()));
                }
                if o.queued < SEND_QUEUE_BYTES {
                    // Written from here only when it is the connection's
                    // only request in flight (queue depth 1: no thread
                    // hand-off). With others in flight the writer task sends
                    // it, together with whatever else the runtime's ready
                    // tasks queue meanwhile, in one writev.
                    let idle = o.queue.is_empty() && !self.others_in_flight();
                    let trailer = o.sig.as_mut().map(|sig| sig.sign(&hdr));
                    o.push(Bytes::copy_from_slice(&hdr));
                    o.push(frame.body.clone());
                    o.push(frame.data.clone());
                    if let Some(t) = trailer {
                        o.push(Bytes::copy_from_slice(&t));
                    }
                    if idle {
                        // Nothing ahead of this frame: write it from here.
                        match o.write_some() {
                            Ok(true) => {}
                            Ok(false) => self.out.kick.notify_one(),
                            Err(_) => {
                                o.sock = None;
                                return Err(ConnError::Closed(self.addr.clone()));
                            }
                        }
                    } else {
                        // The writer task drains the queue (a spare wake-up
                        // when it is already draining finds little to do).
                        self.out.kick.notify_one();
                    }
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Send a request and wait for its response.
    pub async fn call(&self, req: &Request, data: Bytes) -> Result<(Response, Bytes), ConnError> {
        self.send(req, data).await?.await
    }

    /// Queue a request on the socket and return the future of its
    /// response. Requests are written in the order their `send` completes,
    /// so a caller that awaits `send` under its own lock orders them (the
    /// OSD's pipelined replication relies on it to keep RepOps in log order).
    pub async fn send(
        &self,
        req: &Request,
        data: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<(Response, Bytes), ConnError>>, ConnError>
    {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConnError::Closed(self.addr.clone()))?;
        if self.is_closed() {
            return Err(ConnError::Closed(self.addr.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::new(K_REQUEST, id, req, data).map_err(ferr(&self.addr))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // Guard removes the pending entry if the caller drops the request
        // (a timeout) at any point, sent or not.
        struct Unregister(Pending, u64);
        impl Drop for Unregister {
            fn drop(&mut self) {
                lock(&self.0).remove(&self.1);
            }
        }
        let guard = Unregister(self.pending.clone(), id);
        self.write(&frame).await?;
        if self.is_closed() {
            // The reader may have cleared `pending` before we inserted.
            lock(&self.pending).remove(&id);
        }
        let addr = self.addr.clone();
        Ok(async move {
            let _guard = guard;
            let _slot = slot;
            let f = rx.await.map_err(|_| ConnError::Closed(addr.clone()))?;
            let resp: Response = f.decode().map_err(ferr(&addr))?;
            Ok((resp, f.data))
        })
    }
}
