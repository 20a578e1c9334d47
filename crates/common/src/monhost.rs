//! The `mon_host` option: which monitors to contact.
//!
//! Forms accepted, as in Ceph:
//! - `1.2.3.4`, `1.2.3.4:6789`, `mon1.example.com:6789`, `[::1]:6789`, `::1`;
//! - a protocol prefix `v1:` / `v2:` / `any:` and a `/nonce` suffix
//!   (`v2:1.2.3.4:3300/0`);
//! - one monitor with several addresses as a bracketed vector
//!   `[v2:1.2.3.4:3300,v1:1.2.3.4:6789]`;
//! - several monitors separated by `,`, `;` or whitespace.
//!
//! The result keeps what was written (protocol, port or none); choosing a
//! default port is the connecting code's business.

use std::fmt;
use std::net::Ipv6Addr;

use crate::Errno;

/// Ceph's messenger protocol named by an address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MonProto {
    /// `v1:` (legacy, port 6789 by default).
    V1,
    /// `v2:` (port 3300 by default).
    V2,
    /// `any:`.
    Any,
}

/// One address of a monitor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MonAddr {
    /// The protocol prefix, if one was written.
    pub proto: Option<MonProto>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port, if one was written.
    pub port: Option<u16>,
}

impl MonAddr {
    /// `host:port` (IPv6 bracketed), with `default_port` if none was given:
    /// the form `TcpStream::connect` and `ToSocketAddrs` take.
    pub fn connect_string(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

impl fmt::Display for MonAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            Some(MonProto::V1) => f.write_str("v1:")?,
            Some(MonProto::V2) => f.write_str("v2:")?,
            Some(MonProto::Any) => f.write_str("any:")?,
            None => {}
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

/// One monitor: one or more addresses (a `[...]` vector has several).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MonAddrs(pub Vec<MonAddr>);

/// Why a `mon_host` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonHostError {
    /// Nothing but separators.
    #[error("mon_host is empty")]
    Empty,
    /// A `[` without its `]`, or a stray `]`.
    #[error("invalid mon_host '{input}': unbalanced brackets")]
    Brackets {
        /// The whole value.
        input: String,
    },
    /// One address is malformed.
    #[error("invalid monitor address '{addr}': {reason}")]
    BadAddr {
        /// The address text.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl MonHostError {
    /// The errno this maps to (always EINVAL).
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

impl From<MonHostError> for Errno {
    fn from(e: MonHostError) -> Errno {
        e.errno()
    }
}

/// Parse a `mon_host` value into monitors, in order.
pub fn parse_mon_host(s: &str) -> Result<Vec<MonAddrs>, MonHostError> {
    let brackets = || MonHostError::Brackets {
        input: s.to_string(),
    };
    let mut mons = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c == ';' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        // A vector starts with '[' followed by a protocol prefix; a bare
        // '[' starts a bracketed IPv6 address instead.
        let is_vector = rest.starts_with('[')
            && ["v1:", "v2:", "any:"]
                .iter()
                .any(|p| rest[1..].trim_start().starts_with(p));
        if is_vector {
            let end = matching_bracket(rest).ok_or_else(brackets)?;
            let inner = &rest[1..end];
            let mut addrs = Vec::new();
            for item in split_items(inner).map_err(|_| brackets())? {
                addrs.push(parse_addr(item)?);
            }
            if addrs.is_empty() {
                return Err(MonHostError::BadAddr {
                    addr: rest[..=end].to_string(),
                    reason: "empty address vector".to_string(),
                });
            }
            mons.push(MonAddrs(addrs));
            rest = &rest[end + 1..];
        } else {
            let end = item_end(rest).map_err(|_| brackets())?;
            mons.push(MonAddrs(vec![parse_addr(&rest[..end])?]));
            rest = &rest[end..];
        }
    }
    if mons.is_empty() {
        return Err(MonHostError::Empty);
    }
    Ok(mons)
}

/// Index of the `]` that closes the `[` at the start of `s`.
fn matching_bracket(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Length of the next item: up to a separator outside brackets.
fn item_end(s: &str) -> Result<usize, ()> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or(())?,
            ',' | ';' if depth == 0 => return Ok(i),
            c if c.is_whitespace() && depth == 0 => return Ok(i),
            _ => {}
        }
    }
    if depth == 0 {
        Ok(s.len())
    } else {
        Err(())
    }
}

/// The items of a vector's inside.
fn split_items(s: &str) -> Result<Vec<&str>, ()> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c == ';' || c.is_whitespace());
        if rest.is_empty() {
            return Ok(out);
        }
        let end = item_end(rest)?;
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
}

/// Parse one address: `[proto:]host[:port][/nonce]`.
fn parse_addr(item: &str) -> Result<MonAddr, MonHostError> {
    let bad = |reason: &str| MonHostError::BadAddr {
        addr: item.to_string(),
        reason: reason.to_string(),
    };
    let (proto, rest) = if let Some(r) = item.strip_prefix("v1:") {
        (Some(MonProto::V1), r)
    } else if let Some(r) = item.strip_prefix("v2:") {
        (Some(MonProto::V2), r)
    } else if let Some(r) = item.strip_prefix("any:") {
        (Some(MonProto::Any), r)
    } else {
        (None, item)
    };
    let rest = match rest.rsplit_once('/') {
        Some((a, nonce)) => {
            if nonce.is_empty() || !nonce.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad("the part after '/' must be a numeric nonce"));
            }
            a
        }
        None => rest,
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        if h.parse::<Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address inside [ ]"));
        }
        let port = match after {
            "" => None,
            p => Some(
                parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                )
                .ok_or_else(|| bad("port must be a number from 1 to 65535"))?,
            ),
        };
        (h, port)
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        (rest, None)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port =
                    parse_port(p).ok_or_else(|| bad("port must be a number from 1 to 65535"))?;
                if h.contains(':') {
                    return Err(bad(
                        "an IPv6 address with a port must be written [addr]:port",
                    ));
                }
                (h, Some(port))
            }
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(bad("host must be an IP address or a DNS name"));
    }
    Ok(MonAddr {
        proto,
        host: host.to_string(),
        port,
    })
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(proto: Option<MonProto>, host: &str, port: Option<u16>) -> MonAddr {
        MonAddr {
            proto,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn plain_forms() {
        assert_eq!(
            parse_mon_host("1.2.3.4").unwrap(),
            vec![MonAddrs(vec![a(None, "1.2.3.4", None)])]
        );
        assert_eq!(
            parse_mon_host("127.0.0.1:6789").unwrap(),
            vec![MonAddrs(vec![a(None, "127.0.0.1", Some(6789))])]
        );
        let m = parse_mon_host(" a:1, b:2;c:3  d.example.com ,").unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].0[0], a(None, "d.example.com", None));
        assert_eq!(
            parse_mon_host("[::1]:6789").unwrap(),
            vec![MonAddrs(vec![a(None, "::1", Some(6789))])]
        );
        assert_eq!(parse_mon_host("::1").unwrap()[0].0[0], a(None, "::1", None));
        assert_eq!(
            parse_mon_host("[fe80::1]").unwrap()[0].0[0],
            a(None, "fe80::1", None)
        );
        assert_eq!(
            parse_mon_host("v2:1.2.3.4:3300/0").unwrap()[0].0[0],
            a(Some(MonProto::V2), "1.2.3.4", Some(3300))
        );
    }

    #[test]
    fn vectors_group_one_monitor() {
        // The golden record's ceph.conf.
        let m = parse_mon_host("[v2:127.0.0.1:3300,v1:127.0.0.1:6789]").unwrap();
        assert_eq!(
            m,
            vec![MonAddrs(vec![
                a(Some(MonProto::V2), "127.0.0.1", Some(3300)),
                a(Some(MonProto::V1), "127.0.0.1", Some(6789)),
            ])]
        );
        let m = parse_mon_host("[v2:a:3300,v1:a:6789],[v2:b:3300/7] [v1:[::1]:6789];c").unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].0, vec![a(Some(MonProto::V2), "b", Some(3300))]);
        assert_eq!(m[2].0, vec![a(Some(MonProto::V1), "::1", Some(6789))]);
        assert_eq!(m[3].0, vec![a(None, "c", None)]);
        assert_eq!(
            parse_mon_host("[any:h:1]").unwrap()[0].0[0].proto,
            Some(MonProto::Any)
        );
    }

    #[test]
    fn connect_strings_and_display() {
        let m = parse_mon_host("h, [::1], v2:h:3300").unwrap();
        assert_eq!(m[0].0[0].connect_string(6789), "h:6789");
        assert_eq!(m[1].0[0].connect_string(6789), "[::1]:6789");
        assert_eq!(m[2].0[0].connect_string(6789), "h:3300");
        assert_eq!(m[2].0[0].to_string(), "v2:h:3300");
        assert_eq!(a(None, "::1", Some(1)).to_string(), "[::1]:1");
        assert_eq!(a(None, "::1", None).to_string(), "::1");
    }

    #[test]
    fn malformed_values() {
        let bad = |s: &str| parse_mon_host(s).unwrap_err();
        assert_eq!(bad(""), MonHostError::Empty);
        assert_eq!(bad(" ,; "), MonHostError::Empty);
        assert!(matches!(bad("[v2:a:1"), MonHostError::Brackets { .. }));
        assert!(matches!(bad("a]"), MonHostError::Brackets { .. }));
        assert!(matches!(bad("[::1"), MonHostError::Brackets { .. }));
        assert!(matches!(bad("a:0"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("a:65536"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("a:x"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("a:"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad(":6789"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("fe80::1:zz"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("[nothex]:1"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("[::1]6789"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("v2:a:1/x"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("a/"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("ho$t:1"), MonHostError::BadAddr { .. }));
        assert!(matches!(bad("[v2:]"), MonHostError::BadAddr { .. }));
        let e = bad("a:99999");
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(e.to_string().contains("'a:99999'"), "{e}");
    }
}
