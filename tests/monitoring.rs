//! Monitoring (see "Monitoring" in docs/behaviour.md): `/metrics` parsed with a real Prometheus
//! parser moves by exactly the expected amounts; `/proxy/status` lists the wake with its cause and
//! keeps it across a restart; the buttons need ADMIN_TOKEN and a wake starts exactly one cycle.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use common::sleeping::SleepingHost;
use common::{client, get_json, post_json, Proxy};

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
}

/// Every sample of a scrape, parsed by prometheus_client (tests/py/metrics.py).
async fn scrape(py: &PathBuf, proxy: &Proxy) -> HashMap<String, f64> {
    let resp = client().get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("ollama_proxy_"), "{line}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/metrics.py");
    let mut child = tokio::process::Command::new(py)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    let a = after.get(key).unwrap_or_else(|| panic!("no sample {key}"));
    a - before.get(key).copied().unwrap_or(0.0)
}

const WORK_AWAKE: &str = "ollama_proxy_wake_cycles_total{backend=default,cause=work,outcome=awake}";

#[tokio::test]
async fn metrics_move_by_exactly_the_expected_amounts() {
    let Some(py) = common::py::python() else {
        return;
    };
    common::logs();
    let host = SleepingHost::gated(Duration::from_millis(50)).await;
    let mut argv = host.wake_args();
    argv.extend(["--max-queue".into(), "1".into()]);
    let proxy = Proxy::start(&common::strs(&argv)).await;
    let s0 = scrape(&py, &proxy).await;
    let url = proxy.url("/api/chat");
    let held = tokio::spawn(async move { post_json(url, &chat()).await.status().as_u16() });
    proxy.wait_held(1, Duration::from_secs(10)).await;
    let refused = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(refused.status(), 503);
    let s1 = scrape(&py, &proxy).await;
    assert_eq!(s1["ollama_proxy_held_requests{backend=default}"], 1.0);
    assert_eq!(
        moved(
            &s0,
            &s1,
            "ollama_proxy_queue_rejections_total{backend=default}"
        ),
        1.0
    );
    assert_eq!(moved(&s0, &s1, WORK_AWAKE), 0.0);
    assert_eq!(
        s1["ollama_proxy_backend_state{backend=default,state=waking}"],
        1.0
    );
    host.open_gate();
    assert_eq!(held.await.unwrap(), 200);
    // Two reads of the model list: the first asks Ollama (miss), the second is fresh.
    for _ in 0..2 {
        let r = client().get(proxy.url("/api/tags")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let s2 = scrape(&py, &proxy).await;
    assert_eq!(moved(&s0, &s2, WORK_AWAKE), 1.0);
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_held_released_total{backend=default}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_wake_duration_seconds_count{backend=default}"
        ),
        1.0
    );
    assert_eq!(s2["ollama_proxy_held_requests{backend=default}"], 0.0);
    assert_eq!(
        s2["ollama_proxy_backend_state{backend=default,state=awake}"],
        1.0
    );
    assert_eq!(
        moved(&s0, &s2, "ollama_proxy_cache_answers_total{result=miss}"),
        1.0
    );
    assert_eq!(
        moved(&s0, &s2, "ollama_proxy_cache_answers_total{result=fresh}"),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{route=work,status=2xx}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{route=work,status=5xx}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{route=tags,status=2xx}"
        ),
        2.0
    );
    let ttfb = "ollama_proxy_time_to_first_byte_seconds_count{}";
    assert_eq!(moved(&s0, &s2, ttfb), 2.0);
    assert!(s2["ollama_proxy_process_resident_memory_bytes{}"] > 1e6);
    assert!(s2["ollama_proxy_process_open_fds{}"] >= 3.0);
    // The scrapes themselves are counted, and Ollama never saw them.
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{route=proxy,status=2xx}"
        ),
        2.0
    );
    assert_eq!(host.log().count("/metrics"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn status_lists_the_wake_with_its_cause_and_keeps_it_across_a_restart() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    let host = SleepingHost::new(Duration::from_millis(50)).await;
    let mut argv = host.wake_args();
    argv.extend(["--cache-file".into(), cache.display().to_string()]);
    let proxy = Proxy::start(&common::strs(&argv)).await;
    let resp = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(resp.status(), 200);
    let status = get_json(proxy.url("/proxy/status")).await;
    let b = &status["backends"][0];
    assert_eq!(b["name"], "default");
    assert_eq!(b["state"], "awake");
    let events = b["events"].as_array().unwrap();
    assert_eq!(events[0]["kind"], "awake", "{events:?}");
    let wake = events
        .iter()
        .find(|e| e["kind"] == "wake_requested")
        .unwrap();
    assert_eq!(wake["cause"], "work");
    assert_eq!(wake["method"], "POST");
    assert_eq!(wake["path"], "/api/chat");
    assert_eq!(wake["client"], "127.0.0.1");
    let page = client().get(proxy.url("/proxy/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("http-equiv=\"refresh\"") && html.contains("id=\"backend-default\""));
    assert!(!html.contains("<form"), "buttons shown without ADMIN_TOKEN");
    proxy.stop().await;
    assert_eq!(
        host.log().count("/proxy/status") + host.log().count("/proxy/"),
        0
    );
    // A restart reads the history kept beside the cache file.
    assert!(dir.path().join("cache.events.json").exists());
    let again = Proxy::start(&common::strs(&argv)).await;
    let status = get_json(again.url("/proxy/status")).await;
    let kinds: Vec<_> = status["backends"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert!(kinds.contains(&json!("wake_requested")), "{kinds:?}");
    again.stop().await;
}

#[tokio::test]
async fn buttons_need_the_admin_token_and_a_wake_starts_one_cycle() {
    common::logs();
    let host = SleepingHost::gated(Duration::from_millis(50)).await;
    let plain = Proxy::start(&common::strs(&host.wake_args())).await;
    let r = client()
        .post(plain.url("/proxy/backends/default/wake"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(plain.health().await["wakes"], 0);
    plain.stop().await;

    let mut argv = host.wake_args();
    argv.extend(["--admin-token".into(), "s3cret-admin-token".into()]);
    let proxy = Proxy::start(&common::strs(&argv)).await;
    let html = client()
        .get(proxy.url("/proxy/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // No sleep method configured: only the wake button.
    assert!(html.contains("Wake now") && !html.contains("Sleep now"));
    let wake = proxy.url("/proxy/backends/default/wake");
    let wrong = client()
        .post(&wake)
        .bearer_auth("nope-nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let unknown = client()
        .post(proxy.url("/proxy/backends/nope/wake"))
        .bearer_auth("s3cret-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    for _ in 0..3 {
        let r = client()
            .post(&wake)
            .bearer_auth("s3cret-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    host.open_gate();
    let health = proxy.health().await;
    assert_eq!(health["wakes"], 1, "{health}");
    let status = get_json(proxy.url("/proxy/status")).await;
    let events = status["backends"][0]["events"].as_array().unwrap().clone();
    let wakes: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "wake_requested")
        .collect();
    assert_eq!(wakes.len(), 1, "{events:?}");
    assert_eq!(wakes[0]["cause"], "manual");
    proxy.stop().await;
}

#[tokio::test]
async fn with_api_keys_a_read_key_opens_the_pages_and_the_buttons_take_only_the_admin_token() {
    common::logs();
    let host = SleepingHost::gated(Duration::from_millis(50)).await;
    let mut argv = host.wake_args();
    argv.extend([
        "--api-keys".into(),
        "viewer:viewer-key-0123456:read".into(),
        "--admin-token".into(),
        "admin-token-0123".into(),
    ]);
    let proxy = Proxy::start(&common::strs(&argv)).await;
    for path in ["/metrics", "/proxy/status", "/proxy/"] {
        let none = client().get(proxy.url(path)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path}");
        let read = client()
            .get(proxy.url(path))
            .bearer_auth("viewer-key-0123456")
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "{path}");
    }
    let wake = proxy.url("/proxy/backends/default/wake");
    let r = client()
        .post(&wake)
        .bearer_auth("viewer-key-0123456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The page's form: the token once, then a cookie (a digest, not the token).
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let r = no_redirect
        .post(&wake)
        .form(&[("token", "admin-token-0123")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("admin-token-0123"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = client()
        .post(&wake)
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(proxy.health().await["wakes"], 1);
    host.open_gate();
    proxy.stop().await;
}
