//! Logging can never stop the proxy: with stderr a broken pipe (the log reader exited) or a pipe
//! nobody reads, the real binary still answers, still wakes, and still stops on SIGTERM. Nor can a
//! request forge log lines or grow the log and the events file with the model name it sends.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use serde_json::json;

use common::sleeping::SleepingHost;
use common::{client, get_json, post_json, Child, Fake};

/// Bound on each request and on the exit after SIGTERM.
const LIMIT: Duration = Duration::from_secs(20);

/// `GET url` (bounded): the status.
async fn get_status(url: String) -> u16 {
    let send = client().get(&url).send();
    let resp = tokio::time::timeout(LIMIT, send)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    resp.status().as_u16()
}

/// SIGTERM, then the exit status (bounded): 0, as after any graceful stop.
async fn terminates_cleanly(proxy: &mut Child) {
    proxy.signal("TERM");
    let status = proxy.wait_exit(LIMIT).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "no clean exit: {status:?}"
    );
}

#[tokio::test]
async fn answers_after_the_log_reader_exits() {
    let fake = Fake::bind().await;
    // debug: hyper and the proxy log on every request's path.
    let mut proxy =
        Child::start_then_close_stderr(&["--ollama-url", &fake.url()], &[("RUST_LOG", "debug")])
            .await;
    for _ in 0..3 {
        assert_eq!(get_status(proxy.url("/api/version")).await, 200);
        assert_eq!(get_status(proxy.url("/health")).await, 200);
    }
    assert!(fake.log().count("/api/version") >= 1);
    terminates_cleanly(&mut proxy).await;
}

#[tokio::test]
async fn wakes_after_the_log_reader_exits() {
    let (sock, magic) = common::magic_catcher().await;
    let url = common::closed_url();
    let mut args = vec!["--ollama-url", &url];
    args.extend(common::strs(&magic));
    let mut proxy = Child::start_then_close_stderr(&args, &[]).await;
    // Held while Ollama "boots"; answered 503 at shutdown.
    let chat = tokio::spawn(
        client()
            .post(proxy.url("/api/chat"))
            .json(&json!({"model": "llama3.2", "messages": []}))
            .send(),
    );
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(LIMIT, sock.recv(&mut buf))
        .await
        .expect("no magic packet")
        .unwrap();
    assert_eq!(n, 102);
    assert_eq!(buf[..6], [0xff; 6]);
    assert_eq!(buf[6..12], [2, 0, 0, 0, 0, 1]); // common::TEST_MAC
    terminates_cleanly(&mut proxy).await;
    let held = tokio::time::timeout(LIMIT, chat).await.unwrap().unwrap();
    assert_eq!(held.unwrap().status().as_u16(), 503);
}

#[tokio::test]
async fn answers_while_nobody_reads_the_log() {
    let fake = Fake::bind().await;
    let (_packets, magic) = common::magic_catcher().await;
    // --wake-interval 0: each request logs a wake sent alongside it and its outcome, about 300
    // bytes; 1000 requests fill the 64 KiB pipe several times over.
    let url = fake.url();
    let mut args = vec!["--ollama-url", &url, "--wake-interval", "0"];
    args.extend(common::strs(&magic));
    let (mut proxy, _unread) = Child::start_unread(&args, &[]).await;
    let body = json!({"model": "llama3.2", "messages": [], "stream": false});
    for _ in 0..1000 {
        let send = client().post(proxy.url("/api/chat")).json(&body).send();
        let resp = tokio::time::timeout(LIMIT, send)
            .await
            .expect("no answer: blocked on the log?")
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    terminates_cleanly(&mut proxy).await;
}

#[tokio::test]
async fn a_model_name_forges_no_log_line_and_stays_short_in_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let host = SleepingHost::new(Duration::from_millis(50)).await;
    let argv = host.wake_args_with_cache(dir.path());
    let mut proxy = Child::start(&common::strs(&argv), &[]).await;
    // A line break and a forged line, then a megabyte of name: it wakes the machine.
    let forged = "WARN ollama_proxy: forged line";
    let model = format!("llama3.2\n{forged}\n{}", "x".repeat(1 << 20));
    let chat = json!({"model": model, "messages": [], "stream": false});
    let resp = post_json(proxy.url("/api/chat"), &chat).await;
    assert_eq!(resp.status(), 200);
    proxy.wait_log("waking Ollama", LIMIT).await;
    let status = get_json(proxy.url("/proxy/status")).await;
    let events = status["backends"][0]["events"].as_array().unwrap();
    let wake = events.iter().find(|e| e["kind"] == "wake_requested");
    let shown = wake.unwrap()["model"].as_str().unwrap();
    assert!(shown.starts_with("llama3.2"), "{shown}");
    assert!(shown.chars().count() <= 128, "{} chars", shown.len());
    assert!(!shown.contains('\n'), "{shown}");
    terminates_cleanly(&mut proxy).await;
    let log = proxy.stderr.lock().unwrap().clone();
    for line in log.lines() {
        assert!(line.len() < 2000, "a line of {} bytes", line.len());
        assert!(
            !line.contains(forged) || line.contains("waking Ollama"),
            "a forged line: {line}"
        );
    }
    assert!(log.contains("model=\"llama3.2"), "{log}");
    let file = dir.path().join("cache.events.json");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 16 * 1024, "the events file has {size} bytes");
}
