//! The status page's "Wake now" button, run as the real binary (see "Monitoring" in
//! docs/behaviour.md): it needs ADMIN_TOKEN, starts exactly one wake cycle however often it is
//! pressed, says when the machine is awake or waking already, and answers 429 when
//! MAX_WAKES_PER_HOUR refuses the wake. ("Sleep now" is tested in netns_sleep.rs, with a host
//! that really goes silent.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::py::{moved, scrape, total};
use common::sleeping::SleepingHost;
use common::{client, get_json, Child, Proxy};

const TOKEN: &str = "s3cret-admin-token";
/// Generous bound for what should happen within a second or two on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

/// `POST /proxy/backends/{backend}/wake` with `token` as a Bearer token.
async fn post_wake(proxy: &Child, backend: &str, token: &str) -> reqwest::Response {
    let url = proxy.url(&format!("/proxy/backends/{backend}/wake"));
    client().post(url).bearer_auth(token).send().await.unwrap()
}

/// Presses "Wake now" for `default`: the status and the JSON answer.
async fn press(proxy: &Child, token: &str) -> (u16, Value) {
    let r = post_wake(proxy, "default", token).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Waits (bounded) until the machine's newest event is `kind`; the machine's status.
async fn wait_event(proxy: &Child, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let s = get_json(proxy.url("/proxy/status")).await;
        if s["backends"][0]["events"][0]["kind"] == kind {
            return s["backends"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no {kind}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events_of<'a>(backend: &'a Value, kind: &str) -> Vec<&'a Value> {
    let all = backend["events"].as_array().unwrap().iter();
    all.filter(|e| e["kind"] == kind).collect()
}

#[tokio::test]
async fn the_wake_button_needs_the_token_and_starts_exactly_one_cycle() {
    let Some(py) = common::py::python() else {
        return;
    };
    let host = SleepingHost::gated(Duration::from_millis(50)).await;
    let plain = Child::start(&common::strs(&host.wake_args()), &[]).await;
    let r = client()
        .post(plain.url("/proxy/backends/default/wake"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(get_json(plain.url("/health")).await["wakes"], 0);
    drop(plain);

    let proxy = Child::start(&common::strs(&host.wake_args()), &[("ADMIN_TOKEN", TOKEN)]).await;
    let html = client().get(proxy.url("/proxy/")).send().await.unwrap();
    let html = html.text().await.unwrap();
    // No sleep method configured: only the wake button.
    assert!(html.contains("Wake now") && !html.contains("Sleep now"));
    assert_eq!(press(&proxy, "nope-nope").await.0, 403);
    assert_eq!(post_wake(&proxy, "nope", TOKEN).await.status(), 404);
    let s0 = scrape(&py, proxy.url("/metrics")).await;
    let (status, body) = press(&proxy, TOKEN).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (202, Some("wake started"))
    );
    for _ in 0..2 {
        let (status, body) = press(&proxy, TOKEN).await;
        assert_eq!(status, 202, "{body}");
        assert!(
            body["result"]
                .as_str()
                .unwrap()
                .starts_with("already waking"),
            "{body}"
        );
    }
    host.open_gate();
    wait_event(&proxy, "awake").await;
    let (status, body) = press(&proxy, TOKEN).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("already awake"))
    );
    // Exactly one cycle: one wake started, one ended awake, one event.
    let health = get_json(proxy.url("/health")).await;
    assert_eq!(health["wakes"], 1, "{health}");
    let s1 = scrape(&py, proxy.url("/metrics")).await;
    let cycles = "ollama_proxy_wake_cycles_total";
    assert_eq!(total(&s1, cycles) - total(&s0, cycles), 1.0);
    let manual = "ollama_proxy_wake_cycles_total{backend=default,cause=manual,outcome=awake}";
    assert_eq!(moved(&s0, &s1, manual), 1.0);
    let status = get_json(proxy.url("/proxy/status")).await;
    let wakes = events_of(&status["backends"][0], "wake_requested");
    assert_eq!(wakes.len(), 1, "{status}");
    assert_eq!(wakes[0]["cause"], "manual");
    assert_eq!(wakes[0]["path"], "/proxy/backends/default/wake");
}

#[tokio::test]
async fn a_wake_past_max_wakes_per_hour_is_answered_429_logged_and_recorded() {
    // The host never boots: the one wake the limit allows times out after a second.
    let host = SleepingHost::gated(Duration::from_millis(50)).await;
    let mut args = host.wake_args();
    args.extend(["--max-wakes-per-hour", "1", "--wake-timeout", "1s"].map(String::from));
    let proxy = Child::start(&common::strs(&args), &[("ADMIN_TOKEN", TOKEN)]).await;
    assert_eq!(press(&proxy, TOKEN).await.0, 202);
    wait_event(&proxy, "wake_failed").await;
    let r = post_wake(&proxy, "default", TOKEN).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry), "Retry-After: {retry}");
    let body: Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("MAX_WAKES_PER_HOUR (1)"), "{body}");
    // The page's form gets a page with the reason and a way back.
    let form = client()
        .post(proxy.url("/proxy/backends/default/wake"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 429);
    assert!(form.headers().contains_key("retry-after"));
    assert!(form.headers().contains_key("set-cookie"));
    let html = form.text().await.unwrap();
    assert!(
        html.contains("id=\"refused\"") && html.contains("MAX_WAKES_PER_HOUR (1)"),
        "{html}"
    );
    assert!(html.contains("href=\"/proxy/\""), "{html}");
    // Nothing more started; each refusal is an event and a log line.
    assert_eq!(get_json(proxy.url("/health")).await["wakes"], 1);
    let backend = wait_event(&proxy, "wake_refused").await;
    let refused = events_of(&backend, "wake_refused");
    assert_eq!(refused.len(), 2, "{backend}");
    assert_eq!(refused[0]["cause"], "manual");
    assert!(refused[0]["detail"]
        .as_str()
        .unwrap()
        .contains("MAX_WAKES_PER_HOUR (1)"));
    let html = client().get(proxy.url("/proxy/")).send().await.unwrap();
    assert!(html.text().await.unwrap().contains("wake refused"));
    // Both presses are logged (the lines arrive through a pipe: waited for), and nothing else is.
    let refusals = || {
        let log = proxy.stderr.lock().unwrap();
        log.matches("MAX_WAKES_PER_HOUR reached").count()
    };
    common::wait_until(&proxy.logged, "two logged refusals", LIMIT, || {
        refusals() >= 2
    })
    .await;
    let log = proxy.stderr.lock().unwrap().clone();
    assert_eq!(refusals(), 2, "{log}");
    assert!(!log.contains(TOKEN), "the admin token was logged");
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
