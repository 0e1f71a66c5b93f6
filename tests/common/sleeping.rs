//! A simulated sleeping host on loopback: its Ollama port is bound but not listening (connects are
//! refused) until a magic packet for its MAC arrives; it then "boots" and starts listening.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::watch;

use super::fake::{Fake, FakeState, Knobs, Log};

pub const MAC: &str = "02:00:5e:10:00:01";

pub struct SleepingHost {
    /// Where Ollama will listen.
    pub addr: SocketAddr,
    /// Where magic packets must go.
    pub wol_port: u16,
    /// Magic packets for our MAC received so far.
    pub packets: Arc<AtomicUsize>,
    /// When the port opened.
    pub listening_at: Arc<Mutex<Option<Instant>>>,
    pub state: Arc<FakeState>,
    awake: watch::Receiver<Option<Fake>>,
    gate: watch::Sender<bool>,
}

impl SleepingHost {
    /// A host that starts listening `boot` after the first magic packet for [`MAC`].
    pub async fn new(boot: Duration) -> SleepingHost {
        let host = Self::gated(boot).await;
        host.open_gate();
        host
    }

    /// Lets a woken host finish booting (a gated host boots only after this and a magic packet).
    pub fn open_gate(&self) {
        let _ = self.gate.send(true);
    }

    /// A host that, once woken, also waits for [`SleepingHost::open_gate`] before listening.
    pub async fn gated(boot: Duration) -> SleepingHost {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let wol_port = udp.local_addr().unwrap().port();
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let state = Arc::new(FakeState {
            knobs: Knobs::default(),
            log: Log::default(),
            models: Mutex::new(vec!["llama3.2:latest".into()]),
        });
        let packets = Arc::new(AtomicUsize::new(0));
        let listening_at = Arc::new(Mutex::new(None));
        let (tx, awake) = watch::channel(None);
        let (gate, gate_rx) = watch::channel(false);
        let expected = wol::MagicPacket::new(MAC.parse().unwrap(), None);
        let (p, st, at) = (
            Arc::clone(&packets),
            Arc::clone(&state),
            Arc::clone(&listening_at),
        );
        tokio::spawn(async move {
            let mut socket = Some(socket);
            let mut buf = [0u8; 512];
            while let Ok(n) = udp.recv(&mut buf).await {
                if buf[..n] != *expected.as_bytes() {
                    continue;
                }
                if p.fetch_add(1, Ordering::SeqCst) == 0 {
                    let socket = socket.take().unwrap();
                    let (tx, st, at) = (tx.clone(), Arc::clone(&st), Arc::clone(&at));
                    let mut gate = gate_rx.clone();
                    tokio::spawn(async move {
                        let _ = gate.wait_for(|open| *open).await;
                        tokio::time::sleep(boot).await;
                        let listener = socket.listen(4096).unwrap();
                        *at.lock().unwrap() = Some(Instant::now());
                        let _ = tx.send(Some(Fake::start_with(listener, st)));
                    });
                }
            }
        });
        SleepingHost {
            addr,
            wol_port,
            packets,
            listening_at,
            state,
            awake,
            gate,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> &Log {
        &self.state.log
    }

    /// Proxy flags that wake this host by magic packet on loopback.
    pub fn wake_args(&self) -> Vec<String> {
        vec![
            "--ollama-url".into(),
            self.url(),
            "--mac".into(),
            MAC.into(),
            "--broadcast".into(),
            "127.0.0.1".into(),
            "--wol-port".into(),
            self.wol_port.to_string(),
        ]
    }

    /// [`SleepingHost::wake_args`] with the cache file `cache.json` in `dir` (the events file goes
    /// beside it).
    pub fn wake_args_with_cache(&self, dir: &std::path::Path) -> Vec<String> {
        let mut argv = self.wake_args();
        let cache = dir.join("cache.json");
        argv.extend(["--cache-file".into(), cache.display().to_string()]);
        argv
    }

    pub fn is_awake(&self) -> bool {
        self.awake.borrow().is_some()
    }

    /// Waits (bounded) until the host listens.
    pub async fn awake(&mut self, limit: Duration) -> Fake {
        let fake = tokio::time::timeout(limit, self.awake.wait_for(|f| f.is_some()))
            .await
            .expect("host never woke")
            .unwrap()
            .clone();
        fake.unwrap()
    }
}
