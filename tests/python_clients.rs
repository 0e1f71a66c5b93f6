//! The official `ollama` and `openai` Python packages, pinned in tests/py/requirements.txt, talk to
//! a fake Ollama through the proxy.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::py::{python, run_clients};
use common::sleeping::SleepingHost;
use common::{Fake, Proxy};

#[tokio::test]
async fn official_python_clients_through_the_proxy() {
    let Some(py) = python() else { return };
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    let out = run_clients(&py, &proxy.url(""), &[]).await;
    eprintln!("{out}");
    assert!(out.contains("openai embeddings: ok"), "{out}");
    proxy.stop().await;
}

#[tokio::test]
async fn ollama_client_streams_a_chat_from_a_sleeping_host() {
    let Some(py) = python() else { return };
    let mut host = SleepingHost::new(Duration::from_millis(500)).await;
    let args = host.wake_args();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start(&argv).await;
    let out = run_clients(&py, &proxy.url(""), &["--only-chat"]).await;
    assert!(out.contains("ollama chat stream: 6 chunks"), "{out}");
    host.awake(Duration::from_secs(1)).await;
    assert_eq!(host.log().count("/api/chat"), 1);
    proxy.stop().await;
}
