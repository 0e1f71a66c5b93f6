//! Access settings: API keys from a file or `API_KEYS`, whether `Authorization` goes on to Ollama,
//! and the wake rate limit (see "Access" in docs/behaviour.md).

use std::sync::Arc;

use super::parse::{bad, bad_secret, nonzero_number, ConfigError};
use crate::auth::{parse, Keys};
use crate::cli::AccessArgs;

/// Who may use the proxy and how often a machine may be woken.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Empty: no authentication.
    pub keys: Arc<Keys>,
    /// Send the client's `Authorization` on to Ollama even with keys set.
    pub forward_authorization: bool,
    /// Most wake cycles per machine in any hour (MAX_WAKES_PER_HOUR).
    pub max_wakes_per_hour: Option<usize>,
    /// ADMIN_TOKEN: allows the status page's buttons (see "Monitoring").
    pub admin_token: Option<AdminToken>,
}

/// The admin token: a secret, never shown (its `Debug` hides it), compared in constant time.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(hidden)")
    }
}

impl AdminToken {
    /// `given` is the token (constant time in its content).
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(given))
    }

    /// The value of the page's cookie: a digest of the token, not the token.
    pub fn cookie(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("ollama-proxy-admin:{}", self.0));
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `given` is the page's cookie value (constant time in its content).
    pub fn cookie_matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.cookie().as_bytes().ct_eq(given))
    }
}

impl AccessConfig {
    pub fn from_args(args: &AccessArgs) -> Result<Self, ConfigError> {
        let mut entries = match &args.api_keys_file {
            Some(path) => from_file(path)?,
            None => Vec::new(),
        };
        if let Some(list) = &args.api_keys {
            let more = parse::list(list).map_err(|(n, e)| {
                bad_secret("--api-keys", "API_KEYS", format!("entry {n}: {e}"))
            })?;
            entries.extend(more);
        }
        let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            let reason = format!("the key name {} is used twice", w[0]);
            return Err(bad_secret("--api-keys-file", "API_KEYS_FILE", reason));
        }
        let max_wakes_per_hour = args
            .max_wakes_per_hour
            .as_deref()
            .map(|v| nonzero_number("--max-wakes-per-hour", "MAX_WAKES_PER_HOUR", v))
            .transpose()?;
        Ok(AccessConfig {
            keys: Arc::new(Keys::new(entries)),
            forward_authorization: args.forward_authorization,
            max_wakes_per_hour,
            admin_token: admin_token(args.admin_token.as_deref())?,
        })
    }
}

fn admin_token(value: Option<&str>) -> Result<Option<AdminToken>, ConfigError> {
    match value.map(str::trim) {
        None => Ok(None),
        Some(t) if t.len() < 16 => Err(bad_secret(
            "--admin-token",
            "ADMIN_TOKEN",
            "it needs at least 16 characters",
        )),
        Some(t) => Ok(Some(AdminToken(t.into()))),
    }
}

/// The keys of a file; a file others may read gets a warning (keys are secrets).
fn from_file(path: &std::path::Path) -> Result<Vec<parse::Entry>, ConfigError> {
    let shown = path.display().to_string();
    let err = |reason: String| bad("--api-keys-file", "API_KEYS_FILE", &shown, reason);
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    warn_if_open(path);
    parse::file(&text).map_err(|(line, e)| err(format!("line {line}: {e}")))
}

fn warn_if_open(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "the API keys file can be read by others: chmod 600 it");
        }
    }
}
