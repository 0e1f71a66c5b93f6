//! A fast fake Ollama for benchmarks: static answers, timestamped NDJSON streams, and an optional
//! "asleep" start where the port is bound but not listening until the control port says `/open`.
//!
//! Usage: bench-fake [--asleep]; prints `{"addr":"..","control":".."}` on stdout once ready.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

type Body = BoxBody<Bytes, Infallible>;

const TAGS: &str = r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","modified_at":"2024-06-01T10:11:12.123456789-07:00","size":2019393189,"digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"}}]}"#;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn full(status: u16, ct: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    r.headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static(ct));
    r
}

/// `POST /api/chat` with `{"chunks":N,"interval_us":U}`: N objects, each carrying its send time.
fn chat(chunks: u64, interval: Duration) -> Response<Body> {
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i > chunks {
            return None;
        }
        if i > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        let done = i == chunks;
        let line = format!(
            "{{\"model\":\"llama3.2\",\"created_at\":\"2024-06-01T10:11:12Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"t{i} \"}},\"done\":{done},\"i\":{i},\"t\":{}}}\n",
            now_ns()
        );
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), i + 1))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(match (parts.method.as_str(), parts.uri.path()) {
        ("GET" | "HEAD", "/api/version") => full(
            200,
            "application/json; charset=utf-8",
            r#"{"version":"0.33.0"}"#,
        ),
        ("GET" | "HEAD", "/api/tags") => full(200, "application/json; charset=utf-8", TAGS),
        ("GET" | "HEAD", "/") => full(200, "text/plain; charset=utf-8", "Ollama is running"),
        ("POST", "/api/chat" | "/api/generate") => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let chunks = v.get("chunks").and_then(|c| c.as_u64()).unwrap_or(5);
            let interval =
                Duration::from_micros(v.get("interval_us").and_then(|c| c.as_u64()).unwrap_or(0));
            chat(chunks, interval)
        }
        _ => full(404, "text/plain", "404 page not found"),
    })
}

async fn serve(
    listener: TcpListener,
    handler: impl Fn(Request<Incoming>) -> Handled + Clone + Send + 'static,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        #[allow(clippy::redundant_closure)] // the closure owns `h`, which the spawned task needs
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(move |r| h(r)))
                .await;
        });
    }
}

type Handled =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let asleep = std::env::args().any(|a| a == "--asleep");
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let addr: SocketAddr = socket.local_addr()?;
    let control = TcpListener::bind("127.0.0.1:0").await?;
    let control_addr = control.local_addr()?;
    let pending = Arc::new(Mutex::new(Some(socket)));
    let open = {
        let pending = Arc::clone(&pending);
        move || -> Option<u128> {
            let socket = pending.lock().ok()?.take()?;
            let listener = socket.listen(4096).ok()?;
            let at = now_ns();
            tokio::spawn(serve(listener, |r| Box::pin(handle(r)) as Handled));
            Some(at)
        }
    };
    if !asleep {
        open();
    }
    let control_handler = move |_r: Request<Incoming>| -> Handled {
        let at = open();
        Box::pin(async move {
            Ok(full(
                200,
                "application/json",
                format!("{{\"listening_at_ns\":{}}}", at.unwrap_or(0)),
            ))
        })
    };
    println!("{{\"addr\":\"{addr}\",\"control\":\"{control_addr}\"}}");
    serve(control, control_handler).await;
    Ok(())
}
