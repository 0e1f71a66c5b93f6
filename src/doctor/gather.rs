//! Gathering the facts about one machine: ask Ollama (directly, bounded, waking nothing), send the
//! one wake of `--wake`, try the interface, read the cache file (see "Doctor" in
//! docs/behaviour.md).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::checks::human;
use super::facts::{Bind, CacheFile, Contents, Probe, WakeSent};
use super::network::{Learned, Net};
use crate::cache::{Cache, ReadError};
use crate::config::BackendConfig;
use crate::netinfo;
use crate::wake::Waker;

/// Longest wait for Ollama's answer once connected: `/api/version` is instant on a live Ollama.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// Pause between probes while waiting for a woken machine.
const POLL: Duration = Duration::from_millis(500);

/// Everything gathered about one machine.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub probe: Probe,
    /// The way to the machine, when Ollama's host is (or resolves to) an IPv4 address of another
    /// machine.
    pub net: Option<Net>,
    pub wake: Option<WakeSent>,
    /// The record learned while the machine was awake (kept with its cache file), and its age.
    pub learned: Option<(Learned, Duration)>,
    pub bind: Option<Bind>,
    pub cache: CacheFile,
}

/// Gathers the facts of `cfg`. With `send_wake`, one wake is sent after Ollama was first asked,
/// and an Ollama that did not answer is then waited for (up to the wake timeout).
pub async fn machine(
    cfg: &BackendConfig,
    client: &reqwest::Client,
    cache_file: &crate::config::CacheFile,
    send_wake: bool,
) -> Gathered {
    let cache = cache(cache_file);
    let learned = learned(&cache);
    let (mut probe, ip) = probe(cfg, client).await;
    let wake = match send_wake {
        true => {
            let start = Instant::now();
            let mut sent = wake(cfg, learned.as_ref().map(|(l, _)| l)).await;
            let any_sent = sent.outcomes.iter().any(|(ok, _)| *ok);
            if any_sent && !probe.answered() && !matches!(probe, Probe::Resolve(_)) {
                let (after, waited) = wait(cfg, client, start).await;
                probe = after;
                sent.waited = Some(waited);
            }
            Some(sent)
        }
        false => None,
    };
    let bind = cfg
        .wake
        .magic
        .as_ref()
        .and_then(|m| m.sender.interface.as_deref())
        .map(super::host::try_bind);
    // After the probe: if Ollama answered, the neighbour entry is fresh.
    let net = ip.and_then(|ip| net(cfg, ip, learned.clone()));
    Gathered {
        net,
        probe,
        wake,
        bind,
        cache,
        learned,
    }
}

/// Resolves Ollama's host, then `GET /api/version` within its connect timeout plus
/// [`ANSWER_LIMIT`].
async fn probe(cfg: &BackendConfig, client: &reqwest::Client) -> (Probe, Option<Ipv4Addr>) {
    let upstream = &cfg.ollama.upstream;
    let host = upstream.host.trim_start_matches('[').trim_end_matches(']');
    let ip = match tokio::net::lookup_host((host, upstream.port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }),
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

/// One wake with every configured method (none for an always-on machine).
async fn wake(cfg: &BackendConfig, learned: Option<&Learned>) -> WakeSent {
    let outcomes = if cfg.always_on || !(cfg.wake.is_enabled() || learned.is_some()) {
        Vec::new()
    } else {
        match waker(cfg, learned) {
            Ok(w) => w
                .wake_all()
                .await
                .iter()
                .map(|o| (o.is_ok(), o.to_string()))
                .collect(),
            Err(e) => vec![(false, e.to_string())],
        }
    };
    WakeSent {
        outcomes,
        waited: None,
    }
}

/// The waker the proxy would use: the configured methods, and the learned MAC when none is
/// configured (see "Learning the MAC" in docs/behaviour.md).
fn waker(cfg: &BackendConfig, learned: Option<&Learned>) -> Result<Waker, crate::wake::WakerError> {
    let waker = Waker::new(&cfg.wake)?;
    if let (None, Some(l)) = (&cfg.wake.magic, learned) {
        waker.set_magic(l.mac, cfg.wake.for_learned.sender(l.broadcast))?;
    }
    Ok(waker)
}

/// Probes every [`POLL`] until Ollama answers or the wake timeout since `start` passed: the last
/// probe, and how long it took (`Ok`) or was waited for in vain (`Err`).
async fn wait(
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

/// The route to `ip`, its neighbour entry, and where each magic-packet destination leaves; `None`
/// for this machine's own address.
fn net(cfg: &BackendConfig, ip: Ipv4Addr, learned: Option<(Learned, Duration)>) -> Option<Net> {
    let text = |e: netinfo::NetInfoError| e.to_string();
    // When the interfaces cannot be listed, the address is taken as another machine's: the route
    // lookup below then fails too, and its finding says why.
    if netinfo::is_loopback_or_local(IpAddr::V4(ip)).unwrap_or(false) {
        return None;
    }
    // Where the configured packets go, else the learned MAC's (see "Learning the MAC").
    let configured = cfg.wake.magic.iter().flat_map(|m| &m.sender.destinations);
    let learned_to = match &cfg.wake.magic {
        None => learned.as_ref().map(|(l, _)| l.broadcast),
        Some(_) => None,
    };
    let destinations = configured
        .copied()
        .chain(learned_to)
        .map(|d| (d, netinfo::route_to(d).map_err(text)))
        .collect();
    Some(Net {
        ip,
        route: netinfo::route_to(ip).map_err(text),
        neighbour: netinfo::neighbour_mac(ip).map_err(text),
        learned,
        destinations,
    })
}

/// The learned record in the cache file, and its age. A file that cannot be read has no record
/// here: the cache file's own finding says why.
fn learned(cache: &CacheFile) -> Option<(Learned, Duration)> {
    let CacheFile::Set { path, .. } = cache else {
        return None;
    };
    let record = crate::learn::record::read(path).ok().flatten()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let age = Duration::from_secs(now.saturating_sub(record.learned_at));
    Some((record, age))
}

/// The cache file as the proxy would use it: its link followed, writable, what it holds.
fn cache(place: &crate::config::CacheFile) -> CacheFile {
    let path = match place {
        crate::config::CacheFile::Off => return CacheFile::Off,
        // `doctor` stops before, with `serve`'s error (see "Doctor").
        crate::config::CacheFile::Unplaced => {
            return CacheFile::Unchecked("no place for it (CACHE_FILE not set)".into())
        }
        crate::config::CacheFile::Given(p) | crate::config::CacheFile::Default(p) => p.clone(),
    };
    let resolved = match crate::cache::resolve(&path) {
        Ok(p) => p,
        Err(e) => {
            let error = crate::error::chain(&e);
            return CacheFile::Unresolvable { path, error };
        }
    };
    let contents = match Cache::stored_model_list(&resolved) {
        Ok(tags) => Contents::ModelList(tags.map(|t| (t.age(), t.invalidated))),
        Err(ReadError::Missing) => Contents::Missing,
        Err(e) => Contents::Unusable(e.to_string()),
    };
    // `serve` makes the default place's directory (see "Cache file"): it need only be creatable.
    let missing_dir = resolved.parent().filter(|d| !d.exists());
    let writable = match (place, missing_dir) {
        (crate::config::CacheFile::Default(_), Some(dir)) => creatable(dir),
        _ => crate::cache::check_writable(&resolved),
    };
    CacheFile::Set {
        writable,
        path: resolved,
        contents,
    }
}

/// Whether `dir` could be made: a file can be created in its nearest existing ancestor.
fn creatable(dir: &std::path::Path) -> Result<(), String> {
    match dir.ancestors().find(|a| a.exists()) {
        Some(existing) => crate::cache::check_writable(&existing.join("probe")),
        None => Err(format!("no existing directory above {}", dir.display())),
    }
}
