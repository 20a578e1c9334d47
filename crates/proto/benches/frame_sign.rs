//! Cost per frame of signing and verifying (`cargo bench -p quarry-proto
//! --bench frame_sign`): the signature (HMAC-SHA256 over direction,
//! sequence and the 32 header bytes, which hold the crcs) beside the crc32c
//! the frame pays anyway, for a 4 KiB write's payload and an empty reply.
//! Prints ns per frame; no assertions (a benchmark, not a test).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use quarry_proto::{Frame, FrameSigner, Role, HEADER_LEN, SIG_LEN};

fn per_iter(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n = 200_000;
    let key = [0x5au8; 32];
    for (what, data) in [
        ("4 KiB payload", Bytes::from(vec![0xa5u8; 4096])),
        ("empty payload", Bytes::new()),
    ] {
        let f = Frame::new(3, 7, &(1u64, "object name".to_string()), data).expect("frame");
        let hdr = f.header().expect("header");
        let header_ns = per_iter(n, || {
            black_box(black_box(&f).header().expect("header"));
        });
        let (mut tx, _) = FrameSigner::pair(&key, Role::Connector);
        let sign_ns = per_iter(n, || {
            black_box(tx.sign(black_box(&hdr)));
        });
        let (mut tx, _) = FrameSigner::pair(&key, Role::Connector);
        let trailers: Vec<[u8; SIG_LEN]> = (0..n + n / 10).map(|_| tx.sign(&hdr)).collect();
        let mut rx = FrameSigner::new(&key, Role::Connector);
        let mut i = 0;
        let verify_ns = per_iter(n, || {
            rx.verify(black_box(&hdr), 7, &trailers[i]).expect("verify");
            i += 1;
        });
        println!(
            "{what:>14}: header+crc32c {header_ns:7.1} ns/frame, sign {sign_ns:6.1} ns/frame, verify {verify_ns:6.1} ns/frame (trailer {SIG_LEN} bytes, header {HEADER_LEN})"
        );
    }
}
