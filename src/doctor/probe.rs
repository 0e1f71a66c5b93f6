//! Asking Ollama directly, bounded and waking nothing: `GET /api/version` once, or every half
//! second while a woken machine boots (see "Doctor" in docs/behaviour.md).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::checks::human;
use super::facts::Probe;
use crate::config::BackendConfig;

/// Longest wait for Ollama's answer once connected: `/api/version` is instant on a live Ollama.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// Pause between probes while waiting for a woken machine.
const POLL: Duration = Duration::from_millis(500);

/// Resolves Ollama's host, then `GET /api/version` within its connect timeout plus
/// [`ANSWER_LIMIT`].
pub async fn probe(cfg: &BackendConfig, client: &reqwest::Client) -> (Probe, Option<IpAddr>) {
    let upstream = &cfg.ollama.upstream;
    let host = upstream.host.trim_start_matches('[').trim_end_matches(']');
    let ip = match tokio::net::lookup_host((host, upstream.port)).await {
        // The first IPv4 address, else the first: what the kernel's IPv4 tables can tell about.
        Ok(addrs) => {
            let all: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            all.iter().find(|ip| ip.is_ipv4()).or(all.first()).copied()
        }
        Err(e) => return (Probe::Resolve(e.to_string()), None),
    };
    let limit = cfg.ollama.connect_timeout + ANSWER_LIMIT;
    let start = Instant::now();
    let sent = client
        .get(upstream.url("/api/version"))
        .timeout(limit)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return (failure(&e, cfg, limit), ip),
    };
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let why = format!("the answer broke off: {}", crate::error::chain(&e));
            return (Probe::Other(why), ip);
        }
    };
    let took = start.elapsed();
    if !status.is_success() {
        let status = status.as_u16();
        return (Probe::Status { status, took }, ip);
    }
    let version = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(String::from));
    (Probe::Answered { version, took }, ip)
}

/// What a failed request says about the machine.
fn failure(e: &reqwest::Error, cfg: &BackendConfig, limit: Duration) -> Probe {
    if e.is_timeout() {
        return match e.is_connect() {
            true => Probe::Silent(format!(
                "no connection within {}",
                human(cfg.ollama.connect_timeout)
            )),
            false => Probe::Other(format!("connected, but no answer within {}", human(limit))),
        };
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused => Probe::Refused,
                K::HostUnreachable | K::NetworkUnreachable | K::TimedOut => {
                    Probe::Silent(io.to_string())
                }
                _ => Probe::Other(crate::error::chain(e)),
            };
        }
        source = s.source();
    }
    Probe::Other(crate::error::chain(e))
}

/// Probes every [`POLL`] until Ollama answers or the wake timeout since `start` passed: the last
/// probe, and how long it took (`Ok`) or was waited for in vain (`Err`).
pub async fn wait(
    cfg: &BackendConfig,
    client: &reqwest::Client,
    start: Instant,
) -> (Probe, Result<Duration, Duration>) {
    let limit = cfg.ollama.wake_timeout;
    loop {
        let attempt = Instant::now();
        let (probe, _) = self::probe(cfg, client).await;
        if probe.answered() {
            return (probe, Ok(start.elapsed()));
        }
        if start.elapsed() >= limit {
            return (probe, Err(limit));
        }
        let pause = POLL.saturating_sub(attempt.elapsed());
        tokio::time::sleep(pause.min(limit.saturating_sub(start.elapsed()))).await;
    }
}
