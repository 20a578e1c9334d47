//! The image engine's error type, mapped onto the errno librbd returns.

use quarry_common::Errno;
use quarry_rados::RadosError;

/// Result of image-engine calls.
pub type Result<T, E = RbdError> = std::result::Result<T, E>;

/// An image-engine failure. Every variant names what it is about (image,
/// pool, snapshot, argument) and maps to exactly one errno via
/// [`RbdError::errno`], the value librbd would return negated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RbdError {
    /// An image, pool, namespace, snapshot, parent or metadata key does not exist (`ENOENT`).
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for, e.g. `image rbd/vm1` or `snapshot s1 of rbd/vm1`.
        what: String,
    },
    /// A name is already taken (`EEXIST`).
    #[error("{what} already exists")]
    Exists {
        /// What collided.
        what: String,
    },
    /// The object is in use: open elsewhere, protected, has children (`EBUSY`).
    #[error("{what} is busy: {why}")]
    Busy {
        /// What is busy.
        what: String,
        /// Why.
        why: String,
    },
    /// Writes to a snapshot or a read-only handle (`EROFS`).
    #[error("{what} is read-only")]
    ReadOnly {
        /// The image (and snapshot) concerned.
        what: String,
    },
    /// The image still has snapshots (`ENOTEMPTY`).
    #[error("{what} is not empty: {why}")]
    NotEmpty {
        /// The image.
        what: String,
        /// What is left.
        why: String,
    },
    /// A bad argument: name, size, order, offset, feature combination (`EINVAL`).
    #[error("invalid argument: {why}")]
    Invalid {
        /// What is wrong with it.
        why: String,
    },
    /// The operation or feature is not implemented by Quarry (`EOPNOTSUPP`).
    #[error("not supported: {what}")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// Stored metadata is malformed or inconsistent (`EIO`).
    #[error("corrupt metadata: {what}")]
    Corrupt {
        /// Which object / key, and how.
        what: String,
    },
    /// Concurrent updates kept winning the compare-and-swap race (`EAGAIN`).
    #[error("too much contention updating {what}")]
    Contention {
        /// The object.
        what: String,
    },
    /// Not allowed yet: a trashed image's deferment has not expired (`EPERM`).
    #[error("{what}: {why}")]
    NotPermitted {
        /// What was refused.
        what: String,
        /// Why.
        why: String,
    },
    /// A multi-step change was interrupted half way (`EUCLEAN`), e.g. an
    /// image not fully moved to the trash: repeat the step to finish it.
    #[error("{what} is half done: {why}")]
    Incomplete {
        /// What is half done.
        what: String,
        /// What finishes it.
        why: String,
    },
    /// The image belongs to a consistency group (`EMLINK`, as librbd):
    /// remove it from the group first.
    #[error("{what} belongs to group {group}")]
    InGroup {
        /// The image.
        what: String,
        /// The group's name (or id when the name is unknown).
        group: String,
    },
    /// The image handle was closed (`ESHUTDOWN`).
    #[error("image {what} is closed")]
    Closed {
        /// The image.
        what: String,
    },
    /// An object-layer error, with what the engine was doing.
    #[error("{context}: {source}")]
    Rados {
        /// What the engine was doing.
        context: String,
        /// The object layer's error (its errno is passed through).
        source: RadosError,
    },
}

impl RbdError {
    /// The errno librbd returns for this error (the C ABI returns it negated).
    pub fn errno(&self) -> Errno {
        match self {
            RbdError::NotFound { .. } => Errno::ENOENT,
            RbdError::Exists { .. } => Errno::EEXIST,
            RbdError::Busy { .. } => Errno::EBUSY,
            RbdError::ReadOnly { .. } => Errno::EROFS,
            RbdError::NotEmpty { .. } => Errno::ENOTEMPTY,
            RbdError::Invalid { .. } => Errno::EINVAL,
            RbdError::Unsupported { .. } => Errno::EOPNOTSUPP,
            RbdError::Corrupt { .. } => Errno::EIO,
            RbdError::Contention { .. } => Errno::EAGAIN,
            RbdError::Closed { .. } => Errno::ESHUTDOWN,
            RbdError::InGroup { .. } => Errno::EMLINK,
            RbdError::NotPermitted { .. } => Errno::EPERM,
            RbdError::Incomplete { .. } => Errno::EUCLEAN,
            RbdError::Rados { source, .. } => source.errno,
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        RbdError::NotFound { what: what.into() }
    }
    pub(crate) fn exists(what: impl Into<String>) -> Self {
        RbdError::Exists { what: what.into() }
    }
    pub(crate) fn busy(what: impl Into<String>, why: impl Into<String>) -> Self {
        RbdError::Busy {
            what: what.into(),
            why: why.into(),
        }
    }
    pub(crate) fn read_only(what: impl Into<String>) -> Self {
        RbdError::ReadOnly { what: what.into() }
    }
    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        RbdError::Invalid { why: why.into() }
    }
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        RbdError::Corrupt { what: what.into() }
    }
    pub(crate) fn rados(context: impl Into<String>, source: RadosError) -> Self {
        RbdError::Rados {
            context: context.into(),
            source,
        }
    }
}

impl From<RadosError> for RbdError {
    fn from(source: RadosError) -> Self {
        RbdError::Rados {
            context: "object layer".into(),
            source,
        }
    }
}

/// Attach context to object-layer results.
pub(crate) trait RadosContext<T> {
    /// Wrap an object-layer error with what the engine was doing.
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> RadosContext<T> for std::result::Result<T, RadosError> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| RbdError::rados(f(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(RbdError::not_found("x").errno(), Errno::ENOENT);
        assert_eq!(RbdError::exists("x").errno(), Errno::EEXIST);
        assert_eq!(RbdError::busy("x", "y").errno(), Errno::EBUSY);
        assert_eq!(RbdError::read_only("x").errno(), Errno::EROFS);
        assert_eq!(RbdError::invalid("x").errno(), Errno::EINVAL);
        assert_eq!(
            RbdError::from(RadosError::new(Errno::ENOSPC, "full")).errno(),
            Errno::ENOSPC
        );
        let e = RbdError::not_found("image rbd/vm1");
        assert_eq!(e.to_string(), "image rbd/vm1 does not exist");
    }
}
