//! `bench-floor`: the least a hyper-based reverse proxy does per request, as a reference row for
//! `bench/interleaved.py`: no routing, no checks, no metrics, a pool of HTTP/1 connections, bodies
//! streamed through. `FLOOR_MODE=mt` runs it on tokio's multi-thread runtime (as ollama-proxy
//! does); `FLOOR_MODE=percore` on one single-threaded runtime per core, each with its own pool,
//! client connections dealt out in turn. It takes ollama-proxy's `--bind`, `--port` and
//! `--ollama-url` and prints `listen=ADDR` on stderr, so the harness starts it like the proxy.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Pool = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

/// The response body, giving its connection back to the pool once it has ended.
struct Returning {
    inner: Incoming,
    back: Option<(SendRequest<Incoming>, Pool)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            if let Ok(mut idle) = pool.lock() {
                idle.push(sender);
            }
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn connect(upstream: SocketAddr) -> anyhow::Result<SendRequest<Incoming>> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn forward(
    req: Request<Incoming>,
    pool: Pool,
    upstream: SocketAddr,
) -> anyhow::Result<Response<Returning>> {
    let idle = pool.lock().ok().and_then(|mut idle| idle.pop());
    let mut sender = match idle {
        Some(sender) if sender.is_ready() => sender,
        _ => connect(upstream).await?,
    };
    let resp = sender.send_request(req).await?;
    Ok(resp.map(|inner| Returning {
        inner,
        back: Some((sender, pool)),
    }))
}

async fn serve(stream: tokio::net::TcpStream, pool: Pool, upstream: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| forward(req, Arc::clone(&pool), upstream));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn args() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let (mut bind, mut port, mut url) = ("127.0.0.1".to_string(), "0".to_string(), None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().context("a value after each option")?;
        match a.as_str() {
            "--bind" => bind = v,
            "--port" => port = v,
            "--ollama-url" => url = Some(v),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let url = url.context("--ollama-url")?;
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    Ok((format!("{bind}:{port}").parse()?, host.parse()?))
}

fn main() -> anyhow::Result<()> {
    let (listen, upstream) = args()?;
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    eprintln!("listen={}", listener.local_addr()?);
    let mode = std::env::var("FLOOR_MODE").unwrap_or_else(|_| "mt".into());
    if mode == "mt" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let pool = Pool::default();
            loop {
                let (stream, _) = listener.accept().await?;
                tokio::spawn(serve(stream, Arc::clone(&pool), upstream));
            }
        });
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut hands = Vec::new();
    for _ in 0..cores {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        hands.push(tx);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let pool = Pool::default();
            rt.block_on(async move {
                while let Some(stream) = rx.recv().await {
                    let stream = tokio::net::TcpStream::from_std(stream)?;
                    tokio::spawn(serve(stream, Arc::clone(&pool), upstream));
                }
                Ok(())
            })
        });
    }
    listener.set_nonblocking(false)?;
    for (n, stream) in listener.incoming().enumerate() {
        let stream = stream?;
        stream.set_nonblocking(true)?;
        if let Some(hand) = hands.get(n % cores) {
            hand.send(stream)?;
        }
    }
    Ok(())
}
