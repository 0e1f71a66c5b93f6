//! The machines: one [`BackendConfig`] per `[[backend]]` table of the config file, or one named
//! `default` from the flags and environment (see "Configuration file" in docs/behaviour.md).

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::file::{ConfigFile, RawBackend, Text};
use super::layer::{default, relocate, Layer};
use super::parse::{bad, nonzero, ConfigError};
use super::sleep::{self, SleepConfig, Timing};
use super::{parse_upstream, points_at, OllamaConfig, WakeConfig};
use crate::cli::{ServeArgs, SleepArgs, WakeArgs};

/// The name of the one backend built from the flags and environment.
pub const DEFAULT_NAME: &str = "default";

/// One machine running Ollama: where it is, how to wake it, and how much it is preferred.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Unique, `[a-z0-9-]+`; `default` for the one built from the flags and environment.
    pub name: String,
    /// Its address and timeouts (its own `connect_timeout`/`wake_timeout`, or the global ones).
    pub ollama: OllamaConfig,
    /// How to wake it; nothing for an `always_on` machine.
    pub wake: WakeConfig,
    /// Lower is preferred (see "Routing" in docs/behaviour.md); default: its place in the file,
    /// from 1.
    pub priority: i64,
    /// Never woken: a failed connect is an error, not a sign of sleep.
    pub always_on: bool,
    /// How and when to put it to sleep (see "Sleep" in docs/behaviour.md).
    pub sleep: SleepConfig,
}

/// The global connect and wake timeouts, the defaults of every backend.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    wake: Duration,
}

/// The backends, preferred first (lowest `priority`, then order in the file); never empty.
pub(super) fn build(
    layer: &Layer,
    args: &ServeArgs,
    bind: SocketAddr,
) -> Result<Vec<BackendConfig>, ConfigError> {
    let timeouts = Timeouts {
        connect: layer.get(
            &args.ollama.connect_timeout,
            ("--connect-timeout", "CONNECT_TIMEOUT"),
            default::CONNECT_TIMEOUT,
            nonzero,
        )?,
        wake: layer.get(
            &args.ollama.wake_timeout,
            ("--wake-timeout", "WAKE_TIMEOUT"),
            default::WAKE_TIMEOUT,
            nonzero,
        )?,
    };
    let sleep = sleep::timing(layer, &args.sleep)?;
    match layer.file.filter(|f| !f.raw.backend.is_empty()) {
        Some(file) => from_file(file, args, timeouts, sleep, bind),
        None => Ok(vec![from_args(args, timeouts, sleep, bind)?]),
    }
}

/// The one backend of a set-up without `[[backend]]` tables: today's flags and environment.
fn from_args(
    args: &ServeArgs,
    timeouts: Timeouts,
    sleep: Timing,
    bind: SocketAddr,
) -> Result<BackendConfig, ConfigError> {
    let url = args
        .ollama
        .ollama_url
        .as_deref()
        .unwrap_or(default::OLLAMA_URL);
    let upstream = parse_upstream(url)?;
    if points_at(&upstream, bind) {
        return Err(bad(
            "--ollama-url",
            "OLLAMA_URL",
            url,
            format!(
                "points back at this proxy ({bind}); set OLLAMA_URL to your Ollama server, \
                 e.g. http://192.168.1.50:11434"
            ),
        ));
    }
    let wake = WakeConfig::from_args(&args.wake)?;
    // The timing was read with the file's globals already: only the methods come from here.
    let methods = SleepArgs {
        sleep_packet: args.sleep.sleep_packet.clone(),
        sleep_url: args.sleep.sleep_url.clone(),
        sleep_command: args.sleep.sleep_command.clone(),
        sleep_after: args.sleep.sleep_after.clone(),
        ..SleepArgs::default()
    };
    Ok(BackendConfig {
        name: DEFAULT_NAME.into(),
        ollama: OllamaConfig {
            upstream,
            connect_timeout: timeouts.connect,
            wake_timeout: timeouts.wake,
        },
        sleep: sleep::build(&methods, sleep, &wake, false)?,
        wake,
        priority: 1,
        always_on: false,
    })
}

/// The backends of the file's `[[backend]]` tables, preferred first.
fn from_file(
    file: &ConfigFile,
    args: &ServeArgs,
    timeouts: Timeouts,
    sleep: Timing,
    bind: SocketAddr,
) -> Result<Vec<BackendConfig>, ConfigError> {
    refuse_machine_flags(file, args)?;
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(file.raw.backend.len());
    for (i, raw) in file.raw.backend.iter().enumerate() {
        let b = backend(file, i, raw, timeouts, sleep, bind)?;
        if backends.iter().any(|o| o.name == b.name) {
            let key = format!("backend[{i}].name");
            let reason = format!("{:?}: another backend has this name", b.name);
            return Err(file.error_at(&raw.name.span(), &key, reason).into());
        }
        if let Some(o) = backends
            .iter()
            .find(|o| same_ollama(&o.ollama.upstream, &b.ollama.upstream))
        {
            let key = format!("backend[{i}].url");
            let reason = format!(
                "{:?}: backend {:?} has the same Ollama (one machine would be woken, cached and \
                 counted twice)",
                raw.url.get_ref(),
                o.name
            );
            return Err(file.error_at(&raw.url.span(), &key, reason).into());
        }
        backends.push(b);
    }
    // Stable: equal priorities keep the file's order.
    backends.sort_by_key(|b| b.priority);
    Ok(backends)
}

/// Two URLs naming the same Ollama (host names compare without regard to case).
fn same_ollama(a: &super::Upstream, b: &super::Upstream) -> bool {
    a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port && a.prefix == b.prefix
}

/// One source of truth: with backends in the file, the flags and variables that describe the one
/// machine of a set-up without a file are refused rather than silently ignored.
fn refuse_machine_flags(file: &ConfigFile, args: &ServeArgs) -> Result<(), ConfigError> {
    let (o, w, s) = (&args.ollama, &args.wake, &args.sleep);
    let set = [
        (&o.ollama_url, "--ollama-url", "OLLAMA_URL"),
        (&w.mac, "--mac", "WOL_MAC"),
        (&w.broadcast, "--broadcast", "WOL_BROADCAST"),
        (&w.wol_port, "--wol-port", "WOL_PORT"),
        (&w.interface, "--interface", "WOL_INTERFACE"),
        (&w.secureon, "--secureon", "WOL_SECUREON"),
        (&w.wake_url, "--wake-url", "WAKE_URL"),
        (&w.wake_key, "--wake-key", "WAKE_KEY"),
        (&s.sleep_packet, "--sleep-packet", "SLEEP_PACKET"),
        (&s.sleep_url, "--sleep-url", "SLEEP_URL"),
        (&s.sleep_command, "--sleep-command", "SLEEP_COMMAND"),
    ];
    match set.into_iter().find(|(value, _, _)| value.is_some()) {
        Some((_, flag, env)) => Err(ConfigError {
            flag,
            env,
            value: None,
            reason: format!(
                "cannot be used with the [[backend]] tables of {}: each machine's url, wake and \
                 sleep settings go in its table (one source of truth)",
                file.path.display()
            ),
        }),
        None => Ok(()),
    }
}

/// The `[[backend]]` table number `i`.
fn backend(
    file: &ConfigFile,
    i: usize,
    raw: &RawBackend,
    timeouts: Timeouts,
    sleep: Timing,
    bind: SocketAddr,
) -> Result<BackendConfig, ConfigError> {
    let key = |k: &str| format!("backend[{i}].{k}");
    let name = raw.name.get_ref();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        let reason = format!("{name:?}: a name is lowercase letters, digits and '-'");
        return Err(file.error_at(&raw.name.span(), &key("name"), reason).into());
    }
    let url = &raw.url;
    let upstream =
        parse_upstream(url.get_ref()).map_err(|e| relocate(file, e, &url.span(), &key("url")))?;
    if points_at(&upstream, bind) {
        let reason = format!("{:?}: points back at this proxy ({bind})", url.get_ref());
        return Err(file.error_at(&url.span(), &key("url"), reason).into());
    }
    let wake = WakeConfig::from_args(&wake_args(raw)).map_err(|e| {
        let (k, span) = wake_key(raw, e.flag);
        relocate(file, e, &span, &key(k))
    })?;
    let always_on = raw.always_on.as_ref().is_some_and(|a| *a.get_ref());
    if let Some(a) = raw
        .always_on
        .as_ref()
        .filter(|_| always_on && wake.is_enabled())
    {
        let reason =
            "an always-on backend is never woken: remove its mac and wake_url, or always_on";
        return Err(file.error_at(&a.span(), &key("always_on"), reason).into());
    }
    let sleep = sleep::build(&sleep_args(raw), sleep, &wake, always_on).map_err(|e| {
        let (k, span) = sleep_key(raw, e.flag);
        relocate(file, e, &span, &key(k))
    })?;
    let timeout = |v: &Option<Spanned<Text>>, k: &str, flag, env, global| match v {
        Some(v) => {
            nonzero(flag, env, &v.get_ref().0).map_err(|e| relocate(file, e, &v.span(), &key(k)))
        }
        None => Ok(global),
    };
    Ok(BackendConfig {
        name: name.clone(),
        ollama: OllamaConfig {
            upstream,
            connect_timeout: timeout(
                &raw.connect_timeout,
                "connect_timeout",
                "--connect-timeout",
                "CONNECT_TIMEOUT",
                timeouts.connect,
            )?,
            wake_timeout: timeout(
                &raw.wake_timeout,
                "wake_timeout",
                "--wake-timeout",
                "WAKE_TIMEOUT",
                timeouts.wake,
            )?,
        },
        wake,
        priority: raw.priority.as_ref().map_or(i as i64 + 1, |p| *p.get_ref()),
        always_on,
        sleep,
    })
}

/// The table's sleep settings as the flags would carry them.
fn sleep_args(raw: &RawBackend) -> SleepArgs {
    let text = |v: &Option<Spanned<Text>>| v.as_ref().map(|v| v.get_ref().0.clone());
    SleepArgs {
        sleep_packet: text(&raw.sleep_packet),
        sleep_url: text(&raw.sleep_url),
        sleep_command: text(&raw.sleep_command),
        sleep_after: text(&raw.sleep_after),
        min_awake: text(&raw.min_awake),
        sleep_confirm: text(&raw.sleep_confirm),
        sleep_ignore_ps: text(&raw.sleep_ignore_ps),
    }
}

/// The table key behind a sleep flag's error, and where its value is (the table's name when
/// unset).
fn sleep_key(raw: &RawBackend, flag: &str) -> (&'static str, std::ops::Range<usize>) {
    let (k, v) = match flag {
        "--sleep-packet" => ("sleep_packet", &raw.sleep_packet),
        "--sleep-url" => ("sleep_url", &raw.sleep_url),
        "--sleep-command" => ("sleep_command", &raw.sleep_command),
        "--min-awake" => ("min_awake", &raw.min_awake),
        "--sleep-confirm" => ("sleep_confirm", &raw.sleep_confirm),
        "--sleep-ignore-ps" => ("sleep_ignore_ps", &raw.sleep_ignore_ps),
        _ => ("sleep_after", &raw.sleep_after),
    };
    (k, v.as_ref().map_or_else(|| raw.name.span(), |v| v.span()))
}

/// The table's wake settings as the flags would carry them, for the flags' own checks.
fn wake_args(raw: &RawBackend) -> WakeArgs {
    let text = |v: &Option<Spanned<Text>>| v.as_ref().map(|v| v.get_ref().0.clone());
    WakeArgs {
        mac: text(&raw.mac),
        broadcast: text(&raw.broadcast),
        wol_port: text(&raw.wol_port),
        interface: text(&raw.interface),
        secureon: text(&raw.secureon),
        wake_url: text(&raw.wake_url),
        wake_key: text(&raw.wake_key),
    }
}

/// The table key behind a wake flag's error, and where its value is (the table's name when unset).
fn wake_key(raw: &RawBackend, flag: &str) -> (&'static str, std::ops::Range<usize>) {
    let (k, v) = match flag {
        "--mac" => ("mac", &raw.mac),
        "--broadcast" => ("broadcast", &raw.broadcast),
        "--wol-port" => ("wol_port", &raw.wol_port),
        "--interface" => ("interface", &raw.interface),
        "--secureon" => ("secureon", &raw.secureon),
        "--wake-url" => ("wake_url", &raw.wake_url),
        _ => ("wake_key", &raw.wake_key),
    };
    (k, v.as_ref().map_or_else(|| raw.name.span(), |v| v.span()))
}
