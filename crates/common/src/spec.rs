//! Image specs: the rbd CLI's `[pool/[namespace/]]image[@snap]` and QEMU's
//! `rbd:pool/[namespace/]image[@snap][:key=value...]`.
//!
//! The QEMU form is tokenized exactly as QEMU's block/rbd.c does, so that a
//! string means the same to our tools as to QEMU:
//! - `\` escapes the next character anywhere (`\:`, `\@`, `\=`, `\/`,
//!   `\\`); a lone trailing `\` stays literal;
//! - the pool ends at the first unescaped `/` (none → "Pool name is required");
//! - if an unescaped `@` occurs anywhere after that — even inside an option
//!   value — the image ends there and the snapshot runs to the next `:`;
//!   so `@` in option values must be escaped;
//! - a `/` inside the image part splits off a namespace;
//! - each option's key runs to the next unescaped `=` (across `:`), its
//!   value to the next unescaped `:`; `conf` and `id` are special.
//!
//! On top of QEMU's tokenizer, names are validated (non-empty, no `/` or `@`,
//! no control characters, bounded length) with errors that name the part.

use std::fmt;

use crate::entity::{EntityError, EntityName};
use crate::Errno;

/// Longest pool, namespace, image or snapshot name accepted, in bytes.
/// Names become parts of object names and file-like paths; 255 is the
/// usual file-name limit and far above any real name.
pub const MAX_NAME_LEN: usize = 255;

/// Which part of a spec a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamePart {
    /// The pool.
    Pool,
    /// The namespace inside the pool.
    Namespace,
    /// The image.
    Image,
    /// The snapshot.
    Snapshot,
}

impl fmt::Display for NamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamePart::Pool => "pool",
            NamePart::Namespace => "namespace",
            NamePart::Image => "image",
            NamePart::Snapshot => "snapshot",
        })
    }
}

/// Why a spec was refused. Every variant says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A QEMU spec without the `rbd:` prefix.
    #[error("File name must start with 'rbd:'")]
    MissingPrefix,
    /// A QEMU spec without `/` after the pool.
    #[error("Pool name is required")]
    PoolRequired,
    /// A name is empty.
    #[error("invalid spec '{spec}': {part} name is empty")]
    EmptyName {
        /// The spec as given.
        spec: String,
        /// The empty part.
        part: NamePart,
    },
    /// A name contains a character that is not allowed.
    #[error("invalid {part} name '{name}': character {ch:?} is not allowed")]
    BadChar {
        /// The part.
        part: NamePart,
        /// The name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// A name is too long.
    #[error("invalid {part} name: {len} bytes is longer than the limit of {max}")]
    TooLong {
        /// The part.
        part: NamePart,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An rbd-CLI spec with too many `/` (more than pool/namespace/image).
    #[error("invalid spec '{0}': expected [pool/[namespace/]]image[@snap]")]
    Malformed(String),
    /// A spec names a snapshot where none is allowed.
    #[error("invalid spec '{0}': a snapshot is not allowed here")]
    SnapNotAllowed(String),
    /// A spec lacks a snapshot where one is required.
    #[error("invalid spec '{0}': a snapshot name is required (image@snap)")]
    SnapRequired(String),
    /// A QEMU option without `=`; the text is what QEMU would print.
    #[error("conf option {0} has no value")]
    OptionNoValue(String),
    /// A QEMU option with an empty key.
    #[error("conf option with empty name (value '{0}')")]
    EmptyOptionKey(String),
    /// `id=` is not a valid client id.
    #[error("invalid id in spec: {0}")]
    BadId(#[from] EntityError),
}

impl SpecError {
    /// The errno this maps to (always EINVAL).
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

impl From<SpecError> for Errno {
    fn from(e: SpecError) -> Errno {
        e.errno()
    }
}

/// Check one name of a spec.
pub fn validate_name(part: NamePart, name: &str, spec: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(SpecError::EmptyName {
            spec: spec.to_string(),
            part,
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SpecError::TooLong {
            part,
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| matches!(c, '/' | '@') || c.is_control())
    {
        return Err(SpecError::BadChar {
            part,
            name: name.to_string(),
            ch,
        });
    }
    Ok(())
}

/// A pool and namespace, as `rbd ls pool[/namespace]` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolSpec {
    /// The pool.
    pub pool: String,
    /// The namespace; empty for the default namespace.
    pub namespace: String,
}

impl PoolSpec {
    /// Parse `pool[/namespace]`; an empty string means `default_pool`.
    pub fn parse(spec: &str, default_pool: &str) -> Result<PoolSpec, SpecError> {
        let (pool, namespace) = match spec.split_once('/') {
            Some((p, ns)) => {
                validate_name(NamePart::Namespace, ns, spec)?;
                (p, ns)
            }
            None if spec.is_empty() => (default_pool, ""),
            None => (spec, ""),
        };
        validate_name(NamePart::Pool, pool, spec)?;
        Ok(PoolSpec {
            pool: pool.to_string(),
            namespace: namespace.to_string(),
        })
    }
}

impl fmt::Display for PoolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.pool)
        } else {
            write!(f, "{}/{}", self.pool, self.namespace)
        }
    }
}

/// An image (or snapshot) location, as the rbd CLI takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// The pool.
    pub pool: String,
    /// The namespace; empty for the default namespace.
    pub namespace: String,
    /// The image name.
    pub image: String,
    /// The snapshot name, if any.
    pub snap: Option<String>,
}

impl ImageSpec {
    /// Build and validate a spec from parts.
    pub fn new(
        pool: &str,
        namespace: &str,
        image: &str,
        snap: Option<&str>,
    ) -> Result<ImageSpec, SpecError> {
        let s = ImageSpec {
            pool: pool.to_string(),
            namespace: namespace.to_string(),
            image: image.to_string(),
            snap: snap.map(str::to_string),
        };
        s.validate()?;
        Ok(s)
    }

    /// Parse `[pool/[namespace/]]image[@snap]`; without a pool,
    /// `default_pool` (the `rbd_default_pool` option, normally `rbd`).
    pub fn parse(spec: &str, default_pool: &str) -> Result<ImageSpec, SpecError> {
        let (path, snap) = match spec.split_once('@') {
            Some((p, s)) => (p, Some(s)),
            None => (spec, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (pool, namespace, image) = match parts.as_slice() {
            [image] => (default_pool, "", *image),
            [pool, image] => (*pool, "", *image),
            [pool, ns, image] => {
                // `pool//image`: an explicitly empty namespace is a typo.
                validate_name(NamePart::Namespace, ns, spec)?;
                (*pool, *ns, *image)
            }
            _ => return Err(SpecError::Malformed(spec.to_string())),
        };
        let s = ImageSpec {
            pool: pool.to_string(),
            namespace: namespace.to_string(),
            image: image.to_string(),
            snap: snap.map(str::to_string),
        };
        s.validate_in(spec)?;
        Ok(s)
    }

    /// Like [`ImageSpec::parse`] with the default pool taken from the
    /// `rbd_default_pool` option of `cfg`.
    pub fn parse_with_config(
        spec: &str,
        cfg: &crate::options::Config,
    ) -> Result<ImageSpec, SpecError> {
        let pool = cfg
            .get("rbd_default_pool")
            .unwrap_or_else(|| "rbd".to_string());
        ImageSpec::parse(spec, &pool)
    }

    /// Like [`ImageSpec::parse`], refusing a snapshot (`rbd create`, `rm`).
    pub fn parse_no_snap(spec: &str, default_pool: &str) -> Result<ImageSpec, SpecError> {
        let s = ImageSpec::parse(spec, default_pool)?;
        if s.snap.is_some() {
            return Err(SpecError::SnapNotAllowed(spec.to_string()));
        }
        Ok(s)
    }

    /// Like [`ImageSpec::parse`], requiring a snapshot (`rbd snap create`).
    pub fn parse_snap(spec: &str, default_pool: &str) -> Result<ImageSpec, SpecError> {
        let s = ImageSpec::parse(spec, default_pool)?;
        if s.snap.is_none() {
            return Err(SpecError::SnapRequired(spec.to_string()));
        }
        Ok(s)
    }

    /// Check every part.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_in(&self.to_string())
    }

    fn validate_in(&self, spec: &str) -> Result<(), SpecError> {
        validate_name(NamePart::Pool, &self.pool, spec)?;
        if !self.namespace.is_empty() {
            validate_name(NamePart::Namespace, &self.namespace, spec)?;
        }
        validate_name(NamePart::Image, &self.image, spec)?;
        if let Some(snap) = &self.snap {
            validate_name(NamePart::Snapshot, snap, spec)?;
        }
        Ok(())
    }

    /// The pool and namespace part.
    pub fn pool_spec(&self) -> PoolSpec {
        PoolSpec {
            pool: self.pool.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl fmt::Display for ImageSpec {
    /// `pool/[namespace/]image[@snap]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.pool)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        f.write_str(&self.image)?;
        if let Some(s) = &self.snap {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}

/// A QEMU `rbd:` filename, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QemuSpec {
    /// The pool.
    pub pool: String,
    /// The namespace; empty for the default namespace.
    pub namespace: String,
    /// The image name.
    pub image: String,
    /// The snapshot name, if any.
    pub snap: Option<String>,
    /// `conf=PATH`: the conf file to read instead of the default search.
    pub conf: Option<String>,
    /// `id=USER`: the client id (without `client.`).
    pub user: Option<String>,
    /// Every other `key=value` pair, in order, for `rados_conf_set`.
    pub options: Vec<(String, String)>,
}

impl QemuSpec {
    /// Parse an `rbd:` filename as QEMU does, then validate the names.
    pub fn parse(spec: &str) -> Result<QemuSpec, SpecError> {
        let rest = spec.strip_prefix("rbd:").ok_or(SpecError::MissingPrefix)?;
        let (pool, rest) = next_tok(rest, '/');
        let rest = rest.ok_or(SpecError::PoolRequired)?;
        let (image_part, snap, mut rest) = if find_unescaped(rest, '@').is_some() {
            let (image, after) = next_tok(rest, '@');
            let after = after.unwrap_or("");
            let (snap, after) = next_tok(after, ':');
            (image, Some(unescape(snap)), after)
        } else {
            let (image, after) = next_tok(rest, ':');
            (image, None, after)
        };
        let (namespace, image) = if find_unescaped(image_part, '/').is_some() {
            let (ns, img) = next_tok(image_part, '/');
            (unescape(ns), unescape(img.unwrap_or("")))
        } else {
            (String::new(), unescape(image_part))
        };
        let mut out = QemuSpec {
            pool: unescape(pool),
            namespace,
            image,
            snap,
            conf: None,
            user: None,
            options: Vec::new(),
        };
        while let Some(r) = rest {
            let (key, after) = next_tok(r, '=');
            let after = after.ok_or_else(|| SpecError::OptionNoValue(key.to_string()))?;
            let (value, after) = next_tok(after, ':');
            let (key, value) = (unescape(key), unescape(value));
            match key.as_str() {
                "" => return Err(SpecError::EmptyOptionKey(value)),
                "conf" => out.conf = Some(value),
                "id" => out.user = Some(value),
                _ => out.options.push((key, value)),
            }
            rest = after;
        }
        out.image_spec_in(spec)?;
        if let Some(user) = &out.user {
            EntityName::client(user)?;
        }
        Ok(out)
    }

    fn image_spec_in(&self, spec: &str) -> Result<ImageSpec, SpecError> {
        let s = ImageSpec {
            pool: self.pool.clone(),
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            snap: self.snap.clone(),
        };
        s.validate_in(spec)?;
        Ok(s)
    }

    /// The image location part.
    pub fn image_spec(&self) -> ImageSpec {
        ImageSpec {
            pool: self.pool.clone(),
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            snap: self.snap.clone(),
        }
    }

    /// The entity to connect as: `client.<id>`, or `client.admin`.
    pub fn entity(&self) -> Result<EntityName, SpecError> {
        match &self.user {
            Some(u) => Ok(EntityName::client(u)?),
            None => Ok(EntityName::admin()),
        }
    }
}

impl fmt::Display for QemuSpec {
    /// The `rbd:` form with every special character escaped, so that
    /// parsing the output gives back an equal spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rbd:{}/", escape_name(&self.pool))?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", escape_name(&self.namespace))?;
        }
        f.write_str(&escape_name(&self.image))?;
        if let Some(s) = &self.snap {
            write!(f, "@{}", escape_name(s))?;
        }
        if let Some(c) = &self.conf {
            write!(f, ":conf={}", escape(c))?;
        }
        if let Some(u) = &self.user {
            write!(f, ":id={}", escape(u))?;
        }
        for (k, v) in &self.options {
            write!(f, ":{}={}", escape(k), escape(v))?;
        }
        Ok(())
    }
}

/// Escape `\`, `:`, `@` and `=` for use in an `rbd:` option key or value.
pub fn escape(s: &str) -> String {
    escape_set(s, &['\\', ':', '@', '='])
}

/// Escape a pool/namespace/image/snapshot name: as [`escape`], plus `/`.
pub fn escape_name(s: &str) -> String {
    escape_set(s, &['\\', ':', '@', '=', '/'])
}

fn escape_set(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Remove QEMU escapes: `\x` → `x`; a lone trailing `\` stays.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Byte index of the first unescaped `delim`, as QEMU's `qemu_rbd_strchr`.
fn find_unescaped(s: &str, delim: char) -> Option<usize> {
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        if c == delim {
            return Some(i);
        }
        if c == '\\' {
            // Skip the escaped character (if any).
            it.next();
        }
    }
    None
}

/// Split at the first unescaped `delim`, as QEMU's `qemu_rbd_next_tok`:
/// `(token, Some(rest))`, or `(whole, None)` when there is no delimiter.
fn next_tok(s: &str, delim: char) -> (&str, Option<&str>) {
    match find_unescaped(s, delim) {
        Some(i) => (&s[..i], Some(&s[i + delim.len_utf8()..])),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(pool: &str, ns: &str, image: &str, snap: Option<&str>) -> ImageSpec {
        ImageSpec {
            pool: pool.into(),
            namespace: ns.into(),
            image: image.into(),
            snap: snap.map(Into::into),
        }
    }

    #[test]
    fn rbd_cli_specs() {
        assert_eq!(
            ImageSpec::parse("foo", "rbd").unwrap(),
            img("rbd", "", "foo", None)
        );
        assert_eq!(
            ImageSpec::parse("data/img1", "rbd").unwrap(),
            img("data", "", "img1", None)
        );
        assert_eq!(
            ImageSpec::parse("data/img1@s1", "rbd").unwrap(),
            img("data", "", "img1", Some("s1"))
        );
        assert_eq!(
            ImageSpec::parse("data/ns1/img", "rbd").unwrap(),
            img("data", "ns1", "img", None)
        );
        assert_eq!(
            ImageSpec::parse("data/ns1/img@snap", "rbd").unwrap(),
            img("data", "ns1", "img", Some("snap"))
        );
        assert_eq!(
            ImageSpec::parse("img@s", "mypool").unwrap(),
            img("mypool", "", "img", Some("s"))
        );
        // Names may hold spaces, dots, colons: the C API accepts them.
        assert_eq!(
            ImageSpec::parse("p/a b.c:d", "rbd").unwrap().image,
            "a b.c:d"
        );
        assert_eq!(
            img("data", "ns1", "img", Some("s")).to_string(),
            "data/ns1/img@s"
        );
        assert_eq!(img("rbd", "", "foo", None).to_string(), "rbd/foo");
        assert_eq!(
            ImageSpec::new("data", "", "x", Some("s"))
                .unwrap()
                .pool_spec()
                .to_string(),
            "data"
        );
    }

    #[test]
    fn rbd_cli_spec_errors_name_the_part() {
        let e = |s: &str| ImageSpec::parse(s, "rbd").unwrap_err();
        assert_eq!(
            e(""),
            SpecError::EmptyName {
                spec: "".into(),
                part: NamePart::Image
            }
        );
        assert!(matches!(
            e("data/"),
            SpecError::EmptyName {
                part: NamePart::Image,
                ..
            }
        ));
        assert!(matches!(
            e("/img"),
            SpecError::EmptyName {
                part: NamePart::Pool,
                ..
            }
        ));
        assert!(matches!(
            e("p//img"),
            SpecError::EmptyName {
                part: NamePart::Namespace,
                ..
            }
        ));
        assert!(matches!(
            e("p/img@"),
            SpecError::EmptyName {
                part: NamePart::Snapshot,
                ..
            }
        ));
        assert!(matches!(
            e("p/img@a@b"),
            SpecError::BadChar {
                part: NamePart::Snapshot,
                ch: '@',
                ..
            }
        ));
        assert!(matches!(
            e("p/img@a/b"),
            SpecError::BadChar {
                part: NamePart::Snapshot,
                ch: '/',
                ..
            }
        ));
        assert!(matches!(e("a/b/c/d"), SpecError::Malformed(_)));
        assert!(matches!(
            e("p/im\u{7}g"),
            SpecError::BadChar {
                part: NamePart::Image,
                ..
            }
        ));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            e(&long),
            SpecError::TooLong {
                part: NamePart::Image,
                ..
            }
        ));
        assert!(ImageSpec::parse(&"x".repeat(MAX_NAME_LEN), "rbd").is_ok());
        let msg = e("p/img@").to_string();
        assert!(msg.contains("snapshot name is empty"), "{msg}");
        let msg = e("p/img@a/b").to_string();
        assert!(msg.contains("invalid snapshot name 'a/b'"), "{msg}");
        assert_eq!(e("").errno(), Errno::EINVAL);
        // The default pool itself is validated too.
        assert!(matches!(
            ImageSpec::parse("img", "").unwrap_err(),
            SpecError::EmptyName {
                part: NamePart::Pool,
                ..
            }
        ));
        assert!(ImageSpec::new("p", "", "i/j", None).is_err());
    }

    #[test]
    fn default_pool_from_config() {
        use crate::options::{Config, Level};
        let mut cfg = Config::new(EntityName::admin());
        assert_eq!(
            ImageSpec::parse_with_config("img", &cfg).unwrap().pool,
            "rbd"
        );
        cfg.set("rbd_default_pool", "data", Level::File).unwrap();
        assert_eq!(
            ImageSpec::parse_with_config("img", &cfg).unwrap().pool,
            "data"
        );
        assert_eq!(
            ImageSpec::parse_with_config("p/img", &cfg).unwrap().pool,
            "p"
        );
        assert_eq!(
            Errno::from(ImageSpec::parse("", "rbd").unwrap_err()),
            Errno::EINVAL
        );
    }

    #[test]
    fn snap_requirements() {
        assert!(ImageSpec::parse_no_snap("p/i", "rbd").is_ok());
        assert!(matches!(
            ImageSpec::parse_no_snap("p/i@s", "rbd"),
            Err(SpecError::SnapNotAllowed(_))
        ));
        assert!(ImageSpec::parse_snap("p/i@s", "rbd").is_ok());
        assert!(matches!(
            ImageSpec::parse_snap("p/i", "rbd"),
            Err(SpecError::SnapRequired(_))
        ));
    }

    #[test]
    fn pool_specs() {
        assert_eq!(
            PoolSpec::parse("data", "rbd").unwrap(),
            PoolSpec {
                pool: "data".into(),
                namespace: "".into()
            }
        );
        assert_eq!(PoolSpec::parse("data/ns1", "rbd").unwrap().namespace, "ns1");
        assert_eq!(PoolSpec::parse("", "rbd").unwrap().pool, "rbd");
        assert_eq!(
            PoolSpec::parse("data/ns1", "rbd").unwrap().to_string(),
            "data/ns1"
        );
        assert!(PoolSpec::parse("data/", "rbd").is_err());
        assert!(PoolSpec::parse("/ns", "rbd").is_err());
        assert!(PoolSpec::parse("a/b/c", "rbd").is_err());
    }

    fn q(s: &str) -> QemuSpec {
        QemuSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn qemu_specs_from_the_golden_record() {
        let s = q("rbd:data/foo");
        assert_eq!(
            (s.pool.as_str(), s.namespace.as_str(), s.image.as_str()),
            ("data", "", "foo")
        );
        assert_eq!(s.snap, None);

        let s = q("rbd:data/foo@snap2");
        assert_eq!(s.snap.as_deref(), Some("snap2"));

        let s = q("rbd:data/ns1/img");
        assert_eq!((s.namespace.as_str(), s.image.as_str()), ("ns1", "img"));

        let s = q("rbd:data/foo:id=glance:conf=/w/ceph.conf:keyring=/w/ceph.client.glance.keyring");
        assert_eq!(s.user.as_deref(), Some("glance"));
        assert_eq!(s.conf.as_deref(), Some("/w/ceph.conf"));
        assert_eq!(
            s.options,
            vec![("keyring".into(), "/w/ceph.client.glance.keyring".into())]
        );
        assert_eq!(s.entity().unwrap().to_string(), "client.glance");

        let s = q("rbd:data/foo:id=glance:conf=/w/dir\\:with\\:colons/ceph.conf");
        assert_eq!(s.conf.as_deref(), Some("/w/dir:with:colons/ceph.conf"));

        // Base64 keys keep their '=' (the value runs to the next ':').
        let s = q(
            "rbd:data/foo:id=admin:key=AQC6FgdrZEbtDhAAp+dWHBSoRtFxWR4tTqBWng==:\
             auth_supported=cephx\\;none:mon_host=127.0.0.1\\:6789",
        );
        assert_eq!(
            s.options,
            vec![
                (
                    "key".into(),
                    "AQC6FgdrZEbtDhAAp+dWHBSoRtFxWR4tTqBWng==".into()
                ),
                ("auth_supported".into(), "cephx;none".into()),
                ("mon_host".into(), "127.0.0.1:6789".into()),
            ]
        );
        assert_eq!(s.entity().unwrap().to_string(), "client.admin");

        let s = q("rbd:data/foo:rbd_cache=false:rbd_concurrent_management_ops=5");
        assert_eq!(s.options.len(), 2);
        assert_eq!(s.entity().unwrap(), EntityName::admin());

        // `id=client.glance` stays literal (QEMU's documented pitfall).
        let s = q("rbd:data/foo:id=client.glance");
        assert_eq!(s.entity().unwrap().to_string(), "client.client.glance");
    }

    #[test]
    fn qemu_errors_match_qemu_texts() {
        let e = |s: &str| QemuSpec::parse(s).unwrap_err();
        assert_eq!(e("data/foo"), SpecError::MissingPrefix);
        assert_eq!(
            e("data/foo").to_string(),
            "File name must start with 'rbd:'"
        );
        assert_eq!(e("rbd:data").to_string(), "Pool name is required");
        assert_eq!(e("rbd:data\\/foo").to_string(), "Pool name is required");
        // The unescaped-colon case from the golden record, same text.
        assert_eq!(
            e("rbd:data/foo:id=glance:conf=/w/dir:with:colons/ceph.conf").to_string(),
            "conf option with:colons/ceph.conf has no value"
        );
        assert!(matches!(e("rbd:data/foo:novalue"), SpecError::OptionNoValue(k) if k == "novalue"));
        assert!(matches!(e("rbd:data/foo:=x"), SpecError::EmptyOptionKey(_)));
        // Validation on top of QEMU: empty parts are named.
        assert!(matches!(
            e("rbd:data/"),
            SpecError::EmptyName {
                part: NamePart::Image,
                ..
            }
        ));
        assert!(matches!(
            e("rbd:/foo"),
            SpecError::EmptyName {
                part: NamePart::Pool,
                ..
            }
        ));
        assert!(matches!(
            e("rbd:p/img@"),
            SpecError::EmptyName {
                part: NamePart::Snapshot,
                ..
            }
        ));
        assert!(matches!(
            e("rbd:p/img@:a=b"),
            SpecError::EmptyName {
                part: NamePart::Snapshot,
                ..
            }
        ));
        assert!(matches!(
            e("rbd:p/ns/"),
            SpecError::EmptyName {
                part: NamePart::Image,
                ..
            }
        ));
        assert!(matches!(
            e("rbd:p/ns/a/b"),
            SpecError::BadChar {
                part: NamePart::Image,
                ch: '/',
                ..
            }
        ));
        assert!(matches!(
            e("rbd:p\\@x/img"),
            SpecError::BadChar {
                part: NamePart::Pool,
                ch: '@',
                ..
            }
        ));
        assert!(matches!(e("rbd:p/img:id=a b"), SpecError::BadId(_)));
        assert!(matches!(e("rbd:p/img:id="), SpecError::BadId(_)));
        assert_eq!(e("rbd:p/img:id=").errno(), Errno::EINVAL);
    }

    #[test]
    fn qemu_at_sign_quirk() {
        // An unescaped '@' anywhere (even in a value) ends the image there,
        // exactly as QEMU does: here "img:keyring=/x" is cut at its '/' into
        // namespace and image, and the snapshot is "y".
        let s = q("rbd:p/img:keyring=/x@y");
        assert_eq!(
            (s.namespace.as_str(), s.image.as_str()),
            ("img:keyring=", "x")
        );
        assert_eq!(s.snap.as_deref(), Some("y"));
        assert!(s.options.is_empty());
        // Escaped, it is an ordinary value character.
        let s = q("rbd:p/img:keyring=/x\\@y");
        assert_eq!((s.image.as_str(), s.snap.as_deref()), ("img", None));
        assert_eq!(s.options, vec![("keyring".into(), "/x@y".into())]);
        // A key runs to the next '=', across ':' (QEMU's tokenizer).
        let s = q("rbd:p/img:a:b=c");
        assert_eq!(s.options, vec![("a:b".into(), "c".into())]);
        // Values may contain '='.
        let s = q("rbd:p/img:k=a=b:l=c");
        assert_eq!(
            s.options,
            vec![("k".into(), "a=b".into()), ("l".into(), "c".into())]
        );
        // Repeated conf/id: the last wins.
        let s = q("rbd:p/img:id=a:id=b:conf=x:conf=y");
        assert_eq!(
            (s.user.as_deref(), s.conf.as_deref()),
            (Some("b"), Some("y"))
        );
        // Empty value is allowed.
        assert_eq!(q("rbd:p/i:k=").options, vec![("k".into(), "".into())]);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a:b@c=d\\e/f"), "a\\:b\\@c\\=d\\\\e/f");
        assert_eq!(escape_name("a/b"), "a\\/b");
        assert_eq!(unescape("a\\:b\\@c\\=d\\\\e\\/f"), "a:b@c=d\\e/f");
        assert_eq!(unescape("\\x"), "x");
        assert_eq!(unescape("trail\\"), "trail\\");
        assert_eq!(unescape(""), "");
        assert_eq!(find_unescaped("a\\:b:c", ':'), Some(4));
        assert_eq!(find_unescaped("a\\\\:b", ':'), Some(3));
        assert_eq!(find_unescaped("a\\", ':'), None);
        assert_eq!(next_tok("a:b:c", ':'), ("a", Some("b:c")));
        assert_eq!(next_tok("abc", ':'), ("abc", None));
        assert_eq!(next_tok("é:ü", ':'), ("é", Some("ü")));
    }

    #[test]
    fn display_roundtrips() {
        let s = QemuSpec {
            pool: "p:o=o".into(),
            namespace: "n\\s".into(),
            image: "im:g".into(),
            snap: Some("s=1".into()),
            conf: Some("/dir:with@odd=chars/ceph.conf".into()),
            user: Some("glance".into()),
            options: vec![
                ("mon_host".into(), "127.0.0.1:6789".into()),
                ("key".into(), "AQ==".into()),
                ("odd:key=".into(), "v@l\\".into()),
            ],
        };
        let text = s.to_string();
        assert!(
            text.starts_with("rbd:p\\:o\\=o/n\\\\s/im\\:g@s\\=1:conf="),
            "{text}"
        );
        assert_eq!(QemuSpec::parse(&text).unwrap(), s);
        assert_eq!(q("rbd:data/foo").to_string(), "rbd:data/foo");
        assert_eq!(q("rbd:data/foo").image_spec().to_string(), "data/foo");
    }
}
