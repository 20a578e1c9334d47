//! Bad input to both daemons of a real cluster (monitor and OSD as separate
//! processes): random bytes, truncated frames, oversized lengths (with a
//! valid header checksum), unknown message types and clients that connect
//! and go silent. Each such connection is dropped, the daemon keeps serving
//! everyone else and does not grow its memory by the lengths it was told.
//! The OSD takes each case on TCP and on its local Unix socket.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use quarry_proto::stream::Stream;
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, Rados};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Castagnoli CRC (as quarry-proto), bitwise: no extra dependency.
fn crc32c(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A frame header claiming `body_len` / `data_len`, with a valid checksum.
fn header(kind: u8, body_len: u32, data_len: u32) -> Vec<u8> {
    let f = quarry_proto::Frame {
        kind,
        flags: 0,
        request_id: 7,
        body: Bytes::new(),
        data: Bytes::new(),
    };
    let mut h = f.header().expect("header");
    h[16..20].copy_from_slice(&body_len.to_le_bytes());
    h[20..24].copy_from_slice(&data_len.to_le_bytes());
    let crc = crc32c(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h.to_vec()
}

/// A connection to `addr` over TCP, or (`unix`) over the OSD's local Unix
/// socket (see `quarry_proto::stream`).
async fn connect(addr: &str, unix: bool) -> Stream {
    match unix {
        true => Stream::Unix(
            quarry_proto::stream::connect_local(addr)
                .await
                .expect("connect unix"),
        ),
        false => Stream::Tcp(TcpStream::connect(addr).await.expect("connect")),
    }
}

/// Send `bytes`, then wait (bounded) until the daemon closes the connection.
async fn dropped_after(addr: &str, unix: bool, what: &str, bytes: &[u8]) {
    let mut s = connect(addr, unix).await;
    let _ = s.write_all(bytes).await;
    closes(&mut s, &format!("{what} to {addr} (unix: {unix})")).await;
}

async fn closes<S: tokio::io::AsyncRead + Unpin>(s: &mut S, what: &str) {
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an error reply first is fine
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection not dropped after {what}");
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn still_serving(c: &quarry_client::ClusterClient, pool: i64, n: u32) {
    let name = format!("alive{n}");
    let data = Bytes::from(format!("still here {n}"));
    bounded(
        "write while under bad input",
        c.operate(OpRequest::new(ObjectId::new(pool, &name)).op(Op::WriteFull(data.clone()))),
    )
    .await
    .expect("write");
    let r = bounded(
        "read while under bad input",
        c.operate(OpRequest::new(ObjectId::new(pool, &name)).op(Op::Read { off: 0, len: 0 })),
    )
    .await
    .expect("read");
    assert_eq!(r.outputs[0], OpOutput::Data(data));
    bounded("map while under bad input", c.monc().refresh_map())
        .await
        .expect("map");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_and_silent_clients_to_monitor_and_osd() {
    let cl = Cluster::up(1, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("pool");
    still_serving(&c, pool, 0).await;
    let mon = cl.mon_addrs()[0].clone();
    let osd = c.monc().refresh_map().await.expect("map").osds[&0]
        .addr
        .clone();
    // This client reached the OSD through its Unix socket (one network
    // namespace): the OSD's end of that connection carries the name.
    let name = format!("@quarry-osd/{osd}");
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    let states: Vec<&str> = table
        .lines()
        .filter(|l| l.ends_with(&name))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert!(
        states.contains(&"01") && states.contains(&"03"),
        "{name}: no listener or no connection through it: {states:?}"
    );
    let pids = [cl.pid("mon.a"), cl.pid("osd.0")];
    let rss0: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();

    let mut rng = quarry_fsx::Prng::new(5);
    let mut n = 0;
    for (addr, unix) in [(&mon, false), (&osd, false), (&osd, true)] {
        // Silent clients (no byte at all, and half a header) held open
        // while the daemon serves others.
        let mut silent = Vec::new();
        for i in 0..20 {
            let mut s = connect(addr, unix).await;
            if i % 2 == 1 {
                s.write_all(&header(1, 10, 0)[..18]).await.expect("write");
            }
            silent.push(s);
        }
        // Every kind of bad input at once (a daemon waiting for the rest
        // of a truncated frame drops it at its handshake timeout).
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        for _ in 0..3 {
            let mut junk = vec![0u8; 1 + rng.below(8192) as usize];
            rng.fill(&mut junk);
            cases.push(("random bytes", junk));
        }
        let mut truncated = header(1, 100, 0);
        truncated.extend_from_slice(&[0u8; 40]);
        cases.push(("a truncated frame", truncated));
        cases.push(("an oversized body length", header(1, u32::MAX, 0)));
        cases.push(("an oversized data length", header(1, 0, u32::MAX)));
        let mut unknown = header(250, 0, 0);
        unknown.extend_from_slice(&header(251, 0, 0));
        cases.push(("unknown message types", unknown));
        let mut bad_crc = header(1, 0, 0);
        bad_crc[35] ^= 1;
        cases.push(("a bad header checksum", bad_crc));
        let tasks: Vec<_> = cases
            .into_iter()
            .map(|(what, bytes)| {
                let addr = addr.clone();
                tokio::spawn(async move { dropped_after(&addr, unix, what, &bytes).await })
            })
            .collect();
        n += 1;
        still_serving(&c, pool, n).await;
        for t in tasks {
            t.await.expect("bad input case");
        }
        // The silent ones are dropped too (handshake timeout), not kept forever.
        for (i, s) in silent.iter_mut().enumerate() {
            closes(s, &format!("silent client {i} of {addr}")).await;
        }
        n += 1;
        still_serving(&c, pool, n).await;
    }
    for (i, &pid) in pids.iter().enumerate() {
        assert!(pid_alive(pid), "daemon {i} died");
        let rss = rss_kib(pid);
        eprintln!("daemon {i}: VmRSS {} KiB -> {rss} KiB", rss0[i]);
        // Told of 4 GiB frames many times: must not have allocated them.
        assert!(rss < rss0[i] + (256 << 10), "daemon {i} grew to {rss} KiB");
    }
}

/// The OSD side of the handshake (a ticket from the monitor, then a
/// challenge-response on its session key): a recorded exchange replayed on
/// a new connection, a tampered ticket, a tampered proof and a stolen
/// ticket without its session key are each refused with EACCES and the
/// connection closed, never left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osd_handshake_replay_and_tampering_refused() {
    use quarry_client::wire::{
        AuthProof, AuthResult, Challenge, Hello, K_AUTH, K_AUTH_RESULT, K_CHALLENGE, K_HELLO,
    };
    use quarry_proto::{read_frame, write_frame, Frame};

    let cl = Cluster::up(1, 1);
    let c = cl.client().await;
    let osd = c.monc().refresh_map().await.expect("map").osds[&0]
        .addr
        .clone();
    let ticket = c.monc().ticket().await.expect("ticket");
    let t = Duration::from_secs(20);

    async fn send<T: serde::Serialize>(s: &mut TcpStream, kind: u8, body: &T) {
        let f = Frame::new(kind, 0, body, Bytes::new()).expect("frame");
        write_frame(s, &f).await.expect("send");
    }
    async fn recv(s: &mut TcpStream, t: Duration) -> Frame {
        tokio::time::timeout(t, read_frame(s))
            .await
            .expect("the OSD must answer, not hang")
            .expect("frame")
    }
    fn refused(f: &Frame, what: &str) {
        assert_eq!(f.kind, K_AUTH_RESULT, "{what}: expected a refusal");
        let r: AuthResult = f.decode().expect("auth result");
        let e = r.expect_err(what);
        assert_eq!(e.errno, libc::EACCES, "{what}: {}", e.msg);
        assert!(e.msg.contains("authentication error"), "{what}: {}", e.msg);
    }
    async fn challenge(s: &mut TcpStream, hello: &Hello, t: Duration) -> Challenge {
        send(s, K_HELLO, hello).await;
        let f = recv(s, t).await;
        assert_eq!(f.kind, K_CHALLENGE);
        f.decode().expect("challenge")
    }

    // A genuine exchange, as an eavesdropper would record it.
    let hello = Hello {
        ticket: ticket.blob.to_vec(),
        client_nonce: quarry_auth::random_nonce(),
        sign: true,
    };
    let mut s1 = TcpStream::connect(&osd).await.expect("connect");
    let ch1 = challenge(&mut s1, &hello, t).await;
    assert!(ch1.sign, "the OSD signs by default");
    let proof1 = AuthProof {
        client_proof: quarry_auth::session_proof(
            &ticket.session_key,
            &hello.client_nonce,
            &ch1.server_nonce,
            3,
        ),
    };
    send(&mut s1, K_AUTH, &proof1).await;
    let ok: AuthResult = recv(&mut s1, t).await.decode().expect("result");
    assert!(ok.is_ok(), "the genuine exchange must succeed: {ok:?}");

    // Replayed hello + proof on a new connection: a fresh server nonce.
    let mut s2 = TcpStream::connect(&osd).await.expect("connect");
    let ch2 = challenge(&mut s2, &hello, t).await;
    assert_ne!(
        ch1.server_nonce, ch2.server_nonce,
        "server nonces are fresh"
    );
    send(&mut s2, K_AUTH, &proof1).await;
    refused(&recv(&mut s2, t).await, "replayed proof");
    closes(&mut s2, "a replayed proof").await;

    // A tampered proof.
    let mut s3 = TcpStream::connect(&osd).await.expect("connect");
    let ch3 = challenge(&mut s3, &hello, t).await;
    let mut p = quarry_auth::session_proof(
        &ticket.session_key,
        &hello.client_nonce,
        &ch3.server_nonce,
        3,
    );
    p[7] ^= 0x10;
    send(&mut s3, K_AUTH, &AuthProof { client_proof: p }).await;
    refused(&recv(&mut s3, t).await, "tampered proof");
    closes(&mut s3, "a tampered proof").await;

    // A stolen ticket used without its session key.
    let mut s4 = TcpStream::connect(&osd).await.expect("connect");
    let ch4 = challenge(&mut s4, &hello, t).await;
    let p = quarry_auth::session_proof(&[7u8; 32], &hello.client_nonce, &ch4.server_nonce, 3);
    send(&mut s4, K_AUTH, &AuthProof { client_proof: p }).await;
    refused(&recv(&mut s4, t).await, "stolen ticket");
    closes(&mut s4, "a stolen ticket").await;

    // A tampered ticket (one bit anywhere) is refused at once.
    for i in [0, ticket.blob.len() / 2, ticket.blob.len() - 1] {
        let mut blob = ticket.blob.to_vec();
        blob[i] ^= 0x01;
        let mut s5 = TcpStream::connect(&osd).await.expect("connect");
        send(
            &mut s5,
            K_HELLO,
            &Hello {
                ticket: blob,
                client_nonce: quarry_auth::random_nonce(),
                sign: true,
            },
        )
        .await;
        refused(
            &recv(&mut s5, t).await,
            &format!("ticket with bit flipped at byte {i}"),
        );
        closes(&mut s5, "a tampered ticket").await;
    }

    // The genuine connection and the client are still served.
    still_serving(&c, c.pool_lookup("rbd").await.expect("pool"), 99).await;
}

/// A frame `f` as a build of wire version `version` would send it.
fn with_version(f: &quarry_proto::Frame, version: u8) -> Vec<u8> {
    let mut h = f.header().expect("header").to_vec();
    h[4] = version;
    let crc = crc32c(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&f.body);
    h
}

/// Client and daemons of different wire versions (different releases):
/// each daemon answers a frame of another version with a frame naming
/// both versions and closes; a client reading a daemon's frame of another
/// version fails at once with EOPNOTSUPP naming both, instead of retrying
/// until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_wire_versions_fail_at_once_with_both_versions_named() {
    use quarry_proto::{read_frame, Frame, K_VERSION_MISMATCH, VERSION};
    let other = VERSION + 1;
    let cl = Cluster::up(1, 1);
    let c = cl.client().await;
    let mon = cl.mon_addrs()[0].clone();
    let osd = c.monc().refresh_map().await.expect("map").osds[&0]
        .addr
        .clone();
    // A hello of a future release, to each daemon.
    let hello = Frame::new(1, 1, &"hello from the future", Bytes::new()).expect("frame");
    for (what, addr) in [("monitor", &mon), ("OSD", &osd)] {
        let mut s = TcpStream::connect(addr.as_str()).await.expect("connect");
        s.write_all(&with_version(&hello, other))
            .await
            .expect("send");
        let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut s))
            .await
            .unwrap_or_else(|_| panic!("the {what} must answer, not hang"))
            .unwrap_or_else(|e| panic!("the {what}'s answer: {e}"));
        assert_eq!(f.kind, K_VERSION_MISMATCH, "{what}");
        let msg: String = f.decode().expect("message");
        assert!(msg.contains(&format!("version {other}")), "{what}: {msg}");
        assert!(msg.contains(&format!("version {VERSION}")), "{what}: {msg}");
        closes(
            &mut s,
            &format!("a frame of wire version {other} to the {what}"),
        )
        .await;
    }

    // A "monitor" and an "OSD" of another release: whatever the client
    // sends, they answer with a frame of their version.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let fake_addr = fake.local_addr().expect("addr").to_string();
    let reply = with_version(&quarry_proto::version_mismatch_frame(VERSION), other);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = fake.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let _ = read_frame(&mut s).await;
                let _ = s.write_all(&reply).await;
                let mut sink = [0u8; 256];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    // The monitor client: refused at once, although it would wait 300 s
    // for a monitor that is merely unreachable.
    let timeouts = quarry_client::ClientTimeouts {
        mon: Duration::from_secs(300),
        ..Default::default()
    };
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        quarry_client::ClusterClient::connect(
            vec![fake_addr.clone()],
            "client.admin",
            cl.admin_secret(),
            timeouts,
        ),
    )
    .await
    .expect("a monitor of another wire version must be refused at once, not retried")
    .expect_err("connect to a monitor of another version");
    assert_eq!(e.errno, quarry_common::Errno::EOPNOTSUPP, "{e}");
    assert!(e.to_string().contains(&format!("version {other}")), "{e}");
    assert!(e.to_string().contains(&format!("version {VERSION}")), "{e}");
    // An OSD connection (client to OSD, and OSD to OSD).
    let ticket = c.monc().ticket().await.expect("ticket");
    let e = quarry_client::conn::Conn::connect(&fake_addr, &ticket, Duration::from_secs(20))
        .await
        .expect_err("connect to an OSD of another version");
    assert!(!e.is_transient(), "{e}");
    assert_eq!(e.errno(), quarry_common::Errno::EOPNOTSUPP, "{e}");
    assert!(e.to_string().contains(&format!("version {other}")), "{e}");
}

/// Frames after the handshake are signed (MAC over direction, sequence
/// number and the header with its crcs). A raw client that completed a
/// real handshake sends each daemon (a) a frame with valid crcs but a wrong
/// MAC, (b) a replay of an earlier frame, (c) a frame that skips a sequence
/// number: each drops its connection, is never acted on (a replayed write
/// does not revert a later one), and the daemons keep serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_or_skipped_signed_frames_are_dropped() {
    use quarry_client::wire::{
        strip_request, AuthProof, AuthResult, Challenge, Hello, Request, Response, K_AUTH,
        K_AUTH_RESULT, K_CHALLENGE, K_HELLO, K_REQUEST, K_RESPONSE,
    };
    use quarry_proto::{read_frame, read_frame_signed, write_frame, Frame, FrameSigner, Role};

    let cl = Cluster::up(1, 1);
    let c = cl.client().await;
    let pool = c.pool_lookup("rbd").await.expect("pool");
    let map = c.monc().refresh_map().await.expect("map");
    let osd = map.osds[&0].addr.clone();
    let epoch = map.epoch;
    let ticket = c.monc().ticket().await.expect("ticket");
    let t = Duration::from_secs(20);

    async fn recv(s: &mut TcpStream, t: Duration, what: &str) -> Frame {
        tokio::time::timeout(t, read_frame(s))
            .await
            .unwrap_or_else(|_| panic!("{what}: the daemon must answer, not hang"))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
    /// A real handshake with the OSD; returns the stream and its signers.
    async fn osd_session(
        addr: &str,
        ticket: &quarry_auth::Ticket,
        t: Duration,
    ) -> (TcpStream, FrameSigner, FrameSigner) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let cn = quarry_auth::random_nonce();
        let hello = Hello {
            ticket: ticket.blob.to_vec(),
            client_nonce: cn,
            sign: true,
        };
        let f = Frame::new(K_HELLO, 0, &hello, Bytes::new()).expect("frame");
        write_frame(&mut s, &f).await.expect("hello");
        let f = recv(&mut s, t, "hello").await;
        assert_eq!(f.kind, K_CHALLENGE);
        let ch: Challenge = f.decode().expect("challenge");
        assert!(ch.sign, "the OSD signs by default");
        let proof = AuthProof {
            client_proof: quarry_auth::session_proof(&ticket.session_key, &cn, &ch.server_nonce, 3),
        };
        let f = Frame::new(K_AUTH, 0, &proof, Bytes::new()).expect("frame");
        write_frame(&mut s, &f).await.expect("proof");
        let f = recv(&mut s, t, "proof").await;
        assert_eq!(f.kind, K_AUTH_RESULT);
        let r: AuthResult = f.decode().expect("result");
        r.expect("a genuine handshake succeeds");
        let key = quarry_auth::session_frame_key(&ticket.session_key, &cn, &ch.server_nonce);
        let (tx, rx) = FrameSigner::pair(&key, Role::Connector);
        (s, tx, rx)
    }
    fn write_req(epoch: u64, pool: i64, name: &str, data: &'static [u8]) -> Frame {
        let (req, lens, payload) = strip_request(
            OpRequest::new(ObjectId::new(pool, name)).op(Op::WriteFull(Bytes::from_static(data))),
        );
        let r = Request::Op {
            epoch,
            tid: 0,
            req,
            lens,
        };
        Frame::new(K_REQUEST, 1, &r, payload).expect("frame")
    }
    /// The bytes of `f` on the wire followed by `trailer`.
    fn on_wire(f: &Frame, trailer: [u8; quarry_proto::SIG_LEN]) -> Vec<u8> {
        let mut b = f.header().expect("header").to_vec();
        b.extend_from_slice(&f.body);
        b.extend_from_slice(&f.data);
        b.extend_from_slice(&trailer);
        b
    }
    async fn answered(s: &mut TcpStream, rx: &mut FrameSigner, t: Duration, what: &str) {
        let f = tokio::time::timeout(t, read_frame_signed(s, Some(rx)))
            .await
            .unwrap_or_else(|_| panic!("{what}: the OSD must answer, not hang"))
            .unwrap_or_else(|e| panic!("{what}: a response signed by the OSD: {e}"));
        assert_eq!(f.kind, K_RESPONSE, "{what}");
        let r: Response = f.decode().expect("response");
        r.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let read = |name: &'static str| {
        let c = c.clone();
        async move {
            bounded(
                "read back",
                c.operate(
                    OpRequest::new(ObjectId::new(pool, name)).op(Op::Read { off: 0, len: 0 }),
                ),
            )
            .await
            .map(|r| r.outputs[0].clone())
        }
    };

    // (a) Valid crcs, wrong MAC (after a genuine signed frame is served).
    let (mut s, mut tx, mut rx) = osd_session(&osd, &ticket, t).await;
    let f = write_req(epoch, pool, "sig-genuine", b"genuine");
    let tr = tx.sign(&f.header().expect("header"));
    s.write_all(&on_wire(&f, tr)).await.expect("send");
    answered(&mut s, &mut rx, t, "a genuine signed write").await;
    let f = write_req(epoch, pool, "sig-forged", b"forged");
    let mut tr = tx.sign(&f.header().expect("header"));
    tr[quarry_proto::SIG_LEN - 1] ^= 0x01;
    s.write_all(&on_wire(&f, tr)).await.expect("send");
    closes(&mut s, "a frame with a wrong MAC to the OSD").await;

    // (b) A replayed frame: a recorded write, resent after a later write.
    let (mut s, mut tx, mut rx) = osd_session(&osd, &ticket, t).await;
    let f = write_req(epoch, pool, "sig-replayed", b"first");
    let recorded = on_wire(&f, tx.sign(&f.header().expect("header")));
    s.write_all(&recorded).await.expect("send");
    answered(&mut s, &mut rx, t, "the write later replayed").await;
    bounded(
        "a later write",
        c.operate(
            OpRequest::new(ObjectId::new(pool, "sig-replayed"))
                .op(Op::WriteFull(Bytes::from_static(b"second"))),
        ),
    )
    .await
    .expect("later write");
    s.write_all(&recorded).await.expect("send");
    closes(&mut s, "a replayed frame to the OSD").await;

    // (c) A correctly signed frame skipping sequence number 1.
    let (mut s, tx, _rx) = osd_session(&osd, &ticket, t).await;
    let f = write_req(epoch, pool, "sig-skipped", b"skipped");
    let tr = tx.trailer_at(2, &f.header().expect("header"));
    s.write_all(&on_wire(&f, tr)).await.expect("send");
    closes(&mut s, "a frame with a skipped sequence number to the OSD").await;

    // (d) A client announcing cephx_sign_messages = false: the OSD (which
    // signs) falls back to crc-only frames, as Ceph does, and the proofs
    // bind the announcement (the proof for "both sign" does not verify).
    let mut s = TcpStream::connect(&osd).await.expect("connect");
    let cn = quarry_auth::random_nonce();
    let hello = Hello {
        ticket: ticket.blob.to_vec(),
        client_nonce: cn,
        sign: false,
    };
    let f = Frame::new(K_HELLO, 0, &hello, Bytes::new()).expect("frame");
    write_frame(&mut s, &f).await.expect("hello");
    let ch: Challenge = recv(&mut s, t, "unsigned hello")
        .await
        .decode()
        .expect("challenge");
    assert_eq!(
        ch.server_proof,
        quarry_auth::server_session_proof(&ticket.session_key, &cn, &ch.server_nonce, 2)
    );
    assert_ne!(
        ch.server_proof,
        quarry_auth::server_session_proof(&ticket.session_key, &cn, &ch.server_nonce, 3),
        "a stripped announcement must not verify"
    );
    let proof = AuthProof {
        client_proof: quarry_auth::session_proof(&ticket.session_key, &cn, &ch.server_nonce, 2),
    };
    let f = Frame::new(K_AUTH, 0, &proof, Bytes::new()).expect("frame");
    write_frame(&mut s, &f).await.expect("proof");
    let r: AuthResult = recv(&mut s, t, "unsigned proof")
        .await
        .decode()
        .expect("result");
    r.expect("an unsigned client is accepted by default");
    let f = write_req(epoch, pool, "sig-unsigned", b"unsigned");
    write_frame(&mut s, &f).await.expect("send");
    let f = recv(&mut s, t, "an unsigned write").await;
    assert_eq!(f.kind, K_RESPONSE);
    let r: Response = f.decode().expect("response");
    r.expect("unsigned write");
    assert_eq!(
        read("sig-unsigned").await.expect("unsigned"),
        OpOutput::Data(Bytes::from_static(b"unsigned"))
    );

    // None of them was acted on; the genuine one was.
    assert_eq!(
        read("sig-genuine").await.expect("genuine"),
        OpOutput::Data(Bytes::from_static(b"genuine"))
    );
    assert_eq!(
        read("sig-replayed").await.expect("replayed"),
        OpOutput::Data(Bytes::from_static(b"second")),
        "a replayed write reverted a later one"
    );
    for name in ["sig-forged", "sig-skipped"] {
        let e = read(name).await.expect_err(name);
        assert_eq!(e.errno, quarry_common::Errno::ENOENT, "{name}: {e}");
    }
    still_serving(&c, pool, 300).await;

    // The monitor: the same three cases on a real client.admin session.
    use quarry_monc::wire::{Request as MonReq, Response as MonResp, KIND_REQUEST};
    let mon = cl.mon_addrs()[0].clone();
    let secret = cl.admin_secret();
    async fn mon_session(
        addr: &str,
        secret: &quarry_auth::Secret,
        t: Duration,
    ) -> (TcpStream, FrameSigner, FrameSigner) {
        use quarry_auth::handshake;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let cn = handshake::random_nonce();
        let hello = MonReq::Hello {
            entity: "client.admin".into(),
            client_nonce: cn,
            sign: true,
        };
        let f = Frame::new(KIND_REQUEST, 1, &hello, Bytes::new()).expect("frame");
        write_frame(&mut s, &f).await.expect("hello");
        let f = recv(&mut s, t, "mon hello").await;
        let (sn, sp) = match quarry_monc::decode_response(&f) {
            Ok(MonResp::Challenge {
                server_nonce,
                server_proof,
                sign,
            }) => {
                assert!(sign, "the monitor signs by default");
                (server_nonce, server_proof)
            }
            other => panic!("expected a challenge: {other:?}"),
        };
        assert_eq!(
            sp,
            handshake::server_proof(secret, "client.admin", &cn, &sn, 3)
        );
        let prove = MonReq::Prove {
            proof: handshake::client_proof(secret, "client.admin", &cn, &sn, 3),
        };
        let f = Frame::new(KIND_REQUEST, 2, &prove, Bytes::new()).expect("frame");
        write_frame(&mut s, &f).await.expect("prove");
        let f = recv(&mut s, t, "mon prove").await;
        assert!(
            matches!(quarry_monc::decode_response(&f), Ok(MonResp::AuthOk { .. })),
            "a genuine handshake succeeds"
        );
        let key = handshake::frame_key(secret, "client.admin", &cn, &sn);
        let (tx, rx) = FrameSigner::pair(&key, Role::Connector);
        (s, tx, rx)
    }
    let get_map = Frame::new(KIND_REQUEST, 5, &MonReq::GetMap, Bytes::new()).expect("frame");
    let h = get_map.header().expect("header");
    async fn map_answered(s: &mut TcpStream, rx: &mut FrameSigner, t: Duration) {
        let f = tokio::time::timeout(t, read_frame_signed(s, Some(rx)))
            .await
            .expect("the monitor must answer, not hang")
            .expect("a response signed by the monitor");
        assert!(matches!(
            quarry_monc::decode_response(&f),
            Ok(MonResp::Map(_))
        ));
    }
    // (a) wrong MAC
    let (mut s, mut tx, mut rx) = mon_session(&mon, &secret, t).await;
    s.write_all(&on_wire(&get_map, tx.sign(&h)))
        .await
        .expect("send");
    map_answered(&mut s, &mut rx, t).await;
    let mut tr = tx.sign(&h);
    tr[10] ^= 0x40;
    s.write_all(&on_wire(&get_map, tr)).await.expect("send");
    closes(&mut s, "a frame with a wrong MAC to the monitor").await;
    // (b) replayed
    let (mut s, mut tx, mut rx) = mon_session(&mon, &secret, t).await;
    let recorded = on_wire(&get_map, tx.sign(&h));
    s.write_all(&recorded).await.expect("send");
    map_answered(&mut s, &mut rx, t).await;
    s.write_all(&recorded).await.expect("send");
    closes(&mut s, "a replayed frame to the monitor").await;
    // (c) skipped
    let (mut s, tx, _rx) = mon_session(&mon, &secret, t).await;
    s.write_all(&on_wire(&get_map, tx.trailer_at(2, &h)))
        .await
        .expect("send");
    closes(
        &mut s,
        "a frame with a skipped sequence number to the monitor",
    )
    .await;

    still_serving(&c, pool, 301).await;
}

/// Run `quarry rbd -c CONF ARGS` as a separate client process; killed and
/// failed if it takes longer than [`BOUND`]. Returns (success, stdout, stderr).
fn rbd_cli(conf: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    tool_cli("rbd", conf, args)
}

/// Run `quarry TOOL -c CONF ARGS` (`rbd`, `ceph`) as [`rbd_cli`] does.
fn tool_cli(tool: &str, conf: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let child = std::process::Command::new(BIN)
        .arg(tool)
        .arg("-c")
        .arg(conf)
        .args(args)
        .env_remove("CEPH_CONF")
        .env_remove("CEPH_ARGS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rbd");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(BOUND) else {
        // SAFETY: signal to the client process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{tool} {args:?} hung (killed after {BOUND:?})");
    };
    let out = out.expect("rbd output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rbd_ok(conf: &std::path::Path, args: &[&str]) -> String {
    let (ok, out, err) = rbd_cli(conf, args);
    assert!(ok, "rbd {args:?} failed: {out}{err}");
    out
}

/// The stderr of an `rbd` command that must fail.
fn rbd_refused(conf: &std::path::Path, args: &[&str]) -> String {
    let (ok, out, err) = rbd_cli(conf, args);
    assert!(!ok, "rbd {args:?} must be refused: {out}{err}");
    err
}

/// A client configuration for a cluster's admin with `extra` options.
fn client_conf(cl: &Cluster, tag: &str, extra: &str) -> std::path::PathBuf {
    let p = cl.path().join(format!("client-{tag}.conf"));
    std::fs::write(
        &p,
        format!(
            "[global]\n\tmon_host = {}\n\tkeyring = {}\n{extra}",
            cl.mon_addrs().join(","),
            cl.path().join("ceph.client.admin.keyring").display()
        ),
    )
    .expect("client conf");
    p
}

/// A raw handshake with an OSD announcing `cephx_sign_messages = false`:
/// `Ok` when the OSD goes on (its challenge), `Err` with its refusal.
async fn unsigned_hello(
    osd: &str,
    ticket: &quarry_auth::Ticket,
) -> Result<(), quarry_client::wire::WireError> {
    use quarry_client::wire::{AuthResult, Hello, K_AUTH_RESULT, K_CHALLENGE, K_HELLO};
    use quarry_proto::{read_frame, write_frame, Frame};
    let mut s = TcpStream::connect(osd).await.expect("connect");
    let hello = Hello {
        ticket: ticket.blob.to_vec(),
        client_nonce: quarry_auth::random_nonce(),
        sign: false,
    };
    let f = Frame::new(K_HELLO, 0, &hello, Bytes::new()).expect("frame");
    write_frame(&mut s, &f).await.expect("hello");
    let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut s))
        .await
        .expect("the OSD must answer, not hang")
        .expect("frame");
    match f.kind {
        K_CHALLENGE => Ok(()),
        K_AUTH_RESULT => {
            let r: AuthResult = f.decode().expect("auth result");
            let e = r.expect_err("a result before the challenge is a refusal");
            closes(&mut s, "an unsigned hello refused").await;
            Err(e)
        }
        k => panic!("unexpected frame kind {k}"),
    }
}

/// A monitor session as a daemon (its key from the daemon keyring).
async fn daemon_monc(cl: &Cluster, entity: &str) -> std::sync::Arc<quarry_monc::MonClient> {
    bounded(
        &format!("{entity} at the monitor"),
        quarry_monc::MonClient::connect(quarry_monc::MonClientConfig {
            mon_addrs: cl.mon_addrs(),
            entity: entity.into(),
            secret: daemon_secret(cl, entity),
            timeout: Duration::from_secs(30),
            ping: Default::default(),
        }),
    )
    .await
    .expect("a daemon's monitor session")
}

/// A daemon's key from the cluster's daemon keyring.
fn daemon_secret(cl: &Cluster, entity: &str) -> quarry_auth::Secret {
    let kr = std::fs::read_to_string(cl.path().join("keyring")).expect("keyring");
    let section = format!("[{entity}]");
    let key = kr
        .lines()
        .skip_while(|l| l.trim() != section)
        .find_map(|l| l.trim().strip_prefix("key = "))
        .expect("key line");
    quarry_auth::Secret::from_base64(key.trim()).expect("key")
}

/// The daemons read `cephx_require_signatures`, `cephx_service_require_signatures`
/// and `cephx_cluster_require_signatures` from ceph.conf, with Ceph's
/// meaning (all connections / client-daemon / daemon-daemon). A peer that
/// does not sign (`cephx_sign_messages = false`) where signing is required
/// is refused at once with EACCES and a message naming the option (by the
/// monitor, by an OSD, and a real `rbd` client process reports it and
/// exits); a signing client works; a requirement does not reach the
/// connections it does not cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_require_signatures_from_ceph_conf() {
    // (1) cephx_require_signatures in [global]: the monitor refuses an
    // unsigned client; so does the OSD (raw handshake with a real ticket).
    let cl = Cluster::up_with(1, 1, &["cephx_require_signatures=true"]);
    let signed = client_conf(&cl, "signed", "");
    let unsigned = client_conf(&cl, "unsigned", "\tcephx_sign_messages = false\n");
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    let src = cl.path().join("img.in");
    let dst = cl.path().join("img.out");
    std::fs::write(&src, &data).expect("image file");
    rbd_ok(
        &signed,
        &["import", src.to_str().expect("utf-8"), "rbd/signed"],
    );
    rbd_ok(
        &signed,
        &["export", "rbd/signed", dst.to_str().expect("utf-8")],
    );
    assert!(
        std::fs::read(&dst).expect("export") == data,
        "a signing client's image reads back"
    );
    let err = rbd_refused(&unsigned, &["ls"]);
    assert!(
        err.contains("mon.a") && err.contains("cephx_require_signatures"),
        "the monitor's refusal must name itself and the option: {err}"
    );
    assert!(
        err.contains("authentication error") || err.contains("Permission denied"),
        "{err}"
    );
    let c = cl.client().await;
    let osd = c.monc().refresh_map().await.expect("map").osds[&0]
        .addr
        .clone();
    let ticket = c.monc().ticket().await.expect("ticket");
    let e = unsigned_hello(&osd, &ticket)
        .await
        .expect_err("an unsigned client to an OSD requiring signatures");
    assert_eq!(e.errno, libc::EACCES, "{}", e.msg);
    assert!(
        e.msg.contains("osd.0") && e.msg.contains("cephx_require_signatures"),
        "{}",
        e.msg
    );
    still_serving(&c, c.pool_lookup("rbd").await.expect("pool"), 400).await;
    drop(c);
    drop(cl);

    // (2) cephx_service_require_signatures on the OSD only: the monitor
    // lets the unsigned client in, the OSD refuses it, and the client
    // process fails with the OSD's reason instead of retrying.
    let cl = Cluster::up(1, 1);
    cl.term("osd.0");
    cl.append_conf("\n[osd.0]\n\tcephx_service_require_signatures = true\n");
    cl.run_up(None);
    let signed = client_conf(&cl, "signed", "");
    let unsigned = client_conf(&cl, "unsigned", "\tcephx_sign_messages = false\n");
    rbd_ok(&signed, &["create", "--size", "4M", "rbd/signed"]);
    assert!(rbd_ok(&signed, &["ls"]).contains("signed"));
    // The monitor lets it in (it gets a ticket), the OSD refuses it: `rbd`
    // reports EACCES as Ceph's does, followed by the OSD's reason (sent in
    // its handshake reply); the OSD logs it too.
    for args in [&["ls"][..], &["create", "--size", "4M", "rbd/unsigned"]] {
        let err = rbd_refused(&unsigned, args);
        assert!(
            err.contains("(13) Permission denied"),
            "rbd {args:?}: {err}"
        );
        assert!(
            err.contains(
                "osd.0: signed frames are required (cephx_service_require_signatures = true)"
            ),
            "rbd {args:?} must print the OSD's reason: {err}"
        );
    }
    let log = std::fs::read_to_string(cl.path().join("log").join("osd.0.log")).expect("log");
    assert!(
        log.contains("osd.0: signed frames are required (cephx_service_require_signatures = true)"),
        "the OSD must log why it refused the client"
    );
    // A daemon's connection is not a service connection.
    let osd_monc = daemon_monc(&cl, "osd.0").await;
    let c = cl.client().await;
    let osd = c.monc().refresh_map().await.expect("map").osds[&0]
        .addr
        .clone();
    unsigned_hello(&osd, &osd_monc.ticket().await.expect("ticket"))
        .await
        .expect("an unsigned daemon is not refused for a service requirement");
    drop((c, osd_monc));
    drop(cl);

    // (3) cephx_cluster_require_signatures in [global]: clients need not
    // sign, daemons must: an OSD that does not sign is refused by the
    // monitor (it exits, saying why) and by the other OSD.
    let cl = Cluster::up_with(2, 1, &["cephx_cluster_require_signatures=true"]);
    let unsigned = client_conf(&cl, "unsigned", "\tcephx_sign_messages = false\n");
    rbd_ok(&unsigned, &["create", "--size", "4M", "rbd/unsigned"]);
    assert!(rbd_ok(&unsigned, &["ls"]).contains("unsigned"));
    let osd1 = daemon_monc(&cl, "osd.1").await;
    let c = cl.client().await;
    let osd0 = c.monc().refresh_map().await.expect("map").osds[&0]
        .addr
        .clone();
    let e = unsigned_hello(&osd0, &osd1.ticket().await.expect("ticket"))
        .await
        .expect_err("an unsigned peer OSD");
    assert_eq!(e.errno, libc::EACCES, "{}", e.msg);
    assert!(
        e.msg.contains("cephx_cluster_require_signatures"),
        "{}",
        e.msg
    );
    unsigned_hello(&osd0, &c.monc().ticket().await.expect("ticket"))
        .await
        .expect("an unsigned client is not refused for a cluster requirement");
    drop((c, osd1));
    cl.term("osd.1");
    cl.append_conf("\n[osd.1]\n\tcephx_sign_messages = false\n");
    cl.start_osd(1);
    wait_exit(
        cl.pid("osd.1"),
        "an OSD refused by the monitor must exit, not hang",
    );
    let log = std::fs::read_to_string(cl.path().join("log").join("osd.1.log")).expect("log");
    assert!(
        log.contains("cephx_cluster_require_signatures"),
        "osd.1 must say why it was refused: {}",
        &log[log.len().saturating_sub(2000)..]
    );
}

/// OSDs read the monitors' config database at start, as Ceph's daemons do,
/// under their conf file: after `ceph config set osd
/// cephx_service_require_signatures true` a restarted OSD refuses an
/// unsigned client; `[osd]` in the conf file wins over the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osds_apply_the_config_database_at_start() {
    let cl = Cluster::up(1, 1);
    let signed = client_conf(&cl, "signed", "");
    let unsigned = client_conf(&cl, "unsigned", "\tcephx_sign_messages = false\n");
    rbd_ok(&unsigned, &["create", "--size", "4M", "rbd/before"]);
    let set = [
        "config",
        "set",
        "osd",
        "cephx_service_require_signatures",
        "true",
    ];
    let (ok, out, err) = tool_cli("ceph", &signed, &set);
    assert!(ok, "ceph {set:?}: {out}{err}");
    cl.term("osd.0");
    cl.run_up(None);
    let err = rbd_refused(&unsigned, &["ls"]);
    assert!(
        err.contains("osd.0: signed frames are required (cephx_service_require_signatures = true)"),
        "the restarted OSD must apply the database's value: {err}"
    );
    assert!(rbd_ok(&signed, &["ls"]).contains("before"));

    cl.term("osd.0");
    cl.append_conf("\n[osd]\n\tcephx_service_require_signatures = false\n");
    cl.run_up(None);
    assert!(
        rbd_ok(&unsigned, &["ls"]).contains("before"),
        "the conf file's value wins over the database's"
    );
}
