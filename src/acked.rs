//! Whether Ollama acknowledges what the proxy sent: `TCP_INFO` read on a connection while a request
//! waits for its answer (see "Asleep under a connection" in docs/behaviour.md).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A connection to Ollama that the watcher can still look at while hyper owns it.
pub(crate) struct Shared(Arc<TcpStream>);

impl Shared {
    /// The stream for hyper, and a handle that sees it only while it is open.
    pub(crate) fn new(stream: TcpStream) -> (Shared, Watch) {
        let stream = Arc::new(stream);
        let watch = Watch(Arc::downgrade(&stream));
        (Shared(stream), watch)
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &*self.0;
        loop {
            std::task::ready!(stream.poll_read_ready(cx))?;
            // SAFETY: as tokio's own TcpStream does: `try_read` only writes into the slice, and the
            // `n` bytes it reports are then initialised.
            let unfilled =
                unsafe { &mut *(buf.unfilled_mut() as *mut [MaybeUninit<u8>] as *mut [u8]) };
            let len = unfilled.len();
            let mut got = 0;
            // A short read shows the socket drained: its readiness is cleared (as tokio's own
            // streams do), so hyper's next read waits for the next event instead of asking the
            // kernel for nothing. `try_io` clears it only if no event came since it looked.
            let read = stream.try_io(Interest::READABLE, || {
                got = stream.try_read(unfilled)?;
                if 0 < got && got < len {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(got)
                }
            });
            match read {
                // Bytes (a short read says WouldBlock to clear the readiness), or the end.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            // SAFETY: the kernel wrote these `got` bytes.
            unsafe { buf.assume_init(got) };
            buf.advance(got);
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match shut {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

/// What `TCP_INFO` says about the data the proxy sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acks {
    /// Segments sent and not acknowledged.
    pub unacked: u32,
    /// Zero-window probes sent and not answered.
    pub probes: u8,
    /// Time since the last acknowledgement of anything (window probes included).
    pub since_ack: Duration,
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} segments unacknowledged, {} window probes unanswered, last acknowledgement {} ms ago",
            self.unacked,
            self.probes,
            self.since_ack.as_millis()
        )
    }
}

/// Whether the host stopped acknowledging: data segments wait for an acknowledgement, none came
/// for `limit`, and the request has been out that long. Window probes do not count: a receiver
/// that keeps its window shut (a slow Ollama) may leave them unanswered for seconds (Linux rate-limits
/// those answers), so a window shut on a host that then sleeps is left to the kernel's
/// TCP_USER_TIMEOUT.
pub(crate) fn stalled(acks: Acks, watched: Duration, limit: Duration) -> bool {
    watched >= limit && acks.since_ack >= limit && acks.unacked > 0
}

/// How often `TCP_INFO` is read while a request waits: a fraction of the limit, so the decision
/// comes at most this much after it.
fn step(limit: Duration) -> Duration {
    (limit / 8).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

/// Steps without a watch after which the ticker stops (it starts again with the next watch).
const LINGER: u32 = 8;

/// One clock for all the watches of a client, each [`step`]: a request answered before the next
/// tick costs no timer of its own (registering one that is due sooner than every other timer wakes
/// the runtime's I/O driver: two system calls per request). It runs while watches wait and for
/// [`LINGER`] steps after the last one.
#[derive(Debug)]
pub(crate) struct Ticker {
    /// Bytes unacknowledged this long mean the host stopped answering (CONNECT_TIMEOUT).
    limit: Duration,
    tick: Notify,
    /// Watches waiting for a tick.
    waiting: AtomicUsize,
    /// Whether the task that ticks runs.
    running: AtomicBool,
}

impl Ticker {
    pub(crate) fn new(limit: Duration) -> Arc<Ticker> {
        Arc::new(Ticker {
            limit,
            tick: Notify::new(),
            waiting: AtomicUsize::new(0),
            running: AtomicBool::new(false),
        })
    }

    /// Counts a watch in until the guard is dropped; starts the ticking task if it was stopped.
    fn enter(self: &Arc<Self>) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).run());
        }
        Waiting(self)
    }

    /// Ticks each step until no watch waited for [`LINGER`] steps.
    async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(step(self.limit));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut quiet = 0;
        loop {
            every.tick().await;
            self.tick.notify_waiters();
            quiet = if self.waiting.load(Ordering::SeqCst) > 0 {
                0
            } else {
                quiet + 1
            };
            if quiet < LINGER {
                continue;
            }
            self.running.store(false, Ordering::SeqCst);
            // A watch that came in meanwhile either saw it stopped (and started another) or sees
            // it running again.
            if self.waiting.load(Ordering::SeqCst) == 0 || self.running.swap(true, Ordering::SeqCst)
            {
                return;
            }
            quiet = 0;
        }
    }
}

/// One watch counted in by [`Ticker::enter`].
struct Waiting<'a>(&'a Ticker);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Looks at a connection while it is open.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watch(Weak<TcpStream>);

impl Watch {
    fn acks(&self) -> Option<Acks> {
        let stream = self.0.upgrade()?;
        read_tcp_info(&stream).ok()
    }

    /// Resolves once bytes sent on this connection have waited the ticker's limit for an
    /// acknowledgement; never while they are acknowledged, nor once the connection is gone. Read
    /// at each tick: the first comes within a step, so the decision comes at most one step after
    /// the limit (see "Asleep under a connection" in docs/behaviour.md).
    pub(crate) async fn stalled(&self, ticker: &Arc<Ticker>) -> Acks {
        let start = tokio::time::Instant::now();
        let _waiting = ticker.enter();
        loop {
            ticker.tick.notified().await;
            match self.acks() {
                Some(acks) if stalled(acks, start.elapsed(), ticker.limit) => return acks,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Ends the connection at once, with a reset rather than retransmissions to a host that does
    /// not answer; hyper's task sees it closed.
    pub(crate) fn abort(&self) {
        if let Some(stream) = self.0.upgrade() {
            let sock = socket2::SockRef::from(&*stream);
            let _ = sock.set_linger(Some(Duration::ZERO));
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn read_tcp_info(stream: &TcpStream) -> io::Result<Acks> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is open (we hold the stream), `info` and `len` describe a buffer of
    // the right size, and the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Acks {
        unacked: info.tcpi_unacked,
        probes: info.tcpi_probes,
        since_ack: Duration::from_millis(u64::from(info.tcpi_last_ack_recv)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(unacked: u32, probes: u8, since_ack_ms: u64) -> Acks {
        Acks {
            unacked,
            probes,
            since_ack: Duration::from_millis(since_ack_ms),
        }
    }

    const LIMIT: Duration = Duration::from_secs(1);

    #[test]
    fn unacknowledged_data_for_the_limit_is_a_stall() {
        assert!(stalled(acks(1, 0, 1000), LIMIT, LIMIT));
        assert!(stalled(acks(3, 0, 5000), Duration::from_secs(2), LIMIT));
    }

    #[test]
    fn an_old_acknowledgement_is_not_a_stall_before_the_request_was_out_that_long() {
        // A pooled connection idle for 2.9 s: its last ACK is old, the request was just sent.
        assert!(!stalled(
            acks(1, 0, 2900),
            Duration::from_millis(300),
            LIMIT
        ));
    }

    #[test]
    fn everything_acknowledged_is_never_a_stall() {
        // Ollama thinking for minutes: nothing of ours waits.
        assert!(!stalled(
            acks(0, 0, 120_000),
            Duration::from_secs(120),
            LIMIT
        ));
    }

    #[test]
    fn a_closed_window_is_not_a_stall() {
        // Seen on loopback with a reader that pauses: one probe out, the last ACK 1,044 ms old.
        assert!(!stalled(acks(0, 1, 1044), Duration::from_secs(30), LIMIT));
    }

    #[test]
    fn recent_acknowledgements_are_progress() {
        assert!(!stalled(acks(5, 0, 10), Duration::from_secs(30), LIMIT));
    }

    #[test]
    fn the_step_is_a_fraction_of_the_limit() {
        assert_eq!(step(Duration::from_secs(1)), Duration::from_millis(125));
        assert_eq!(step(Duration::from_secs(60)), Duration::from_millis(250));
        assert_eq!(step(Duration::from_millis(50)), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_runs_while_watches_wait_then_stops_and_starts_again() {
        let ticker = Ticker::new(LIMIT);
        let within_a_step = step(LIMIT) + Duration::from_millis(1);
        {
            let _waiting = ticker.enter();
            let tick = tokio::time::timeout(within_a_step, ticker.tick.notified()).await;
            assert!(tick.is_ok(), "a waiting watch gets a tick within a step");
        }
        assert!(ticker.running.load(Ordering::SeqCst), "it lingers");
        tokio::time::sleep(step(LIMIT) * (LINGER + 2)).await;
        assert!(
            !ticker.running.load(Ordering::SeqCst),
            "it stops without watches"
        );
        let _waiting = ticker.enter();
        let tick = tokio::time::timeout(within_a_step, ticker.tick.notified()).await;
        assert!(tick.is_ok(), "the next watch starts it again");
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_connection_is_never_stalled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _peer = listener.accept().await.unwrap();
        let (_shared, watch) = Shared::new(stream);
        let ticker = Ticker::new(LIMIT);
        let waited = tokio::time::timeout(LIMIT * 3, watch.stalled(&ticker)).await;
        assert!(waited.is_err());
        assert_eq!(ticker.waiting.load(Ordering::SeqCst), 0, "the watch left");
    }

    #[tokio::test]
    async fn tcp_info_of_a_live_loopback_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _peer = listener.accept().await.unwrap();
        let got = read_tcp_info(&stream).unwrap();
        assert_eq!((got.unacked, got.probes), (0, 0));
        let (shared, watch) = Shared::new(stream);
        assert!(watch.acks().is_some());
        drop(shared);
        assert!(watch.acks().is_none(), "a closed connection is not read");
    }
}
