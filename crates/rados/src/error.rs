//! The object layer's error: an errno plus the context that explains it.

use quarry_common::Errno;

/// Result of object-layer calls.
pub type Result<T, E = RadosError> = std::result::Result<T, E>;

/// An object-layer failure, as the errno RADOS would return and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {errno}")]
pub struct RadosError {
    /// The errno librados would return (negated at the C ABI).
    pub errno: Errno,
    /// What failed, naming the object, pool or argument at fault.
    pub context: String,
}

impl RadosError {
    /// Build an error from an errno and a context message.
    pub fn new(errno: Errno, context: impl Into<String>) -> Self {
        RadosError {
            errno,
            context: context.into(),
        }
    }

    /// Shorthand for `ENOENT`.
    pub fn not_found(context: impl Into<String>) -> Self {
        Self::new(Errno::ENOENT, context)
    }

    /// Shorthand for `EINVAL`.
    pub fn invalid(context: impl Into<String>) -> Self {
        Self::new(Errno::EINVAL, context)
    }

    /// Shorthand for `EIO`.
    pub fn io(context: impl Into<String>) -> Self {
        Self::new(Errno::EIO, context)
    }
}
