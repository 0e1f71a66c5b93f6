//! Request bodies (see "Request bodies" and "Body budget" in docs/behaviour.md): buffered for replay
//! up to MAX_HELD_BODY while the shared budget has room, else streamed once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
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

/// Slowest a buffered body may arrive, in bytes per second, after its first `silence` (a slow
/// link moves kilobytes per second; a slow-POST attack a few bytes).
const MIN_BODY_RATE: u64 = 500;

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
    /// The client stopped sending its body, or sent it slower than [`MIN_BODY_RATE`].
    #[error("the client sent no body data for {0:?}, or sent it too slowly")]
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

/// What has been read of a body so far, copied into one buffer of its own: the pieces hyper hands
/// over are slices of its read buffers, and keeping them would keep those buffers alive (a body
/// sent one byte per chunk would pin kilobytes per byte). The buffer grows by doubling, exactly
/// (so that what the budget is charged is what is allocated), up to the declared size or the
/// limit: a declared `Content-Length` alone allocates nothing.
struct Partial {
    buf: Vec<u8>,
    /// Largest size the buffer grows to: the declared size, else the limit.
    ceiling: usize,
}

/// Smallest buffer allocated for a body.
const FIRST_BUFFER: usize = 8 << 10;

/// A buffer whose bytes are sent as one chunk and whose share of the budget is given back when
/// that chunk is dropped.
struct Owned {
    buf: Vec<u8>,
    _permit: Option<BudgetPermit>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Partial {
    fn new(content_length: Option<u64>, limit: u64) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let declared = content_length.and_then(|n| usize::try_from(n).ok());
        Partial {
            buf: Vec::new(),
            ceiling: declared.map_or(limit, |n| n.min(limit)),
        }
    }

    fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The capacity the buffer needs for `more` bytes.
    fn capacity_for(&self, more: usize) -> usize {
        let need = self.buf.len().saturating_add(more);
        if need <= self.buf.capacity() {
            return self.buf.capacity();
        }
        need.max(self.buf.capacity().saturating_mul(2))
            .max(FIRST_BUFFER)
            .min(self.ceiling.max(need))
    }

    /// Memory that `more` bytes add: the growth of the buffer, which is what is allocated.
    fn cost(&self, more: usize) -> usize {
        self.capacity_for(more) - self.buf.capacity()
    }

    fn push(&mut self, chunk: &[u8]) {
        let want = self.capacity_for(chunk.len());
        if want > self.buf.capacity() {
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body so far followed by the rest of the client's stream, sent once. The part already
    /// read keeps its share of the budget until hyper is done with it.
    fn resume(
        self,
        rest: impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
        permit: Option<BudgetPermit>,
    ) -> ReqBody {
        let head = Bytes::from_owner(Owned {
            buf: self.buf,
            _permit: permit,
        });
        let head = futures_util::stream::iter([Ok::<_, axum::Error>(head)]);
        ReqBody::Streaming(Body::from_stream(head.chain(rest)))
    }

    /// The whole body.
    fn finish(self) -> Bytes {
        Bytes::from(self.buf)
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
        // No body at all (most requests): nothing to read, no timer to set.
        if http_body::Body::is_end_stream(&body) {
            return Ok((ReqBody::Buffered(Bytes::new()), None));
        }
        let mut permit = None;
        let mut partial = Partial::new(content_length, intake.limit);
        let mut stream = body.into_data_stream();
        let started = tokio::time::Instant::now();
        loop {
            // The silence limit, and a floor on the rate: a body trickling in a byte at a time
            // cannot keep its connection (and its share of the budget) for ever.
            let earned = Duration::from_millis(partial.len().saturating_mul(1000) / MIN_BODY_RATE);
            let deadline = started + intake.silence + earned;
            let wait = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(intake.silence);
            let next = tokio::time::timeout(wait, stream.next()).await;
            let chunk = match next {
                Err(_) => return Err(ReadError::Stalled(intake.silence)),
                Ok(None) => return Ok((ReqBody::Buffered(partial.finish()), permit)),
                Ok(Some(chunk)) => chunk.map_err(|e| ReadError::Body(e.into()))?,
            };
            let fits = partial.len() + chunk.len() as u64 <= intake.limit;
            let room = fits && intake.budget.take(&mut permit, partial.cost(chunk.len()));
            if !room {
                if fits && intake.must_hold {
                    return Err(ReadError::OverBudget);
                }
                let rest = futures_util::stream::iter([Ok(chunk)]).chain(stream);
                return Ok((partial.resume(rest, permit), None));
            }
            partial.push(&chunk);
        }
    }

    /// A buffered body can be sent again.
    pub(crate) fn replayable(&self) -> bool {
        matches!(self, ReqBody::Buffered(_))
    }

    /// The body for one attempt; a streamed body can be taken once.
    pub(crate) fn take(&mut self) -> Body {
        match std::mem::replace(self, ReqBody::Spent) {
            // `Body::empty()` allocates nothing; an empty `Full` would.
            ReqBody::Buffered(b) if b.is_empty() => {
                *self = ReqBody::Buffered(b);
                Body::empty()
            }
            ReqBody::Buffered(b) => {
                *self = ReqBody::Buffered(b.clone());
                Body::from(b)
            }
            ReqBody::Streaming(b) => b,
            ReqBody::Spent => Body::empty(),
        }
    }
}

#[cfg(test)]
mod tests;
