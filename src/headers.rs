//! Header rewriting for forwarding: hop-by-hop removal, `Host`, `X-Forwarded-For`/`-Proto` (see
//! "Headers" in docs/behaviour.md).

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1 connection-specific fields (plus the old `Keep-Alive`/`Proxy-Connection`).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Removes hop-by-hop fields, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Request headers as sent to Ollama: hop-by-hop fields and `Expect` (the proxy answers
/// `100-continue` itself) removed, `X-Forwarded-Host`/`-Proto` set by the proxy (a client's own
/// values are replaced), the client appended to `X-Forwarded-For`, `Host` set to Ollama's.
pub fn upstream_request(headers: &mut HeaderMap, client: IpAddr, authority: &str) {
    // Taken before the hop-by-hop fields go: a client may name `Host` in `Connection`.
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    // Every earlier hop, from all the client's X-Forwarded-For fields, bytes as they were.
    let mut chain = Vec::new();
    for prev in headers.get_all("x-forwarded-for") {
        let prev = prev.as_bytes().trim_ascii();
        if !prev.is_empty() {
            chain.extend_from_slice(prev);
            chain.extend_from_slice(b", ");
        }
    }
    chain.extend_from_slice(client.to_string().as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&chain) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    match host {
        Some(host) => {
            headers.insert("x-forwarded-host", host);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_named_in_connection_still_becomes_x_forwarded_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("proxy.lan"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Host"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"10.0.0.9\xff").unwrap(),
        );
        upstream_request(&mut h, "192.168.1.20".parse().unwrap(), "desk.lan:11434");
        assert_eq!(h["x-forwarded-host"], "proxy.lan");
        assert_eq!(h[header::HOST], "desk.lan:11434");
        assert_eq!(
            h["x-forwarded-for"].as_bytes(),
            b"10.0.0.9\xff, 192.168.1.20"
        );
    }

    #[test]
    fn rewrites_request_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("proxy.lan:11434"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://webui.lan"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.10"));
        upstream_request(&mut h, "192.168.1.20".parse().unwrap(), "desk.lan:11434");
        assert_eq!(h[header::HOST], "desk.lan:11434");
        assert_eq!(h["x-forwarded-for"], "10.0.0.9, 10.0.0.10, 192.168.1.20");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "proxy.lan:11434");
        assert_eq!(h[header::AUTHORIZATION], "Bearer x");
        assert_eq!(h[header::ORIGIN], "http://webui.lan");
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "transfer-encoding",
            "te",
            "expect",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }
}
