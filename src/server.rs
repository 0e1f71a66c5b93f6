//! `run`: wires the parts together and serves until shutdown (see "Signals and shutdown" in
//! docs/behaviour.md), the function `main` and tests call.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::config::Config;
use crate::conn::ClientTimeouts;
use crate::driver::{Driver, DriverConfig};
use crate::handler::{handle, App};
use crate::listen::{accept_loop, default_max_connections, raise_nofile};
use crate::proxy::Timeouts;
use crate::request::Budget;
use crate::upstream::Client;
use crate::wake::Waker;

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
    let (client, driver) = backend(&cfg, &shutdown)?;
    let nofile = raise_nofile();
    let max_connections = cfg
        .max_connections
        .unwrap_or_else(|| default_max_connections(nofile));
    let timeouts = ClientTimeouts {
        header: cfg.client_header_timeout,
        idle: cfg.client_idle_timeout,
    };
    let cache = Arc::new(Cache::load(cfg.cache_file.clone()).context("cannot use the cache file")?);
    tokio::spawn(Arc::clone(&client).reap_until(shutdown.clone()));
    let persist_stop = CancellationToken::new();
    let persist = tokio::spawn(Arc::clone(&cache).persist(persist_stop.clone()));
    tracing::info!(
        listen = %local,
        ollama = %cfg.ollama.upstream.url(""),
        magic_packets = cfg.wake.magic.is_some(),
        wake_url = cfg.wake.http.is_some(),
        max_connections,
        open_files = nofile,
        "ollama-proxy ready"
    );
    let app = App {
        timeouts: Timeouts {
            simple: cfg.timeout,
            model: cfg.model_timeout,
        },
        budget: Budget::new(cfg.body_budget),
        attempts: Arc::new(tokio::sync::Semaphore::new(crate::meta::MAX_ATTEMPTS)),
        host: crate::headers::host_value(&cfg.ollama.upstream.authority),
        cfg,
        driver: Arc::clone(&driver),
        client,
        cache,
    };
    let router = Router::new().fallback(handle).with_state(Arc::new(app));
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
        router,
        max_connections,
        timeouts,
        shutdown,
        connections,
    )
    .await;
    wind_down(&driver, tracker).await;
    persist_stop.cancel();
    let _ = persist.await;
    tracing::info!("stopped");
    Ok(())
}

/// The connection pool to Ollama and the driver of its state and wake cycles.
fn backend(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<Client>, Arc<Driver>)> {
    let client = Arc::new(Client::new(
        cfg.ollama.upstream.clone(),
        cfg.ollama.connect_timeout,
    ));
    let waker = if cfg.wake.is_enabled() {
        Some(Arc::new(
            Waker::new(&cfg.wake).context("cannot prepare Wake-on-LAN")?,
        ))
    } else {
        None
    };
    let settings = DriverConfig {
        wake_timeout: cfg.ollama.wake_timeout,
        connect_timeout: cfg.ollama.connect_timeout,
        probe_timeout: cfg.ollama.connect_timeout + cfg.timeout,
        wake_interval: cfg.wake_interval,
        max_queue: cfg.max_queue,
    };
    let driver = Driver::new(waker, Arc::clone(&client), settings, shutdown.clone());
    Ok((client, Arc::new(driver)))
}

/// After the accept loop stopped: held requests get 503, open responses get [`SHUTDOWN_GRACE`].
async fn wind_down(driver: &Driver, connections: TaskTracker) {
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(
        held = driver.held(),
        "shutting down: held requests get 503, streams may finish"
    );
    driver.stop();
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
