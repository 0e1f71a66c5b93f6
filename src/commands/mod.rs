//! The commands: `serve` (the proxy), and `wake`, `sleep`, `health` and `doctor`, one-shot tools that print
//! what they did (see "Commands" in docs/behaviour.md).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{DoctorArgs, HealthArgs, ServeArgs};
use crate::config::{Config, ConfigError};
use crate::signals::Signals;

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

mod machine;

pub use machine::{sleep, wake};

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
