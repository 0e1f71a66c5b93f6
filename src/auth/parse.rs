//! The text of keys: `name:key:rights` lines (a file, or `API_KEYS` separated by commas) and the
//! `Authorization: Bearer` header (see "Access" in docs/behaviour.md).

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rights {
    /// Metadata only, never a wake or a model run.
    Read,
    /// Everything.
    Use,
}

impl Rights {
    pub fn as_str(self) -> &'static str {
        match self {
            Rights::Read => "read",
            Rights::Use => "use",
        }
    }
}

/// One `name:key:rights` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub key: String,
    pub rights: Rights,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:***:{}", self.name, self.rights.as_str())
    }
}

/// Why a key entry was refused (never quoting the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("expected name:key:rights")]
    Shape,
    #[error("the name must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'")]
    Name,
    #[error("the key must be 16-256 visible ASCII characters without ':' or ','")]
    Key,
    #[error("rights must be read or use")]
    Rights,
}

fn name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A key as a Bearer token can carry it (RFC 6750's token68 is stricter; visible ASCII is what
/// clients send).
fn key_ok(key: &str) -> bool {
    (16..=256).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':' && b != b',')
}

/// One entry: `name:key:rights`, surrounding blanks ignored.
pub fn entry(text: &str) -> Result<Entry, EntryError> {
    let mut parts = text.trim().split(':');
    let (Some(name), Some(key), Some(rights), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(EntryError::Shape);
    };
    if !name_ok(name) {
        return Err(EntryError::Name);
    }
    if !key_ok(key) {
        return Err(EntryError::Key);
    }
    let rights = match rights {
        "read" => Rights::Read,
        "use" => Rights::Use,
        _ => return Err(EntryError::Rights),
    };
    Ok(Entry {
        name: name.to_string(),
        key: key.to_string(),
        rights,
    })
}

/// A keys file: one entry per line; blank lines and lines starting with `#` are skipped. The error
/// names the line (from 1).
pub fn file(text: &str) -> Result<Vec<Entry>, (usize, EntryError)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| entry(l).map_err(|e| (i + 1, e)))
        .collect()
}

/// `API_KEYS`: entries separated by commas. The error names the entry (from 1).
pub fn list(text: &str) -> Result<Vec<Entry>, (usize, EntryError)> {
    text.split(',')
        .enumerate()
        .filter(|(_, e)| !e.trim().is_empty())
        .map(|(i, e)| entry(e).map_err(|err| (i + 1, err)))
        .collect()
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case, one or more
/// spaces); `None` for anything else.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value.get(7..)?.trim_ascii();
    (!token.is_empty() && !token.contains(&b' ')).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_and_their_errors() {
        let e = entry(" ci:0123456789abcdef:use ").unwrap();
        assert_eq!((e.name.as_str(), e.rights), ("ci", Rights::Use));
        assert_eq!(entry("ci:0123456789abcdef"), Err(EntryError::Shape));
        assert_eq!(entry("c i:0123456789abcdef:use"), Err(EntryError::Name));
        assert_eq!(entry("ci:short:use"), Err(EntryError::Key));
        assert_eq!(entry("ci:0123456789abcdef:admin"), Err(EntryError::Rights));
        assert_eq!(format!("{e:?}"), "ci:***:use");
    }

    #[test]
    fn files_skip_comments_and_name_the_bad_line() {
        let text = "# keys\n\nphone:aaaaaaaaaaaaaaaa:read\nlaptop:bbbbbbbbbbbbbbbb:use\n";
        assert_eq!(file(text).unwrap().len(), 2);
        assert_eq!(file("\n\nx:y:z\n"), Err((3, EntryError::Key)));
        assert_eq!(
            list("a:aaaaaaaaaaaaaaaa:read, b:bbbbbbbbbbbbbbbb:use")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer a b"), None);
        assert_eq!(bearer(b"Bear"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = file(&text);
            let _ = list(&text);
            let _ = entry(&text);
        }

        #[test]
        fn arbitrary_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = bearer(&bytes);
        }

        #[test]
        fn valid_lines_round_trip(
            name in "[a-zA-Z0-9._-]{1,64}",
            key in "[!-+\\x2D-9;-~]{16,256}",
            read in any::<bool>(),
        ) {
            let rights = if read { "read" } else { "use" };
            let line = format!("{name}:{key}:{rights}");
            let e = entry(&line).unwrap();
            prop_assert_eq!(format!("{}:{}:{}", e.name, e.key, e.rights.as_str()), line);
            let header = format!("Bearer {key}");
            prop_assert_eq!(bearer(header.as_bytes()), Some(key.as_bytes()));
        }
    }
}
