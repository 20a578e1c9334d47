//! The monitors' central configuration database (`ceph config set|get|rm|dump`):
//! its sections, how a `who` names one, which sections an entity reads,
//! and the validation every value passes before it is stored.
//!
//! The database maps a section (`global`, `mon`, `osd`, `client`, `mgr`,
//! `mds`, or one entity such as `osd.3` or `client.glance`) to option values.
//! An entity sees `global` < its type < itself, the most specific winning,
//! as in a conf file. Ceph's masks (`osd/host:foo`, `osd/class:ssd`) are
//! refused with [`MonDbError::MaskUnsupported`].

use std::collections::BTreeMap;

use super::{canonicalize, find_option, normalize_name, OptType};
use crate::entity::{EntityName, EntityType};
use crate::Errno;

/// Section → option → value (the value as the operator gave it, validated).
pub type ConfigDb = BTreeMap<String, BTreeMap<String, String>>;

/// Options an entity needs before it can reach the monitors, or that name
/// its identity or secrets: Ceph keeps them out of the monitor database too.
const NOT_IN_MON_DB: &[&str] = &[
    "fsid",
    "key",
    "keyfile",
    "keyring",
    "mon_dns_srv_name",
    "mon_host",
    "quarry_embedded_dir",
];

/// Why a `config` request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonDbError {
    /// `who` is not a section Quarry knows.
    #[error("unrecognized config target '{0}'")]
    UnknownTarget(String),
    /// `who` is a Ceph mask form (`osd/host:foo`).
    #[error("config masks are not supported: '{0}' (use global, a type such as osd, or an entity such as osd.0)")]
    MaskUnsupported(String),
    /// `who` of `config get|show` is not an entity or type.
    #[error("unrecognized entity '{0}'")]
    UnknownEntity(String),
    /// No option has this name.
    #[error("unrecognized config option '{0}'")]
    UnknownOption(String),
    /// The value does not fit the option's type or limits.
    #[error("error parsing value: {0}")]
    BadValue(String),
    /// The option cannot be kept in the monitor database.
    #[error("option '{0}' may not be set in the monitor config database (it is needed before connecting); set it in ceph.conf")]
    NotSettable(String),
}

impl MonDbError {
    /// The errno Ceph answers with.
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

/// The types whose name may be a section (`auth` is not a daemon type).
fn section_type(s: &str) -> Option<EntityType> {
    EntityType::parse(s).filter(|t| *t != EntityType::Auth)
}

/// Parse the `who` of `config set|rm` into its section name.
pub fn parse_target(who: &str) -> Result<String, MonDbError> {
    if let Some((section, _mask)) = who.split_once('/') {
        // Masks are refused whether or not the section part is valid, but
        // the message says which of the two is wrong.
        return Err(if parse_target(section).is_ok() {
            MonDbError::MaskUnsupported(who.to_string())
        } else {
            MonDbError::UnknownTarget(who.to_string())
        });
    }
    if who == "global" || section_type(who).is_some() {
        return Ok(who.to_string());
    }
    match EntityName::parse(who) {
        Ok(e) if e.entity_type() != EntityType::Auth => {
            if e.entity_type() == EntityType::Osd && e.id().parse::<u32>().is_err() {
                return Err(MonDbError::UnknownTarget(who.to_string()));
            }
            Ok(e.to_string())
        }
        _ => Err(MonDbError::UnknownTarget(who.to_string())),
    }
}

/// The sections `who` reads for `config get|show`, lowest precedence first:
/// `global` alone, `[global, type]` for a type, `[global, type, type.id]`
/// for an entity.
pub fn sections_for(who: &str) -> Result<Vec<String>, MonDbError> {
    if who == "global" {
        return Ok(vec!["global".to_string()]);
    }
    if let Some(t) = section_type(who) {
        return Ok(vec!["global".to_string(), t.as_str().to_string()]);
    }
    match EntityName::parse(who) {
        Ok(e) if e.entity_type() != EntityType::Auth => Ok(vec![
            "global".to_string(),
            e.entity_type().as_str().to_string(),
            e.to_string(),
        ]),
        _ => Err(MonDbError::UnknownEntity(who.to_string())),
    }
}

/// Every option `sections` see, with its value and the section it came
/// from (the most specific section wins).
pub fn resolve(db: &ConfigDb, sections: &[String]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for s in sections {
        if let Some(opts) = db.get(s) {
            for (name, value) in opts {
                out.insert(name.clone(), (value.clone(), s.clone()));
            }
        }
    }
    out
}

/// The canonical name of an option that may be stored in the database.
pub fn check_name(name: &str) -> Result<String, MonDbError> {
    let def = find_option(name).ok_or_else(|| MonDbError::UnknownOption(name.to_string()))?;
    let canonical = if def.ty == OptType::DebugLevel && def.name == "debug_*" {
        normalize_name(name)
    } else {
        def.name.to_string()
    };
    if NOT_IN_MON_DB.contains(&canonical.as_str()) {
        return Err(MonDbError::NotSettable(canonical));
    }
    Ok(canonical)
}

/// Validate a `config set`: returns the canonical option name and the value
/// to store (trimmed; checked against the option's type and limits).
pub fn check_set(name: &str, value: &str) -> Result<(String, String), MonDbError> {
    let canonical = check_name(name)?;
    let def = find_option(&canonical).ok_or_else(|| MonDbError::UnknownOption(name.into()))?;
    let value = value.trim();
    canonicalize(def, value).map_err(MonDbError::BadValue)?;
    if def.ty == OptType::ConMode {
        // Stored, it would stop every client and daemon it names from
        // connecting (they refuse modes they cannot honour).
        super::con_modes_supported(value).map_err(MonDbError::BadValue)?;
    }
    Ok((canonical, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        for ok in [
            "global",
            "mon",
            "osd",
            "client",
            "mgr",
            "osd.3",
            "client.glance",
        ] {
            assert_eq!(parse_target(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "foo", "osd.x", "auth", "client.", "osd.", "global.x"] {
            assert_eq!(
                parse_target(bad),
                Err(MonDbError::UnknownTarget(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_target("osd/host:foo"),
            Err(MonDbError::MaskUnsupported("osd/host:foo".into()))
        );
        assert_eq!(
            parse_target("bogus/host:foo"),
            Err(MonDbError::UnknownTarget("bogus/host:foo".into()))
        );
    }

    #[test]
    fn precedence() {
        let mut db = ConfigDb::new();
        let mut put = |s: &str, k: &str, v: &str| {
            db.entry(s.into()).or_default().insert(k.into(), v.into());
        };
        put("global", "rbd_cache", "false");
        put("client", "rbd_cache", "true");
        put("client.glance", "rbd_cache", "false");
        put("osd", "osd_max_backfills", "3");
        let r = resolve(&db, &sections_for("client.admin").expect("who"));
        assert_eq!(r["rbd_cache"], ("true".into(), "client".into()));
        assert!(!r.contains_key("osd_max_backfills"));
        let r = resolve(&db, &sections_for("client.glance").expect("who"));
        assert_eq!(r["rbd_cache"], ("false".into(), "client.glance".into()));
        let r = resolve(&db, &sections_for("osd.0").expect("who"));
        assert_eq!(r["rbd_cache"], ("false".into(), "global".into()));
        assert_eq!(r["osd_max_backfills"].0, "3");
        assert!(sections_for("nobody").is_err());
    }

    #[test]
    fn values() {
        assert_eq!(
            check_set("rbd-cache-policy", " writeback "),
            Ok(("rbd_cache_policy".into(), "writeback".into()))
        );
        assert!(matches!(
            check_set("rbd_cache_policy", "sometimes"),
            Err(MonDbError::BadValue(_))
        ));
        assert_eq!(
            check_set("no_such_option", "1"),
            Err(MonDbError::UnknownOption("no_such_option".into()))
        );
        assert!(matches!(
            check_set("mon_host", "1.2.3.4"),
            Err(MonDbError::NotSettable(_))
        ));
        assert_eq!(check_set("debug_ms", "1").expect("debug").0, "debug_ms");
    }
}
