//! Waking on demand against a simulated sleeping host (see "Backend state", "Waking", "Holding
//! and replay", "Timeouts" and "Empty cache" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::sleeping::{SleepingHost, MAC};
use common::{client, get_json, post_json, Fake, Proxy};

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
}

async fn proxy_for(host: &SleepingHost, extra: &[&str]) -> Proxy {
    common::logs();
    let args = host.wake_args();
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend_from_slice(extra);
    Proxy::start(&argv).await
}

#[tokio::test]
async fn one_request_wakes_the_host_and_gets_its_answer() {
    let mut host = SleepingHost::new(Duration::from_millis(300)).await;
    let proxy = proxy_for(&host, &[]).await;
    let start = Instant::now();
    let resp = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(resp.status(), 200);
    let first = Instant::now();
    let body = resp.text().await.unwrap();
    assert_eq!(body.lines().count(), 6, "{body}");
    assert!(host.packets.load(Ordering::SeqCst) >= 1);
    host.awake(Duration::from_secs(1)).await;
    assert_eq!(host.log().count("/api/chat"), 1);
    // Released promptly once the port opened (generous bound; the benchmark measures it).
    let opened = host.listening_at.lock().unwrap().unwrap();
    assert!(
        first.duration_since(opened) < Duration::from_secs(5),
        "released {:?} after the port opened",
        first.duration_since(opened)
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    let health = proxy.health().await;
    assert_eq!(health["backend"], "awake");
    assert_eq!(health["wakes"], 1);
    proxy.stop().await;
}

// Two workers, as the binary has on two cores: released requests are then sent from either thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_during_one_boot_one_wake_each_once_in_order() {
    const N: usize = 200;
    let host = SleepingHost::gated(Duration::from_millis(100)).await;
    // The order is checked where it can be seen (as root); the rest everywhere.
    let tap = common::tap::Tap::start(host.addr.port());
    let proxy = proxy_for(&host, &[]).await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = proxy.url("/api/chat");
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .header("x-seq", i.to_string())
                .json(&chat())
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
        // Arrival order is the order the proxy took them in: wait until this one is held.
        proxy.wait_held(i as u64 + 1, Duration::from_secs(10)).await;
    }
    host.open_gate();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"done\":true"), "{body}");
    }
    assert_eq!(host.log().count("/api/chat"), N);
    // The order they went out on the wire: the order Ollama's server then reads requests sent
    // microseconds apart on different connections is its own (one on a new connection waits for
    // its accept, one on a kept connection does not). See "Holding and replay".
    if let Some(tap) = tap {
        let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(tap.finish(), expected, "not forwarded in arrival order");
    }
    assert_eq!(proxy.health().await["wakes"], 1);
    proxy.stop().await;
}

#[tokio::test]
async fn failed_wake_answers_every_held_request_with_503() {
    let host = SleepingHost::gated(Duration::ZERO).await; // the gate never opens: it never boots
    let proxy = proxy_for(&host, &["--wake-timeout", "1s"]).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for path in ["/api/chat", "/api/generate", "/v1/chat/completions"] {
        let url = proxy.url(path);
        tasks.push(tokio::spawn(async move { post_json(url, &chat()).await }));
    }
    for (t, openai) in tasks.into_iter().zip([false, false, true]) {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), 503);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        let body: Value = resp.json().await.unwrap();
        let msg = if openai {
            &body["error"]["message"]
        } else {
            &body["error"]
        };
        assert!(msg.as_str().unwrap().contains("asleep"), "{body}");
    }
    assert!(
        start.elapsed() < Duration::from_millis(2_500),
        "took {:?}",
        start.elapsed()
    );
    assert!(host.packets.load(Ordering::SeqCst) >= 1);
    // The next request starts a new cycle.
    let t = tokio::spawn({
        let url = proxy.url("/api/chat");
        async move { post_json(url, &chat()).await.status() }
    });
    assert_eq!(t.await.unwrap(), 503);
    assert_eq!(proxy.health().await["wakes"], 2);
    proxy.stop().await;
}

#[tokio::test]
async fn queue_overflow_is_503_at_once() {
    let host = SleepingHost::gated(Duration::ZERO).await;
    let proxy = proxy_for(&host, &["--max-queue", "2"]).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = proxy.url("/api/chat");
            tokio::spawn(async move { post_json(url, &chat()).await.status() })
        })
        .collect();
    proxy.wait_held(2, Duration::from_secs(5)).await;
    let start = Instant::now();
    let resp = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp.text().await.unwrap().contains("MAX_QUEUE"));
    // At once, not after a wake (WAKE_TIMEOUT is 120 s); loose enough for a loaded machine.
    assert!(start.elapsed() < Duration::from_secs(5));
    host.open_gate();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    proxy.stop().await;
}

/// A client that gives up after 300 ms.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_leaves_while_held_is_never_forwarded() {
    let mut host = SleepingHost::gated(Duration::ZERO).await;
    let proxy = proxy_for(&host, &[]).await;
    let gone = impatient()
        .post(proxy.url("/api/chat"))
        .header("x-seq", "gone")
        .json(&chat())
        .send()
        .await;
    assert!(gone.is_err());
    proxy.wait_held(0, Duration::from_secs(5)).await;
    host.open_gate();
    host.awake(Duration::from_secs(5)).await;
    let resp = client()
        .post(proxy.url("/api/chat"))
        .header("x-seq", "stayed")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    assert_eq!(
        *host.log().arrivals.lock().unwrap(),
        vec!["stayed".to_string()]
    );
    proxy.stop().await;
}

/// Open WebUI gives up on a model list after 10 s: on a cold cache the wake goes on without the
/// client that started it, and the next list is answered by the awake host and kept.
#[tokio::test]
async fn a_model_list_given_up_on_a_cold_cache_still_wakes_the_host() {
    let mut host = SleepingHost::gated(Duration::ZERO).await;
    let proxy = proxy_for(&host, &[]).await;
    assert!(impatient()
        .get(proxy.url("/api/tags"))
        .send()
        .await
        .is_err());
    proxy.wait_held(0, Duration::from_secs(5)).await;
    host.open_gate();
    host.awake(Duration::from_secs(10)).await;
    common::wait_health(
        &proxy.url("/health"),
        "backend=awake",
        Duration::from_secs(10),
        |h| h["backend"] == "awake",
    )
    .await;
    assert_eq!(proxy.health().await["wakes"], 1);
    assert_eq!(
        host.log().count("/api/tags"),
        0,
        "the abandoned list was sent"
    );
    let tags = get_json(proxy.url("/api/tags")).await;
    assert_eq!(tags["models"][0]["name"], "llama3.2:latest");
    let cached = client().get(proxy.url("/v1/models")).send().await.unwrap();
    assert_eq!(cached.headers()["x-ollama-proxy-cache"], "fresh");
    assert_eq!(proxy.health().await["wakes"], 1);
    proxy.stop().await;
}

#[tokio::test]
async fn cached_metadata_never_wakes_but_an_empty_cache_does() {
    // Fill a cache file from an awake Ollama.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.json");
    let file = file.to_str().unwrap();
    let awake = Fake::bind().await;
    let filler = Proxy::start(&["--ollama-url", &awake.url(), "--cache-file", file]).await;
    for path in ["/api/tags", "/api/version"] {
        assert_eq!(
            client()
                .get(filler.url(path))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let show = post_json(
        filler.url("/api/show"),
        &json!({"model": "llama3.2:latest"}),
    )
    .await;
    assert_eq!(show.status(), 200);
    show.bytes().await.unwrap();
    filler.stop().await;

    let host = SleepingHost::new(Duration::from_millis(100)).await;
    let proxy = proxy_for(&host, &["--cache-file", file]).await;
    for path in [
        "/api/tags",
        "/api/version",
        "/v1/models",
        "/v1/models/llama3.2",
        "/api/ps",
        "/",
    ] {
        let resp = client().get(proxy.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = post_json(proxy.url("/api/show"), &json!({"model": "llama3.2:latest"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        host.packets.load(Ordering::SeqCst),
        0,
        "metadata woke the host"
    );
    assert_eq!(proxy.health().await["wakes"], 0);
    // Not cached: /api/show of another model may wake (see "Empty cache").
    let resp = post_json(proxy.url("/api/show"), &json!({"model": "llama3.2"})).await;
    assert_eq!(resp.status(), 200);
    assert!(host.packets.load(Ordering::SeqCst) >= 1);
    proxy.stop().await;

    // An empty cache: the model list wakes the host and is answered.
    let host = SleepingHost::new(Duration::from_millis(100)).await;
    let proxy = proxy_for(&host, &[]).await;
    let resp = client().get(proxy.url("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["models"][0]["name"],
        "llama3.2:latest"
    );
    assert!(host.packets.load(Ordering::SeqCst) >= 1);
    let v: Value = get_json(proxy.url("/v1/models")).await;
    assert_eq!(v["data"][0]["id"], "llama3.2:latest");
    proxy.stop().await;
}

#[tokio::test]
async fn wake_time_does_not_count_against_request_timeouts() {
    let host = SleepingHost::new(Duration::from_millis(1_500)).await;
    let proxy = proxy_for(&host, &["--timeout", "1", "--model-timeout", "1"]).await;
    let resp = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let resp = client().get(proxy.url("/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn after_wake_interval_a_request_wakes_in_parallel_without_delay() {
    let fake = Fake::bind().await;
    let wol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = wol.local_addr().unwrap().port().to_string();
    let url = fake.url();
    let proxy = Proxy::start(&[
        "--ollama-url",
        &url,
        "--mac",
        MAC,
        "--broadcast",
        "127.0.0.1",
        "--wol-port",
        &port,
        "--wake-interval",
        "1h",
    ])
    .await;
    // Never heard from Ollama: the first request that may wake sends a wake alongside, and is
    // answered without waiting for it (the answer comes before the wake's burst has ended).
    let resp = post_json(proxy.url("/api/chat"), &json!({"stream": false})).await;
    assert_eq!(resp.status(), 200);
    let mut buf = [0u8; 200];
    // The whole burst: one packet per repeat (wol's default, 3), however late a loaded machine
    // sends them.
    for _ in 0..wol::SenderConfig::default().repeats {
        let n = tokio::time::timeout(Duration::from_secs(20), wol.recv(&mut buf))
            .await
            .expect("no early wake")
            .unwrap();
        assert_eq!(n, 102);
    }
    // Heard from Ollama just now: no more wakes.
    let resp = post_json(proxy.url("/api/chat"), &json!({"stream": false})).await;
    assert_eq!(resp.status(), 200);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), wol.recv(&mut buf))
            .await
            .is_err(),
        "woke an awake host"
    );
    // Metadata never sends the early wake.
    assert_eq!(proxy.health().await["wakes"], 0);
    proxy.stop().await;
}

#[tokio::test]
async fn http_wake_through_wolgoweb_with_a_key() {
    use md5::{Digest, Md5};
    let mut host = SleepingHost::new(Duration::from_millis(200)).await;
    // A WolGoWeb-like service: checks the token, then sends the magic packet itself.
    let wol_port = host.wol_port;
    let app = axum::Router::new().route(
        "/wol",
        axum::routing::get(move |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
            let want: String = Md5::digest(format!("s3cret{}{}", q["mac"], q["time"])).iter().map(|b| format!("{b:02x}")).collect();
            if q.get("token") != Some(&want) {
                return axum::Json(json!({"error": 104, "message": "token error"}));
            }
            let packet = wol::MagicPacket::new(q["mac"].parse().unwrap(), None);
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.send_to(packet.as_bytes(), ("127.0.0.1", wol_port)).await.unwrap();
            axum::Json(json!({"error": 0, "message": "OK"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wolgo = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let wake_url = format!("http://{wolgo}/wol?mac={}", MAC.replace(':', "-"));
    let proxy = Proxy::start(&[
        "--ollama-url",
        &host.url(),
        "--wake-url",
        &wake_url,
        "--wake-key",
        "s3cret",
    ])
    .await;
    let resp = post_json(
        proxy.url("/api/generate"),
        &json!({"model": "llama3.2", "prompt": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("\"done\":true"));
    host.awake(Duration::from_secs(1)).await;
    assert_eq!(host.log().count("/api/generate"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_body_too_large_to_hold_waits_unread_then_streams() {
    let host = SleepingHost::new(Duration::from_millis(200)).await;
    let proxy = proxy_for(&host, &["--max-held-body", "1KiB"]).await;
    let body = vec![7u8; 1 << 20];
    let resp = client()
        .post(proxy.url("/api/blobs/sha256:0123"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.text().await.unwrap(), (1 << 20).to_string());
    let seen = host.log().all();
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.starts_with("/api/blobs/"))
            .count(),
        1
    );
    proxy.stop().await;
}
