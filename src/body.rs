//! Bodies: request bodies buffered for replay up to MAX_HELD_BODY (F4), and Ollama's response body
//! passed on frame by frame with a silence limit and an optional copy for the cache (F3, T1).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;

use http_body::Body as _;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the proxy holds it.
pub enum ReqBody {
    /// Small enough to keep: can be sent again.
    Buffered(Bytes),
    /// Too large to keep: streamed once.
    Streaming(Body),
    /// A streamed body that was already handed to a connection.
    Spent,
}

impl ReqBody {
    /// Reads `body` into memory when it is at most `limit` bytes; otherwise keeps streaming it.
    /// A declared `Content-Length` above the limit is not read at all (back-pressure while held).
    pub async fn read(
        body: Body,
        content_length: Option<u64>,
        limit: u64,
    ) -> Result<Self, BoxError> {
        if content_length.is_some_and(|n| n > limit) {
            return Ok(ReqBody::Streaming(body));
        }
        let mut buf = BytesMut::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > limit {
                let head = futures_util::stream::iter([Ok::<_, axum::Error>(buf.freeze())]);
                return Ok(ReqBody::Streaming(Body::from_stream(head.chain(stream))));
            }
        }
        Ok(ReqBody::Buffered(buf.freeze()))
    }

    pub fn replayable(&self) -> bool {
        matches!(self, ReqBody::Buffered(_))
    }

    /// The body for one attempt; a streamed body can be taken once.
    pub fn take(&mut self) -> Body {
        match std::mem::replace(self, ReqBody::Spent) {
            ReqBody::Buffered(b) => {
                *self = ReqBody::Buffered(b.clone());
                Body::from(b)
            }
            ReqBody::Streaming(b) => b,
            ReqBody::Spent => Body::empty(),
        }
    }
}

/// A request body that reports when hyper has taken all of it (so the next held request may go).
pub struct Announce {
    inner: Body,
    done: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Announce {
    pub fn new(inner: Body, done: tokio::sync::oneshot::Sender<()>) -> Self {
        Announce {
            inner,
            done: std::sync::Mutex::new(Some(done)),
        }
    }

    fn fire(&self) {
        let tx = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

impl http_body::Body for Announce {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.fire(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.fire(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.fire();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bodies_are_kept_large_ones_stream() {
        let mut b = ReqBody::read(Body::from("hello"), Some(5), 16)
            .await
            .unwrap();
        assert!(b.replayable());
        for _ in 0..2 {
            let bytes = axum::body::to_bytes(b.take(), 100).await.unwrap();
            assert_eq!(&bytes[..], b"hello");
        }
        let mut b = ReqBody::read(Body::from("0123456789abcdefXYZ"), None, 16)
            .await
            .unwrap();
        assert!(!b.replayable());
        let bytes = axum::body::to_bytes(b.take(), 100).await.unwrap();
        assert_eq!(&bytes[..], b"0123456789abcdefXYZ");
        assert!(axum::body::to_bytes(b.take(), 100)
            .await
            .unwrap()
            .is_empty());
        let b = ReqBody::read(Body::from("0123456789abcdefXYZ"), Some(19), 16)
            .await
            .unwrap();
        assert!(matches!(b, ReqBody::Streaming(_)));
    }
}
