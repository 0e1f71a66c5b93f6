//! Client connection limits on the real binary: header and idle timeouts, busy connections kept,
//! the connection cap, and the proxy's own fd exhaustion not taken for a sleeping Ollama.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use common::{get_json, Child, Fake};

/// Short client timeouts so that a test sees them fire.
const SHORT: [&str; 4] = ["--client-header-timeout", "1", "--client-idle-timeout", "1"];

/// A raw HTTP/1.1 connection to the proxy; the task ends when the connection closes.
async fn connection(addr: SocketAddr) -> (SendRequest<Body>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn get(path: &str) -> hyper::Request<Body> {
    hyper::Request::get(path)
        .header("host", "proxy")
        .body(Body::empty())
        .unwrap()
}

/// Reads until the peer closes; returns how long that took. Bounded.
async fn closed_after(stream: &mut TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the proxy never closed the connection")
}

#[tokio::test]
async fn silent_and_slowloris_clients_are_cut_off() {
    let fake = Fake::bind().await;
    let url = fake.url();
    let mut args = vec!["--ollama-url", &url];
    args.extend(SHORT);
    let proxy = Child::start(&args, &[]).await;

    let start = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(closed_after(&mut silent, start).await >= Duration::from_millis(900));

    // One byte every 50 ms never completes a head: the header timeout counts from the first byte.
    let start = Instant::now();
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET /api/tags HTTP/1.1\r\n").await.unwrap();
    let mut cut = false;
    for _ in 0..600 {
        if slow.write_all(b"x").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a slowloris client kept its connection for 30 s");
    assert!(start.elapsed() >= Duration::from_millis(900));

    // A body that stops arriving: 408 once the client has been silent that long.
    let mut stalled = TcpStream::connect(proxy.addr).await.unwrap();
    stalled
        .write_all(b"POST /api/chat HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled body was never cut off")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        fake.log().all().is_empty(),
        "a stalled request reached Ollama"
    );
}

#[tokio::test]
async fn idle_connections_close_but_waiting_and_streaming_ones_do_not() {
    let fake = Fake::bind().await;
    // The model "loads" for longer than both client timeouts.
    fake.knobs().header_delay_ms.store(2500, Ordering::SeqCst);
    fake.knobs().chunk_delay_ms.store(400, Ordering::SeqCst);
    let url = fake.url();
    let mut args = vec!["--ollama-url", &url];
    args.extend(SHORT);
    let proxy = Child::start(&args, &[]).await;

    let (mut sender, conn) = connection(proxy.addr).await;
    let chat = hyper::Request::post("/api/chat")
        .header("host", "proxy")
        .body(Body::from(r#"{"model":"llama3.2","messages":[]}"#))
        .unwrap();
    let resp = sender.send_request(chat).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 6);
    let done = Instant::now();
    // Now idle: closed after the idle timeout.
    tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect("an idle keep-alive connection stayed open")
        .unwrap();
    assert!(done.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_held_request_outlives_the_client_timeouts() {
    let (_packets, magic) = common::magic_catcher().await;
    let url = common::closed_url();
    let mut args = vec!["--ollama-url", &url, "--wake-timeout", "3s"];
    args.extend(common::strs(&magic));
    args.extend(SHORT);
    let proxy = Child::start(&args, &[]).await;
    let (mut sender, _conn) = connection(proxy.addr).await;
    let chat = hyper::Request::post("/api/chat")
        .header("host", "proxy")
        .body(Body::from(r#"{"model":"llama3.2","messages":[]}"#))
        .unwrap();
    let start = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(chat))
        .await
        .unwrap()
        .unwrap();
    // Held through the wake cycle (3 s), then answered: never cut as idle.
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(start.elapsed() >= Duration::from_millis(2900));
}

/// `GET path` on `sender`; when its whole answer arrived.
async fn answered_at(mut sender: SendRequest<Body>, path: &'static str) -> Instant {
    let resp = sender.send_request(get(path)).await.unwrap();
    assert_eq!(resp.status(), 200);
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    Instant::now()
}

#[tokio::test]
async fn past_the_cap_clients_wait_for_a_busy_connection_to_finish() {
    let fake = Fake::bind().await;
    fake.knobs().header_delay_ms.store(1000, Ordering::SeqCst);
    let proxy = Child::start(
        &["--ollama-url", &fake.url(), "--max-connections", "2"],
        &[],
    )
    .await;
    let (c1, _t1) = connection(proxy.addr).await;
    let (c2, _t2) = connection(proxy.addr).await;
    let slow = [
        tokio::spawn(answered_at(c1, "/slow")),
        tokio::spawn(answered_at(c2, "/slow")),
    ];
    let limit = Duration::from_secs(20);
    fake.log()
        .wait_for("both slow requests", limit, |l| l.count("/slow") == 2)
        .await;
    // Both slots are busy: the third client waits in the backlog until one of them is done.
    let (c3, _t3) = connection(proxy.addr).await;
    let third = tokio::time::timeout(limit, answered_at(c3, "/health"))
        .await
        .expect("the waiting client was never served");
    let mut first_done = None;
    for t in slow {
        let done = t.await.unwrap();
        first_done = Some(first_done.map_or(done, |f: Instant| f.min(done)));
    }
    assert!(
        third >= first_done.unwrap(),
        "served past --max-connections 2"
    );
    let log = proxy.stderr.lock().unwrap().clone();
    assert!(log.contains("connection limit reached"), "{log}");
}

#[tokio::test]
async fn at_the_cap_idle_connections_make_room() {
    let fake = Fake::bind().await;
    let proxy = Child::start(
        &["--ollama-url", &fake.url(), "--max-connections", "2"],
        &[],
    )
    .await;
    let (mut c1, t1) = connection(proxy.addr).await;
    let (mut c2, t2) = connection(proxy.addr).await;
    for c in [&mut c1, &mut c2] {
        assert_eq!(c.send_request(get("/health")).await.unwrap().status(), 200);
    }
    // Both idle (default idle timeout: 75 s): a new client is served long before that, because
    // the idle connections are closed to make room.
    let (c3, _t3) = connection(proxy.addr).await;
    tokio::time::timeout(Duration::from_secs(20), answered_at(c3, "/health"))
        .await
        .expect("the new client was not served while idle connections held every slot");
    tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! { _ = t1 => {}, _ = t2 => {} }
    })
    .await
    .expect("no idle connection was closed");
}

/// Connects, waits for every other client to be connected, then writes a whole `POST /api/chat`
/// and reads what comes back (bounded).
async fn raw_chat(addr: SocketAddr, all_connected: Arc<Barrier>) -> String {
    let conn = TcpStream::connect(addr).await;
    all_connected.wait().await;
    let Ok(mut s) = conn else {
        return String::new();
    };
    let body = r#"{"model":"llama3.2","messages":[]}"#;
    let req = format!(
        "POST /api/chat HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn running_out_of_fds_is_not_a_sleeping_ollama() {
    const CLIENTS: usize = 100;
    let fake = Fake::bind().await;
    let (_packets, magic) = common::magic_catcher().await;
    // By name: looking it up needs descriptors too, and must not count as "asleep" either.
    let url = fake.url().replace("127.0.0.1", "localhost");
    let mut args = vec!["--ollama-url", &url, "--max-connections", "1000"];
    args.extend(common::strs(&magic));
    // Debug lines say why, should Ollama ever be taken for asleep here.
    let debug = [("RUST_LOG", "ollama_proxy=debug")];
    let proxy = Child::start_wrapped(&["prlimit", "--nofile=64:64", "--"], &args, &debug).await;
    // Ollama is awake and known to be.
    let first = common::post_json(proxy.url("/api/chat"), &serde_json::json!({"model": "m"})).await;
    assert_eq!(first.status(), 200);
    assert_eq!(get_json(proxy.url("/health")).await["backend"], "awake");

    // Every client connects first (most wait in the backlog once the proxy's fds are gone).
    let all_connected = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(raw_chat(proxy.addr, Arc::clone(&all_connected))))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let out_of_fds = answers
        .iter()
        .filter(|a| {
            a.starts_with("HTTP/1.1 503") && a.contains("the proxy is out of file descriptors")
        })
        .count();
    let unanswered = answers.iter().filter(|a| a.is_empty()).count();
    eprintln!(
        "{CLIENTS} clients: {out_of_fds} got 503 out of fds, {unanswered} unanswered (backlog)"
    );
    assert!(
        out_of_fds >= 1,
        "no 503 'out of file descriptors': {answers:?}"
    );
    assert!(answers.iter().all(|a| !a.contains("asleep")), "{answers:?}");
    // All clients gone: the proxy recovers, Ollama is still awake, nothing was woken.
    let health = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(r) = common::client().get(proxy.url("/health")).send().await {
                return r.json::<serde_json::Value>().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the proxy did not recover after its clients left");
    let log = proxy.stderr.lock().unwrap().clone();
    assert_eq!(health["backend"], "awake", "{health}\n{log}");
    assert_eq!(health["wakes"], 0, "{health}\n{log}");
    assert!(log.contains("cannot accept a client connection"), "{log}");
    assert!(!log.contains("waking Ollama"), "{log}");
}
