//! Entity names: `client.admin`, `osd.0`, `mon.a`.
//!
//! Every authenticated party in a cluster has a name of the form
//! `<type>.<id>`. Clients pass only the id to `rados_create` (QEMU's `id=`),
//! so [`EntityName::client`] builds `client.<id>` from it. Keyring sections,
//! `-n`/`--name` and `--id` all go through this module so that they agree.

use std::fmt;
use std::str::FromStr;

use crate::Errno;

/// Longest id accepted; well below RADOS' object-name limit so that names
/// derived from it (keyring sections, admin sockets, log files) stay sane.
pub const MAX_ID_LEN: usize = 255;

/// Why an entity name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    /// The name has no `.` separating type and id.
    #[error("invalid entity name '{0}': expected <type>.<id>, e.g. client.admin")]
    MissingDot(String),
    /// The type before the dot is not one Quarry knows.
    #[error("invalid entity name '{name}': unknown type '{ty}' (expected one of client, mon, osd, mgr, mds, auth)")]
    UnknownType {
        /// The whole name as given.
        name: String,
        /// The offending type part.
        ty: String,
    },
    /// The id is empty.
    #[error("invalid entity name '{0}': empty id")]
    EmptyId(String),
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("invalid entity id: {len} bytes is longer than the limit of {max}")]
    IdTooLong {
        /// Length of the id given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id contains a character outside `[A-Za-z0-9._-]`.
    #[error("invalid entity id '{id}': character {ch:?} is not allowed (use letters, digits, '.', '_', '-')")]
    BadChar {
        /// The id as given.
        id: String,
        /// The first offending character.
        ch: char,
    },
    /// An OSD id that is not a non-negative integer.
    #[error("invalid entity name 'osd.{0}': an OSD id must be a non-negative integer")]
    BadOsdId(String),
}

impl EntityError {
    /// The errno this error maps to (always EINVAL).
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

impl From<EntityError> for Errno {
    fn from(e: EntityError) -> Errno {
        e.errno()
    }
}

/// The kind of party an entity name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityType {
    /// A monitor daemon.
    Mon,
    /// An object storage daemon.
    Osd,
    /// A manager daemon (accepted for keyring compatibility).
    Mgr,
    /// A metadata server (accepted for keyring compatibility).
    Mds,
    /// A client (librados user, CLI, QEMU).
    Client,
    /// The auth service itself (Ceph keyrings may mention it).
    Auth,
}

impl EntityType {
    /// The lowercase name used in entity names and conf sections.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Mon => "mon",
            EntityType::Osd => "osd",
            EntityType::Mgr => "mgr",
            EntityType::Mds => "mds",
            EntityType::Client => "client",
            EntityType::Auth => "auth",
        }
    }

    /// Parse a type name (`client`, `osd`, ...); case-sensitive like Ceph.
    pub fn parse(s: &str) -> Option<EntityType> {
        Some(match s {
            "mon" => EntityType::Mon,
            "osd" => EntityType::Osd,
            "mgr" => EntityType::Mgr,
            "mds" => EntityType::Mds,
            "client" => EntityType::Client,
            "auth" => EntityType::Auth,
            _ => return None,
        })
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated `<type>.<id>` name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityName {
    ty: EntityType,
    id: String,
}

impl EntityName {
    /// Build a name from a type and an id, validating the id.
    pub fn new(ty: EntityType, id: &str) -> Result<EntityName, EntityError> {
        validate_id(ty, id)?;
        Ok(EntityName {
            ty,
            id: id.to_string(),
        })
    }

    /// `client.<id>` from a bare id, as `rados_create(id)` and QEMU's `id=` do.
    ///
    /// The id is taken literally: `id=client.glance` gives
    /// `client.client.glance`, exactly as Ceph does (and then fails auth).
    pub fn client(id: &str) -> Result<EntityName, EntityError> {
        EntityName::new(EntityType::Client, id)
    }

    /// `client.admin`, the default user of every tool and library.
    pub fn admin() -> EntityName {
        EntityName {
            ty: EntityType::Client,
            id: "admin".to_string(),
        }
    }

    /// Parse `<type>.<id>`; the id may itself contain dots (`client.rgw.a`).
    pub fn parse(s: &str) -> Result<EntityName, EntityError> {
        let (ty, id) = s
            .split_once('.')
            .ok_or_else(|| EntityError::MissingDot(s.to_string()))?;
        let ty = EntityType::parse(ty).ok_or_else(|| EntityError::UnknownType {
            name: s.to_string(),
            ty: ty.to_string(),
        })?;
        EntityName::new(ty, id)
    }

    /// The entity type.
    pub fn entity_type(&self) -> EntityType {
        self.ty
    }

    /// The id part (`admin` in `client.admin`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full `<type>.<id>` form.
    pub fn to_name(&self) -> String {
        self.to_string()
    }
}

impl Default for EntityName {
    fn default() -> Self {
        EntityName::admin()
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ty.as_str(), self.id)
    }
}

impl FromStr for EntityName {
    type Err = EntityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityName::parse(s)
    }
}

/// Check an id: non-empty, bounded, a conservative character set.
///
/// The character set is narrower than what Ceph's C API tolerates because
/// ids end up in INI section headers, file names and log lines, where `]`,
/// `/`, whitespace or control characters would break the format.
fn validate_id(ty: EntityType, id: &str) -> Result<(), EntityError> {
    // `mon.` (empty id) is the monitors' shared key, as in Ceph's keyrings.
    if id.is_empty() && ty == EntityType::Mon {
        return Ok(());
    }
    if id.is_empty() {
        return Err(EntityError::EmptyId(format!("{}.", ty.as_str())));
    }
    if id.len() > MAX_ID_LEN {
        return Err(EntityError::IdTooLong {
            len: id.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some(ch) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(EntityError::BadChar {
            id: id.to_string(),
            ch,
        });
    }
    if ty == EntityType::Osd && id.parse::<u32>().is_err() {
        return Err(EntityError::BadOsdId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_names() {
        let n = EntityName::parse("client.admin").unwrap();
        assert_eq!(n.entity_type(), EntityType::Client);
        assert_eq!(n.id(), "admin");
        assert_eq!(n.to_string(), "client.admin");
        assert_eq!(
            EntityName::parse("osd.0").unwrap().entity_type(),
            EntityType::Osd
        );
        assert_eq!(EntityName::parse("mon.a").unwrap().id(), "a");
        assert_eq!(EntityName::parse("mgr.x").unwrap().to_name(), "mgr.x");
        assert_eq!(EntityName::parse("mds.m-1").unwrap().id(), "m-1");
        assert_eq!(EntityName::parse("auth.x").unwrap().id(), "x");
        // Ids may contain dots: the type ends at the first dot.
        let rgw = EntityName::parse("client.rgw.host_1").unwrap();
        assert_eq!(rgw.id(), "rgw.host_1");
        assert_eq!(
            "client.glance".parse::<EntityName>().unwrap().id(),
            "glance"
        );
    }

    #[test]
    fn client_from_id_is_literal() {
        assert_eq!(
            EntityName::client("glance").unwrap().to_string(),
            "client.glance"
        );
        // Ceph's documented pitfall: the prefix is not stripped.
        assert_eq!(
            EntityName::client("client.glance").unwrap().to_string(),
            "client.client.glance"
        );
        assert_eq!(EntityName::default(), EntityName::admin());
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            EntityName::parse("admin"),
            Err(EntityError::MissingDot(_))
        ));
        assert!(matches!(
            EntityName::parse("user.x"),
            Err(EntityError::UnknownType { .. })
        ));
        assert!(matches!(
            EntityName::parse("Client.x"),
            Err(EntityError::UnknownType { .. })
        ));
        assert!(matches!(
            EntityName::parse("client."),
            Err(EntityError::EmptyId(_))
        ));
        // The monitors' shared entity has an empty id (Ceph's `mon.`).
        let mon = EntityName::parse("mon.").unwrap();
        assert_eq!(mon.entity_type(), EntityType::Mon);
        assert_eq!(mon.id(), "");
        assert_eq!(mon.to_string(), "mon.");
        assert!(matches!(
            EntityName::parse("osd."),
            Err(EntityError::EmptyId(_))
        ));
        assert!(matches!(
            EntityName::parse(".admin"),
            Err(EntityError::UnknownType { .. })
        ));
        assert!(matches!(
            EntityName::parse("client.a b"),
            Err(EntityError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            EntityName::parse("client.a]"),
            Err(EntityError::BadChar { ch: ']', .. })
        ));
        assert!(matches!(
            EntityName::parse("client.a/b"),
            Err(EntityError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            EntityName::parse("osd.x"),
            Err(EntityError::BadOsdId(_))
        ));
        assert!(matches!(
            EntityName::parse("osd.-1"),
            Err(EntityError::BadOsdId(_))
        ));
        assert!(matches!(
            EntityName::client(""),
            Err(EntityError::EmptyId(_))
        ));
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            EntityName::client(&long),
            Err(EntityError::IdTooLong { .. })
        ));
        assert!(EntityName::client(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn errors_are_einval_and_name_the_bad_part() {
        let e = EntityName::parse("user.x").unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(e.to_string().contains("'user'"), "{e}");
        let e = EntityName::parse("client.a b").unwrap_err();
        assert!(e.to_string().contains("' '"), "{e}");
    }
}
