//! The connection hyper drives, shared with the watch of this module's parent so that it can read
//! `TCP_INFO` while the connection is open (see "Asleep under a connection" in docs/behaviour.md).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::Watch;

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
