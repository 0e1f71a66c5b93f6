//! The processes a benchmark runs: the fake Ollama, ollama-proxy, nginx and Caddy, each killed on
//! drop; their resident memory and CPU time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

fn kill(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Resident set of `pid` and its child processes, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own + children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(rss_kib)
        .sum::<u64>()
}

/// CPU time (user + system) of `pid` and its child processes, in µs.
pub fn cpu_us(pid: u32) -> u64 {
    let ticks_per_s: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    own_ticks(pid) * 1_000_000 / ticks_per_s.max(1)
}

fn own_ticks(pid: u32) -> u64 {
    // Fields after the command name (which may contain spaces): utime and stime are the 12th and
    // 13th of them.
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own + children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(own_ticks)
        .sum::<u64>()
}

/// The machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let wrk = Command::new("wrk")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let caddy = Command::new("caddy")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "machine: {cpu}, {cores} cores, {:.0} GiB RAM, Linux {}; {nginx}; caddy {caddy}; {wrk}",
        mem as f64 / 1048576.0,
        kernel.trim()
    )
}

/// The fast fake Ollama (`bench-fake`).
pub struct Fake {
    child: Child,
    addr: String,
    control: String,
}

impl Fake {
    /// Starts it; `asleep`: its port stays closed until [`Fake::open`].
    pub fn start(release: &str, asleep: bool) -> anyhow::Result<Fake> {
        let mut cmd = Command::new(format!("{release}/bench-fake"));
        if asleep {
            cmd.arg("--asleep");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .context("bench-fake (cargo build --release -p ollama-proxy-bench)")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let v: serde_json::Value =
            serde_json::from_str(&line).context("bench-fake's first line")?;
        Ok(Fake {
            addr: v["addr"].as_str().context("addr")?.to_string(),
            control: v["control"].as_str().context("control")?.to_string(),
            child,
        })
    }

    /// Its URL; with `BENCH_OLLAMA_HOST=name` (a name for 127.0.0.1, e.g. `localhost`) the proxy
    /// is pointed at it by that name, as at a desktop named by host name.
    pub fn url(&self) -> String {
        match std::env::var("BENCH_OLLAMA_HOST") {
            Ok(name) if !name.is_empty() => {
                let port = self.addr.rsplit(':').next().unwrap_or_default();
                format!("http://{name}:{port}")
            }
            _ => format!("http://{}", self.addr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens the port; returns when it started listening (Unix ns).
    pub async fn open(&self) -> anyhow::Result<u128> {
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{}/open", self.control))
            .send()
            .await?
            .json()
            .await?;
        v["listening_at_ns"]
            .as_u64()
            .map(u128::from)
            .context("listening_at_ns")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        kill(&mut self.child, "-TERM");
    }
}

/// ollama-proxy, the release binary.
pub struct Proxy {
    child: Child,
    addr: String,
}

impl Proxy {
    pub async fn start(release: &str, ollama: &str, extra: &[&str]) -> anyhow::Result<Proxy> {
        Proxy::start_exe(&format!("{release}/ollama-proxy"), ollama, extra).await
    }

    /// Starts the binary `exe` (another build of ollama-proxy, for an A/B run).
    pub async fn start_exe(exe: &str, ollama: &str, extra: &[&str]) -> anyhow::Result<Proxy> {
        Self::start_with(exe, ollama, extra, &[]).await
    }

    /// As [`Proxy::start_exe`], with these environment variables set.
    pub async fn start_with(
        exe: &str,
        ollama: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proxy> {
        let mut child = Command::new(exe)
            .args(["--bind", "127.0.0.1", "--port", "0", "--ollama-url", ollama])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn,ollama_proxy::server=info")
            // In memory, as before the cache had a default file: runs do not see each other's.
            .env("CACHE_FILE", "")
            .stderr(Stdio::piped())
            .spawn()
            .context("ollama-proxy (cargo build --release)")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listen=").nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                        sent = true;
                    }
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("proxy: {line}");
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await?
            .context("the proxy never said it was ready")?;
        Ok(Proxy { child, addr })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn health(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(self.url("/health")).await?.json().await?)
    }

    /// SIGTERM (the cache file is written on the way out) and wait.
    pub async fn stop(self) {
        drop(self);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill(&mut self.child, "-TERM");
    }
}

/// nginx as a plain reverse proxy: HTTP/1.1 with keep-alive to the upstream, no buffering.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    pub fn start(upstream: &str) -> anyhow::Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("ollama-proxy-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs"))?;
        let upstream = upstream.trim_start_matches("http://");
        let conf = format!(
            "worker_processes auto;\nerror_log {d}/logs/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               upstream ollama {{ server {upstream}; keepalive 256; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://ollama;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n      proxy_request_buffering off;\n      proxy_read_timeout 600s;\n    }}\n  }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .args([
                "-p",
                &dir.to_string_lossy(),
                "-c",
                &dir.join("nginx.conf").to_string_lossy(),
                "-g",
                "daemon off;",
            ])
            .spawn()
            .context("nginx (apt install nginx)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nginx never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx { child, port, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// The master; its workers are its children.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill(&mut self.child, "-TERM");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Caddy with a plain `reverse_proxy` (its defaults), no admin endpoint, no automatic HTTPS, no logs.
pub struct Caddy {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Caddy {
    pub fn start(upstream: &str) -> anyhow::Result<Caddy> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("ollama-proxy-bench-caddy-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let upstream = upstream.trim_start_matches("http://");
        let conf = format!(
            "{{\n  admin off\n  auto_https off\n  log {{\n    output discard\n  }}\n}}\n\
             http://127.0.0.1:{port} {{\n  reverse_proxy {upstream}\n}}\n"
        );
        let file = dir.join("Caddyfile");
        std::fs::write(&file, conf)?;
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            // Its data and configuration directories: in the temporary one, not in $HOME.
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("caddy (apt install caddy)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "caddy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Caddy { child, port, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        kill(&mut self.child, "-TERM");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
