//! Capabilities in Ceph's syntax, e.g. `allow rwx pool=data namespace=ns1`,
//! `profile rbd pool=images`, `allow *`, several grants joined by `,` or `;`.
//!
//! One [`Caps`] holds the grants of one service (the `mon` caps or the
//! `osd` caps of an entity); [`EntityCaps`] holds all services' texts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// Permission bits of an `allow` grant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    /// Read objects / the map.
    pub read: bool,
    /// Write objects / change the map.
    pub write: bool,
    /// Execute object classes / privileged monitor operations.
    pub exec: bool,
}

impl Perms {
    const ALL: Perms = Perms {
        read: true,
        write: true,
        exec: true,
    };
}

/// Profiles Quarry knows (Ceph's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    Osd,
    Mon,
    Mgr,
    Mds,
    Rbd,
    RbdReadOnly,
    BootstrapOsd,
    BootstrapOther,
    SimpleRadosClient,
    Crash,
}

impl Profile {
    fn parse(s: &str) -> Option<Profile> {
        Some(match s {
            "osd" => Profile::Osd,
            "mon" => Profile::Mon,
            "mgr" => Profile::Mgr,
            "mds" => Profile::Mds,
            "rbd" => Profile::Rbd,
            "rbd-read-only" => Profile::RbdReadOnly,
            "bootstrap-osd" => Profile::BootstrapOsd,
            "bootstrap-mds"
            | "bootstrap-mgr"
            | "bootstrap-rgw"
            | "bootstrap-rbd"
            | "bootstrap-rbd-mirror" => Profile::BootstrapOther,
            "simple-rados-client" => Profile::SimpleRadosClient,
            "crash" => Profile::Crash,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Grant {
    Allow {
        perms: Perms,
        pool: Option<String>,
        namespace: Option<String>,
        object_prefix: Option<String>,
    },
    Profile {
        profile: Profile,
        pool: Option<String>,
        namespace: Option<String>,
    },
    /// `allow command "..."`: a named monitor command (recorded, not needed
    /// by Quarry's own command set, which is checked by access class).
    Command(String),
}

/// What a monitor operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonAccess {
    /// Read the map, status, subscribe.
    Read,
    /// Change pools and OSD states.
    Write,
    /// OSD daemon duties: boot, beacon, PG activation, the service key.
    OsdDaemon,
    /// Manage the auth database.
    AuthAdmin,
    /// Create `osd.N` keys (the `bootstrap-osd` profile).
    BootstrapOsd,
    /// `osd blocklist` (write caps, `profile rbd`, or `allow command
    /// "osd blocklist"`, as Ceph: rbd clients fence dead lock owners).
    Blocklist,
}

/// The parsed caps of one service.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Caps {
    text: String,
    grants: Vec<Grant>,
}

impl std::fmt::Debug for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caps({:?})", self.text)
    }
}

impl std::fmt::Display for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Caps {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Caps::parse(&s)
    }
}

impl From<Caps> for String {
    fn from(c: Caps) -> String {
        c.text
    }
}

impl std::str::FromStr for Caps {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Caps::parse(s)
    }
}

/// Split on top-level `,`/`;` and whitespace, keeping quoted strings whole.
fn tokenize(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut grants = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut tok = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let q = c;
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == q {
                        closed = true;
                        break;
                    }
                    tok.push(d);
                }
                if !closed {
                    return Err("unterminated quote".into());
                }
            }
            ',' | ';' => {
                if !tok.is_empty() {
                    cur.push(std::mem::take(&mut tok));
                }
                if cur.is_empty() {
                    return Err(format!("empty grant before '{c}'"));
                }
                grants.push(std::mem::take(&mut cur));
            }
            c if c.is_whitespace() => {
                if !tok.is_empty() {
                    cur.push(std::mem::take(&mut tok));
                }
            }
            '=' => {
                // `pool = x` and `pool=x` are the same: make `=` its own token.
                if !tok.is_empty() {
                    cur.push(std::mem::take(&mut tok));
                }
                cur.push("=".into());
            }
            c if c.is_control() => return Err(format!("control character {c:?}")),
            c => tok.push(c),
        }
    }
    if !tok.is_empty() {
        cur.push(tok);
    }
    if !cur.is_empty() {
        grants.push(cur);
    } else if !grants.is_empty() {
        return Err("trailing separator".into());
    }
    Ok(grants)
}

fn parse_perms(word: &str) -> Option<Perms> {
    match word {
        "*" | "all" => return Some(Perms::ALL),
        "class-read" => {
            return Some(Perms {
                exec: true,
                ..Perms::default()
            })
        }
        "class-write" => {
            return Some(Perms {
                exec: true,
                ..Perms::default()
            })
        }
        _ => {}
    }
    let mut p = Perms::default();
    for c in word.chars() {
        match c {
            'r' if !p.read => p.read = true,
            'w' if !p.write => p.write = true,
            'x' if !p.exec => p.exec = true,
            _ => return None,
        }
    }
    Some(p)
}

/// Pull `key value` or `key = value` matchers out of a token list.
struct Matchers {
    pool: Option<String>,
    namespace: Option<String>,
    object_prefix: Option<String>,
}

fn take_value(toks: &[String], i: &mut usize, key: &str) -> Result<String, String> {
    *i += 1;
    if toks.get(*i).map(String::as_str) == Some("=") {
        *i += 1;
    }
    match toks.get(*i) {
        Some(v) if v != "=" && !v.is_empty() => {
            *i += 1;
            Ok(v.clone())
        }
        _ => Err(format!("'{key}' needs a value")),
    }
}

fn parse_grant(toks: &[String]) -> Result<Grant, String> {
    let first = toks[0].as_str();
    let (is_profile, mut i) = match first {
        "allow" => {
            if toks.get(1).map(String::as_str) == Some("profile") {
                (true, 2)
            } else {
                (false, 1)
            }
        }
        "profile" => (true, 1),
        other => return Err(format!("expected 'allow' or 'profile', found '{other}'")),
    };
    if toks.len() <= i {
        return Err(format!("'{first}' needs an argument"));
    }
    if !is_profile && toks[i] == "command" {
        let rest: Vec<&str> = toks[i + 1..].iter().map(String::as_str).collect();
        if rest.is_empty() {
            return Err("'allow command' needs a command".into());
        }
        return Ok(Grant::Command(rest.join(" ")));
    }
    let mut profile = None;
    if is_profile {
        let name = &toks[i];
        profile = Some(Profile::parse(name).ok_or_else(|| format!("unknown profile '{name}'"))?);
        i += 1;
    }
    let mut perms: Option<Perms> = None;
    let mut m = Matchers {
        pool: None,
        namespace: None,
        object_prefix: None,
    };
    while i < toks.len() {
        let t = toks[i].as_str();
        match t {
            "pool" => set_once(&mut m.pool, take_value(toks, &mut i, t)?, t)?,
            "namespace" => set_once(&mut m.namespace, take_value(toks, &mut i, t)?, t)?,
            "object_prefix" if !is_profile => {
                set_once(&mut m.object_prefix, take_value(toks, &mut i, t)?, t)?
            }
            "tag" | "network" | "service" => {
                return Err(format!("'{t}' matchers are not supported"))
            }
            "=" => return Err("unexpected '='".into()),
            w if !is_profile => {
                let p =
                    parse_perms(w).ok_or_else(|| format!("unknown permission or keyword '{w}'"))?;
                let acc = perms.get_or_insert(Perms::default());
                acc.read |= p.read;
                acc.write |= p.write;
                acc.exec |= p.exec;
                i += 1;
            }
            w => return Err(format!("unexpected '{w}' after profile")),
        }
    }
    if let Some(profile) = profile {
        return Ok(Grant::Profile {
            profile,
            pool: m.pool,
            namespace: m.namespace,
        });
    }
    let perms =
        perms.ok_or_else(|| "'allow' needs permissions (r, w, x, rw, rwx, *)".to_string())?;
    Ok(Grant::Allow {
        perms,
        pool: m.pool,
        namespace: m.namespace,
        object_prefix: m.object_prefix,
    })
}

fn set_once(slot: &mut Option<String>, v: String, key: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("'{key}' given twice"));
    }
    *slot = Some(v);
    Ok(())
}

fn ns_matches(pattern: &Option<String>, ns: &str) -> bool {
    match pattern {
        None => true,
        Some(p) => match p.strip_suffix('*') {
            Some(prefix) => ns.starts_with(prefix),
            None => p == ns,
        },
    }
}

fn pool_matches(pattern: &Option<String>, pool: &str) -> bool {
    pattern.as_deref().is_none_or(|p| p == pool)
}

impl Caps {
    /// Parse a caps text; an empty text grants nothing.
    pub fn parse(text: &str) -> Result<Caps, AuthError> {
        let bad = |reason: String| AuthError::BadCaps {
            text: text.to_string(),
            reason,
        };
        if text.len() > 4096 {
            return Err(bad("longer than 4096 bytes".into()));
        }
        let grants = tokenize(text)
            .map_err(bad)?
            .iter()
            .map(|g| parse_grant(g))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        Ok(Caps {
            text: text.trim().to_string(),
            grants,
        })
    }

    /// Caps granting nothing.
    pub fn none() -> Caps {
        Caps {
            text: String::new(),
            grants: Vec::new(),
        }
    }

    /// `allow *`.
    pub fn all() -> Caps {
        Caps {
            text: "allow *".into(),
            grants: vec![Grant::Allow {
                perms: Perms::ALL,
                pool: None,
                namespace: None,
                object_prefix: None,
            }],
        }
    }

    /// The text as given (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// OSD caps: may this entity read (or write) objects in this pool and
    /// namespace? Grants limited to an `object_prefix` do not count here.
    pub fn allows(&self, pool_name: &str, namespace: &str, write: bool) -> bool {
        self.allows_object(pool_name, namespace, None, write)
    }

    /// OSD caps for one object: like [`Caps::allows`], also honouring
    /// `object_prefix` grants.
    pub fn allows_object(
        &self,
        pool_name: &str,
        namespace: &str,
        object: Option<&str>,
        write: bool,
    ) -> bool {
        self.grants.iter().any(|g| match g {
            Grant::Allow {
                perms,
                pool,
                namespace: ns,
                object_prefix,
            } => {
                let perm_ok = if write { perms.write } else { perms.read };
                let obj_ok = match (object_prefix, object) {
                    (None, _) => true,
                    (Some(p), Some(o)) => o.starts_with(p.as_str()),
                    (Some(_), None) => false,
                };
                perm_ok && obj_ok && pool_matches(pool, pool_name) && ns_matches(ns, namespace)
            }
            Grant::Profile {
                profile,
                pool,
                namespace: ns,
            } => {
                let perm_ok = match profile {
                    Profile::Osd | Profile::Mon | Profile::SimpleRadosClient => true,
                    Profile::Rbd => true,
                    Profile::RbdReadOnly => !write,
                    _ => false,
                };
                perm_ok && pool_matches(pool, pool_name) && ns_matches(ns, namespace)
            }
            Grant::Command(_) => false,
        })
    }

    /// Monitor caps: does this entity have the access an operation needs?
    pub fn mon_allows(&self, access: MonAccess) -> bool {
        self.grants.iter().any(|g| match g {
            Grant::Allow {
                perms, pool: None, ..
            } => match access {
                MonAccess::Read => perms.read,
                MonAccess::Write | MonAccess::Blocklist => perms.read && perms.write,
                MonAccess::OsdDaemon | MonAccess::AuthAdmin | MonAccess::BootstrapOsd => {
                    *perms == Perms::ALL
                }
            },
            Grant::Command(c) => {
                access == MonAccess::Blocklist
                    && matches!(c.trim_matches('"'), "osd blocklist" | "osd blacklist")
            }
            Grant::Allow { .. } => false,
            Grant::Profile { profile, .. } => match profile {
                Profile::Mon => true,
                Profile::Rbd if access == MonAccess::Blocklist => true,
                Profile::Osd => matches!(access, MonAccess::Read | MonAccess::OsdDaemon),
                Profile::Mgr => matches!(
                    access,
                    MonAccess::Read | MonAccess::Write | MonAccess::Blocklist
                ),
                Profile::BootstrapOsd => {
                    matches!(access, MonAccess::Read | MonAccess::BootstrapOsd)
                }
                Profile::Rbd
                | Profile::RbdReadOnly
                | Profile::Mds
                | Profile::SimpleRadosClient
                | Profile::Crash
                | Profile::BootstrapOther => access == MonAccess::Read,
            },
        })
    }
}

/// All caps of one entity: service name (`mon`, `osd`, `mgr`...) → text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCaps(pub BTreeMap<String, String>);

impl EntityCaps {
    /// Build from `(service, text)` pairs, validating `mon` and `osd` texts
    /// (a later pair for the same service replaces an earlier one).
    pub fn from_pairs<S: AsRef<str>, T: AsRef<str>>(
        pairs: &[(S, T)],
    ) -> Result<EntityCaps, AuthError> {
        let mut m = BTreeMap::new();
        for (svc, text) in pairs {
            let svc = svc.as_ref();
            let text = text.as_ref();
            if !matches!(svc, "mon" | "osd" | "mgr" | "mds") {
                return Err(AuthError::BadCaps {
                    text: text.to_string(),
                    reason: format!("unknown service '{svc}' (expected mon, osd, mgr or mds)"),
                });
            }
            if matches!(svc, "mon" | "osd") {
                Caps::parse(text)?;
            }
            m.insert(svc.to_string(), text.trim().to_string());
        }
        Ok(EntityCaps(m))
    }

    /// `mon 'allow *' osd 'allow *' mgr 'allow *'`: the admin's caps.
    pub fn admin() -> EntityCaps {
        let mut m = BTreeMap::new();
        for s in ["mon", "osd", "mgr"] {
            m.insert(s.to_string(), "allow *".to_string());
        }
        EntityCaps(m)
    }

    /// Parsed caps for a service (none if absent or, defensively, invalid).
    pub fn service(&self, svc: &str) -> Caps {
        self.0
            .get(svc)
            .and_then(|t| Caps::parse(t).ok())
            .unwrap_or_else(Caps::none)
    }

    /// The monitor caps.
    pub fn mon(&self) -> Caps {
        self.service("mon")
    }

    /// The OSD caps.
    pub fn osd(&self) -> Caps {
        self.service("osd")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Caps {
        Caps::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn allow_forms() {
        let c = p("allow *");
        assert!(c.allows("any", "", true) && c.mon_allows(MonAccess::AuthAdmin));
        let c = p("allow r");
        assert!(c.allows("rbd", "x", false) && !c.allows("rbd", "", true));
        assert!(c.mon_allows(MonAccess::Read) && !c.mon_allows(MonAccess::Write));
        let c = p("allow rw pool=rbd");
        assert!(c.allows("rbd", "", true) && c.allows("rbd", "ns", false));
        assert!(!c.allows("data", "", false));
        let c = p("allow rwx pool=data namespace=ns1");
        assert!(c.allows("data", "ns1", true));
        assert!(!c.allows("data", "", true) && !c.allows("data", "ns2", false));
        let c = p("allow rwx pool = data namespace = ns*");
        assert!(c.allows("data", "ns42", true) && !c.allows("data", "x", true));
        // Old syntax, matcher before permissions.
        let c = p("allow pool foo rwx");
        assert!(c.allows("foo", "", true) && !c.allows("bar", "", true));
        let c = p("allow r class-read object_prefix rbd_children");
        assert!(!c.allows("rbd", "", false));
        assert!(c.allows_object("rbd", "", Some("rbd_children"), false));
        let c = p("allow command \"osd blocklist\"");
        assert!(!c.mon_allows(MonAccess::Read));
        assert!(c.mon_allows(MonAccess::Blocklist));
        assert!(p("profile rbd").mon_allows(MonAccess::Blocklist));
        assert!(!p("allow r").mon_allows(MonAccess::Blocklist));
        assert!(p("allow rw").mon_allows(MonAccess::Blocklist));
    }

    #[test]
    fn profiles() {
        let c = p("profile rbd");
        assert!(c.allows("anything", "", true));
        assert!(c.mon_allows(MonAccess::Read) && !c.mon_allows(MonAccess::Write));
        let c = p("profile rbd pool=images");
        assert!(c.allows("images", "", true) && !c.allows("vms", "", false));
        let c = p("profile rbd pool=images, profile rbd-read-only pool=golden");
        assert!(c.allows("golden", "", false) && !c.allows("golden", "", true));
        assert!(c.allows("images", "", true));
        let c = p("profile osd");
        assert!(c.mon_allows(MonAccess::OsdDaemon) && !c.mon_allows(MonAccess::AuthAdmin));
        assert!(p("allow profile osd").mon_allows(MonAccess::OsdDaemon));
        assert!(p("profile mon").mon_allows(MonAccess::AuthAdmin));
        assert!(p("profile bootstrap-osd").mon_allows(MonAccess::BootstrapOsd));
        let c = p("allow r; allow rw pool=x");
        assert!(c.allows("x", "", true) && c.allows("y", "", false));
        assert!(!Caps::none().allows("x", "", false));
        assert!(p("").grants.is_empty());
    }

    #[test]
    fn malformed() {
        for bad in [
            "allow",
            "deny r",
            "allow rwz",
            "allow rr",
            "allow r pool",
            "allow r pool=",
            "allow r pool=a pool=b",
            "profile",
            "profile nosuch",
            "profile rbd rw",
            "allow r,",
            ", allow r",
            "allow r,,allow w",
            "allow r tag cephfs data=x",
            "allow command",
            "allow \"r",
            "allow = r",
            "allow r\u{1}",
        ] {
            let e = Caps::parse(bad).expect_err(bad);
            assert_eq!(e.errno(), quarry_common::Errno::EINVAL);
            assert!(e.to_string().contains("invalid caps"), "{e}");
        }
    }

    #[test]
    fn entity_caps() {
        let e =
            EntityCaps::from_pairs(&[("mon", "profile rbd"), ("osd", "profile rbd pool=glance")])
                .expect("ok");
        assert!(e.osd().allows("glance", "", true));
        assert!(e.mon().mon_allows(MonAccess::Read));
        assert!(EntityCaps::from_pairs(&[("osd", "allow q")]).is_err());
        assert!(EntityCaps::from_pairs(&[("disk", "allow r")]).is_err());
        assert!(EntityCaps::admin().mon().mon_allows(MonAccess::AuthAdmin));
        let c: Caps = serde_json_like_roundtrip(&p("allow rw pool=a"));
        assert_eq!(c, p("allow rw pool=a"));
    }

    fn serde_json_like_roundtrip(c: &Caps) -> Caps {
        let b = postcard::to_stdvec(c).expect("encode");
        postcard::from_bytes(&b).expect("decode")
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = Caps::parse(&s);
        }
    }
}
