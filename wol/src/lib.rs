//! Wake-on-LAN: strict MAC parsing, magic packet bytes (with optional SecureOn) and a UDP sender.
//!
//! ```
//! use wol::{MacAddr, MagicPacket};
//! let mac: MacAddr = "aa:bb:cc:dd:ee:ff".parse().unwrap();
//! let packet = MagicPacket::new(mac, None);
//! assert_eq!(packet.as_bytes().len(), 102);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod mac;
mod packet;
mod sender;

pub use mac::{MacAddr, ParseMacError};
pub use packet::MagicPacket;
pub use sender::{SendError, Sender, SenderConfig};
