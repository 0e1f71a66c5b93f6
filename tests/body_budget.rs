//! The body budget on the real binary: many large request bodies at once keep the proxy's peak
//! memory under BODY_BUDGET + 64 MiB, whether Ollama is slow or asleep.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{client, Child, Fake};

const MIB: usize = 1 << 20;
const BODY: usize = 16 * MIB;
/// The default BODY_BUDGET plus the allowance the limit is measured against.
const PEAK_LIMIT_KIB: u64 = (256 + 64) * 1024;

/// POSTs a 16 MiB body to `/api/chat`; the status, or `None` when the connection broke (a proxy
/// that refuses a body before reading it closes the connection after its answer).
async fn post_big(url: String, body: Bytes) -> Option<u16> {
    let resp = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    Some(status)
}

#[tokio::test]
async fn sixty_four_large_bodies_to_a_slow_ollama() {
    const CLIENTS: usize = 64;
    let fake = Fake::bind().await;
    fake.knobs().header_delay_ms.store(1500, Ordering::SeqCst);
    // The fake reads 1 GiB in this (possibly loaded) test process: its receive windows may stay
    // shut for longer than CONNECT_TIMEOUT, which is not sleep (see "Asleep under a connection").
    let args = ["--ollama-url", &fake.url(), "--connect-timeout", "1s"];
    let proxy = Child::start(&args, &[]).await;
    let body = Bytes::from(vec![b' '; BODY]);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(post_big(proxy.url("/api/chat"), body.clone())))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Some(200));
    }
    let seen = fake.log().all();
    assert_eq!(seen.len(), CLIENTS);
    assert!(seen.iter().all(|s| s.body_len == BODY as u64));
    let peak = proxy.memory_kib("VmHWM");
    eprintln!("{CLIENTS} x 16 MiB to a slow Ollama: proxy peak RSS {peak} KiB");
    assert!(peak < PEAK_LIMIT_KIB, "peak {peak} KiB");
}

#[tokio::test]
async fn a_hundred_large_bodies_while_asleep_with_a_short_queue() {
    const CLIENTS: usize = 100;
    let (_packets, magic) = common::magic_catcher().await;
    let url = common::closed_url();
    let mut args = vec![
        "--ollama-url",
        &url,
        "--max-queue",
        "10",
        "--wake-timeout",
        "3s",
    ];
    args.extend(common::strs(&magic));
    let mut proxy = Child::start(&args, &[]).await;
    let body = Bytes::from(vec![b' '; BODY]);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(post_big(proxy.url("/api/chat"), body.clone())))
        .collect();
    // The held ones get 503 when the wake times out; the others are refused at once.
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(503) | None => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let peak = proxy.memory_kib("VmHWM");
    let log = proxy.stderr.lock().unwrap().clone();
    let over_budget = log.matches("body budget used up").count();
    eprintln!("{CLIENTS} x 16 MiB while asleep, MAX_QUEUE 10: {refused} refused ({over_budget} over budget), proxy peak RSS {peak} KiB");
    assert_eq!(refused, CLIENTS);
    assert!(peak < PEAK_LIMIT_KIB, "peak {peak} KiB");
    assert!(proxy.terminate().await.success());
}

/// An Ollama that takes its time before reading a request body: its receive window stays shut.
async fn slow_reader(pause: std::time::Duration) -> String {
    use axum::body::Body;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |body: Body| async move {
        tokio::time::sleep(pause).await;
        let got = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        format!("{{\"received\":{}}}", got.len())
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_receive_window_shut_longer_than_the_connect_timeout_is_not_sleep() {
    let url = slow_reader(std::time::Duration::from_secs(3)).await;
    let args = ["--ollama-url", &url, "--connect-timeout", "1s"];
    let proxy = Child::start(&args, &[]).await;
    // Far more than the socket buffers hold: the window closes for the whole 3 s pause.
    let body = Bytes::from(vec![b' '; 64 * MIB]);
    let resp = client()
        .post(proxy.url("/api/blobs/sha256:slow"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let log = proxy.stderr.lock().unwrap().clone();
    assert_eq!(status, 200, "{text}\n{log}");
    assert_eq!(text, format!("{{\"received\":{}}}", 64 * MIB));
}
