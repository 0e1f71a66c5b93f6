//! One request on its way to Ollama: its body's progress, and the wait for the answer (see
//! "Timeouts" in docs/behaviour.md). While the body is still going out (a blob upload can take
//! minutes) only its silence is limited; the time to the answer counts from its last byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::acked::Watch;

/// How far a request body has gone out.
pub(crate) struct Progress {
    start: Instant,
    /// When hyper last took a frame, in ms since `start`.
    last_ms: AtomicU64,
    finished: AtomicBool,
    done: Notify,
}

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            done: Notify::new(),
        })
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Release);
    }

    fn finish(&self) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.done.notify_waiters();
        }
    }

    /// Time since hyper last took part of the body.
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once the whole body was taken.
    async fn finished(&self) {
        let notified = self.done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// A request body that reports its progress to a [`Progress`].
pub(crate) struct Announce {
    inner: Body,
    progress: Arc<Progress>,
}

impl Announce {
    pub(crate) fn new(inner: Body, progress: Arc<Progress>) -> Self {
        if inner.is_end_stream() {
            progress.finish();
        }
        Announce { inner, progress }
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
            Poll::Ready(None | Some(Err(_))) => self.progress.finish(),
            Poll::Ready(Some(Ok(_))) => {
                self.progress.touch();
                if self.inner.is_end_stream() {
                    self.progress.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.progress.finish();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    /// The body stopped going out for `silence`.
    Upload(Duration),
    /// No answer within `limit` after the body was out.
    Answer(Duration),
}

/// Tells the release that a held request is on its way (see "Holding and replay" in
/// docs/behaviour.md), so that the next one may go.
pub(crate) struct Ack {
    tx: oneshot::Sender<()>,
    /// The connection, and how many writes it had made before this request: the request is on its
    /// way once the connection wrote again.
    written: (Watch, u64),
}

impl Ack {
    /// For a request about to go on the connection `watch` looks at.
    pub(crate) fn new(tx: oneshot::Sender<()>, watch: Watch) -> Self {
        let mark = watch.writes();
        Ack {
            tx,
            written: (watch, mark),
        }
    }

    async fn written(&self) {
        let (watch, mark) = &self.written;
        watch.written_after(*mark).await;
    }

    pub(crate) fn fire(self) {
        let _ = self.tx.send(());
    }

    /// The release's channel, for a second try on another connection.
    pub(crate) fn into_sender(self) -> oneshot::Sender<()> {
        self.tx
    }
}

/// Waits for `send` (the exchange with Ollama): while the body is going out, at most `silence`
/// without progress; once it is out, at most `limit` for the answer. `ack` fires once the body is
/// out and the connection wrote it (the next held request may then go), or when a limit ran out;
/// when the answer (or a failure) came first it is left to the caller, who fires it, or keeps it
/// for a second try that must still go before the next request. Without `progress` the request
/// has no body: it is out at once, and only the answer's limit runs (one timer). `send` is pinned
/// by the caller, so that it is not kept twice in this future's state.
pub(crate) async fn exchange<T>(
    mut send: Pin<&mut impl Future<Output = T>>,
    progress: Option<&Progress>,
    ack: &mut Option<Ack>,
    limit: Duration,
    silence: Duration,
) -> Result<T, Late> {
    while let Some(progress) = progress {
        let quiet_until = Instant::now() + silence.saturating_sub(progress.idle());
        tokio::select! {
            answer = send.as_mut() => return Ok(answer),
            _ = progress.finished() => break,
            _ = tokio::time::sleep_until(quiet_until) => {
                if progress.idle() >= silence {
                    if let Some(ack) = ack.take() {
                        ack.fire();
                    }
                    return Err(Late::Upload(silence));
                }
            }
        }
    }
    let deadline = Instant::now() + limit;
    if let Some(waiting) = ack.as_ref() {
        tokio::select! {
            answer = send.as_mut() => return Ok(answer),
            () = waiting.written() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        if let Some(ack) = ack.take() {
            ack.fire();
        }
    }
    tokio::time::timeout_at(deadline, send)
        .await
        .map_err(|_| Late::Answer(limit))
}

/// A body fed through a channel, for tests: the test decides when (and whether) chunks come.
#[cfg(test)]
pub(crate) fn channel_body(
    capacity: usize,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    Body,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(capacity);
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (tx, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_request_is_on_its_way_only_once_its_connection_wrote() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _peer = listener.accept().await.unwrap();
        let (mut conn, watch) = crate::acked::Shared::new(stream);
        let (tx, mut rx) = oneshot::channel();
        let ack = Ack::new(tx, watch.clone());
        let never = std::future::pending::<()>();
        let exchange = tokio::spawn(async move {
            let mut ack = Some(ack);
            let limit = Duration::from_secs(60);
            exchange(std::pin::pin!(never), None, &mut ack, limit, limit).await
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            rx.try_recv().is_err(),
            "on its way before anything was written"
        );
        conn.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        rx.await.unwrap();
        exchange.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_answer_limit_counts_from_the_last_byte() {
        // A body that takes 10 s to go out, one frame a second; the answer 1 s after it.
        let progress = Progress::new();
        let (tx, body) = channel_body(1);
        let mut body = Announce::new(body, Arc::clone(&progress));
        let upload = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
            }
        };
        let drain = async move {
            use http_body_util::BodyExt;
            while let Some(Ok(_)) = body.frame().await {}
            tokio::time::sleep(Duration::from_secs(1)).await;
            "answer"
        };
        let send = async { tokio::join!(upload, drain).1 };
        let mut no_ack = None;
        let send = std::pin::pin!(send);
        let got = exchange(
            send,
            Some(&progress),
            &mut no_ack,
            Duration::from_secs(3),
            Duration::from_secs(2),
        );
        assert_eq!(got.await, Ok("answer"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_going_out_is_late() {
        let progress = Progress::new();
        let (_tx, body) = channel_body(1);
        let _body = Announce::new(body, Arc::clone(&progress));
        let never = std::pin::pin!(std::future::pending::<()>());
        let mut no_ack = None;
        let got = exchange(
            never,
            Some(&progress),
            &mut no_ack,
            Duration::from_secs(3),
            Duration::from_secs(2),
        );
        assert_eq!(got.await, Err(Late::Upload(Duration::from_secs(2))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_is_out_at_once() {
        let progress = Progress::new();
        let _body = Announce::new(Body::empty(), Arc::clone(&progress));
        let never = std::pin::pin!(std::future::pending::<()>());
        let mut no_ack = None;
        let got = exchange(
            never,
            Some(&progress),
            &mut no_ack,
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        assert_eq!(got.await, Err(Late::Answer(Duration::from_secs(3))));
        let mut no_ack = None;
        let pending = std::pin::pin!(std::future::pending::<()>());
        let no_body = exchange(
            pending,
            None,
            &mut no_ack,
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        assert_eq!(no_body.await, Err(Late::Answer(Duration::from_secs(3))));
    }
}
