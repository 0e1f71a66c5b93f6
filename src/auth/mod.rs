//! Who may use the proxy and who may wake a machine: API keys with `read` or `use` rights, checked
//! in constant time (see "Access" in docs/behaviour.md).

pub mod parse;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use parse::Rights;

/// The client a request comes from, as far as keys tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (never the key), `None` without keys.
    pub key: Option<Arc<str>>,
    pub rights: Rights,
}

impl Caller {
    /// No keys configured: everyone may do everything, as before keys existed.
    pub fn open() -> Caller {
        Caller {
            key: None,
            rights: Rights::Use,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is no configured key.
    Wrong,
}

struct Stored {
    name: Arc<str>,
    digest: [u8; 32],
    rights: Rights,
}

/// The configured keys; empty = no authentication.
#[derive(Default)]
pub struct Keys(Vec<Stored>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| &*k.name).collect();
        write!(f, "Keys({names:?})")
    }
}

impl Keys {
    pub fn new(entries: Vec<parse::Entry>) -> Keys {
        Keys(
            entries
                .into_iter()
                .map(|e| Stored {
                    name: e.name.into(),
                    digest: Sha256::digest(e.key.as_bytes()).into(),
                    rights: e.rights,
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller named by an `Authorization` value. The token is hashed and compared with every
    /// key's hash without stopping early, so the time taken does not depend on how much of a key
    /// a guess got right, nor on its length.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Caller, Refusal> {
        if self.0.is_empty() {
            return Ok(Caller::open());
        }
        let token = authorization
            .and_then(parse::bearer)
            .ok_or(Refusal::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found: Option<&Stored> = None;
        for stored in &self.0 {
            let same = bool::from(stored.digest.ct_eq(&digest));
            if same && found.is_none() {
                found = Some(stored);
            }
        }
        let stored = found.ok_or(Refusal::Wrong)?;
        Ok(Caller {
            key: Some(Arc::clone(&stored.name)),
            rights: stored.rights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(parse::file("phone:aaaaaaaaaaaaaaaa:read\nlaptop:bbbbbbbbbbbbbbbb:use").unwrap())
    }

    #[test]
    fn callers_by_key() {
        let k = keys();
        let phone = k.check(Some(b"Bearer aaaaaaaaaaaaaaaa")).unwrap();
        assert_eq!(
            (phone.key.as_deref(), phone.rights),
            (Some("phone"), Rights::Read)
        );
        let laptop = k.check(Some(b"bearer bbbbbbbbbbbbbbbb")).unwrap();
        assert_eq!(laptop.rights, Rights::Use);
        assert_eq!(k.check(None), Err(Refusal::Missing));
        assert_eq!(k.check(Some(b"Basic x")), Err(Refusal::Missing));
        assert_eq!(
            k.check(Some(b"Bearer aaaaaaaaaaaaaaab")),
            Err(Refusal::Wrong)
        );
        assert_eq!(format!("{k:?}"), r#"Keys(["phone", "laptop"])"#);
    }

    #[test]
    fn without_keys_everyone_may_use() {
        assert_eq!(Keys::default().check(None), Ok(Caller::open()));
    }
}
