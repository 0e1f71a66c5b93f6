//! Whether Ollama acknowledges what the proxy sent: `TCP_INFO` read on a connection while a request
//! waits for its answer (see "Asleep under a connection" in docs/behaviour.md).

mod shared;
mod ticker;
mod wait;

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpStream;

pub(crate) use shared::Shared;
use shared::Socket;
pub(crate) use ticker::Ticker;
use wait::Wait;

/// What `TCP_INFO` says about the data the proxy sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acks {
    /// Segments sent and not acknowledged.
    pub unacked: u32,
    /// Zero-window probes sent and not answered.
    pub probes: u8,
    /// Time since the last acknowledgement of anything (window probes included).
    pub since_ack: Duration,
    /// Bytes of this connection acknowledged so far.
    pub bytes_acked: u64,
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

/// How often `TCP_INFO` is read while a request waits: a fraction of the limit, so the decision
/// comes at most two of these after it.
fn step(limit: Duration) -> Duration {
    (limit / 16).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

/// Looks at a connection while it is open.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watch(pub(super) Weak<Socket>);

impl Watch {
    fn acks(&self) -> Option<Acks> {
        let socket = self.0.upgrade()?;
        read_tcp_info(&socket.stream).ok()
    }

    /// Bytes acknowledged once all written so far are, read before a request goes out: a stall
    /// later tells from it whether any of the request was acknowledged (a count, not a `TCP_INFO`
    /// read per request; read now only if the connection's first reading failed).
    pub(crate) fn acked_bytes(&self) -> Option<u64> {
        self.0
            .upgrade()?
            .all_acked()
            .or_else(|| self.acks().map(|a| a.bytes_acked))
    }

    /// Resolves once data sent on this connection has waited `limit` for an acknowledgement
    /// (see [`Wait`]); never while it is acknowledged, nor once the connection is gone.
    /// Read at each tick of the pool's [`Ticker`] (no timer of its own per request).
    pub(crate) async fn stalled(&self, ticker: &Arc<Ticker>, acked_before: u64) -> Acks {
        let start = tokio::time::Instant::now();
        let mut wait = Wait::new(acked_before);
        let _waiting = ticker.enter();
        loop {
            ticker.tick.notified().await;
            let Some(acks) = self.acks() else {
                return std::future::pending().await;
            };
            if wait.observe(acks, start.elapsed(), ticker.limit) {
                return acks;
            }
        }
    }

    /// How many writes the connection made so far (0 once it is gone).
    pub(crate) fn writes(&self) -> u64 {
        self.0.upgrade().map_or(0, |s| s.writes())
    }

    /// Resolves once the connection made more than `mark` writes, or at once when it is gone.
    pub(crate) async fn written_after(&self, mark: u64) {
        if let Some(socket) = self.0.upgrade() {
            socket.written_after(mark).await;
        }
    }

    /// Ends the connection at once, with a reset rather than retransmissions to a host that does
    /// not answer; hyper's task sees it closed.
    pub(crate) fn abort(&self) {
        if let Some(socket) = self.0.upgrade() {
            let sock = socket2::SockRef::from(&socket.stream);
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
        bytes_acked: info.tcpi_bytes_acked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_is_a_fraction_of_the_limit() {
        assert_eq!(
            step(Duration::from_secs(1)),
            Duration::from_millis(62) + Duration::from_micros(500)
        );
        assert_eq!(step(Duration::from_secs(60)), Duration::from_millis(250));
        assert_eq!(step(Duration::from_millis(50)), Duration::from_millis(20));
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
        let (mut shared, watch) = Shared::new(stream);
        assert!(watch.acks().is_some());
        // Once the peer has everything, the count says what TCP_INFO says.
        let before = watch.acked_bytes().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut shared, &[7u8; 3000])
            .await
            .unwrap();
        let expected = before + 3000;
        assert_eq!(watch.acked_bytes(), Some(expected));
        for _ in 0..1000 {
            if watch.acks().unwrap().bytes_acked == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(watch.acks().unwrap().bytes_acked, expected);
        drop(shared);
        assert!(watch.acks().is_none(), "a closed connection is not read");
    }
}
