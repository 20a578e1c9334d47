//! Errors of authentication and authorization, with their errno.

use quarry_common::Errno;

/// Why authentication or authorization failed.
///
/// Every refusal of a peer (wrong key, unknown entity, bad ticket) maps to
/// EACCES, which librados users see as "Permission denied" — immediately,
/// never as a timeout (Ceph retries until `client_mount_timeout`; we don't).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A key string is not a valid Ceph key.
    #[error("invalid key: {0}")]
    BadKey(String),
    /// The entity is not in the monitor's auth database.
    #[error(
        "authentication error: unknown entity {0} (no such user in the cluster's auth database)"
    )]
    UnknownEntity(String),
    /// The peer's proof does not match its key: wrong key, or tampering.
    #[error("authentication error: wrong key for {0}")]
    WrongKey(String),
    /// The monitor failed to prove it knows our key.
    #[error("authentication error: monitor could not prove it knows the key of {0} (wrong key, or not a genuine monitor)")]
    BadServerProof(String),
    /// A ticket could not be parsed.
    #[error("invalid ticket: {0}")]
    TicketMalformed(String),
    /// A ticket's signature is wrong (tampered, or another cluster's).
    #[error("invalid ticket: bad signature")]
    TicketBadSignature,
    /// A ticket is past its expiry time.
    #[error("ticket for {entity} expired at {expired_unix} (now {now_unix})")]
    TicketExpired {
        /// Who the ticket was for.
        entity: String,
        /// When it expired.
        expired_unix: u64,
        /// The verifier's clock.
        now_unix: u64,
    },
    /// A caps string is malformed.
    #[error("invalid caps '{text}': {reason}")]
    BadCaps {
        /// The caps text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caps do not allow the operation.
    #[error("permission denied: {0}")]
    Denied(String),
}

impl AuthError {
    /// errno as librados reports it.
    pub fn errno(&self) -> Errno {
        match self {
            AuthError::BadKey(_) | AuthError::BadCaps { .. } => Errno::EINVAL,
            AuthError::Denied(_) => Errno::EPERM,
            _ => Errno::EACCES,
        }
    }
}
