//! Bodies: request bodies buffered for replay up to MAX_HELD_BODY (see "Request bodies" in
//! docs/behaviour.md), and Ollama's response body passed on frame by frame with a silence limit and
//! an optional copy for the cache (see "Streaming" and "Timeouts").

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;

use axum::body::BodyDataStream;
use http_body::Body as _;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The memory that all buffered request bodies may use together (see "Body budget" in
/// docs/behaviour.md): one permit per byte.
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: u64,
}

/// Bytes of the budget held by one buffered body; given back when dropped.
pub type BudgetPermit = OwnedSemaphorePermit;

impl Budget {
    pub fn new(total: u64) -> Self {
        let permits = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            bytes: Arc::new(Semaphore::new(permits)),
            total,
        }
    }

    /// The configured size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The configured size as written in the configuration, e.g. `256MiB`.
    pub fn describe(&self) -> String {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        UNITS
            .iter()
            .find(|(size, _)| self.total >= *size && self.total % size == 0)
            .map(|(size, unit)| format!("{}{unit}", self.total / size))
            .unwrap_or_else(|| self.total.to_string())
    }

    /// `n` more bytes added to `held`, if the budget has them now (never waits).
    fn take(&self, held: &mut Option<BudgetPermit>, n: u64) -> bool {
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        match Arc::clone(&self.bytes).try_acquire_many_owned(n) {
            Ok(p) => {
                match held {
                    Some(h) => h.merge(p),
                    None => *held = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Why a request body could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client's body broke off or was malformed.
    #[error("cannot read the request body: {0}")]
    Body(BoxError),
    /// The body would have to be held, and the budget has no room for it.
    #[error("the body budget is used up")]
    OverBudget,
}

/// A request body as the proxy holds it.
pub enum ReqBody {
    /// Small enough to keep: can be sent again.
    Buffered(Bytes),
    /// Too large to keep (or no budget left): streamed once.
    Streaming(Body),
    /// A streamed body that was already handed to a connection.
    Spent,
}

/// A body streamed after its first chunks were read.
fn resume(head: Vec<Bytes>, rest: BodyDataStream) -> ReqBody {
    let head = futures_util::stream::iter(head.into_iter().map(Ok::<_, axum::Error>));
    ReqBody::Streaming(Body::from_stream(head.chain(rest)))
}

impl ReqBody {
    /// Reads `body` into memory when it is at most `limit` bytes and `budget` has room for it;
    /// otherwise keeps streaming it. A declared `Content-Length` above the limit is not read at all
    /// (back-pressure while held). With `must_hold` (Ollama is asleep), a body the budget has no
    /// room for is refused instead of streamed.
    pub async fn read(
        body: Body,
        content_length: Option<u64>,
        limit: u64,
        budget: &Budget,
        must_hold: bool,
    ) -> Result<(Self, Option<BudgetPermit>), ReadError> {
        if content_length.is_some_and(|n| n > limit) {
            return Ok((ReqBody::Streaming(body), None));
        }
        let mut permit = None;
        if let Some(n) = content_length {
            if !budget.take(&mut permit, n) {
                return match must_hold {
                    true => Err(ReadError::OverBudget),
                    false => Ok((ReqBody::Streaming(body), None)),
                };
            }
            let bytes = read_declared(body, n).await?;
            return Ok((ReqBody::Buffered(bytes), permit));
        }
        let (mut chunks, mut len) = (Vec::new(), 0u64);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ReadError::Body(e.into()))?;
            len += chunk.len() as u64;
            let room = len <= limit && budget.take(&mut permit, chunk.len() as u64);
            chunks.push(chunk);
            if !room {
                if len <= limit && must_hold {
                    return Err(ReadError::OverBudget);
                }
                return Ok((resume(chunks, stream), None));
            }
        }
        Ok((ReqBody::Buffered(concat(chunks, len)), permit))
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

/// Reads a body whose length was declared into one buffer of exactly that size.
async fn read_declared(body: Body, declared: u64) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| ReadError::Body(e.into()))?);
    }
    Ok(buf.freeze())
}

/// The chunks of a body as one buffer (no copy for a single chunk).
fn concat(mut chunks: Vec<Bytes>, len: u64) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    for c in chunks {
        buf.extend_from_slice(&c);
    }
    buf.freeze()
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

    async fn read(body: &'static str, len: Option<u64>, budget: &Budget, hold: bool) -> ReqBody {
        ReqBody::read(Body::from(body), len, 16, budget, hold)
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn small_bodies_are_kept_large_ones_stream() {
        let budget = Budget::new(1 << 20);
        let mut b = read("hello", Some(5), &budget, false).await;
        assert!(b.replayable());
        for _ in 0..2 {
            let bytes = axum::body::to_bytes(b.take(), 100).await.unwrap();
            assert_eq!(&bytes[..], b"hello");
        }
        let mut b = read("0123456789abcdefXYZ", None, &budget, false).await;
        assert!(!b.replayable());
        let bytes = axum::body::to_bytes(b.take(), 100).await.unwrap();
        assert_eq!(&bytes[..], b"0123456789abcdefXYZ");
        assert!(axum::body::to_bytes(b.take(), 100)
            .await
            .unwrap()
            .is_empty());
        let b = read("0123456789abcdefXYZ", Some(19), &budget, false).await;
        assert!(matches!(b, ReqBody::Streaming(_)));
    }

    #[tokio::test]
    async fn the_budget_is_shared_and_given_back() {
        let budget = Budget::new(10);
        let (b, permit) = ReqBody::read(Body::from("0123456"), Some(7), 16, &budget, true)
            .await
            .unwrap();
        assert!(b.replayable() && permit.is_some());
        // No room for 7 more: streamed while awake, refused while asleep.
        let mut s = read("abcdefg", Some(7), &budget, false).await;
        assert!(!s.replayable());
        assert_eq!(
            &axum::body::to_bytes(s.take(), 100).await.unwrap()[..],
            b"abcdefg"
        );
        let full = ReqBody::read(Body::from("abcdefg"), None, 16, &budget, true).await;
        assert!(matches!(full, Err(ReadError::OverBudget)));
        drop(permit);
        assert!(read("abcdefg", None, &budget, true).await.replayable());
        assert_eq!(Budget::new(256 << 20).describe(), "256MiB");
        assert_eq!(Budget::new(1000).describe(), "1000");
    }
}
