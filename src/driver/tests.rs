//! The driver's holding decisions against a real (local) wake method.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::{Cause, Driver, DriverConfig};
use crate::cli::Cli;
use crate::config::Config;
use crate::upstream::Client;
use crate::wake::Waker;

/// A driver for an Ollama on a closed port, waking with magic packets to a local UDP socket.
fn driver(packets: &std::net::UdpSocket) -> Arc<Driver> {
    limited(packets, None)
}

/// [`driver`] with MAX_WAKES_PER_HOUR `max`.
fn limited(packets: &std::net::UdpSocket, max: Option<usize>) -> Arc<Driver> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    let port = packets.local_addr().unwrap().port().to_string();
    let argv = [
        "ollama-proxy",
        "--port",
        "1",
        "--ollama-url",
        &url,
        "--mac",
        "02:00:00:00:00:01",
        "--broadcast",
        "127.0.0.1",
        "--wol-port",
        &port,
    ];
    let cfg = Config::from_args(&Cli::try_parse_from(argv).unwrap().serve).unwrap();
    let client = Arc::new(Client::new(
        cfg.ollama.upstream.clone(),
        Duration::from_secs(1),
    ));
    let waker = Arc::new(Waker::new(&cfg.wake).unwrap());
    let settings = DriverConfig {
        wake_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(2),
        wake_interval: Duration::from_secs(600),
        max_queue: 1000,
        max_wakes_per_hour: max,
    };
    Arc::new(Driver::new(
        Some(waker),
        client,
        settings,
        CancellationToken::new(),
    ))
}

fn cause() -> Cause {
    cause_at("/api/chat")
}

fn cause_at(path: &'static str) -> Cause {
    Cause {
        method: axum::http::Method::POST,
        uri: axum::http::Uri::from_static(path),
        client: "127.0.0.1:1".parse().unwrap(),
        key: None,
        may_wake: true,
        model: None,
    }
}

#[tokio::test]
async fn a_request_that_saw_asleep_goes_when_a_release_came_first() {
    let packets = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = driver(&packets);
    d.unreachable();
    assert!(d.state().holds());
    // The request looked (asleep); before it holds, Ollama answers someone else.
    d.answered();
    assert!(d.hold(&cause()).unwrap().is_none());
    assert_eq!(d.wake_cycles(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_racing_a_release_start_no_second_cycle() {
    let packets = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        let d = driver(&packets);
        d.unreachable();
        let first = d.hold(&cause()).unwrap();
        assert!(first.is_some());
        let racers: Vec<_> = (0..50)
            .map(|_| {
                let d = Arc::clone(&d);
                tokio::spawn(async move {
                    // Each saw "holds" before the release; some hold after it.
                    tokio::task::yield_now().await;
                    d.hold(&cause()).map(|t| t.is_some())
                })
            })
            .collect();
        d.answered();
        for r in racers {
            let _ = r.await.unwrap();
        }
        assert_eq!(
            d.wake_cycles(),
            1,
            "a request that raced the release woke again"
        );
        d.stop();
    }
}

#[tokio::test]
async fn a_refused_button_press_leaves_the_first_work_refusal_of_the_window_recorded() {
    let packets = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = limited(&packets, Some(1));
    d.unreachable();
    let button = cause_at("/proxy/backends/default/wake");
    assert!(d.try_wake(&button).is_ok());
    d.answered();
    d.unreachable();
    // The one wake of the hour is used up: the button, then a request, are refused.
    assert!(matches!(
        d.try_wake(&button),
        Err(crate::error::ProxyError::WakeLimit(_))
    ));
    assert!(matches!(
        d.hold(&cause()),
        Err(crate::error::ProxyError::WakeLimit(_))
    ));
    // Later requests in the same window are not recorded again.
    assert!(d.hold(&cause()).is_err());
    let events = d.watch.snapshot().events;
    let refused: Vec<_> = events.iter().filter(|e| e.kind == "wake_refused").collect();
    let causes: Vec<_> = refused.iter().map(|e| e.cause.as_deref()).collect();
    assert_eq!(causes, [Some("work"), Some("manual")], "{events:?}");
    d.stop();
}
