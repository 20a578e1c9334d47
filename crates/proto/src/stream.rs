//! A connection's byte stream: TCP, or a Unix socket to an OSD in this
//! network namespace.
//!
//! Every OSD also listens on an abstract Unix socket named after the
//! address it advertises ([`local_name`]). A client (or a peer OSD) whose
//! connect to that name succeeds talks to the OSD through it instead of
//! TCP: same frames, same handshake and authentication, same limits, but
//! no TCP stack on either side. On this host a 4 KiB round trip took
//! ~45-51 us over a Unix socket against ~69-76 us over loopback TCP.
//!
//! Why an abstract name: abstract Unix sockets belong to a network
//! namespace, as a loopback or interface address does, so only a process
//! that could reach the OSD's address without leaving the namespace finds
//! it; processes in other namespaces (the multi-host tests' "hosts", a
//! container) do not, and use TCP. Nothing is left on disk when an OSD
//! dies. The name carries no authority: the handshake proves both ends as
//! over TCP.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixListener, UnixStream};

/// The abstract Unix socket name of an OSD advertising `addr` (leading
/// NUL: tokio binds and connects such paths in the abstract namespace).
pub fn local_name(addr: &str) -> String {
    format!("\0quarry-osd/{addr}")
}

/// Listen on the abstract Unix socket of `addr` (see [`local_name`]).
pub fn bind_local(addr: &str) -> io::Result<UnixListener> {
    UnixListener::bind(local_name(addr))
}

/// Whether connections try an OSD's Unix socket before TCP: yes unless
/// `QUARRY_LOCAL_UNIX=0` (for measurements against TCP).
pub fn local_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("QUARRY_LOCAL_UNIX").as_deref() != Ok("0"))
}

/// Connect to the OSD advertising `addr` through its Unix socket, if one
/// is listening in this network namespace (fails at once otherwise).
pub async fn connect_local(addr: &str) -> io::Result<UnixStream> {
    UnixStream::connect(local_name(addr)).await
}

/// A connected stream of either kind.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix socket in this network namespace.
    Unix(UnixStream),
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// TCP.
    Tcp(tcp::OwnedReadHalf),
    /// Unix.
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    /// TCP.
    Tcp(tcp::OwnedWriteHalf),
    /// Unix.
    Unix(unix::OwnedWriteHalf),
}

impl Stream {
    /// Split into halves owned by separate tasks (no lock between them).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }

    /// Disable Nagle's algorithm (TCP; a Unix socket has none).
    pub fn set_nodelay(&self) {
        if let Stream::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// Whether this is a Unix socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl WriteHalf {
    /// Write what the socket takes now from `bufs` (`WouldBlock` if none).
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(w) => w.try_write_vectored(bufs),
            WriteHalf::Unix(w) => w.try_write_vectored(bufs),
        }
    }

    /// Wait until the socket may take more.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(w) => w.writable().await,
            WriteHalf::Unix(w) => w.writable().await,
        }
    }
}

macro_rules! delegate_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Unix(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_read!(ReadHalf);
delegate_write!(Stream);
delegate_write!(WriteHalf);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_local_listener_is_found_by_its_address_and_nothing_else() {
        let addr = format!("127.0.0.1:{}", std::process::id());
        let l = bind_local(&addr).expect("bind");
        // A second listener on the same name is refused (one OSD per address).
        assert!(bind_local(&addr).is_err());
        // Another address finds nothing, at once.
        assert!(connect_local(&format!("{addr}1")).await.is_err());
        let c = tokio::spawn({
            let addr = addr.clone();
            async move {
                let mut s = Stream::Unix(connect_local(&addr).await.expect("connect"));
                s.write_all(b"ping").await.expect("write");
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.expect("read");
                b
            }
        });
        let (s, _) = l.accept().await.expect("accept");
        let (mut r, mut w) = Stream::Unix(s).into_split();
        let mut b = [0u8; 4];
        r.read_exact(&mut b).await.expect("read");
        assert_eq!(&b, b"ping");
        w.write_all(b"pong").await.expect("write");
        assert_eq!(&c.await.expect("join"), b"pong");
        // Gone with its listener.
        drop(l);
        assert!(connect_local(&addr).await.is_err());
    }
}
