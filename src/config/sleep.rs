//! Sleep settings: the methods (sleep-on-lan packet, sleep URL, sleep command) and when to use
//! them (SLEEP_AFTER, MIN_AWAKE, SLEEP_CONFIRM, SLEEP_IGNORE_PS); see "Sleep" in
//! docs/behaviour.md.

use std::time::Duration;

use reqwest::Url;
use wol::{MacAddr, SenderConfig};

use super::layer::{default, Layer};
use super::parse::{bad, bad_secret, duration, nonzero, ConfigError};
use super::WakeConfig;
use crate::cli::SleepArgs;
use crate::units::Unit;

/// The sleep-on-lan packet: the wake packet's MAC reversed, to the wake packets' destinations.
#[derive(Debug, Clone)]
pub struct SleepPacket {
    pub mac: MacAddr,
    pub sender: SenderConfig,
}

/// One machine's sleep methods and when to use them.
#[derive(Debug, Clone)]
pub struct SleepConfig {
    pub packet: Option<SleepPacket>,
    pub url: Option<Url>,
    /// The program and its arguments, split like a shell would.
    pub command: Option<Vec<String>>,
    /// Put to sleep after this long idle; `None`: never on its own (the `sleep` command still
    /// works).
    pub after: Option<Duration>,
    pub min_awake: Duration,
    pub confirm: Duration,
    pub ignore_ps: bool,
}

impl Default for SleepConfig {
    fn default() -> Self {
        SleepConfig {
            packet: None,
            url: None,
            command: None,
            after: None,
            min_awake: Duration::from_secs(300),
            confirm: Duration::from_secs(120),
            ignore_ps: false,
        }
    }
}

impl SleepConfig {
    /// At least one sleep method is configured.
    pub fn has_method(&self) -> bool {
        self.packet.is_some() || self.url.is_some() || self.command.is_some()
    }

    /// The methods' names, for logs: `sleep packet, sleep URL`.
    pub fn methods(&self) -> String {
        let names = [
            self.packet.as_ref().map(|_| "sleep packet"),
            self.url.as_ref().map(|_| "sleep URL"),
            self.command.as_ref().map(|_| "sleep command"),
        ];
        names.into_iter().flatten().collect::<Vec<_>>().join(", ")
    }
}

/// When to sleep, as the global options say (each backend's default).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    after: Option<Duration>,
    min_awake: Duration,
    confirm: Duration,
    ignore_ps: bool,
}

/// The global SLEEP_AFTER, MIN_AWAKE, SLEEP_CONFIRM and SLEEP_IGNORE_PS: flag, variable, file.
pub(super) fn timing(l: &Layer, a: &SleepArgs) -> Result<Timing, ConfigError> {
    Ok(Timing {
        after: l
            .get_opt(
                &a.sleep_after,
                ("--sleep-after", "SLEEP_AFTER"),
                sleep_after,
            )?
            .flatten(),
        min_awake: l.get(
            &a.min_awake,
            ("--min-awake", "MIN_AWAKE"),
            default::MIN_AWAKE,
            seconds,
        )?,
        confirm: l.get(
            &a.sleep_confirm,
            ("--sleep-confirm", "SLEEP_CONFIRM"),
            default::SLEEP_CONFIRM,
            nonzero,
        )?,
        ignore_ps: l
            .get_opt(
                &a.sleep_ignore_ps,
                ("--sleep-ignore-ps", "SLEEP_IGNORE_PS"),
                boolean,
            )?
            .unwrap_or(false),
    })
}

/// `off`, or a non-zero duration.
fn sleep_after(
    flag: &'static str,
    env: &'static str,
    v: &str,
) -> Result<Option<Duration>, ConfigError> {
    if v.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    nonzero(flag, env, v).map(Some)
}

fn seconds(flag: &'static str, env: &'static str, v: &str) -> Result<Duration, ConfigError> {
    duration(flag, env, v, Unit::Seconds)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub(super) fn boolean(flag: &'static str, env: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(flag, env, v, "expected true or false")),
    }
}

/// One machine's sleep settings: its methods from `a`, its timing from `a` where set, else from
/// `global`. `wake` supplies the MAC and destinations of the sleep packet; an `always_on`
/// machine has no sleep settings.
pub(super) fn build(
    a: &SleepArgs,
    global: Timing,
    wake: &WakeConfig,
    always_on: bool,
) -> Result<SleepConfig, ConfigError> {
    let packet = match &a.sleep_packet {
        Some(v) if boolean("--sleep-packet", "SLEEP_PACKET", v)? => match &wake.magic {
            Some(m) => Some(SleepPacket {
                mac: m.mac,
                sender: m.sender.clone(),
            }),
            None => return Err(bad(
                "--sleep-packet",
                "SLEEP_PACKET",
                v,
                "needs --mac (WOL_MAC): the sleep packet is the magic packet with the MAC reversed",
            )),
        },
        _ => None,
    };
    let url = a.sleep_url.as_deref().map(sleep_url).transpose()?;
    let command = a.sleep_command.as_deref().map(sleep_command).transpose()?;
    let own_after = a
        .sleep_after
        .as_deref()
        .map(|v| sleep_after("--sleep-after", "SLEEP_AFTER", v))
        .transpose()?;
    let mut cfg = SleepConfig {
        packet,
        url,
        command,
        after: None,
        min_awake: match &a.min_awake {
            Some(v) => seconds("--min-awake", "MIN_AWAKE", v)?,
            None => global.min_awake,
        },
        confirm: match &a.sleep_confirm {
            Some(v) => nonzero("--sleep-confirm", "SLEEP_CONFIRM", v)?,
            None => global.confirm,
        },
        ignore_ps: match &a.sleep_ignore_ps {
            Some(v) => boolean("--sleep-ignore-ps", "SLEEP_IGNORE_PS", v)?,
            None => global.ignore_ps,
        },
    };
    if always_on && cfg.has_method() {
        return Err(bad(
            "--sleep-after",
            "SLEEP_AFTER",
            &cfg.methods(),
            "an always-on machine is never put to sleep: remove its sleep methods, or always_on",
        ));
    }
    cfg.after = match own_after {
        // Set for this machine: it must be able to sleep and to wake again.
        Some(Some(after)) => {
            let value = a.sleep_after.as_deref().unwrap_or_default();
            if !cfg.has_method() {
                return Err(bad(
                    "--sleep-after",
                    "SLEEP_AFTER",
                    value,
                    "needs a sleep method: --sleep-packet, --sleep-url or --sleep-command",
                ));
            }
            Some(after)
        }
        Some(None) => None,
        // The global setting applies to the machines that have a sleep method.
        None => global.after.filter(|_| cfg.has_method()),
    };
    if let Some(after) = cfg.after {
        if !wake.is_enabled() {
            return Err(bad(
                "--sleep-after",
                "SLEEP_AFTER",
                &humantime::format_duration(after).to_string(),
                "needs a wake method (--mac (WOL_MAC) or --wake-url (WAKE_URL)): nothing could wake the machine again",
            ));
        }
    }
    Ok(cfg)
}

fn sleep_url(raw: &str) -> Result<Url, ConfigError> {
    // The value may hold a password (basic auth): errors show it without.
    let url = Url::parse(raw.trim())
        .map_err(|e| bad_secret("--sleep-url", "SLEEP_URL", format!("not a URL: {e}")))?;
    let shown = crate::wake::display_url(&url);
    let err = |reason: &str| bad("--sleep-url", "SLEEP_URL", &shown, reason);
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(err(
                "https is not supported in this build; use http on the LAN",
            ))
        }
        _ => return Err(err("expected an http:// URL")),
    }
    if url.host_str().is_none() {
        return Err(err("missing host"));
    }
    Ok(url)
}

/// Split like a shell would (quotes and backslashes), with `shell-words`; run without a shell.
fn sleep_command(raw: &str) -> Result<Vec<String>, ConfigError> {
    let err = |reason: &str| bad("--sleep-command", "SLEEP_COMMAND", raw, reason);
    let argv = shell_words::split(raw).map_err(|e| err(&format!("cannot split it: {e}")))?;
    if argv.first().is_none_or(|program| program.trim().is_empty()) {
        return Err(err("the command is empty"));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_like_a_shell_would() {
        assert_eq!(
            sleep_command("ssh -o BatchMode=yes 'user@desk top' \"sudo systemctl\" suspend\\ now")
                .unwrap(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "user@desk top",
                "sudo systemctl",
                "suspend now"
            ]
        );
        assert!(sleep_command("   ")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(sleep_command("ssh 'open")
            .unwrap_err()
            .to_string()
            .contains("--sleep-command (SLEEP_COMMAND)"));
    }

    #[test]
    fn booleans_and_off() {
        assert!(boolean("--f", "F", "TRUE").unwrap());
        assert!(!boolean("--f", "F", "0").unwrap());
        assert!(boolean("--f", "F", "maybe").is_err());
        assert_eq!(sleep_after("--f", "F", "off").unwrap(), None);
        assert_eq!(
            sleep_after("--f", "F", "2s").unwrap(),
            Some(Duration::from_secs(2))
        );
        assert!(sleep_after("--f", "F", "0").is_err());
    }
}
