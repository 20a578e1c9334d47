//! An entity's secret key in Ceph's key format.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::AuthError;

/// Length of the secret proper (an AES-128 key in Ceph).
pub const SECRET_LEN: usize = 16;

/// Ceph's key blob: `u16 type | u32 sec | u32 nsec | u16 len | secret`.
const BLOB_LEN: usize = 2 + 4 + 4 + 2 + SECRET_LEN;
/// Ceph's `CEPH_CRYPTO_AES`.
const CRYPTO_AES: u16 = 1;

/// An entity's 16-byte secret, with the creation time Ceph's format carries.
///
/// `Debug` prints no key material: keys must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: [u8; SECRET_LEN],
    created_sec: u32,
    created_nsec: u32,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A secret from raw bytes (creation time 0).
    pub fn from_bytes(key: [u8; SECRET_LEN]) -> Secret {
        Secret {
            key,
            created_sec: 0,
            created_nsec: 0,
        }
    }

    /// A fresh random secret stamped with `created_unix`.
    pub fn generate(created_unix: u64) -> Secret {
        let mut key = [0u8; SECRET_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Secret {
            key,
            created_sec: u32::try_from(created_unix).unwrap_or(u32::MAX),
            created_nsec: 0,
        }
    }

    /// The raw 16 bytes (used as the HMAC key of the handshake).
    pub fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.key
    }

    /// Parse Ceph's base64 key (`AQ...==`): a 28-byte blob holding an AES
    /// key. Whitespace around it is ignored.
    pub fn from_base64(s: &str) -> Result<Secret, AuthError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AuthError::BadKey("empty key".into()));
        }
        // The message never includes the text: it may be a real key.
        let raw = STANDARD
            .decode(s)
            .map_err(|_| AuthError::BadKey("not valid base64".into()))?;
        if raw.len() != BLOB_LEN {
            return Err(AuthError::BadKey(format!(
                "decodes to {} bytes, a Ceph key has {BLOB_LEN}",
                raw.len()
            )));
        }
        let ty = u16::from_le_bytes([raw[0], raw[1]]);
        if ty != CRYPTO_AES {
            return Err(AuthError::BadKey(format!(
                "key type {ty} is not supported (only AES, type 1)"
            )));
        }
        let created_sec = u32::from_le_bytes([raw[2], raw[3], raw[4], raw[5]]);
        let created_nsec = u32::from_le_bytes([raw[6], raw[7], raw[8], raw[9]]);
        let len = u16::from_le_bytes([raw[10], raw[11]]) as usize;
        if len != SECRET_LEN {
            return Err(AuthError::BadKey(format!(
                "secret length {len}, expected {SECRET_LEN}"
            )));
        }
        let mut key = [0u8; SECRET_LEN];
        key.copy_from_slice(&raw[12..]);
        Ok(Secret {
            key,
            created_sec,
            created_nsec,
        })
    }

    /// Ceph's base64 form, as written in keyrings.
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(BLOB_LEN);
        raw.extend_from_slice(&CRYPTO_AES.to_le_bytes());
        raw.extend_from_slice(&self.created_sec.to_le_bytes());
        raw.extend_from_slice(&self.created_nsec.to_le_bytes());
        raw.extend_from_slice(&(SECRET_LEN as u16).to_le_bytes());
        raw.extend_from_slice(&self.key);
        STANDARD.encode(raw)
    }
}

impl std::str::FromStr for Secret {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::from_base64(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_key_roundtrip() {
        // A key as ceph-authtool prints it (from the reference transcript).
        let k = "AQDTFgdrEXinJRAASs0Vq7yhBPmFiCU1hiZn7A==";
        let s = Secret::from_base64(k).expect("parse");
        assert_eq!(s.to_base64(), k);
        let g = Secret::generate(1_700_000_000);
        assert_eq!(Secret::from_base64(&g.to_base64()).expect("parse"), g);
    }

    #[test]
    fn bad_keys_refused_without_echoing() {
        for bad in ["", "AQBwrongwrong", "!!!!", "AAAA"] {
            let e = Secret::from_base64(bad).unwrap_err();
            assert_eq!(e.errno(), quarry_common::Errno::EINVAL);
        }
        let e = Secret::from_base64("AQBwrongwrongwrongwrongwrongwrongwrongw==").unwrap_err();
        assert!(!e.to_string().contains("wrongwrong"), "{e}");
    }

    #[test]
    fn debug_redacts() {
        let s = Secret::generate(0);
        let d = format!("{s:?}");
        assert!(!d.contains(&s.to_base64()));
        assert!(d.contains("redacted"));
    }
}
