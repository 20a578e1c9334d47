//! Client configuration the way librados keeps it: one value per option and
//! per source level, the effective value being the highest level present
//! (default < config file < environment < `rados_conf_set`), regardless of
//! the order of calls. Option names and types come from Ceph 16.2.15's
//! option schema (`options.tsv`, generated from the reference dump) plus
//! Quarry's own options; unknown names are `ENOENT`, bad values `EINVAL`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use quarry_common::Errno;

/// Where a value came from; higher wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The config file (`rados_conf_read_file`).
    File = 1,
    /// `CEPH_ARGS` and `CEPH_KEYRING` (parsed in `rados_create`).
    Env = 2,
    /// `rados_conf_set` (QEMU's `:key=value` pairs and its `rbd_cache`).
    Override = 3,
}

/// Value type of an option, as in Ceph's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptType {
    /// `true`/`false`/`1`/`0`.
    Bool,
    /// Signed integer.
    Int,
    /// Unsigned integer.
    Uint,
    /// Free string (or enum when `enum_values` is non-empty).
    Str,
    /// Floating point.
    Float,
    /// Byte size with optional binary suffix.
    Size,
    /// Seconds with optional unit.
    Secs,
    /// Milliseconds.
    Millisecs,
    /// Address, address vector, uuid: kept as strings.
    Other,
}

/// One option of the registry.
#[derive(Clone, Debug)]
pub struct OptDef {
    /// Option name (underscores).
    pub name: String,
    /// Value type.
    pub ty: OptType,
    /// Default value, canonical form.
    pub default: String,
    /// Allowed values for enum strings (empty = any).
    pub enum_values: Vec<String>,
    /// Whether `rados_conf_set` may change it after `rados_connect`.
    pub runtime: bool,
}

/// Options Quarry adds to Ceph's set.
const QUARRY_OPTIONS: &[(&str, OptType, &str)] = &[
    // In-process object store directory (tests, single-process use).
    ("quarry_embedded_dir", OptType::Str, ""),
];

fn registry() -> &'static HashMap<String, OptDef> {
    static REG: OnceLock<HashMap<String, OptDef>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut m = HashMap::new();
        for line in include_str!("options.tsv").lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 5 {
                continue;
            }
            let ty = match f[1] {
                "bool" => OptType::Bool,
                "int" => OptType::Int,
                "uint" => OptType::Uint,
                "str" => OptType::Str,
                "float" => OptType::Float,
                "size" => OptType::Size,
                "secs" => OptType::Secs,
                "millisecs" => OptType::Millisecs,
                _ => OptType::Other,
            };
            let default = match ty {
                OptType::Bool => f[2].to_ascii_lowercase(),
                _ => f[2].to_string(),
            };
            let enum_values = if f[3].is_empty() {
                Vec::new()
            } else {
                f[3].split('|').map(str::to_string).collect()
            };
            m.insert(
                f[0].to_string(),
                OptDef {
                    name: f[0].to_string(),
                    ty,
                    default,
                    enum_values,
                    runtime: f[4] == "1",
                },
            );
        }
        for (name, ty, default) in QUARRY_OPTIONS {
            m.insert(
                name.to_string(),
                OptDef {
                    name: name.to_string(),
                    ty: *ty,
                    default: default.to_string(),
                    enum_values: Vec::new(),
                    runtime: false,
                },
            );
        }
        m
    })
}

/// Look an option up by name (exact; dashes are not normalized, as librados).
pub fn lookup(name: &str) -> Option<&'static OptDef> {
    registry().get(name)
}

/// RBD feature bits by name (`rbd_default_features` accepts names).
pub const FEATURE_NAMES: &[(&str, u64)] = &[
    ("layering", 1),
    ("striping", 2),
    ("exclusive-lock", 4),
    ("object-map", 8),
    ("fast-diff", 16),
    ("deep-flatten", 32),
    ("journaling", 64),
    ("data-pool", 128),
    ("operations", 256),
    ("migrating", 512),
    ("non-primary", 1024),
];

/// Parse a feature list (`layering,exclusive-lock` or a number).
pub fn parse_features(v: &str) -> Result<u64, Errno> {
    if let Ok(n) = v.trim().parse::<u64>() {
        return Ok(n);
    }
    let mut bits = 0;
    for name in v.split([',', ' ', ';']).filter(|s| !s.is_empty()) {
        let b = FEATURE_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or(Errno::EINVAL)?;
        bits |= b.1;
    }
    Ok(bits)
}

fn parse_size(v: &str) -> Result<u64, Errno> {
    let v = v.trim();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if digits_end == 0 {
        return Err(Errno::EINVAL);
    }
    let n: u64 = v[..digits_end].parse().map_err(|_| Errno::EINVAL)?;
    let shift = match &v[digits_end..] {
        "" | "B" => 0,
        "K" | "Ki" => 10,
        "M" | "Mi" => 20,
        "G" | "Gi" => 30,
        "T" | "Ti" => 40,
        "P" | "Pi" => 50,
        "E" | "Ei" => 60,
        _ => return Err(Errno::EINVAL),
    };
    n.checked_mul(1u64 << shift).ok_or(Errno::EINVAL)
}

fn parse_secs(v: &str) -> Result<u64, Errno> {
    let v = v.trim();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if digits_end == 0 {
        return Err(Errno::EINVAL);
    }
    let n: u64 = v[..digits_end].parse().map_err(|_| Errno::EINVAL)?;
    let mul = match &v[digits_end..] {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "wk" | "week" | "weeks" => 604800,
        _ => return Err(Errno::EINVAL),
    };
    n.checked_mul(mul).ok_or(Errno::EINVAL)
}

/// Validate `value` for option `def`; returns the canonical stored form.
pub fn validate(def: &OptDef, value: &str) -> Result<String, Errno> {
    match def.ty {
        OptType::Bool => match value {
            "true" | "TRUE" | "True" | "1" => Ok("true".into()),
            "false" | "FALSE" | "False" | "0" => Ok("false".into()),
            _ => Err(Errno::EINVAL),
        },
        OptType::Int => value
            .trim()
            .parse::<i64>()
            .map(|n| n.to_string())
            .map_err(|_| Errno::EINVAL),
        OptType::Uint | OptType::Millisecs => value
            .trim()
            .parse::<u64>()
            .map(|n| n.to_string())
            .map_err(|_| Errno::EINVAL),
        OptType::Float => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f.to_string())
            .ok_or(Errno::EINVAL),
        OptType::Size => parse_size(value).map(|n| n.to_string()),
        OptType::Secs => parse_secs(value).map(|n| n.to_string()),
        OptType::Str => {
            if def.name == "rbd_default_features" {
                return parse_features(value).map(|n| n.to_string());
            }
            if !def.enum_values.is_empty() && !def.enum_values.iter().any(|e| e == value) {
                return Err(Errno::EINVAL);
            }
            Ok(value.to_string())
        }
        OptType::Other => Ok(value.to_string()),
    }
}

/// A client's configuration: values per level, plus identity.
#[derive(Clone, Debug)]
pub struct Config {
    values: HashMap<String, [Option<String>; 4]>,
    /// Cluster name (`ceph` unless `rados_create2` or a conf path says).
    pub cluster: String,
    /// Whether the cluster name was fixed (by create2 or a first read).
    pub cluster_fixed: bool,
    /// Entity type (`client`).
    pub entity_type: String,
    /// Entity id (`admin`).
    pub entity_id: String,
}

impl Config {
    /// A configuration for `type.id` with defaults only.
    pub fn new(entity_type: &str, entity_id: &str) -> Config {
        Config {
            values: HashMap::new(),
            cluster: "ceph".into(),
            cluster_fixed: false,
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
        }
    }

    /// `type.id`.
    pub fn entity_name(&self) -> String {
        format!("{}.{}", self.entity_type, self.entity_id)
    }

    /// Set an option at a level after validation.
    pub fn set(&mut self, level: Level, name: &str, value: &str) -> Result<(), Errno> {
        let def = lookup(name).ok_or(Errno::ENOENT)?;
        let v = validate(def, value)?;
        self.values.entry(def.name.clone()).or_default()[level as usize] = Some(v);
        Ok(())
    }

    /// Whether a value for `name` was set at any level (not only default).
    pub fn is_set(&self, name: &str) -> bool {
        self.values
            .get(name)
            .is_some_and(|l| l.iter().any(Option::is_some))
    }

    /// Effective raw value (metavariables not expanded). `ENOENT` if unknown.
    pub fn get_raw(&self, name: &str) -> Result<String, Errno> {
        let def = lookup(name).ok_or(Errno::ENOENT)?;
        if let Some(levels) = self.values.get(name) {
            if let Some(v) = levels.iter().rev().flatten().next() {
                return Ok(v.clone());
            }
        }
        Ok(def.default.clone())
    }

    /// Effective value with metavariables expanded.
    pub fn get(&self, name: &str) -> Result<String, Errno> {
        Ok(self.expand(&self.get_raw(name)?, 0))
    }

    /// Effective bool (false if unparsable).
    pub fn get_bool(&self, name: &str) -> bool {
        self.get(name).is_ok_and(|v| v == "true")
    }

    /// Effective unsigned number (sizes, secs and uints are stored canonical).
    pub fn get_u64(&self, name: &str) -> u64 {
        self.get(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Effective float.
    pub fn get_f64(&self, name: &str) -> f64 {
        self.get(name)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// Expand `$cluster`, `$type`, `$id`, `$name`, `$host`, `$pid`,
    /// `${var}` and `$option` metavariables.
    pub fn expand(&self, s: &str, depth: u32) -> String {
        if !s.contains('$') || depth > 8 {
            return s.to_string();
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (var, consumed) = if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) => (&inner[..end], end + 2),
                    None => ("", 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            let val = match var {
                "" => None,
                "cluster" => Some(self.cluster.clone()),
                "type" => Some(self.entity_type.clone()),
                "id" => Some(self.entity_id.clone()),
                "name" => Some(self.entity_name()),
                "host" => Some(short_hostname()),
                "pid" => Some(std::process::id().to_string()),
                "home" => std::env::var("HOME").ok(),
                "data_dir" => None,
                other => lookup(other)
                    .and_then(|_| self.get_raw(other).ok())
                    .map(|v| self.expand(&v, depth + 1)),
            };
            match val {
                Some(v) => {
                    out.push_str(&v);
                    rest = &after[consumed..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Apply `CEPH_ARGS`-style arguments (`--opt=value`, `--opt value`,
    /// `--id X`, `--name T.X`, `-n`, `-k`) at the environment level.
    /// Unknown options are ignored, as librados does for the environment.
    pub fn parse_args(&mut self, args: &[String]) {
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
                continue;
            };
            let (key, mut value) = match body.split_once('=') {
                Some((k, v)) => (k.replace('-', "_"), Some(v.to_string())),
                None => (body.replace('-', "_"), None),
            };
            let takes_value = match key.as_str() {
                "id" | "i" | "name" | "n" | "k" | "c" => true,
                k => lookup(k).is_some_and(|d| d.ty != OptType::Bool),
            };
            if value.is_none() {
                if takes_value && i < args.len() {
                    value = Some(args[i].clone());
                    i += 1;
                } else {
                    value = Some("true".into());
                }
            }
            let v = value.unwrap_or_default();
            match key.as_str() {
                "id" | "i" => self.entity_id = v,
                "name" | "n" => {
                    if let Some((t, id)) = v.split_once('.') {
                        self.entity_type = t.into();
                        self.entity_id = id.into();
                    }
                }
                "k" => {
                    let _ = self.set(Level::Env, "keyring", &v);
                }
                "c" => {
                    let _ = self.set(Level::Env, "conf", &v);
                }
                k => {
                    let _ = self.set(Level::Env, k, &v);
                }
            }
        }
    }

    /// Read `CEPH_ARGS` and `CEPH_KEYRING` from the environment.
    pub fn apply_env(&mut self) {
        if let Ok(args) = std::env::var("CEPH_ARGS") {
            let v: Vec<String> = args.split_whitespace().map(str::to_string).collect();
            self.parse_args(&v);
        }
        if let Ok(k) = std::env::var("CEPH_KEYRING") {
            let _ = self.set(Level::Env, "keyring", &k);
        }
    }

    /// `rados_conf_read_file`: `None` searches `$CEPH_CONF` or the default
    /// list; a path may be a `,`/`;` list. The first existing file wins.
    pub fn read_file(&mut self, path: Option<&str>) -> Result<(), Errno> {
        let list = match path {
            Some(p) => p.to_string(),
            None => match std::env::var("CEPH_CONF") {
                Ok(p) if !p.is_empty() => p,
                _ => "/etc/ceph/$cluster.conf,$home/.ceph/$cluster.conf,$cluster.conf".into(),
            },
        };
        if !self.cluster_fixed {
            self.cluster_fixed = true;
            if let Some(p) = path {
                let first = p.split([',', ';']).next().unwrap_or("");
                if let Some(stem) = Path::new(first)
                    .file_name()
                    .and_then(|f| f.to_str())
                    .and_then(|f| f.strip_suffix(".conf"))
                {
                    if !stem.is_empty() {
                        self.cluster = stem.to_string();
                    }
                }
            }
        }
        for item in list.split([',', ';']) {
            let item = self.expand(item.trim(), 0);
            if item.is_empty() {
                continue;
            }
            let text = match std::fs::read(&item) {
                Ok(t) => t,
                Err(_) => continue,
            };
            let text = String::from_utf8_lossy(&text);
            let sections = parse_ini(&text).map_err(|e| {
                eprintln!("parse error: {item}: {e}");
                Errno::EINVAL
            })?;
            self.apply_sections(&sections);
            return Ok(());
        }
        Err(Errno::ENOENT)
    }

    fn apply_sections(&mut self, sections: &[Section]) {
        // Precedence: [type.id] > [type] > [global]; apply lowest first.
        let name = self.entity_name();
        let etype = self.entity_type.clone();
        for wanted in ["global", etype.as_str(), name.as_str()] {
            for (sec, kvs) in sections {
                if sec != wanted {
                    continue;
                }
                for (k, v) in kvs {
                    // Unknown keys and bad values in files are ignored,
                    // as librados does (it only warns).
                    let _ = self.set(Level::File, k, v);
                }
            }
        }
    }
}

/// The host name up to the first dot.
pub fn short_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for 256 bytes; gethostname writes at most that.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).to_string();
    h.split('.').next().unwrap_or("localhost").to_string()
}

/// One INI section: name and its `(key, value)` pairs in file order.
pub type Section = (String, Vec<(String, String)>);

/// Sections of an INI file: `(name, [(key, value)])`, keys normalized
/// (spaces → `_`), values unquoted and stripped of trailing comments.
pub fn parse_ini(text: &str) -> Result<Vec<Section>, String> {
    let mut out: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(format!("line {}: unterminated section", lineno + 1));
            };
            let name = rest[..end].trim().to_string();
            current = Some(match out.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    out.push((name, Vec::new()));
                    out.len() - 1
                }
            });
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected key = value", lineno + 1));
        };
        let key: String = k.split_whitespace().collect::<Vec<_>>().join("_");
        let mut val = v.trim().to_string();
        if let Some(q) = val.strip_prefix('"') {
            if let Some(end) = q.find('"') {
                val = q[..end].to_string();
            }
        } else {
            for c in ['#', ';'] {
                if let Some(p) = val.find(c) {
                    val = val[..p].trim_end().to_string();
                }
            }
        }
        let Some(idx) = current else {
            // Keys before any section belong to [global].
            out.push(("global".into(), vec![(key, val)]));
            current = Some(out.len() - 1);
            continue;
        };
        out[idx].1.push((key, val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_beat_call_order() {
        let mut c = Config::new("client", "admin");
        c.set(Level::Override, "rbd_cache_size", "6").unwrap();
        c.set(Level::File, "rbd_cache_size", "7").unwrap();
        assert_eq!(c.get("rbd_cache_size").unwrap(), "6");
        assert_eq!(c.get("rbd_cache").unwrap(), "true");
        assert_eq!(
            c.set(Level::Override, "no_such_opt", "1"),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            c.set(Level::Override, "rbd_cache", "maybe"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            c.set(Level::Override, "rbd_cache", "yes"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            c.set(Level::Override, "rbd_cache_policy", "WriteBack"),
            Err(Errno::EINVAL)
        );
        c.set(Level::Override, "rbd_cache_max_dirty", "32M")
            .unwrap();
        assert_eq!(c.get_u64("rbd_cache_max_dirty"), 32 << 20);
        assert_eq!(
            c.set(Level::Override, "rbd_cache_max_dirty", "32MiB"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            c.set(Level::Override, "rbd-cache-size", "1"),
            Err(Errno::ENOENT)
        );
        c.set(
            Level::Override,
            "rbd_default_features",
            "layering,exclusive-lock",
        )
        .unwrap();
        assert_eq!(c.get("rbd_default_features").unwrap(), "5");
    }

    #[test]
    fn ini_sections_and_expansion() {
        let text = "[global]\nrbd cache size = 100 ; c\n[client]\nrbd_cache_size=200\n[client.admin]\nkeyring = /x/$cluster.$name.keyring\n[client.other]\nrbd_cache_size=300\n";
        let mut c = Config::new("client", "admin");
        let s = parse_ini(text).unwrap();
        c.apply_sections(&s);
        assert_eq!(c.get("rbd_cache_size").unwrap(), "200");
        assert_eq!(c.get("keyring").unwrap(), "/x/ceph.client.admin.keyring");
    }
}
