//! `run`: wires the parts together and serves until shutdown (see "Signals and shutdown" in
//! docs/behaviour.md), the function `main` and tests call.

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, Backends, DriverShared};
use crate::config::{CacheFile, Config};
use crate::conn::ClientTimeouts;
use crate::handler::App;
use crate::listen::{accept_loop, default_max_connections, raise_nofile};
use crate::proxy::Timeouts;
use crate::request::Budget;

/// How long in-flight responses may go on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves on `listener` until `shutdown` is cancelled; then stops accepting, answers held requests
/// with 503, lets in-flight responses finish for up to [`SHUTDOWN_GRACE`], and saves the cache.
pub async fn run(
    listener: TcpListener,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("listener address")?;
    let (monitor, families) = crate::monitor::Monitor::new();
    let backends = backends(&cfg, &shutdown, families)?;
    let nofile = raise_nofile();
    let max_connections = cfg
        .max_connections
        .unwrap_or_else(|| default_max_connections(nofile));
    let timeouts = ClientTimeouts {
        header: cfg.client_header_timeout,
        idle: cfg.client_idle_timeout,
    };
    let persist_stop = CancellationToken::new();
    let mut persist = Vec::new();
    for b in backends.all() {
        tokio::spawn(Arc::clone(&b.client).reap_until(shutdown.clone()));
        tokio::spawn(crate::backend::sleep::watch(
            Arc::clone(b),
            shutdown.clone(),
        ));
        persist.push(tokio::spawn(
            Arc::clone(&b.cache).persist(persist_stop.clone()),
        ));
        if let Some(learner) = &b.learner {
            learner.load();
            tokio::spawn(Arc::clone(learner).run(shutdown.clone()));
        }
    }
    tracing::info!(
        listen = %local,
        ollama = %cfg.ollama.upstream.url(""),
        magic_packets = cfg.wake.magic.is_some(),
        wake_url = cfg.wake.http.is_some(),
        sleep = %cfg.backends.first().map(|b| b.sleep.methods()).unwrap_or_default(),
        sleep_after = ?cfg.backends.first().and_then(|b| b.sleep.after),
        cache_file = %cfg.cache_file.path().map_or("none (CACHE_FILE=)".into(), |p| p.display().to_string()),
        max_connections,
        open_files = nofile,
        "ollama-proxy ready"
    );
    if cfg.backends.len() > 1 {
        for b in &cfg.backends {
            tracing::info!(backend = %b.name, ollama = %b.ollama.upstream.url(""), priority = b.priority,
                always_on = b.always_on, magic_packets = b.wake.magic.is_some(), wake_url = b.wake.http.is_some(),
                sleep = %b.sleep.methods(), sleep_after = ?b.sleep.after, "machine");
        }
    }
    let app = App {
        timeouts: Timeouts {
            simple: cfg.timeout,
            model: cfg.model_timeout,
        },
        budget: Budget::new(cfg.body_budget),
        attempts: Arc::new(tokio::sync::Semaphore::new(crate::meta::MAX_ATTEMPTS)),
        cfg,
        backends,
        monitor,
        shutdown: shutdown.clone(),
    };
    let app = Arc::new(app);
    // systemd (Type=notify): ready only now that the socket is bound; a no-op outside systemd.
    let status = format!("listening on {local}");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let tracker = TaskTracker::new();
    let connections = tracker.clone();
    accept_loop(
        listener,
        Arc::clone(&app),
        max_connections,
        timeouts,
        shutdown,
        connections,
    )
    .await;
    wind_down(&app.backends, tracker).await;
    for b in app.backends.all() {
        b.driver.watch.close();
    }
    persist_stop.cancel();
    for task in persist {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The machines of the configuration (one named `default` without a configuration file).
fn backends(
    cfg: &Config,
    shutdown: &CancellationToken,
    families: Arc<crate::monitor::metrics::Families>,
) -> anyhow::Result<Backends> {
    let shared = DriverShared {
        timeout: cfg.timeout,
        wake_interval: cfg.wake_interval,
        max_queue: cfg.max_queue,
        max_wakes_per_hour: cfg.access.max_wakes_per_hour,
        cache_file: cache_file(&cfg.cache_file)?,
        several: cfg.backends.len() > 1,
        families: Some(families),
    };
    let mut all = Vec::new();
    for b in &cfg.backends {
        all.push(Arc::new(Backend::build(b, &shared, shutdown)?));
    }
    Backends::new(all)
}

/// The cache file's path; the default place's directory is made here (see "Cache file").
fn cache_file(file: &CacheFile) -> anyhow::Result<Option<std::path::PathBuf>> {
    file.placed()?;
    if let CacheFile::Default(path) = file {
        if let Some(dir) = path.parent() {
            // Private, as the XDG specification asks of the directories it makes: the cache file
            // holds the model list and the desktop's MAC.
            let mut private = std::fs::DirBuilder::new();
            private.recursive(true).mode(0o700);
            private.create(dir).with_context(|| {
                format!(
                    "cannot make {}, the directory of the default cache file; set CACHE_FILE \
                     to another file, or CACHE_FILE= (empty) to keep the cache in memory only",
                    dir.display()
                )
            })?;
        }
    }
    Ok(file.path().map(|p| p.to_path_buf()))
}

/// After the accept loop stopped: held requests get 503, open responses get [`SHUTDOWN_GRACE`].
async fn wind_down(backends: &Backends, connections: TaskTracker) {
    notify(&[sd_notify::NotifyState::Stopping]);
    let held: usize = backends.all().iter().map(|b| b.driver.held()).sum();
    tracing::info!(
        held,
        "shutting down: held requests get 503, streams may finish"
    );
    for b in backends.all() {
        b.driver.stop();
    }
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "cutting the streams still open after the grace period");
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
