//! Logging that can never stop the proxy: log lines go through a bounded queue to a writer thread;
//! a full queue or a failed write drops the line, and nothing on the way panics or blocks.
//!
//! tracing-subscriber's fmt layer writes on the thread that logs and reports a failed write with
//! `eprintln!`, which panics on a broken pipe (`ollama-proxy 2>&1 | logger` after `logger` exited):
//! every task that logged would panic, the signal task included. And a log reader that stops
//! reading would block every task that logs. Here the tasks only ever queue a line.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Log lines waiting for the writer thread; past this, new lines are dropped (and counted).
const QUEUE_LINES: usize = 8192;
/// How long [`LogGuard`]'s drop waits at exit for the queued lines to be written.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// stderr could not be duplicated for the writer thread.
    #[error("cannot duplicate stderr for the log writer: {0}")]
    Stderr(#[source] io::Error),
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(#[source] io::Error),
    /// The tracing subscriber could not be installed (another one already was).
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The sending side, handed to the fmt layer as its writer.
#[derive(Clone)]
struct Queue {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// One event's writer: queues what it is given, never fails.
struct QueueWriter<'a>(&'a Queue);

impl Write for QueueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.tx.try_send(Msg::Line(buf.to_vec())).is_err() {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = QueueWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueueWriter(self)
    }
}

/// Keep this alive in `main`: dropping it writes the queued lines (waiting at most one second).
#[must_use = "dropping the guard ends the wait for queued log lines"]
pub struct LogGuard {
    tx: SyncSender<Msg>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + FLUSH_LIMIT;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        // The queue may stay full (a stalled reader): retry until the limit, never longer.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => {
                    let _ =
                        done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
                    return;
                }
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info`), colours only on a terminal, lines
/// to stderr through the writer thread.
pub fn init() -> Result<LogGuard, LoggingError> {
    let stderr = io::stderr();
    let ansi = stderr.is_terminal();
    // A duplicate of fd 2: the writer thread, even blocked on a stalled pipe, never holds the
    // `Stderr` lock that other one-line messages take.
    let out = File::from(
        stderr
            .as_fd()
            .try_clone_to_owned()
            .map_err(LoggingError::Stderr)?,
    );
    let (queue, guard) = start(out, QUEUE_LINES)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(queue)
        .log_internal_errors(false)
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    Ok(guard)
}

/// Starts the writer thread for `out` with room for `capacity` queued lines.
fn start(
    out: impl Write + Send + 'static,
    capacity: usize,
) -> Result<(Queue, LogGuard), LoggingError> {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&dropped);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(rx, out, &counter))
        .map_err(LoggingError::Thread)?;
    Ok((
        Queue {
            tx: tx.clone(),
            dropped,
        },
        LogGuard { tx },
    ))
}

/// The writer thread: writes each line, ignoring errors (a failed write loses that line only).
fn write_lines(rx: Receiver<Msg>, mut out: impl Write, dropped: &AtomicU64) {
    for msg in rx {
        match msg {
            Msg::Line(line) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(
                        out,
                        "ollama-proxy: {lost} log lines dropped (stderr was not read)"
                    );
                }
                let _ = out.write_all(&line);
            }
            Msg::Flush(done) => {
                let _ = out.flush();
                let _ = done.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer that fails every write, like a broken pipe.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    /// A writer that blocks until `release` is dropped, like a reader that stopped reading.
    struct Stalled(Mutex<Receiver<()>>);
    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.lock().map(|rx| rx.recv());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_writer_loses_lines_and_nothing_else() {
        let (queue, guard) = start(Broken, 4).unwrap();
        for _ in 0..100 {
            assert_eq!(queue.make_writer().write(b"line\n").unwrap(), 5);
        }
        drop(guard);
    }

    #[test]
    fn a_stalled_writer_never_blocks_the_logger() {
        let (release, rx) = mpsc::channel();
        let (queue, guard) = start(Stalled(Mutex::new(rx)), 4).unwrap();
        for _ in 0..100 {
            queue.make_writer().write_all(b"line\n").unwrap();
        }
        assert!(queue.dropped.load(Ordering::Relaxed) >= 90);
        let started = Instant::now();
        drop(guard);
        assert!(started.elapsed() < FLUSH_LIMIT * 10);
        drop(release);
    }

    #[test]
    fn lines_arrive_in_order_with_a_note_of_drops() {
        let (tx, rx) = mpsc::sync_channel(8);
        let dropped = AtomicU64::new(3);
        for line in ["a\n", "b\n"] {
            tx.send(Msg::Line(line.as_bytes().to_vec())).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        write_lines(rx, &mut out, &dropped);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ollama-proxy: 3 log lines dropped (stderr was not read)\na\nb\n"
        );
    }
}
