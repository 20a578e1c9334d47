//! The leveled value store: one value per option per source level, the
//! highest level present wins — regardless of the order of the calls, as in
//! librados (`rados_conf_set` then reading a file keeps the set value).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{canonicalize, find_option, normalize_name, ConfigError, OptType, OptionDef};
use crate::conf::{
    cluster_from_conf_path, conf_search_paths, expand_metavariables, read_first_conf,
    split_path_list, ConfError, ConfFile, MetaVars,
};
use crate::entity::EntityName;

/// Where a value came from, lowest precedence first.
///
/// Ceph's order is default < mon config-db < file < env (`CEPH_ARGS`,
/// `CEPH_KEYRING`) < command line < override (`rados_conf_set`); librbd then
/// applies per-pool and per-image overrides on top for `rbd_*` options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The registry's default.
    Default,
    /// The monitors' central config database (fetched at connect).
    Mon,
    /// The conf file.
    File,
    /// `CEPH_ARGS` and other environment variables.
    Env,
    /// The process's own command line.
    CmdLine,
    /// `rados_conf_set` (QEMU's `:key=value` pairs and its `rbd_cache`).
    Override,
    /// Pool metadata (`rbd config pool set`).
    Pool,
    /// Image metadata (`rbd config image set`).
    Image,
}

/// Number of [`Level`]s.
const LEVELS: usize = 8;

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; LEVELS] = [
        Level::Default,
        Level::Mon,
        Level::File,
        Level::Env,
        Level::CmdLine,
        Level::Override,
        Level::Pool,
        Level::Image,
    ];

    /// Lowercase name, as printed by `show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Default => "default",
            Level::Mon => "mon",
            Level::File => "file",
            Level::Env => "env",
            Level::CmdLine => "cmdline",
            Level::Override => "override",
            Level::Pool => "pool",
            Level::Image => "image",
        }
    }
}

/// A conf-file value that was ignored because it is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfWarning {
    /// 1-based line in the file.
    pub line: usize,
    /// The section it was in.
    pub section: String,
    /// The option name.
    pub key: String,
    /// Why it was ignored.
    pub error: ConfigError,
}

impl std::fmt::Display for ConfWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} [{}]: {} (ignored)",
            self.line, self.section, self.error
        )
    }
}

/// One row of [`Config::show`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShownOption {
    /// Canonical option name.
    pub name: String,
    /// Effective value, metavariables expanded.
    pub value: String,
    /// The level it came from.
    pub source: Level,
    /// The registry entry.
    pub def: &'static OptionDef,
}

/// The options understood on a command line or in `CEPH_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CephArgs {
    /// `--id X` / `--user X` (→ `client.X`) or `--name T.X` / `-n T.X`.
    pub entity: Option<EntityName>,
    /// `--conf PATH` / `-c PATH`.
    pub conf: Option<String>,
    /// `--cluster NAME`.
    pub cluster: Option<String>,
    /// Config options, in order: `--opt value`, `--opt=value`, `--bool-opt`,
    /// `-m HOST` (mon_host), `-k PATH` (keyring).
    pub options: Vec<(String, String)>,
    /// Everything else, in order (the caller's own flags and arguments).
    pub rest: Vec<String>,
}

/// Split `CEPH_ARGS` into words: whitespace separates, `'…'` and `"…"`
/// group (no escapes inside single quotes; `\` escapes inside double).
pub fn split_env_args(s: &str) -> Result<Vec<String>, ConfigError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(ConfigError::UnterminatedQuote(s.to_string())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(ConfigError::UnterminatedQuote(s.to_string())),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(ConfigError::UnterminatedQuote(s.to_string())),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Pick Ceph's generic options out of an argument list.
///
/// `--<option>` is consumed only when it names a known option, so a tool's
/// own flags (`--size`, `--pool`) pass through in [`CephArgs::rest`].
/// Bool options may stand alone (`--rbd_cache` = true). `-i` is not taken
/// (the `ceph` tool uses it for input files). Parsing stops at `--`.
pub fn parse_ceph_args<S: AsRef<str>>(args: &[S]) -> Result<CephArgs, ConfigError> {
    let mut out = CephArgs::default();
    let mut i = 0;
    let next_value = |i: &mut usize, flag: &str| -> Result<String, ConfigError> {
        *i += 1;
        args.get(*i)
            .map(|s| s.as_ref().to_string())
            .ok_or_else(|| ConfigError::MissingValue(flag.to_string()))
    };
    while i < args.len() {
        let arg = args[i].as_ref();
        if arg == "--" {
            out.rest
                .extend(args[i..].iter().map(|s| s.as_ref().to_string()));
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let take = |i: &mut usize| -> Result<String, ConfigError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => next_value(i, flag),
            }
        };
        match flag {
            "--id" | "--user" => out.entity = Some(EntityName::client(&take(&mut i)?)?),
            "--name" | "-n" => out.entity = Some(EntityName::parse(&take(&mut i)?)?),
            "--conf" | "-c" => out.conf = Some(take(&mut i)?),
            "--cluster" => out.cluster = Some(take(&mut i)?),
            "-m" => out.options.push(("mon_host".to_string(), take(&mut i)?)),
            "-k" => out.options.push(("keyring".to_string(), take(&mut i)?)),
            f if f.starts_with("--") && f.len() > 2 => match find_option(&f[2..]) {
                Some(def) => {
                    let name = normalize_name(&f[2..]);
                    let value = match (&inline, def.ty) {
                        (Some(v), _) => v.clone(),
                        (None, OptType::Bool) => "true".to_string(),
                        (None, _) => next_value(&mut i, flag)?,
                    };
                    out.options.push((name, value));
                }
                None => out.rest.push(arg.to_string()),
            },
            _ => out.rest.push(arg.to_string()),
        }
        i += 1;
    }
    Ok(out)
}

/// Per-option values, one slot per [`Level`]. The Default slot is unused:
/// defaults come from the registry.
type Slots = [Option<String>; LEVELS];

/// A client's or daemon's configuration: entity, cluster, and every option
/// with a value per source level.
#[derive(Debug, Clone)]
pub struct Config {
    vars: MetaVars,
    cluster_fixed: bool,
    started: bool,
    values: BTreeMap<String, Slots>,
}

impl Config {
    /// A configuration for `entity` in cluster `ceph`, all defaults.
    pub fn new(entity: EntityName) -> Config {
        Config {
            vars: MetaVars::for_process("ceph", &entity),
            cluster_fixed: false,
            started: false,
            values: BTreeMap::new(),
        }
    }

    /// Like [`Config::new`] with an explicit cluster name (`rados_create2`);
    /// conf paths then no longer change it.
    pub fn with_cluster(entity: EntityName, cluster: &str) -> Config {
        let mut c = Config::new(entity);
        c.vars.cluster = cluster.to_string();
        c.cluster_fixed = true;
        c
    }

    /// Replace the metavariable context (host, pid, home) — for tests and
    /// for daemons that want a fixed host name.
    pub fn set_metavars(&mut self, vars: MetaVars) {
        self.vars = vars;
    }

    /// Who this configuration is for.
    pub fn entity(&self) -> &EntityName {
        &self.vars.entity
    }

    /// Change the entity (before connecting; sections read depend on it).
    pub fn set_entity(&mut self, entity: EntityName) {
        self.vars.entity = entity;
    }

    /// The cluster name (`$cluster`).
    pub fn cluster(&self) -> &str {
        &self.vars.cluster
    }

    /// Set the cluster name explicitly.
    pub fn set_cluster(&mut self, cluster: &str) {
        self.vars.cluster = cluster.to_string();
        self.cluster_fixed = true;
    }

    /// Declare the client connected: from now on, options that cannot
    /// change at run time refuse `Override`-level sets with EPERM.
    pub fn mark_started(&mut self) {
        self.started = true;
    }

    /// Resolve any spelling of an option name to its canonical name and
    /// registry entry; ENOENT for unknown names.
    fn resolve(name: &str) -> Result<(String, &'static OptionDef), ConfigError> {
        let canonical = normalize_name(name);
        match find_option(&canonical) {
            Some(def) => Ok((canonical, def)),
            None => Err(ConfigError::UnknownOption(canonical)),
        }
    }

    /// Set an option at a level after validating the value.
    ///
    /// Unknown name → ENOENT; bad value → EINVAL; a start-up-only option at
    /// `Override` level after [`Config::mark_started`] → EPERM.
    pub fn set(&mut self, name: &str, value: &str, level: Level) -> Result<(), ConfigError> {
        if matches!(normalize_name(name).as_str(), "name" | "cluster") {
            return Err(ConfigError::ReadOnly(normalize_name(name)));
        }
        let (canonical, def) = Config::resolve(name)?;
        if level == Level::Default {
            return Err(ConfigError::ReadOnly(canonical));
        }
        if self.started && level >= Level::Override && !def.runtime {
            return Err(ConfigError::NotRuntime(canonical));
        }
        let stored = canonicalize(def, value).map_err(|reason| ConfigError::InvalidValue {
            name: canonical.clone(),
            value: value.to_string(),
            reason,
        })?;
        self.values.entry(canonical).or_default()[level as usize] = Some(stored);
        Ok(())
    }

    /// Remove the value an option has at one level.
    pub fn unset(&mut self, name: &str, level: Level) -> Result<(), ConfigError> {
        let (canonical, _) = Config::resolve(name)?;
        if let Some(slots) = self.values.get_mut(&canonical) {
            slots[level as usize] = None;
        }
        Ok(())
    }

    /// Remove every value at one level (e.g. before re-reading a file).
    pub fn clear_level(&mut self, level: Level) {
        for slots in self.values.values_mut() {
            slots[level as usize] = None;
        }
    }

    /// The effective raw value (metavariables unexpanded) and its level.
    fn effective_raw(&self, canonical: &str, def: &'static OptionDef) -> (String, Level) {
        if let Some(slots) = self.values.get(canonical) {
            for level in Level::ALL.iter().rev() {
                if let Some(v) = &slots[*level as usize] {
                    return (v.clone(), *level);
                }
            }
        }
        (def.default.to_string(), Level::Default)
    }

    /// Expand metavariables in text-typed values; numbers are canonical.
    fn expand(&self, def: &OptionDef, raw: String) -> String {
        if !matches!(def.ty, OptType::Str | OptType::Addr | OptType::AddrVec) || !raw.contains('$')
        {
            return raw;
        }
        let lookup = |var: &str| -> Option<String> {
            let def = find_option(var)?;
            Some(self.effective_raw(&normalize_name(var), def).0)
        };
        expand_metavariables(&raw, &self.vars, &lookup)
    }

    /// The effective value with metavariables expanded; `None` for unknown
    /// names. `name` and `cluster` give the entity name and cluster.
    pub fn get(&self, name: &str) -> Option<String> {
        match normalize_name(name).as_str() {
            "name" => return Some(self.vars.entity.to_string()),
            "cluster" => return Some(self.vars.cluster.clone()),
            _ => {}
        }
        let (canonical, def) = Config::resolve(name).ok()?;
        let (raw, _) = self.effective_raw(&canonical, def);
        Some(self.expand(def, raw))
    }

    /// The effective value, unexpanded, with the level it came from.
    pub fn get_with_source(&self, name: &str) -> Result<(String, Level), ConfigError> {
        let (canonical, def) = Config::resolve(name)?;
        Ok(self.effective_raw(&canonical, def))
    }

    /// The value at exactly one level, if set there.
    pub fn get_at(&self, name: &str, level: Level) -> Result<Option<String>, ConfigError> {
        let (canonical, def) = Config::resolve(name)?;
        if level == Level::Default {
            return Ok(Some(def.default.to_string()));
        }
        Ok(self
            .values
            .get(&canonical)
            .and_then(|s| s[level as usize].clone()))
    }

    /// Typed access: the registry entry and effective canonical value,
    /// checking the option's type is one of `types`.
    fn typed(
        &self,
        name: &str,
        types: &[OptType],
        wanted: &'static str,
    ) -> Result<(&'static OptionDef, String), ConfigError> {
        let (canonical, def) = Config::resolve(name)?;
        if !types.contains(&def.ty) {
            return Err(ConfigError::WrongType {
                name: canonical,
                wanted,
                actual: def.ty.as_str(),
            });
        }
        let (raw, _) = self.effective_raw(&canonical, def);
        Ok((def, raw))
    }

    /// A text option's expanded value.
    pub fn get_str(&self, name: &str) -> Result<String, ConfigError> {
        let (def, raw) = self.typed(
            name,
            &[
                OptType::Str,
                OptType::Addr,
                OptType::AddrVec,
                OptType::Uuid,
                OptType::DebugLevel,
                OptType::ConMode,
            ],
            "str",
        )?;
        Ok(self.expand(def, raw))
    }

    /// A bool option's value.
    pub fn get_bool(&self, name: &str) -> Result<bool, ConfigError> {
        let (def, raw) = self.typed(name, &[OptType::Bool], "bool")?;
        super::parse_bool(&raw).map_err(|reason| bad_stored(def, &raw, reason))
    }

    /// An unsigned option's value (uint, size, secs, millisecs, features).
    pub fn get_u64(&self, name: &str) -> Result<u64, ConfigError> {
        let (def, raw) = self.typed(
            name,
            &[
                OptType::Uint,
                OptType::Size,
                OptType::Secs,
                OptType::Millisecs,
                OptType::Features,
            ],
            "uint",
        )?;
        raw.parse()
            .map_err(|_| bad_stored(def, &raw, "not an unsigned integer".to_string()))
    }

    /// A size option's value in bytes.
    pub fn get_size(&self, name: &str) -> Result<u64, ConfigError> {
        let (def, raw) = self.typed(name, &[OptType::Size], "size")?;
        raw.parse()
            .map_err(|_| bad_stored(def, &raw, "not a size".to_string()))
    }

    /// A signed option's value (int or uint).
    pub fn get_i64(&self, name: &str) -> Result<i64, ConfigError> {
        let (def, raw) = self.typed(name, &[OptType::Int, OptType::Uint], "int")?;
        raw.parse()
            .map_err(|_| bad_stored(def, &raw, "not an integer".to_string()))
    }

    /// A numeric option's value as a float (float, int, uint).
    pub fn get_f64(&self, name: &str) -> Result<f64, ConfigError> {
        let (def, raw) = self.typed(
            name,
            &[OptType::Float, OptType::Int, OptType::Uint],
            "float",
        )?;
        raw.parse()
            .map_err(|_| bad_stored(def, &raw, "not a number".to_string()))
    }

    /// A duration option (secs, millisecs, or float seconds).
    pub fn get_duration(&self, name: &str) -> Result<Duration, ConfigError> {
        let (def, raw) = self.typed(
            name,
            &[OptType::Secs, OptType::Millisecs, OptType::Float],
            "secs",
        )?;
        let bad = |r: &str| bad_stored(def, &raw, r.to_string());
        match def.ty {
            OptType::Secs => raw
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| bad("not seconds")),
            OptType::Millisecs => raw
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| bad("not milliseconds")),
            _ => {
                let v: f64 = raw.parse().map_err(|_| bad("not a number"))?;
                Duration::try_from_secs_f64(v).map_err(|_| bad("not a valid duration"))
            }
        }
    }

    /// Every enumerated option plus any `debug_*` that was set, sorted,
    /// with its effective value and source.
    pub fn show(&self) -> Vec<ShownOption> {
        let mut out: Vec<ShownOption> = super::all_options()
            .into_iter()
            .map(|def| self.shown(def.name.to_string(), def))
            .collect();
        for name in self.values.keys() {
            if let Some(def) = find_option(name) {
                if def.ty == OptType::DebugLevel && def.name == "debug_*" {
                    out.push(self.shown(name.clone(), def));
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Only the options whose value does not come from the default.
    pub fn diff(&self) -> Vec<ShownOption> {
        self.values
            .iter()
            .filter(|(_, s)| s.iter().any(Option::is_some))
            .filter_map(|(name, _)| find_option(name).map(|def| self.shown(name.clone(), def)))
            .collect()
    }

    fn shown(&self, name: String, def: &'static OptionDef) -> ShownOption {
        let (raw, source) = self.effective_raw(&name, def);
        ShownOption {
            value: self.expand(def, raw),
            name,
            source,
            def,
        }
    }

    /// Load a parsed conf file at `File` level for this entity, replacing
    /// what an earlier file set. Unknown keys are ignored (as in Ceph);
    /// invalid values are skipped and reported.
    pub fn apply_conf_file(&mut self, conf: &ConfFile) -> Vec<ConfWarning> {
        self.clear_level(Level::File);
        let mut warnings = Vec::new();
        for (key, cv) in conf.effective(&self.vars.entity) {
            match self.set(&key, &cv.value, Level::File) {
                Ok(()) | Err(ConfigError::UnknownOption(_)) | Err(ConfigError::ReadOnly(_)) => {}
                Err(error) => warnings.push(ConfWarning {
                    line: cv.line,
                    section: cv.section,
                    key,
                    error,
                }),
            }
        }
        warnings
    }

    /// `rados_conf_read_file`: read `paths` (a `,`/`;` list) or, if `None`,
    /// search `$CEPH_CONF` / `/etc/ceph/$cluster.conf` / `$home/.ceph/...` /
    /// `./$cluster.conf`; apply the first file found.
    ///
    /// If the cluster name was not given explicitly, an explicit path
    /// `…/NAME.conf` makes it `NAME` (so keyrings default to NAME.*).
    pub fn read_conf_file(
        &mut self,
        paths: Option<&str>,
        ceph_conf_env: Option<&str>,
        home: Option<&Path>,
    ) -> Result<(PathBuf, Vec<ConfWarning>), ConfError> {
        // Metavariables work in conf paths too (`/etc/ceph/$cluster.conf`).
        let none = |_: &str| None;
        let list: Vec<PathBuf> = match paths {
            Some(p) => split_path_list(p)
                .into_iter()
                .map(|p| PathBuf::from(expand_metavariables(&p, &self.vars, &none)))
                .collect(),
            None => conf_search_paths(&self.vars.cluster, ceph_conf_env, home),
        };
        let (path, conf) = read_first_conf(&list)?;
        if paths.is_some() && !self.cluster_fixed {
            if let Some(name) = cluster_from_conf_path(&path) {
                self.vars.cluster = name;
            }
        }
        self.cluster_fixed = true;
        let warnings = self.apply_conf_file(&conf);
        Ok((path, warnings))
    }

    /// Apply parsed arguments' options at `level` (entity, conf path and
    /// cluster are left to the caller, which knows whether they apply).
    pub fn apply_args(&mut self, args: &CephArgs, level: Level) -> Result<(), ConfigError> {
        for (name, value) in &args.options {
            self.set(name, value, level)?;
        }
        Ok(())
    }

    /// Split a `CEPH_ARGS`-style string and apply its options at `level`
    /// (`rados_conf_parse_env` with a custom variable). Returns the parsed
    /// arguments for the caller's entity/conf/cluster decisions.
    pub fn apply_arg_string(&mut self, s: &str, level: Level) -> Result<CephArgs, ConfigError> {
        let args = parse_ceph_args(&split_env_args(s)?)?;
        self.apply_args(&args, level)?;
        Ok(args)
    }

    /// Apply the environment at `Env` level: `CEPH_KEYRING`, then
    /// `CEPH_ARGS`. `getenv` is a parameter so tests need not touch the
    /// process environment. Returns the parsed `CEPH_ARGS`.
    pub fn apply_env(
        &mut self,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CephArgs, ConfigError> {
        if let Some(k) = getenv("CEPH_KEYRING").filter(|k| !k.is_empty()) {
            self.set("keyring", &k, Level::Env)?;
        }
        match getenv("CEPH_ARGS") {
            Some(s) => self.apply_arg_string(&s, Level::Env),
            None => Ok(CephArgs::default()),
        }
    }
}

/// A stored value that no longer parses: impossible unless the registry
/// default itself is wrong, which a unit test rules out.
fn bad_stored(def: &OptionDef, raw: &str, reason: String) -> ConfigError {
    ConfigError::InvalidValue {
        name: def.name.to_string(),
        value: raw.to_string(),
        reason,
    }
}
