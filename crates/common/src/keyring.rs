//! Ceph keyrings and secret keys.
//!
//! A keyring is an INI file (same grammar as ceph.conf):
//!
//! ```text
//! [client.admin]
//!     key = AQBwCgdnAAAAABAAcAWTyN0vV4bZbyV0dbm9Bg==
//!     caps mon = "allow *"
//!     caps osd = "allow rwx pool=rbd"
//! ```
//!
//! A key is the base64 of a 28-byte little-endian blob: `u16 type` (1 =
//! AES), `u32 created.sec`, `u32 created.nsec`, `u16 secret length` (16),
//! then the 16-byte secret. Anything else is refused with a clear error
//! rather than used (a malformed `key=` is `-EINVAL` in librados too).
//!
//! Architecture Invariant: secrets never reach a log or an error message —
//! [`CryptoKey`]'s `Debug` is redacted and it has no `Display`; the base64
//! text comes out only through [`CryptoKey::to_base64`].

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::conf::{quote_value, split_path_list, ConfError, ConfFile};
use crate::entity::{EntityError, EntityName};
use crate::options::Config;
use crate::Errno;

/// Key type of an AES secret, the only type cephx uses.
pub const KEY_TYPE_AES: u16 = 1;
/// Length of an AES secret in bytes.
pub const SECRET_LEN: usize = 16;
/// Length of an encoded key blob.
pub const KEY_BLOB_LEN: usize = 28;
/// Largest keyring file read (a bound on memory for a user-named path).
pub const MAX_KEYRING_BYTES: u64 = 1 << 20;

/// Standard alphabet with padding; tolerant of non-zero trailing bits and
/// of missing padding on input, as Ceph's decoder is.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key string or blob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing there.
    #[error("empty key")]
    Empty,
    /// Not base64.
    #[error("not valid base64 ({0})")]
    Base64(String),
    /// Decodes, but not to 28 bytes.
    #[error("decodes to {0} bytes, expected 28 (u16 type, u32 sec, u32 nsec, u16 length, 16-byte secret)")]
    WrongLength(usize),
    /// The type field is not AES.
    #[error("unsupported key type {0} (only 1 = AES is supported)")]
    UnsupportedType(u16),
    /// The secret-length field is not 16.
    #[error("secret length field is {0}, expected 16")]
    BadSecretLength(u16),
}

/// A cephx secret key with its creation time.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoKey {
    created_sec: u32,
    created_nsec: u32,
    secret: [u8; SECRET_LEN],
}

impl fmt::Debug for CryptoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CryptoKey(<redacted>)")
    }
}

impl CryptoKey {
    /// A fresh random AES key created now.
    pub fn generate() -> Result<CryptoKey, KeyringError> {
        let mut secret = [0u8; SECRET_LEN];
        getrandom::fill(&mut secret).map_err(|e| KeyringError::Random(e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // The blob holds a u32 second count; saturate rather than wrap in 2106.
        let sec = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        Ok(CryptoKey::from_secret(secret, sec, now.subsec_nanos()))
    }

    /// A key from its parts.
    pub fn from_secret(secret: [u8; SECRET_LEN], created_sec: u32, created_nsec: u32) -> CryptoKey {
        CryptoKey {
            created_sec,
            created_nsec,
            secret,
        }
    }

    /// Parse the base64 form (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<CryptoKey, KeyError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(KeyError::Empty);
        }
        let bytes = B64.decode(t).map_err(|e| KeyError::Base64(e.to_string()))?;
        CryptoKey::decode(&bytes)
    }

    /// Decode the 28-byte blob.
    pub fn decode(bytes: &[u8]) -> Result<CryptoKey, KeyError> {
        let b: &[u8; KEY_BLOB_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        let ty = u16::from_le_bytes([b[0], b[1]]);
        if ty != KEY_TYPE_AES {
            return Err(KeyError::UnsupportedType(ty));
        }
        let len = u16::from_le_bytes([b[10], b[11]]);
        if usize::from(len) != SECRET_LEN {
            return Err(KeyError::BadSecretLength(len));
        }
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&b[12..]);
        Ok(CryptoKey {
            created_sec: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            created_nsec: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            secret,
        })
    }

    /// The 28-byte blob.
    pub fn encode(&self) -> [u8; KEY_BLOB_LEN] {
        let mut b = [0u8; KEY_BLOB_LEN];
        b[0..2].copy_from_slice(&KEY_TYPE_AES.to_le_bytes());
        b[2..6].copy_from_slice(&self.created_sec.to_le_bytes());
        b[6..10].copy_from_slice(&self.created_nsec.to_le_bytes());
        b[10..12].copy_from_slice(&(SECRET_LEN as u16).to_le_bytes());
        b[12..].copy_from_slice(&self.secret);
        b
    }

    /// The base64 form, as written in keyrings and passed as `key=`.
    pub fn to_base64(&self) -> String {
        B64.encode(self.encode())
    }

    /// The raw secret (HMAC key material).
    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }

    /// Creation time as (seconds, nanoseconds) since the epoch.
    pub fn created(&self) -> (u32, u32) {
        (self.created_sec, self.created_nsec)
    }
}

/// Why a keyring could not be read, parsed, searched or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The text does not follow the INI grammar (includes "key outside of
    /// any section" and unterminated quotes, with line numbers).
    #[error("keyring: {0}")]
    Syntax(ConfError),
    /// A section header is not an entity name.
    #[error("keyring line {line}: section [{section}] is not an entity name: {source}")]
    BadEntity {
        /// Line of the header.
        line: usize,
        /// The section name.
        section: String,
        /// Why it is not an entity name.
        source: EntityError,
    },
    /// A section has no `key =`.
    #[error("keyring line {line}: [{entity}] has no 'key = ...' entry")]
    MissingKey {
        /// Line of the header.
        line: usize,
        /// The entity.
        entity: String,
    },
    /// A key does not decode.
    #[error("keyring line {line}: invalid key for {entity}: {source}")]
    BadKey {
        /// Line of the `key =` entry.
        line: usize,
        /// The entity.
        entity: String,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The text has no sections at all.
    #[error("keyring contains no [<type>.<id>] sections")]
    NoEntries,
    /// A named file does not exist.
    #[error("keyring {}: {}", .0.display(), Errno::ENOENT.description())]
    NotFound(PathBuf),
    /// None of the keyring search paths exists.
    #[error("no keyring found (searched {searched})")]
    NoKeyring {
        /// The paths tried, comma separated.
        searched: String,
    },
    /// The keyring has no entry for this entity.
    #[error("no key for {entity} in keyring {}", .path.display())]
    NoKeyFor {
        /// The entity looked up.
        entity: String,
        /// The keyring file.
        path: PathBuf,
    },
    /// A keyfile or `key` option is malformed.
    #[error("invalid key in {origin}: {source}")]
    InvalidKey {
        /// Where the key came from (`key option`, a keyfile path).
        origin: String,
        /// What is wrong with it.
        source: KeyError,
    },
    /// Reading or writing failed.
    #[error("keyring {}: {message}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The errno the failure maps to.
        errno: Errno,
        /// The operating system's message.
        message: String,
    },
    /// The file is larger than [`MAX_KEYRING_BYTES`].
    #[error("keyring {} is too large", .0.display())]
    TooLarge(PathBuf),
    /// The system random source failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

impl KeyringError {
    /// The errno librados reports: ENOENT for missing files/entries,
    /// EINVAL for malformed content, the I/O error's errno otherwise.
    pub fn errno(&self) -> Errno {
        match self {
            KeyringError::NotFound(_)
            | KeyringError::NoKeyring { .. }
            | KeyringError::NoKeyFor { .. } => Errno::ENOENT,
            KeyringError::Io { errno, .. } => *errno,
            KeyringError::Random(_) => Errno::EIO,
            KeyringError::TooLarge(_) => Errno::EFBIG,
            _ => Errno::EINVAL,
        }
    }
}

impl From<KeyringError> for Errno {
    fn from(e: KeyringError) -> Errno {
        e.errno()
    }
}

impl From<KeyError> for Errno {
    /// A malformed key is EINVAL (librados: `error connecting: Invalid argument`).
    fn from(_: KeyError) -> Errno {
        Errno::EINVAL
    }
}

/// One entity's entry: key and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringEntry {
    /// Who.
    pub entity: EntityName,
    /// The secret.
    pub key: CryptoKey,
    /// `(service, capability text)` pairs in file order, e.g. `("mon", "allow *")`.
    pub caps: Vec<(String, String)>,
}

impl KeyringEntry {
    /// An entry with no caps.
    pub fn new(entity: EntityName, key: CryptoKey) -> KeyringEntry {
        KeyringEntry {
            entity,
            key,
            caps: Vec::new(),
        }
    }

    /// Add or replace the capability for a service (builder style).
    pub fn with_cap(mut self, service: &str, cap: &str) -> KeyringEntry {
        self.set_cap(service, cap);
        self
    }

    /// Add or replace the capability for a service.
    pub fn set_cap(&mut self, service: &str, cap: &str) {
        match self.caps.iter_mut().find(|(s, _)| s == service) {
            Some(slot) => slot.1 = cap.to_string(),
            None => self.caps.push((service.to_string(), cap.to_string())),
        }
    }

    /// The capability text for a service.
    pub fn cap(&self, service: &str) -> Option<&str> {
        self.caps
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, c)| c.as_str())
    }
}

/// A set of entries, one per entity, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    entries: Vec<KeyringEntry>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Parse keyring text; every problem is an error naming its line.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        Keyring::from_conf(&ConfFile::parse(text).map_err(KeyringError::Syntax)?)
    }

    fn from_conf(conf: &ConfFile) -> Result<Keyring, KeyringError> {
        if conf.sections().is_empty() {
            return Err(KeyringError::NoEntries);
        }
        let mut ring = Keyring::new();
        for s in conf.sections() {
            let entity = EntityName::parse(&s.name).map_err(|source| KeyringError::BadEntity {
                line: s.line,
                section: s.name.clone(),
                source,
            })?;
            let key_entry = s.entry("key").ok_or_else(|| KeyringError::MissingKey {
                line: s.line,
                entity: entity.to_string(),
            })?;
            let key = CryptoKey::from_base64(&key_entry.value).map_err(|source| {
                KeyringError::BadKey {
                    line: key_entry.line,
                    entity: entity.to_string(),
                    source,
                }
            })?;
            let mut entry = KeyringEntry::new(entity, key);
            // Other keys (`auid`, ...) are ignored, as Ceph's clients do.
            for e in &s.entries {
                if let Some(service) = e.key.strip_prefix("caps_") {
                    entry.set_cap(service, &e.value);
                }
            }
            ring.insert(entry);
        }
        Ok(ring)
    }

    /// Read and parse a keyring file.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let bytes = read_bounded(path)?;
        let conf =
            ConfFile::parse_bytes(&bytes).map_err(|e| KeyringError::Syntax(with_path(e, path)))?;
        Keyring::from_conf(&conf)
    }

    /// The entry for an entity.
    pub fn get(&self, entity: &EntityName) -> Option<&KeyringEntry> {
        self.entries.iter().find(|e| &e.entity == entity)
    }

    /// The key of an entity.
    pub fn key_for(&self, entity: &EntityName) -> Option<&CryptoKey> {
        self.get(entity).map(|e| &e.key)
    }

    /// Add an entry, replacing any entry for the same entity in place.
    pub fn insert(&mut self, entry: KeyringEntry) {
        match self.entries.iter_mut().find(|e| e.entity == entry.entity) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    /// Remove an entity's entry, returning it.
    pub fn remove(&mut self, entity: &EntityName) -> Option<KeyringEntry> {
        let i = self.entries.iter().position(|e| &e.entity == entity)?;
        Some(self.entries.remove(i))
    }

    /// All entries in order.
    pub fn entries(&self) -> &[KeyringEntry] {
        &self.entries
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file text (what [`write_keyring`] writes).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("[{}]\n\tkey = {}\n", e.entity, e.key.to_base64()));
            for (service, cap) in &e.caps {
                out.push_str(&format!("\tcaps {service} = {}\n", quote_value(cap)));
            }
        }
        out
    }
}

/// Parse a keyfile: a file holding only the base64 key.
pub fn parse_keyfile(text: &str) -> Result<CryptoKey, KeyError> {
    CryptoKey::from_base64(text)
}

/// Write a keyring atomically with mode 0600: a temporary file in the same
/// directory, fsync, rename over the target, fsync the directory. An empty
/// keyring is refused (it could not be read back).
pub fn write_keyring(path: &Path, keyring: &Keyring) -> Result<(), KeyringError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if keyring.is_empty() {
        return Err(KeyringError::NoEntries);
    }
    let io = |p: &Path, e: std::io::Error| KeyringError::Io {
        path: p.to_path_buf(),
        errno: e.raw_os_error().map(Errno::from_code).unwrap_or(Errno::EIO),
        message: e.to_string(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io(path, std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // Unique per call, so concurrent writers in one process never share it.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{seq}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        // The mode above is filtered by the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(&tmp, e))?;
        f.write_all(keyring.to_text().as_bytes())
            .map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        // Make the rename itself durable.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Load the first existing keyring of a `,`/`;` list (the `keyring`
/// option, metavariables already expanded). Missing files are skipped; a
/// file that exists but is unreadable or malformed is an error.
pub fn load_first_keyring(list: &str) -> Result<(PathBuf, Keyring), KeyringError> {
    let paths = split_path_list(list);
    for p in &paths {
        let p = PathBuf::from(p);
        match Keyring::load(&p) {
            Ok(k) => return Ok((p, k)),
            Err(KeyringError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(KeyringError::NoKeyring {
        searched: paths.join(", "),
    })
}

/// The secret key the configuration gives its entity, as librados finds
/// it: the `key` option, else the `keyfile` option, else the entity's
/// entry in the first keyring of the `keyring` option.
pub fn key_from_config(cfg: &Config) -> Result<CryptoKey, KeyringError> {
    let key = cfg.get("key").unwrap_or_default();
    if !key.trim().is_empty() {
        return CryptoKey::from_base64(&key).map_err(|source| KeyringError::InvalidKey {
            origin: "the 'key' option".to_string(),
            source,
        });
    }
    let keyfile = cfg.get("keyfile").unwrap_or_default();
    if !keyfile.trim().is_empty() {
        let path = PathBuf::from(keyfile.trim());
        let bytes = read_bounded(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        return parse_keyfile(&text).map_err(|source| KeyringError::InvalidKey {
            origin: format!("keyfile {}", path.display()),
            source,
        });
    }
    let (path, ring) = load_first_keyring(&cfg.get("keyring").unwrap_or_default())?;
    ring.key_for(cfg.entity())
        .cloned()
        .ok_or_else(|| KeyringError::NoKeyFor {
            entity: cfg.entity().to_string(),
            path,
        })
}

fn with_path(e: ConfError, path: &Path) -> ConfError {
    match e {
        ConfError::Syntax {
            line, text, reason, ..
        } => ConfError::Syntax {
            path: Some(path.to_path_buf()),
            line,
            text,
            reason,
        },
        ConfError::NotUtf8 { line, .. } => ConfError::NotUtf8 {
            path: Some(path.to_path_buf()),
            line,
        },
        other => other,
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, KeyringError> {
    use std::io::Read;
    let map = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KeyringError::NotFound(path.to_path_buf())
        } else {
            KeyringError::Io {
                path: path.to_path_buf(),
                errno: e.raw_os_error().map(Errno::from_code).unwrap_or(Errno::EIO),
                message: e.to_string(),
            }
        }
    };
    let f = std::fs::File::open(path).map_err(map)?;
    let mut buf = Vec::new();
    f.take(MAX_KEYRING_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(map)?;
    if buf.len() as u64 > MAX_KEYRING_BYTES {
        return Err(KeyringError::TooLarge(path.to_path_buf()));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Level;

    /// A well-formed key: type 1, created 0x67080a70 s, 16-byte secret.
    fn sample() -> CryptoKey {
        CryptoKey::from_secret(*b"0123456789abcdef", 0x6708_0a70, 7)
    }

    #[test]
    fn key_blob_layout() {
        let b = sample().encode();
        assert_eq!(&b[0..2], &[1, 0]);
        assert_eq!(&b[2..6], &0x6708_0a70u32.to_le_bytes());
        assert_eq!(&b[6..10], &[7, 0, 0, 0]);
        assert_eq!(&b[10..12], &[16, 0]);
        assert_eq!(&b[12..], b"0123456789abcdef");
        let text = sample().to_base64();
        assert_eq!(text.len(), 40);
        assert!(text.starts_with("AQ") && text.ends_with("=="), "{text}");
        assert_eq!(CryptoKey::from_base64(&text).unwrap(), sample());
        assert_eq!(
            CryptoKey::from_base64(&format!("  {text}\n")).unwrap(),
            sample()
        );
        assert_eq!(
            CryptoKey::from_base64(text.trim_end_matches('=')).unwrap(),
            sample()
        );
        assert_eq!(sample().created(), (0x6708_0a70, 7));
        assert_eq!(sample().secret(), b"0123456789abcdef");
    }

    #[test]
    fn real_looking_keys_decode() {
        // Keys of the shape ceph-authtool prints (from the golden record).
        for k in [
            "AQDTFgdrEXinJRAASs0Vq7yhBPmFiCU1hiZn7A==",
            "AQC6FgdrZEbtDhAAp+dWHBSoRtFxWR4tTqBWng==",
        ] {
            let key = CryptoKey::from_base64(k).unwrap();
            assert_eq!(key.to_base64(), k);
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(CryptoKey::from_base64(""), Err(KeyError::Empty));
        assert_eq!(CryptoKey::from_base64("   "), Err(KeyError::Empty));
        assert!(matches!(
            CryptoKey::from_base64("not base64!"),
            Err(KeyError::Base64(_))
        ));
        assert!(matches!(
            CryptoKey::from_base64("AQ=B"),
            Err(KeyError::Base64(_))
        ));
        assert_eq!(
            CryptoKey::from_base64("AQID"),
            Err(KeyError::WrongLength(3))
        );
        // The golden record's "wrong" key (librados: -EINVAL): 41 characters.
        assert!(matches!(
            CryptoKey::from_base64("AQBwrongwrongwrongwrongwrongwrongwrongw=="),
            Err(KeyError::Base64(_))
        ));
        // Right length, but the secret-length field is garbage.
        assert!(matches!(
            CryptoKey::from_base64("AQBwrongwrongwrongwrongwrongwrongwrong=="),
            Err(KeyError::BadSecretLength(_))
        ));
        let mut blob = sample().encode();
        blob[0] = 0;
        assert_eq!(CryptoKey::decode(&blob), Err(KeyError::UnsupportedType(0)));
        let mut blob = sample().encode();
        blob[10] = 32;
        assert_eq!(CryptoKey::decode(&blob), Err(KeyError::BadSecretLength(32)));
        let long = B64.encode([1u8; 29]);
        assert_eq!(
            CryptoKey::from_base64(&long),
            Err(KeyError::WrongLength(29))
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = sample();
        let dbg = format!(
            "{k:?} {:?}",
            KeyringEntry::new(EntityName::admin(), k.clone())
        );
        assert!(
            !dbg.contains(&k.to_base64()) && !dbg.contains("0123456789"),
            "{dbg}"
        );
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = CryptoKey::generate().unwrap();
        let b = CryptoKey::generate().unwrap();
        assert_ne!(a.secret(), b.secret());
        assert_eq!(CryptoKey::from_base64(&a.to_base64()).unwrap(), a);
        assert!(a.created().0 > 1_600_000_000);
    }

    #[test]
    fn parses_ceph_keyrings() {
        let k1 = sample().to_base64();
        let text = format!(
            "[client.admin]\n\tkey = {k1}\n\tcaps mds = \"allow *\"\n\tcaps mon = \"allow *\"\n\
             \tauid = 0\n\n# comment\n[client.glance]\nkey={k1}\ncaps osd = \"allow rwx pool=rbd\"\n"
        );
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.entries().len(), 2);
        let admin = ring.get(&EntityName::admin()).unwrap();
        assert_eq!(admin.key, sample());
        assert_eq!(admin.cap("mon"), Some("allow *"));
        assert_eq!(admin.cap("mds"), Some("allow *"));
        assert_eq!(admin.cap("osd"), None);
        let glance = EntityName::client("glance").unwrap();
        assert_eq!(
            ring.get(&glance).unwrap().cap("osd"),
            Some("allow rwx pool=rbd")
        );
        assert!(ring
            .key_for(&EntityName::client("nobody").unwrap())
            .is_none());
    }

    #[test]
    fn accepts_the_monitors_shared_key() {
        // The keyring `ceph-authtool --create-keyring --gen-key -n mon.`
        // writes, plus a client: a client reading it finds its own key.
        let k = sample().to_base64();
        let text =
            format!("[mon.]\n\tkey = {k}\n\tcaps mon = \"allow *\"\n[client.admin]\n\tkey = {k}\n");
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.entries().len(), 2);
        let mon = EntityName::parse("mon.").unwrap();
        assert_eq!(ring.get(&mon).unwrap().cap("mon"), Some("allow *"));
        assert_eq!(ring.key_for(&EntityName::admin()), Some(&sample()));
        assert!(ring.to_text().contains("[mon.]"), "{}", ring.to_text());
        assert_eq!(Keyring::parse(&ring.to_text()).unwrap(), ring);
        // Only the monitors' entity may have an empty id.
        let e = Keyring::parse(&format!("[client.]\nkey = {k}\n")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn bad_keyrings_give_clear_errors() {
        let k = sample().to_base64();
        let e = Keyring::parse(&format!("key = {k}\n")).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(
            e.to_string().contains("line 1") && e.to_string().contains("outside"),
            "{e}"
        );

        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::NoEntries);
        assert_eq!(
            Keyring::parse("# nothing\n").unwrap_err(),
            KeyringError::NoEntries
        );

        let e = Keyring::parse("[client.admin]\ncaps mon = \"allow *\"\n").unwrap_err();
        assert!(
            matches!(e, KeyringError::MissingKey { line: 1, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("[client.admin] has no 'key"), "{e}");

        let e = Keyring::parse("[client.admin]\n\n key = !!!!\n").unwrap_err();
        assert!(
            matches!(
                e,
                KeyringError::BadKey {
                    line: 3,
                    source: KeyError::Base64(_),
                    ..
                }
            ),
            "{e:?}"
        );

        let e = Keyring::parse("[client.admin]\nkey = AQID\n").unwrap_err();
        assert!(
            e.to_string().contains("decodes to 3 bytes, expected 28"),
            "{e}"
        );

        let e = Keyring::parse(&format!("[admin]\nkey = {k}\n")).unwrap_err();
        assert!(
            matches!(e, KeyringError::BadEntity { line: 1, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("[admin]"), "{e}");

        let e = Keyring::parse(&format!("[client.admin]\nkey = \"{k}\n")).unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        let e = Keyring::parse(&format!("[client.admin\nkey = {k}\n")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert_eq!(e.errno(), Errno::EINVAL);
    }

    #[test]
    fn insert_replace_remove_and_text_roundtrip() {
        let mut ring = Keyring::new();
        assert!(ring.is_empty());
        ring.insert(KeyringEntry::new(EntityName::admin(), sample()).with_cap("mon", "allow *"));
        let other = CryptoKey::from_secret([9; 16], 1, 2);
        let glance = EntityName::client("glance").unwrap();
        ring.insert(
            KeyringEntry::new(glance.clone(), other.clone())
                .with_cap("osd", "allow rwx pool=\"odd\" \\ name")
                .with_cap("mon", "allow r"),
        );
        let text = ring.to_text();
        assert!(text.starts_with("[client.admin]\n\tkey = AQ"), "{text}");
        assert!(text.contains("\tcaps mon = \"allow *\"\n"), "{text}");
        assert_eq!(Keyring::parse(&text).unwrap(), ring);

        ring.insert(KeyringEntry::new(EntityName::admin(), other.clone()));
        assert_eq!(ring.entries().len(), 2);
        assert_eq!(ring.entries()[0].key, other);
        assert!(ring.entries()[0].caps.is_empty());
        assert_eq!(ring.remove(&glance).unwrap().key, other);
        assert!(ring.remove(&glance).is_none());
        assert_eq!(ring.entries().len(), 1);
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quarry-keyring-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn write_is_0600_atomic_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempdir("write");
        let path = d.join("ceph.client.admin.keyring");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut ring = Keyring::new();
        ring.insert(KeyringEntry::new(EntityName::admin(), sample()).with_cap("mon", "allow *"));
        write_keyring(&path, &ring).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keyring::load(&path).unwrap(), ring);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);

        assert_eq!(
            write_keyring(&path, &Keyring::new()).unwrap_err(),
            KeyringError::NoEntries
        );
        let e = write_keyring(&d.join("no/such/dir/k"), &ring).unwrap_err();
        assert_eq!(e.errno(), Errno::ENOENT);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn search_and_key_resolution() {
        let d = tempdir("search");
        let kr = d.join("ceph.client.admin.keyring");
        let mut ring = Keyring::new();
        ring.insert(KeyringEntry::new(EntityName::admin(), sample()));
        write_keyring(&kr, &ring).unwrap();
        let missing = d.join("missing.keyring");

        let list = format!("{},{}", missing.display(), kr.display());
        let (p, found) = load_first_keyring(&list).unwrap();
        assert_eq!((p, found), (kr.clone(), ring.clone()));
        let e = load_first_keyring(missing.to_str().unwrap()).unwrap_err();
        assert_eq!(e.errno(), Errno::ENOENT);
        assert!(e.to_string().contains("missing.keyring"), "{e}");
        assert_eq!(load_first_keyring("").unwrap_err().errno(), Errno::ENOENT);

        // A malformed keyring stops the search.
        let bad = d.join("bad.keyring");
        std::fs::write(&bad, "[client.admin]\nkey = nope\n").unwrap();
        let e = load_first_keyring(&format!("{},{}", bad.display(), kr.display())).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        let binary = d.join("keyring.bin");
        std::fs::write(&binary, [0xffu8, 0, 1]).unwrap();
        let e = Keyring::load(&binary).unwrap_err();
        assert!(
            e.to_string().contains("UTF-8") && e.to_string().contains("keyring.bin"),
            "{e}"
        );

        // keyring option → entity's key.
        let mut cfg = Config::new(EntityName::admin());
        cfg.set("keyring", kr.to_str().unwrap(), Level::Override)
            .unwrap();
        assert_eq!(key_from_config(&cfg).unwrap(), sample());
        // Unknown entity: ENOENT, as librados reports for an unknown user.
        let mut other = cfg.clone();
        other.set_entity(EntityName::client("nosuchuser").unwrap());
        let e = key_from_config(&other).unwrap_err();
        assert_eq!(e.errno(), Errno::ENOENT);
        assert!(e.to_string().contains("client.nosuchuser"), "{e}");

        // keyfile beats keyring; key beats both.
        let kf = d.join("keyfile");
        let k2 = CryptoKey::from_secret([2; 16], 3, 4);
        std::fs::write(&kf, format!("{}\n", k2.to_base64())).unwrap();
        cfg.set("keyfile", kf.to_str().unwrap(), Level::Override)
            .unwrap();
        assert_eq!(key_from_config(&cfg).unwrap(), k2);
        let k3 = CryptoKey::from_secret([3; 16], 5, 6);
        cfg.set("key", &k3.to_base64(), Level::Override).unwrap();
        assert_eq!(key_from_config(&cfg).unwrap(), k3);

        cfg.set(
            "key",
            "AQBwrongwrongwrongwrongwrongwrongwrongw==",
            Level::Override,
        )
        .unwrap();
        let e = key_from_config(&cfg).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(e.to_string().contains("'key' option"), "{e}");
        assert!(
            !e.to_string().contains("AQBwrong"),
            "errors must not echo keys: {e}"
        );

        cfg.unset("key", Level::Override).unwrap();
        std::fs::write(&kf, "garbage").unwrap();
        assert_eq!(key_from_config(&cfg).unwrap_err().errno(), Errno::EINVAL);
        cfg.set(
            "keyfile",
            d.join("nokeyfile").to_str().unwrap(),
            Level::Override,
        )
        .unwrap();
        assert_eq!(key_from_config(&cfg).unwrap_err().errno(), Errno::ENOENT);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
