//! Strict parsing and display of 48-bit MAC addresses (also used for SecureOn passwords).

use std::fmt;
use std::str::FromStr;

/// A 48-bit hardware address, parsed strictly.
///
/// Accepted forms: `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF`, `aabb.ccdd.eeff` and `aabbccddeeff`
/// (any letter case). Mixed separators, groups of the wrong length, non-hex digits and too few or too
/// many bytes are rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMacError {
    /// The string is empty.
    #[error("empty MAC address")]
    Empty,
    /// A character that is neither a hex digit nor a separator in the expected place.
    #[error("invalid character {0:?}: expected hex digits")]
    InvalidChar(char),
    /// More than one kind of separator (`:`, `-`, `.`) is used.
    #[error("mixed separators")]
    MixedSeparators,
    /// The groups between separators have the wrong number of digits for the form used.
    #[error(
        "wrong group length: expected 6 groups of 2 digits (':' or '-') or 3 groups of 4 ('.')"
    )]
    BadGroups,
    /// The address does not have exactly 6 bytes.
    #[error("expected 6 bytes, found {0}")]
    WrongLength(usize),
}

impl MacAddr {
    /// The six bytes of the address.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseMacError::Empty);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !c.is_ascii_hexdigit() && !matches!(c, ':' | '-' | '.'))
        {
            return Err(ParseMacError::InvalidChar(c));
        }
        let seps: Vec<char> = [':', '-', '.']
            .into_iter()
            .filter(|c| s.contains(*c))
            .collect();
        let (groups, group_len): (Vec<&str>, usize) = match seps.as_slice() {
            [] => {
                if s.len() % 2 != 0 || s.len() != 12 {
                    return Err(ParseMacError::WrongLength(s.len() / 2));
                }
                (vec![s], 12)
            }
            [sep @ (':' | '-')] => (s.split(*sep).collect(), 2),
            ['.'] => (s.split('.').collect(), 4),
            _ => return Err(ParseMacError::MixedSeparators),
        };
        if groups.iter().any(|g| g.len() != group_len) {
            return Err(ParseMacError::BadGroups);
        }
        let digits: String = groups.concat();
        let n = digits.len() / 2;
        if n != 6 {
            return Err(ParseMacError::WrongLength(n));
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = &digits[2 * i..2 * i + 2];
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| ParseMacError::InvalidChar(pair.chars().next().unwrap_or('?')))?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 6] = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

    #[test]
    fn accepts_the_four_forms() {
        for s in [
            "aa:bb:cc:dd:ee:ff",
            "AA-BB-CC-DD-EE-FF",
            "aabb.ccdd.eeff",
            "aabbccddeeff",
            "AaBb.CcDd.EeFf",
            " aa:bb:cc:dd:ee:ff ",
        ] {
            assert_eq!(s.parse::<MacAddr>(), Ok(MacAddr(BYTES)), "{s}");
        }
    }

    #[test]
    fn rejects_bad_forms() {
        use ParseMacError::*;
        let cases: &[(&str, ParseMacError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("aa:bb-cc:dd:ee:ff", MixedSeparators),
            ("aabb.ccdd-eeff", MixedSeparators),
            ("010:02:03:04:05:6", BadGroups),
            ("a:b:c:d:e:f", BadGroups),
            ("aab.bccd.deeff", BadGroups),
            ("zz:00:00:00:00:00", InvalidChar('z')),
            ("aa:bb:cc:dd:ee:fg", InvalidChar('g')),
            ("aa bb cc dd ee ff", InvalidChar(' ')),
            ("aa:bb:cc:dd:ee", WrongLength(5)),
            ("aa:bb:cc:dd:ee:ff:00", WrongLength(7)),
            ("aabbccddee", WrongLength(5)),
            ("aabbccddeeff00", WrongLength(7)),
            ("aabbccddeef", WrongLength(5)),
            ("aabb.ccdd", WrongLength(4)),
            ("aa:bb:cc:dd:ee:ff:", BadGroups),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<MacAddr>().as_ref(), Err(want), "{s:?}");
        }
    }

    #[test]
    fn displays_lowercase_colon_form() {
        assert_eq!(MacAddr(BYTES).to_string(), "aa:bb:cc:dd:ee:ff");
    }
}
