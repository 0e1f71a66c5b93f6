//! A host that falls asleep right after answering, on connections made while it woke (their SYNs
//! waited for ARP, so the kernel's RTT estimate, and with it the retransmission timer, is long):
//! the next request is decided within CONNECT_TIMEOUT + 0.5 s, because the proxy watches whether
//! its bytes are acknowledged (see "Backend state" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use common::netns::Net;
use common::nshost::Host;
use common::{client, Proxy};

const DECIDED_WITHIN: Duration = Duration::from_millis(1500);
const RUNS: usize = 20;

/// Packets in one burst of magic packets.
const BURST: usize = 3;

/// Waits until `expected` magic packets arrived: no burst still going out can wake the host we are
/// about to put to sleep.
async fn bursts_done(host: &Host, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.packets.load(Ordering::SeqCst) < expected {
        assert!(Instant::now() < deadline, "the wake bursts never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wakes the host with concurrent chats (their connections are made while the host wakes), then
/// asks the metadata once more, so the pool holds those connections.
async fn wake_and_fill_pool(proxy: &Proxy, host: &Host, run: usize) {
    let mut chats = Vec::new();
    for i in 0..4 {
        let url = proxy.url("/api/chat");
        chats.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("x-seq", format!("wake{run}-{i}"))
                .json(&json!({"stream": false}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for chat in chats {
        assert_eq!(
            chat.await.unwrap(),
            200,
            "run {run}: the waking chat failed"
        );
    }
    for path in ["/api/ps", "/api/version"] {
        let resp = client().get(proxy.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(host.fake.lock().unwrap().is_some());
}

/// Times one metadata request sent right after the host fell asleep.
async fn metadata_is_decided(proxy: &Proxy, path: &str, run: usize) {
    let start = Instant::now();
    let resp = client().get(proxy.url(path)).send().await.unwrap();
    let took = start.elapsed();
    eprintln!("run {run}: {path} answered after {took:?}");
    assert_eq!(resp.status(), 200, "run {run}: {path}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.is_object(), "run {run}: {path}: {body}");
    assert!(took <= DECIDED_WITHIN, "run {run}: {path} took {took:?}");
}

/// A chat sent right after the host fell asleep: its wake starts within the bound, and it is
/// answered once.
async fn chat_is_decided(proxy: &Proxy, host: &Host, run: usize) {
    let before = host.packets.load(Ordering::SeqCst);
    let start = Instant::now();
    let url = proxy.url("/api/chat");
    let seq = format!("asleep{run}");
    let chat = tokio::spawn(async move {
        client()
            .post(url)
            .header("x-seq", seq)
            .json(&json!({"stream": false}))
            .send()
            .await
            .unwrap()
    });
    while host.packets.load(Ordering::SeqCst) == before {
        let took = start.elapsed();
        assert!(took <= DECIDED_WITHIN, "run {run}: no wake after {took:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("run {run}: chat woke the host after {:?}", start.elapsed());
    let resp = chat.await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "run {run}: {}",
        resp.text().await.unwrap()
    );
}

#[tokio::test]
async fn a_host_asleep_under_pooled_connections_is_noticed_within_the_connect_timeout() {
    let Some(net) = Net::create() else { return };
    // As if the kernel had measured long round trips (SYNs that waited for ARP while the host
    // resumed): the first retransmission, and with it TCP_USER_TIMEOUT, comes after 5 s.
    net.set_rto_min(Duration::from_secs(5));
    let host = Arc::new(Host::new(net, true));
    host.sleep();
    // Resuming takes a while: SYNs sent meanwhile wait for ARP, and the kernel measures a long RTT.
    host.resume_ms.store(300, Ordering::SeqCst);
    host.wake_on_lan(Duration::ZERO);
    common::logs();
    let args = host.proxy_args();
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(args
        .windows(2)
        .any(|w| w[0] == "--connect-timeout" && w[1] == "1s"));
    // Only the first request, to an Ollama never heard from, sends a wake alongside.
    argv.extend(["--wake-interval", "1h"]);
    let proxy = Proxy::start(&argv).await;
    let mut expected_packets = BURST;
    for run in 0..RUNS {
        if host.asleep.load(Ordering::SeqCst) {
            wake_and_fill_pool(&proxy, &host, run).await;
            expected_packets += BURST;
        }
        bursts_done(&host, expected_packets).await;
        host.sleep();
        match run % 3 {
            0 => metadata_is_decided(&proxy, "/api/ps", run).await,
            1 => metadata_is_decided(&proxy, "/api/version", run).await,
            _ => {
                chat_is_decided(&proxy, &host, run).await;
                expected_packets += BURST;
            }
        }
    }
    // Every chat reached Ollama exactly once.
    let arrivals = host.state.log.arrivals.lock().unwrap().clone();
    let mut unique = arrivals.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        arrivals.len(),
        "a chat arrived twice: {arrivals:?}"
    );
    let asleep = arrivals.iter().filter(|a| a.starts_with("asleep")).count();
    assert_eq!(asleep, RUNS / 3, "{arrivals:?}");
    proxy.stop().await;
}
