//! The benchmark driver: starts the fake Ollama, nginx and ollama-proxy on loopback, measures each
//! side by side, prints markdown tables, and stops everything it started (also on failure).
//!
//! Run it with `bench/run.sh` (it builds the release binaries and installs wrk and nginx).
#![allow(clippy::print_stdout)]

mod procs;
mod stream;

use std::time::Duration;

use anyhow::Context;

use procs::{Caddy, Fake, Nginx, Proxy};

/// Seconds per load-generator run (BENCH_SECS).
fn secs() -> u64 {
    std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

struct Wrk {
    rps: f64,
    requests: f64,
    p50_us: f64,
    p99_us: f64,
    non2xx: bool,
}

fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// `wrk --latency` against `url` with `conns` connections.
fn wrk(url: &str, conns: u32) -> anyhow::Result<Wrk> {
    let threads = conns.min(2).to_string();
    let out = std::process::Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &threads,
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{}s", secs()),
            url,
        ])
        .output()
        .context("wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(String::from))
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Wrk {
        requests,
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .context(format!("wrk output: {text}"))?,
        p50_us: field("50%")
            .and_then(|v| parse_latency(&v))
            .unwrap_or(f64::NAN),
        p99_us: field("99%")
            .and_then(|v| parse_latency(&v))
            .unwrap_or(f64::NAN),
        non2xx: text.contains("Non-2xx"),
    })
}

/// A server under load: its name in the table, its base URL and the process whose CPU time (with
/// its children's) is its cost.
struct Target {
    name: &'static str,
    url: String,
    pid: u32,
}

/// wrk against every target in turn at 1, 16 and 128 connections: throughput, latency and CPU
/// time per request, with ratios to the target named "nginx".
fn throughput(targets: &[Target], path: &str, label: &str) -> anyhow::Result<()> {
    println!("\n### {label}\n");
    println!("| conns | server | req/s | × nginx | p50 (µs) | p99 (µs) | p99 × nginx | CPU µs / request |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for conns in [1, 16, 128] {
        let mut nginx: Option<Wrk> = None;
        for t in targets {
            let cpu_before = procs::cpu_us(t.pid);
            let w = wrk(&format!("{}{path}", t.url), conns)?;
            let cpu = (procs::cpu_us(t.pid) - cpu_before) as f64 / w.requests;
            anyhow::ensure!(!w.non2xx, "non-2xx answers from {} during {label}", t.name);
            // Ratios to nginx (listed before the proxies; "–" for the rows before it).
            let ratio = |f: fn(&Wrk) -> f64| match (t.name, &nginx) {
                ("nginx", _) => "1.00".to_string(),
                (_, Some(n)) => format!("{:.2}", f(&w) / f(n)),
                (_, None) => "–".to_string(),
            };
            println!(
                "| {conns} | {} | {:.0} | {} | {:.0} | {:.0} | {} | {cpu:.1} |",
                t.name,
                w.rps,
                ratio(|w| w.rps),
                w.p50_us,
                w.p99_us,
                ratio(|w| w.p99_us),
            );
            if t.name == "nginx" {
                nginx = Some(w);
            }
        }
    }
    Ok(())
}

fn cached_tags(proxy_asleep: &str, direct: &str, nginx: &str) -> anyhow::Result<()> {
    println!("\n### GET /api/tags: proxy answers from its cache while Ollama sleeps (direct and nginx: Ollama awake, for reference)\n");
    println!("| conns | proxy (cache, Ollama asleep) req/s | p50 / p99 (µs) | direct req/s | nginx req/s |");
    println!("|---:|---:|---|---:|---:|");
    for conns in [1, 16, 128] {
        let p = wrk(&format!("{proxy_asleep}/api/tags"), conns)?;
        let d = wrk(&format!("{direct}/api/tags"), conns)?;
        let n = wrk(&format!("{nginx}/api/tags"), conns)?;
        anyhow::ensure!(!p.non2xx, "cache answered non-2xx");
        println!(
            "| {conns} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} |",
            p.rps, p.p50_us, p.p99_us, d.rps, n.rps
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = std::env::var("BENCH_ROOT").unwrap_or_else(|_| ".".into());
    let release = format!("{root}/target/release");
    println!("## ollama-proxy benchmark\n");
    println!("{}", procs::machine());
    println!(
        "load: {} s per wrk run; all processes on 127.0.0.1, sharing the same cores",
        secs()
    );
    // Magic packets from the proxies under test land on this socket, on loopback.
    let absorb = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let wol_port = absorb.local_addr()?.port().to_string();
    let wake_args = [
        "--mac",
        "02:00:00:00:00:01",
        "--broadcast",
        "127.0.0.1",
        "--wol-port",
        &wol_port,
    ];
    // BENCH_ONLY=wake: only the wake-release measurement (quick check while tuning);
    // BENCH_ONLY=version: only the forwarded /api/version table.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("wake") {
        return stream::wake_release(&release, &wake_args).await;
    }

    let fake = Fake::start(&release, false)?;
    let nginx = Nginx::start(&fake.url())?;
    let proxy = Proxy::start(&release, &fake.url(), &[]).await?;
    let idle_rss = proxy.rss_kib();
    let direct = fake.url();
    let caddy = Caddy::start(&fake.url())?;
    // The least a hyper reverse proxy does per request (no checks, no rewriting), for scale.
    let floor_exe = format!("{release}/bench-floor");
    let floor = Proxy::start_exe(&floor_exe, &fake.url(), &[]).await?;
    // The same on one single-threaded runtime per core, as nginx runs a worker per core.
    let per_core = [("FLOOR_MODE", "percore")];
    let floor_pc = Proxy::start_with(&floor_exe, &fake.url(), &[], &per_core).await?;
    // BENCH_PROXY_BEFORE=path/to/ollama-proxy: another build measured in the same run (A/B).
    let before = match std::env::var("BENCH_PROXY_BEFORE") {
        Ok(exe) => Some(Proxy::start_exe(&exe, &fake.url(), &[]).await?),
        Err(_) => None,
    };
    let mut targets = vec![
        Target {
            name: "direct",
            url: direct.clone(),
            pid: fake.pid(),
        },
        Target {
            name: "nginx",
            url: nginx.url(),
            pid: nginx.pid(),
        },
        Target {
            name: "caddy",
            url: caddy.url(),
            pid: caddy.pid(),
        },
        Target {
            name: "hyper floor",
            url: floor.url(""),
            pid: floor.pid(),
        },
        Target {
            name: "hyper floor, per core",
            url: floor_pc.url(""),
            pid: floor_pc.pid(),
        },
    ];
    if let Some(b) = &before {
        targets.push(Target {
            name: "ollama-proxy before",
            url: b.url(""),
            pid: b.pid(),
        });
    }
    targets.push(Target {
        name: "ollama-proxy",
        url: proxy.url(""),
        pid: proxy.pid(),
    });
    throughput(
        &targets,
        "/api/version",
        "GET /api/version, forwarded (Ollama awake)",
    )?;
    drop((caddy, floor, floor_pc, before));
    if std::env::var("BENCH_ONLY").as_deref() == Ok("version") {
        return Ok(());
    }

    // The cache file from an awake run, then a proxy whose Ollama sleeps (port closed).
    let dir = tempdir()?;
    let cache_file = format!("{dir}/cache.json");
    let filler = Proxy::start(&release, &fake.url(), &["--cache-file", &cache_file]).await?;
    reqwest::get(filler.url("/api/tags")).await?.bytes().await?;
    filler.stop().await;
    let sleeping = Fake::start(&release, true)?;
    let mut args = wake_args.to_vec();
    args.extend(["--cache-file", &cache_file]);
    let cached = Proxy::start(&release, &sleeping.url(), &args).await?;
    cached_tags(&cached.url(""), &direct, &nginx.url())?;
    anyhow::ensure!(
        cached.health().await?["wakes"] == 0,
        "the cached list woke Ollama"
    );
    drop(cached);
    drop(sleeping);

    stream::latency(&direct, &nginx.url(), &proxy.url("")).await?;
    stream::memory(&proxy, &nginx, idle_rss).await?;
    drop(proxy);
    stream::wake_release(&release, &wake_args).await?;

    let size = std::fs::metadata(format!("{release}/ollama-proxy"))?.len();
    println!("\n### Release binary\n\n| binary | size |\n|---|---:|\n| target/release/ollama-proxy (stripped, fat LTO) | {:.2} MiB |", size as f64 / 1048576.0);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh temporary directory (removed by the caller).
fn tempdir() -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("ollama-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.to_string_lossy().into_owned())
}

/// Pause used only between phases so that sockets from the previous phase drain.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
