//! Request bodies (see "Request bodies" and "Body budget" in docs/behaviour.md): buffered for replay
//! up to MAX_HELD_BODY while the shared budget has room, else streamed once; and the body wrapper
//! that tells a held request's successor when it may go.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The memory that all buffered request bodies may use together: one permit per byte.
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    total: u64,
}

/// Bytes of the budget held by one buffered body; given back when dropped.
pub(crate) type BudgetPermit = OwnedSemaphorePermit;

impl Budget {
    /// A budget of `total` bytes.
    pub(crate) fn new(total: u64) -> Self {
        let permits = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            bytes: Arc::new(Semaphore::new(permits)),
            total,
        }
    }

    /// The configured size in bytes.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The configured size as written in the configuration, e.g. `256MiB`.
    pub(crate) fn describe(&self) -> String {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        UNITS
            .iter()
            .find(|(size, _)| self.total >= *size && self.total % size == 0)
            .map(|(size, unit)| format!("{}{unit}", self.total / size))
            .unwrap_or_else(|| self.total.to_string())
    }

    /// `n` more bytes added to `held`, if the budget has them now (never waits).
    fn take(&self, held: &mut Option<BudgetPermit>, n: usize) -> bool {
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

/// How a request body is taken in.
pub(crate) struct Intake<'a> {
    /// MAX_HELD_BODY: larger bodies are streamed.
    pub limit: u64,
    /// Shared by every buffered body.
    pub budget: &'a Budget,
    /// Longest silence of the client while it sends its body.
    pub silence: Duration,
    /// Ollama is asleep: the body would be held, so it cannot be streamed instead.
    pub must_hold: bool,
}

/// Why a request body could not be taken in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The client's body broke off or was malformed.
    #[error("cannot read the request body: {0}")]
    Body(BoxError),
    /// The client stopped sending its body.
    #[error("the client sent no body data for {0:?}")]
    Stalled(Duration),
    /// The body would have to be held, and the budget has no room for it.
    #[error("the body budget is used up")]
    OverBudget,
}

/// A request body as the proxy holds it.
pub(crate) enum ReqBody {
    /// Small enough to keep: can be sent again.
    Buffered(Bytes),
    /// Too large to keep (or no budget left): streamed once.
    Streaming(Body),
    /// A streamed body that was already handed to a connection.
    Spent,
}

/// What has been read of a body so far.
struct Partial {
    /// One buffer of the declared size, filled as bytes come (pages are touched only when written).
    declared: Option<BytesMut>,
    /// Chunks as they came, when no size was declared.
    chunks: Vec<Bytes>,
    len: u64,
}

impl Partial {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len() as u64;
        match self.declared.as_mut() {
            Some(buf) => buf.extend_from_slice(&chunk),
            None => self.chunks.push(chunk),
        }
    }

    /// The body so far followed by the rest of the client's stream, sent once. The budget the
    /// part already read holds stays taken until that stream is done with.
    fn resume(self, rest: BodyDataStream, permit: Option<BudgetPermit>) -> ReqBody {
        let head = match self.declared {
            Some(buf) => vec![buf.freeze()],
            None => self.chunks,
        };
        let head = futures_util::stream::iter(head.into_iter().map(Ok::<_, axum::Error>));
        let body = head.chain(rest).map(move |chunk| {
            let _held = &permit;
            chunk
        });
        ReqBody::Streaming(Body::from_stream(body))
    }

    /// The whole body as one buffer (no copy for a declared size or a single chunk).
    fn finish(mut self) -> Bytes {
        if let Some(buf) = self.declared {
            return buf.freeze();
        }
        if self.chunks.len() == 1 {
            return self.chunks.pop().unwrap_or_default();
        }
        let mut buf = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
        for c in self.chunks {
            buf.extend_from_slice(&c);
        }
        buf.freeze()
    }
}

impl ReqBody {
    /// Reads `body` into memory when it is at most `intake.limit` bytes and the budget has room
    /// for every byte as it arrives; otherwise keeps streaming it. A declared `Content-Length` above
    /// the limit is not read at all (back-pressure while held). With `intake.must_hold`, a body the
    /// budget has no room for is refused instead of streamed.
    pub(crate) async fn read(
        body: Body,
        content_length: Option<u64>,
        intake: Intake<'_>,
    ) -> Result<(Self, Option<BudgetPermit>), ReadError> {
        if content_length.is_some_and(|n| n > intake.limit) {
            return Ok((ReqBody::Streaming(body), None));
        }
        let mut permit = None;
        let mut partial = Partial {
            declared: content_length
                .map(|n| BytesMut::with_capacity(usize::try_from(n).unwrap_or(0))),
            chunks: Vec::new(),
            len: 0,
        };
        let mut stream = body.into_data_stream();
        loop {
            let next = tokio::time::timeout(intake.silence, stream.next()).await;
            let chunk = match next {
                Err(_) => return Err(ReadError::Stalled(intake.silence)),
                Ok(None) => return Ok((ReqBody::Buffered(partial.finish()), permit)),
                Ok(Some(chunk)) => chunk.map_err(|e| ReadError::Body(e.into()))?,
            };
            let fits = partial.len + chunk.len() as u64 <= intake.limit;
            let room = fits && intake.budget.take(&mut permit, chunk.len());
            partial.push(chunk);
            if !room {
                if fits && intake.must_hold {
                    return Err(ReadError::OverBudget);
                }
                return Ok((partial.resume(stream, permit), None));
            }
        }
    }

    /// A buffered body can be sent again.
    pub(crate) fn replayable(&self) -> bool {
        matches!(self, ReqBody::Buffered(_))
    }

    /// The body for one attempt; a streamed body can be taken once.
    pub(crate) fn take(&mut self) -> Body {
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
pub(crate) struct Announce {
    inner: Body,
    done: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Announce {
    /// Wraps `inner`; `done` fires once its last frame was taken.
    pub(crate) fn new(inner: Body, done: tokio::sync::oneshot::Sender<()>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_secs(5);

    fn intake(budget: &Budget, must_hold: bool) -> Intake<'_> {
        Intake {
            limit: 16,
            budget,
            silence: SILENCE,
            must_hold,
        }
    }

    async fn read(body: &'static str, len: Option<u64>, budget: &Budget, hold: bool) -> ReqBody {
        ReqBody::read(Body::from(body), len, intake(budget, hold))
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
        let (b, permit) = ReqBody::read(Body::from("0123456"), Some(7), intake(&budget, true))
            .await
            .unwrap();
        assert!(b.replayable() && permit.is_some());
        // No room for 7 more: streamed while awake (holding what it read until sent), refused
        // while asleep.
        let mut s = read("abcdefg", Some(7), &budget, false).await;
        assert!(!s.replayable());
        assert_eq!(
            &axum::body::to_bytes(s.take(), 100).await.unwrap()[..],
            b"abcdefg"
        );
        let full = ReqBody::read(Body::from("abcdefg"), None, intake(&budget, true)).await;
        assert!(matches!(full, Err(ReadError::OverBudget)));
        drop(permit);
        assert!(read("abcdefg", None, &budget, true).await.replayable());
        assert_eq!(Budget::new(256 << 20).describe(), "256MiB");
        assert_eq!(Budget::new(1000).describe(), "1000");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_sending_is_cut_off() {
        let budget = Budget::new(1 << 20);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
        // Ten bytes declared, one sent, then nothing (the sender stays open).
        let read = ReqBody::read(body, Some(10), intake(&budget, false)).await;
        assert!(matches!(read, Err(ReadError::Stalled(SILENCE))));
        drop(tx);
    }
}
