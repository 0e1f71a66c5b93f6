//! HTTP wake: `GET WAKE_URL`, WolGoWeb signing and reading its `{"error":N}` answers (see "HTTP
//! wake" in docs/behaviour.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use reqwest::Url;

use crate::config::{url_mac, HttpWakeConfig};

/// WolGoWeb's token: lowercase hex `md5(key + mac + time)`.
pub fn token(key: &str, mac: &str, time: u64) -> String {
    let digest = Md5::digest(format!("{key}{mac}{time}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL to call at `time`: WAKE_URL, signed with `time` and `token` when a key is set.
pub fn signed_url(cfg: &HttpWakeConfig, time: u64) -> Url {
    let Some(key) = &cfg.key else {
        return cfg.url.clone();
    };
    let mac = url_mac(&cfg.url).unwrap_or_default();
    let mut url = cfg.url.clone();
    let kept: Vec<(String, String)> = cfg
        .url
        .query_pairs()
        .filter(|(k, _)| k != "time" && k != "token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("time", &time.to_string())
        .append_pair("token", &token(key.expose(), &mac, time));
    url
}

/// The URL for logs and messages: the token is replaced by `***`.
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    // User and password (basic auth) are never shown.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "token" {
                "***".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Decides whether a wake endpoint's answer means success: a 2xx and, for a JSON body with an
/// `error` field, `error == 0`.
pub fn judge(status: reqwest::StatusCode, body: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    let snippet: String = text.trim().chars().take(200).collect();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {snippet}"));
    }
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match json.as_ref().and_then(|j| j.get("error")) {
        None => Ok(format!("HTTP {status}")),
        Some(code) => {
            let zero = code.as_i64() == Some(0) || code.as_str() == Some("0");
            if zero {
                Ok(format!("HTTP {status}: {snippet}"))
            } else {
                Err(format!("wake service answered {snippet}"))
            }
        }
    }
}

/// Calls the wake URL once. Returns a short description of the answer.
pub async fn call(client: &reqwest::Client, cfg: &HttpWakeConfig) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let url = signed_url(cfg, now);
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| crate::error::chain(&e))?;
    judge(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn wolgoweb_token_vector() {
        assert_eq!(
            token("123456", "00-00-00-00-00-00", 1594452205),
            "eb3515003672b3e0324196ecd78438a2"
        );
    }

    #[test]
    fn signing_keeps_mac_as_written() {
        let cfg = HttpWakeConfig {
            url: Url::parse("http://pi:9090/wol?mac=00-00-00-00-00-00&port=9&token=old").unwrap(),
            key: Some(Secret::new("123456".into())),
        };
        let url = signed_url(&cfg, 1594452205);
        assert_eq!(
            url.as_str(),
            "http://pi:9090/wol?mac=00-00-00-00-00-00&port=9&time=1594452205&token=eb3515003672b3e0324196ecd78438a2"
        );
        assert!(display_url(&url).ends_with("token=***"));
        let plain = HttpWakeConfig { key: None, ..cfg };
        assert_eq!(signed_url(&plain, 1), plain.url);
    }

    #[test]
    fn judging_answers() {
        use reqwest::StatusCode as S;
        assert!(judge(S::OK, br#"{"error":0,"message":"OK"}"#).is_ok());
        assert!(judge(S::OK, b"sent").is_ok());
        assert!(judge(S::NO_CONTENT, b"").is_ok());
        let err = judge(S::OK, br#"{"error":104,"message":"token error"}"#).unwrap_err();
        assert!(err.contains("104"), "{err}");
        assert!(judge(S::OK, br#"{"error":"1"}"#).is_err());
        assert!(judge(S::INTERNAL_SERVER_ERROR, b"boom").is_err());
    }
}
