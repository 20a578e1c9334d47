//! The mutual challenge-response between an entity and a monitor.
//!
//! ```text
//! client → mon   Hello     { entity, client_nonce }
//! mon    → client Challenge { server_nonce, server_proof }   (or refusal)
//! client → mon   Prove     { client_proof }                  (after checking server_proof)
//! mon    → client AuthOk    { global_id, ticket, wrap_session_key(...) }
//! ```
//! `server_proof = HMAC-SHA256(secret, DOMAIN | 'S' | entity | 0 | cn | sn | mode)`
//! and `client_proof` the same with role `'C'`: the role byte keeps one side
//! from reflecting the other's proof back. `mode` is the frame-signing mode
//! both sides announced (quarry-proto's `SignPolicy::mode_byte`): covered by
//! both proofs, an attacker cannot strip a side's announcement to downgrade
//! the connection to unsigned frames. The server nonce is fresh for
//! every connection, so a recorded client proof never verifies twice. The
//! session key of the ticket reaches the client XORed with the keystream
//! `HMAC-SHA256(secret, DOMAIN | 'K' | entity | 0 | cn | sn)`, which only a
//! holder of the secret can compute. Frames after the handshake are signed
//! with [`frame_key`] (role `'F'`), which never crosses the wire either.
//!
//! Message enums live with the protocol (quarry-monc); this module holds the
//! cryptography only.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::{Nonce, Secret};

type HmacSha256 = Hmac<Sha256>;

/// Domain-separation prefix: these MACs mean nothing in another protocol.
const DOMAIN: &[u8] = b"quarry-auth-v1";

fn mac(secret: &Secret, role: u8, entity: &str, cn: &Nonce, sn: &Nonce) -> [u8; 32] {
    mac_ext(secret, role, entity, cn, sn, &[])
}

fn mac_ext(
    secret: &Secret,
    role: u8,
    entity: &str,
    cn: &Nonce,
    sn: &Nonce,
    ext: &[u8],
) -> [u8; 32] {
    // new_from_slice only fails for fixed-size-key MACs; HMAC takes any size.
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(secret.bytes()).expect("hmac accepts any key length");
    m.update(DOMAIN);
    m.update(&[role]);
    m.update(entity.as_bytes());
    m.update(&[0]);
    m.update(cn);
    m.update(sn);
    m.update(ext);
    m.finalize().into_bytes().into()
}

/// A fresh random nonce.
pub fn random_nonce() -> Nonce {
    let mut n = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// The monitor's proof that it knows `entity`'s secret (and saw the
/// signing `mode` the entity announced).
pub fn server_proof(secret: &Secret, entity: &str, cn: &Nonce, sn: &Nonce, mode: u8) -> [u8; 32] {
    mac_ext(secret, b'S', entity, cn, sn, &[mode])
}

/// The entity's proof that it knows its secret (and saw the monitor's
/// signing `mode`).
pub fn client_proof(secret: &Secret, entity: &str, cn: &Nonce, sn: &Nonce, mode: u8) -> [u8; 32] {
    mac_ext(secret, b'C', entity, cn, sn, &[mode])
}

/// The key that signs this connection's frames after the handshake.
pub fn frame_key(secret: &Secret, entity: &str, cn: &Nonce, sn: &Nonce) -> [u8; 32] {
    mac(secret, b'F', entity, cn, sn)
}

/// Encrypt a session key for the entity holding `secret` (XOR keystream).
pub fn wrap_session_key(
    secret: &Secret,
    entity: &str,
    cn: &Nonce,
    sn: &Nonce,
    session_key: &[u8; 32],
) -> [u8; 32] {
    let ks = mac(secret, b'K', entity, cn, sn);
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = session_key[i] ^ ks[i];
    }
    out
}

/// Decrypt a session key wrapped by [`wrap_session_key`].
pub fn unwrap_session_key(
    secret: &Secret,
    entity: &str,
    cn: &Nonce,
    sn: &Nonce,
    wrapped: &[u8; 32],
) -> [u8; 32] {
    // XOR is its own inverse.
    wrap_session_key(secret, entity, cn, sn, wrapped)
}

/// Constant-time equality of two proofs (no timing oracle on the MAC).
pub fn proofs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_differ_by_role_key_nonce_and_entity() {
        let s = Secret::generate(0);
        let t = Secret::generate(0);
        let cn = random_nonce();
        let sn = random_nonce();
        let c = client_proof(&s, "client.admin", &cn, &sn, 3);
        assert_eq!(c, client_proof(&s, "client.admin", &cn, &sn, 3));
        assert_ne!(c, server_proof(&s, "client.admin", &cn, &sn, 3));
        assert_ne!(c, client_proof(&t, "client.admin", &cn, &sn, 3));
        assert_ne!(c, client_proof(&s, "client.admin", &cn, &random_nonce(), 3));
        assert_ne!(c, client_proof(&s, "client.admin2", &cn, &sn, 3));
        // A stripped signing announcement changes the proof.
        assert_ne!(c, client_proof(&s, "client.admin", &cn, &sn, 1));
        assert!(proofs_equal(&c, &c));
        assert!(!proofs_equal(
            &c,
            &server_proof(&s, "client.admin", &cn, &sn, 3)
        ));
        // The frame key is neither proof nor the wrapping keystream.
        let k = frame_key(&s, "client.admin", &cn, &sn);
        assert_ne!(k, c);
        assert_ne!(k, frame_key(&t, "client.admin", &cn, &sn));
        assert_ne!(
            k,
            wrap_session_key(&s, "client.admin", &cn, &sn, &[0u8; 32])
        );
    }

    #[test]
    fn session_key_wrap_roundtrip() {
        let s = Secret::generate(0);
        let cn = random_nonce();
        let sn = random_nonce();
        let k = [7u8; 32];
        let w = wrap_session_key(&s, "osd.1", &cn, &sn, &k);
        assert_ne!(w, k);
        assert_eq!(unwrap_session_key(&s, "osd.1", &cn, &sn, &w), k);
        let other = Secret::generate(0);
        assert_ne!(unwrap_session_key(&other, "osd.1", &cn, &sn, &w), k);
    }
}
