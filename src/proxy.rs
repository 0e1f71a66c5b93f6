//! Forwarding one request to Ollama: connect, hold and replay when asleep, time out (see
//! "Forwarding", "Timeouts" and "Holding and replay" in docs/behaviour.md).

use crate::monitor::metrics::UpstreamError;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::{self, PathAndQuery};
use axum::http::{HeaderMap, HeaderValue, Method, Response, Uri};
use hyper::body::Incoming;

use crate::body::{OnEnd, UpstreamBody};
use crate::driver::{Cause, Driver};
use crate::error::ProxyError;
use crate::headers;
use crate::outbound::{exchange, Ack, Announce, Late, Progress};
use crate::request::{BudgetPermit, ReqBody};
use crate::routes::Patience;
use crate::throttle::SharedThrottle;
use crate::upstream::{Client, ConnectError, Lease, SendFailure};

/// How many times one request may be held (a released request whose connect fails again is held
/// once more; after that it gets 503).
const MAX_HOLDS: u32 = 2;
/// One warning per interval when the proxy lacks descriptors, memory or ports to reach Ollama.
static OUT_OF_RESOURCES: SharedThrottle = SharedThrottle::new();
/// Attempts of one request in all (holds, retries), whatever happens meanwhile.
const MAX_ROUNDS: u32 = 8;
/// Immediate retries on a pooled connection that the server had closed.
const MAX_STALE_RETRIES: u32 = 3;

/// The timeouts of "Timeouts" in docs/behaviour.md.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub simple: Duration,
    pub model: Duration,
}

impl Timeouts {
    /// Limit to response headers, and the option that sets it.
    fn headers(&self, p: Patience) -> (Duration, &'static str) {
        match p {
            Patience::Simple => (self.simple, "--timeout (TIMEOUT_SECONDS)"),
            Patience::Model => (self.model, "--model-timeout (MODEL_TIMEOUT_SECONDS)"),
        }
    }
}

/// A request on its way to Ollama.
pub struct Outgoing {
    pub method: Method,
    /// Path and query as the client sent them.
    pub path_and_query: PathAndQuery,
    /// The request target on Ollama: the path prefix (if any) and `path_and_query`.
    pub target: Uri,
    /// Already rewritten for Ollama.
    pub headers: HeaderMap,
    pub body: ReqBody,
    pub cause: Cause,
    pub patience: Patience,
    /// The share of the body budget a buffered body holds while the request lives.
    pub budget: Option<BudgetPermit>,
}

/// Why forwarding did not produce Ollama's answer.
#[derive(Debug)]
pub enum Failure {
    /// Ollama could not be reached and the request was not allowed to wake it.
    Unreachable(String),
    /// An error for the client.
    Error(ProxyError),
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Self {
        Failure::Error(e)
    }
}

/// Where a request goes on Ollama.
pub struct Target<'a> {
    /// Ollama's path prefix (often empty).
    pub prefix: &'a str,
    /// Ollama's `Host` value ([`headers::host_value`]).
    pub host: Option<&'a HeaderValue>,
}

impl Target<'_> {
    /// `path_and_query` on Ollama, in origin form. Without a prefix the client's own bytes are
    /// shared, not copied.
    pub fn uri(&self, path_and_query: &PathAndQuery) -> Result<Uri, ProxyError> {
        let path = if self.prefix.is_empty() {
            path_and_query.clone()
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.prefix))
                .map_err(|e| ProxyError::Upstream(format!("cannot build the request: {e}")))?
        };
        let mut parts = uri::Parts::default();
        parts.path_and_query = Some(path);
        Uri::from_parts(parts)
            .map_err(|e| ProxyError::Upstream(format!("cannot build the request: {e}")))
    }
}

impl Outgoing {
    /// A `GET` of `path` the proxy makes itself on a client's behalf (`/api/tags` for
    /// `/v1/models`, `/api/ps` of each machine), with no body.
    pub fn get(path: &'static str, cause: Cause, target: Target<'_>) -> Result<Self, ProxyError> {
        let mut headers = HeaderMap::new();
        headers::upstream_request(&mut headers, cause.client.ip(), target.host);
        let path_and_query = PathAndQuery::from_static(path);
        Ok(Outgoing {
            method: Method::GET,
            target: target.uri(&path_and_query)?,
            path_and_query,
            headers,
            body: ReqBody::Buffered(bytes::Bytes::new()),
            cause,
            patience: Patience::Simple,
            budget: None,
        })
    }

    pub fn new(
        parts: axum::http::request::Parts,
        body: ReqBody,
        cause: Cause,
        target: Target<'_>,
        patience: Patience,
    ) -> Result<Self, ProxyError> {
        let mut h = parts.headers;
        headers::upstream_request(&mut h, cause.client.ip(), target.host);
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Outgoing {
            method: parts.method,
            target: target.uri(&path_and_query)?,
            path_and_query,
            headers: h,
            body,
            cause,
            patience,
            budget: None,
        })
    }

    /// Sends the request to another machine instead (its `Host` and path prefix).
    pub fn retarget(&mut self, target: Target<'_>) -> Result<(), ProxyError> {
        self.target = target.uri(&self.path_and_query)?;
        match target.host {
            Some(host) => self.headers.insert(axum::http::header::HOST, host.clone()),
            None => self.headers.remove(axum::http::header::HOST),
        };
        Ok(())
    }

    /// The request for one attempt, and what follows its body going out (`None`: it has no body,
    /// so it is out at once). The headers are copied (a retry needs them again); their values
    /// share their bytes.
    fn request(&mut self) -> (hyper::Request<Body>, Option<Arc<Progress>>) {
        let body = self.body.take();
        let (body, progress) = if http_body::Body::is_end_stream(&body) {
            (body, None)
        } else {
            let progress = Progress::new();
            let body = Body::new(Announce::new(body, Arc::clone(&progress)));
            (body, Some(progress))
        };
        let mut req = hyper::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.target.clone();
        *req.headers_mut() = self.headers.clone();
        (req, progress)
    }
}

/// Sends `out` to Ollama. With `may_wake`, an asleep or unreachable Ollama holds the request, wakes
/// Ollama and replays; without, it returns [`Failure::Unreachable`].
pub async fn forward(
    driver: &Arc<Driver>,
    client: &Client,
    timeouts: Timeouts,
    out: &mut Outgoing,
    may_wake: bool,
) -> Result<Answer, Failure> {
    let may_wake = may_wake && driver.can_wake();
    // A request that may not wake does not knock on a machine that sleeps or is going to sleep:
    // even SYNs can wake a network card, and a suspending machine would cut the request.
    if !may_wake && driver.can_wake() && driver.state().holds() {
        return Err(Failure::Unreachable("Ollama is asleep".into()));
    }
    let mut holds = 0;
    let mut stale_retries = 0;
    // After a reused connection broke without an answer, the one retry goes on a new connection.
    let mut fresh_only = false;
    let mut must_hold = may_wake && driver.state().holds();
    if may_wake && !must_hold {
        driver.early_wake(&out.cause);
    }
    let mut rounds = 0;
    // The release of the next held request, kept across a second try on a new connection.
    let mut carried = None;
    loop {
        let mut ack = carried.take();
        rounds += 1;
        if must_hold && (holds >= MAX_HOLDS || rounds > MAX_ROUNDS) {
            return Err(ProxyError::Asleep(
                "Ollama was unreachable again after waking".into(),
                driver.retry_after(),
            )
            .into());
        }
        if std::mem::take(&mut must_hold) {
            match driver.hold(&out.cause)? {
                Some(ticket) => {
                    holds += 1;
                    tracing::debug!(path = %out.path_and_query, "held until Ollama wakes");
                    ack = Some(ticket.wait().await?);
                }
                None => {
                    tracing::debug!(path = %out.path_and_query, "Ollama woke meanwhile: not held")
                }
            }
        }
        let conn = if out.body.replayable() && !fresh_only {
            client.checkout().await
        } else {
            // A body that can be sent only once never goes on a connection that may be stale.
            client.connect().await
        };
        // The next held request goes once this one is on its way: its whole body handed to the
        // connection and written from there when it can be replayed, else as soon as it is
        // connected (see "Holding and replay" in docs/behaviour.md).
        let ack = match ack {
            Some(ack) if !out.body.replayable() || conn.is_err() => {
                let _ = ack.send(());
                None
            }
            other => other,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(ConnectError::Local(resource)) => {
                // Our own shortage says nothing about Ollama: no state change, no wake.
                if let Some(skipped) = OUT_OF_RESOURCES.due() {
                    tracing::warn!(resource, skipped, path = %out.path_and_query, "cannot connect to Ollama: the proxy is out of {resource}");
                }
                return Err(ProxyError::OutOfResource(resource).into());
            }
            Err(e) => {
                driver.watch.upstream_error(UpstreamError::Connect);
                driver.unreachable();
                if may_wake {
                    tracing::debug!(error = %e, "Ollama unreachable; holding the request");
                    must_hold = true;
                    continue;
                }
                return Err(Failure::Unreachable(e.to_string()));
            }
        };
        // A released request is on its way once its connection wrote it: the next one cannot
        // overtake it on another connection (see "Holding and replay").
        let mut ack = ack.map(|tx| Ack::new(tx, conn.watch().clone()));
        let (req, progress) = out.request();
        let (limit, option) = timeouts.headers(out.patience);
        let send = std::pin::pin!(client.send(conn, req));
        let sent = exchange(send, progress.as_deref(), &mut ack, limit, timeouts.model);
        match sent.await {
            Err(Late::Answer(after)) => {
                driver.watch.upstream_error(UpstreamError::Timeout);
                return Err(ProxyError::Timeout { option, after }.into());
            }
            Err(Late::Upload(after)) => {
                driver.watch.upstream_error(UpstreamError::Timeout);
                let option = "--model-timeout (MODEL_TIMEOUT_SECONDS)";
                return Err(ProxyError::Timeout { option, after }.into());
            }
            Ok(Ok(answer)) => {
                driver.answered();
                return Ok(answer);
            }
            Ok(Err(SendFailure::Stale(why))) if stale_retries < MAX_STALE_RETRIES => {
                tracing::debug!(error = %why, "pooled connection was closed; retrying on a new one");
                stale_retries += 1;
                carried = ack.map(Ack::into_sender);
            }
            Ok(Err(SendFailure::ClosedWhileIdle(why))) if !fresh_only => {
                tracing::debug!(path = %out.path_and_query, error = %why, "Ollama closed a reused connection without answering; sending once more on a new one");
                fresh_only = true;
                carried = ack.map(Ack::into_sender);
            }
            Ok(Err(SendFailure::UnackedAfterPart(why))) => {
                tracing::warn!(path = %out.path_and_query, error = %why, "Ollama stopped acknowledging after part of the request: not sent again");
                driver.watch.upstream_error(UpstreamError::Unacked);
                driver.unreachable();
                let reason = format!("Ollama stopped answering after part of the request ({why}); it may have received it, so it is not sent again");
                return Err(ProxyError::Upstream(reason).into());
            }
            Ok(Err(SendFailure::Unacked(why))) => {
                tracing::info!(path = %out.path_and_query, error = %why, "Ollama stopped acknowledging (asleep?)");
                driver.watch.upstream_error(UpstreamError::Unacked);
                driver.unreachable();
                if !out.body.replayable() {
                    // Too large to hold (see "Request bodies"); the client retries while the wake
                    // goes on.
                    if may_wake {
                        driver.wake(&out.cause);
                    }
                    let reason =
                        format!("the connection broke before Ollama received the request ({why})");
                    return Err(ProxyError::Asleep(reason, driver.retry_after()).into());
                }
                if !may_wake {
                    return Err(Failure::Unreachable(why));
                }
                must_hold = true;
            }
            Ok(Err(
                SendFailure::Stale(why)
                | SendFailure::ClosedWhileIdle(why)
                | SendFailure::Failed(why),
            )) => {
                driver.watch.upstream_error(UpstreamError::Protocol);
                return Err(ProxyError::Upstream(why).into());
            }
        }
    }
}

/// Ollama's response and the connection it came on.
pub type Answer = (hyper::Response<Incoming>, Lease);

/// Ollama's response for the client: hop-by-hop headers removed, body streamed with the silence
/// limit; `on_end` sees the body (up to `capture` bytes) when it ends cleanly.
pub fn respond(
    (resp, lease): Answer,
    silence: Duration,
    capture: usize,
    on_end: Option<OnEnd>,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        Body::new(UpstreamBody::new(body, lease, silence, capture, on_end)),
    )
}
