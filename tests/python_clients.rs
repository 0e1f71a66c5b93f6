//! The official `ollama` and `openai` Python packages, pinned in tests/py/requirements.txt, talk to
//! a fake Ollama through the proxy.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::py::python;
use common::sleeping::SleepingHost;
use common::{Fake, Proxy};

/// Runs tests/py/clients.py against `base` and returns its output, failing on a non-zero exit.
pub async fn run_clients(py: &PathBuf, base: &str, extra: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/clients.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(py)
            .arg(script)
            .arg(base)
            .args(extra)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env("NO_PROXY", "*")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python clients hung")
    .unwrap();
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    text
}

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
