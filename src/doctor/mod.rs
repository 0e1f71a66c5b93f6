//! `ollama-proxy doctor`: checks the configuration as the proxy would use it, machine by machine,
//! and says what it found with advice (see "Doctor" in docs/behaviour.md). Gathering (`gather`,
//! `host`) is kept apart from judging (`checks`), which is pure.

mod checks;
mod facts;
mod finding;
mod gather;
mod host;
mod learning;
mod network;
mod probe;

use std::time::Duration;

use futures_util::future::join_all;

use crate::config::{BackendConfig, CacheFile, Config};
use facts::Host;
use finding::Finding;
use gather::Gathered;

pub use probe::ANSWER_LIMIT;

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
        let file = file_of(&config.cache_file, several, &b.name);
        async move { gather::machine(b, client, &file, send_wake).await }
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

/// The cache file of the machine `name`, placed as `serve` would place it.
fn file_of(base: &CacheFile, several: bool, name: &str) -> CacheFile {
    let own = |p: &std::path::Path| crate::backend::cache_file_of(p, several, name);
    match base {
        CacheFile::Given(p) => CacheFile::Given(own(p)),
        CacheFile::Default(p) => CacheFile::Default(own(p)),
        other => other.clone(),
    }
}

/// Every finding about one machine, in the order they are printed.
fn judge(cfg: &BackendConfig, g: &Gathered, host: &Host, fresh_for: Duration) -> Vec<Finding> {
    let magic = g.magic.as_ref();
    let by_learned = magic.is_some_and(|m| m.learned);
    let mut out = vec![checks::ollama(cfg, &g.probe, g.wake.as_ref(), by_learned)];
    out.push(checks::wake_methods(cfg, magic, g.seen.as_ref()));
    if let Some(sent) = &g.wake {
        out.extend(checks::wake_sent(sent));
    }
    out.extend(checks::interface(magic, g.bind.as_ref()));
    let direct = g.net.as_ref().and_then(network::Net::direct);
    out.extend(checks::container(magic.is_some(), host, direct));
    if let Some(net) = &g.net {
        out.extend(network::findings(cfg, net, magic, g.probe.answered()));
    }
    out.extend(learning::findings(
        cfg,
        g.learned.as_ref(),
        g.ip,
        g.seen.as_ref(),
    ));
    out.push(checks::cache(&g.cache, fresh_for));
    out
}
