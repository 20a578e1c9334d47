//! A minimal reader/writer of Ceph keyring files, enough for the monitor's
//! bootstrap (`[name]`, `key = ...`, `caps <svc> = "..."`).
// TODO: switch to quarry_common::keyring once it exists.

use std::collections::BTreeMap;

use quarry_auth::{EntityCaps, Secret};

/// One keyring section.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyringEntry {
    /// Entity name.
    pub entity: String,
    /// Secret.
    pub secret: Secret,
    /// Caps by service.
    pub caps: EntityCaps,
}

impl std::fmt::Debug for KeyringEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringEntry")
            .field("entity", &self.entity)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Parse keyring text; errors name the line.
pub fn parse(text: &str) -> Result<Vec<KeyringEntry>, String> {
    let mut out: Vec<(String, Option<Secret>, BTreeMap<String, String>)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let lineno = n + 1;
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("keyring line {lineno}: unterminated section header"))?
                .trim();
            if name.is_empty() {
                return Err(format!("keyring line {lineno}: empty section name"));
            }
            out.push((name.to_string(), None, BTreeMap::new()));
            continue;
        }
        let Some(cur) = out.last_mut() else {
            return Err(format!(
                "keyring line {lineno}: setting outside of a [section]"
            ));
        };
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("keyring line {lineno}: expected 'key = value'"))?;
        let k: Vec<&str> = k.split_whitespace().collect();
        match k.as_slice() {
            ["key"] => {
                let s = Secret::from_base64(unquote(v))
                    .map_err(|e| format!("keyring line {lineno}: {e}"))?;
                cur.1 = Some(s);
            }
            ["caps", svc] => {
                cur.2.insert(svc.to_string(), unquote(v).to_string());
            }
            _ => {} // other settings (auid, ...) are ignored, as Ceph's clients do
        }
    }
    out.into_iter()
        .map(|(entity, secret, caps)| {
            let secret = secret.ok_or_else(|| format!("keyring section [{entity}] has no key"))?;
            let pairs: Vec<(String, String)> = caps.into_iter().collect();
            let caps = EntityCaps::from_pairs(&pairs)
                .map_err(|e| format!("keyring section [{entity}]: {e}"))?;
            Ok(KeyringEntry {
                entity,
                secret,
                caps,
            })
        })
        .collect()
}

/// Render a keyring section as Ceph writes it.
pub fn section(entity: &str, secret: &Secret, caps: &EntityCaps) -> String {
    let mut s = format!("[{entity}]\n\tkey = {}\n", secret.to_base64());
    for (svc, text) in &caps.0 {
        s.push_str(&format!("\tcaps {svc} = \"{text}\"\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let s = Secret::generate(1);
        let caps = EntityCaps::from_pairs(&[("mon", "allow *"), ("osd", "allow *")]).expect("caps");
        let text = format!(
            "# comment\n{}{}",
            section("client.admin", &s, &caps),
            section("mon.", &s, &EntityCaps::default())
        );
        let e = parse(&text).expect("parse");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].entity, "client.admin");
        assert_eq!(e[0].secret, s);
        assert_eq!(e[0].caps, caps);
        assert!(parse("key = x").is_err());
        assert!(parse("[a\nkey = x").is_err());
        assert!(parse("[client.a]\n").is_err());
        assert!(parse("[client.a]\nkey = nope\n").is_err());
        assert!(parse("[client.a]\nnonsense\n").is_err());
    }
}
