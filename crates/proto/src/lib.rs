//! Wire framing shared by every Quarry connection (client↔mon, client↔OSD,
//! OSD↔OSD, mon↔mon).
//!
//! A frame is a fixed 36-byte header, a control body (a serde value encoded
//! with postcard) and a raw data payload (object bytes, never re-serialized):
//!
//! ```text
//! 0      4    5     6       8            16         20         24        28        32         36
//! | magic | ver | kind | flags | request_id | body_len | data_len | body_crc | data_crc | hdr_crc |
//! ```
//! All integers little-endian; crcs are crc32c; `hdr_crc` covers bytes 0..32.
//! Lengths are bounded ([`MAX_BODY_LEN`], [`MAX_DATA_LEN`]) so a corrupt or
//! hostile peer cannot make us allocate without limit.
//!
//! Architecture invariant: this crate knows framing only. Message enums
//! live with the protocol that owns them; they reach this crate as `kind`
//! (a u8 the protocol defines) and a serializable body.

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use quarry_common::Errno;

pub mod bufpool;
pub mod sign;
pub mod stream;
pub use sign::{is_daemon_entity, FrameSigner, Role, SignPolicy, SIG_LEN};

/// Frame magic: "QRY1" little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"QRY1");
/// Wire format version (2: frames after the handshake carry a signature
/// trailer, see [`sign`]).
pub const VERSION: u8 = 2;
/// Frame kind reserved in every protocol: a daemon's answer to a frame of
/// another wire version, in its own version, before it closes the
/// connection. A peer of another version fails to parse it with
/// [`FrameError::BadVersion`] naming this side's version (magic, the
/// version byte's offset and the header crc are the same in every
/// version); one of this version reads the message in the body.
pub const K_VERSION_MISMATCH: u8 = 0xFF;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 36;
/// Largest control body accepted (16 MiB).
pub const MAX_BODY_LEN: u32 = 16 << 20;
/// Largest data payload accepted (64 MiB: larger than any object write).
pub const MAX_DATA_LEN: u32 = 64 << 20;

/// A frame as read from or written to the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message kind, defined by the protocol using the connection.
    pub kind: u8,
    /// Protocol-defined flags.
    pub flags: u16,
    /// Matches replies to requests; many requests may be in flight.
    pub request_id: u64,
    /// Encoded control body.
    pub body: Bytes,
    /// Raw data payload (may be empty).
    pub data: Bytes,
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// Socket error.
    #[error("i/o error on connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not a Quarry frame (wrong magic), e.g. a foreign client on our port.
    #[error("bad frame magic {0:#010x}: peer does not speak the quarry protocol")]
    BadMagic(u32),
    /// The peer speaks another wire version (built from another release):
    /// retrying cannot help, so callers fail at once (`EOPNOTSUPP`).
    #[error("wire version mismatch: the peer speaks quarry wire version {0}, this build speaks version {VERSION} (upgrade both sides to one release)")]
    BadVersion(u8),
    /// The header checksum does not match: corruption in flight.
    #[error("frame header checksum mismatch")]
    HeaderCrc,
    /// The body checksum does not match.
    #[error("frame body checksum mismatch (request {0})")]
    BodyCrc(u64),
    /// The data checksum does not match.
    #[error("frame data checksum mismatch (request {0})")]
    DataCrc(u64),
    /// A length exceeds the protocol's bound.
    #[error("frame {what} length {len} exceeds limit {max}")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Announced length.
        len: u32,
        /// The bound.
        max: u32,
    },
    /// The body could not be encoded or decoded.
    #[error("frame body {0}")]
    Codec(String),
    /// The frame's MAC does not verify: forged or altered on the path.
    #[error("frame signature mismatch (request {request_id}, sequence {seq}): forged or altered in flight")]
    BadSignature {
        /// Request id the header claims.
        request_id: u64,
        /// Sequence number the trailer claims.
        seq: u64,
    },
    /// A correctly signed frame out of sequence: replayed, dropped or
    /// reordered on the path.
    #[error("frame sequence {got} where {want} is due: replayed, dropped or reordered in flight")]
    Sequence {
        /// Sequence number received.
        got: u64,
        /// Sequence number expected.
        want: u64,
    },
}

impl FrameError {
    /// The errno a client call fails with when its connection hits this.
    pub fn errno(&self) -> Errno {
        match self {
            FrameError::Closed | FrameError::Io(_) => Errno::ENOTCONN,
            FrameError::TooLarge { .. } => Errno::E2BIG,
            FrameError::BadVersion(_) => Errno::EOPNOTSUPP,
            FrameError::BadSignature { .. } | FrameError::Sequence { .. } => Errno::EACCES,
            _ => Errno::EIO,
        }
    }
}

impl Frame {
    /// Build a frame with a serialized control body and a data payload.
    pub fn new<T: Serialize>(
        kind: u8,
        request_id: u64,
        body: &T,
        data: Bytes,
    ) -> Result<Frame, FrameError> {
        Ok(Frame {
            kind,
            flags: 0,
            request_id,
            body: encode_body(body)?,
            data,
        })
    }

    /// Decode the control body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        decode_body(&self.body)
    }

    /// Encode the fixed header for this frame.
    pub fn header(&self) -> Result<[u8; HEADER_LEN], FrameError> {
        let body_len = bounded_len("body", self.body.len(), MAX_BODY_LEN)?;
        let data_len = bounded_len("data", self.data.len(), MAX_DATA_LEN)?;
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4] = VERSION;
        h[5] = self.kind;
        h[6..8].copy_from_slice(&self.flags.to_le_bytes());
        h[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        h[16..20].copy_from_slice(&body_len.to_le_bytes());
        h[20..24].copy_from_slice(&data_len.to_le_bytes());
        h[24..28].copy_from_slice(&crc32c::crc32c(&self.body).to_le_bytes());
        let data_crc = bufpool::known_crc(&self.data).unwrap_or_else(|| crc32c::crc32c(&self.data));
        h[28..32].copy_from_slice(&data_crc.to_le_bytes());
        let hcrc = crc32c::crc32c(&h[0..32]);
        h[32..36].copy_from_slice(&hcrc.to_le_bytes());
        Ok(h)
    }
}

/// The frame answering a frame of wire version `theirs` (see
/// [`K_VERSION_MISMATCH`]); its body is the message (a string).
pub fn version_mismatch_frame(theirs: u8) -> Frame {
    let msg = format!(
        "wire version mismatch: this daemon speaks quarry wire version {VERSION}, the client sent version {theirs}"
    );
    Frame {
        kind: K_VERSION_MISMATCH,
        flags: 0,
        request_id: 0,
        body: encode_body(&msg).unwrap_or_default(),
        data: Bytes::new(),
    }
}

fn bounded_len(what: &'static str, len: usize, max: u32) -> Result<u32, FrameError> {
    match u32::try_from(len) {
        Ok(l) if l <= max => Ok(l),
        _ => Err(FrameError::TooLarge {
            what,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            max,
        }),
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// A parsed, checksum-verified header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: u8,
    /// Flags.
    pub flags: u16,
    /// Request id.
    pub request_id: u64,
    /// Body length.
    pub body_len: u32,
    /// Data length.
    pub data_len: u32,
    /// Expected body crc32c.
    pub body_crc: u32,
    /// Expected data crc32c.
    pub data_crc: u32,
}

/// Parse and verify a fixed header (magic, version, crc, bounds).
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let magic = le_u32(&h[0..4]);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if crc32c::crc32c(&h[0..32]) != le_u32(&h[32..36]) {
        return Err(FrameError::HeaderCrc);
    }
    if h[4] != VERSION {
        return Err(FrameError::BadVersion(h[4]));
    }
    let mut rid = [0u8; 8];
    rid.copy_from_slice(&h[8..16]);
    let hdr = Header {
        kind: h[5],
        flags: u16::from_le_bytes([h[6], h[7]]),
        request_id: u64::from_le_bytes(rid),
        body_len: le_u32(&h[16..20]),
        data_len: le_u32(&h[20..24]),
        body_crc: le_u32(&h[24..28]),
        data_crc: le_u32(&h[28..32]),
    };
    if hdr.body_len > MAX_BODY_LEN {
        return Err(FrameError::TooLarge {
            what: "body",
            len: hdr.body_len,
            max: MAX_BODY_LEN,
        });
    }
    if hdr.data_len > MAX_DATA_LEN {
        return Err(FrameError::TooLarge {
            what: "data",
            len: hdr.data_len,
            max: MAX_DATA_LEN,
        });
    }
    Ok(hdr)
}

/// Read one unsigned frame (handshake frames). A clean EOF before the
/// first header byte is `Closed`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    read_frame_signed(r, None).await
}

/// Read one frame; with a signer, its signature trailer is read and checked
/// (MAC, then sequence) before the frame is returned to be acted on.
pub async fn read_frame_signed<R: AsyncRead + Unpin>(
    r: &mut R,
    sig: Option<&mut FrameSigner>,
) -> Result<Frame, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        got += n;
    }
    let hdr = parse_header(&h)?;
    let body = read_exact_bytes(r, hdr.body_len as usize).await?;
    if crc32c::crc32c(&body) != hdr.body_crc {
        return Err(FrameError::BodyCrc(hdr.request_id));
    }
    let data = read_exact_bytes(r, hdr.data_len as usize).await?;
    if bufpool::is_pooled(&data) {
        // One pass for both checksums: the frame's, derived from the
        // crc32c of each 4 KiB block, and the blocks' own, kept for the
        // local store's per-block checksums (see `blockcrc`).
        let (crc, blocks) = quarry_common::blockcrc::hash_blocks(&data);
        if crc != hdr.data_crc {
            return Err(FrameError::DataCrc(hdr.request_id));
        }
        bufpool::remember_crc(&data, crc);
        quarry_common::blockcrc::remember(&data, blocks);
    } else if crc32c::crc32c(&data) != hdr.data_crc {
        return Err(FrameError::DataCrc(hdr.request_id));
    }
    if let Some(sig) = sig {
        let mut t = [0u8; SIG_LEN];
        r.read_exact(&mut t).await?;
        sig.verify(&h, hdr.request_id, &t)?;
    }
    Ok(Frame {
        kind: hdr.kind,
        flags: hdr.flags,
        request_id: hdr.request_id,
        body,
        data,
    })
}

async fn read_exact_bytes<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Bytes, FrameError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if let Some(mut buf) = bufpool::PoolBuf::take(len) {
        r.read_exact(buf.bytes_mut()).await?;
        return Ok(buf.freeze());
    }
    let mut buf = BytesMut::zeroed(len);
    r.read_exact(&mut buf).await?;
    Ok(buf.freeze())
}

/// Write one unsigned frame (header, body, data; handshake frames)
/// without copying the data payload.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), FrameError> {
    write_frame_signed(w, f, None).await
}

/// Write one frame, followed by its signature trailer when `sig` is given.
pub async fn write_frame_signed<W: AsyncWrite + Unpin>(
    w: &mut W,
    f: &Frame,
    sig: Option<&mut FrameSigner>,
) -> Result<(), FrameError> {
    let h = f.header()?;
    w.write_all(&h).await?;
    if !f.body.is_empty() {
        w.write_all(&f.body).await?;
    }
    if !f.data.is_empty() {
        w.write_all(&f.data).await?;
    }
    if let Some(sig) = sig {
        w.write_all(&sig.sign(&h)).await?;
    }
    Ok(())
}

/// Encode a control body with postcard.
pub fn encode_body<T: Serialize>(v: &T) -> Result<Bytes, FrameError> {
    postcard::to_stdvec(v)
        .map(Bytes::from)
        .map_err(|e| FrameError::Codec(format!("encode: {e}")))
}

/// Decode a control body with postcard; trailing bytes are refused.
pub fn decode_body<T: DeserializeOwned>(b: &[u8]) -> Result<T, FrameError> {
    let (v, rest) =
        postcard::take_from_bytes(b).map_err(|e| FrameError::Codec(format!("decode: {e}")))?;
    if !rest.is_empty() {
        return Err(FrameError::Codec(format!(
            "decode: {} trailing bytes",
            rest.len()
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame::new(
            7,
            42,
            &("hello".to_string(), 5u64),
            Bytes::from_static(b"data bytes"),
        )
        .expect("encode")
    }

    #[tokio::test]
    async fn roundtrip() {
        let f = sample();
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).await.expect("write");
        assert_eq!(buf.len(), HEADER_LEN + f.body.len() + f.data.len());
        let g = read_frame(&mut &buf[..]).await.expect("read");
        assert_eq!(f, g);
        let body: (String, u64) = g.decode().expect("decode");
        assert_eq!(body, ("hello".to_string(), 5));
    }

    #[tokio::test]
    async fn clean_eof_is_closed() {
        let empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut &empty[..]).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn truncated_frame_is_io_error() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &sample()).await.expect("write");
        buf.truncate(buf.len() - 3);
        assert!(matches!(
            read_frame(&mut &buf[..]).await,
            Err(FrameError::Io(_))
        ));
        buf.truncate(10);
        assert!(matches!(
            read_frame(&mut &buf[..]).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test]
    async fn every_corruption_is_detected() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &sample()).await.expect("write");
        for i in 0..buf.len() {
            let mut c = buf.clone();
            c[i] ^= 0x10;
            let r = read_frame(&mut &c[..]).await;
            assert!(r.is_err(), "flip at byte {i} went undetected");
        }
        let mut c = buf.clone();
        c[0] ^= 1;
        assert!(matches!(
            read_frame(&mut &c[..]).await,
            Err(FrameError::BadMagic(_))
        ));
        let mut c = buf.clone();
        c[HEADER_LEN] ^= 1;
        assert!(matches!(
            read_frame(&mut &c[..]).await,
            Err(FrameError::BodyCrc(42))
        ));
        let n = c.len();
        let mut c = buf.clone();
        c[n - 1] ^= 1;
        assert!(matches!(
            read_frame(&mut &c[..]).await,
            Err(FrameError::DataCrc(42))
        ));
    }

    #[tokio::test]
    async fn oversized_lengths_are_refused_before_allocating() {
        let f = sample();
        let mut h = f.header().expect("header");
        h[20..24].copy_from_slice(&(MAX_DATA_LEN + 1).to_le_bytes());
        let crc = crc32c::crc32c(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &h[..]).await,
            Err(FrameError::TooLarge { what: "data", .. })
        ));
    }

    #[tokio::test]
    async fn other_wire_versions_are_named_and_fail_with_eopnotsupp() {
        // A frame of another version is refused with both versions named.
        let mut h = sample().header().expect("header");
        h[4] = VERSION + 1;
        let crc = crc32c::crc32c(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        let e = read_frame(&mut &h[..]).await.unwrap_err();
        assert!(matches!(e, FrameError::BadVersion(v) if v == VERSION + 1));
        assert_eq!(e.errno(), Errno::EOPNOTSUPP);
        let msg = e.to_string();
        assert!(msg.contains(&format!("version {}", VERSION + 1)), "{msg}");
        assert!(msg.contains(&format!("version {VERSION}")), "{msg}");
        // The daemon's answer parses in this version and says the same.
        let f = version_mismatch_frame(VERSION + 1);
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).await.expect("write");
        let back = read_frame(&mut &buf[..]).await.expect("read");
        assert_eq!(back.kind, K_VERSION_MISMATCH);
        let msg: String = back.decode().expect("message");
        assert!(msg.contains(&format!("version {}", VERSION + 1)), "{msg}");
    }

    #[tokio::test]
    async fn signed_stream_roundtrip_and_attacks() {
        let key = [3u8; 32];
        let (mut ctx, _) = FrameSigner::pair(&key, Role::Connector);
        let (_, mut srx) = FrameSigner::pair(&key, Role::Acceptor);
        let mut frames = Vec::new();
        for i in 0..3u64 {
            let mut f = sample();
            f.request_id = i;
            let mut b = Vec::new();
            write_frame_signed(&mut b, &f, Some(&mut ctx))
                .await
                .expect("write");
            assert_eq!(b.len(), HEADER_LEN + f.body.len() + f.data.len() + SIG_LEN);
            frames.push(b);
        }
        // In order: accepted.
        let mut rx = srx.clone();
        for (i, b) in frames[..2].iter().enumerate() {
            let g = read_frame_signed(&mut &b[..], Some(&mut rx))
                .await
                .expect("signed frame");
            assert_eq!(g.request_id, i as u64);
        }
        // Replayed: frame 1 again.
        assert!(matches!(
            read_frame_signed(&mut &frames[1][..], Some(&mut rx.clone())).await,
            Err(FrameError::Sequence { got: 2, want: 3 })
        ));
        // Skipped: frame 3 where frame 2 is due.
        assert!(matches!(
            read_frame_signed(&mut &frames[2][..], Some(&mut srx.clone())).await,
            Err(FrameError::Sequence { got: 3, want: 1 })
        ));
        // A frame whose crcs were recomputed after changing the payload
        // passes the crc checks but not the MAC.
        let mut evil = sample();
        evil.data = Bytes::from_static(b"DATA BYTES");
        let mut h = evil.header().expect("header").to_vec();
        h.extend_from_slice(&evil.body);
        h.extend_from_slice(&evil.data);
        h.extend_from_slice(&frames[0][frames[0].len() - SIG_LEN..]);
        let e = read_frame_signed(&mut &h[..], Some(&mut srx))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::BadSignature { seq: 1, .. }), "{e}");
        assert_eq!(e.errno(), Errno::EACCES);
        // An unsigned frame where a signed one is due: the trailer is
        // missing (here: end of stream), never accepted.
        let mut b = Vec::new();
        write_frame(&mut b, &sample()).await.expect("write");
        assert!(read_frame_signed(
            &mut &b[..],
            Some(&mut FrameSigner::new(&key, Role::Connector))
        )
        .await
        .is_err());
    }

    #[test]
    fn trailing_body_bytes_refused() {
        let mut b = encode_body(&1u32).expect("encode").to_vec();
        b.push(0);
        assert!(decode_body::<u32>(&b).is_err());
    }

    proptest! {
        #[test]
        fn parse_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&bytes);
            let _ = parse_header(&h);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_body::<(String, Vec<u64>, Option<bool>)>(&bytes);
        }
    }
}
