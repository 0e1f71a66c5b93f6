//! The judgements of `doctor` that need no network details: Ollama's answer, the wake methods, the
//! interface, the container and the cache file, each a pure function of the gathered facts (see
//! "Doctor" in docs/behaviour.md).

use std::time::Duration;

use super::facts::{Bind, CacheFile, Contents, Host, Magic, Probe, WakeSent};
use super::finding::Finding;
use crate::config::BackendConfig;
use crate::learn::decide::Observation;

/// A duration for people: `12 ms`, `3.4 s`, or `2h 5m` (seconds dropped past a minute).
pub fn human(d: Duration) -> String {
    match d.as_secs() {
        0 => format!("{} ms", d.as_millis()),
        1..=59 => format!("{:.1} s", d.as_secs_f64()),
        s => humantime::format_duration(Duration::from_secs(s - s % 60)).to_string(),
    }
}

/// Whether Ollama answered now (after `--wake`, when it was given).
/// `learned`: the proxy can wake the machine with a learned MAC, without a configured method.
pub fn ollama(
    cfg: &BackendConfig,
    probe: &Probe,
    wake: Option<&WakeSent>,
    learned: bool,
) -> Finding {
    let url = cfg.ollama.upstream.url("");
    let waited = wake.and_then(|w| w.waited);
    let silent = |why: &str| silence(cfg, &url, why, waited, learned);
    match probe {
        Probe::Answered { version, took } => {
            let name = match version {
                Some(v) => format!("Ollama {v}"),
                None => "Ollama (version not given)".to_string(),
            };
            let woke = match waited {
                Some(Ok(after)) => format!("; it answered {} after the wake", human(after)),
                _ => String::new(),
            };
            Finding::ok(format!(
                "{name} reachable at {url} ({}){woke}",
                human(*took)
            ))
        }
        Probe::Status { status, .. } => Finding::fail(format!(
            "{url}/api/version answered HTTP {status}"
        ))
        .advice("is this Ollama? Check the URL (host, port and path prefix) in OLLAMA_URL / url"),
        Probe::Refused => Finding::fail(format!("{url} refused the connection")).advice(
            "the machine is up but nothing listens on that port: start Ollama with \
             OLLAMA_HOST=0.0.0.0:11434 and allow the port through the desktop's firewall",
        ),
        Probe::Silent(why) => silent(why),
        Probe::Resolve(why) => Finding::fail(format!("cannot resolve {url}: {why}"))
            .advice("use the desktop's IP address in OLLAMA_URL / url"),
        Probe::Other(why) => Finding::fail(format!("cannot ask Ollama at {url}: {why}")),
    }
}

/// An Ollama at `url` that gave no answer (`why`), judged by what could wake it and whether a wake
/// was waited for in vain.
fn silence(
    cfg: &BackendConfig,
    url: &str,
    why: &str,
    waited: Option<Result<Duration, Duration>>,
    learned: bool,
) -> Finding {
    let silent = format!("Ollama at {url} does not answer ({why})");
    if cfg.always_on {
        return Finding::fail(silent).advice(
            "this machine is always_on and never woken: is it running, and is Ollama started?",
        );
    }
    if let Some(Err(limit)) = waited {
        return Finding::fail(format!(
            "Ollama at {url} did not answer within {} after the wake ({why})",
            human(limit)
        ))
        .advice(
            "check that Wake-on-LAN is enabled on the desktop (firmware and OS), and the MAC and \
             broadcast address findings",
        );
    }
    if !cfg.wake.is_enabled() && !learned {
        return Finding::fail(silent)
            .advice("and nothing can wake it: see the wake methods finding");
    }
    Finding::warn(silent).advice(
        "if the desktop is asleep now this is expected: `ollama-proxy doctor --wake` wakes it and \
         checks again once it answers",
    )
}

/// Which wake methods are configured or learned (secrets are never shown); `seen`: the learner's
/// look-up now, which says whether a MAC can be learned at all.
pub fn wake_methods(
    cfg: &BackendConfig,
    magic: Option<&Magic>,
    seen: Option<&Observation>,
) -> Finding {
    if cfg.always_on {
        return Finding::info("always on: never woken");
    }
    let http = cfg
        .wake
        .http
        .as_ref()
        .map(|h| format!("the wake URL {}", crate::wake::display_url(&h.url)));
    match (magic.map(packets), http) {
        (Some(m), Some(h)) => Finding::ok(format!("wakes with {m} and {h}")),
        (Some(m), None) => Finding::ok(format!("wakes with {m}")),
        (None, Some(h)) => Finding::ok(format!("wakes with {h}")),
        (None, None) => {
            let how = match super::learning::never_learned(seen) {
                true => {
                    "set the MAC of the desktop's wired network card and its network's \
                         broadcast address (WOL_MAC and WOL_BROADCAST / mac and broadcast), or a \
                         wake URL (WAKE_URL / wake_url) served on its network: its MAC cannot be \
                         learned (see why below)"
                }
                false => {
                    "set the MAC of the desktop's wired network card (WOL_MAC / mac), or let \
                          the proxy see the desktop awake once to learn it"
                }
            };
            Finding::warn("nothing can wake it: no MAC and no wake URL configured").advice(format!(
                "{how}; always_on = true for a machine that never sleeps"
            ))
        }
    }
}

/// The magic packets, as the wake methods finding names them.
fn packets(m: &Magic) -> String {
    let dests: Vec<String> = m
        .sender
        .destinations
        .iter()
        .map(|d| d.to_string())
        .collect();
    let via = m
        .sender
        .interface
        .as_ref()
        .map(|i| format!(" out of {i}"))
        .unwrap_or_default();
    let (whose, why) = match m.learned {
        true => ("the learned MAC ", " (no MAC configured)"),
        false => ("", ""),
    };
    format!(
        "magic packets for {whose}{} to {} port {}{via}{why}",
        m.mac,
        dests.join(", "),
        m.sender.port
    )
}

/// What `--wake` sent, one finding per method.
pub fn wake_sent(sent: &WakeSent) -> Vec<Finding> {
    if sent.outcomes.is_empty() {
        return vec![Finding::info("--wake: nothing sent (no wake method)")];
    }
    let failed = |line: &String| {
        Finding::fail(format!("--wake: {line}")).advice("the proxy's wakes would fail the same way")
    };
    sent.outcomes
        .iter()
        .map(|(ok, line)| match ok {
            true => Finding::ok(format!("--wake: {line}")),
            false => failed(line),
        })
        .collect()
}

/// Whether magic packets can be sent out of the configured interface, as the proxy tries at start
/// (or when it starts to use a learned MAC).
pub fn interface(magic: Option<&Magic>, bind: Option<&Bind>) -> Option<Finding> {
    let m = magic?;
    let name = m.sender.interface.as_ref()?;
    let refused = match m.learned {
        true => "the proxy cannot send the learned MAC's packets",
        false => "the proxy refuses to start with it",
    };
    Some(match bind? {
        Bind::Works => Finding::ok(format!(
            "magic packets can leave by {name} (binding to it works)"
        )),
        Bind::NoSuchDevice { existing } => Finding::fail(format!(
            "interface {name} does not exist (there are: {})",
            existing.join(", ")
        ))
        .advice(format!(
            "{refused}: name one of those in WOL_INTERFACE / interface, or leave it unset"
        )),
        Bind::Denied { cap_net_raw } => {
            let caps = match cap_net_raw {
                Some(true) => "although CAP_NET_RAW is in the effective capabilities",
                Some(false) => "CAP_NET_RAW is not in the effective capabilities",
                None => "the effective capabilities are unknown",
            };
            Finding::fail(format!(
                "binding to interface {name} is not allowed ({caps})"
            ))
            .advice(format!(
                "{refused}: run it with CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW) \
                     or on Linux 5.7 or newer, or leave the interface unset and use the \
                     subnet's broadcast address"
            ))
        }
        Bind::Other(e) => {
            Finding::fail(format!("cannot bind to interface {name}: {e}")).advice(refused)
        }
    })
}

/// Whether broadcasts can leave a container, when magic packets are sent (configured or learned).
/// `direct`: the desktop's address is on a directly connected network (`None`: not known).
pub fn container(magic: bool, host: &Host, direct: Option<bool>) -> Option<Finding> {
    let sign = host.container.as_ref().filter(|_| magic)?;
    let host_network = "use the host's network (docker run --network host, or network_mode: host \
                        in compose): broadcasts do not cross a bridge network";
    Some(match (direct, host.physical_nic) {
        (Some(true), _) => Finding::info(format!(
            "runs in a container ({sign}) on the desktop's own network: broadcasts reach it"
        )),
        (Some(false), _) => Finding::fail(format!(
            "runs in a container ({sign}) that reaches the desktop through a router: magic \
             packets never leave the container's network"
        ))
        .advice(host_network),
        (None, true) => Finding::info(format!(
            "runs in a container ({sign}) that sees a network card: host networking"
        )),
        (None, false) => Finding::warn(format!(
            "runs in a container ({sign}) with only virtual network interfaces: without host \
             networking, magic packets never reach the LAN"
        ))
        .advice(host_network),
    })
}

/// The cache file: where, writable, how old its model list is.
pub fn cache(file: &CacheFile, fresh_for: Duration) -> Finding {
    let (path, writable, contents) = match file {
        CacheFile::Off => {
            return Finding::info(
                "no cache file (CACHE_FILE= empty): the cache starts empty at each start",
            )
            .advice("unset CACHE_FILE (or name a file) to keep the model list across restarts")
        }
        CacheFile::Unchecked(why) => {
            return Finding::warn(format!("cannot check the cache file: {why}"))
        }
        CacheFile::Unresolvable { path, error } => {
            return Finding::fail(format!("cache file {}: {error}", path.display()))
                .advice("the proxy refuses to start with it: fix or remove the link")
        }
        CacheFile::Set {
            path,
            writable,
            contents,
        } => (path.display(), writable, contents),
    };
    let list = match contents {
        Contents::Missing => "not written yet".to_string(),
        Contents::Unusable(why) => why.clone(),
        Contents::ModelList(None) => "no model list yet".to_string(),
        Contents::ModelList(Some((age, stale))) => {
            let state = match (stale, *age < fresh_for) {
                (true, _) => "marked stale by a pull or delete".to_string(),
                (false, true) => "fresh".to_string(),
                (false, false) => format!("older than CACHE_DURATION {}", human(fresh_for)),
            };
            format!("model list {} old ({state})", human(*age))
        }
    };
    match (writable, contents) {
        (Err(e), _) => Finding::warn(format!("cache file {path}: {e}; {list}"))
            .advice("make its directory writable for the proxy's user (with systemd: the unit's StateDirectory)"),
        (Ok(()), Contents::Unusable(_)) => Finding::warn(format!("cache file {path}: writable; {list}"))
            .advice("the proxy starts with an empty cache and replaces the file at the first change"),
        (Ok(()), _) => Finding::ok(format!("cache file {path}: writable; {list}")),
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "checks_wake_tests.rs"]
mod wake_tests;
