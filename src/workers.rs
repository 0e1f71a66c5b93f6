//! One single-threaded runtime per core; each client connection is handed to the one serving the
//! fewest (see "Threads" in docs/behaviour.md).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

thread_local! {
    /// Which worker this thread is: 0 for the thread that runs `run` (and any thread not started
    /// here), 1.. for the threads [`Workers::start`] made.
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

/// What a worker runs as one task; made on the worker's thread, inside its runtime (a socket is
/// registered with the runtime that polls it).
pub(crate) type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// One worker as the hand-over sees it: where its jobs go (none for the calling thread, which runs
/// them itself) and how many of them are running.
#[derive(Default)]
struct Lane {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    running: Arc<AtomicUsize>,
    /// Its thread was found ended (logged once).
    dead: AtomicBool,
}

/// One running job of a worker: counted while it lives (also when its task panics or is dropped).
struct Running(Arc<AtomicUsize>);

impl Running {
    fn count(running: &Arc<AtomicUsize>) -> Running {
        running.fetch_add(1, Ordering::Relaxed);
        Running(Arc::clone(running))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a worker's runtime may wait, once stopped, for blocking work it started (a name
/// lookup, a file write).
const STOP_WAIT: Duration = Duration::from_secs(1);

/// A worker thread: makes its runtime, says so through `made`, then runs the jobs it is given until
/// `done`.
fn worker(
    index: usize,
    mut queue: mpsc::UnboundedReceiver<Job>,
    done: &CancellationToken,
    made: &std::sync::mpsc::SyncSender<std::io::Result<()>>,
) {
    INDEX.with(|i| i.set(index));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = made.send(Err(e));
            return;
        }
    };
    let _ = made.send(Ok(()));
    runtime.block_on(async move {
        let serve = async {
            while let Some(job) = queue.recv().await {
                tokio::spawn(job());
            }
        };
        tokio::select! {
            () = serve => {}
            () = done.cancelled() => {}
        }
    });
    runtime.shutdown_timeout(STOP_WAIT);
}

/// The workers: the calling thread and one thread per further core. Dropped (the `run` that made
/// them was dropped), the threads stop at once and their connections are cut; [`Workers::finish`]
/// is the orderly end.
pub(crate) struct Workers {
    lanes: Vec<Lane>,
    threads: Vec<JoinHandle<()>>,
    done: Option<DropGuard>,
}

impl Workers {
    /// Starts `count() - 1` threads, each with its own single-threaded runtime that runs the jobs
    /// it is given until the workers are finished. A thread or runtime that cannot be made is a
    /// start-up error.
    pub(crate) fn start() -> anyhow::Result<Workers> {
        let done = CancellationToken::new();
        let mut lanes = vec![Lane::default()];
        let mut threads = Vec::new();
        for index in 1..count() {
            let (jobs, queue) = mpsc::unbounded_channel::<Job>();
            // The runtime is made on its own thread (a runtime must not be dropped inside another
            // one's async context), which says whether it could.
            let (made_tx, made) = std::sync::mpsc::sync_channel(1);
            let done = done.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ollama-proxy-{index}"))
                .spawn(move || worker(index, queue, &done, &made_tx))
                .context("cannot start a worker thread")?;
            made.recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("its thread ended")))
                .context("cannot start a worker's runtime")?;
            threads.push(thread);
            lanes.push(Lane {
                jobs: Some(jobs),
                ..Lane::default()
            });
        }
        Ok(Workers {
            lanes,
            threads,
            done: Some(done.drop_guard()),
        })
    }

    /// Runs `job` on the worker with the fewest jobs running (the calling thread's on a tie).
    pub(crate) fn hand(&self, job: Job) {
        let running = self.lanes.iter().map(|l| l.running.load(Ordering::Relaxed));
        let Some(lane) = least_busy(running).and_then(|i| self.lanes.get(i)) else {
            return;
        };
        let count = Running::count(&lane.running);
        let counted: Job = Box::new(move || {
            let task = job();
            Box::pin(async move {
                task.await;
                drop(count);
            })
        });
        let Some(jobs) = &lane.jobs else {
            drop(tokio::spawn(counted()));
            return;
        };
        if let Err(mpsc::error::SendError(job)) = jobs.send(counted) {
            // Its thread ended (it cannot while the workers run, short of a bug): served here.
            if !lane.dead.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "a worker thread ended; its clients are served by the accepting thread"
                );
            }
            drop(tokio::spawn(job()));
        }
    }

    /// Stops the workers' runtimes (the connections still open on them are cut) and waits for their
    /// threads, each at most [`STOP_WAIT`] for the blocking work it started.
    pub(crate) async fn finish(mut self) {
        drop(self.done.take());
        self.lanes.clear();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// The index of the smallest count, the first of equal ones.
fn least_busy(running: impl Iterator<Item = usize>) -> Option<usize> {
    running
        .enumerate()
        .min_by_key(|&(i, n)| (n, i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_worker_serving_the_fewest() {
        assert_eq!(least_busy([3, 1, 2].into_iter()), Some(1));
        assert_eq!(
            least_busy([2, 2, 5].into_iter()),
            Some(0),
            "a tie: the first"
        );
        assert_eq!(least_busy([0, 0].into_iter()), Some(0));
        assert_eq!(least_busy(std::iter::empty()), None);
    }

    #[tokio::test]
    async fn jobs_spread_one_per_worker_each_run_on_its_own_thread() {
        let workers = Workers::start().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Each job holds its place until all were handed: they spread one per worker.
        let hold = CancellationToken::new();
        for _ in 0..count() {
            let (tx, hold) = (tx.clone(), hold.clone());
            workers.hand(Box::new(move || {
                Box::pin(async move {
                    let _ = tx.send(current());
                    hold.cancelled().await;
                })
            }));
        }
        let mut seen = Vec::new();
        for _ in 0..count() {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..count()).collect::<Vec<_>>());
        hold.cancel();
        workers.finish().await;
    }
}
