//! The ceph.conf file format, its search order and its metavariables.
//!
//! Grammar (one logical line at a time; a physical line ending in an odd
//! number of backslashes continues on the next one, the backslash removed):
//!
//! ```text
//! # comment            ; comment
//! [section]            ; e.g. global, client, client.admin, mon.a, osd.0
//! key = value          ; spaces, '-' and '_' in keys are equivalent
//! key = "quoted value" # with \" and \\ escapes, then an optional comment
//! key = a \# b         ; in unquoted values '\' makes '#' ';' '\' literal
//! ```
//!
//! Values are stored raw; metavariables (`$cluster`, `$name`, ...) are
//! expanded when a value is read ([`expand_metavariables`]), because their
//! meaning depends on who reads (an OSD and a client share one file).
//!
//! Architecture Invariant: this module knows nothing about option types; a
//! file with unknown keys parses fine (Ceph ignores them too). Typing and
//! precedence between sources live in [`crate::options`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::entity::EntityName;
use crate::Errno;

/// Largest conf file we read; a bound on memory for a parser that is fed
/// whatever path a user names.
pub const MAX_CONF_BYTES: u64 = 4 << 20;

/// How deep metavariable expansion recurses (`$admin_socket` → `$run_dir`
/// → ...); deeper chains are left literal rather than looping.
const MAX_EXPANSION_DEPTH: usize = 8;

/// How many option lookups one expansion may do. Without a budget, values
/// like `a = $b$b$b$b`, `b = $c$c$c$c`, ... grow exponentially with depth.
const MAX_EXPANSION_LOOKUPS: usize = 256;

/// Why a conf file could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// A line does not follow the grammar.
    #[error("{}line {line}: {reason}: '{text}'", path_prefix(.path))]
    Syntax {
        /// The file, when parsing a file.
        path: Option<PathBuf>,
        /// 1-based number of the (first physical) line.
        line: usize,
        /// The offending line, trimmed.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not valid UTF-8.
    #[error("{}line {line}: not valid UTF-8", path_prefix(.path))]
    NotUtf8 {
        /// The file, when parsing a file.
        path: Option<PathBuf>,
        /// 1-based line of the first bad byte.
        line: usize,
    },
    /// An explicitly named file does not exist.
    #[error("error reading conf file {}: {}", .path.display(), Errno::ENOENT.description())]
    NotFound {
        /// The path named.
        path: PathBuf,
    },
    /// None of the searched files exists.
    #[error("no conf file found (searched {})", display_paths(.searched))]
    NoConfFile {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The file exists but could not be read.
    #[error("error reading conf file {}: {message}", .path.display())]
    Io {
        /// The path named.
        path: PathBuf,
        /// The errno the failure maps to.
        errno: Errno,
        /// The operating system's message.
        message: String,
    },
    /// The file is larger than [`MAX_CONF_BYTES`].
    #[error("conf file {} is too large ({size} bytes, limit {MAX_CONF_BYTES})", .path.display())]
    TooLarge {
        /// The path named.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ConfError {
    /// The errno librados returns for this: ENOENT when no file, EINVAL for
    /// a parse error, the I/O error's own errno otherwise.
    pub fn errno(&self) -> Errno {
        match self {
            ConfError::Syntax { .. } | ConfError::NotUtf8 { .. } => Errno::EINVAL,
            ConfError::NotFound { .. } | ConfError::NoConfFile { .. } => Errno::ENOENT,
            ConfError::Io { errno, .. } => *errno,
            ConfError::TooLarge { .. } => Errno::EFBIG,
        }
    }

    /// Attach a path to a parse error produced from a string.
    fn with_path(self, p: &Path) -> ConfError {
        match self {
            ConfError::Syntax {
                line, text, reason, ..
            } => ConfError::Syntax {
                path: Some(p.to_path_buf()),
                line,
                text,
                reason,
            },
            ConfError::NotUtf8 { line, .. } => ConfError::NotUtf8 {
                path: Some(p.to_path_buf()),
                line,
            },
            other => other,
        }
    }
}

impl From<ConfError> for Errno {
    fn from(e: ConfError) -> Errno {
        e.errno()
    }
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfEntry {
    /// The normalized key ([`normalize_key`]).
    pub key: String,
    /// The value, unquoted and unescaped, metavariables not yet expanded.
    pub value: String,
    /// 1-based line number where the entry starts.
    pub line: usize,
}

/// A `[name]` section with its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfSection {
    /// The section name as written (`global`, `client.admin`, ...).
    pub name: String,
    /// 1-based line of the first header with this name.
    pub line: usize,
    /// Entries, in order; a repeated key's later entry wins.
    pub entries: Vec<ConfEntry>,
}

impl ConfSection {
    /// The value of `key` (any spelling) in this section; the last one wins.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The entry for `key` (any spelling); the last one wins.
    pub fn entry(&self, key: &str) -> Option<&ConfEntry> {
        let key = normalize_key(key);
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// A parsed conf file: sections in order of first appearance. Repeated
/// section headers are merged into the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfFile {
    sections: Vec<ConfSection>,
}

/// A value found for an entity, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfValue {
    /// The raw value.
    pub value: String,
    /// The section it was found in.
    pub section: String,
    /// Its 1-based line number.
    pub line: usize,
}

impl ConfFile {
    /// Parse conf text. Any malformed line is an error naming its number.
    pub fn parse(text: &str) -> Result<ConfFile, ConfError> {
        Parser::default().run(text)
    }

    /// Parse raw bytes (a file's content), refusing invalid UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> Result<ConfFile, ConfError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => ConfFile::parse(text),
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                Err(ConfError::NotUtf8 { path: None, line })
            }
        }
    }

    /// Read and parse one file. A missing file is [`ConfError::NotFound`].
    pub fn load(path: &Path) -> Result<ConfFile, ConfError> {
        let bytes = read_bounded(path)?;
        ConfFile::parse_bytes(&bytes).map_err(|e| e.with_path(path))
    }

    /// All sections in order of first appearance.
    pub fn sections(&self) -> &[ConfSection] {
        &self.sections
    }

    /// The section called `name`, if present.
    pub fn section(&self, name: &str) -> Option<&ConfSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The raw value of `key` (any spelling) in section `name`.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section).and_then(|s| s.get(key))
    }

    /// The raw value of `key` for `entity`: `[type.id]` beats `[type]`
    /// beats `[global]` — the first section that has the key wins.
    pub fn lookup(&self, entity: &EntityName, key: &str) -> Option<ConfValue> {
        section_order(entity).iter().find_map(|name| {
            let s = self.section(name)?;
            let e = s.entry(key)?;
            Some(ConfValue {
                value: e.value.clone(),
                section: s.name.clone(),
                line: e.line,
            })
        })
    }

    /// Every key visible to `entity`, each resolved with [`Self::lookup`]'s
    /// precedence; sorted by key.
    pub fn effective(&self, entity: &EntityName) -> BTreeMap<String, ConfValue> {
        let mut out = BTreeMap::new();
        // Lowest precedence first, so later inserts overwrite.
        for name in section_order(entity).iter().rev() {
            if let Some(s) = self.section(name) {
                for e in &s.entries {
                    out.insert(
                        e.key.clone(),
                        ConfValue {
                            value: e.value.clone(),
                            section: s.name.clone(),
                            line: e.line,
                        },
                    );
                }
            }
        }
        out
    }
}

/// The sections an entity reads, highest precedence first.
pub fn section_order(entity: &EntityName) -> [String; 3] {
    [
        entity.to_string(),
        entity.entity_type().as_str().to_string(),
        "global".to_string(),
    ]
}

/// Normalize a key so that `mon host`, `mon_host` and `mon-host` are equal:
/// surrounding whitespace is dropped and each inner space, tab or `-`
/// becomes `_` (so `mon  host` stays distinct from `mon host`, as in Ceph,
/// which maps each space separately).
pub fn normalize_key(key: &str) -> String {
    key.trim()
        .chars()
        .map(|c| match c {
            ' ' | '\t' | '-' => '_',
            c => c,
        })
        .collect()
}

#[derive(Default)]
struct Parser {
    sections: Vec<ConfSection>,
    current: Option<usize>,
}

impl Parser {
    fn run(mut self, text: &str) -> Result<ConfFile, ConfError> {
        let mut logical = String::new();
        let mut start_line = 0usize;
        let mut continuing = false;
        let mut lines = text.split('\n').enumerate().peekable();
        while let Some((idx, raw)) = lines.next() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if !continuing {
                logical.clear();
                start_line = idx + 1;
            }
            let trailing = raw.len() - raw.trim_end_matches('\\').len();
            // An odd count of trailing backslashes is a continuation; an
            // even count is escaped backslashes.
            if trailing % 2 == 1 && lines.peek().is_some() {
                logical.push_str(&raw[..raw.len() - 1]);
                continuing = true;
                continue;
            }
            logical.push_str(raw);
            continuing = false;
            self.line(start_line, &logical)?;
        }
        Ok(ConfFile {
            sections: self.sections,
        })
    }

    fn line(&mut self, n: usize, raw: &str) -> Result<(), ConfError> {
        let t = raw.trim();
        let shown = redact_secret(t);
        let err = |reason: &str| ConfError::Syntax {
            path: None,
            line: n,
            text: shown.clone(),
            reason: reason.to_string(),
        };
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            return Ok(());
        }
        if let Some(inner) = t.strip_prefix('[') {
            let close = inner
                .find(']')
                .ok_or_else(|| err("section header is missing ']'"))?;
            let name = inner[..close].trim();
            if name.is_empty() {
                return Err(err("empty section name"));
            }
            if name.contains('[') {
                return Err(err("'[' inside section name"));
            }
            if let Some(c) = name.chars().find(|c| c.is_control()) {
                return Err(err(&format!("control character {c:?} in section name")));
            }
            let after = inner[close + 1..].trim_start();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                return Err(err("unexpected text after section header"));
            }
            let idx = match self.sections.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    self.sections.push(ConfSection {
                        name: name.to_string(),
                        line: n,
                        entries: Vec::new(),
                    });
                    self.sections.len() - 1
                }
            };
            self.current = Some(idx);
            return Ok(());
        }
        // The value is cut from the untrimmed line so that an escaped
        // trailing space (`a\ `) survives.
        let lt = raw.trim_start();
        let eq = lt
            .find('=')
            .ok_or_else(|| err("expected 'key = value' or '[section]'"))?;
        let key_raw = lt[..eq].trim();
        if key_raw.is_empty() {
            return Err(err("missing key before '='"));
        }
        if let Some(c) = key_raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ' | '\t' | '.')))
        {
            return Err(err(&format!("invalid character {c:?} in key")));
        }
        let key = normalize_key(key_raw);
        let value = parse_value(&lt[eq + 1..]).map_err(|r| err(&r))?;
        let idx = self
            .current
            .ok_or_else(|| err(&format!("key '{key_raw}' is outside of any [section]")))?;
        self.sections[idx].entries.push(ConfEntry {
            key,
            value,
            line: n,
        });
        Ok(())
    }
}

/// The line as shown in an error: a `key = <secret>` line has its value
/// replaced, because secrets must never reach logs.
fn redact_secret(line: &str) -> String {
    match line.split_once('=') {
        Some((k, _)) if normalize_key(k) == "key" => format!("{} = <redacted>", k.trim()),
        _ => line.to_string(),
    }
}

/// Parse the text after `=`: a quoted string or an unquoted run up to a
/// comment, trimmed.
fn parse_value(s: &str) -> Result<String, String> {
    let s = s.trim_start();
    let mut out = String::new();
    let mut chars = s.chars();
    if let Some(rest) = s.strip_prefix('"') {
        chars = rest.chars();
        loop {
            match chars.next() {
                None => return Err("unterminated quoted value".to_string()),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c) => out.push(c),
                    None => return Err("unterminated quoted value".to_string()),
                },
                Some(c) => out.push(c),
            }
        }
        let after = chars.as_str().trim_start();
        if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
            return Err("unexpected text after closing quote".to_string());
        }
        return Ok(out);
    }
    // Track where the trimmable tail starts so escaped trailing spaces
    // (`a\ `) survive the final trim.
    let mut keep = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '#' | ';' => break,
            '\\' => {
                // A lone trailing backslash (end of file) stays literal.
                out.push(chars.next().unwrap_or('\\'));
                keep = out.len();
            }
            c => {
                out.push(c);
                if !c.is_whitespace() {
                    keep = out.len();
                }
            }
        }
    }
    out.truncate(keep);
    Ok(out)
}

/// What metavariables expand to for one reader of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaVars {
    /// `$cluster` (normally `ceph`).
    pub cluster: String,
    /// `$name`, and through it `$type` and `$id`.
    pub entity: EntityName,
    /// `$host`: the short host name.
    pub host: String,
    /// `$pid`.
    pub pid: u32,
    /// `$home`, when known.
    pub home: Option<String>,
}

impl MetaVars {
    /// Variables for this process: host name from the kernel, our pid, HOME.
    pub fn for_process(cluster: &str, entity: &EntityName) -> MetaVars {
        MetaVars {
            cluster: cluster.to_string(),
            entity: entity.clone(),
            host: short_hostname(),
            pid: std::process::id(),
            home: std::env::var("HOME").ok().filter(|h| !h.is_empty()),
        }
    }

    /// The value of a built-in variable, if `name` is one.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "cluster" => self.cluster.clone(),
            "type" => self.entity.entity_type().as_str().to_string(),
            "id" => self.entity.id().to_string(),
            "name" => self.entity.to_string(),
            "host" => self.host.clone(),
            "pid" => self.pid.to_string(),
            "home" => return self.home.clone(),
            _ => return None,
        })
    }
}

/// The short host name (up to the first dot), `localhost` if unknown.
pub fn short_hostname() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let short = full.trim().split('.').next().unwrap_or("").to_string();
    if short.is_empty() {
        "localhost".to_string()
    } else {
        short
    }
}

/// Expand `$var` and `${var}` in `value`.
///
/// Built-in variables come from `vars`; any other name is looked up with
/// `lookup` (other options, e.g. `$run_dir`) and expanded recursively.
/// Unknown variables stay literal, as in Ceph, so a stray `$` is harmless.
pub fn expand_metavariables(
    value: &str,
    vars: &MetaVars,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut stack = Vec::new();
    let mut budget = MAX_EXPANSION_LOOKUPS;
    expand_inner(value, vars, lookup, &mut stack, &mut budget)
}

fn expand_inner(
    value: &str,
    vars: &MetaVars,
    lookup: &dyn Fn(&str) -> Option<String>,
    stack: &mut Vec<String>,
    budget: &mut usize,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) if is_var_name(&inner[..end]) => (&inner[..end], end + 2),
                _ => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        let replacement = match vars.get(name) {
            Some(v) => Some(v),
            None if *budget > 0
                && stack.len() < MAX_EXPANSION_DEPTH
                && !stack.iter().any(|s| s == name) =>
            {
                *budget -= 1;
                lookup(name).map(|v| {
                    stack.push(name.to_string());
                    let expanded = expand_inner(&v, vars, lookup, stack, budget);
                    stack.pop();
                    expanded
                })
            }
            None => None,
        };
        match replacement {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[pos..pos + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Split a `,`/`;`-separated path list (conf paths, keyring lists),
/// trimming entries and dropping empty ones.
pub fn split_path_list(s: &str) -> Vec<String> {
    s.split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The files `rados_conf_read_file(NULL)` tries, in order.
///
/// `ceph_conf_env` is the value of `$CEPH_CONF` (a path list); when it is set
/// and non-empty only it is searched. Otherwise: `/etc/ceph/$cluster.conf`,
/// `$home/.ceph/$cluster.conf` (if a home is known), `./$cluster.conf`.
/// `$cluster` is expanded in every entry.
pub fn conf_search_paths(
    cluster: &str,
    ceph_conf_env: Option<&str>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let expand = |p: &str| {
        PathBuf::from(
            p.replace("$cluster", cluster)
                .replace("${cluster}", cluster),
        )
    };
    if let Some(env) = ceph_conf_env.filter(|e| !e.trim().is_empty()) {
        return split_path_list(env).iter().map(|p| expand(p)).collect();
    }
    let mut out = vec![expand("/etc/ceph/$cluster.conf")];
    if let Some(h) = home.filter(|h| !h.as_os_str().is_empty()) {
        out.push(h.join(".ceph").join(format!("{cluster}.conf")));
    }
    out.push(expand("$cluster.conf"));
    out
}

/// Read the first file of `paths` that exists.
///
/// Missing files are skipped; a file that exists but cannot be read or
/// parsed stops the search with its error (files are never merged), and no
/// file at all is [`ConfError::NoConfFile`] (ENOENT).
pub fn read_first_conf(paths: &[PathBuf]) -> Result<(PathBuf, ConfFile), ConfError> {
    for p in paths {
        match ConfFile::load(p) {
            Ok(c) => return Ok((p.clone(), c)),
            Err(ConfError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ConfError::NoConfFile {
        searched: paths.to_vec(),
    })
}

/// The cluster name implied by an explicit conf path: `/etc/ceph/prod.conf`
/// → `prod`; a path not ending in `.conf` (e.g. `/dev/null`) implies none.
pub fn cluster_from_conf_path(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".conf")?;
    if stem.is_empty() {
        None
    } else {
        Some(stem.to_string())
    }
}

/// Read a whole file with a size bound, mapping errors to [`ConfError`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfError> {
    use std::io::Read;
    let io_err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConfError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfError::Io {
                path: path.to_path_buf(),
                errno: e.raw_os_error().map(Errno::from_code).unwrap_or(Errno::EIO),
                message: e.to_string(),
            }
        }
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut buf = Vec::new();
    // Read one byte past the limit to detect oversize files without
    // trusting metadata (pipes and /proc files report size 0).
    file.take(MAX_CONF_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > MAX_CONF_BYTES {
        return Err(ConfError::TooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
        });
    }
    Ok(buf)
}

impl fmt::Display for ConfFile {
    /// Write the file back in canonical form (quoted values, normalized
    /// keys); parsing the output gives an equal [`ConfFile`] apart from
    /// line numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.sections {
            writeln!(f, "[{}]", s.name)?;
            for e in &s.entries {
                writeln!(f, "\t{} = {}", e.key, quote_value(&e.value))?;
            }
        }
        Ok(())
    }
}

/// Quote a value for writing into a conf file, escaping `"` and `\`.
pub fn quote_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ConfFile {
        ConfFile::parse(s).unwrap()
    }

    fn syntax_line(s: &str) -> (usize, String) {
        match ConfFile::parse(s) {
            Err(ConfError::Syntax { line, reason, .. }) => (line, reason),
            other => panic!("expected a syntax error for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_golden_conf() {
        let text = "[global]\nfsid = e151731d-f93c-486d-a5e3-f6fa213fcdb6\n\
                    mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]\n\
                    auth_client_required = cephx\n[client]\n\
                    keyring = $CEPH_WORK/ceph.$name.keyring\n[mon]\n\
                    mon_data = $CEPH_WORK/mon.$id\n[osd]\nosd_data = $CEPH_WORK/osd$id\n";
        let c = parse(text);
        assert_eq!(
            c.get("global", "mon host"),
            Some("[v2:127.0.0.1:3300,v1:127.0.0.1:6789]")
        );
        assert_eq!(
            c.get("client", "keyring"),
            Some("$CEPH_WORK/ceph.$name.keyring")
        );
        assert_eq!(c.sections().len(), 4);
        assert_eq!(c.section("osd").unwrap().line, 9);
    }

    #[test]
    fn key_spellings_are_equivalent() {
        let c = parse("[global]\n  mon host = a\n");
        assert_eq!(c.get("global", "mon_host"), Some("a"));
        assert_eq!(c.get("global", "mon-host"), Some("a"));
        assert_eq!(c.get("global", "mon host"), Some("a"));
        let c = parse("[global]\nrbd-cache-size = 7\n");
        assert_eq!(c.get("global", "rbd_cache_size"), Some("7"));
        assert_eq!(normalize_key(" a\tb-c_d "), "a_b_c_d");
    }

    #[test]
    fn comments_and_blank_lines() {
        let c =
            parse("# top\n; also\n\n[global] # trailing\n a = 1 # c\n b = 2 ; c\n c = x#y\n\t\n");
        assert_eq!(c.get("global", "a"), Some("1"));
        assert_eq!(c.get("global", "b"), Some("2"));
        assert_eq!(c.get("global", "c"), Some("x"));
    }

    #[test]
    fn semicolon_starts_a_comment_in_unquoted_values() {
        // As in Ceph: lists in files must use ',' or be quoted.
        let c = parse("[global]\nauth = cephx;none\nq = \"cephx;none\"\n");
        assert_eq!(c.get("global", "auth"), Some("cephx"));
        assert_eq!(c.get("global", "q"), Some("cephx;none"));
    }

    #[test]
    fn quoted_values_and_escapes() {
        let c = parse(
            "[client.admin]\n caps mon = \"allow *\"\n q = \"a \\\"b\\\" \\\\ c\" # x\n \
             e = \"\"\n u = a\\#b\\;c\\\\d\n sp = \"  padded  \"\n t = x\\ \n",
        );
        let s = c.section("client.admin").unwrap();
        assert_eq!(s.get("caps_mon"), Some("allow *"));
        assert_eq!(s.get("q"), Some("a \"b\" \\ c"));
        assert_eq!(s.get("e"), Some(""));
        assert_eq!(s.get("u"), Some("a#b;c\\d"));
        assert_eq!(s.get("sp"), Some("  padded  "));
        assert_eq!(s.get("t"), Some("x "));
    }

    #[test]
    fn values_keep_inner_spaces_and_equals() {
        let c = parse("[global]\nkey = AQBw==  \nv = a b  c\nempty =\n");
        assert_eq!(c.get("global", "key"), Some("AQBw=="));
        assert_eq!(c.get("global", "v"), Some("a b  c"));
        assert_eq!(c.get("global", "empty"), Some(""));
    }

    #[test]
    fn line_continuation() {
        let c = parse("[global]\nmon host = 1.2.3.4,\\\n  5.6.7.8\nnext = 1\n");
        assert_eq!(c.get("global", "mon_host"), Some("1.2.3.4,  5.6.7.8"));
        assert_eq!(c.section("global").unwrap().entry("next").unwrap().line, 4);
        // An even number of trailing backslashes is an escaped backslash.
        let c = parse("[global]\np = C:\\\\\nq = 2\n");
        assert_eq!(c.get("global", "p"), Some("C:\\"));
        assert_eq!(c.get("global", "q"), Some("2"));
        // A continuation on the last line keeps a literal backslash.
        let c = parse("[global]\np = x\\");
        assert_eq!(c.get("global", "p"), Some("x\\"));
        // Errors on a continued line report the line where it started.
        let (line, _) = syntax_line("[global]\nno equals \\\nhere\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn crlf_line_endings() {
        let c = parse("[global]\r\na = 1\r\n");
        assert_eq!(c.get("global", "a"), Some("1"));
    }

    #[test]
    fn later_values_and_sections_win() {
        let c = parse("[global]\na = 1\n[client]\na = 2\n[global]\na = 3\nb = 4\n");
        assert_eq!(c.sections().len(), 2);
        assert_eq!(c.get("global", "a"), Some("3"));
        assert_eq!(c.get("global", "b"), Some("4"));
    }

    #[test]
    fn lookup_precedence() {
        let c = parse(
            "[global]\nx = g\ny = g\nz = g\n[client]\nx = c\ny = c\n[client.admin]\nx = a\n\
             [client.foo]\nx = f\n[osd]\nx = o\n[osd.0]\ny = o0\n",
        );
        let admin = EntityName::admin();
        assert_eq!(c.lookup(&admin, "x").unwrap().value, "a");
        assert_eq!(c.lookup(&admin, "y").unwrap().value, "c");
        let z = c.lookup(&admin, "z").unwrap();
        assert_eq!(
            (z.value.as_str(), z.section.as_str(), z.line),
            ("g", "global", 4)
        );
        assert!(c.lookup(&admin, "w").is_none());
        let osd0 = EntityName::parse("osd.0").unwrap();
        assert_eq!(c.lookup(&osd0, "x").unwrap().value, "o");
        assert_eq!(c.lookup(&osd0, "y").unwrap().value, "o0");
        let mon = EntityName::parse("mon.a").unwrap();
        assert_eq!(c.lookup(&mon, "x").unwrap().value, "g");
        let eff = c.effective(&admin);
        assert_eq!(eff["x"].value, "a");
        assert_eq!(eff["y"].section, "client");
        assert_eq!(eff["z"].value, "g");
        assert_eq!(eff.len(), 3);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        assert_eq!(syntax_line("a = 1\n").0, 1);
        assert!(syntax_line("a = 1\n").1.contains("outside of any"));
        assert_eq!(syntax_line("[global]\njunk\n").0, 2);
        assert!(syntax_line("[global]\njunk\n").1.contains("key = value"));
        assert!(syntax_line("[global\n").1.contains("missing ']'"));
        assert!(syntax_line("[]\n").1.contains("empty section"));
        assert!(syntax_line("[  ]\n").1.contains("empty section"));
        assert!(syntax_line("[a[b]\n").1.contains("'['"));
        assert!(syntax_line("[global] x\n").1.contains("after section"));
        assert!(syntax_line("[global]\n= 1\n").1.contains("missing key"));
        assert!(syntax_line("[global]\na\"b = 1\n")
            .1
            .contains("invalid character"));
        assert!(syntax_line("[global]\na = \"open\n")
            .1
            .contains("unterminated"));
        assert!(syntax_line("[global]\na = \"open\\\"\n")
            .1
            .contains("unterminated"));
        assert!(syntax_line("[global]\na = \"x\" y\n")
            .1
            .contains("after closing quote"));
        assert!(syntax_line("[glo\u{1}bal]\n")
            .1
            .contains("control character"));
        let e = ConfFile::parse("[global]\nkey = \"AQsecret\n").unwrap_err();
        assert!(!e.to_string().contains("AQsecret"), "{e}");
        assert!(e.to_string().contains("key = <redacted>"), "{e}");
        let e = ConfFile::parse("[global]\n\n\nbad line\n").unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert_eq!(
            e.to_string(),
            "line 4: expected 'key = value' or '[section]': 'bad line'"
        );
    }

    #[test]
    fn non_utf8_is_refused_with_line() {
        let e = ConfFile::parse_bytes(b"[global]\na = \xff\n").unwrap_err();
        assert_eq!(
            e,
            ConfError::NotUtf8 {
                path: None,
                line: 2
            }
        );
        assert_eq!(e.errno(), Errno::EINVAL);
    }

    #[test]
    fn empty_file_is_fine() {
        assert!(parse("").sections().is_empty());
        assert!(parse("\n# only comments\n").sections().is_empty());
    }

    fn vars() -> MetaVars {
        MetaVars {
            cluster: "ceph".into(),
            entity: EntityName::admin(),
            host: "node1".into(),
            pid: 42,
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn metavariables() {
        let none = |_: &str| None;
        let v = vars();
        assert_eq!(
            expand_metavariables("/tmp/$cluster-$name-$type-$id-$host-$pid.log", &v, &none),
            "/tmp/ceph-client.admin-client-admin-node1-42.log"
        );
        assert_eq!(
            expand_metavariables("/etc/ceph/${cluster}.${name}.keyring", &v, &none),
            "/etc/ceph/ceph.client.admin.keyring"
        );
        assert_eq!(
            expand_metavariables("$home/.ceph", &v, &none),
            "/home/u/.ceph"
        );
        // Unknown variables and stray dollars stay literal.
        assert_eq!(
            expand_metavariables("$data_dir/x $ ${ ${bad-name} $$ end$", &v, &none),
            "$data_dir/x $ ${ ${bad-name} $$ end$"
        );
        let osd = MetaVars {
            entity: EntityName::parse("osd.3").unwrap(),
            ..vars()
        };
        assert_eq!(
            expand_metavariables("/var/lib/ceph/osd/$cluster-$id", &osd, &none),
            "/var/lib/ceph/osd/ceph-3"
        );
    }

    #[test]
    fn metavariables_reference_other_options() {
        let lookup = |name: &str| match name {
            "run_dir" => Some("/var/run/ceph".to_string()),
            "a" => Some("$b".to_string()),
            "b" => Some("$a".to_string()),
            "deep" => Some("$run_dir/$name".to_string()),
            _ => None,
        };
        let v = vars();
        assert_eq!(
            expand_metavariables("$run_dir/$cluster-$name.asok", &v, &lookup),
            "/var/run/ceph/ceph-client.admin.asok"
        );
        assert_eq!(
            expand_metavariables("x/$deep", &v, &lookup),
            "x//var/run/ceph/client.admin"
        );
        // Cycles terminate and leave the repeated name literal.
        assert_eq!(expand_metavariables("$a", &v, &lookup), "$a");
        // Exponential fan-out is cut off by the lookup budget.
        let fan = |name: &str| {
            let n: u32 = name.strip_prefix('v')?.parse().ok()?;
            Some(format!("$v{0}$v{0}$v{0}$v{0}", n + 1))
        };
        let out = expand_metavariables("$v0", &v, &fan);
        assert!(out.len() < 100_000, "{}", out.len());
        assert!(out.contains("$v"));
    }

    #[test]
    fn search_paths() {
        assert_eq!(
            conf_search_paths("ceph", None, Some(Path::new("/home/u"))),
            vec![
                PathBuf::from("/etc/ceph/ceph.conf"),
                PathBuf::from("/home/u/.ceph/ceph.conf"),
                PathBuf::from("ceph.conf"),
            ]
        );
        assert_eq!(
            conf_search_paths("prod", None, None),
            vec![
                PathBuf::from("/etc/ceph/prod.conf"),
                PathBuf::from("prod.conf")
            ]
        );
        assert_eq!(
            conf_search_paths(
                "ceph",
                Some("/a.conf, /b/$cluster.conf;"),
                Some(Path::new("/h"))
            ),
            vec![PathBuf::from("/a.conf"), PathBuf::from("/b/ceph.conf")]
        );
        // An empty CEPH_CONF is treated as unset.
        assert_eq!(conf_search_paths("ceph", Some(" "), None).len(), 2);
        assert_eq!(split_path_list(" a ,, b;c ;"), vec!["a", "b", "c"]);
    }

    #[test]
    fn cluster_names_from_paths() {
        assert_eq!(
            cluster_from_conf_path(Path::new("/etc/ceph/prod.conf")),
            Some("prod".into())
        );
        assert_eq!(
            cluster_from_conf_path(Path::new("ceph.conf")),
            Some("ceph".into())
        );
        assert_eq!(cluster_from_conf_path(Path::new("/dev/null")), None);
        assert_eq!(cluster_from_conf_path(Path::new("/x/.conf")), None);
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "quarry-conf-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reading_files() {
        let d = tempdir();
        let missing = d.join("missing.conf");
        let good = d.join("good.conf");
        let bad = d.join("bad.conf");
        std::fs::write(&good, "[global]\nmon host = 1.2.3.4\n").unwrap();
        std::fs::write(&bad, "[global]\nnonsense\n").unwrap();

        let e = ConfFile::load(&missing).unwrap_err();
        assert_eq!(e.errno(), Errno::ENOENT);
        assert!(e.to_string().contains("No such file or directory"), "{e}");

        let (p, c) = read_first_conf(&[missing.clone(), good.clone(), bad.clone()]).unwrap();
        assert_eq!(p, good);
        assert_eq!(c.get("global", "mon_host"), Some("1.2.3.4"));

        // A parse error is fatal, not a reason to try the next file.
        let e = read_first_conf(&[bad.clone(), good.clone()]).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(
            e.to_string()
                .starts_with(&format!("{}: line 2", bad.display())),
            "{e}"
        );

        let e = read_first_conf(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(e.errno(), Errno::ENOENT);
        assert!(e.to_string().contains("missing.conf"));
        assert_eq!(read_first_conf(&[]).unwrap_err().errno(), Errno::ENOENT);

        // A directory is an I/O error, not "missing".
        let e = ConfFile::load(&d).unwrap_err();
        assert!(matches!(e, ConfError::Io { .. }), "{e:?}");

        let big = d.join("big.conf");
        std::fs::write(&big, vec![b'#'; MAX_CONF_BYTES as usize + 1]).unwrap();
        assert_eq!(ConfFile::load(&big).unwrap_err().errno(), Errno::EFBIG);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn display_roundtrips() {
        let c = parse("[global]\nmon host = a;b\n[client.admin]\nk = \"q\\\"\\\\ # ;\"\n");
        let again = ConfFile::parse(&c.to_string()).unwrap();
        assert_eq!(again.get("global", "mon_host"), Some("a"));
        assert_eq!(again.get("client.admin", "k"), Some("q\"\\ # ;"));
    }
}
