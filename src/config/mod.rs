//! Validated configuration: turns the raw CLI/environment strings into typed settings, or one clear error.

mod parse;
mod wake;

pub use parse::ConfigError;
#[cfg(test)]
pub(crate) use parse::Secret;
use parse::{bad, number};
pub use wake::{url_mac, HttpWakeConfig, WakeConfig};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::cli::{OllamaArgs, ServeArgs};
use crate::units::{parse_size, Unit};
use parse::{duration, nonzero, nonzero_number, positive};

/// Where Ollama lives: plain HTTP, host, port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// `host:port` as sent in `Host`.
    pub authority: String,
    /// Path prefix without trailing `/` (often empty).
    pub prefix: String,
}

impl Upstream {
    /// The request target (origin form) of `path_and_query` on Ollama, with the prefix.
    pub fn url_path(&self, path_and_query: &str) -> String {
        format!("{}{}", self.prefix, path_and_query)
    }

    /// The URL of `path_and_query` (which starts with `/`) on Ollama.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}{}", self.authority, self.prefix, path_and_query)
    }
}

/// Ollama's address and the timeouts that apply to reaching it.
#[derive(Debug, Clone)]
pub struct OllamaConfig {
    /// Where Ollama is (OLLAMA_URL).
    pub upstream: Upstream,
    /// A TCP connect slower than this means Ollama is asleep (CONNECT_TIMEOUT).
    pub connect_timeout: Duration,
    /// A wake cycle gives up this long after it started (WAKE_TIMEOUT).
    pub wake_timeout: Duration,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Ollama's address and the timeouts for reaching it.
    pub ollama: OllamaConfig,
    /// The address the proxy listens on (BIND and PORT).
    pub bind: SocketAddr,
    /// Simple requests: longest wait for Ollama's response headers (TIMEOUT_SECONDS).
    pub timeout: Duration,
    /// Inference and transfers: longest silence from Ollama (MODEL_TIMEOUT_SECONDS).
    pub model_timeout: Duration,
    /// After this long without hearing from Ollama, the next request wakes it (WAKE_INTERVAL).
    pub wake_interval: Duration,
    /// How long a cached answer is fresh (CACHE_DURATION).
    pub cache_duration: Duration,
    /// How to wake the host: magic packets and/or an HTTP wake URL.
    pub wake: WakeConfig,
    /// Most requests held at once while Ollama wakes (MAX_QUEUE).
    pub max_queue: usize,
    /// Largest request body buffered for replay, in bytes (MAX_HELD_BODY).
    pub max_held_body: u64,
    /// Where the metadata cache is persisted, if anywhere (CACHE_FILE).
    pub cache_file: Option<PathBuf>,
    /// Most client connections at once; `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    /// Bytes of request bodies buffered at once, over all requests.
    pub body_budget: u64,
    /// Longest time a client may take to send a request's headers.
    pub client_header_timeout: Duration,
    /// Longest idle time of a keep-alive client connection between requests.
    pub client_idle_timeout: Duration,
}

impl OllamaConfig {
    pub fn from_args(args: &OllamaArgs) -> Result<Self, ConfigError> {
        Ok(OllamaConfig {
            upstream: parse_upstream(&args.ollama_url)?,
            connect_timeout: nonzero(
                "--connect-timeout",
                "CONNECT_TIMEOUT",
                &args.connect_timeout,
            )?,
            wake_timeout: nonzero("--wake-timeout", "WAKE_TIMEOUT", &args.wake_timeout)?,
        })
    }
}

fn parse_upstream(value: &str) -> Result<Upstream, ConfigError> {
    let err = |reason: &str| bad("--ollama-url", "OLLAMA_URL", value, reason);
    let url = Url::parse(value.trim()).map_err(|e| err(&e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(err(
                "https is not supported: Ollama serves plain HTTP on the LAN",
            ))
        }
        _ => return Err(err("expected an http:// URL")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(err("the URL must not have a query, fragment or user name"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| err("missing host"))?
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    Ok(Upstream {
        host,
        port,
        authority,
        prefix: url.path().trim_end_matches('/').to_string(),
    })
}

impl Config {
    /// Checks and converts the options of `serve`, or names the first bad one.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let ip: IpAddr = args
            .bind
            .trim()
            .parse()
            .map_err(|_| bad("--bind", "BIND", &args.bind, "not an IP address"))?;
        let port: u16 = number("--port", "PORT", &args.port)?;
        let ollama = OllamaConfig::from_args(&args.ollama)?;
        let bind = SocketAddr::new(ip, port);
        if points_at(&ollama.upstream, bind) {
            return Err(bad(
                "--ollama-url",
                "OLLAMA_URL",
                &args.ollama.ollama_url,
                format!(
                    "points back at this proxy ({bind}); set OLLAMA_URL to your Ollama server, \
                     e.g. http://192.168.1.50:11434"
                ),
            ));
        }
        let minutes = |flag, env, value| duration(flag, env, value, Unit::Minutes);
        Ok(Config {
            ollama,
            bind,
            timeout: nonzero("--timeout", "TIMEOUT_SECONDS", &args.timeout)?,
            model_timeout: nonzero(
                "--model-timeout",
                "MODEL_TIMEOUT_SECONDS",
                &args.model_timeout,
            )?,
            wake_interval: minutes("--wake-interval", "WAKE_INTERVAL", &args.wake_interval)?,
            cache_duration: minutes("--cache-duration", "CACHE_DURATION", &args.cache_duration)?,
            wake: WakeConfig::from_args(&args.wake)?,
            max_queue: nonzero_number("--max-queue", "MAX_QUEUE", &args.max_queue)?,
            max_held_body: parse_size(&args.max_held_body)
                .map_err(|e| bad("--max-held-body", "MAX_HELD_BODY", &args.max_held_body, e))?,
            cache_file: args
                .cache_file
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            max_connections: match &args.max_connections {
                Some(v) => Some(nonzero_number("--max-connections", "MAX_CONNECTIONS", v)?),
                None => None,
            },
            body_budget: positive(
                "--body-budget",
                "BODY_BUDGET",
                &args.body_budget,
                parse_size(&args.body_budget)
                    .map_err(|e| bad("--body-budget", "BODY_BUDGET", &args.body_budget, e))?,
            )?,
            client_header_timeout: nonzero(
                "--client-header-timeout",
                "CLIENT_HEADER_TIMEOUT",
                &args.client_header_timeout,
            )?,
            client_idle_timeout: nonzero(
                "--client-idle-timeout",
                "CLIENT_IDLE_TIMEOUT",
                &args.client_idle_timeout,
            )?,
        })
    }
}

/// True when `upstream` is this proxy's own listening address.
fn points_at(upstream: &Upstream, bind: SocketAddr) -> bool {
    if upstream.port != bind.port() {
        return false;
    }
    let host = upstream.host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost");
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified() || ip == bind.ip(),
        Err(_) => local,
    }
}

#[cfg(test)]
mod tests;
