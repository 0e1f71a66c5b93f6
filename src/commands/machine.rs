//! `wake` and `sleep`: one machine woken or put to sleep now, and, with `--wait`, watched until
//! it answers or goes silent (see "Commands" in docs/behaviour.md).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{fatal, http_client, usage_error, EXIT_USAGE};
use crate::cli::{SleepCmdArgs, WakeCmdArgs};
use crate::config::{BackendConfig, Config, OllamaConfig, WakeConfig};
use crate::sleep::Sleeper;
use crate::upstream::ConnectError;
use crate::wake::Waker;

/// `ollama-proxy wake`: one wake of one machine with every method configured for it; with `--wait`,
/// poll its Ollama. Without a configuration file, the flags and environment alone say how (and
/// Ollama's address is needed only for `--wait`); with one, the `[[backend]]` named (or the only
/// one) is woken as `serve` would wake it (see "Commands" in docs/behaviour.md).
pub async fn wake(args: WakeCmdArgs) -> ExitCode {
    let (name, wake_cfg, ollama) = match target(&args) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let name = name.as_deref();
    if !wake_cfg.is_enabled() {
        let whom = name.map(|n| format!(" to {n}")).unwrap_or_default();
        fatal(format_args!(
            "nothing to send{whom}: set --mac (WOL_MAC) and/or --wake-url (WAKE_URL); a MAC the proxy learned is sent by `ollama-proxy doctor --wake`"
        ));
        return ExitCode::from(EXIT_USAGE);
    }
    // Built before anything is sent, so that a client that cannot work fails the command up front.
    let probe_timeout = ollama.connect_timeout.max(Duration::from_secs(1));
    let client = match http_client(ollama.connect_timeout, probe_timeout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let waker = match Waker::new(&wake_cfg) {
        Ok(w) => w,
        Err(e) => {
            fatal(e);
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = name {
        tell!("waking {n} ({})", ollama.upstream.authority);
    }
    if let Some(m) = &wake_cfg.magic {
        tell!(
            "waking {} (UDP port {}{})",
            m.mac,
            m.sender.port,
            m.sender
                .interface
                .as_ref()
                .map(|i| format!(", interface {i}"))
                .unwrap_or_default()
        );
    }
    let outcomes = waker.wake_all().await;
    if !any_worked(&outcomes, |o| o.is_ok(), "wake") {
        return ExitCode::FAILURE;
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    wait_for_ollama(&client, &ollama).await
}

/// What `wake` wakes: the machine's name (with a configuration file only), how it is woken, and
/// where its Ollama is; a usage error (printed) when that cannot be said.
fn target(args: &WakeCmdArgs) -> Result<(Option<String>, WakeConfig, OllamaConfig), ExitCode> {
    let usage = |message: String| {
        fatal(message);
        ExitCode::from(EXIT_USAGE)
    };
    if args.serve.config.is_none() {
        if let Some(name) = &args.backend {
            return Err(usage(format!("--backend {name:?}: machines are named in a configuration file: give it with --config (CONFIG)")));
        }
        let wake = WakeConfig::from_args(&args.serve.wake).map_err(|e| usage_error(&e))?;
        let ollama = OllamaConfig::from_args(&args.serve.ollama).map_err(|e| usage_error(&e))?;
        return Ok((None, wake, ollama));
    }
    let config = Config::from_args(&args.serve).map_err(|e| usage_error(&e))?;
    let backend = chosen(&config, args.backend.as_deref()).map_err(usage)?;
    if backend.always_on {
        let name = &backend.name;
        return Err(usage(format!(
            "{name} is always on (always_on = true): it is never woken"
        )));
    }
    Ok((
        Some(backend.name.clone()),
        backend.wake.clone(),
        backend.ollama.clone(),
    ))
}

async fn wait_for_ollama(client: &reqwest::Client, ollama: &OllamaConfig) -> ExitCode {
    let url = ollama.upstream.url("/api/version");
    tell!(
        "waiting up to {} for Ollama at {url}",
        humantime::format_duration(ollama.wake_timeout)
    );
    let answered = every_half_second(ollama.wake_timeout, "still waiting", || async {
        let resp = client.get(&url).send().await.ok()?;
        let ok = resp.status().is_success();
        ok.then_some(resp.text().await.unwrap_or_default())
    })
    .await;
    if let Some((body, after)) = answered {
        tell!(
            "Ollama answered after {:.1}s: {}",
            after.as_secs_f64(),
            body.trim()
        );
        return ExitCode::SUCCESS;
    }
    tell_err!(
        "ollama-proxy: Ollama did not answer within {} (WAKE_TIMEOUT)",
        humantime::format_duration(ollama.wake_timeout)
    );
    ExitCode::FAILURE
}

/// The machine `wake` or `sleep` acts on: the one named by `--backend`, or the only one.
fn chosen<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a BackendConfig, String> {
    let names = || {
        let all: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        all.join(", ")
    };
    match (name, config.backends.as_slice()) {
        (Some(name), all) => all.iter().find(|b| b.name == name).ok_or_else(|| {
            format!(
                "--backend {name:?}: no such backend (there are: {})",
                names()
            )
        }),
        (None, [only]) => Ok(only),
        (None, _) => Err(format!(
            "several backends: name one with --backend ({})",
            names()
        )),
    }
}

/// `ollama-proxy sleep`: the configured sleep methods, now; with `--wait`, until the machine is
/// silent (see "Commands" in docs/behaviour.md).
pub async fn sleep(args: SleepCmdArgs) -> ExitCode {
    let config = match Config::from_args(&args.serve) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let backend = match chosen(&config, args.backend.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            fatal(e);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !backend.sleep.has_method() {
        fatal(format_args!(
            "nothing to send to {}: set --sleep-packet (SLEEP_PACKET), --sleep-url (SLEEP_URL) and/or --sleep-command (SLEEP_COMMAND)",
            backend.name
        ));
        return ExitCode::from(EXIT_USAGE);
    }
    let sleeper = match Sleeper::new(&backend.sleep) {
        Ok(s) => s,
        Err(e) => {
            fatal(e);
            return ExitCode::FAILURE;
        }
    };
    tell!(
        "putting {} to sleep ({})",
        backend.name,
        backend.sleep.methods()
    );
    let outcomes = sleeper.sleep_all().await;
    if !any_worked(&outcomes, |o| o.is_ok(), "sleep") {
        return ExitCode::FAILURE;
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    wait_for_silence(&backend.ollama, backend.sleep.confirm).await
}

/// Probes the machine (a TCP connect to Ollama's port, every half second) until it is silent or
/// `limit` passed.
async fn wait_for_silence(ollama: &OllamaConfig, limit: Duration) -> ExitCode {
    let client = crate::upstream::Client::new(ollama.upstream.clone(), ollama.connect_timeout);
    tell!(
        "waiting up to {} for {} to go silent",
        humantime::format_duration(limit),
        ollama.upstream.authority
    );
    let silent = every_half_second(limit, "still answering", || async {
        let answered = matches!(
            client.connect().await,
            Ok(_) | Err(ConnectError::Refused(_) | ConnectError::Local(_))
        );
        (!answered).then_some(())
    })
    .await;
    if let Some(((), after)) = silent {
        tell!("silent after {:.1}s", after.as_secs_f64());
        return ExitCode::SUCCESS;
    }
    fatal(format_args!(
        "{} still answered {} after the sleep (SLEEP_CONFIRM)",
        ollama.upstream.authority,
        humantime::format_duration(limit)
    ));
    ExitCode::FAILURE
}

/// Runs `attempt` every half second until it gives an answer or `limit` passed, saying `still`
/// (with the seconds so far) every 5 s: the answer, and how long it took.
async fn every_half_second<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    still: &str,
    mut attempt: impl FnMut() -> F,
) -> Option<(T, Duration)> {
    let start = Instant::now();
    let mut last_report = Duration::ZERO;
    while start.elapsed() < limit {
        let tried = Instant::now();
        if let Some(answer) = attempt().await {
            return Some((answer, start.elapsed()));
        }
        let elapsed = start.elapsed();
        if elapsed - last_report >= Duration::from_secs(5) {
            last_report = elapsed;
            tell!("  {still}… {}s", elapsed.as_secs());
        }
        let pause = Duration::from_millis(500).saturating_sub(tried.elapsed());
        tokio::time::sleep(pause.min(limit.saturating_sub(start.elapsed()))).await;
    }
    None
}

/// Prints what each method did; `false`, said on stderr, when every `what` method failed.
fn any_worked<O: std::fmt::Display>(
    outcomes: &[O],
    worked: impl Fn(&O) -> bool,
    what: &str,
) -> bool {
    for o in outcomes {
        tell!("{o}");
    }
    let any = outcomes.iter().any(worked);
    if !any {
        fatal(format_args!("every {what} method failed"));
    }
    any
}
