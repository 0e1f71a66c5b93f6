//! Metadata with a cached or synthesized answer gives Ollama a short head start, then answers
//! without it; the request to Ollama goes on and still updates the cache (see "Freshness" in
//! docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use common::{client, Fake, Proxy};

#[tokio::test]
async fn a_slow_ollama_does_not_hold_up_cached_metadata() {
    let fake = Fake::bind().await;
    // TIMEOUT_SECONDS far above the fake's hold: only the head start can answer early.
    let proxy = Proxy::start(&["--ollama-url", &fake.url(), "--timeout", "60"]).await;
    let version = client()
        .get(proxy.url("/api/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 200);
    let version: Value = version.json().await.unwrap();

    // Ollama stops answering metadata (as a host that fell asleep unnoticed would), some time
    // after its last answer: within a second of an answer the proxy takes it as awake and waits.
    fake.knobs().hold_meta.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cached = client()
        .get(proxy.url("/api/version"))
        .send()
        .await
        .unwrap();
    assert!(cached.headers().contains_key("x-ollama-proxy-cache"));
    assert_eq!(cached.json::<Value>().await.unwrap(), version);
    let ps: Value = client()
        .get(proxy.url("/api/ps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps, serde_json::json!({"models": []}));

    // The requests did reach Ollama and finish once it answers: the state stays awake.
    fake.knobs().hold_meta.store(false, Ordering::SeqCst);
    fake.knobs().meta_released.notify_waiters();
    let limit = Duration::from_secs(20);
    fake.log()
        .wait_for("the held-up requests", limit, |l| {
            l.count("/api/version") == 2 && l.count("/api/ps") == 1
        })
        .await;
    assert_eq!(proxy.health().await["backend"], "awake");
    proxy.stop().await;
}
