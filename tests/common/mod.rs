//! Shared test helpers: the proxy on a pre-bound listener, a fake Ollama, a sleeping host.
#![allow(dead_code, clippy::unwrap_used)]

pub mod fake;
pub mod netns;
pub mod sleeping;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ollama_proxy::cli::Cli;
use ollama_proxy::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use fake::Fake;

/// A proxy running in this process, as `main` runs it.
pub struct Proxy {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    /// Starts the proxy with `args` (flags as on the command line) on 127.0.0.1:0.
    pub async fn start(args: &[&str]) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let port = addr.port().to_string();
        let mut argv = vec!["ollama-proxy", "--bind", "127.0.0.1", "--port", &port];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let config = Config::from_args(&cli.serve).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ollama_proxy::run(listener, config, shutdown.clone()));
        Proxy {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the proxy and waits for `run` to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(15), task).await;
            assert!(result.is_ok(), "proxy did not stop within 15s");
        }
    }

    /// The backend state from /health.
    pub async fn health(&self) -> serde_json::Value {
        client()
            .get(self.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (bounded) until /health reports `held` requests.
    pub async fn wait_held(&self, held: u64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let h = self.health().await;
            if h["held"].as_u64() == Some(held) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached held={held}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP client that never uses a system proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Initialises logging once for tests (RUST_LOG).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ollama-proxy")
}
