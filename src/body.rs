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
    timer: Pin<Box<Sleep>>,
    capture: Option<(BytesMut, usize)>,
    on_end: Option<OnEnd>,
    lease: Option<crate::upstream::Lease>,
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
            timer: Box::pin(tokio::time::sleep(silence)),
            capture: (capture_limit > 0).then(|| (BytesMut::new(), capture_limit)),
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
    /// The body ended cleanly: hand the copy to `on_end` (once).
    fn finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
        if let Some(on_end) = self.on_end.take() {
            on_end(self.capture.take().map(|(b, _)| b.freeze()));
        }
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = Instant::now() + this.silence;
                this.timer.as_mut().reset(deadline);
                if let (Some(data), Some((buf, limit))) = (frame.data_ref(), this.capture.as_mut())
                {
                    if buf.len() + data.len() <= *limit {
                        buf.extend_from_slice(data);
                    } else {
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
            Poll::Pending => match this.timer.as_mut().poll(cx) {
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
