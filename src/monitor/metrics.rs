//! The Prometheus metrics of one machine, their handles made once at start so that nothing on the
//! request path allocates or looks a label set up (see "Monitoring" in docs/behaviour.md).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::machine::State;

/// Label pairs; made only at start and for the (rare) sleeps.
pub type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

/// What started a wake cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeCause {
    /// A request that needs the machine.
    Work,
    /// The "Wake now" button.
    Manual,
    /// A wake sent alongside a request after WAKE_INTERVAL of silence.
    WakeInterval,
}

impl WakeCause {
    pub const ALL: [WakeCause; 3] = [WakeCause::Work, WakeCause::Manual, WakeCause::WakeInterval];

    pub fn as_str(self) -> &'static str {
        match self {
            WakeCause::Work => "work",
            WakeCause::Manual => "manual",
            WakeCause::WakeInterval => "wake_interval",
        }
    }
}

/// How a wake cycle ended (`sent`: a WAKE_INTERVAL wake, which is no cycle, went out).
pub const OUTCOMES: [&str; 4] = ["awake", "timeout", "failed", "sent"];
/// Which kind of failure talking to Ollama, in the order of [`UpstreamError`].
pub const UPSTREAM_ERRORS: [&str; 4] = ["connect", "timeout", "unacked", "protocol"];

/// A failure talking to Ollama.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    /// The connect failed (asleep, or refused).
    Connect,
    /// No answer in time.
    Timeout,
    /// Data went unacknowledged.
    Unacked,
    /// A broken answer or connection.
    Protocol,
}

/// Every metric family, registered once in the proxy's own registry (no global one).
pub struct Families {
    state: Gauges,
    cycles: Counters,
    wake_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pub(super) sleeps: Counters,
    asleep_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    held: Gauges,
    released: Counters,
    failed: Counters,
    rejected: Counters,
    streams: Gauges,
    upstream: Counters,
    pub(super) requests: super::requests::RequestFamilies,
}

fn wake_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0,
    ])
}

impl Families {
    pub fn register(reg: &mut Registry) -> Families {
        let f = Families {
            state: Gauges::default(),
            cycles: Counters::default(),
            wake_seconds: Family::new_with_constructor(wake_histogram),
            sleeps: Counters::default(),
            asleep_seconds: Family::default(),
            held: Gauges::default(),
            released: Counters::default(),
            failed: Counters::default(),
            rejected: Counters::default(),
            streams: Gauges::default(),
            upstream: Counters::default(),
            requests: super::requests::RequestFamilies::register(reg),
        };
        reg.register(
            "ollama_proxy_backend_state",
            "The machine's state: 1 for the state it is in, 0 for the others",
            f.state.clone(),
        );
        reg.register(
            "ollama_proxy_wake_cycles",
            "Wake cycles ended, by cause and outcome",
            f.cycles.clone(),
        );
        reg.register_with_unit(
            "ollama_proxy_wake_duration",
            "Time from the wake to Ollama's first answer",
            Unit::Seconds,
            f.wake_seconds.clone(),
        );
        reg.register(
            "ollama_proxy_sleeps",
            "Sleep methods sent, by method and outcome (asleep, ignored, error)",
            f.sleeps.clone(),
        );
        reg.register_with_unit(
            "ollama_proxy_asleep",
            "Time the machine was known asleep",
            Unit::Seconds,
            f.asleep_seconds.clone(),
        );
        reg.register(
            "ollama_proxy_held_requests",
            "Requests held now while the machine wakes",
            f.held.clone(),
        );
        reg.register(
            "ollama_proxy_held_released",
            "Held requests released to an awake Ollama",
            f.released.clone(),
        );
        reg.register(
            "ollama_proxy_held_failed",
            "Held requests answered with an error because the wake failed",
            f.failed.clone(),
        );
        reg.register(
            "ollama_proxy_queue_rejections",
            "Requests refused because the queue of held requests was full",
            f.rejected.clone(),
        );
        reg.register(
            "ollama_proxy_streams_in_flight",
            "Requests sent to the machine whose answer has not ended",
            f.streams.clone(),
        );
        reg.register(
            "ollama_proxy_upstream_errors",
            "Failures talking to Ollama, by kind",
            f.upstream.clone(),
        );
        f
    }
}

/// One machine's handles.
pub struct Handles {
    pub state: [Gauge; 5],
    /// `[cause][outcome]`, in the order of [`WakeCause::ALL`] and [`OUTCOMES`].
    pub cycles: [[Counter; 4]; 3],
    pub wake_seconds: Histogram,
    pub asleep_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub held: Gauge,
    pub released: Counter,
    pub failed: Counter,
    pub rejected: Counter,
    pub streams: Gauge,
    pub upstream: [Counter; 4],
    /// Requests this machine answered.
    pub requests: super::requests::Requests,
}

pub const STATES: [State; 5] = [
    State::Unknown,
    State::Awake,
    State::Asleep,
    State::Waking,
    State::Sleeping,
];

fn one(name: &str) -> Labels {
    vec![("backend", name.to_string())]
}

fn two(name: &str, key: &'static str, value: &str) -> Labels {
    vec![("backend", name.to_string()), (key, value.to_string())]
}

impl Handles {
    pub fn new(f: &Families, name: &str) -> Handles {
        let cycle = |c: WakeCause, o: &str| {
            let labels = vec![
                ("backend", name.to_string()),
                ("cause", c.as_str().to_string()),
                ("outcome", o.to_string()),
            ];
            f.cycles.get_or_create_owned(&labels)
        };
        Handles {
            state: STATES.map(|s| f.state.get_or_create_owned(&two(name, "state", s.as_str()))),
            cycles: WakeCause::ALL.map(|c| OUTCOMES.map(|o| cycle(c, o))),
            wake_seconds: f.wake_seconds.get_or_create_owned(&one(name)),
            asleep_seconds: f.asleep_seconds.get_or_create_owned(&one(name)),
            held: f.held.get_or_create_owned(&one(name)),
            released: f.released.get_or_create_owned(&one(name)),
            failed: f.failed.get_or_create_owned(&one(name)),
            rejected: f.rejected.get_or_create_owned(&one(name)),
            streams: f.streams.get_or_create_owned(&one(name)),
            upstream: UPSTREAM_ERRORS
                .map(|k| f.upstream.get_or_create_owned(&two(name, "kind", k))),
            requests: super::requests::Requests::new(&f.requests, name),
        }
    }

    /// Handles that belong to no registry (a driver made outside `serve`, as in unit tests).
    pub fn detached() -> Handles {
        Handles {
            state: Default::default(),
            cycles: Default::default(),
            wake_seconds: wake_histogram(),
            asleep_seconds: Default::default(),
            held: Default::default(),
            released: Default::default(),
            failed: Default::default(),
            rejected: Default::default(),
            streams: Default::default(),
            upstream: Default::default(),
            requests: Default::default(),
        }
    }
}
