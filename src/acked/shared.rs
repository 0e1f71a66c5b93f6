//! The connection hyper drives, shared with the watch of this module's parent so that it can read
//! `TCP_INFO` while the connection is open (see "Asleep under a connection" in docs/behaviour.md).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Watch;

/// The socket, and how many writes it took so far (a released request waits for its own write
/// before the next one goes: see "Holding and replay" in docs/behaviour.md).
pub(crate) struct Socket {
    pub(super) stream: TcpStream,
    writes: AtomicU64,
    /// Bytes written so far.
    sent: AtomicU64,
    /// `tcpi_bytes_acked` when the connection was handed over (the SYN counts): with `sent`,
    /// what "everything acknowledged" reads, without asking the kernel per request.
    acked_at_start: Option<u64>,
    /// How many wait for a write: only then does a write notify.
    listening: AtomicUsize,
    wrote: Notify,
}

impl Socket {
    fn wrote(&self, done: &io::Result<usize>) {
        if let Ok(n @ 1..) = done {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
            self.writes.fetch_add(1, Ordering::SeqCst);
            if self.listening.load(Ordering::SeqCst) > 0 {
                self.wrote.notify_waiters();
            }
        }
    }

    /// `tcpi_bytes_acked` once everything written so far is acknowledged.
    pub(super) fn all_acked(&self) -> Option<u64> {
        Some(self.acked_at_start? + self.sent.load(Ordering::Relaxed))
    }

    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Resolves once more than `mark` writes were made.
    pub(super) async fn written_after(&self, mark: u64) {
        let _listening = Listening::count(&self.listening);
        loop {
            let notified = self.wrote.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.writes() > mark {
                return;
            }
            notified.await;
        }
    }
}

/// One waiter for a write, counted while it waits.
struct Listening<'a>(&'a AtomicUsize);

impl<'a> Listening<'a> {
    fn count(listening: &'a AtomicUsize) -> Self {
        listening.fetch_add(1, Ordering::SeqCst);
        Listening(listening)
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection to Ollama that the watcher can still look at while hyper owns it.
pub(crate) struct Shared(Arc<Socket>);

impl Shared {
    /// The stream for hyper, and a handle that sees it only while it is open.
    pub(crate) fn new(stream: TcpStream) -> (Shared, Watch) {
        let acked_at_start = super::read_tcp_info(&stream).ok().map(|a| a.bytes_acked);
        let socket = Arc::new(Socket {
            stream,
            writes: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked_at_start,
            listening: AtomicUsize::new(0),
            wrote: Notify::new(),
        });
        let watch = Watch(Arc::downgrade(&socket));
        (Shared(socket), watch)
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.0.stream;
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
            std::task::ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => {
                    self.0.wrote(&done);
                    return Poll::Ready(done);
                }
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => {
                    self.0.wrote(&done);
                    return Poll::Ready(done);
                }
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
        let shut = socket2::SockRef::from(&self.0.stream).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match shut {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}
