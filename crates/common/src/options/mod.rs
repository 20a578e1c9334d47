//! The typed option registry and the leveled value store ([`Config`]).
//!
//! Two static tables make up the registry:
//! - [`QUARRY_OPTIONS`]: the options Quarry acts on, with Quarry's own
//!   descriptions;
//! - a generated table of every option real librados 16.2.15 knows (names,
//!   types, defaults, limits only; see `tools/gen_ceph_options.py`). Quarry
//!   accepts and stores these so that `rados_conf_set` succeeds exactly where
//!   Ceph's would (an unknown name is `-ENOENT`, and QEMU then refuses the
//!   image), but does nothing with them.
//!
//! Any `debug_<subsystem>` name is also accepted (log levels `N` or `N/M`).
//!
//! Names are normalized before lookup: spaces and dashes become underscores,
//! so `rbd cache`, `rbd-cache` and `rbd_cache` are one option. (Real Ceph
//! normalizes only spaces in files and `rados_conf_set`; accepting dashes
//! too is a deliberate superset.)
//!
//! Values are validated against the option's type as Ceph does: bools take
//! `true`/`false` (any case) or an integer — not `yes`/`no`; sizes take
//! `4096`, `4K`, `4Ki`, `32M` (binary; not `32MiB` or `32m`); ints take SI
//! suffixes (`2K` = 2000); secs take `5`, `5s`, `1m`, `1h 30m`.
//! A bad value is `-EINVAL`.

mod ceph_table;
mod config;
pub mod mondb;
mod table;

pub use config::{
    parse_ceph_args, split_env_args, CephArgs, ConfWarning, Config, Level, ShownOption,
};
pub use table::QUARRY_OPTIONS;

use crate::Errno;

/// The type of an option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptType {
    /// Free text (possibly restricted to [`OptionDef::enum_values`]).
    Str,
    /// Signed 64-bit integer; SI suffixes K, M, G, T, P, E (powers of 1000).
    Int,
    /// Unsigned 64-bit integer; SI suffixes as for `Int`.
    Uint,
    /// `true`/`false` (any case) or an integer (non-zero is true).
    Bool,
    /// Bytes; IEC suffixes B, K/Ki, M/Mi, G/Gi, T/Ti, P/Pi, E/Ei (powers of 1024).
    Size,
    /// 64-bit float.
    Float,
    /// A duration in whole seconds: `30`, `30s`, `5m`, `1h 30m`, `2d`.
    Secs,
    /// A duration in whole milliseconds.
    Millisecs,
    /// A network address (`1.2.3.4:6789`, `v2:...`, `-` for none).
    Addr,
    /// A list of network addresses.
    AddrVec,
    /// A UUID in 8-4-4-4-12 hex form.
    Uuid,
    /// RBD feature bits, as a number or a comma list of names (`layering,exclusive-lock`).
    Features,
    /// A log level `N` or `N/M` (log level / in-memory gather level), 0..=99.
    DebugLevel,
    /// Connection modes in order of preference (`ms_*_mode`: `crc`,
    /// `secure`); see [`parse_con_modes`].
    ConMode,
}

impl OptType {
    /// The type's name as `config help` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            OptType::Str => "str",
            OptType::Int => "int",
            OptType::Uint => "uint",
            OptType::Bool => "bool",
            OptType::Size => "size",
            OptType::Float => "float",
            OptType::Secs => "secs",
            OptType::Millisecs => "millisecs",
            OptType::Addr => "addr",
            OptType::AddrVec => "addrvec",
            OptType::Uuid => "uuid",
            OptType::Features => "features",
            OptType::DebugLevel => "debug",
            // Ceph declares these as plain strings.
            OptType::ConMode => "str",
        }
    }
}

/// Where an option is normally set: a hint for documentation and for the
/// `[section]` that `quarry up` writes it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everyone reads it (`[global]`).
    Global,
    /// Clients: librados, librbd, the CLI (`[client]`).
    Client,
    /// Monitors (`[mon]`).
    Mon,
    /// Object storage daemons (`[osd]`).
    Osd,
    /// Manager daemons (accepted for compatibility).
    Mgr,
    /// Metadata servers (accepted for compatibility).
    Mds,
}

impl Scope {
    /// The conf section name this scope corresponds to.
    pub fn section(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Client => "client",
            Scope::Mon => "mon",
            Scope::Osd => "osd",
            Scope::Mgr => "mgr",
            Scope::Mds => "mds",
        }
    }
}

/// One option of the registry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionDef {
    /// Canonical name (underscores).
    pub name: &'static str,
    /// Value type.
    pub ty: OptType,
    /// Default value, in canonical text form, metavariables unexpanded.
    pub default: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Where it is normally set.
    pub scope: Scope,
    /// Whether `rados_conf_set` may change it after `rados_connect`.
    pub runtime: bool,
    /// For `Str` options: the only accepted values (case-sensitive); empty = any.
    pub enum_values: &'static [&'static str],
    /// Lower bound for numeric types.
    pub min: Option<f64>,
    /// Upper bound for numeric types.
    pub max: Option<f64>,
    /// Whether Quarry acts on it (false: stored for Ceph compatibility only).
    pub used: bool,
}

/// Description shared by the options accepted only for compatibility.
const COMPAT_DESCRIPTION: &str =
    "Ceph option, accepted and stored for compatibility; Quarry ignores it";

/// Constructor used by the generated Ceph table.
#[allow(clippy::too_many_arguments)]
const fn ceph(
    name: &'static str,
    ty: OptType,
    default: &'static str,
    scope: Scope,
    runtime: bool,
    enum_values: &'static [&'static str],
    min: Option<f64>,
    max: Option<f64>,
) -> OptionDef {
    OptionDef {
        name,
        ty,
        default,
        description: COMPAT_DESCRIPTION,
        scope,
        runtime,
        enum_values,
        min,
        max,
        used: false,
    }
}

/// Template for the `debug_<subsystem>` options, which are not enumerated.
static DEBUG_OPTION: OptionDef = OptionDef {
    name: "debug_*",
    ty: OptType::DebugLevel,
    default: "0/5",
    description: "Log level of a subsystem: N or N/M (log / in-memory gather level)",
    scope: Scope::Global,
    runtime: true,
    enum_values: &[],
    min: None,
    max: None,
    used: true,
};

/// Why an option name or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No option has this name (librados: `-ENOENT`).
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    /// The value does not fit the option's type or limits (`-EINVAL`).
    #[error("invalid value '{value}' for option '{name}': {reason}")]
    InvalidValue {
        /// Canonical option name.
        name: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The option cannot change after connecting (`-EPERM`).
    #[error("option '{0}' cannot be changed after connecting")]
    NotRuntime(String),
    /// The name is read-only (`name`, `cluster`).
    #[error("option '{0}' is read-only here")]
    ReadOnly(String),
    /// A typed getter was used on an option of another type.
    #[error("option '{name}' is of type {actual}, not {wanted}")]
    WrongType {
        /// Canonical option name.
        name: String,
        /// The type the getter wanted.
        wanted: &'static str,
        /// The option's type.
        actual: &'static str,
    },
    /// A command-line flag that needs a value came last.
    #[error("option {0} requires a value")]
    MissingValue(String),
    /// `--id`/`--name` got a malformed entity name.
    #[error(transparent)]
    Entity(#[from] crate::entity::EntityError),
    /// `CEPH_ARGS` has an unterminated quote.
    #[error("unterminated quote in arguments: {0}")]
    UnterminatedQuote(String),
}

impl ConfigError {
    /// The errno librados returns for this error.
    pub fn errno(&self) -> Errno {
        match self {
            ConfigError::UnknownOption(_) => Errno::ENOENT,
            ConfigError::NotRuntime(_) => Errno::EPERM,
            _ => Errno::EINVAL,
        }
    }
}

impl From<ConfigError> for Errno {
    fn from(e: ConfigError) -> Errno {
        e.errno()
    }
}

/// Normalize an option name: trimmed, spaces and dashes become underscores.
pub fn normalize_name(name: &str) -> String {
    crate::conf::normalize_key(name)
}

/// Look an option up by any spelling of its name.
pub fn find_option(name: &str) -> Option<&'static OptionDef> {
    let name = normalize_name(name);
    find_exact(&name).or_else(|| is_debug_name(&name).then_some(&DEBUG_OPTION))
}

fn find_exact(name: &str) -> Option<&'static OptionDef> {
    // Quarry's table is small and sorted; the Ceph table is large and sorted.
    if let Ok(i) = QUARRY_OPTIONS.binary_search_by(|o| o.name.cmp(name)) {
        return Some(&QUARRY_OPTIONS[i]);
    }
    ceph_table::CEPH_OPTIONS
        .binary_search_by(|o| o.name.cmp(name))
        .ok()
        .map(|i| &ceph_table::CEPH_OPTIONS[i])
}

/// `debug_<subsystem>` with a plausible subsystem name.
fn is_debug_name(name: &str) -> bool {
    name.strip_prefix("debug_").is_some_and(|sub| {
        !sub.is_empty()
            && sub
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Every enumerated option (Quarry's and Ceph's, without duplicates),
/// sorted by name. `debug_*` options are not enumerated.
pub fn all_options() -> Vec<&'static OptionDef> {
    let mut out: Vec<&'static OptionDef> = QUARRY_OPTIONS.iter().collect();
    out.extend(ceph_table::CEPH_OPTIONS.iter().filter(|c| {
        QUARRY_OPTIONS
            .binary_search_by(|o| o.name.cmp(c.name))
            .is_err()
    }));
    out.sort_by(|a, b| a.name.cmp(b.name));
    out
}

/// RBD feature names and bits, as `rbd_default_features` accepts them.
pub const RBD_FEATURE_NAMES: &[(&str, u64)] = &[
    ("layering", 1 << 0),
    ("striping", 1 << 1),
    ("exclusive-lock", 1 << 2),
    ("object-map", 1 << 3),
    ("fast-diff", 1 << 4),
    ("deep-flatten", 1 << 5),
    ("journaling", 1 << 6),
    ("data-pool", 1 << 7),
    ("operations", 1 << 8),
    ("migrating", 1 << 9),
    ("non-primary", 1 << 10),
    ("dirty-cache", 1 << 11),
];

/// Every feature bit known.
const RBD_FEATURES_ALL: u64 = (1 << 12) - 1;

/// Validate `raw` for `def` and return its canonical text form
/// (`32M` → `33554432`, `TRUE` → `true`, `1m` → `60`, `layering` → `1`).
pub fn canonicalize(def: &OptionDef, raw: &str) -> Result<String, String> {
    let canonical = match def.ty {
        OptType::Str => {
            // The default always passes: a few Ceph enums default to "".
            if !def.enum_values.is_empty() && !def.enum_values.contains(&raw) && raw != def.default
            {
                return Err(format!("must be one of {}", def.enum_values.join(", ")));
            }
            raw.to_string()
        }
        OptType::Bool => parse_bool(raw)?.to_string(),
        OptType::Int => parse_si_int(raw)?.to_string(),
        OptType::Uint => {
            let v = parse_si_int(raw)?;
            if v < 0 {
                return Err("must not be negative".to_string());
            }
            v.to_string()
        }
        OptType::Size => parse_iec_size(raw)?.to_string(),
        OptType::Float => {
            let v: f64 = raw
                .trim()
                .parse()
                .map_err(|_| "expected a number".to_string())?;
            if !v.is_finite() {
                return Err("must be a finite number".to_string());
            }
            v.to_string()
        }
        OptType::Secs => parse_secs(raw)?.to_string(),
        OptType::Millisecs => raw
            .trim()
            .parse::<u64>()
            .map_err(|_| "expected a whole number of milliseconds".to_string())?
            .to_string(),
        OptType::Addr => {
            if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("an address cannot contain whitespace".to_string());
            }
            raw.to_string()
        }
        OptType::AddrVec => {
            if raw.chars().any(char::is_control) {
                return Err("control character in address list".to_string());
            }
            raw.to_string()
        }
        OptType::Uuid => parse_uuid(raw)?,
        OptType::Features => parse_features(raw)?.to_string(),
        OptType::DebugLevel => parse_debug_level(raw)?,
        OptType::ConMode => parse_con_modes(raw)?,
    };
    check_bounds(def, &canonical)?;
    Ok(canonical)
}

/// Enforce [`OptionDef::min`]/[`OptionDef::max`] on numeric values.
fn check_bounds(def: &OptionDef, canonical: &str) -> Result<(), String> {
    let numeric = matches!(
        def.ty,
        OptType::Int
            | OptType::Uint
            | OptType::Size
            | OptType::Float
            | OptType::Secs
            | OptType::Millisecs
    );
    if !numeric || (def.min.is_none() && def.max.is_none()) {
        return Ok(());
    }
    let v: f64 = canonical.parse().map_err(|_| "not a number".to_string())?;
    if let Some(min) = def.min {
        if v < min {
            return Err(format!("must be at least {min}"));
        }
    }
    if let Some(max) = def.max {
        if v > max {
            return Err(format!("must be at most {max}"));
        }
    }
    Ok(())
}

/// Ceph's bool: `true`/`false` in any case, or an integer (non-zero = true).
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    if raw.eq_ignore_ascii_case("true") {
        return Ok(true);
    }
    if raw.eq_ignore_ascii_case("false") {
        return Ok(false);
    }
    parse_plain_int(raw)
        .map(|v| v != 0)
        .map_err(|_| "expected true, false or a number".to_string())
}

/// A decimal integer with optional sign and nothing else.
fn parse_plain_int(raw: &str) -> Result<i64, String> {
    let t = raw.strip_prefix('+').unwrap_or(raw);
    if t.is_empty() || t.starts_with(['+', ' ']) {
        return Err("expected an integer".to_string());
    }
    t.parse::<i64>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            "out of range".to_string()
        }
        _ => "expected an integer".to_string(),
    })
}

/// Integer with an optional SI suffix (K = 10^3 ... E = 10^18).
fn parse_si_int(raw: &str) -> Result<i64, String> {
    let (num, exp) = match raw.chars().last() {
        Some(c @ ('K' | 'M' | 'G' | 'T' | 'P' | 'E')) => {
            let exp = match c {
                'K' => 3,
                'M' => 6,
                'G' => 9,
                'T' => 12,
                'P' => 15,
                _ => 18,
            };
            (&raw[..raw.len() - 1], exp)
        }
        _ => (raw, 0),
    };
    let v = parse_plain_int(num)?;
    v.checked_mul(10i64.pow(exp))
        .ok_or_else(|| "out of range".to_string())
}

/// Bytes with an optional IEC suffix: B, K/Ki ... E/Ei, uppercase only.
fn parse_iec_size(raw: &str) -> Result<u64, String> {
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '+' || c == '-'))
        .unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let shift = match unit {
        "" | "B" => 0,
        "K" | "Ki" => 10,
        "M" | "Mi" => 20,
        "G" | "Gi" => 30,
        "T" | "Ti" => 40,
        "P" | "Pi" => 50,
        "E" | "Ei" => 60,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' (use B, K, M, G, T, P, E or Ki, Mi, ...)"
            ))
        }
    };
    if num.starts_with('-') {
        return Err(match parse_plain_int(num) {
            Ok(_) => "must not be negative".to_string(),
            Err(e) => e,
        });
    }
    // Parsed as u64 (not i64 like Ceph's strtoll) so that every canonical
    // value this returns, up to 16 EiB - 1, parses again.
    let digits = num.strip_prefix('+').unwrap_or(num);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("expected a number of bytes".to_string());
    }
    let v: u64 = digits.parse().map_err(|_| "out of range".to_string())?;
    if v > (u64::MAX >> shift) {
        return Err("out of range".to_string());
    }
    Ok(v << shift)
}

/// A span of seconds: a bare number, or `<n><unit>` groups (`1h 30m`).
pub fn parse_secs(raw: &str) -> Result<u64, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err("expected a duration".to_string());
    }
    if let Ok(v) = t.parse::<u64>() {
        return Ok(v);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err("expected a duration such as 30, 30s, 5m, 1h 30m".to_string());
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "out of range".to_string())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let mult: u64 = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800,
            "mo" | "month" | "months" => 2_592_000,
            "y" | "yr" | "yrs" | "year" | "years" => 31_536_000,
            _ => return Err(format!("unknown time unit '{unit}'")),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "out of range".to_string())?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// A UUID, returned lowercase.
fn parse_uuid(raw: &str) -> Result<String, String> {
    let groups: Vec<&str> = raw.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12]
        || !groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err("expected a UUID like 01234567-89ab-cdef-0123-456789abcdef".to_string());
    }
    Ok(raw.to_ascii_lowercase())
}

/// RBD features as a number or a comma list of names.
pub fn parse_features(raw: &str) -> Result<u64, String> {
    let t = raw.trim();
    if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
        let v: u64 = t.parse().map_err(|_| "out of range".to_string())?;
        if v & !RBD_FEATURES_ALL != 0 {
            return Err(format!("unknown feature bits {:#x}", v & !RBD_FEATURES_ALL));
        }
        return Ok(v);
    }
    let mut bits = 0;
    for name in t.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bit = RBD_FEATURE_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("unknown feature '{name}'"))?;
        bits |= bit;
    }
    Ok(bits)
}

/// A connection-mode list (`ms_client_mode` and its kin: `crc`, `secure`,
/// separated by spaces, commas or semicolons, in order of preference),
/// returned space-separated without duplicates. Whether this build can
/// honour it is [`con_modes_supported`]'s question.
pub fn parse_con_modes(raw: &str) -> Result<String, String> {
    let mut modes: Vec<&str> = Vec::new();
    for t in raw
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|t| !t.is_empty())
    {
        let m = match t.to_ascii_lowercase().as_str() {
            "crc" => "crc",
            "secure" => "secure",
            _ => {
                return Err(format!(
                    "unknown connection mode {t:?}: expected crc and/or secure"
                ))
            }
        };
        if !modes.contains(&m) {
            modes.push(m);
        }
    }
    if modes.is_empty() {
        return Err("no connection mode given: expected crc and/or secure".to_string());
    }
    Ok(modes.join(" "))
}

/// Whether connections can be made under the mode list `value` (see
/// [`parse_con_modes`]). Quarry has no `secure` mode yet (msgr2's AES-GCM
/// encryption of every frame): a list may name it beside `crc`, the mode
/// every connection then uses, but `secure` alone is refused, so whoever
/// asked for encryption gets an error instead of plaintext.
pub fn con_modes_supported(value: &str) -> Result<(), String> {
    let modes = parse_con_modes(value)?;
    if modes.split(' ').any(|m| m == "crc") {
        return Ok(());
    }
    Err(
        "Quarry cannot encrypt connections yet (msgr2 secure mode is not \
         implemented; frames are crc-checked and signed, see cephx_sign_messages): \
         include crc, e.g. \"crc secure\", to connect without encryption"
            .to_string(),
    )
}

/// The connection-mode options a client reads (monitors, then OSDs).
pub const CLIENT_CON_MODE_OPTIONS: [&str; 2] = ["ms_mon_client_mode", "ms_client_mode"];
/// The connection-mode options an OSD reads (its monitor session, peer
/// OSDs, clients).
pub const OSD_CON_MODE_OPTIONS: [&str; 3] =
    ["ms_mon_client_mode", "ms_cluster_mode", "ms_service_mode"];
/// The connection-mode options a monitor reads (peer monitors, everyone
/// else).
pub const MON_CON_MODE_OPTIONS: [&str; 2] = ["ms_mon_cluster_mode", "ms_mon_service_mode"];

/// A log level `N` or `N/M`, returned as `N/M`.
fn parse_debug_level(raw: &str) -> Result<String, String> {
    let level = |s: &str| -> Result<u8, String> {
        s.trim()
            .parse::<u8>()
            .ok()
            .filter(|v| *v <= 99)
            .ok_or_else(|| "expected a log level N or N/M with 0 <= N, M <= 99".to_string())
    };
    match raw.split_once('/') {
        Some((a, b)) => Ok(format!("{}/{}", level(a)?, level(b)?)),
        None => {
            let a = level(raw)?;
            Ok(format!("{a}/{a}"))
        }
    }
}

#[cfg(test)]
mod tests;
