//! Connections to Ollama: connect with a timeout, a watch on unacknowledged bytes, a short-lived
//! keep-alive pool (see "Backend state" and "Asleep under a connection" in docs/behaviour.md).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

mod driven;
mod quiet;

use crate::acked::{Shared, Ticker, Watch};
use crate::config::Upstream;
use crate::resolve::Resolver;
pub use driven::Driven;

/// Pooled connections idle longer than this are not trusted: the host may have gone to sleep.
const POOL_IDLE: Duration = Duration::from_secs(3);
/// At most this many idle connections are kept.
const POOL_MAX: usize = 1024;
/// The kernel's own limit on unacknowledged data, a backstop behind the watch of "Asleep under a
/// connection": long enough that a receive window Ollama keeps shut (a slow disk under a blob
/// upload) never ends a connection.
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle connection, the watch on its socket, and when it became idle.
type Idle = (Driven, Watch, Instant);
type IdlePool = Arc<Mutex<VecDeque<Idle>>>;

/// Why no connection to Ollama could be made; every variant but [`ConnectError::Local`] means
/// "asleep" (see "Backend state" in docs/behaviour.md).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The proxy itself is short of a resource (file descriptors, memory, buffers, ports): says
    /// nothing about Ollama.
    #[error("the proxy is out of {0}")]
    Local(&'static str),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("connect to {0} timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, String),
    /// The host answered with a reset: it is up, and nothing listens on the port (yet).
    #[error("connect to {0} refused")]
    Refused(SocketAddr),
}

/// Why a request on an established connection failed.
#[derive(Debug)]
pub enum SendFailure {
    /// An idle pooled connection that the server had closed: the request never left; send again.
    Stale(String),
    /// None of the request was acknowledged for CONNECT_TIMEOUT (or until TCP_USER_TIMEOUT): the
    /// host is gone (asleep) and Ollama did not get the request, so it is safe to replay after a
    /// wake.
    Unacked(String),
    /// Part of the request was acknowledged, then nothing more: the host went silent, and Ollama
    /// may hold the whole request (its last acknowledgement lost), so it is never sent again.
    UnackedAfterPart(String),
    /// A reused connection broke before any byte of the answer, and the request is idempotent
    /// (GET, HEAD, OPTIONS): Ollama most likely closed it while idle; sending it once more on a new
    /// connection is safe.
    ClosedWhileIdle(String),
    /// Anything else: Ollama may have received the request, so it is never replayed.
    Failed(String),
}

/// A connection ready for one request.
pub struct Conn {
    driven: Driven,
    watch: Watch,
    reused: bool,
}

impl Conn {
    /// The watch on this connection's socket (to wait for its next write).
    pub fn watch(&self) -> &Watch {
        &self.watch
    }
}

/// Connects to Ollama and keeps idle connections for a short while.
pub struct Client {
    upstream: Upstream,
    connect_timeout: Duration,
    /// The clock of the watches on unacknowledged bytes.
    ticker: Arc<Ticker>,
    idle: IdlePool,
    /// Where new connections go.
    resolver: Resolver,
    /// The address the last new connection was made to (for "Learning the MAC").
    peer: Mutex<Option<SocketAddr>>,
}

impl Client {
    pub fn new(upstream: Upstream, connect_timeout: Duration) -> Self {
        Client {
            resolver: Resolver::new(&upstream.host, upstream.port),
            upstream,
            connect_timeout,
            ticker: Ticker::new(connect_timeout),
            idle: Arc::new(Mutex::new(VecDeque::new())),
            peer: Mutex::new(None),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The address Ollama was last connected to (a name: the address it resolved to then).
    pub fn peer(&self) -> Option<SocketAddr> {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest idle connection that is young enough (expired ones, at the front, are dropped).
    fn pop_idle(&self) -> Option<(Driven, Watch)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|(_, _, since)| now.saturating_duration_since(*since) >= POOL_IDLE)
        {
            idle.pop_front();
        }
        idle.pop_back().map(|(driven, watch, _)| (driven, watch))
    }

    /// Closes pooled connections that are too old to be used or that Ollama closed, so that idle
    /// sockets do not hold file descriptors.
    pub(crate) fn reap_idle(&self) {
        // Looked at outside the lock (a look may read and close sockets); those that stay go back
        // in front of any given back meanwhile, which are younger.
        let mut taken = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        taken.retain_mut(|(driven, _, since)| {
            now.saturating_duration_since(*since) < POOL_IDLE && driven.poll_idle()
        });
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let newer = std::mem::replace(&mut *idle, taken);
        idle.extend(newer);
        idle.truncate(POOL_MAX);
    }

    /// Closes the pool's expired connections every [`POOL_IDLE`] until `stop`.
    pub(crate) async fn reap_until(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(POOL_IDLE);
        loop {
            tokio::select! {
                _ = every.tick() => self.reap_idle(),
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Drops every pooled connection (after Ollama was found unreachable).
    pub fn clear_pool(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A pooled connection younger than the idle limit, open and ready, or a new one.
    pub async fn checkout(&self) -> Result<Conn, ConnectError> {
        while let Some((mut driven, watch)) = self.pop_idle() {
            if driven.poll_idle() {
                return Ok(Conn {
                    driven,
                    watch,
                    reused: true,
                });
            }
        }
        self.connect().await
    }

    /// A new connection, never from the pool.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let addrs = self.resolver.addrs().await?;
        let mut last = ConnectError::Resolve(self.resolver.target().into(), "no addresses".into());
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, self.connect_addr(addr)).await {
                Ok(Ok(stream)) => {
                    *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
                    return self.handshake(addr, stream).await;
                }
                Ok(Err(e)) => match local_shortage(&e) {
                    Some(resource) => return Err(ConnectError::Local(resource)),
                    None if e.kind() == io::ErrorKind::ConnectionRefused => {
                        last = ConnectError::Refused(addr)
                    }
                    None => last = ConnectError::Io(addr, e.to_string()),
                },
                Err(_) => last = ConnectError::Timeout(addr, self.connect_timeout),
            }
        }
        Err(last)
    }

    async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_nodelay(true)?;
        socket2::SockRef::from(&socket).set_tcp_user_timeout(Some(USER_TIMEOUT))?;
        socket.connect(addr).await
    }

    async fn handshake(&self, addr: SocketAddr, stream: TcpStream) -> Result<Conn, ConnectError> {
        let (stream, watch) = Shared::new(stream);
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(crate::conn::CONN_BUFFER)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Io(addr, e.to_string()))?;
        Ok(Conn {
            driven: Driven::new(sender, conn),
            watch,
            reused: false,
        })
    }

    /// Sends `req` on `conn`. The [`Lease`] returns the connection to the pool once the response
    /// body has been read to the end; dropped before that, the connection is closed. Bytes that
    /// wait CONNECT_TIMEOUT for an acknowledgement end the connection as [`SendFailure::Unacked`].
    /// The request is handed to the connection when this is called; the future drives the
    /// connection (writes the request, reads the answer's head) and does not keep the request in
    /// its state.
    pub fn send(
        &self,
        conn: Conn,
        req: hyper::Request<Body>,
    ) -> impl std::future::Future<Output = Result<(hyper::Response<Incoming>, Lease), SendFailure>>
           + Send
           + '_ {
        let Conn {
            mut driven,
            watch,
            reused,
        } = conn;
        let idempotent = matches!(
            *req.method(),
            hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
        );
        let with_body = !http_body::Body::is_end_stream(req.body());
        let before = watch.acked_bytes();
        let response = driven.sender.send_request(req);
        async move {
            let mut response = std::pin::pin!(response);
            // The connection is driven here until the answer's head came (see [`Driven`]).
            let driving = std::future::poll_fn(|cx| {
                driven.poll_with(cx, |driven, cx| {
                    driven.drive(cx);
                    response.as_mut().poll(cx)
                })
            });
            let answer = tokio::select! {
                answer = driving => answer,
                acks = watch.stalled(&self.ticker, before.unwrap_or_default()) => {
                    watch.abort();
                    let why = format!("sent bytes unacknowledged: {acks}");
                    return Err(match before {
                        Some(b) if acks.bytes_acked <= b => SendFailure::Unacked(why),
                        _ => SendFailure::UnackedAfterPart(why),
                    });
                }
            };
            match answer {
                Ok(resp) => Ok((
                    resp,
                    Lease {
                        driven,
                        watch,
                        pool: Arc::clone(&self.idle),
                        with_body,
                    },
                )),
                Err(e) => Err(classify(&e, reused, idempotent)),
            }
        }
    }
}

/// A connection lent to one response; its reader drives it ([`Lease::poll_with`]).
pub struct Lease {
    driven: Driven,
    watch: Watch,
    pool: IdlePool,
    /// The request had a body: it may still be going out when the answer ended (Ollama answered
    /// early), and nobody would send the rest from the pool.
    with_body: bool,
}

impl Lease {
    /// Drives the connection and polls `f` in one go (see [`Driven::poll_with`]).
    pub fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnMut(&mut Driven, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.driven.poll_with(cx, f)
    }

    /// The response was read to the end: the connection may serve another request.
    pub fn give_back(mut self) {
        if self.driven.conn.is_none() {
            return; // Ollama closed it (Connection: close)
        }
        // Ready only once the request's body is all out too; one that is not is closed.
        if self.with_body && !self.driven.poll_idle() {
            return;
        }
        let mut idle = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_MAX {
            idle.push_back((self.driven, self.watch, Instant::now()));
        }
    }
}

/// The resource named by an error that comes from the proxy's own limits, not from the network.
pub fn local_shortage(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error()? {
        libc::EMFILE | libc::ENFILE => Some("file descriptors"),
        libc::ENOMEM => Some("memory"),
        libc::ENOBUFS => Some("network buffers"),
        libc::EADDRNOTAVAIL => Some("local ports"),
        _ => None,
    }
}

/// Whether this process can open no more descriptors right now (tried with a socket, closed at
/// once): after a failure whose error does not say why.
pub(crate) fn out_of_descriptors() -> Option<&'static str> {
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None);
    probe.err().and_then(|e| local_shortage(&e))
}

/// Decides whether a failed request can be sent again.
fn classify(err: &hyper::Error, reused: bool, idempotent: bool) -> SendFailure {
    let text = crate::error::chain(err);
    // TCP_USER_TIMEOUT (the backstop behind the watch) fires only while sent data is unacknowledged
    // (keep-alive probes are off); the connection then fails with ETIMEDOUT, or with the soft error
    // seen meanwhile (no ARP answer from a suspended host gives EHOSTUNREACH).
    let unacked = [
        libc::ETIMEDOUT,
        libc::EHOSTUNREACH,
        libc::ENETUNREACH,
        libc::EHOSTDOWN,
    ];
    if io_source(err)
        .and_then(|e| e.raw_os_error())
        .is_some_and(|code| unacked.contains(&code))
    {
        return SendFailure::Unacked(text);
    }
    // The connection was found closed before the request was written.
    if reused && err.is_canceled() {
        return SendFailure::Stale(text);
    }
    // Closed (or reset) by the server with no answer at all: the keep-alive race.
    let reset = io_source(err)
        .and_then(|e| e.raw_os_error())
        .is_some_and(|code| matches!(code, libc::ECONNRESET | libc::EPIPE));
    if reused && idempotent && (err.is_incomplete_message() || reset) {
        return SendFailure::ClosedWhileIdle(text);
    }
    SendFailure::Failed(text)
}

fn io_source(err: &hyper::Error) -> Option<&io::Error> {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests;
