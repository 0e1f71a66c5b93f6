//! Waking the host: magic packets (via the `wol` crate) and the HTTP wake URL, with a report of each.

pub mod http;
pub use http::display_url;

use std::fmt;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use wol::{MacAddr, MagicPacket, Sender, SenderConfig};

use crate::config::{HttpWakeConfig, WakeConfig};

/// What one wake method did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Magic packets: the destinations reached, or why none was.
    Magic(Result<Vec<SocketAddrV4>, String>),
    /// HTTP wake: the URL (token masked) and the answer.
    Http {
        url: String,
        result: Result<String, String>,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        match self {
            Outcome::Magic(r) => r.is_ok(),
            Outcome::Http { result, .. } => result.is_ok(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Magic(Ok(dests)) => {
                let list: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
                write!(f, "magic packet sent to {}", list.join(", "))
            }
            Outcome::Magic(Err(e)) => write!(f, "magic packet failed: {e}"),
            Outcome::Http { url, result: Ok(r) } => write!(f, "wake URL {url} answered {r}"),
            Outcome::Http {
                url,
                result: Err(e),
            } => write!(f, "wake URL {url} failed: {e}"),
        }
    }
}

/// Why the wake methods could not be prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum WakerError {
    #[error("cannot open the magic packet socket: {0}")]
    Magic(#[from] wol::SendError),
    #[error("cannot build the HTTP client for the wake URL: {0}")]
    Http(#[source] reqwest::Error),
}

/// One magic-packet target: the socket (with its destinations and port) and the packet.
struct Magic {
    sender: Sender,
    packet: MagicPacket,
}

/// Sends wakes with every configured method. The magic-packet target can be set later, from a
/// learned MAC (see "Learning the MAC" in docs/behaviour.md).
pub struct Waker {
    magic: RwLock<Option<Arc<Magic>>>,
    /// The configured target, which [`Waker::clear_learned`] goes back to.
    configured: Option<Arc<Magic>>,
    /// A target is set: lock-free for the request path's `can_wake`.
    has_magic: AtomicBool,
    http: Option<(reqwest::Client, HttpWakeConfig)>,
}

impl Waker {
    /// Opens the UDP socket (when magic packets are configured). Must run inside a Tokio runtime.
    pub fn new(cfg: &WakeConfig) -> Result<Self, WakerError> {
        let magic = match &cfg.magic {
            Some(m) => Some(Arc::new(Magic {
                sender: Sender::new(m.sender.clone())?,
                packet: MagicPacket::new(m.mac, m.secureon.as_ref().map(|s| *s.expose())),
            })),
            None => None,
        };
        let http = match &cfg.http {
            // No fallback to `Client::default()`: it would honour HTTP_PROXY (the wake service is
            // on the LAN) and could hide why the configured client failed.
            Some(h) => Some((
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(WakerError::Http)?,
                h.clone(),
            )),
            None => None,
        };
        Ok(Waker {
            has_magic: AtomicBool::new(magic.is_some()),
            configured: magic.clone(),
            magic: RwLock::new(magic),
            http,
        })
    }

    /// Sends magic packets for `mac` as `sender` says from now on (a learned MAC and its subnet's
    /// broadcast address). Must run inside a Tokio runtime.
    pub fn set_magic(&self, mac: MacAddr, sender: SenderConfig) -> Result<(), WakerError> {
        let magic = Arc::new(Magic {
            sender: Sender::new(sender)?,
            packet: MagicPacket::new(mac, None),
        });
        *self.magic.write().unwrap_or_else(|e| e.into_inner()) = Some(magic);
        self.has_magic.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops sending magic packets for a learned MAC: back to the configured target, if any.
    pub fn clear_learned(&self) {
        *self.magic.write().unwrap_or_else(|e| e.into_inner()) = self.configured.clone();
        self.has_magic
            .store(self.configured.is_some(), Ordering::Release);
    }

    fn magic(&self) -> Option<Arc<Magic>> {
        self.magic.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when magic packets are configured or learned.
    pub fn has_magic(&self) -> bool {
        self.has_magic.load(Ordering::Acquire)
    }

    /// True when some wake method is configured or learned.
    pub fn is_enabled(&self) -> bool {
        self.has_magic() || self.http.is_some()
    }

    /// Sends one burst of magic packets, if configured.
    pub async fn send_magic(&self) -> Option<Outcome> {
        let magic = self.magic()?;
        Some(Outcome::Magic(
            magic
                .sender
                .send(&magic.packet)
                .await
                .map_err(|e| e.to_string()),
        ))
    }

    /// Calls the wake URL once, if configured.
    pub async fn call_http(&self) -> Option<Outcome> {
        let (client, cfg) = self.http.as_ref()?;
        Some(Outcome::Http {
            url: http::display_url(&cfg.url),
            result: http::call(client, cfg).await,
        })
    }

    /// Every configured method, concurrently.
    pub async fn wake_all(&self) -> Vec<Outcome> {
        let (magic, http) = tokio::join!(self.send_magic(), self.call_http());
        magic.into_iter().chain(http).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_learned_target_is_cleared_back_to_no_magic_packets() {
        let waker = Waker::new(&WakeConfig::default()).unwrap();
        assert!(!waker.is_enabled());
        let sender = SenderConfig {
            destinations: vec![std::net::Ipv4Addr::LOCALHOST],
            port: 9,
            ..SenderConfig::default()
        };
        let mac: MacAddr = "02:00:5e:10:20:30".parse().unwrap();
        waker.set_magic(mac, sender).unwrap();
        assert!(waker.has_magic() && waker.is_enabled());
        waker.clear_learned();
        assert!(!waker.has_magic() && !waker.is_enabled());
        assert!(waker.send_magic().await.is_none());
    }
}
