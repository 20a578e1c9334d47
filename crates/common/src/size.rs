//! Human sizes: parsing `10G`, `10GiB`, `10 GiB`, `512M`, `4k`, `1.5G`, `100`
//! and printing sizes the way `rbd info` / `rbd ls -l` / `rbd du` do.
//!
//! All units are binary (K = 1024), as in both the rbd CLI and qemu-img. The
//! unit of a bare number differs between tools (`rbd create --size 100` is
//! 100 MiB, `qemu-img create ... 100` is 100 bytes), so callers pass it.
//!
//! Option values in ceph.conf use a stricter grammar; see
//! [`crate::options`] for that one.

use std::fmt;

use crate::Errno;

/// A binary unit: the multiplier of a number in a size string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SizeUnit {
    /// 1 byte.
    Bytes,
    /// 2^10 bytes.
    KiB,
    /// 2^20 bytes.
    MiB,
    /// 2^30 bytes.
    GiB,
    /// 2^40 bytes.
    TiB,
    /// 2^50 bytes.
    PiB,
    /// 2^60 bytes.
    EiB,
}

impl SizeUnit {
    /// The power of two this unit multiplies by.
    pub fn shift(self) -> u32 {
        match self {
            SizeUnit::Bytes => 0,
            SizeUnit::KiB => 10,
            SizeUnit::MiB => 20,
            SizeUnit::GiB => 30,
            SizeUnit::TiB => 40,
            SizeUnit::PiB => 50,
            SizeUnit::EiB => 60,
        }
    }

    /// The number of bytes in one unit.
    pub fn bytes(self) -> u64 {
        1u64 << self.shift()
    }

    /// The symbol used when printing (`B`, `KiB`, ...).
    pub fn symbol(self) -> &'static str {
        UNITS[self.shift() as usize / 10]
    }

    /// The unit for a prefix letter (`k`/`K` → KiB); case-insensitive.
    fn from_letter(c: char) -> Option<SizeUnit> {
        Some(match c.to_ascii_uppercase() {
            'B' => SizeUnit::Bytes,
            'K' => SizeUnit::KiB,
            'M' => SizeUnit::MiB,
            'G' => SizeUnit::GiB,
            'T' => SizeUnit::TiB,
            'P' => SizeUnit::PiB,
            'E' => SizeUnit::EiB,
            _ => return None,
        })
    }
}

/// Printed unit symbols, indexed by power of 1024.
const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// Longest digit string accepted (integer and fraction together). 38 digits
/// keep every intermediate value inside u128 (10^38 < 2^127), and anything
/// longer is either above 16 EiB or a fraction below one byte anyway.
const MAX_DIGITS: usize = 38;

/// Why a size string was refused. Every variant carries the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing but whitespace.
    #[error("invalid size '{0}': empty")]
    Empty(String),
    /// A leading minus sign.
    #[error("invalid size '{0}': must not be negative")]
    Negative(String),
    /// No digits where the number should be, or stray characters.
    #[error("invalid size '{input}': {reason}")]
    Malformed {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text after the number is not a unit.
    #[error("invalid size '{input}': unknown unit '{unit}' (use B, K, M, G, T, P, E, optionally followed by 'i' or 'iB')")]
    UnknownUnit {
        /// The string as given.
        input: String,
        /// The unit text.
        unit: String,
    },
    /// `KB`, `MB`, ...: decimal or binary is unclear, so it is refused.
    #[error("invalid size '{input}': ambiguous unit '{unit}' (sizes are binary: write {binary} or {letter})")]
    AmbiguousUnit {
        /// The string as given.
        input: String,
        /// The unit text.
        unit: String,
        /// The IEC spelling to suggest.
        binary: String,
        /// The one-letter spelling to suggest.
        letter: String,
    },
    /// The value does not fit in 64 bits.
    #[error("invalid size '{0}': too large (the maximum is 16 EiB - 1)")]
    Overflow(String),
    /// The value is not a whole number of bytes (`1.5` bytes, `0.1K`).
    #[error("invalid size '{0}': not a whole number of bytes")]
    Fractional(String),
}

impl SizeError {
    /// The errno this error maps to: ERANGE for overflow, else EINVAL.
    pub fn errno(&self) -> Errno {
        match self {
            SizeError::Overflow(_) => Errno::ERANGE,
            _ => Errno::EINVAL,
        }
    }
}

impl From<SizeError> for Errno {
    fn from(e: SizeError) -> Errno {
        e.errno()
    }
}

/// Parse a human size; a number without a unit is in `default_unit`.
///
/// Accepts `100`, `4k`, `4K`, `4Ki`, `4KiB`, `4 KiB`, `1.5G`, `512B`; refuses
/// negatives, overflow, garbage, ambiguous `KB`/`MB`, and values that are not
/// a whole number of bytes.
pub fn parse_size(s: &str, default_unit: SizeUnit) -> Result<u64, SizeError> {
    let input = s.to_string();
    let t = s.trim();
    if t.is_empty() {
        return Err(SizeError::Empty(input));
    }
    let malformed = |reason: &str| SizeError::Malformed {
        input: input.clone(),
        reason: reason.to_string(),
    };
    let t = match t.strip_prefix('-') {
        Some(_) => return Err(SizeError::Negative(input.clone())),
        None => t.strip_prefix('+').unwrap_or(t),
    };

    // Split into integer digits, fraction digits and the unit text.
    let int_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (int_digits, rest) = t.split_at(int_end);
    let (frac_digits, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if end == 0 {
                return Err(malformed("expected digits after '.'"));
            }
            r.split_at(end)
        }
        None => ("", rest),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(malformed("expected a number"));
    }
    let unit_text = rest.trim_start();
    let unit = if unit_text.is_empty() {
        default_unit
    } else {
        parse_unit(unit_text, &input)?
    };

    // Exact arithmetic: bytes = N * 2^shift / 10^d where N is all the
    // digits. Floats would silently round `0.1K`, which must be refused.
    let frac_digits = frac_digits.trim_end_matches('0');
    let int_digits = int_digits.trim_start_matches('0');
    if int_digits.len() + frac_digits.len() > MAX_DIGITS {
        return Err(if int_digits.len() > 20 {
            SizeError::Overflow(input)
        } else {
            malformed("too many digits")
        });
    }
    let mut n: u128 = 0;
    for c in int_digits.chars().chain(frac_digits.chars()) {
        // Cannot overflow: at most MAX_DIGITS digits.
        n = n * 10 + u128::from(c as u8 - b'0');
    }
    let d = frac_digits.len() as u32;
    // Divide out 5^d; if it does not divide, the value is fractional.
    let five_d = 5u128.pow(d);
    if !n.is_multiple_of(five_d) {
        return Err(SizeError::Fractional(input));
    }
    let n = n / five_d;
    // Now bytes = n * 2^(shift - d).
    let shift = unit.shift();
    let bytes = if shift >= d {
        let k = shift - d;
        if n > (u128::from(u64::MAX) >> k) {
            return Err(SizeError::Overflow(input));
        }
        n << k
    } else {
        let k = d - shift;
        if n & ((1u128 << k) - 1) != 0 {
            return Err(SizeError::Fractional(input));
        }
        n >> k
    };
    u64::try_from(bytes).map_err(|_| SizeError::Overflow(input))
}

/// Parse the unit text after the number (already left-trimmed).
fn parse_unit(unit: &str, input: &str) -> Result<SizeUnit, SizeError> {
    let unknown = || SizeError::UnknownUnit {
        input: input.to_string(),
        unit: unit.to_string(),
    };
    let mut chars = unit.chars();
    let first = chars.next().ok_or_else(unknown)?;
    let u = SizeUnit::from_letter(first).ok_or_else(unknown)?;
    let tail: String = chars.collect();
    match tail.to_ascii_lowercase().as_str() {
        "" => Ok(u),
        // "Bi"/"BiB" is no unit at all.
        "i" | "ib" if u != SizeUnit::Bytes => Ok(u),
        "b" if u != SizeUnit::Bytes => Err(SizeError::AmbiguousUnit {
            input: input.to_string(),
            unit: unit.to_string(),
            binary: format!("{}iB", first.to_ascii_uppercase()),
            letter: first.to_ascii_uppercase().to_string(),
        }),
        _ => Err(unknown()),
    }
}

/// Print a size as `rbd info` does: `10 GiB`, `100 MiB`, `192 KiB`, `0 B`.
///
/// Exact multiples of the unit print without decimals; other values get up
/// to two decimals, as many as fit in seven characters including the unit
/// (`1.5 GiB`, `22 GiB`, `1.02 KiB`) — the rule Ceph's tools follow.
pub fn format_size(bytes: u64) -> String {
    let mut n = bytes;
    let mut index = 0usize;
    while n >= 1024 && index < UNITS.len() - 1 {
        n /= 1024;
        index += 1;
    }
    let unit = UNITS[index];
    let mult = 1u64 << (10 * index);
    if index == 0 || bytes.is_multiple_of(mult) {
        return format!("{n} {unit}");
    }
    let value = bytes as f64 / mult as f64;
    let mut out = String::new();
    for precision in (0..=2).rev() {
        out = format!("{value:.precision$} {unit}");
        if out.len() <= 7 {
            break;
        }
    }
    out
}

/// A byte count that displays like [`format_size`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format_size(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const M: u64 = 1024 * K;
    const G: u64 = 1024 * M;
    const T: u64 = 1024 * G;

    #[test]
    fn parses_plain_and_suffixed() {
        use SizeUnit::*;
        assert_eq!(parse_size("100", Bytes), Ok(100));
        assert_eq!(parse_size("100", MiB), Ok(100 * M));
        assert_eq!(parse_size("10G", Bytes), Ok(10 * G));
        assert_eq!(parse_size("10GiB", Bytes), Ok(10 * G));
        assert_eq!(parse_size("10 GiB", Bytes), Ok(10 * G));
        assert_eq!(parse_size("10Gi", Bytes), Ok(10 * G));
        assert_eq!(parse_size("10gib", Bytes), Ok(10 * G));
        assert_eq!(parse_size("512M", Bytes), Ok(512 * M));
        assert_eq!(parse_size("4k", Bytes), Ok(4 * K));
        assert_eq!(parse_size("4K", MiB), Ok(4 * K));
        assert_eq!(parse_size("1T", Bytes), Ok(T));
        assert_eq!(parse_size("2P", Bytes), Ok(2 << 50));
        assert_eq!(parse_size("3E", Bytes), Ok(3 << 60));
        assert_eq!(parse_size("512B", MiB), Ok(512));
        assert_eq!(parse_size("512 b", MiB), Ok(512));
        assert_eq!(parse_size("  7  ", KiB), Ok(7 * K));
        assert_eq!(parse_size("+5", Bytes), Ok(5));
        assert_eq!(parse_size("0", GiB), Ok(0));
        assert_eq!(parse_size("007", Bytes), Ok(7));
    }

    #[test]
    fn parses_exact_fractions() {
        use SizeUnit::*;
        assert_eq!(parse_size("1.5G", Bytes), Ok(G + G / 2));
        assert_eq!(parse_size("0.5K", Bytes), Ok(512));
        assert_eq!(parse_size(".5K", Bytes), Ok(512));
        assert_eq!(parse_size("2.0", Bytes), Ok(2));
        assert_eq!(parse_size("2.000000000000000000000000", Bytes), Ok(2));
        assert_eq!(parse_size("1.25", MiB), Ok(M + M / 4));
        // 2^-21 GiB is exactly 512 bytes, however many digits it takes.
        assert_eq!(parse_size("0.000000476837158203125G", Bytes), Ok(512));
    }

    #[test]
    fn refuses_bad_input() {
        use SizeUnit::*;
        assert!(matches!(parse_size("", Bytes), Err(SizeError::Empty(_))));
        assert!(matches!(parse_size("   ", Bytes), Err(SizeError::Empty(_))));
        assert!(matches!(
            parse_size("-1", Bytes),
            Err(SizeError::Negative(_))
        ));
        assert!(matches!(
            parse_size("-1G", Bytes),
            Err(SizeError::Negative(_))
        ));
        assert!(matches!(
            parse_size("abc", Bytes),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("G", Bytes),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("1.", Bytes),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("1.G", Bytes),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size(".", Bytes),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("1e3", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10X", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10 G G", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10Bi", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10BB", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10GiBs", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("1,5G", Bytes),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10GB", Bytes),
            Err(SizeError::AmbiguousUnit { .. })
        ));
        assert!(matches!(
            parse_size("1.5", Bytes),
            Err(SizeError::Fractional(_))
        ));
        assert!(matches!(
            parse_size("0.1K", Bytes),
            Err(SizeError::Fractional(_))
        ));
        assert!(matches!(
            parse_size("0.0000000000000000000000000000001G", Bytes),
            Err(SizeError::Fractional(_))
        ));
        assert!(matches!(
            parse_size("16E", Bytes),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("18446744073709551616", Bytes),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999999999999999999999", Bytes),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("1.00000000000000000000000000000000000000001", Bytes),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("17179869184G", Bytes),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(parse_size("18446744073709551615", Bytes), Ok(u64::MAX));
        assert_eq!(parse_size("15E", Bytes), Ok(15 << 60));
    }

    #[test]
    fn errors_name_the_input_and_map_to_errno() {
        let e = parse_size("10GB", SizeUnit::Bytes).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        let msg = e.to_string();
        assert!(msg.contains("'10GB'") && msg.contains("GiB"), "{msg}");
        let e = parse_size("16E", SizeUnit::Bytes).unwrap_err();
        assert_eq!(e.errno(), Errno::ERANGE);
        let e = parse_size("1.5", SizeUnit::Bytes).unwrap_err();
        assert!(e.to_string().contains("whole number of bytes"));
        let e = parse_size("12Q", SizeUnit::Bytes).unwrap_err();
        assert!(e.to_string().contains("'Q'"), "{e}");
    }

    #[test]
    fn formats_like_rbd() {
        // Forms seen in the golden record of real rbd output.
        assert_eq!(format_size(10 * G), "10 GiB");
        assert_eq!(format_size(20 * G), "20 GiB");
        assert_eq!(format_size(G), "1 GiB");
        assert_eq!(format_size(M), "1 MiB");
        assert_eq!(format_size(4 * K), "4 KiB");
        assert_eq!(format_size(100 * M), "100 MiB");
        assert_eq!(format_size(64 * M), "64 MiB");
        assert_eq!(format_size(196624), "192 KiB");
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1023), "1023 B");
        // <TOTAL> line of `rbd du`: 20G + 1G + 1G + 100M + 192K + 64M.
        assert_eq!(
            format_size(20 * G + 2 * G + 100 * M + 196624 + 64 * M),
            "22 GiB"
        );
        // Non-multiples: as many decimals as fit in 7 characters.
        assert_eq!(format_size(G + G / 2), "1.5 GiB");
        // Vectors checked against C's printf with the same rule, including
        // its round-half-to-even on exact ties (10.5 -> 10, 11.5 -> 12).
        assert_eq!(format_size(K + 20), "1.0 KiB");
        assert_eq!(format_size(K + 512), "1.5 KiB");
        assert_eq!(format_size(K + 256), "1.2 KiB");
        assert_eq!(format_size(10 * K + 512), "10 KiB");
        assert_eq!(format_size(11 * K + 512), "12 KiB");
        assert_eq!(format_size(5 * M + M / 2), "5.5 MiB");
        assert_eq!(format_size(123456789), "118 MiB");
        assert_eq!(format_size(G + G / 4), "1.2 GiB");
        assert_eq!(format_size(4105694738446774), "3.6 PiB");
        assert_eq!(format_size(1023676), "1000 KiB");
        assert_eq!(format_size(1024 * K - 1), "1024 KiB");
        assert_eq!(format_size(u64::MAX), "16 EiB");
        assert_eq!(format_size(1 << 60), "1 EiB");
        assert_eq!(ByteSize(4 * M).to_string(), "4 MiB");
        assert_eq!(format!("{:>8}", ByteSize(4 * M)), "   4 MiB");
    }

    #[test]
    fn unit_helpers() {
        assert_eq!(SizeUnit::GiB.bytes(), G);
        assert_eq!(SizeUnit::Bytes.symbol(), "B");
        assert_eq!(SizeUnit::EiB.symbol(), "EiB");
    }
}
