//! What `doctor` gathers about one machine and the host it runs on, before any judgement: plain
//! data, so that the checks are pure functions of it.

use std::path::PathBuf;
use std::time::Duration;

use wol::{MacAddr, SenderConfig};

use crate::config::BackendConfig;
use crate::learn::Learned;

/// How Ollama answered `GET /api/version`, asked directly (nothing is woken by asking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A 2xx answer, with the version when the body named one.
    Answered {
        version: Option<String>,
        took: Duration,
    },
    /// An answer that is not 2xx: something listens there, but maybe not Ollama.
    Status { status: u16, took: Duration },
    /// The machine is up and nothing listens on the port.
    Refused,
    /// No answer: asleep, off, or a firewall dropping packets (no connection within the connect
    /// timeout, no answer to ARP, no answer within the limit); how it showed.
    Silent(String),
    /// The host name does not resolve.
    Resolve(String),
    /// Anything else, as the HTTP client put it.
    Other(String),
}

impl Probe {
    pub fn answered(&self) -> bool {
        matches!(self, Probe::Answered { .. })
    }
}

/// The magic packets the proxy would send: for the configured MAC, else for the one learned (see
/// "Learning the MAC" in docs/behaviour.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magic {
    pub mac: MacAddr,
    pub sender: SenderConfig,
    /// The MAC is the learned one: none is configured.
    pub learned: bool,
}

impl Magic {
    /// The magic packets of `cfg`'s machine, `learned` being the record the proxy would use (for
    /// Ollama's address); none for an always-on machine, never woken.
    pub fn of(cfg: &BackendConfig, learned: Option<&Learned>) -> Option<Magic> {
        if cfg.always_on {
            return None;
        }
        match &cfg.wake.magic {
            Some(m) => Some(Magic {
                mac: m.mac,
                sender: m.sender.clone(),
                learned: false,
            }),
            None => learned.map(|l| Magic {
                mac: l.mac,
                sender: cfg.wake.for_learned.sender(l.broadcast),
                learned: true,
            }),
        }
    }
}

/// What `--wake` did: the outcome of each method, and how the wait for Ollama ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeSent {
    /// One line per method (as `wake` prints it), and whether it worked.
    pub outcomes: Vec<(bool, String)>,
    /// Ollama did not answer before the wake: how long it then took to answer (`Ok`) or how
    /// long it was waited for in vain (`Err`). `None`: it answered already, or nothing was sent.
    pub waited: Option<Result<Duration, Duration>>,
}

/// Whether a socket can be bound to the configured interface (`SO_BINDTODEVICE`), as the proxy
/// does when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Works,
    /// No such interface; the ones there are.
    NoSuchDevice {
        existing: Vec<String>,
    },
    /// Not allowed; whether the effective capabilities hold CAP_NET_RAW (`None`: unknown).
    Denied {
        cap_net_raw: Option<bool>,
    },
    Other(String),
}

/// Where the proxy runs, as far as it matters for broadcasts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The sign that this is a container (`/.dockerenv`, a cgroup path, ...), if any.
    pub container: Option<String>,
    /// Some network interface is a real device (not virtual): a sign of the host's network.
    pub physical_nic: bool,
}

/// The machine's cache file, as the proxy would use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFile {
    /// `CACHE_FILE=` (empty): kept in memory only.
    Off,
    /// It could not be checked: why.
    Unchecked(String),
    /// A symbolic link that cannot be followed: the proxy refuses to start.
    Unresolvable { path: PathBuf, error: String },
    Set {
        path: PathBuf,
        /// A temp file could be made beside it (`Err`: why not).
        writable: Result<(), String>,
        contents: Contents,
    },
}

/// What the cache file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Not written yet.
    Missing,
    /// Unreadable or corrupt (the proxy starts empty and warns): why.
    Unusable(String),
    /// The model list's age, and whether a pull or delete marked it stale; `None`: no list yet.
    ModelList(Option<(Duration, bool)>),
}
