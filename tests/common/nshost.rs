//! A host in a network namespace that is silent while asleep: it answers nothing, not even ARP (so
//! a connect hangs or fails with "no route to host", as a suspended PC's does), yet receives the
//! magic packet sent to the subnet's directed broadcast address and then answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fake::{Fake, FakeState, Knobs, Log};
use super::netns::Net;

pub const MAC: &str = "02:00:5e:10:20:30";

pub struct Host {
    pub net: Arc<Net>,
    pub asleep: AtomicBool,
    pub state: Arc<FakeState>,
    pub packets: Arc<AtomicUsize>,
    pub fake: Arc<Mutex<Option<Fake>>>,
    /// How long a woken host stays silent before it answers again (resuming from suspend).
    pub resume_ms: AtomicU64,
    /// The MAC its magic packets carry.
    pub mac: String,
}

impl Host {
    /// The namespace host with [`MAC`] and one model (`listening` = Ollama already runs, as on a
    /// suspended PC).
    pub fn new(net: Net, listening: bool) -> Host {
        Self::machine(net, listening, MAC, &["llama3.2:latest"])
    }

    /// A host with its own MAC and model list.
    pub fn machine(net: Net, listening: bool, mac: &str, models: &[&str]) -> Host {
        let net = Arc::new(net);
        let state = Arc::new(FakeState {
            knobs: Knobs::default(),
            log: Log::default(),
            models: Mutex::new(models.iter().map(|m| m.to_string()).collect()),
        });
        let host = Host {
            net,
            asleep: AtomicBool::new(false),
            state,
            packets: Arc::new(AtomicUsize::new(0)),
            fake: Arc::new(Mutex::new(None)),
            resume_ms: AtomicU64::new(0),
            mac: mac.to_string(),
        };
        if listening {
            host.listen();
        }
        host
    }

    /// Suspends: from now on the host answers nothing until a magic packet arrives.
    pub fn sleep(&self) {
        self.asleep.store(true, Ordering::SeqCst);
        self.net.set_silent(true);
    }

    pub fn listen(&self) {
        let addr = (self.net.peer_ip, 11434);
        let listener = self
            .net
            .run_inside(|| std::net::TcpListener::bind(addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        *self.fake.lock().unwrap() = Some(Fake::start_with(listener, Arc::clone(&self.state)));
    }

    /// Receives magic packets inside the namespace; the first wakes the host (answers again, and
    /// starts Ollama after `boot` if it is not running).
    pub fn wake_on_lan(self: &Arc<Self>, boot: Duration) {
        let sock = self
            .net
            .run_inside(|| std::net::UdpSocket::bind("0.0.0.0:9").unwrap());
        sock.set_nonblocking(true).unwrap();
        let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
        let expected = wol::MagicPacket::new(self.mac.parse().unwrap(), None);
        let host = Arc::clone(self);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = sock.recv(&mut buf).await {
                if buf[..n] != *expected.as_bytes() {
                    continue;
                }
                host.packets.fetch_add(1, Ordering::SeqCst);
                if host.asleep.swap(false, Ordering::SeqCst) {
                    let resume = host.resume_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(resume)).await;
                    host.net.set_silent(false);
                    tokio::time::sleep(boot).await;
                    if host.fake.lock().unwrap().is_none() {
                        host.listen();
                    }
                }
            }
        });
    }

    pub fn proxy_args(&self) -> Vec<String> {
        let url = format!("http://{}:11434", self.net.peer_ip);
        let bcast = self.net.broadcast.to_string();
        [
            "--ollama-url",
            &url,
            "--mac",
            &self.mac,
            "--broadcast",
            &bcast,
            "--wol-port",
            "9",
            "--connect-timeout",
            "1s",
            "--wake-timeout",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}
