//! The POSIX errno values librbd/librados return, as a closed enum.
//!
//! Every layer's typed error maps onto one of these so that the C ABI can
//! return `-errno` exactly as Ceph's libraries do, and the CLI can print
//! Ceph's `(2) No such file or directory` form.

use std::fmt;

/// An errno value that Quarry's public interfaces can return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file or directory (object, image, pool, snapshot).
    ENOENT = 2,
    /// Input/output error (checksum mismatch, corrupted data).
    EIO = 5,
    /// Argument list too long / bad argument size.
    E2BIG = 7,
    /// Try again (transient).
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Device or resource busy.
    EBUSY = 16,
    /// Already exists.
    EEXIST = 17,
    /// Cross-device link (clone across incompatible pools).
    EXDEV = 18,
    /// Invalid argument.
    EINVAL = 22,
    /// File too large.
    EFBIG = 27,
    /// No space left on device.
    ENOSPC = 28,
    /// Read-only file system (snapshot or read-only image).
    EROFS = 30,
    /// Too many links (an image that belongs to a group cannot be removed).
    EMLINK = 31,
    /// Numerical argument out of domain (an image order out of range).
    EDOM = 33,
    /// Numerical result out of range.
    ERANGE = 34,
    /// File name too long.
    ENAMETOOLONG = 36,
    /// Directory not empty (image still has snapshots).
    ENOTEMPTY = 39,
    /// No data available (missing xattr / omap key).
    ENODATA = 61,
    /// Value too large for defined data type.
    EOVERFLOW = 75,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// Connection timed out.
    ETIMEDOUT = 110,
    /// Operation canceled (a compare op failed).
    ECANCELED = 125,
    /// Cannot send after transport endpoint shutdown.
    ESHUTDOWN = 108,
    /// Transport endpoint is not connected.
    ENOTCONN = 107,
    /// Key has been revoked / authentication failed (Ceph's EKEYREJECTED).
    EKEYREJECTED = 129,
    /// Structure needs cleaning (an image half moved to the trash).
    EUCLEAN = 117,
    /// Disk quota exceeded (an image's snapshot limit reached).
    EDQUOT = 122,
}

impl Errno {
    /// The positive errno number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// `-errno`, the form the C ABI returns.
    pub fn negated(self) -> i32 {
        -(self as i32)
    }

    /// Map a positive errno number back; unknown numbers become EIO.
    pub fn from_code(code: i32) -> Errno {
        use Errno::*;
        match code.abs() {
            1 => EPERM,
            2 => ENOENT,
            5 => EIO,
            7 => E2BIG,
            11 => EAGAIN,
            12 => ENOMEM,
            13 => EACCES,
            16 => EBUSY,
            17 => EEXIST,
            18 => EXDEV,
            22 => EINVAL,
            27 => EFBIG,
            28 => ENOSPC,
            30 => EROFS,
            31 => EMLINK,
            33 => EDOM,
            34 => ERANGE,
            36 => ENAMETOOLONG,
            39 => ENOTEMPTY,
            61 => ENODATA,
            75 => EOVERFLOW,
            95 => EOPNOTSUPP,
            107 => ENOTCONN,
            108 => ESHUTDOWN,
            110 => ETIMEDOUT,
            125 => ECANCELED,
            129 => EKEYREJECTED,
            117 => EUCLEAN,
            122 => EDQUOT,
            _ => EIO,
        }
    }

    /// The C library's description (what `strerror` prints on glibc).
    pub fn description(self) -> &'static str {
        use Errno::*;
        match self {
            EPERM => "Operation not permitted",
            ENOENT => "No such file or directory",
            EIO => "Input/output error",
            E2BIG => "Argument list too long",
            EAGAIN => "Resource temporarily unavailable",
            ENOMEM => "Cannot allocate memory",
            EACCES => "Permission denied",
            EBUSY => "Device or resource busy",
            EEXIST => "File exists",
            EXDEV => "Invalid cross-device link",
            EINVAL => "Invalid argument",
            EFBIG => "File too large",
            ENOSPC => "No space left on device",
            EROFS => "Read-only file system",
            EMLINK => "Too many links",
            EDOM => "Numerical argument out of domain",
            ERANGE => "Numerical result out of range",
            ENAMETOOLONG => "File name too long",
            ENOTEMPTY => "Directory not empty",
            ENODATA => "No data available",
            EOVERFLOW => "Value too large for defined data type",
            EOPNOTSUPP => "Operation not supported",
            ENOTCONN => "Transport endpoint is not connected",
            ESHUTDOWN => "Cannot send after transport endpoint shutdown",
            ETIMEDOUT => "Connection timed out",
            ECANCELED => "Operation canceled",
            EKEYREJECTED => "Key was rejected by service",
            EUCLEAN => "Structure needs cleaning",
            EDQUOT => "Disk quota exceeded",
        }
    }
}

impl fmt::Display for Errno {
    /// Ceph's `(2) No such file or directory` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.code(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_display() {
        for e in [Errno::ENOENT, Errno::EROFS, Errno::EBUSY, Errno::ENOTEMPTY] {
            assert_eq!(Errno::from_code(e.code()), e);
            assert_eq!(Errno::from_code(e.negated()), e);
        }
        assert_eq!(Errno::ENOENT.to_string(), "(2) No such file or directory");
        assert_eq!(Errno::from_code(9999), Errno::EIO);
    }
}
