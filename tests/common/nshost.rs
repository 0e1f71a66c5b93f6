//! A host in a network namespace, its card with a MAC of its own, that is silent while asleep: it
//! answers nothing, not even ARP (so a connect hangs or fails with "no route to host", as a
//! suspended PC's does), yet receives the magic packet sent to the subnet's directed broadcast
//! address and then answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// What happened to it, for the sleep tests.
    pub power: Power,
}

/// The host's sleeps and wakes: a sleep-on-lan packet (the MAC reversed) or `GET /sleep` on port
/// 8009 asks it to sleep; it goes silent `sleep_delay_ms` later, unless it ignores sleeps.
#[derive(Default)]
pub struct Power {
    /// Sleep requests that found it awake (a packet burst counts once).
    pub sleeps: AtomicUsize,
    /// Sleep-on-lan packets received.
    pub sleep_packets: AtomicUsize,
    /// `GET /sleep` calls received.
    pub sleep_calls: AtomicUsize,
    /// Wakes that found it asleep.
    pub woken: AtomicUsize,
    pub ignore_sleep: AtomicBool,
    pub sleep_delay_ms: AtomicU64,
    /// Going down after a sleep request (further requests are the same sleep).
    going_down: AtomicBool,
    pub slept_at: Mutex<Option<Instant>>,
    pub woken_at: Mutex<Option<Instant>>,
    pub changed: tokio::sync::Notify,
}

impl Power {
    /// Waits (bounded) until `pred` holds.
    pub async fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Power) -> bool) {
        super::wait_until(&self.changed, what, limit, || pred(self)).await;
    }

    pub fn count(&self, c: &AtomicUsize) -> usize {
        let _ = self;
        c.load(Ordering::SeqCst)
    }
}

impl Host {
    /// The namespace host with [`MAC`] and one model (`listening` = Ollama already runs, as on a
    /// suspended PC).
    pub fn new(net: Net, listening: bool) -> Host {
        Self::machine(net, listening, MAC, &["llama3.2:latest"])
    }

    /// A host with its own MAC and model list.
    pub fn machine(net: Net, listening: bool, mac: &str, models: &[&str]) -> Host {
        // Its card has the MAC its magic packets carry, as a real desktop's does.
        net.set_peer_mac(mac);
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
            power: Power::default(),
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
        *self.power.slept_at.lock().unwrap() = Some(Instant::now());
        self.power.changed.notify_waiters();
    }

    /// A sleep method reached the host: unless it ignores sleeps, it goes silent after
    /// `sleep_delay_ms`. Requests while it is already going down are the same sleep.
    pub fn sleep_requested(self: &Arc<Self>) {
        let p = &self.power;
        if self.asleep.load(Ordering::SeqCst) || p.going_down.swap(true, Ordering::SeqCst) {
            p.changed.notify_waiters();
            return;
        }
        p.sleeps.fetch_add(1, Ordering::SeqCst);
        p.changed.notify_waiters();
        let host = Arc::clone(self);
        tokio::spawn(async move {
            let delay = host.power.sleep_delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if host.power.ignore_sleep.load(Ordering::SeqCst) {
                // Still up; a later sleep request counts as a new one after a moment.
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else {
                host.sleep();
            }
            host.power.going_down.store(false, Ordering::SeqCst);
        });
    }

    /// Serves sleep-on-lan's `GET /sleep` on port 8009 inside the namespace.
    pub fn serve_sleep_url(self: &Arc<Self>) {
        let addr = (self.net.peer_ip, 8009);
        let listener = self
            .net
            .run_inside(|| std::net::TcpListener::bind(addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let host = Arc::clone(self);
        let app = axum::Router::new().route(
            "/sleep",
            axum::routing::get(move || {
                let host = Arc::clone(&host);
                async move {
                    host.power.sleep_calls.fetch_add(1, Ordering::SeqCst);
                    host.sleep_requested();
                    "ok"
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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
        let mut reversed: [u8; 6] = self.mac.parse::<wol::MacAddr>().unwrap().0;
        reversed.reverse();
        let sleep_packet = wol::MagicPacket::new(wol::MacAddr(reversed), None);
        let host = Arc::clone(self);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = sock.recv(&mut buf).await {
                if buf[..n] == *sleep_packet.as_bytes() {
                    host.power.sleep_packets.fetch_add(1, Ordering::SeqCst);
                    host.sleep_requested();
                    continue;
                }
                if buf[..n] != *expected.as_bytes() {
                    continue;
                }
                host.packets.fetch_add(1, Ordering::SeqCst);
                if host.asleep.swap(false, Ordering::SeqCst) {
                    host.power.woken.fetch_add(1, Ordering::SeqCst);
                    *host.power.woken_at.lock().unwrap() = Some(Instant::now());
                    host.power.changed.notify_waiters();
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
