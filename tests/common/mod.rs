//! Shared test helpers: the proxy on a pre-bound listener, a fake Ollama, a sleeping host.
#![allow(dead_code, clippy::unwrap_used)]

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
use tokio::io::AsyncBufReadExt;
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

/// The proxy binary as a child process (killed on drop), on 127.0.0.1 with a port of its choosing.
pub struct Child {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// Everything it logged, collected in the background.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Notified after each line added to `stderr`.
    pub logged: std::sync::Arc<tokio::sync::Notify>,
    /// Its XDG_STATE_HOME (unless the test set one): the default cache file is its own.
    pub state: tempfile::TempDir,
}

/// The proxy's stderr, line by line.
pub type StderrLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

impl Child {
    /// Starts `ollama-proxy --bind 127.0.0.1 --port 0 ARGS` and waits (bounded) for its ready line.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Child {
        Self::start_wrapped(&[], args, env).await
    }

    /// Like [`Child::start`], run through `wrapper` (e.g. `prlimit --nofile=64:64 --`), which must
    /// exec the binary in its own process.
    pub async fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Child {
        let (child, mut lines, state) = Self::spawn(wrapper, args, env);
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let addr = Self::ready(&mut lines, &stderr).await;
        let log = std::sync::Arc::clone(&stderr);
        let logged = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = std::sync::Arc::clone(&logged);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                notify.notify_waiters();
            }
        });
        Child {
            child,
            addr,
            stderr,
            logged,
            state,
        }
    }

    /// Like [`Child::start`], but closes the read end of its stderr pipe once it is ready: every
    /// later log line meets a broken pipe (as under `| logger` after the logger exited).
    pub async fn start_then_close_stderr(args: &[&str], env: &[(&str, &str)]) -> Child {
        let (proxy, lines) = Self::start_unread(args, env).await;
        drop(lines);
        proxy
    }

    /// Like [`Child::start`], but hands back its stderr pipe unread past the ready line: keep it
    /// and never read it to play a log reader that stopped reading.
    pub async fn start_unread(args: &[&str], env: &[(&str, &str)]) -> (Child, StderrLines) {
        let (child, mut lines, state) = Self::spawn(&[], args, env);
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let addr = Self::ready(&mut lines, &stderr).await;
        let proxy = Child {
            child,
            addr,
            stderr,
            logged: std::sync::Arc::new(tokio::sync::Notify::new()),
            state,
        };
        (proxy, lines)
    }

    fn spawn(
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (tokio::process::Child, StderrLines, tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => tokio::process::Command::new(bin()),
        };
        cmd.args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .env("XDG_STATE_HOME", state.path())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        (child, lines, state)
    }

    /// Reads stderr (bounded) up to the ready line; returns the address it names.
    async fn ready(lines: &mut StderrLines, stderr: &std::sync::Mutex<String>) -> SocketAddr {
        let find_ready = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                stderr.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("listen=").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            panic!(
                "proxy exited before it was ready: {}",
                stderr.lock().unwrap()
            );
        };
        tokio::time::timeout(Duration::from_secs(10), find_ready)
            .await
            .expect("proxy never got ready")
    }

    /// Waits (bounded) until its stderr has a line containing `needle`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.logged.notified();
            if self.stderr.lock().unwrap().contains(needle) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.stderr.lock().unwrap();
                assert!(
                    log.contains(needle),
                    "no {needle:?} within {limit:?}: {log}"
                );
                return;
            }
        }
    }

    /// Sends signal `name` (`TERM`, `INT`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the proxy has already exited");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits up to `limit` for the exit; `None` if it is still running then.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("no exit after SIGTERM")
            .unwrap()
    }
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
