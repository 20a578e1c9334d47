//! A forged or replayed daemon->client frame: a proxy between the network
//! client and a real OSD (the OSD advertises the proxy as its
//! `public_addr`) alters a signed reply after the handshake, recomputing
//! the frame's crcs so that only the MAC can tell. The client must drop
//! the connection with a warning, resend on a new one and complete the
//! read with the genuine data, never with the forged payload, never hang.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use quarry_client::wire::{K_AUTH_RESULT, K_CHALLENGE};
use quarry_proto::{read_frame, Frame, SIG_LEN};
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the next reply frame that carries data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Flip a payload byte, crcs recomputed (the MAC is left as it was).
    Flip,
    /// Send the connection's previous frame again (trailer and all) first.
    Replay,
}

#[derive(Default)]
struct Stats {
    conns: AtomicUsize,
    forged: AtomicUsize,
    replayed: AtomicUsize,
    mode: Mutex<Option<Mode>>,
}

impl Stats {
    fn set(&self, m: Mode) {
        *self.mode.lock().expect("mode") = Some(m);
    }
    /// The mode for this frame; an attack is done once.
    fn take(&self) -> Mode {
        self.mode.lock().expect("mode").take().unwrap_or(Mode::Pass)
    }
}

fn wire_bytes(f: &Frame, trailer: &[u8]) -> Vec<u8> {
    let mut b = f.header().expect("header").to_vec();
    b.extend_from_slice(&f.body);
    b.extend_from_slice(&f.data);
    b.extend_from_slice(trailer);
    b
}

/// One proxied connection: client bytes go to the OSD untouched; the
/// OSD's frames are parsed (handshake frames unsigned, then each with its
/// signature trailer) and passed on, or attacked as `stats` says.
async fn proxy_conn(client: TcpStream, osd: String, stats: Arc<Stats>) {
    let Ok(server) = TcpStream::connect(&osd).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut signed = false;
    let mut prev: Option<Vec<u8>> = None;
    loop {
        let Ok(f) = read_frame(&mut sr).await else {
            break;
        };
        let mut trailer = Vec::new();
        if signed {
            trailer = vec![0u8; SIG_LEN];
            if sr.read_exact(&mut trailer).await.is_err() {
                break;
            }
        }
        if f.kind == K_CHALLENGE {
            let ch: quarry_client::wire::Challenge = f.decode().expect("challenge");
            assert!(ch.sign, "the OSD signs by default");
        }
        if f.kind == K_AUTH_RESULT && !signed {
            // Frames after the handshake's result are signed (both sign).
            signed = true;
            if cw.write_all(&wire_bytes(&f, &[])).await.is_err() {
                break;
            }
            continue;
        }
        let genuine = wire_bytes(&f, &trailer);
        let mode = if signed && !f.data.is_empty() {
            stats.take()
        } else {
            Mode::Pass
        };
        let out = match mode {
            Mode::Flip => {
                let mut data = f.data.to_vec();
                data[0] ^= 0x55;
                let forged = Frame {
                    data: Bytes::from(data),
                    ..f.clone()
                };
                stats.forged.fetch_add(1, Ordering::SeqCst);
                wire_bytes(&forged, &trailer)
            }
            Mode::Replay => match &prev {
                Some(p) => {
                    stats.replayed.fetch_add(1, Ordering::SeqCst);
                    let mut b = p.clone();
                    b.extend_from_slice(&genuine);
                    b
                }
                None => {
                    stats.set(Mode::Replay); // nothing to replay yet
                    genuine.clone()
                }
            },
            Mode::Pass => genuine.clone(),
        };
        if cw.write_all(&out).await.is_err() {
            break;
        }
        prev = Some(genuine);
    }
    let _ = cw.shutdown().await;
}

/// The log lines of this test process (the client's warnings).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_replayed_osd_replies_are_dropped_and_resent() {
    let log = LogBuf::default();
    let w = log.clone();
    let _ = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .try_init();

    let cl = Cluster::up(1, 1);
    let c0 = cl.client().await;
    let pool = c0.pool_lookup("rbd").await.expect("pool");
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 31 + 7) as u8).collect();
    let oid = ObjectId::new(pool, "forge-me");
    bounded(
        "write",
        c0.operate(OpRequest::new(oid.clone()).op(Op::WriteFull(Bytes::from(data.clone())))),
    )
    .await
    .expect("write");
    drop(c0);

    // The proxy, and osd.0 restarted behind it: it listens on a port of
    // its own and advertises the proxy's.
    let osd_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let osd_addr = format!("127.0.0.1:{osd_port}");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = listener.local_addr().expect("addr").to_string();
    let stats = Arc::new(Stats::default());
    {
        let stats = stats.clone();
        let osd_addr = osd_addr.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                stats.conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(proxy_conn(s, osd_addr.clone(), stats.clone()));
            }
        });
    }
    cl.term("osd.0");
    cl.append_conf(&format!("\n[osd.0]\n\tpublic_addr = {proxy_addr}\n"));
    cl.start_osd_args(0, &["--bind", &osd_addr]);
    let c = cl.client().await;
    bounded("osd.0 up at the proxy's address", async {
        loop {
            if let Ok(m) = c.monc().refresh_map().await {
                if m.osds.get(&0).is_some_and(|o| o.up && o.addr == proxy_addr) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let read = || {
        let c = c.clone();
        let oid = oid.clone();
        async move {
            let r = bounded(
                "read through the proxy",
                c.operate(OpRequest::new(oid).op(Op::Read { off: 0, len: 0 })),
            )
            .await
            .expect("read");
            match &r.outputs[0] {
                OpOutput::Data(d) => d.to_vec(),
                o => panic!("unexpected output {o:?}"),
            }
        }
    };
    // A genuine read through the proxy first (the connection is made).
    assert!(read().await == data, "read through the proxy");
    let conns = stats.conns.load(Ordering::SeqCst);
    assert!(
        conns >= 1,
        "the client must reach the OSD through the proxy"
    );

    // (a) The reply's payload altered, crcs recomputed; (b) an earlier
    // reply replayed (genuine MAC, old sequence number).
    for (mode, count, logged) in [
        (Mode::Flip, &stats.forged, "signature mismatch"),
        (
            Mode::Replay,
            &stats.replayed,
            "replayed, dropped or reordered",
        ),
    ] {
        let conns = stats.conns.load(Ordering::SeqCst);
        stats.set(mode);
        assert!(
            read().await == data,
            "{mode:?}: the read must return the genuine data"
        );
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "{mode:?}: one reply attacked"
        );
        assert!(
            stats.conns.load(Ordering::SeqCst) > conns,
            "{mode:?}: the client must resend on a new connection"
        );
        let text = log.text();
        assert!(
            text.contains("dropping connection to OSD") && text.contains(logged),
            "{mode:?}: the client must log why it dropped the connection: {text}"
        );
    }
}
