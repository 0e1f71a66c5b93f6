//! The proxy binary as a child process: started, its log followed, stopped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::bin;

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
