//! Object names of the format-2-like layout, name validation and the
//! image-offset → object-extent mapping.

use quarry_rados::{SnapId, NOSNAP};

use crate::error::{RbdError, Result};

/// Per-namespace directory: omap `name_<name>` → id and `id_<id>` → name.
pub(crate) const DIRECTORY: &str = "rbd_directory";
/// Per-(pool, namespace) children index of the parents stored there.
pub(crate) const CHILDREN: &str = "rbd_children";
/// The trash of a pool/namespace: omap `id_<image id>` -> entry.
pub(crate) const TRASH: &str = "rbd_trash";
/// Pool-level namespace registry (default namespace): omap `name_<ns>`.
pub(crate) const NAMESPACES: &str = "rbd_namespace";

/// Smallest allowed order (4 KiB objects).
pub const MIN_ORDER: u8 = 12;
/// Largest allowed order (32 MiB objects).
pub const MAX_ORDER: u8 = 25;
/// Default order (4 MiB objects).
pub const DEFAULT_ORDER: u8 = 22;
/// Longest image name in bytes (fits `RBD_MAX_IMAGE_NAME_SIZE` = 96 with its NUL).
pub const MAX_IMAGE_NAME_LEN: usize = 95;
/// Longest snapshot name in bytes.
pub const MAX_SNAP_NAME_LEN: usize = 127;
/// Longest namespace name in bytes.
pub const MAX_NAMESPACE_LEN: usize = 95;
/// Largest image size: offsets must fit the C ABI's signed 64-bit `off_t`.
pub const MAX_IMAGE_SIZE: u64 = i64::MAX as u64;
/// Most objects an image with an object map may have (librbd's limit).
pub const MAX_OBJECT_MAP_OBJECTS: u64 = 256_000_000;

pub(crate) fn header_oid(id: &str) -> String {
    format!("rbd_header.{id}")
}

pub(crate) fn data_prefix(id: &str) -> String {
    format!("rbd_data.{id}")
}

pub(crate) fn data_oid(id: &str, objno: u64) -> String {
    format!("rbd_data.{id}.{objno:016x}")
}

/// Head map for `NOSNAP`, else the map frozen at that snapshot.
pub(crate) fn object_map_oid(id: &str, snap: SnapId) -> String {
    if snap == NOSNAP {
        format!("rbd_object_map.{id}")
    } else {
        format!("rbd_object_map.{id}.{snap:016x}")
    }
}

pub(crate) fn dir_name_key(name: &str) -> String {
    format!("name_{name}")
}

pub(crate) fn dir_id_key(id: &str) -> String {
    format!("id_{id}")
}

fn check_name(kind: &str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() {
        return Err(RbdError::invalid(format!("{kind} name is empty")));
    }
    if name.len() > max {
        return Err(RbdError::invalid(format!(
            "{kind} name '{name}' is longer than {max} bytes"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '@') || c.is_control())
    {
        return Err(RbdError::invalid(format!(
            "{kind} name '{}' contains the forbidden character {c:?}",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Image names: 1..=95 bytes, no `/`, `@` or control characters (they
/// would make `pool/[ns/]image@snap` specs ambiguous).
pub fn validate_image_name(name: &str) -> Result<()> {
    check_name("image", name, MAX_IMAGE_NAME_LEN)
}

/// Snapshot names: 1..=127 bytes, no `/`, `@` or control characters.
pub fn validate_snap_name(name: &str) -> Result<()> {
    check_name("snapshot", name, MAX_SNAP_NAME_LEN)
}

/// Namespace names: 1..=95 bytes, no `/`, `@` or control characters.
pub fn validate_namespace_name(name: &str) -> Result<()> {
    check_name("namespace", name, MAX_NAMESPACE_LEN)
}

/// Number of objects backing `size` bytes (`ceil(size / 2^order)`).
pub(crate) fn num_objects(size: u64, order: u8) -> u64 {
    debug_assert!((MIN_ORDER..=MAX_ORDER).contains(&order));
    let os = 1u64 << order;
    (size >> order) + u64::from(size & (os - 1) != 0)
}

/// One piece of an image request that falls in one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ObjExtent {
    /// Object number.
    pub objno: u64,
    /// Offset inside the object.
    pub obj_off: u64,
    /// Length (never crosses the object end).
    pub len: u64,
    /// Offset of this piece inside the request's buffer.
    pub buf_off: u64,
}

impl ObjExtent {
    /// Image offset of this piece.
    pub fn image_off(&self, order: u8) -> u64 {
        (self.objno << order) + self.obj_off
    }
}

/// Split `[off, off+len)` into per-object pieces, ascending. With the
/// default striping (stripe unit = object size, count 1) object `n` holds
/// image bytes `[n << order, (n+1) << order)`.
pub(crate) fn map_extents(order: u8, off: u64, len: u64) -> Vec<ObjExtent> {
    let os = 1u64 << order;
    let mut out = Vec::with_capacity((len / os + 2) as usize);
    let mut cur = off;
    let end = off + len;
    while cur < end {
        let objno = cur >> order;
        let obj_off = cur & (os - 1);
        let n = (os - obj_off).min(end - cur);
        out.push(ObjExtent {
            objno,
            obj_off,
            len: n,
            buf_off: cur - off,
        });
        cur += n;
    }
    debug_assert_eq!(out.iter().map(|e| e.len).sum::<u64>(), len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(data_oid("abc", 0x1f), "rbd_data.abc.000000000000001f");
        assert_eq!(object_map_oid("abc", NOSNAP), "rbd_object_map.abc");
        assert_eq!(
            object_map_oid("abc", 7),
            "rbd_object_map.abc.0000000000000007"
        );
        assert!(validate_image_name("vm-1.img").is_ok());
        for bad in ["", "a/b", "a@b", "a\nb"] {
            assert!(validate_image_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_image_name(&"x".repeat(95)).is_ok());
        assert!(validate_image_name(&"x".repeat(96)).is_err());
        assert!(validate_snap_name(&"x".repeat(128)).is_err());
    }

    #[test]
    fn extents() {
        assert_eq!(num_objects(0, 22), 0);
        assert_eq!(num_objects(1, 22), 1);
        assert_eq!(num_objects(4 << 20, 22), 1);
        assert_eq!(num_objects((4 << 20) + 1, 22), 2);
        let e = map_extents(12, 4000, 5000);
        assert_eq!(
            e,
            vec![
                ObjExtent {
                    objno: 0,
                    obj_off: 4000,
                    len: 96,
                    buf_off: 0
                },
                ObjExtent {
                    objno: 1,
                    obj_off: 0,
                    len: 4096,
                    buf_off: 96
                },
                ObjExtent {
                    objno: 2,
                    obj_off: 0,
                    len: 808,
                    buf_off: 4192
                },
            ]
        );
        assert_eq!(e[1].image_off(12), 4096);
        assert!(map_extents(12, 10, 0).is_empty());
    }
}
