//! Signed frames: what an attacker on the path cannot forge, replay or
//! reorder once both ends have authenticated.
//!
//! After the handshake both ends hold a per-connection key that never
//! crossed the wire (quarry-auth derives it from the handshake's nonces and
//! the secret or ticket session key). Every later frame then carries a
//! [`SIG_LEN`]-byte trailer after its data payload:
//!
//! ```text
//! | seq u64 LE | HMAC-SHA256(key, dir | seq | header[0..32])[..16] |
//! ```
//! `header[0..32]` holds magic, version, kind, flags, request id, both
//! lengths and the crc32c of the body and of the data, so the MAC covers the
//! payload through the checksums the reader verifies anyway (as Ceph's
//! message signature covers the crcs): the payload is hashed once, by crc32c.
//! `dir` is `'C'` for frames from the connecting side and `'S'` for frames
//! from the accepting side, so a frame cannot be reflected back to its
//! sender. Sequence numbers start at 1 in each direction and must increase
//! by exactly one: a replayed, dropped or reordered frame is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{FrameError, HEADER_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the signature trailer: the sequence number and the MAC.
pub const SIG_LEN: usize = 8 + MAC_LEN;
/// Bytes of the truncated MAC (128 bits, as HMAC-SHA256-128 in IPsec).
pub const MAC_LEN: usize = 16;

/// Which end of a connection a [`FrameSigner`] speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that connected (client, or an OSD talking to a peer OSD).
    Connector,
    /// The side that accepted the connection (daemon).
    Acceptor,
}

impl Role {
    fn dir_byte(self) -> u8 {
        match self {
            Role::Connector => b'C',
            Role::Acceptor => b'S',
        }
    }
}

/// Signs or verifies the frames of one direction of one connection.
///
/// `Debug` prints no key material.
#[derive(Clone)]
pub struct FrameSigner {
    /// HMAC keyed once (inner and outer pads absorbed): cloned per frame.
    keyed: HmacSha256,
    dir: u8,
    /// Sequence number of the next frame in this direction.
    next_seq: u64,
}

impl std::fmt::Debug for FrameSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSigner")
            .field("dir", &(self.dir as char))
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl FrameSigner {
    /// The (sending, receiving) signers of the end `me` of a connection
    /// whose frame key is `key`.
    pub fn pair(key: &[u8; 32], me: Role) -> (FrameSigner, FrameSigner) {
        let peer = match me {
            Role::Connector => Role::Acceptor,
            Role::Acceptor => Role::Connector,
        };
        (Self::new(key, me), Self::new(key, peer))
    }

    /// The signer of frames sent by `from`.
    pub fn new(key: &[u8; 32], from: Role) -> FrameSigner {
        FrameSigner {
            // HMAC accepts keys of any length; this cannot fail.
            keyed: <HmacSha256 as Mac>::new_from_slice(key).expect("hmac accepts any key length"),
            dir: from.dir_byte(),
            next_seq: 1,
        }
    }

    /// The sequence number the next frame will carry (or must carry).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn mac(&self, seq: u64, header: &[u8; HEADER_LEN]) -> [u8; MAC_LEN] {
        let mut m = self.keyed.clone();
        m.update(&[self.dir]);
        m.update(&seq.to_le_bytes());
        m.update(&header[..HEADER_LEN - 4]);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The trailer of the next frame, whose encoded header is `header`.
    pub fn sign(&mut self, header: &[u8; HEADER_LEN]) -> [u8; SIG_LEN] {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.trailer_at(seq, header)
    }

    /// The trailer a frame with sequence number `seq` would carry, without
    /// advancing the sequence (tests build replayed and skipped frames).
    pub fn trailer_at(&self, seq: u64, header: &[u8; HEADER_LEN]) -> [u8; SIG_LEN] {
        let mut t = [0u8; SIG_LEN];
        t[..8].copy_from_slice(&seq.to_le_bytes());
        t[8..].copy_from_slice(&self.mac(seq, header));
        t
    }

    /// Check a received frame's trailer: first the MAC (nothing forged is
    /// interpreted further), then that its sequence number is the next one.
    pub fn verify(
        &mut self,
        header: &[u8; HEADER_LEN],
        request_id: u64,
        trailer: &[u8; SIG_LEN],
    ) -> Result<(), FrameError> {
        let mut s = [0u8; 8];
        s.copy_from_slice(&trailer[..8]);
        let seq = u64::from_le_bytes(s);
        let want = self.mac(seq, header);
        // Constant time: no timing oracle on how much of the MAC matched.
        let diff = want
            .iter()
            .zip(&trailer[8..])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(FrameError::BadSignature { request_id, seq });
        }
        if seq != self.next_seq {
            return Err(FrameError::Sequence {
                got: seq,
                want: self.next_seq,
            });
        }
        self.next_seq = seq.wrapping_add(1);
        Ok(())
    }
}

/// Whether this process signs its frames and insists on signed frames,
/// announced by each end in the handshake (the proofs cover both
/// announcements, so an attacker cannot strip them).
///
/// The three `require` options mean what Ceph's do: `cephx_require_signatures`
/// covers every connection, `cephx_cluster_require_signatures` only those
/// between daemons (monitor and OSDs), `cephx_service_require_signatures`
/// only those between a client and a daemon. Both ends apply the same rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignPolicy {
    /// `cephx_sign_messages` (default true): sign when the peer signs too.
    pub sign: bool,
    /// `cephx_require_signatures` (default false): refuse any peer that
    /// does not sign.
    pub require: bool,
    /// `cephx_cluster_require_signatures` (default false): a daemon refuses
    /// another daemon that does not sign.
    pub require_cluster: bool,
    /// `cephx_service_require_signatures` (default false): refuse an
    /// unsigned connection between a client and a daemon.
    pub require_service: bool,
    /// This process is a daemon (its connections to other daemons are
    /// cluster connections; a client's are service connections).
    pub daemon: bool,
}

impl Default for SignPolicy {
    fn default() -> Self {
        SignPolicy {
            sign: true,
            require: false,
            require_cluster: false,
            require_service: false,
            daemon: false,
        }
    }
}

/// The option names, in the order of the bits of the global policy.
const OPTIONS: [&str; 4] = [
    "cephx_sign_messages",
    "cephx_require_signatures",
    "cephx_cluster_require_signatures",
    "cephx_service_require_signatures",
];

impl SignPolicy {
    /// Whether a connection between a connector announcing `client_signs`
    /// and an acceptor announcing `server_signs` is signed: only when both
    /// sign, as Ceph signs only when both ends support it.
    pub fn negotiated(client_signs: bool, server_signs: bool) -> bool {
        client_signs && server_signs
    }

    /// The mode byte the handshake proofs cover (bit 0: the connector
    /// signs, bit 1: the acceptor signs).
    pub fn mode_byte(client_signs: bool, server_signs: bool) -> u8 {
        u8::from(client_signs) | (u8::from(server_signs) << 1)
    }

    /// Whether this end requires a connection with a peer to be signed;
    /// `peer_is_daemon`: the peer is a monitor or an OSD (a connecting
    /// side always talks to a daemon).
    pub fn requires(&self, peer_is_daemon: bool) -> bool {
        self.require
            || if self.daemon && peer_is_daemon {
                self.require_cluster
            } else {
                self.require_service
            }
    }

    /// Refusal text when this end requires signatures and the connection
    /// with a peer (a daemon or not, see [`SignPolicy::requires`]) would not
    /// be signed; `None` when the connection is acceptable.
    pub fn check(&self, signed: bool, peer_is_daemon: bool) -> Option<String> {
        if signed || !self.requires(peer_is_daemon) {
            return None;
        }
        let option = if self.require {
            OPTIONS[1]
        } else if self.daemon && peer_is_daemon {
            OPTIONS[2]
        } else {
            OPTIONS[3]
        };
        let who = if self.sign {
            "the peer does not sign its frames (cephx_sign_messages = false there)"
        } else {
            "this end does not sign its frames (cephx_sign_messages = false)"
        };
        Some(format!(
            "signed frames are required ({option} = true) but {who}"
        ))
    }

    /// The process-wide policy (set once at startup from the configuration).
    pub fn global() -> SignPolicy {
        let v = GLOBAL.load(std::sync::atomic::Ordering::Relaxed);
        SignPolicy {
            sign: v & 1 != 0,
            require: v & 2 != 0,
            require_cluster: v & 4 != 0,
            require_service: v & 8 != 0,
            daemon: v & 16 != 0,
        }
    }

    /// Set the process-wide policy (daemons from ceph.conf, clients from
    /// their options at connect; every connection made later uses it).
    pub fn set_global(p: SignPolicy) {
        GLOBAL.store(
            u8::from(p.sign)
                | (u8::from(p.require) << 1)
                | (u8::from(p.require_cluster) << 2)
                | (u8::from(p.require_service) << 3)
                | (u8::from(p.daemon) << 4),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The policy of a daemon (`daemon`) or client from the options'
    /// values as `get` finds them (Ceph's booleans: `true`/`false`,
    /// `yes`/`no`, `1`/`0`, `on`/`off`); an option not set keeps its default.
    pub fn from_options(
        daemon: bool,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<SignPolicy, String> {
        let d = SignPolicy::default();
        let b =
            |i: usize, default: bool| parse_bool(OPTIONS[i], get(OPTIONS[i]).as_deref(), default);
        Ok(SignPolicy {
            sign: b(0, d.sign)?,
            require: b(1, d.require)?,
            require_cluster: b(2, d.require_cluster)?,
            require_service: b(3, d.require_service)?,
            daemon,
        })
    }
}

/// Whether an authenticated entity name is a daemon's (monitor or OSD),
/// for [`SignPolicy::requires`].
pub fn is_daemon_entity(entity: &str) -> bool {
    entity == "mon" || entity.starts_with("mon.") || entity.starts_with("osd.")
}

fn parse_bool(name: &str, v: Option<&str>, default: bool) -> Result<bool, String> {
    let Some(v) = v else { return Ok(default) };
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("{name} = {other}: expected true or false")),
    }
}

/// Default: sign, require nothing, a client (bits as in
/// [`SignPolicy::set_global`]).
static GLOBAL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(b: u8) -> [u8; HEADER_LEN] {
        [b; HEADER_LEN]
    }

    #[test]
    fn sign_verify_in_order() {
        let k = [7u8; 32];
        let (mut tx, _) = FrameSigner::pair(&k, Role::Connector);
        let (_, mut rx) = FrameSigner::pair(&k, Role::Acceptor);
        for i in 0..5u8 {
            let t = tx.sign(&hdr(i));
            rx.verify(&hdr(i), 0, &t).expect("in order");
        }
        assert_eq!(rx.next_seq(), 6);
    }

    #[test]
    fn tamper_replay_skip_reflect_wrong_key() {
        let k = [7u8; 32];
        let (mut tx, mut rx_own) = FrameSigner::pair(&k, Role::Connector);
        let (mut stx, mut rx) = FrameSigner::pair(&k, Role::Acceptor);
        let t1 = tx.sign(&hdr(1));
        // Any header bit (kind, ids, lengths, crcs) changes the MAC.
        for i in 0..HEADER_LEN - 4 {
            let mut h = hdr(1);
            h[i] ^= 1;
            let mut r = rx.clone();
            assert!(matches!(
                r.verify(&h, 9, &t1),
                Err(FrameError::BadSignature { request_id: 9, .. })
            ));
        }
        // The header crc bytes are not covered (they depend on the rest).
        rx.verify(&hdr(1), 0, &t1).expect("genuine");
        // Replayed: a valid MAC with an old sequence number.
        assert!(matches!(
            rx.verify(&hdr(1), 0, &t1),
            Err(FrameError::Sequence { got: 1, want: 2 })
        ));
        // Skipped: sequence 3 where 2 is due.
        let _ = tx.sign(&hdr(2));
        let t3 = tx.sign(&hdr(3));
        assert!(matches!(
            rx.verify(&hdr(3), 0, &t3),
            Err(FrameError::Sequence { got: 3, want: 2 })
        ));
        // Reflected: a frame of the acceptor's direction sent back to it.
        let s1 = stx.sign(&hdr(4));
        let mut back = FrameSigner::new(&k, Role::Connector);
        assert!(back.verify(&hdr(4), 0, &s1).is_err());
        rx_own
            .verify(&hdr(4), 0, &s1)
            .expect("the connector reads it");
        // Another key.
        let mut other = FrameSigner::new(&[8u8; 32], Role::Connector);
        let t = FrameSigner::new(&k, Role::Connector).sign(&hdr(1));
        assert!(matches!(
            other.verify(&hdr(1), 0, &t),
            Err(FrameError::BadSignature { .. })
        ));
        // A forged sequence number in the trailer breaks the MAC.
        let mut t = FrameSigner::new(&k, Role::Connector).sign(&hdr(1));
        t[0] ^= 2;
        assert!(matches!(
            FrameSigner::new(&k, Role::Connector).verify(&hdr(1), 0, &t),
            Err(FrameError::BadSignature { .. })
        ));
    }

    #[test]
    fn policy() {
        assert!(SignPolicy::negotiated(true, true));
        assert!(!SignPolicy::negotiated(true, false));
        assert_eq!(SignPolicy::mode_byte(true, false), 1);
        assert_eq!(SignPolicy::mode_byte(false, true), 2);
        let d = SignPolicy::default();
        assert!(d.sign && !d.require);
        assert!(d.check(false, false).is_none() && d.check(false, true).is_none());
        let r = SignPolicy { require: true, ..d };
        assert!(r.check(false, false).is_some());
        assert!(r.check(true, false).is_none());
        // Cluster: daemon <-> daemon only; service: client <-> daemon only.
        // (policy, peer is a daemon, the option an unsigned peer is refused by)
        let daemon = SignPolicy { daemon: true, ..d };
        let cluster = SignPolicy {
            require_cluster: true,
            ..daemon
        };
        let service = SignPolicy {
            require_service: true,
            ..daemon
        };
        let client = |p: SignPolicy| SignPolicy { daemon: false, ..p };
        let cases = [
            (cluster, true, Some("cephx_cluster_require")),
            (cluster, false, None),        // a client is not a cluster peer
            (client(cluster), true, None), // a client's connections are service ones
            (service, false, Some("cephx_service_require")),
            (service, true, None), // daemons are not a service's clients
            (client(service), true, Some("cephx_service_require")),
        ];
        for (i, (p, peer_is_daemon, want)) in cases.into_iter().enumerate() {
            let got = p.check(false, peer_is_daemon);
            match want {
                Some(opt) => assert!(got.is_some_and(|m| m.contains(opt)), "case {i}"),
                None => assert!(got.is_none(), "case {i}"),
            }
            assert!(p.check(true, peer_is_daemon).is_none(), "case {i} signed");
        }
        let unsigned = SignPolicy {
            sign: false,
            require: true,
            ..d
        };
        assert!(unsigned
            .check(false, true)
            .is_some_and(|m| m.contains("this end does not sign")));
        for p in [d, r, cluster, service, unsigned] {
            SignPolicy::set_global(p);
            assert_eq!(SignPolicy::global(), p);
        }
        SignPolicy::set_global(d);
        let opts = |v: &[(&str, &str)]| {
            let v: Vec<(String, String)> = v
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            move |k: &str| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
        };
        let p = SignPolicy::from_options(
            true,
            opts(&[
                ("cephx_sign_messages", "false"),
                ("cephx_require_signatures", "Yes"),
                ("cephx_cluster_require_signatures", "on"),
            ]),
        )
        .expect("parse");
        assert!(!p.sign && p.require && p.require_cluster && !p.require_service && p.daemon);
        assert_eq!(
            SignPolicy::from_options(false, opts(&[])).expect("defaults"),
            d
        );
        assert!(
            SignPolicy::from_options(false, opts(&[("cephx_sign_messages", "maybe")]))
                .unwrap_err()
                .contains("cephx_sign_messages")
        );
    }
}
