//! Sending magic packets over UDP (SO_BROADCAST, several destinations, optional SO_BINDTODEVICE).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::MagicPacket;

/// Where and how magic packets are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Destination addresses: the limited broadcast `255.255.255.255`, a subnet's directed broadcast,
    /// or a unicast address.
    pub destinations: Vec<Ipv4Addr>,
    /// UDP destination port (9 by convention, 7 on some adapters).
    pub port: u16,
    /// Send out of this network interface only (`SO_BINDTODEVICE`, needs `CAP_NET_RAW`).
    pub interface: Option<String>,
    /// How many times each packet is sent to each destination (packets get lost).
    pub repeats: u32,
    /// Pause between repeats.
    pub gap: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            destinations: vec![Ipv4Addr::BROADCAST],
            port: 9,
            interface: None,
            repeats: 3,
            gap: Duration::from_millis(100),
        }
    }
}

/// Why magic packets could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The UDP socket could not be created or configured.
    #[error("cannot open UDP socket: {0}")]
    Socket(#[source] io::Error),
    /// `SO_BINDTODEVICE` failed.
    #[error("{}", bind_device_message(interface, source))]
    BindDevice {
        /// The interface asked for.
        interface: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// No destination is configured.
    #[error("no destination address configured")]
    NoDestination,
    /// Sending to one destination failed.
    #[error("cannot send to {dest}: {source}")]
    Send {
        /// The destination that failed.
        dest: SocketAddrV4,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

fn bind_device_message(interface: &str, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "cannot bind to interface {interface:?}: permission denied (binding to an interface needs \
             root or the CAP_NET_RAW capability; or leave the interface unset and use the subnet's \
             broadcast address)"
        ),
        _ if err.raw_os_error() == Some(19) => {
            format!("cannot bind to interface {interface:?}: no such device")
        }
        _ => format!("cannot bind to interface {interface:?}: {err}"),
    }
}

/// A UDP socket ready to send magic packets as configured.
#[derive(Debug)]
pub struct Sender {
    socket: tokio::net::UdpSocket,
    config: SenderConfig,
}

impl Sender {
    /// Opens the socket: IPv4 UDP with `SO_BROADCAST`, bound to the interface when one is set.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn new(config: SenderConfig) -> Result<Self, SendError> {
        if config.destinations.is_empty() {
            return Err(SendError::NoDestination);
        }
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(SendError::Socket)?;
        socket.set_broadcast(true).map_err(SendError::Socket)?;
        if let Some(interface) = &config.interface {
            socket
                .bind_device(Some(interface.as_bytes()))
                .map_err(|source| SendError::BindDevice {
                    interface: interface.clone(),
                    source,
                })?;
        }
        let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        socket.bind(&any.into()).map_err(SendError::Socket)?;
        socket.set_nonblocking(true).map_err(SendError::Socket)?;
        let socket = tokio::net::UdpSocket::from_std(socket.into()).map_err(SendError::Socket)?;
        Ok(Sender { socket, config })
    }

    /// The addresses packets go to.
    pub fn destinations(&self) -> Vec<SocketAddrV4> {
        self.config
            .destinations
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, self.config.port))
            .collect()
    }

    /// The configuration this sender was built from.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Sends `packet` to every destination, `repeats` times with `gap` between rounds.
    ///
    /// Returns the destinations that received at least one datagram; fails only when none did, with
    /// the last error.
    pub async fn send(&self, packet: &MagicPacket) -> Result<Vec<SocketAddrV4>, SendError> {
        let mut ok = Vec::new();
        let mut last_err = None;
        let rounds = self.config.repeats.max(1);
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(self.config.gap).await;
            }
            for dest in self.destinations() {
                match self.socket.send_to(packet.as_bytes(), dest).await {
                    Ok(_) if !ok.contains(&dest) => ok.push(dest),
                    Ok(_) => {}
                    Err(source) => last_err = Some(SendError::Send { dest, source }),
                }
            }
        }
        match (ok.is_empty(), last_err) {
            (true, Some(err)) => Err(err),
            _ => Ok(ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MacAddr;

    #[tokio::test]
    async fn sends_to_loopback_port() {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rx.local_addr().unwrap().port();
        let sender = Sender::new(SenderConfig {
            destinations: vec![Ipv4Addr::LOCALHOST],
            port,
            repeats: 2,
            gap: Duration::from_millis(1),
            interface: None,
        })
        .unwrap();
        let packet = MagicPacket::new(MacAddr([9; 6]), None);
        let sent = sender.send(&packet).await.unwrap();
        assert_eq!(sent, vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)]);
        let mut buf = [0u8; 200];
        for _ in 0..2 {
            let n = rx.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], packet.as_bytes());
        }
    }

    #[tokio::test]
    async fn unknown_interface_is_explained() {
        let err = Sender::new(SenderConfig {
            interface: Some("nosuchif0".into()),
            ..SenderConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
    }

    #[test]
    fn permission_error_names_the_capability() {
        let msg = bind_device_message("eth0", &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(msg.contains("CAP_NET_RAW"), "{msg}");
    }
}
