//! Validated configuration: turns the raw CLI/environment strings into typed settings, or one clear error.

mod wake;

pub use wake::{HttpWakeConfig, MagicConfig, WakeConfig};

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

use crate::cli::{OllamaArgs, ServeArgs};
use crate::units::{parse_duration, parse_size, Unit};

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A bad setting: names the flag, its environment variable and the value (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} ({env}){}: {reason}", value.as_ref().map(|v| format!(" {v:?}")).unwrap_or_default())]
pub struct ConfigError {
    pub flag: &'static str,
    pub env: &'static str,
    pub value: Option<String>,
    pub reason: String,
}

pub(crate) fn bad(
    flag: &'static str,
    env: &'static str,
    value: &str,
    reason: impl fmt::Display,
) -> ConfigError {
    ConfigError {
        flag,
        env,
        value: Some(value.to_string()),
        reason: reason.to_string(),
    }
}

pub(crate) fn bad_secret(
    flag: &'static str,
    env: &'static str,
    reason: impl fmt::Display,
) -> ConfigError {
    ConfigError {
        flag,
        env,
        value: None,
        reason: reason.to_string(),
    }
}

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
    pub upstream: Upstream,
    pub connect_timeout: Duration,
    pub wake_timeout: Duration,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub ollama: OllamaConfig,
    pub bind: SocketAddr,
    pub timeout: Duration,
    pub model_timeout: Duration,
    pub wake_interval: Duration,
    pub cache_duration: Duration,
    pub wake: WakeConfig,
    pub max_queue: usize,
    pub max_held_body: u64,
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

fn duration(
    flag: &'static str,
    env: &'static str,
    value: &str,
    unit: Unit,
) -> Result<Duration, ConfigError> {
    parse_duration(value, unit).map_err(|e| bad(flag, env, value, e))
}

pub(crate) fn number<T: FromStr>(
    flag: &'static str,
    env: &'static str,
    value: &str,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e| bad(flag, env, value, e))
}

impl OllamaConfig {
    pub fn from_args(args: &OllamaArgs) -> Result<Self, ConfigError> {
        let connect_timeout = duration(
            "--connect-timeout",
            "CONNECT_TIMEOUT",
            &args.connect_timeout,
            Unit::Seconds,
        )?;
        if connect_timeout.is_zero() {
            return Err(bad(
                "--connect-timeout",
                "CONNECT_TIMEOUT",
                &args.connect_timeout,
                "must be more than zero",
            ));
        }
        Ok(OllamaConfig {
            upstream: parse_upstream(&args.ollama_url)?,
            connect_timeout,
            wake_timeout: duration(
                "--wake-timeout",
                "WAKE_TIMEOUT",
                &args.wake_timeout,
                Unit::Seconds,
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
        let max_queue = number("--max-queue", "MAX_QUEUE", &args.max_queue)?;
        Ok(Config {
            ollama,
            bind,
            timeout: duration("--timeout", "TIMEOUT_SECONDS", &args.timeout, Unit::Seconds)?,
            model_timeout: duration(
                "--model-timeout",
                "MODEL_TIMEOUT_SECONDS",
                &args.model_timeout,
                Unit::Seconds,
            )?,
            wake_interval: duration(
                "--wake-interval",
                "WAKE_INTERVAL",
                &args.wake_interval,
                Unit::Minutes,
            )?,
            cache_duration: duration(
                "--cache-duration",
                "CACHE_DURATION",
                &args.cache_duration,
                Unit::Minutes,
            )?,
            wake: WakeConfig::from_args(&args.wake)?,
            max_queue,
            max_held_body: parse_size(&args.max_held_body)
                .map_err(|e| bad("--max-held-body", "MAX_HELD_BODY", &args.max_held_body, e))?,
            cache_file: args
                .cache_file
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            max_connections: match &args.max_connections {
                Some(v) => Some(positive(
                    "--max-connections",
                    "MAX_CONNECTIONS",
                    v,
                    number("--max-connections", "MAX_CONNECTIONS", v)?,
                )?),
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

/// `n`, unless it is zero.
fn positive<T: PartialEq + Default>(
    flag: &'static str,
    env: &'static str,
    value: &str,
    n: T,
) -> Result<T, ConfigError> {
    if n == T::default() {
        return Err(bad(flag, env, value, "must be more than zero"));
    }
    Ok(n)
}

/// A duration in seconds that must be more than zero.
fn nonzero(flag: &'static str, env: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(flag, env, value, Unit::Seconds)?;
    positive(flag, env, value, d)
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
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::net::Ipv4Addr;

    fn serve(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["ollama-proxy"];
        if !args.contains(&"--ollama-url") {
            argv.extend(["--ollama-url", "http://10.0.0.5:11434"]);
        }
        argv.extend_from_slice(args);
        Config::from_args(&Cli::try_parse_from(argv).unwrap().serve)
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.model_timeout, Duration::from_secs(30));
        assert_eq!(c.wake_interval, Duration::from_secs(600));
        assert_eq!(c.cache_duration, Duration::from_secs(1800));
        assert_eq!(c.ollama.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.ollama.wake_timeout, Duration::from_secs(120));
        assert_eq!(c.max_queue, 512);
        assert_eq!(c.max_held_body, 16 << 20);
        assert_eq!(c.bind, "0.0.0.0:11434".parse().unwrap());
        assert!(!c.wake.is_enabled());
    }

    #[test]
    fn self_loop_is_refused() {
        let cli = Cli::try_parse_from(["ollama-proxy"]).unwrap();
        let err = Config::from_args(&cli.serve).unwrap_err();
        assert_eq!(err.flag, "--ollama-url");
        assert!(err.reason.contains("points back"), "{err}");
        assert!(serve(&["--port", "8080", "--ollama-url", "http://127.0.0.1:8080/"]).is_err());
        assert!(serve(&[
            "--bind",
            "192.168.1.2",
            "--ollama-url",
            "http://192.168.1.2:11434"
        ])
        .is_err());
        assert!(serve(&["--port", "8080", "--ollama-url", "http://localhost:11434"]).is_ok());
    }

    #[test]
    fn upstream_prefix_and_authority() {
        let c = serve(&["--ollama-url", "http://desk.lan:8000/ollama/"]).unwrap();
        assert_eq!(c.ollama.upstream.authority, "desk.lan:8000");
        assert_eq!(
            c.ollama.upstream.url("/api/tags?x=1"),
            "http://desk.lan:8000/ollama/api/tags?x=1"
        );
        let c = serve(&["--ollama-url", "http://desk.lan"]).unwrap();
        assert_eq!(
            (c.ollama.upstream.port, c.ollama.upstream.authority.as_str()),
            (80, "desk.lan")
        );
    }

    #[test]
    fn errors_name_flag_and_variable() {
        let err = serve(&["--mac", "zz:00:00:00:00:00"]).unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains("--mac") && line.contains("WOL_MAC") && line.contains("zz:00"),
            "{line}"
        );
        for (flag, value) in [
            ("--timeout", "ten"),
            ("--wake-interval", "5 parsecs"),
            ("--broadcast", "10.0.0.255,nope"),
            ("--wol-port", "70000"),
            ("--bind", "localhost"),
            ("--max-held-body", "lots"),
            ("--ollama-url", "ftp://x"),
            ("--wake-url", "not a url"),
        ] {
            let err = serve(&[flag, value]).unwrap_err();
            assert_eq!(err.flag, flag, "{err}");
        }
    }

    #[test]
    fn secrets_are_never_shown() {
        let err = serve(&["--mac", "aa:bb:cc:dd:ee:ff", "--secureon", "hunter2"]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = serve(&["--wake-key", "s3cret"]).unwrap_err();
        assert!(!err.to_string().contains("s3cret") && err.to_string().contains("--wake-url"));
        let err = serve(&["--wake-key", "s3cret", "--wake-url", "http://pi:9090/wol"]).unwrap_err();
        assert!(
            !err.to_string().contains("s3cret") && err.to_string().contains("mac"),
            "{err}"
        );
        let c = serve(&[
            "--mac",
            "aa:bb:cc:dd:ee:ff",
            "--secureon",
            "01:02:03:04:05:06",
            "--wake-key",
            "s3cret",
            "--wake-url",
            "http://pi:9090/wol?mac=aa-bb-cc-dd-ee-ff",
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("01:02:03"),
            "{debug}"
        );
    }

    #[test]
    fn wake_settings() {
        let c = serve(&[
            "--mac",
            "AA-BB-CC-DD-EE-FF",
            "--broadcast",
            "10.0.0.255, 255.255.255.255",
            "--wol-port",
            "7",
        ])
        .unwrap();
        let m = c.wake.magic.unwrap();
        assert_eq!(
            m.sender.destinations,
            vec![Ipv4Addr::new(10, 0, 0, 255), Ipv4Addr::BROADCAST]
        );
        assert_eq!(m.sender.port, 7);
    }
}
