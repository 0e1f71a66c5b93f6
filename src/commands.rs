//! The commands: `serve` (the proxy), and `wake`, `sleep`, `health` and `doctor`, one-shot tools that print
//! what they did (see "Commands" in docs/behaviour.md).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::{DoctorArgs, HealthArgs, ServeArgs, SleepCmdArgs, WakeCmdArgs};
use crate::config::{BackendConfig, Config, ConfigError, OllamaConfig, WakeConfig};
use crate::signals::Signals;
use crate::sleep::Sleeper;
use crate::wake::Waker;

/// Exit code for bad usage or configuration.
const EXIT_USAGE: u8 = 2;

/// `println!` that drops the line when stdout is closed, instead of panicking.
macro_rules! tell {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that drops the line when stderr is closed, instead of panicking.
macro_rules! tell_err {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Prints a configuration error as one line and returns exit code 2.
fn usage_error(err: &ConfigError) -> ExitCode {
    fatal(err);
    ExitCode::from(EXIT_USAGE)
}

/// Writes `ollama-proxy: MESSAGE` to stderr; a write that fails (stderr closed) is ignored, never a
/// panic like `eprintln!`'s.
fn fatal(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "ollama-proxy: {message}");
}

/// `ollama-proxy` / `ollama-proxy serve`: the proxy, until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = config.cache_file.placed() {
        return usage_error(&e);
    }
    let listener = match tokio::net::TcpListener::bind(config.bind).await {
        Ok(l) => l,
        Err(e) => {
            fatal(format_args!("cannot listen on {}: {e}", config.bind));
            return ExitCode::FAILURE;
        }
    };
    let signals = match Signals::register() {
        Ok(s) => s,
        Err(e) => {
            fatal(e);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let forced = tokio::spawn(signals.watch(shutdown.clone()));
    tokio::select! {
        r = crate::server::run(listener, config, shutdown) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                fatal(format_args!("{e:#}"));
                ExitCode::FAILURE
            }
        },
        // A second SIGTERM or SIGINT: the open streams are dropped with `run`.
        Ok(code) = forced => ExitCode::from(code),
    }
}

/// A client with timeouts that ignores HTTP_PROXY; no silent fallback to one without either.
fn http_client(connect: Duration, total: Duration) -> Result<reqwest::Client, ExitCode> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect)
        .timeout(total)
        .build()
        .map_err(|e| {
            tell_err!(
                "ollama-proxy: cannot build the HTTP client: {}",
                crate::error::chain(&e)
            );
            ExitCode::FAILURE
        })
}

/// `ollama-proxy wake`: one wake with every configured method; with `--wait`, poll Ollama.
pub async fn wake(args: WakeCmdArgs) -> ExitCode {
    let (wake_cfg, ollama) = match (
        WakeConfig::from_args(&args.wake),
        OllamaConfig::from_args(&args.ollama),
    ) {
        (Ok(w), Ok(o)) => (w, o),
        (Err(e), _) | (_, Err(e)) => return usage_error(&e),
    };
    if !wake_cfg.is_enabled() {
        tell_err!(
            "ollama-proxy: nothing to send: set --mac (WOL_MAC) and/or --wake-url (WAKE_URL)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    // Built before anything is sent, so that a client that cannot work fails the command up front.
    let probe_timeout = ollama.connect_timeout.max(Duration::from_secs(1));
    let client = match http_client(ollama.connect_timeout, probe_timeout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let waker = match Waker::new(&wake_cfg) {
        Ok(w) => w,
        Err(e) => {
            tell_err!("ollama-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(m) = &wake_cfg.magic {
        tell!(
            "waking {} (UDP port {}{})",
            m.mac,
            m.sender.port,
            m.sender
                .interface
                .as_ref()
                .map(|i| format!(", interface {i}"))
                .unwrap_or_default()
        );
    }
    let outcomes = waker.wake_all().await;
    for o in &outcomes {
        tell!("{o}");
    }
    if !outcomes.iter().any(|o| o.is_ok()) {
        tell_err!("ollama-proxy: every wake method failed");
        return ExitCode::FAILURE;
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    wait_for_ollama(&client, &ollama).await
}

async fn wait_for_ollama(client: &reqwest::Client, ollama: &OllamaConfig) -> ExitCode {
    let url = ollama.upstream.url("/api/version");
    let start = Instant::now();
    let mut last_report = Duration::ZERO;
    tell!(
        "waiting up to {} for Ollama at {url}",
        humantime::format_duration(ollama.wake_timeout)
    );
    while start.elapsed() < ollama.wake_timeout {
        let attempt = Instant::now();
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().is_success() {
                let body = resp.text().await.unwrap_or_default();
                tell!(
                    "Ollama answered after {:.1}s: {}",
                    start.elapsed().as_secs_f64(),
                    body.trim()
                );
                return ExitCode::SUCCESS;
            }
        }
        let elapsed = start.elapsed();
        if elapsed - last_report >= Duration::from_secs(5) {
            last_report = elapsed;
            tell!("  still waiting… {}s", elapsed.as_secs());
        }
        let pause = Duration::from_millis(500).saturating_sub(attempt.elapsed());
        let left = ollama.wake_timeout.saturating_sub(start.elapsed());
        tokio::time::sleep(pause.min(left)).await;
    }
    tell_err!(
        "ollama-proxy: Ollama did not answer within {} (WAKE_TIMEOUT)",
        humantime::format_duration(ollama.wake_timeout)
    );
    ExitCode::FAILURE
}

/// The machine `sleep` acts on: the one named by `--backend`, or the only one.
fn chosen<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a BackendConfig, String> {
    let names = || {
        let all: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        all.join(", ")
    };
    match (name, config.backends.as_slice()) {
        (Some(name), all) => all.iter().find(|b| b.name == name).ok_or_else(|| {
            format!(
                "--backend {name:?}: no such backend (there are: {})",
                names()
            )
        }),
        (None, [only]) => Ok(only),
        (None, _) => Err(format!(
            "several backends: name one with --backend ({})",
            names()
        )),
    }
}

/// `ollama-proxy sleep`: the configured sleep methods, now; with `--wait`, until the machine is
/// silent (see "Commands" in docs/behaviour.md).
pub async fn sleep(args: SleepCmdArgs) -> ExitCode {
    let config = match Config::from_args(&args.serve) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let backend = match chosen(&config, args.backend.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            fatal(e);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !backend.sleep.has_method() {
        fatal(format_args!(
            "nothing to send to {}: set --sleep-packet (SLEEP_PACKET), --sleep-url (SLEEP_URL) and/or --sleep-command (SLEEP_COMMAND)",
            backend.name
        ));
        return ExitCode::from(EXIT_USAGE);
    }
    let sleeper = match Sleeper::new(&backend.sleep) {
        Ok(s) => s,
        Err(e) => {
            fatal(e);
            return ExitCode::FAILURE;
        }
    };
    tell!(
        "putting {} to sleep ({})",
        backend.name,
        backend.sleep.methods()
    );
    let outcomes = sleeper.sleep_all().await;
    for o in &outcomes {
        tell!("{o}");
    }
    if !outcomes.iter().any(|o| o.is_ok()) {
        fatal("every sleep method failed");
        return ExitCode::FAILURE;
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    wait_for_silence(&backend.ollama, backend.sleep.confirm).await
}

/// Probes the machine (a TCP connect to Ollama's port, every half second) until it is silent or
/// `limit` passed.
async fn wait_for_silence(ollama: &OllamaConfig, limit: Duration) -> ExitCode {
    let client = crate::upstream::Client::new(ollama.upstream.clone(), ollama.connect_timeout);
    let start = Instant::now();
    let mut last_report = Duration::ZERO;
    tell!(
        "waiting up to {} for {} to go silent",
        humantime::format_duration(limit),
        ollama.upstream.authority
    );
    while start.elapsed() < limit {
        let attempt = Instant::now();
        let silent = match client.connect().await {
            Ok(_) => false,
            Err(
                crate::upstream::ConnectError::Refused(_) | crate::upstream::ConnectError::Local(_),
            ) => false,
            Err(_) => true,
        };
        if silent {
            tell!("silent after {:.1}s", start.elapsed().as_secs_f64());
            return ExitCode::SUCCESS;
        }
        let elapsed = start.elapsed();
        if elapsed - last_report >= Duration::from_secs(5) {
            last_report = elapsed;
            tell!("  still answering… {}s", elapsed.as_secs());
        }
        let pause = Duration::from_millis(500).saturating_sub(attempt.elapsed());
        tokio::time::sleep(pause.min(limit.saturating_sub(start.elapsed()))).await;
    }
    fatal(format_args!(
        "{} still answered {} after the sleep (SLEEP_CONFIRM)",
        ollama.upstream.authority,
        humantime::format_duration(limit)
    ));
    ExitCode::FAILURE
}

/// `ollama-proxy health`: exit 0 when the proxy's `/health` says healthy.
pub async fn health(args: HealthArgs) -> ExitCode {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => match args.port.trim().parse::<u16>() {
            Ok(p) => format!("http://127.0.0.1:{p}/health"),
            Err(e) => {
                return usage_error(&ConfigError {
                    flag: "--port",
                    env: "PORT",
                    value: Some(args.port.clone()),
                    reason: e.to_string(),
                })
            }
        },
    };
    let client = match http_client(Duration::from_secs(2), Duration::from_secs(5)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = async {
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| crate::error::chain(&e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| crate::error::chain(&e))?;
        let healthy = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .is_some_and(|v| v["status"] == "healthy");
        if status.is_success() && healthy {
            Ok(body)
        } else {
            Err(format!("HTTP {status}: {}", body.trim()))
        }
    }
    .await;
    match result {
        Ok(body) => {
            tell!("{}", body.trim());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tell_err!("ollama-proxy: unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ollama-proxy doctor`: the configuration as `serve` reads it, checked machine by machine; exit 0
/// when nothing is wrong, 1 with problems, 2 on bad configuration (see "Doctor" in
/// docs/behaviour.md).
pub async fn doctor(args: DoctorArgs) -> ExitCode {
    let config = match Config::from_args(&args.serve) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    // As `serve`: no place for the cache file is bad configuration, said the same way.
    if let Err(e) = config.cache_file.placed() {
        return usage_error(&e);
    }
    let connect = config
        .backends
        .iter()
        .map(|b| b.ollama.connect_timeout)
        .max()
        .unwrap_or_default();
    let client = match http_client(connect, connect + crate::doctor::ANSWER_LIMIT) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = crate::doctor::run(&config, &client, args.send_wake).await;
    for line in &report.lines {
        tell!("{line}");
    }
    ExitCode::from(report.code)
}
