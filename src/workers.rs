//! One single-threaded runtime per core, each accepting clients on the same listener (see
//! "Threads" in docs/behaviour.md).

use std::cell::Cell;
use std::future::Future;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

thread_local! {
    /// Which worker this thread is: 0 for the thread that runs `run` (and any thread not started
    /// here), 1.. for the threads [`start`] made.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers serve clients: the cores this process may use (its CPU affinity and cgroup
/// quota), at least one.
pub(crate) fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The worker the calling thread belongs to, below [`count`].
pub(crate) fn current() -> usize {
    INDEX.with(Cell::get) % count()
}

/// The extra workers. Dropped (the `run` that made them was dropped), they stop at once and their
/// connections are cut; [`Workers::finish`] is the orderly end.
pub(crate) struct Workers {
    threads: Vec<JoinHandle<()>>,
    done: Option<DropGuard>,
}

/// Starts `count() - 1` threads, each with its own single-threaded runtime running `serve` on a
/// copy of `listener` (the same socket: the kernel hands each new client to one of them). When
/// `serve` returns, the thread goes on running its tasks (the connections it accepted, and work
/// they started) until the workers are finished. A thread or runtime that cannot be made is a
/// start-up error.
pub(crate) fn start<F, Fut>(listener: &TcpListener, serve: F) -> anyhow::Result<Workers>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let done = CancellationToken::new();
    let mut threads = Vec::new();
    for index in 1..count() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a worker's runtime")?;
        let copy = listener
            .as_fd()
            .try_clone_to_owned()
            .context("cannot copy the listening socket for a worker")?;
        let copy = {
            let _in = runtime.enter();
            TcpListener::from_std(std::net::TcpListener::from(copy))
                .context("cannot register the listening socket with a worker")?
        };
        let (serve, done) = (serve.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name(format!("ollama-proxy-{index}"))
            .spawn(move || {
                INDEX.with(|i| i.set(index));
                runtime.block_on(async move {
                    tokio::select! {
                        () = async { serve(copy).await; std::future::pending().await } => {}
                        () = done.cancelled() => {}
                    }
                });
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    Ok(Workers {
        threads,
        done: Some(done.drop_guard()),
    })
}

impl Workers {
    /// Stops the workers' runtimes (everything they ran has ended by now) and waits for their
    /// threads.
    pub(crate) async fn finish(mut self) {
        drop(self.done.take());
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
