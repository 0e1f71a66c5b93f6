//! The keep-alive race: Ollama closes an idle connection just as the proxy reuses it. An idempotent
//! request is sent once more on a new connection; a POST that may have arrived is never sent twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use common::{client, Proxy};

/// An upstream that answers the first request on each connection, then reads the second one and
/// closes the connection without a word: the race, made certain. Records every request line.
async fn racy_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut conn = BufReader::new(stream);
                for nth in 0..2 {
                    let Some(line) = read_request(&mut conn).await else {
                        return;
                    };
                    log.lock().unwrap().push(line);
                    if nth == 1 {
                        return; // closed with the request unanswered
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    conn.get_mut().write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, seen)
}

/// Reads one request (head and `content-length` body); its request line.
async fn read_request(conn: &mut BufReader<tokio::net::TcpStream>) -> Option<String> {
    let mut first = String::new();
    if conn.read_line(&mut first).await.ok()? == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.ok()?;
    Some(first.trim().to_string())
}

fn count(seen: &Mutex<Vec<String>>, prefix: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn idempotent_requests_are_sent_again_on_a_new_connection() {
    let (url, seen) = racy_upstream().await;
    let proxy = Proxy::start(&["--ollama-url", &url]).await;
    for _ in 0..5 {
        let resp = client().get(proxy.url("/api/other")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    // Every second request met a closing connection and went once more.
    assert!(
        count(&seen, "GET /api/other") > 5,
        "{:?}",
        seen.lock().unwrap()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_post_that_may_have_arrived_is_never_sent_twice() {
    let (url, seen) = racy_upstream().await;
    let proxy = Proxy::start(&["--ollama-url", &url]).await;
    let first = client().get(proxy.url("/api/other")).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "ok");
    // Reuses the pooled connection; the upstream reads the POST and closes.
    let resp = client()
        .post(proxy.url("/api/chat"))
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(count(&seen, "POST /api/chat"), 1);
    proxy.stop().await;
}
