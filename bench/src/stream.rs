//! Streaming latency, memory under load, and wake-release time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::StreamExt;

use crate::procs::{Fake, Nginx, Proxy};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

#[derive(Default)]
struct StreamSample {
    ttfb_us: Vec<f64>,
    delay_us: Vec<f64>,
    reads: usize,
    merged_reads: usize,
    split_lines: usize,
}

/// One streamed chat of `chunks` objects `interval_us` apart; every object carries its send time.
async fn one_stream(
    c: &reqwest::Client,
    base: &str,
    chunks: u64,
    interval_us: u64,
    s: &mut StreamSample,
) -> anyhow::Result<()> {
    let start = now_ns();
    let resp = c
        .post(format!("{base}/api/chat"))
        .body(format!(
            r#"{{"model":"llama3.2","chunks":{chunks},"interval_us":{interval_us}}}"#
        ))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut partial = Vec::new();
    let mut first = true;
    let mut lines = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let at = now_ns();
        if first {
            s.ttfb_us.push((at - start) as f64 / 1000.0);
            first = false;
        }
        s.reads += 1;
        if chunk.iter().filter(|b| **b == b'\n').count() > 1 {
            s.merged_reads += 1;
        }
        if !chunk.ends_with(b"\n") {
            s.split_lines += 1;
        }
        partial.extend_from_slice(&chunk);
        while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            let v: serde_json::Value = serde_json::from_slice(&line)?;
            let t = v["t"].as_u64().context("t")? as u128;
            s.delay_us.push(at.saturating_sub(t) as f64 / 1000.0);
            lines += 1;
        }
    }
    anyhow::ensure!(lines == chunks + 1, "got {lines} objects of {}", chunks + 1);
    Ok(())
}

/// Per-chunk delay and time to first byte over 1,000-chunk streams, direct / nginx / proxy.
pub async fn latency(direct: &str, nginx: &str, proxy: &str) -> anyhow::Result<()> {
    const RUNS: usize = 3;
    const CHUNKS: u64 = 1000;
    const INTERVAL_US: u64 = 3000;
    println!(
        "\n### Streaming: {RUNS} × {CHUNKS}-chunk NDJSON streams, a chunk every {} ms\n",
        INTERVAL_US / 1000
    );
    println!("| target | delay per chunk p50 / p99 (µs) | added vs direct p50 / p99 (µs) | time to first byte p50 (µs) | reads with merged chunks | chunks split across reads |");
    println!("|---|---|---|---:|---:|---:|");
    let c = client();
    let mut base_p50 = 0.0;
    let mut base_p99 = 0.0;
    for (name, url) in [
        ("direct", direct),
        ("nginx", nginx),
        ("ollama-proxy", proxy),
    ] {
        let mut s = StreamSample::default();
        for _ in 0..RUNS {
            one_stream(&c, url, CHUNKS, INTERVAL_US, &mut s).await?;
        }
        s.delay_us.sort_by(f64::total_cmp);
        s.ttfb_us.sort_by(f64::total_cmp);
        let (p50, p99) = (pct(&s.delay_us, 50.0), pct(&s.delay_us, 99.0));
        if name == "direct" {
            (base_p50, base_p99) = (p50, p99);
        }
        println!(
            "| {name} | {p50:.0} / {p99:.0} | {:.0} / {:.0} | {:.0} | {} of {} | {} |",
            p50 - base_p50,
            p99 - base_p99,
            pct(&s.ttfb_us, 50.0),
            s.merged_reads,
            s.reads,
            s.split_lines
        );
    }
    Ok(())
}

/// Opens `n` streams through `base` that stay open (a chunk every 100 ms); returns once all have
/// their first byte, with the tasks (abort them to close).
async fn open_streams(base: &str, n: usize) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let c = client();
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (c, url, started) = (c.clone(), format!("{base}/api/chat"), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            let Ok(resp) = c
                .post(url)
                .body(r#"{"chunks":600,"interval_us":100000}"#)
                .send()
                .await
            else {
                return;
            };
            let mut body = resp.bytes_stream();
            if let Some(Ok(_)) = body.next().await {
                started.fetch_add(1, Ordering::SeqCst);
            }
            while body.next().await.is_some() {}
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while started.load(Ordering::SeqCst) < n {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} streams started",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tasks)
}

/// Resident memory: idle, and with 1,000 concurrent streams (nginx alongside for reference).
pub async fn memory(proxy: &Proxy, nginx: &Nginx, idle_kib: u64) -> anyhow::Result<()> {
    const N: usize = 1000;
    let nginx_idle = nginx.rss_kib();
    let tasks = open_streams(&proxy.url(""), N).await?;
    let proxy_streams = proxy.rss_kib();
    tasks.iter().for_each(|t| t.abort());
    crate::settle().await;
    let tasks = open_streams(&nginx.url(), N).await?;
    let nginx_streams = nginx.rss_kib();
    tasks.iter().for_each(|t| t.abort());
    crate::settle().await;
    println!("\n### Resident memory (RSS; nginx: master + workers)\n");
    println!("| state | ollama-proxy | nginx |\n|---|---:|---:|");
    println!(
        "| idle (just started) | {:.1} MiB | {:.1} MiB |",
        idle_kib as f64 / 1024.0,
        nginx_idle as f64 / 1024.0
    );
    println!(
        "| {N} concurrent streams | {:.1} MiB | {:.1} MiB |",
        proxy_streams as f64 / 1024.0,
        nginx_streams as f64 / 1024.0
    );
    Ok(())
}

/// Time from the fake Ollama's port opening until every held request has its first byte.
pub async fn wake_release(release: &str, wake_args: &[&str]) -> anyhow::Result<()> {
    println!("\n### Wake release: N requests held while Ollama sleeps, then its port opens\n");
    println!("| held | all released (first byte) after port open | median | RSS while holding |");
    println!("|---:|---:|---:|---:|");
    for n in [1usize, 100, 1000] {
        let fake = Fake::start(release, true)?;
        let mut args = wake_args.to_vec();
        args.extend(["--max-queue", "2000", "--wake-timeout", "120s"]);
        let proxy = Proxy::start(release, &fake.url(), &args).await?;
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (c, url) = (c.clone(), proxy.url("/api/chat"));
            tasks.push(tokio::spawn(async move {
                let resp = c.post(url).body(r#"{"chunks":1}"#).send().await?;
                let at = now_ns();
                anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                resp.bytes().await?;
                Ok::<u128, anyhow::Error>(at)
            }));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while proxy.health().await?["held"].as_u64() != Some(n as u64) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "requests never all held"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rss = proxy.rss_kib();
        let opened = fake.open().await?;
        let mut after = Vec::new();
        for t in tasks {
            after.push(t.await??.saturating_sub(opened) as f64 / 1e6);
        }
        after.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} MiB |",
            after[after.len() - 1],
            pct(&after, 50.0),
            rss as f64 / 1024.0
        );
    }
    Ok(())
}
