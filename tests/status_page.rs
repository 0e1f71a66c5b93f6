//! The status page in a real browser (see "Monitoring" in docs/behaviour.md): headless Chromium
//! loads `/proxy/` of the real binary for two machines, one asleep after a manual wake that
//! failed and one awake, and the rendered DOM shows both cards, their states and the last wake's
//! cause, at desktop and at phone size. The run saves a screenshot (to docs/status-page.png with
//! OLLAMA_PROXY_UPDATE_SCREENSHOT=1).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::sleeping::{SleepingHost, MAC};
use common::{client, get_json, Child, Fake};

const TOKEN: &str = "page-admin-token";

/// Chromium, or `None` (skip) unless `OLLAMA_PROXY_REQUIRE_TOOLS=1` (CI installs it).
fn chromium() -> Option<&'static str> {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output();
    if found.is_ok_and(|o| o.status.success()) {
        return Some("chromium");
    }
    assert!(
        std::env::var("OLLAMA_PROXY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "chromium is needed (.ci/run installs it)"
    );
    eprintln!("SKIPPED: chromium is not installed");
    None
}

/// Runs headless Chromium with `args` then `url`; its stdout.
async fn browse(dir: &Path, args: &[&str], url: &str) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(args)
            .arg(url)
            .env_remove("http_proxy")
            .output(),
    )
    .await
    .expect("chromium took over 90 s")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(desktop: &SleepingHost, minipc: &Fake) -> String {
    format!(
        "[[backend]]\nname = \"desktop\"\nurl = \"{}\"\nmac = \"{MAC}\"\nbroadcast = \"127.0.0.1\"\n\
         wol_port = {}\npriority = 1\nwake_timeout = \"2s\"\n\n\
         [[backend]]\nname = \"minipc\"\nurl = \"{}\"\nalways_on = true\npriority = 2\n",
        desktop.url(),
        desktop.wol_port,
        minipc.url()
    )
}

fn check_dom(dom: &str) {
    for want in [
        "id=\"backend-desktop\"",
        "id=\"backend-minipc\"",
        "class=\"state asleep\"",
        "class=\"state awake\"",
        "id=\"events\"",
    ] {
        assert!(dom.contains(want), "no {want} in\n{dom}");
    }
    let card = dom.split("id=\"backend-desktop\"").nth(1).unwrap();
    let last = card.split("class=\"last-wake\">").nth(1).unwrap();
    assert!(
        last.starts_with("manual POST /proxy/backends/desktop/wake"),
        "{last}"
    );
}

#[tokio::test]
async fn the_page_in_a_real_browser_shows_both_machines() {
    let Some(_) = chromium() else { return };
    let desktop = SleepingHost::gated(Duration::from_secs(3600)).await;
    let minipc = Fake::bind().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config(&desktop, &minipc)).unwrap();
    let cfg = cfg.display().to_string();
    let proxy = Child::start(&["--config", &cfg], &[("ADMIN_TOKEN", TOKEN)]).await;
    assert_eq!(
        client()
            .get(proxy.url("/api/tags"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let wake = proxy.url("/proxy/backends/desktop/wake");
    let r = client().post(wake).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // The desktop never boots (gate closed): after WAKE_TIMEOUT it is asleep again.
    let start = Instant::now();
    loop {
        let s = get_json(proxy.url("/proxy/status")).await;
        let states: Vec<_> = s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["state"].clone())
            .collect();
        let failed = s["backends"][0]["events"][0]["kind"] == "wake_failed";
        if failed && states == ["asleep", "awake"] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = proxy.url("/proxy/");
    check_dom(&browse(dir.path(), &["--dump-dom", "--window-size=1280,900"], &page).await);
    check_dom(&browse(dir.path(), &["--dump-dom", "--window-size=375,812"], &page).await);
    let shot = match std::env::var("OLLAMA_PROXY_UPDATE_SCREENSHOT").as_deref() {
        Ok("1") => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png"),
        _ => dir.path().join("status-page.png"),
    };
    let arg = format!("--screenshot={}", shot.display());
    browse(
        dir.path(),
        &[&arg, "--window-size=800,1000", "--hide-scrollbars"],
        &page,
    )
    .await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // Loading the page (and the browser's icon request) woke nothing more.
    let health = get_json(proxy.url("/health")).await;
    assert_eq!(health["backends"][0]["wakes"], 1, "{health}");
    assert!(
        !proxy.stderr.lock().unwrap().contains(TOKEN),
        "the admin token was logged"
    );
    assert_eq!(desktop.log().count("/proxy/"), 0);
    assert_eq!(minipc.log().count("/proxy/"), 0);
}
