//! A connection driven by the request that uses it: what Ollama sent in one go comes out of the
//! body without waiting, and the connection goes back to the pool ready for the next request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::body::UpstreamBody;

/// A chunked answer of two lines, written by the server in one write.
const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nline1\n\r\n6\r\nline2\n\r\n0\r\n\r\n";

/// Reads one request head from `stream` (bounded in time).
async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a whole request head");
        head.extend_from_slice(&buf[..n]);
    }
}

/// A listener for a fake Ollama on this machine, and a client for it.
async fn listen() -> (TcpListener, Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = Upstream {
        host: "127.0.0.1".into(),
        port,
        authority: format!("127.0.0.1:{port}"),
        prefix: String::new(),
    };
    (listener, Client::new(upstream, Duration::from_secs(2)))
}

/// The fake Ollama's side of the next connection: one request head read, `answer` written.
async fn answer_next(listener: &TcpListener, answer: &[u8]) -> tokio::net::TcpStream {
    let (mut stream, _) = listener.accept().await.unwrap();
    read_head(&mut stream).await;
    stream.write_all(answer).await.unwrap();
    stream
}

fn get() -> hyper::Request<Body> {
    hyper::Request::get("/api/chat")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn what_arrived_together_is_read_without_waiting_and_the_connection_is_pooled() {
    let (listener, client) = listen().await;
    let (answered_tx, answered) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let mut stream = answer_next(&listener, ANSWER).await;
        answered_tx.send(()).unwrap();
        // The second request comes on the same connection.
        read_head(&mut stream).await;
        stream.write_all(ANSWER).await.unwrap();
        stream
    });
    let conn = client.connect().await.unwrap();
    let (resp, lease) = client.send(conn, get()).await.unwrap();
    answered.await.unwrap();
    let mut body = UpstreamBody::new(resp.into_body(), lease, Duration::from_secs(5), 0, None);
    // Every frame at once: the body drives the connection itself, nothing waits for another task.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut lines = Vec::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(frame)) => lines.push(frame.unwrap().into_data().unwrap()),
            Poll::Ready(None) => break,
            Poll::Pending => panic!("waited after {lines:?}, with the whole answer in the socket"),
        }
    }
    assert_eq!(lines, ["line1\n", "line2\n"]);
    // Back in the pool, open and ready: the next request reuses it (the server accepts only one).
    let conn = client.checkout().await.unwrap();
    assert!(conn.reused, "a new connection instead of the pooled one");
    let (resp, _lease) = client.send(conn, get()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let stream = server.await.unwrap();
    drop(stream);
}

#[tokio::test]
async fn a_pooled_connection_that_ollama_closed_is_not_handed_out() {
    let (listener, client) = listen().await;
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut stream = answer_next(&listener, ok).await;
        // Ollama closes the idle connection; a second one is accepted.
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        drop(stream);
        closed_tx.send(()).unwrap();
        listener.accept().await.unwrap().0
    });
    let conn = client.connect().await.unwrap();
    let (resp, lease) = client.send(conn, get()).await.unwrap();
    let body = UpstreamBody::new(resp.into_body(), lease, Duration::from_secs(5), 0, None);
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&bytes[..], b"ok");
    closed.await.unwrap();
    // The close is in this side's socket; one yield lets the runtime look at its sockets.
    tokio::task::yield_now().await;
    let conn = client.checkout().await.unwrap();
    assert!(!conn.reused, "the closed connection was handed out");
    let accepted = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    drop(accepted);
}

#[tokio::test]
async fn a_connection_still_sending_its_request_body_is_closed_not_pooled() {
    let (listener, client) = listen().await;
    let server = tokio::spawn(async move {
        // Answers at once without reading the body, then waits for the connection to end.
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut stream = answer_next(&listener, empty).await;
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let (more, body) = crate::outbound::channel_body(1);
    more.send(Ok(bytes::Bytes::from_static(b"part")))
        .await
        .unwrap();
    let req = hyper::Request::post("/api/blobs/x")
        .header("content-length", "1000")
        .body(body)
        .unwrap();
    let conn = client.connect().await.unwrap();
    let (resp, lease) = client.send(conn, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The answer is empty: its body ends at once and gives the connection back, which closes it
    // (in the pool nobody would send the rest of the request).
    let body = UpstreamBody::new(resp.into_body(), lease, Duration::from_secs(5), 0, None);
    assert!(body.is_end_stream());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the connection stayed open with its request half sent")
        .unwrap();
    assert!(client.idle.lock().unwrap().is_empty());
    drop((body, more));
}
