//! Wake settings: magic packets (MAC, destinations, port, interface, SecureOn) and the HTTP wake URL.

use std::net::Ipv4Addr;

use reqwest::Url;
use wol::{MacAddr, SenderConfig};

use super::layer::default;
use super::parse::{bad, bad_secret, nonzero_number, ConfigError, Secret};
use crate::cli::WakeArgs;

/// Magic-packet settings.
#[derive(Debug, Clone)]
pub struct MagicConfig {
    pub mac: MacAddr,
    pub secureon: Option<Secret<MacAddr>>,
    pub sender: SenderConfig,
}

/// HTTP wake settings.
#[derive(Debug, Clone)]
pub struct HttpWakeConfig {
    pub url: Url,
    pub key: Option<Secret<String>>,
}

/// Every configured wake method.
#[derive(Debug, Clone, Default)]
pub struct WakeConfig {
    pub magic: Option<MagicConfig>,
    pub http: Option<HttpWakeConfig>,
    /// How a learned MAC's packets are sent when no MAC is configured.
    pub for_learned: LearnedSender,
}

/// WOL_BROADCAST, WOL_INTERFACE and WOL_PORT as given: with no MAC configured, a learned MAC's
/// magic packets go by them (see "Learning the MAC" in docs/behaviour.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LearnedSender {
    /// WOL_BROADCAST, when given: used instead of the learned broadcast address.
    pub broadcast: Option<Vec<Ipv4Addr>>,
    /// WOL_INTERFACE.
    pub interface: Option<String>,
    /// WOL_PORT (its default when `None`).
    pub port: Option<u16>,
}

impl LearnedSender {
    /// Where the magic packets of a MAC learned with the directed broadcast address `learned` go.
    pub fn sender(&self, learned: Ipv4Addr) -> SenderConfig {
        SenderConfig {
            destinations: self.broadcast.clone().unwrap_or_else(|| vec![learned]),
            port: self.port.unwrap_or(SenderConfig::default().port),
            interface: self.interface.clone(),
            ..SenderConfig::default()
        }
    }
}

impl WakeConfig {
    pub fn is_enabled(&self) -> bool {
        self.magic.is_some() || self.http.is_some()
    }
}

impl WakeConfig {
    pub fn from_args(args: &WakeArgs) -> Result<Self, ConfigError> {
        let port: u16 = nonzero_number(
            "--wol-port",
            "WOL_PORT",
            args.wol_port.as_deref().unwrap_or(default::WOL_PORT),
        )?;
        let sender = SenderConfig {
            destinations: destinations(args.broadcast.as_deref().unwrap_or(default::BROADCAST))?,
            port,
            interface: interface(args.interface.as_deref())?,
            ..SenderConfig::default()
        };
        let for_learned = LearnedSender {
            broadcast: args
                .broadcast
                .is_some()
                .then(|| sender.destinations.clone()),
            interface: sender.interface.clone(),
            port: Some(port),
        };
        let magic = magic(args, sender)?;
        let http = match &args.wake_url {
            Some(raw) => Some(parse_wake_url(raw, args.wake_key.as_deref())?),
            None if args.wake_key.is_some() => {
                return Err(bad_secret(
                    "--wake-key",
                    "WAKE_KEY",
                    "needs --wake-url (WAKE_URL)",
                ))
            }
            None => None,
        };
        Ok(WakeConfig {
            magic,
            http,
            for_learned,
        })
    }
}

/// WOL_MAC with its SecureOn password, sent as `sender` says.
fn magic(args: &WakeArgs, sender: SenderConfig) -> Result<Option<MagicConfig>, ConfigError> {
    let secureon = match &args.secureon {
        Some(s) => Some(Secret::new(s.parse::<MacAddr>().map_err(|e| {
            bad_secret(
                "--secureon",
                "WOL_SECUREON",
                format!("not a 6-byte password written like a MAC ({e})"),
            )
        })?)),
        None => None,
    };
    match &args.mac {
        Some(mac) => Ok(Some(MagicConfig {
            mac: mac.parse().map_err(|e| bad("--mac", "WOL_MAC", mac, e))?,
            secureon,
            sender,
        })),
        None if secureon.is_some() => Err(bad_secret(
            "--secureon",
            "WOL_SECUREON",
            "needs --mac (WOL_MAC)",
        )),
        None => Ok(None),
    }
}

/// WOL_INTERFACE, when it can be an interface's name.
fn interface(name: Option<&str>) -> Result<Option<String>, ConfigError> {
    match name {
        Some(n) if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) => Err(bad(
            "--interface",
            "WOL_INTERFACE",
            n,
            "not an interface name",
        )),
        other => Ok(other.map(String::from)),
    }
}

/// WOL_BROADCAST's comma-separated IPv4 addresses.
fn destinations(broadcast: &str) -> Result<Vec<Ipv4Addr>, ConfigError> {
    broadcast
        .split(',')
        .map(|s| {
            s.trim().parse::<Ipv4Addr>().map_err(|_| {
                bad(
                    "--broadcast",
                    "WOL_BROADCAST",
                    broadcast,
                    format!("{:?} is not an IPv4 address", s.trim()),
                )
            })
        })
        .collect()
}

/// The `mac` query value of a wake URL, decoded as WolGoWeb's Go server reads it (and signs it).
pub fn url_mac(url: &Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == "mac")
        .map(|(_, v)| v.into_owned())
}

fn parse_wake_url(raw: &str, key: Option<&str>) -> Result<HttpWakeConfig, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| bad("--wake-url", "WAKE_URL", raw, e))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(bad(
                "--wake-url",
                "WAKE_URL",
                raw,
                "https is not supported in this build; use http on the LAN",
            ))
        }
        _ => {
            return Err(bad(
                "--wake-url",
                "WAKE_URL",
                raw,
                "expected an http:// URL",
            ))
        }
    }
    if url.host_str().is_none() {
        return Err(bad("--wake-url", "WAKE_URL", raw, "missing host"));
    }
    if key.is_some() && url_mac(&url).is_none() {
        return Err(bad(
            "--wake-url",
            "WAKE_URL",
            raw,
            "--wake-key (WAKE_KEY) signs the URL's mac parameter, but the URL has none",
        ));
    }
    Ok(HttpWakeConfig {
        url,
        key: key.map(|k| Secret::new(k.to_string())),
    })
}
