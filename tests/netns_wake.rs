//! Waking a host in a network namespace that is silent while asleep: it answers nothing, not even
//! ARP (so a connect hangs or fails with "no route to host", as a suspended PC's does), yet receives
//! the magic packet sent to the subnet's directed broadcast address.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::netns::Net;
use common::nshost::Host;
use common::{client, post_json, Proxy};

async fn start_proxy(host: &Host) -> Proxy {
    common::logs();
    let args = host.proxy_args();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start(&argv).await
}

#[tokio::test]
async fn silent_host_is_woken_by_a_directed_broadcast() {
    let Some(net) = Net::create() else { return };
    let host = Arc::new(Host::new(net, false));
    host.sleep();
    host.wake_on_lan(Duration::from_millis(300));
    let proxy = start_proxy(&host).await;
    let resp = post_json(
        proxy.url("/api/chat"),
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("\"done\":true"));
    assert!(host.packets.load(Ordering::SeqCst) >= 1);
    assert_eq!(host.state.log.count("/api/chat"), 1);
    assert_eq!(proxy.health().await["wakes"], 1);
    proxy.stop().await;
}

#[tokio::test]
async fn host_that_falls_asleep_under_pooled_connections() {
    let Some(net) = Net::create() else { return };
    let host = Arc::new(Host::new(net, true));
    host.wake_on_lan(Duration::ZERO);
    let proxy = start_proxy(&host).await;
    // Awake: requests leave idle connections in the proxy's pool.
    for i in 0..3 {
        let resp = client()
            .post(proxy.url("/api/chat"))
            .header("x-seq", format!("awake{i}"))
            .json(&json!({"stream": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The first request (Ollama never heard from) sent an early wake burst of 3 packets: let it
    // pass, so that it cannot wake the host we are about to put to sleep.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while host.packets.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "early wake burst never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The host suspends: nothing it had (connections, ARP) answers any more.
    host.sleep();
    let packets_before = host.packets.load(Ordering::SeqCst);
    let resp = client()
        .post(proxy.url("/api/chat"))
        .header("x-seq", "asleep")
        .json(&json!({"stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(
        host.packets.load(Ordering::SeqCst) > packets_before,
        "never woken"
    );
    let arrivals = host.state.log.arrivals.lock().unwrap().clone();
    assert_eq!(
        arrivals,
        ["awake0", "awake1", "awake2", "asleep"],
        "replayed more than once or lost"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_ollama_received_is_never_sent_twice() {
    let Some(net) = Net::create() else { return };
    let host = Arc::new(Host::new(net, true));
    host.wake_on_lan(Duration::ZERO);
    let args = host.proxy_args();
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--model-timeout", "2s"]);
    common::logs();
    let proxy = Proxy::start(&argv).await;
    // Loading the model takes long; the host suspends after it received the request.
    host.state
        .knobs
        .header_delay_ms
        .store(10_000, Ordering::SeqCst);
    let url = proxy.url("/api/chat");
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .header("x-seq", "once")
            .json(&json!({"stream": false}))
            .send()
            .await
            .unwrap()
    });
    host.state
        .log
        .wait_for("the request at Ollama", Duration::from_secs(5), |l| {
            !l.arrivals.lock().unwrap().is_empty()
        })
        .await;
    host.sleep();
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp.text().await.unwrap().contains("MODEL_TIMEOUT_SECONDS"));
    assert_eq!(*host.state.log.arrivals.lock().unwrap(), ["once"]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_connect_that_hangs_is_a_502_after_the_connect_timeout_without_wake_method() {
    let Some(net) = Net::create() else { return };
    let host = Host::new(net, true);
    host.sleep(); // silent: SYNs go unanswered, the connect hangs
    common::logs();
    let url = format!("http://{}:11434", host.net.peer_ip);
    let proxy = Proxy::start(&["--ollama-url", &url, "--connect-timeout", "1s"]).await;
    let start = std::time::Instant::now();
    let resp = post_json(proxy.url("/api/chat"), &json!({"model": "m"})).await;
    let took = start.elapsed();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(proxy.health().await["backend"], "asleep");
    proxy.stop().await;
}
