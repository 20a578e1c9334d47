//! Cluster authentication and authorization, in the spirit of cephx.
//!
//! * [`Secret`]: an entity's 16-byte key, read and written in Ceph's base64
//!   key format (`AQ...==`, the form `ceph-authtool` prints), so keyrings
//!   move between Ceph and Quarry unchanged.
//! * Mutual challenge-response ([`handshake`]): both sides prove they know
//!   the secret with HMAC-SHA256 over two fresh nonces; the secret itself
//!   never crosses the wire, a replayed proof fails against a new nonce, and
//!   the monitor proves itself first so a fake monitor learns nothing usable.
//! * Tickets ([`ticket`]): after the handshake the monitor hands the client a
//!   short-lived ticket signed with the cluster's service key (which OSDs
//!   fetch from the monitor after authenticating as `osd.N`), plus the
//!   ticket's session key encrypted for the client. The client presents the
//!   ticket to OSDs and proves it holds the session key with
//!   [`session_proof`]; OSDs check it with [`verify_ticket`] without asking
//!   the monitor.
//! * Caps ([`Caps`]) in Ceph syntax, checked on every operation.
//!
//! Architecture invariant: no I/O and no clocks here (callers pass
//! `now_unix`); secret material is redacted from every `Debug` output.

mod caps;
mod error;
pub mod handshake;
mod secret;
pub mod ticket;

pub use caps::{Caps, EntityCaps, MonAccess, Perms};
pub use error::AuthError;
pub use handshake::{
    client_proof, frame_key, random_nonce, server_proof, unwrap_session_key, wrap_session_key,
};
pub use secret::{Secret, SECRET_LEN};
pub use ticket::{
    issue_ticket, server_session_proof, session_frame_key, session_proof, verify_ticket, Claims,
    Ticket,
};

/// A 16-byte nonce as used by every handshake.
pub type Nonce = [u8; 16];
