//! Heap allocations per forwarded request: runs the real `ollama_proxy::run` in this process on a
//! runtime of its own, against `bench-fake` (another process), and counts only the allocations
//! made on the proxy's threads; the client (a plain blocking socket on the main thread) is not
//! counted.
//!
//! Usage: bench-allocs [REQUESTS [KIND]]; prints one markdown table row per request kind (or only
//! those whose label contains KIND, e.g. `version`).
#![allow(clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::Parser;

/// Counts allocations (and reallocations) on threads that set [`COUNTED`].
struct Counting;

thread_local! {
    /// Set on the proxy runtime's threads.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is passed on unchanged to the system allocator; the counting touches only
// atomics and a const-initialised thread-local without destructor (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> [u64; 3] {
    [&ALLOCS, &REALLOCS, &BYTES].map(|c| c.load(Ordering::Relaxed))
}

/// One keep-alive client connection speaking just enough HTTP/1.1.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    /// Sends `head` (+ `body`) and reads the whole answer; returns the status.
    fn exchange(&mut self, head: &str, body: &[u8]) -> anyhow::Result<u16> {
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context(format!("status line {line:?}"))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
        }
        if chunked {
            self.chunks()?;
        } else {
            let mut buf = vec![0; length];
            self.stream.read_exact(&mut buf)?;
        }
        Ok(status)
    }

    fn chunks(&mut self) -> anyhow::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim_end(), 16)?;
            let mut buf = vec![0; size + 2];
            self.stream.read_exact(&mut buf)?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

struct Kind {
    label: &'static str,
    head: String,
    body: &'static [u8],
}

fn kinds(addr: &str) -> [Kind; 2] {
    const CHAT: &[u8] = br#"{"chunks":2,"interval_us":0}"#;
    [
        Kind {
            label: "GET /api/version",
            head: format!("GET /api/version HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
            body: b"",
        },
        Kind {
            label: "POST /api/chat (3-chunk stream)",
            head: format!(
                "POST /api/chat HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                CHAT.len()
            ),
            body: CHAT,
        },
    ]
}

fn main() -> anyhow::Result<()> {
    let requests: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("bench-allocs' directory")?;
    let mut fake = Command::new(dir.join("bench-fake"))
        .stdout(Stdio::piped())
        .spawn()
        .context("bench-fake (cargo build --release -p ollama-proxy-bench)")?;
    let mut line = String::new();
    BufReader::new(fake.stdout.take().context("stdout")?).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let ollama = format!("http://{}", v["addr"].as_str().context("addr")?);
    let result = measure(&ollama, requests);
    let _ = fake.kill();
    let _ = fake.wait();
    result
}

fn measure(ollama: &str, requests: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    // In memory, as before the cache had a default file: runs do not see each other's cache.
    let cli = ollama_proxy::cli::Cli::try_parse_from([
        "ollama-proxy",
        "--ollama-url",
        ollama,
        "--cache-file",
        "",
    ])?;
    let config = ollama_proxy::Config::from_args(&cli.serve)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server = rt.spawn(ollama_proxy::run(listener, config, stop.clone()));
    println!("\n### Heap allocations per forwarded request (bench-allocs: the proxy in-process, its threads only, {requests} requests on one keep-alive connection)\n");
    println!(
        "| request | allocations / request | reallocations / request | bytes allocated / request |"
    );
    println!("|---|---:|---:|---:|");
    let only = std::env::args().nth(2).unwrap_or_default();
    for kind in kinds(&addr).into_iter().filter(|k| k.label.contains(&only)) {
        let mut client = Client::connect(&addr)?;
        for _ in 0..requests / 10 {
            anyhow::ensure!(client.exchange(&kind.head, kind.body)? == 200, "not 200");
        }
        let before = snapshot();
        for _ in 0..requests {
            anyhow::ensure!(client.exchange(&kind.head, kind.body)? == 200, "not 200");
        }
        let after = snapshot();
        let per = |i: usize| (after[i] - before[i]) as f64 / requests as f64;
        println!(
            "| {} | {:.1} | {:.1} | {:.0} |",
            kind.label,
            per(0),
            per(1),
            per(2)
        );
    }
    stop.cancel();
    let _ = rt.block_on(server);
    Ok(())
}
