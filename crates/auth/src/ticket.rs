//! Service tickets: what a client shows an OSD instead of its secret.
//!
//! Blob layout (all integers little-endian):
//! ```text
//! | ver=1 (1) | ticket_nonce (16) | body_len u32 | body (postcard) | mac (32) |
//! ```
//! `mac = HMAC-SHA256(service_key, "quarry-ticket-v1" | bytes before mac)`.
//! The body holds the claims with the session key encrypted as
//! `session_key XOR HMAC-SHA256(service_key, "quarry-ticket-key" | nonce)`,
//! so a ticket seen on the wire does not reveal its session key: only the
//! ticket's owner (who received the key wrapped under its own secret) and
//! the OSDs (which hold the service key) know it. A client proves ownership
//! to an OSD with [`session_proof`] over both sides' nonces; the OSD answers
//! with [`server_session_proof`].

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::handshake::proofs_equal;
use crate::{AuthError, Caps, Nonce};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
/// Upper bound on a blob we are willing to parse.
const MAX_BLOB_LEN: usize = 64 << 10;
const HEADER_LEN: usize = 1 + 16 + 4;
const MAC_LEN: usize = 32;

/// What a verified ticket says about its bearer.
#[derive(Clone, PartialEq, Eq)]
pub struct Claims {
    /// Entity name (`client.admin`, `osd.3`).
    pub entity: String,
    /// The global id the monitor gave this session.
    pub global_id: u64,
    /// The entity's OSD caps.
    pub caps: Caps,
    /// Expiry, seconds since the epoch.
    pub expires_unix: u64,
    /// Key shared by the bearer and the verifier for this ticket.
    pub session_key: [u8; 32],
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("entity", &self.entity)
            .field("global_id", &self.global_id)
            .field("caps", &self.caps)
            .field("expires_unix", &self.expires_unix)
            .field("session_key", &"<redacted>")
            .finish()
    }
}

/// A ticket as its owner holds it: the opaque blob for OSDs, and the
/// session key to prove ownership.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Signed blob, sent to OSDs as is.
    pub blob: Bytes,
    /// Session key (decrypted by the owner with its secret).
    pub session_key: [u8; 32],
    /// Expiry, seconds since the epoch.
    pub expires_unix: u64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("blob_len", &self.blob.len())
            .field("session_key", &"<redacted>")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct WireClaims {
    entity: String,
    global_id: u64,
    caps: String,
    expires_unix: u64,
    enc_session_key: [u8; 32],
}

fn hmac_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut o = [0u8; 32];
    for i in 0..32 {
        o[i] = a[i] ^ b[i];
    }
    o
}

/// Sign a ticket for `claims` with the service key (monitor side).
pub fn issue_ticket(service_key: &[u8; 32], claims: &Claims, nonce: &Nonce) -> Ticket {
    let ks = hmac_parts(service_key, &[b"quarry-ticket-key", nonce]);
    let wire = WireClaims {
        entity: claims.entity.clone(),
        global_id: claims.global_id,
        caps: claims.caps.text().to_string(),
        expires_unix: claims.expires_unix,
        enc_session_key: xor32(&claims.session_key, &ks),
    };
    // Serializing plain strings and integers into a Vec cannot fail.
    let body = postcard::to_stdvec(&wire).expect("postcard encodes plain structs");
    let mut blob = Vec::with_capacity(HEADER_LEN + body.len() + MAC_LEN);
    blob.push(VERSION);
    blob.extend_from_slice(nonce);
    blob.extend_from_slice(&(body.len() as u32).to_le_bytes());
    blob.extend_from_slice(&body);
    let mac = hmac_parts(service_key, &[b"quarry-ticket-v1", &blob]);
    blob.extend_from_slice(&mac);
    Ticket {
        blob: Bytes::from(blob),
        session_key: claims.session_key,
        expires_unix: claims.expires_unix,
    }
}

/// Check a ticket's signature and expiry and return its claims (OSD side).
pub fn verify_ticket(
    service_key: &[u8; 32],
    blob: &[u8],
    now_unix: u64,
) -> Result<Claims, AuthError> {
    if blob.len() > MAX_BLOB_LEN {
        return Err(AuthError::TicketMalformed(format!(
            "{} bytes is too long",
            blob.len()
        )));
    }
    if blob.len() < HEADER_LEN + MAC_LEN {
        return Err(AuthError::TicketMalformed(format!(
            "{} bytes is too short",
            blob.len()
        )));
    }
    let (signed, mac) = blob.split_at(blob.len() - MAC_LEN);
    let want = hmac_parts(service_key, &[b"quarry-ticket-v1", signed]);
    let mut got = [0u8; 32];
    got.copy_from_slice(mac);
    // Signature first: nothing unauthenticated is interpreted further.
    if !proofs_equal(&want, &got) {
        return Err(AuthError::TicketBadSignature);
    }
    if signed[0] != VERSION {
        return Err(AuthError::TicketMalformed(format!("version {}", signed[0])));
    }
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&signed[1..17]);
    let body_len = u32::from_le_bytes([signed[17], signed[18], signed[19], signed[20]]) as usize;
    let body = &signed[HEADER_LEN..];
    if body.len() != body_len {
        return Err(AuthError::TicketMalformed("body length mismatch".into()));
    }
    let wire: WireClaims =
        postcard::from_bytes(body).map_err(|e| AuthError::TicketMalformed(format!("body: {e}")))?;
    if now_unix >= wire.expires_unix {
        return Err(AuthError::TicketExpired {
            entity: wire.entity,
            expired_unix: wire.expires_unix,
            now_unix,
        });
    }
    let caps = Caps::parse(&wire.caps)?;
    let ks = hmac_parts(service_key, &[b"quarry-ticket-key", &nonce]);
    Ok(Claims {
        entity: wire.entity,
        global_id: wire.global_id,
        caps,
        expires_unix: wire.expires_unix,
        session_key: xor32(&wire.enc_session_key, &ks),
    })
}

/// The ticket owner's proof of holding the session key (client → OSD);
/// `mode` is the frame-signing mode both sides announced (see
/// [`crate::handshake`]), so neither announcement can be stripped.
pub fn session_proof(
    session_key: &[u8; 32],
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
    mode: u8,
) -> [u8; 32] {
    hmac_parts(
        session_key,
        &[
            b"quarry-session-v1",
            b"C",
            client_nonce,
            server_nonce,
            &[mode],
        ],
    )
}

/// The key that signs a ticket connection's frames after the handshake
/// (both ends hold the session key; the key itself never crosses the wire).
pub fn session_frame_key(
    session_key: &[u8; 32],
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
) -> [u8; 32] {
    hmac_parts(
        session_key,
        &[b"quarry-session-v1", b"F", client_nonce, server_nonce],
    )
}

/// The verifier's proof of holding the session key (OSD → client): it
/// differs from [`session_proof`] by its role byte, so neither can be
/// reflected back as the other.
pub fn server_session_proof(
    session_key: &[u8; 32],
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
    mode: u8,
) -> [u8; 32] {
    hmac_parts(
        session_key,
        &[
            b"quarry-session-v1",
            b"S",
            client_nonce,
            server_nonce,
            &[mode],
        ],
    )
}

/// Constant-time check of a session proof.
pub fn check_session_proof(expected: &[u8; 32], got: &[u8; 32]) -> bool {
    proofs_equal(expected, got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: u64) -> Claims {
        Claims {
            entity: "client.glance".into(),
            global_id: 4242,
            caps: Caps::parse("profile rbd pool=images").expect("caps"),
            expires_unix: expires,
            session_key: [9u8; 32],
        }
    }

    #[test]
    fn issue_and_verify() {
        let sk = [1u8; 32];
        let t = issue_ticket(&sk, &claims(1000), &[3u8; 16]);
        let c = verify_ticket(&sk, &t.blob, 999).expect("valid");
        assert_eq!(c, claims(1000));
        assert!(c.caps.allows("images", "", true));
        assert!(!c.caps.allows("other", "", false));
        // The session key does not appear in clear in the blob.
        assert!(!t.blob.windows(32).any(|w| w == [9u8; 32]));
    }

    #[test]
    fn tampered_wrong_key_expired_truncated() {
        let sk = [1u8; 32];
        let t = issue_ticket(&sk, &claims(1000), &[3u8; 16]);
        for i in 0..t.blob.len() {
            let mut b = t.blob.to_vec();
            b[i] ^= 0x01;
            assert!(verify_ticket(&sk, &b, 10).is_err(), "flip at {i} accepted");
        }
        assert_eq!(
            verify_ticket(&[2u8; 32], &t.blob, 10),
            Err(AuthError::TicketBadSignature)
        );
        assert!(matches!(
            verify_ticket(&sk, &t.blob, 1000),
            Err(AuthError::TicketExpired { .. })
        ));
        assert!(matches!(
            verify_ticket(&sk, &t.blob[..10], 10),
            Err(AuthError::TicketMalformed(_))
        ));
        assert!(matches!(
            verify_ticket(&sk, &[], 10),
            Err(AuthError::TicketMalformed(_))
        ));
        let e = verify_ticket(&sk, &t.blob, 1000).unwrap_err();
        assert_eq!(e.errno(), quarry_common::Errno::EACCES);
    }

    #[test]
    fn session_proofs_differ_by_role() {
        let k = [5u8; 32];
        let a = session_proof(&k, &[1; 16], &[2; 16], 3);
        let b = server_session_proof(&k, &[1; 16], &[2; 16], 3);
        assert_ne!(a, b);
        assert!(check_session_proof(
            &a,
            &session_proof(&k, &[1; 16], &[2; 16], 3)
        ));
        assert_ne!(a, session_proof(&[6u8; 32], &[1; 16], &[2; 16], 3));
        assert_ne!(a, session_proof(&k, &[1; 16], &[2; 16], 1));
        let f = session_frame_key(&k, &[1; 16], &[2; 16]);
        assert_ne!(f, a);
        assert_ne!(f, session_frame_key(&k, &[1; 16], &[3; 16]));
    }

    #[test]
    fn debug_redacts_session_key() {
        let sk = [1u8; 32];
        let t = issue_ticket(&sk, &claims(1000), &[3u8; 16]);
        assert!(format!("{t:?}").contains("redacted"));
        assert!(!format!("{:?}", claims(1)).contains("9, 9"));
    }
}
