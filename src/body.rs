//! Ollama's response body passed on frame by frame with a silence limit and an optional copy for
//! the cache (see "Streaming" and "Timeouts" in docs/behaviour.md); request bodies are in
//! [`crate::request`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a whole (small) answer from Ollama with the silence limit; read to the end, its connection
/// goes back to the pool.
pub async fn read_all(
    resp: hyper::Response<Incoming>,
    lease: crate::upstream::Lease,
    silence: Duration,
) -> Result<Bytes, BoxError> {
    use http_body_util::BodyExt;
    let body = UpstreamBody::new(resp.into_body(), lease, silence, 0, None);
    Ok(body.collect().await?.to_bytes())
}

/// Called with the whole body when it ended cleanly (and fit the capture limit).
pub type OnEnd = Box<dyn FnOnce(Option<Bytes>) + Send>;

/// Ollama's response body: frames pass through untouched as they arrive.
pub struct UpstreamBody {
    inner: Incoming,
    silence: Duration,
    /// When the silence limit runs out: `silence` after the headers or the last frame.
    deadline: Instant,
    /// Made the first time the body has to wait: a body that is complete when asked (most small
    /// answers) never registers a timer.
    timer: Option<Pin<Box<Sleep>>>,
    capture: Option<Capture>,
    on_end: Option<OnEnd>,
    lease: Option<crate::upstream::Lease>,
}

/// A copy of the body for `on_end`, up to a limit: the first frame is shared (most answers that
/// are kept come in one), later ones are copied into one buffer.
struct Capture {
    limit: usize,
    first: Bytes,
    more: BytesMut,
}

impl Capture {
    /// Adds `data`; `false` once the body is over the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        let len = self.first.len() + self.more.len();
        if len + data.len() > self.limit {
            return false;
        }
        if len == 0 {
            self.first = data.clone();
        } else {
            if self.more.is_empty() {
                self.more
                    .extend_from_slice(&std::mem::take(&mut self.first));
            }
            self.more.extend_from_slice(data);
        }
        true
    }

    fn finish(self) -> Bytes {
        if self.more.is_empty() {
            self.first
        } else {
            self.more.freeze()
        }
    }
}

/// The silence limit was reached mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("Ollama sent nothing for {0:?}")]
pub struct Silence(Duration);

impl UpstreamBody {
    /// `capture_limit`: keep a copy of up to this many bytes for `on_end` (0 = no copy); `lease`
    /// goes back to the pool when the body ends cleanly.
    pub fn new(
        inner: Incoming,
        lease: crate::upstream::Lease,
        silence: Duration,
        capture_limit: usize,
        on_end: Option<OnEnd>,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            silence,
            deadline: Instant::now() + silence,
            timer: None,
            capture: (capture_limit > 0).then(|| Capture {
                limit: capture_limit,
                first: Bytes::new(),
                more: BytesMut::new(),
            }),
            on_end,
            lease: Some(lease),
        };
        // hyper never polls a body that is empty from the start.
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }
}

impl UpstreamBody {
    /// The timer, made or moved to the current deadline.
    fn silence_timer(&mut self) -> Pin<&mut Sleep> {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut()
    }

    /// The body ended cleanly: hand the copy to `on_end` (once).
    fn finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
        if let Some(on_end) = self.on_end.take() {
            on_end(self.capture.take().map(Capture::finish));
        }
    }

    /// The next frame of `inner`, the connection driven by this poll: what it has read is passed on
    /// at once, and what arrived together comes out in one poll (the connection has no task of
    /// its own: see `upstream::Driven`).
    fn next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let inner = &mut self.inner;
        let Some(lease) = self.lease.as_mut() else {
            return Pin::new(inner).poll_frame(cx);
        };
        lease.poll_with(cx, |driven, cx| {
            if let Poll::Ready(frame) = Pin::new(&mut *inner).poll_frame(cx) {
                return Poll::Ready(frame);
            }
            // Asked for more above: the connection reads it now, if it is there.
            driven.drive(cx);
            Pin::new(&mut *inner).poll_frame(cx)
        })
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.next_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline = Instant::now() + this.silence;
                if let (Some(data), Some(capture)) = (frame.data_ref(), this.capture.as_mut()) {
                    if !capture.push(data) {
                        this.capture = None;
                    }
                }
                // hyper stops polling once the body says it has ended: finish now.
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.on_end = None;
                tracing::warn!(error = %e, "Ollama's response broke off");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match this.silence_timer().poll(cx) {
                Poll::Ready(()) => {
                    this.on_end = None;
                    tracing::warn!(silence = ?this.silence, "Ollama went silent mid-response; cutting the stream");
                    Poll::Ready(Some(Err(Box::new(Silence(this.silence)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
