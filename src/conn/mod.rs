//! One client connection: HTTP/1 served by hyper, each request handed to [`handle`] directly,
//! watched for the header and idle timeouts (see "Limits" in docs/behaviour.md). A request being
//! held or streamed keeps its connection busy, never idle.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Method};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handler::{handle, App};

mod gate;

/// The client timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTimeouts {
    /// Longest time from a request's first byte (or the connection's start) to its whole head.
    pub header: Duration,
    /// Longest time between the end of a response and the next request's first byte.
    pub idle: Duration,
}

/// Largest read buffer of a client connection (hyper's default is ~400 KiB): with many large
/// uploads streaming at once, these buffers are most of the memory outside the body budget.
pub(crate) const CONN_BUFFER: usize = 64 << 10;

/// Between requests: the idle timeout runs.
const IDLE: u8 = 0;
/// Reading a request head (or waiting for the first one): the header timeout runs.
const HEADERS: u8 = 1;
/// At least one request is being served (held, forwarded or streamed): no timeout runs.
const BUSY: u8 = 2;

/// What a connection is doing, updated by its reads and its requests, read by its watchdog.
struct Activity {
    phase: AtomicU8,
    /// The socket refused the last write: hyper still holds part of a response.
    write_blocked: AtomicBool,
    /// When the phase began, in ms since `start`.
    since_ms: AtomicU64,
    busy: AtomicUsize,
    start: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: AtomicU8::new(HEADERS),
            write_blocked: AtomicBool::new(false),
            since_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            start: Instant::now(),
        }
    }

    fn enter(&self, phase: u8) {
        let now = self.start.elapsed().as_millis() as u64;
        self.since_ms.store(now, Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }

    /// Bytes arrived: an idle connection starts a new request head.
    fn read_some(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(HEADERS);
        }
    }

    fn begin(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.phase.store(BUSY, Ordering::Release);
    }

    fn end(&self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.enter(IDLE);
        }
    }

    /// Nothing in progress: no request, no response still being written.
    fn idle(&self) -> bool {
        self.phase.load(Ordering::Acquire) == IDLE && !self.write_blocked.load(Ordering::Acquire)
    }

    /// Notes whether a write went through.
    fn wrote<T>(&self, polled: &Poll<T>) {
        self.write_blocked
            .store(polled.is_pending(), Ordering::Release);
    }

    /// When the running timeout expires; `None` while busy.
    fn deadline(&self, t: ClientTimeouts) -> Option<(Instant, u8)> {
        let phase = self.phase.load(Ordering::Acquire);
        let limit = match phase {
            IDLE => t.idle,
            HEADERS => t.header,
            _ => return None,
        };
        let since = Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        Some((self.start + since + limit, phase))
    }
}

/// The client's socket, reporting reads to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Marks one request as served when dropped: with the response body, or with the request's future
/// when the client left before an answer.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.begin();
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that keeps its connection busy until it is finished or dropped.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection watches besides its socket.
pub(crate) struct Watch {
    /// The header and idle timeouts.
    pub timeouts: ClientTimeouts,
    /// Notified while all connection slots are taken: an idle connection then closes at once.
    pub pressure: Arc<Notify>,
    /// Cancelled at shutdown: the connection finishes its response and closes.
    pub shutdown: CancellationToken,
}

/// The handler as hyper's service for one connection: each request carries the client's address
/// and keeps the connection busy until its response is done. Called without a router (every
/// request goes to [`handle`]), so what a router does to every response is done in [`finish`].
fn service(
    app: Arc<App>,
    client: SocketAddr,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Tracked>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<hyper::Response<Tracked>, std::convert::Infallible>,
    > + Send,
> {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::new(&activity);
        let method = req.method().clone();
        let answer = handle(
            State(Arc::clone(&app)),
            ConnectInfo(client),
            req.map(Body::new),
        );
        async move {
            let resp = finish(&method, answer.await);
            Ok(resp.map(|inner| Tracked { inner, _busy: busy }))
        }
    })
}

/// What axum's router did to every response of its routes (axum 0.8 `RouteFuture`), kept now that
/// requests bypass it: `Content-Length` from a body of exact size when the response has none, and
/// the body of an answer to `HEAD` emptied after that; a successful `CONNECT` (never answered so:
/// see "HTTP hygiene" in docs/behaviour.md) carries no body.
fn finish(method: &Method, mut resp: hyper::Response<Body>) -> hyper::Response<Body> {
    let hint = resp.body().size_hint();
    if method == Method::CONNECT && resp.status().is_success() {
        let headers = resp.headers();
        if headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING)
            || hint.lower() != 0
        {
            *resp.body_mut() = Body::empty();
        }
        return resp;
    }
    if let (false, Some(size)) = (
        resp.headers().contains_key(header::CONTENT_LENGTH),
        hint.exact(),
    ) {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if method == Method::HEAD {
        *resp.body_mut() = Body::empty();
    }
    resp
}

/// Bytes wait in the socket's receive buffer that hyper has not read yet.
fn has_unread(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is the client socket, owned by the connection that is alive in the caller; the
    // buffer is one valid byte; MSG_PEEK leaves the data where it is, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// What woke a connection's watchdog.
enum Event {
    Shutdown,
    Pressure,
    Timer,
}

/// Serves one client connection until it ends, a timeout or the connection limit closes it, or
/// shutdown has let its last response finish.
pub(crate) async fn serve(stream: TcpStream, client: SocketAddr, app: Arc<App>, watch: Watch) {
    let Watch {
        timeouts,
        pressure,
        shutdown,
    } = watch;
    let activity = Arc::new(Activity::new());
    let fd = stream.as_raw_fd();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = service(app, client, Arc::clone(&activity));
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(CONN_BUFFER)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    let gate = Arc::new(gate::Gate::default());
    loop {
        // While busy (or idle but still writing a response out), look again after the shorter
        // timeout: the phase changes without waking us.
        let later = Instant::now() + timeouts.header.min(timeouts.idle);
        let wake_at = match activity.deadline(timeouts) {
            Some((due, IDLE)) if due <= Instant::now() => later,
            Some((due, _)) => due,
            None => later,
        };
        let (shutdown, pressure, waiting) = (&shutdown, &pressure, !stopping);
        let watch = async move {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if waiting => Event::Shutdown,
                _ = pressure.notified() => Event::Pressure,
                _ = tokio::time::sleep_until(wake_at) => Event::Timer,
            }
        };
        tokio::pin!(watch);
        gate.open();
        // The connection is polled on every wake, the watchdog only on its own.
        let event = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Err(result)),
            Poll::Pending => gate.poll(cx, watch.as_mut()).map(Ok),
        })
        .await;
        match event {
            Err(result) => {
                if let Err(e) = result {
                    tracing::debug!(%client, error = %e, "client connection ended");
                }
                return;
            }
            Ok(Event::Shutdown) => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            Ok(Event::Pressure) => {
                // Not if the next request is already waiting in the socket: it would be lost.
                if activity.idle() && !has_unread(fd) {
                    tracing::debug!(%client, "closing an idle client connection: all connection slots are taken");
                    return;
                }
            }
            Ok(Event::Timer) => match activity.deadline(timeouts) {
                Some((due, IDLE)) if due <= Instant::now() && activity.idle() => {
                    tracing::debug!(%client, "closing an idle client connection");
                    return;
                }
                Some((due, HEADERS)) if due <= Instant::now() => {
                    tracing::debug!(%client, "client sent no complete request head in time; closing");
                    return;
                }
                _ => {}
            },
        }
    }
}
