//! `ollama-proxy doctor`: checks the configuration as the proxy would use it, machine by machine,
//! and says what it found with advice (see "Doctor" in docs/behaviour.md). Gathering (`gather`,
//! `host`) is kept apart from judging (`checks`), which is pure.

mod checks;
mod facts;
mod finding;
mod gather;
mod host;
mod network;

use std::time::Duration;

use futures_util::future::join_all;

use crate::config::{BackendConfig, Config};
use facts::Host;
use finding::Finding;
use gather::Gathered;

pub use gather::ANSWER_LIMIT;

/// What `doctor` prints, and its exit code (0: nothing wrong, 1: problems).
pub struct Report {
    pub lines: Vec<String>,
    pub code: u8,
}

/// Checks every machine of `config` (concurrently); with `send_wake`, each gets one wake first.
pub async fn run(config: &Config, client: &reqwest::Client, send_wake: bool) -> Report {
    let host = host::gather();
    let several = config.backends.len() > 1;
    let gathered = join_all(config.backends.iter().map(|b| {
        let file = config
            .cache_file
            .as_deref()
            .map(|base| crate::backend::cache_file_of(base, several, &b.name));
        gather::machine(b, client, file, send_wake)
    }))
    .await;
    let mut lines = Vec::new();
    let mut all = Vec::new();
    for (b, g) in config.backends.iter().zip(&gathered) {
        let findings = judge(b, g, &host, config.cache_duration);
        lines.extend(findings.iter().map(|f| f.line(&b.name).to_string()));
        all.extend(findings);
    }
    lines.push(finding::summary(config.backends.len(), all.iter()));
    Report {
        lines,
        code: finding::exit_code(all.iter()),
    }
}

/// Every finding about one machine, in the order they are printed.
fn judge(cfg: &BackendConfig, g: &Gathered, host: &Host, fresh_for: Duration) -> Vec<Finding> {
    let mut out = vec![checks::ollama(cfg, &g.probe, g.wake.as_ref())];
    out.push(checks::wake_methods(cfg));
    if let Some(sent) = &g.wake {
        out.extend(checks::wake_sent(sent));
    }
    out.extend(checks::interface(cfg, g.bind.as_ref()));
    let direct = g.net.as_ref().and_then(network::Net::direct);
    out.extend(checks::container(cfg, host, direct));
    if let Some(net) = &g.net {
        out.extend(network::findings(cfg, net, g.probe.answered()));
    }
    out.push(checks::cache(&g.cache, fresh_for));
    out
}
