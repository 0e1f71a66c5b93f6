//! API keys and the wake rate limit on the real binary (see "Access" and "Wake rate limit" in
//! docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::py::{python, run_clients};
use common::sleeping::SleepingHost;
use common::{client, Child};

const READ_KEY: &str = "rk-0123456789abcdef";
const USE_KEY: &str = "uk-fedcba9876543210";

fn keys() -> String {
    format!("phone:{READ_KEY}:read,laptop:{USE_KEY}:use")
}

async fn get(proxy: &Child, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = client().get(proxy.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

async fn chat(proxy: &Child, key: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .post(proxy.url("/api/chat"))
        .json(&json!({"model": "llama3.2", "stream": false}));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn keys_decide_who_may_read_use_and_wake() {
    let host = SleepingHost::new(Duration::from_millis(200)).await;
    let mut args = host.wake_args();
    args.extend(["--wake-timeout".into(), "20s".into()]);
    let env = [("API_KEYS", keys()), ("RUST_LOG", "trace".to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = Child::start(&common::strs(&args), &env).await;
    // /health stays open.
    assert_eq!(get(&proxy, "/health", None).await.status(), 200);
    // No key, a wrong key: 401 with WWW-Authenticate, in each API's error shape.
    for key in [None, Some("wrong-key-0123456789")] {
        let resp = get(&proxy, "/api/tags", key).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
        let resp = get(&proxy, "/v1/models", key).await;
        assert_eq!(resp.status(), 401);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error", "{body}");
        assert_eq!(chat(&proxy, key).await.status(), 401);
    }
    // A read key: no model run, no wake (asleep, nothing cached).
    assert_eq!(chat(&proxy, Some(READ_KEY)).await.status(), 403);
    let resp = get(&proxy, "/api/tags", Some(READ_KEY)).await;
    assert_eq!(resp.status(), 403, "{}", resp.text().await.unwrap());
    assert_eq!(host.packets.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A use key wakes the host and chats; then the read key may list, and still not chat.
    assert_eq!(chat(&proxy, Some(USE_KEY)).await.status(), 200);
    assert_eq!(chat(&proxy, Some(USE_KEY)).await.status(), 200);
    assert_eq!(get(&proxy, "/api/tags", Some(READ_KEY)).await.status(), 200);
    assert_eq!(
        get(&proxy, "/api/version", Some(READ_KEY)).await.status(),
        200
    );
    assert_eq!(chat(&proxy, Some(READ_KEY)).await.status(), 403);
    // The header never reached Ollama; the keys never reached the log, the key's name did.
    let seen = host.log().all();
    assert!(!seen.is_empty());
    assert!(seen
        .iter()
        .all(|s| !s.headers.contains_key("authorization")));
    let log = proxy.stderr.lock().unwrap().clone();
    assert!(
        !log.contains(READ_KEY) && !log.contains(USE_KEY),
        "a key in the log"
    );
    assert!(
        log.contains("key=laptop"),
        "the wake's key is not named:\n{log}"
    );
}

#[tokio::test]
async fn official_python_clients_send_the_key() {
    let Some(py) = python() else { return };
    let fake = common::Fake::bind().await;
    let env = [("API_KEYS", keys())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = Child::start(&["--ollama-url", &fake.url()], &env).await;
    let out = run_clients(&py, &proxy.url(""), &["--key", USE_KEY]).await;
    assert!(out.contains("without the key: 401"), "{out}");
    assert!(out.contains("openai embeddings: ok"), "{out}");
    assert!(fake
        .log()
        .all()
        .iter()
        .all(|s| !s.headers.contains_key("authorization")));
}

/// One timing of a refused request with `key`, in µs.
async fn timed(proxy: &Child, key: &str) -> u128 {
    let start = Instant::now();
    let resp = get(proxy, "/api/version", Some(key)).await;
    let took = start.elapsed().as_micros();
    assert_eq!(resp.status(), 401);
    took
}

fn median(mut t: Vec<u128>) -> u128 {
    t.sort_unstable();
    t[t.len() / 2]
}

#[tokio::test]
async fn a_wrong_key_takes_as_long_whatever_its_length() {
    let env = [("API_KEYS", keys())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = Child::start(&["--ollama-url", &common::closed_url()], &env).await;
    // The right length with most of the key right, the same again (the noise), and a much longer
    // guess; interleaved in a rotating order, so a machine whose load drifts slows all alike.
    let close = format!("{}X", &USE_KEY[..USE_KEY.len() - 1]);
    let long = "x".repeat(200);
    let keys = [close.as_str(), close.as_str(), long.as_str()];
    let mut t: [Vec<u128>; 3] = Default::default();
    for round in 0..300 {
        for i in 0..3 {
            let k = (round + i) % 3;
            t[k].push(timed(&proxy, keys[k]).await);
        }
    }
    let [a, a2, b] = t.map(median);
    let noise = a.abs_diff(a2);
    eprintln!("medians: right length {a} and {a2} µs, long {b} µs");
    // Loose: the difference is within a quarter of the time (or 300 µs) beyond the noise.
    let diff = a.abs_diff(b);
    assert!(
        diff <= (a.max(b) / 4).max(300) + 3 * noise,
        "{a} µs vs {b} µs (noise {noise} µs)"
    );
}

#[tokio::test]
async fn past_max_wakes_per_hour_requests_that_would_wake_get_503() {
    let (packets, magic) = common::magic_catcher().await;
    let url = common::closed_url();
    let mut args = vec![
        "--ollama-url",
        &url,
        "--wake-timeout",
        "1s",
        "--max-wakes-per-hour",
        "1",
    ];
    args.extend(common::strs(&magic));
    let proxy = Child::start(&args, &[]).await;
    // The first wake is sent (and times out: nothing listens).
    assert_eq!(chat(&proxy, None).await.status(), 503);
    let mut buf = [0u8; 256];
    let got = tokio::time::timeout(Duration::from_secs(5), packets.recv(&mut buf)).await;
    assert!(got.is_ok(), "the first wake sent nothing");
    while tokio::time::timeout(Duration::from_millis(500), packets.recv(&mut buf))
        .await
        .is_ok()
    {}
    // The second would start another cycle: refused at once, nothing sent.
    for _ in 0..3 {
        let start = Instant::now();
        let resp = chat(&proxy, None).await;
        assert_eq!(resp.status(), 503);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry > 3000 && retry <= 3600, "Retry-After {retry}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("MAX_WAKES_PER_HOUR"), "{text}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), packets.recv(&mut buf)).await;
    assert!(quiet.is_err(), "a packet was sent past the limit");
    let log = proxy.stderr.lock().unwrap().clone();
    assert_eq!(
        log.matches("MAX_WAKES_PER_HOUR reached").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_bad_keys_file_stops_start_up_naming_the_line_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("# keys\nphone:{READ_KEY}:admin\n")).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["--api-keys-file", path.to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("line 2: rights must be read or use"),
        "{text}"
    );
    assert!(!text.contains(READ_KEY), "{text}");
    let out = std::process::Command::new(common::bin())
        .args(["--port", "0"])
        .env("API_KEYS", format!("phone:{READ_KEY}:read,short:abc:use"))
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("entry 2"), "{text}");
    assert!(!text.contains(READ_KEY) && !text.contains("abc"), "{text}");
}

#[tokio::test]
async fn a_keys_file_others_can_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("laptop:{USE_KEY}:use\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = common::closed_url();
    let args = [
        "--ollama-url",
        &url,
        "--api-keys-file",
        path.to_str().unwrap(),
    ];
    let proxy = Child::start(&args, &[]).await;
    let log = proxy.stderr.lock().unwrap().clone();
    assert!(log.contains("chmod 600"), "{log}");
    assert_eq!(
        get(&proxy, "/api/version", Some(USE_KEY)).await.status(),
        502
    );
}
