//! A 1 GiB streamed blob upload passes through the proxy binary while its memory stays low (see
//! "Request bodies" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{client, Child, Fake};

#[tokio::test]
async fn one_gib_upload_streams_in_constant_memory() {
    const MIB: usize = 1 << 20;
    const TOTAL: usize = 1024 * MIB;
    let fake = Fake::bind().await;
    let proxy = Child::start(&["--ollama-url", &fake.url()], &[]).await;
    let idle = proxy.memory_kib("VmRSS");
    let chunk = Bytes::from(vec![0u8; MIB]);
    let body = futures_util::stream::iter(
        (0..TOTAL / MIB).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = client()
        .post(proxy.url(
            "/api/blobs/sha256:29fdb92e57cf082e429c68f5b9b8f2b3d6c6d0b6b2cc51a6e0f5a0c6d5f5e1a2",
        ))
        .header("content-type", "application/json")
        .header("content-length", TOTAL.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.text().await.unwrap(), TOTAL.to_string());
    let seen = fake.log().all();
    assert_eq!(seen.last().unwrap().body_len, TOTAL as u64);
    let peak = proxy.memory_kib("VmHWM");
    eprintln!("proxy RSS idle {idle} KiB, peak during 1 GiB upload {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "proxy peaked at {peak} KiB for a 1 GiB upload"
    );
}
