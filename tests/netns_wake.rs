//! Waking a host in a network namespace that is silent while asleep: it answers nothing, not even
//! ARP (so a connect hangs or fails with "no route to host", as a suspended PC's does), yet receives
//! the magic packet sent to the subnet's directed broadcast address.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use common::fake::{Fake, FakeState, Knobs, Log};
use common::netns::Net;
use common::{client, post_json, Proxy};

const MAC: &str = "02:00:5e:10:20:30";

struct Host {
    net: Arc<Net>,
    asleep: AtomicBool,
    state: Arc<FakeState>,
    packets: Arc<AtomicUsize>,
    fake: Arc<Mutex<Option<Fake>>>,
}

impl Host {
    /// The namespace host, asleep (`listening` = Ollama already runs, as on a suspended PC).
    fn new(net: Net, listening: bool) -> Host {
        let net = Arc::new(net);
        let state = Arc::new(FakeState {
            knobs: Knobs::default(),
            log: Log::default(),
            models: Mutex::new(vec!["llama3.2:latest".into()]),
        });
        let host = Host {
            net,
            asleep: AtomicBool::new(false),
            state,
            packets: Arc::new(AtomicUsize::new(0)),
            fake: Arc::new(Mutex::new(None)),
        };
        if listening {
            host.listen();
        }
        host
    }

    /// Suspends: from now on the host answers nothing until a magic packet arrives.
    fn sleep(&self) {
        self.asleep.store(true, Ordering::SeqCst);
        self.net.set_silent(true);
    }

    fn listen(&self) {
        let addr = (self.net.peer_ip, 11434);
        let listener = self
            .net
            .run_inside(|| std::net::TcpListener::bind(addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        *self.fake.lock().unwrap() = Some(Fake::start_with(listener, Arc::clone(&self.state)));
    }

    /// Receives magic packets inside the namespace; the first wakes the host (answers again, and
    /// starts Ollama after `boot` if it is not running).
    fn wake_on_lan(self: &Arc<Self>, boot: Duration) {
        let sock = self
            .net
            .run_inside(|| std::net::UdpSocket::bind("0.0.0.0:9").unwrap());
        sock.set_nonblocking(true).unwrap();
        let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
        let expected = wol::MagicPacket::new(MAC.parse().unwrap(), None);
        let host = Arc::clone(self);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = sock.recv(&mut buf).await {
                if buf[..n] != *expected.as_bytes() {
                    continue;
                }
                host.packets.fetch_add(1, Ordering::SeqCst);
                if host.asleep.swap(false, Ordering::SeqCst) {
                    host.net.set_silent(false);
                    tokio::time::sleep(boot).await;
                    if host.fake.lock().unwrap().is_none() {
                        host.listen();
                    }
                }
            }
        });
    }

    fn proxy_args(&self) -> Vec<String> {
        let url = format!("http://{}:11434", self.net.peer_ip);
        let bcast = self.net.broadcast.to_string();
        [
            "--ollama-url",
            &url,
            "--mac",
            MAC,
            "--broadcast",
            &bcast,
            "--wol-port",
            "9",
            "--connect-timeout",
            "1s",
            "--wake-timeout",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

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
