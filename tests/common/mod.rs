//! Shared test helpers: the proxy on a pre-bound listener, a fake Ollama, a sleeping host.
#![allow(dead_code, clippy::unwrap_used)]

pub mod child;
pub mod doctor;
pub mod fake;
pub mod netns;
pub mod nshost;
pub mod py;
pub mod sleeping;
pub mod tap;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ollama_proxy::cli::Cli;
use ollama_proxy::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use child::{Child, StderrLines};
#[allow(unused_imports)]
pub use fake::Fake;

/// A proxy running in this process, as `main` runs it.
pub struct Proxy {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
    /// Its XDG_STATE_HOME: the default cache file of a test's proxy is its own.
    pub state: tempfile::TempDir,
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
        let state = tempfile::tempdir().unwrap();
        let dirs = ollama_proxy::StateDirs::xdg(state.path());
        let config = Config::from_args_with(&cli.serve, &dirs).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ollama_proxy::run(listener, config, shutdown.clone()));
        Proxy {
            addr,
            shutdown,
            task: Some(task),
            state,
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
        get_json(self.url("/health")).await
    }

    /// Waits (bounded) until /health reports `held` requests.
    pub async fn wait_held(&self, held: u64, limit: Duration) {
        wait_held(&self.url("/health"), held, limit).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (bounded) until the /health at `url` reports `held` requests.
pub async fn wait_held(url: &str, held: u64, limit: Duration) {
    wait_health(url, &format!("held={held}"), limit, |h| {
        h["held"].as_u64() == Some(held)
    })
    .await;
}

/// Waits (bounded) until the /health at `url` satisfies `pred`.
pub async fn wait_health(
    url: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let h = get_json(url.to_string()).await;
        if pred(&h) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {what}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `POST url` with a JSON body.
pub async fn post_json(url: String, body: &serde_json::Value) -> reqwest::Response {
    client().post(url).json(body).send().await.unwrap()
}

/// `GET url`, answer parsed as JSON.
pub async fn get_json(url: String) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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

/// A finished command's stdout and stderr, for messages and checks.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits (bounded by `limit`) until `pred` holds, checking it each time `changed` is notified.
pub async fn wait_until(
    changed: &tokio::sync::Notify,
    what: &str,
    limit: Duration,
    pred: impl Fn() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = changed.notified();
        if pred() {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            assert!(pred(), "timed out after {limit:?} waiting for {what}");
            return;
        }
    }
}

/// Runs the binary with a clean environment plus `env` (RUST_LOG=warn, XDG_STATE_HOME a temp
/// dir of its own); it must exit within 30 s.
pub async fn run_bin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("XDG_STATE_HOME", state.path())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("command hung")
        .unwrap()
}

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ollama-proxy")
}

/// The MAC the magic-packet helpers wake.
pub const TEST_MAC: &str = "02:00:00:00:00:01";

/// Catches the proxy's magic packets: the socket, and the flags that send them to it.
pub async fn magic_catcher() -> (tokio::net::UdpSocket, Vec<String>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let args = [
        "--mac",
        TEST_MAC,
        "--broadcast",
        "127.0.0.1",
        "--wol-port",
        &port,
    ];
    (sock, args.map(String::from).to_vec())
}

/// The URL of a port nothing listens on: an Ollama that is asleep (connections refused).
pub fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A cache file `cache.json` in `dir` holding only the learned record `learned` (its fields as
/// the file keeps them): its path.
pub fn cache_with_record(dir: &std::path::Path, learned: serde_json::Value) -> String {
    let file = dir.join("cache.json");
    let content = serde_json::json!({ "learned": learned });
    std::fs::write(&file, content.to_string()).unwrap();
    file.display().to_string()
}

/// Borrowed views of owned arguments, for `Child::start` and `Proxy::start`.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
