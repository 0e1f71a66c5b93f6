//! Transparent forwarding with Ollama awake: headers, streaming, uploads, cancellation, timeouts and
//! abnormal ends (see "Forwarding" and "Timeouts" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{client, get_json, post_json, Fake, Proxy};

async fn setup(extra: &[&str]) -> (Fake, Proxy) {
    common::logs();
    let fake = Fake::bind().await;
    let url = fake.url();
    let mut args = vec!["--ollama-url", &url];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(&args).await;
    (fake, proxy)
}

#[tokio::test]
async fn method_path_query_and_headers() {
    let (fake, proxy) = setup(&[]).await;
    assert!(fake.log().all().is_empty(), "start-up contacted Ollama");
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let resp = client()
            .request(
                method.parse().unwrap(),
                proxy.url("/echo?a=1&b=x%20y&empty="),
            )
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "dropped")
            .body("12345")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["method"], method);
        assert_eq!(v["path"], "/echo");
        assert_eq!(v["query"], "a=1&b=x%20y&empty=");
        assert_eq!(v["host"], fake.addr.to_string());
        assert_eq!(v["xff"], "127.0.0.1");
        assert_eq!(v["proto"], "http");
        assert_eq!(v["custom"], "kept");
        assert_eq!(v["body_len"], 5);
    }
    let seen = fake.log().all();
    assert!(seen.iter().all(|s| !s.headers.contains_key("x-hop")));
    // HEAD passes as HEAD.
    let resp = client().head(proxy.url("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // Unknown paths get Ollama's own 404.
    let resp = client().get(proxy.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "404 page not found");
    proxy.stop().await;
}

/// Reads a response chunk by chunk, with the time each arrived.
async fn chunks(mut resp: reqwest::Response) -> (Vec<(Instant, bytes::Bytes)>, Result<(), String>) {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => out.push((Instant::now(), c)),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(format!("{e:?}"))),
        }
    }
}

#[tokio::test]
async fn ndjson_chunks_arrive_as_written() {
    let (fake, proxy) = setup(&[]).await;
    fake.knobs().chunk_delay_ms.store(150, Ordering::SeqCst);
    fake.knobs().chunks.store(6, Ordering::SeqCst);
    let start = Instant::now();
    let resp = post_json(
        proxy.url("/api/chat"),
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let (got, end) = chunks(resp).await;
    end.unwrap();
    let first = got.first().unwrap().0 - start;
    let last = got.last().unwrap().0 - start;
    // 7 objects written 150 ms apart: the first arrives long before the last.
    assert!(
        last - first >= Duration::from_millis(700),
        "first {first:?} last {last:?}"
    );
    assert!(got.len() >= 6, "chunks were merged: {}", got.len());
    for (_, c) in &got {
        let text = std::str::from_utf8(c).unwrap();
        assert!(text.ends_with('\n') && !text.contains("\n\n"), "{text:?}");
        for line in text.lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn sse_stream_is_intact() {
    let (fake, proxy) = setup(&[]).await;
    fake.knobs().chunk_delay_ms.store(20, Ordering::SeqCst);
    let resp = post_json(proxy.url("/v1/chat/completions"), &json!({"model": "llama3.2", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 6, "{body}");
    for (i, e) in events[..5].iter().enumerate() {
        let v: Value = serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], format!("tok{i} "));
    }
    assert_eq!(events[5], "data: [DONE]");
    assert!(body.ends_with("data: [DONE]\n\n"));
    proxy.stop().await;
}

#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let (fake, proxy) = setup(&[]).await;
    fake.knobs().chunk_delay_ms.store(100, Ordering::SeqCst);
    fake.knobs().chunks.store(200, Ordering::SeqCst);
    let mut resp = post_json(
        proxy.url("/api/generate"),
        &json!({"model": "llama3.2", "prompt": "hi"}),
    )
    .await;
    resp.chunk().await.unwrap().unwrap();
    drop(resp);
    fake.log()
        .wait_for("a cancelled stream", Duration::from_secs(5), |l| {
            l.cancelled.load(Ordering::SeqCst) == 1
        })
        .await;

    // Leaving while Ollama loads the model (before any header) cancels too.
    fake.knobs().header_delay_ms.store(5_000, Ordering::SeqCst);
    let short = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = short
        .post(proxy.url("/api/chat"))
        .json(&json!({"model": "llama3.2"}))
        .send()
        .await;
    assert!(r.is_err());
    fake.log()
        .wait_for("a cancelled request", Duration::from_secs(3), |l| {
            l.cancelled.load(Ordering::SeqCst) == 2
        })
        .await;
    proxy.stop().await;
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn timeouts_give_504_naming_the_option() {
    let (fake, proxy) = setup(&["--timeout", "1", "--model-timeout", "1s"]).await;
    fake.knobs().header_delay_ms.store(3_000, Ordering::SeqCst);

    let start = Instant::now();
    let (status, body) = error_of(client().get(proxy.url("/slow")).send().await.unwrap()).await;
    assert_eq!(status, 504);
    assert!(
        body["error"].as_str().unwrap().contains("TIMEOUT_SECONDS"),
        "{body}"
    );
    assert!(start.elapsed() < Duration::from_millis(2_900));

    let (status, body) =
        error_of(post_json(proxy.url("/api/chat"), &json!({"model": "m"})).await).await;
    assert_eq!(status, 504);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("MODEL_TIMEOUT_SECONDS"),
        "{body}"
    );

    let (status, body) =
        error_of(post_json(proxy.url("/v1/chat/completions"), &json!({"model": "m"})).await).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MODEL_TIMEOUT_SECONDS"));

    // Silence mid-stream longer than the model timeout cuts the stream abnormally.
    fake.knobs().header_delay_ms.store(0, Ordering::SeqCst);
    fake.knobs().stall_after.store(2, Ordering::SeqCst);
    let resp = post_json(proxy.url("/api/chat"), &json!({"model": "m"})).await;
    assert_eq!(resp.status(), 200);
    let (got, end) = chunks(resp).await;
    assert_eq!(got.len(), 2);
    assert!(end.is_err(), "a cut stream must not end cleanly");
    proxy.stop().await;
}

#[tokio::test]
async fn ollama_dying_mid_stream_ends_abnormally() {
    let (fake, proxy) = setup(&[]).await;
    fake.knobs().die_after.store(3, Ordering::SeqCst);
    fake.knobs().chunk_delay_ms.store(10, Ordering::SeqCst);
    let resp = post_json(proxy.url("/api/chat"), &json!({"model": "m"})).await;
    let (got, end) = chunks(resp).await;
    assert!(!got.is_empty());
    assert!(end.is_err(), "stream ended cleanly after Ollama died");
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_without_wake_method_is_502() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::start(&["--ollama-url", &url]).await;
    let start = Instant::now();
    let (status, body) = error_of(post_json(proxy.url("/api/chat"), &json!({})).await).await;
    assert_eq!(status, 502);
    assert!(
        body["error"].as_str().unwrap().contains("no wake method"),
        "{body}"
    );
    let (status, body) = error_of(post_json(proxy.url("/v1/embeddings"), &json!({})).await).await;
    assert_eq!(status, 502);
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(start.elapsed() < Duration::from_secs(2));
    // What is always answerable still is.
    let resp = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "Ollama is running");
    let v: Value = get_json(proxy.url("/api/ps")).await;
    assert_eq!(v, json!({"models": []}));
    proxy.stop().await;
}

#[tokio::test]
async fn ipv6_upstream() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let fake = Fake::start(listener);
    let url = format!("http://[::1]:{}", fake.addr.port());
    let proxy = Proxy::start(&["--ollama-url", &url]).await;
    let v: Value = get_json(proxy.url("/echo")).await;
    assert_eq!(v["host"], format!("[::1]:{}", fake.addr.port()));
    proxy.stop().await;
}

/// Writes `raw` (which asks to close) on a new connection and returns the final status line of the
/// answer, after any interim `100 Continue` (bounded).
async fn raw_status(addr: std::net::SocketAddr, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines()
        .find(|l| l.starts_with("HTTP/") && !l.contains(" 100 "))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn http_hygiene() {
    let (fake, proxy) = setup(&[]).await;
    let cases = [
        (
            "CONNECT desk.lan:443 HTTP/1.1\r\nHost: desk.lan:443\r\nConnection: close\r\n\r\n",
            "405",
        ),
        (
            "TRACE /api/tags HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n",
            "405",
        ),
        ("GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n", "400"),
        (
            "GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            "400",
        ),
    ];
    for (raw, status) in cases {
        let line = raw_status(proxy.addr, raw).await;
        assert!(line.contains(status), "{raw:?} -> {line}");
    }
    assert!(
        fake.log().all().is_empty(),
        "a refused request reached Ollama"
    );
    // HTTP/1.0 needs no Host; the proxy sets its own forwarding headers and drops Expect.
    let line = raw_status(proxy.addr, "GET /echo HTTP/1.0\r\n\r\n").await;
    assert!(line.contains("200"), "{line}");
    let body = "{}";
    let raw = format!(
        "POST /echo HTTP/1.1\r\nHost: proxy.lan\r\nX-Forwarded-Host: evil.example\r\n\
         X-Forwarded-Proto: https\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let line = raw_status(proxy.addr, &raw).await;
    assert!(line.contains("200"), "{line}");
    let seen = fake.log().all().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-host"], "proxy.lan");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(!seen.headers.contains_key("expect"), "{:?}", seen.headers);
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_answer_timeout() {
    // The body takes about 3 s to go out; the answer limit (2 s) counts from its last byte.
    let (fake, proxy) = setup(&["--model-timeout", "2", "--max-held-body", "1KiB"]).await;
    use futures_util::StreamExt;
    let chunks = futures_util::stream::iter(0..15).then(|_| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 4096]))
    });
    let resp = client()
        .post(proxy.url("/api/blobs/sha256:00"))
        .header("content-length", (15 * 4096).to_string())
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(fake.log().all().last().unwrap().body_len, 15 * 4096);
    proxy.stop().await;
}
