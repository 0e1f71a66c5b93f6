//! Signals, run as the real binary: SIGHUP is ignored; a second SIGTERM during the grace period
//! ends the process at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ollama_proxy::server::SHUTDOWN_GRACE;
use serde_json::json;

use common::{client, get_json, Child, Fake};

/// Bound on each wait for the proxy.
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sighup_is_logged_and_ignored() {
    let fake = Fake::bind().await;
    let mut proxy = Child::start(&["--ollama-url", &fake.url()], &[]).await;
    proxy.signal("HUP");
    proxy.wait_log("SIGHUP ignored", LIMIT).await;
    let health = tokio::time::timeout(LIMIT, get_json(proxy.url("/health")))
        .await
        .expect("no answer after SIGHUP");
    assert_eq!(health["status"], "healthy");
    let status = proxy.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr.lock().unwrap());
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let fake = Fake::bind().await;
    // The stream sends one chunk, then nothing: it would hold the stop for the whole grace period.
    fake.knobs().stall_after.store(1, Ordering::SeqCst);
    let mut proxy = Child::start(&["--ollama-url", &fake.url()], &[]).await;
    let send = client()
        .post(proxy.url("/api/chat"))
        .json(&json!({"model": "llama3.2", "messages": []}))
        .send();
    let resp = tokio::time::timeout(LIMIT, send).await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut stream = resp.bytes_stream();
    let first = tokio::time::timeout(LIMIT, stream.next()).await.unwrap();
    assert!(first.unwrap().is_ok(), "no first chunk");

    let stopping = Instant::now();
    proxy.signal("TERM");
    proxy.wait_log("shutting down", LIMIT).await;
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(SHUTDOWN_GRACE / 2)
        .await
        .expect("still running after the second SIGTERM");
    assert!(
        stopping.elapsed() < SHUTDOWN_GRACE,
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(status.code(), Some(128 + 15));
    proxy.wait_log("exiting at once", LIMIT).await;
    // The client's stream ends (abnormally), it is not left hanging.
    let rest = tokio::time::timeout(LIMIT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the client's stream never ended");
}
