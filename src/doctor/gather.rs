//! Gathering the facts about one machine: ask Ollama (directly, bounded, waking nothing), send the
//! one wake of `--wake`, read the cache file, look the machine's address up as the learner does,
//! try the interface (see "Doctor" in docs/behaviour.md). File, `/proc`, interface and socket work
//! runs off the async threads, so that one machine's does not hold up another's probe.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::facts::{Bind, CacheFile, Contents, Magic, Probe, WakeSent};
use super::network::{Learned, Net};
use super::probe::{probe, wait};
use crate::cache::{Cache, ReadError};
use crate::config::BackendConfig;
use crate::learn::decide::{Observation, Why};
use crate::netinfo;
use crate::wake::Waker;

/// Everything gathered about one machine.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub probe: Probe,
    /// Ollama's address: its host's first IPv4 address, else its first (`None`: not resolved).
    pub ip: Option<IpAddr>,
    /// The way to the machine, when Ollama's address is an IPv4 address of another machine.
    pub net: Option<Net>,
    pub wake: Option<WakeSent>,
    /// The record in the cache file (learned while the machine was awake), whichever address it
    /// is for, and its age.
    pub learned: Option<(Learned, Duration)>,
    /// The magic packets the proxy would send.
    pub magic: Option<Magic>,
    /// What the learner's look-up of `ip` says now (`None`: always on, or not resolved).
    pub seen: Option<Observation>,
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
    let place = cache_file.clone();
    let read = move || {
        let cache = cache(&place);
        let learned = learned(&cache);
        (cache, learned)
    };
    let (cache, learned) = blocking(read, |e| (CacheFile::Unchecked(e), None)).await;
    let (mut probe, ip) = probe(cfg, client).await;
    // The record the proxy would use: the one for Ollama's address (see "Learning the MAC").
    let usable = learned
        .clone()
        .filter(|(l, _)| ip.is_none_or(|ip| l.is_for(ip)));
    let magic = Magic::of(cfg, usable.as_ref().map(|(l, _)| l));
    let wake = match send_wake {
        true => {
            let start = Instant::now();
            let mut sent = wake(cfg, magic.as_ref()).await;
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
    // After the probe: if Ollama answered, the neighbour entry is fresh.
    let (always_on, target) = (cfg.always_on, magic.clone());
    let look = move || local(always_on, ip, target.as_ref(), usable);
    let local = blocking(look, Local::failed).await;
    Gathered {
        probe,
        ip,
        net: local.net,
        wake,
        learned,
        magic,
        seen: local.seen,
        bind: local.bind,
        cache,
    }
}

/// Runs `work` (files, `/proc`, getifaddrs, sockets) on a blocking thread; `failed` makes the
/// result, from why, when it could not finish (it panicked).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    failed: impl FnOnce(String) -> T,
) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) => failed(e.to_string()),
    }
}

/// One wake with every method the proxy would use (none for an always-on machine).
async fn wake(cfg: &BackendConfig, magic: Option<&Magic>) -> WakeSent {
    let outcomes = if cfg.always_on || !(cfg.wake.is_enabled() || magic.is_some()) {
        Vec::new()
    } else {
        match waker(cfg, magic) {
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

/// The waker the proxy would use: the configured methods, and the learned MAC's packets when no
/// MAC is configured (see "Learning the MAC" in docs/behaviour.md).
fn waker(cfg: &BackendConfig, magic: Option<&Magic>) -> Result<Waker, crate::wake::WakerError> {
    let waker = Waker::new(&cfg.wake)?;
    if let Some(m) = magic.filter(|m| m.learned) {
        waker.set_magic(m.mac, m.sender.clone())?;
    }
    Ok(waker)
}

/// What this machine's kernel and sockets say.
struct Local {
    net: Option<Net>,
    bind: Option<Bind>,
    seen: Option<Observation>,
}

impl Local {
    /// The look-up could not finish: `why`, as the learner would say it.
    fn failed(why: String) -> Local {
        Local {
            net: None,
            bind: None,
            seen: Some(Err(Why::Failed(why))),
        }
    }
}

/// Blocking: the learner's look-up of `ip`, the way to it and where `magic`'s packets leave, and
/// whether its interface can be bound.
fn local(
    always_on: bool,
    ip: Option<IpAddr>,
    magic: Option<&Magic>,
    learned: Option<(Learned, Duration)>,
) -> Local {
    let bind = magic
        .and_then(|m| m.sender.interface.as_deref())
        .map(super::host::try_bind);
    // An always-on machine is never learned (see "Learning the MAC").
    let seen = ip
        .filter(|_| !always_on)
        .map(crate::learn::observe::observe);
    let net = match ip {
        Some(IpAddr::V4(v4)) => net(v4, magic, learned),
        _ => None,
    };
    Local { net, bind, seen }
}

/// The route to `ip`, its neighbour entry, and where each of `magic`'s destinations leaves;
/// `None` for this machine's own address.
fn net(ip: Ipv4Addr, magic: Option<&Magic>, learned: Option<(Learned, Duration)>) -> Option<Net> {
    let text = |e: netinfo::NetInfoError| e.to_string();
    // When the interfaces cannot be listed, the address is taken as another machine's: the route
    // lookup below then fails too, and its finding says why.
    if netinfo::is_loopback_or_local(IpAddr::V4(ip)).unwrap_or(false) {
        return None;
    }
    let destinations = magic
        .iter()
        .flat_map(|m| &m.sender.destinations)
        .map(|d| (*d, netinfo::route_to(*d).map_err(text)))
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
    let now = crate::monitor::events::unix_now();
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
