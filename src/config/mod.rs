//! Validated configuration: turns the raw CLI/environment strings into typed settings, or one clear error.

pub(crate) mod access;
mod backends;
mod file;
mod layer;
mod parse;
mod sleep;
mod state;
mod wake;

pub use access::AccessConfig;
pub use backends::BackendConfig;
pub use parse::ConfigError;
#[cfg(test)]
pub(crate) use parse::Secret;
use parse::{bad, number};
pub use sleep::SleepConfig;
pub use state::{CacheFile, StateDirs};
pub use wake::{url_mac, HttpWakeConfig, LearnedSender, WakeConfig};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::cli::{OllamaArgs, ServeArgs};
use crate::units::{parse_size, Unit};
use file::ConfigFile;
use layer::{default, Layer};
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
    /// The preferred backend's address and timeouts (`backends[0].ollama`).
    pub ollama: OllamaConfig,
    /// Every machine, preferred first; one named `default` without `[[backend]]` tables in a file.
    pub backends: Vec<BackendConfig>,
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
    /// How to wake the preferred backend (`backends[0].wake`).
    pub wake: WakeConfig,
    /// Most requests held at once while Ollama wakes (MAX_QUEUE).
    pub max_queue: usize,
    /// Largest request body buffered for replay, in bytes (MAX_HELD_BODY).
    pub max_held_body: u64,
    /// Where the metadata cache is persisted, if anywhere (CACHE_FILE, or the default place).
    pub cache_file: CacheFile,
    /// Most client connections at once; `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    /// Bytes of request bodies buffered at once, over all requests.
    pub body_budget: u64,
    /// Longest time a client may take to send a request's headers.
    pub client_header_timeout: Duration,
    /// Longest idle time of a keep-alive client connection between requests.
    pub client_idle_timeout: Duration,
    /// API keys and the wake rate limit.
    pub access: AccessConfig,
}

impl OllamaConfig {
    pub fn from_args(args: &OllamaArgs) -> Result<Self, ConfigError> {
        Ok(OllamaConfig {
            upstream: parse_upstream(args.ollama_url.as_deref().unwrap_or(default::OLLAMA_URL))?,
            connect_timeout: nonzero(
                "--connect-timeout",
                "CONNECT_TIMEOUT",
                args.connect_timeout
                    .as_deref()
                    .unwrap_or(default::CONNECT_TIMEOUT),
            )?,
            wake_timeout: nonzero(
                "--wake-timeout",
                "WAKE_TIMEOUT",
                args.wake_timeout
                    .as_deref()
                    .unwrap_or(default::WAKE_TIMEOUT),
            )?,
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
    /// Checks and converts the options of `serve` and the config file they name, or names the first
    /// bad one (see "Configuration" and "Configuration file" in docs/behaviour.md).
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        Self::from_args_with(args, &StateDirs::from_env())
    }

    /// Like [`Config::from_args`], with the state directories given rather than read from the
    /// environment (the default place of the cache file).
    pub fn from_args_with(args: &ServeArgs, dirs: &StateDirs) -> Result<Self, ConfigError> {
        let file = args.config.as_deref().map(ConfigFile::load).transpose()?;
        let l = Layer {
            file: file.as_ref(),
        };
        let ip = l.get(&args.bind, ("--bind", "BIND"), default::BIND, ip_address)?;
        let port = l.get(&args.port, ("--port", "PORT"), default::PORT, number)?;
        let bind = SocketAddr::new(ip, port);
        let backends = backends::build(&l, args, bind)?;
        let Some(preferred) = backends.first().cloned() else {
            return Err(bad("--config", "CONFIG", "", "no backend"));
        };
        Ok(Config {
            ollama: preferred.ollama,
            wake: preferred.wake,
            backends,
            bind,
            timeout: l.get(
                &args.timeout,
                ("--timeout", "TIMEOUT_SECONDS"),
                default::TIMEOUT,
                nonzero,
            )?,
            model_timeout: l.get(
                &args.model_timeout,
                ("--model-timeout", "MODEL_TIMEOUT_SECONDS"),
                default::MODEL_TIMEOUT,
                nonzero,
            )?,
            wake_interval: l.get(
                &args.wake_interval,
                ("--wake-interval", "WAKE_INTERVAL"),
                default::WAKE_INTERVAL,
                minutes,
            )?,
            cache_duration: l.get(
                &args.cache_duration,
                ("--cache-duration", "CACHE_DURATION"),
                default::CACHE_DURATION,
                minutes,
            )?,
            max_queue: l.get(
                &args.max_queue,
                ("--max-queue", "MAX_QUEUE"),
                default::MAX_QUEUE,
                nonzero_number,
            )?,
            max_held_body: l.get(
                &args.max_held_body,
                ("--max-held-body", "MAX_HELD_BODY"),
                default::MAX_HELD_BODY,
                size,
            )?,
            cache_file: state::cache_file(
                l.get_opt(
                    &args.cache_file,
                    ("--cache-file", "CACHE_FILE"),
                    |_, _, v| Ok(PathBuf::from(v)),
                )?,
                dirs,
            ),
            max_connections: l.get_opt(
                &args.max_connections,
                ("--max-connections", "MAX_CONNECTIONS"),
                nonzero_number,
            )?,
            body_budget: l.get(
                &args.body_budget,
                ("--body-budget", "BODY_BUDGET"),
                default::BODY_BUDGET,
                |f, e, v| positive(f, e, v, size(f, e, v)?),
            )?,
            client_header_timeout: l.get(
                &args.client_header_timeout,
                ("--client-header-timeout", "CLIENT_HEADER_TIMEOUT"),
                default::CLIENT_HEADER_TIMEOUT,
                nonzero,
            )?,
            client_idle_timeout: l.get(
                &args.client_idle_timeout,
                ("--client-idle-timeout", "CLIENT_IDLE_TIMEOUT"),
                default::CLIENT_IDLE_TIMEOUT,
                nonzero,
            )?,
            access: AccessConfig::from_args(&args.access)?,
        })
    }
}

/// An IP address to listen on.
fn ip_address(flag: &'static str, env: &'static str, v: &str) -> Result<IpAddr, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| bad(flag, env, v, "not an IP address"))
}

/// A duration in minutes when given as a plain number.
fn minutes(flag: &'static str, env: &'static str, v: &str) -> Result<Duration, ConfigError> {
    duration(flag, env, v, Unit::Minutes)
}

/// A size in bytes, or with a unit.
fn size(flag: &'static str, env: &'static str, v: &str) -> Result<u64, ConfigError> {
    parse_size(v).map_err(|e| bad(flag, env, v, e))
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
mod file_tests;
#[cfg(test)]
mod tests;
