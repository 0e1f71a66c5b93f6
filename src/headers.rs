//! Header rewriting for forwarding: hop-by-hop removal, `Host`, `X-Forwarded-For`/`-Proto` (see
//! "Headers" in docs/behaviour.md).

use std::io::Write;
use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

// Names built once: inserting by `&str` would allocate a name that `http` does not know per request.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

/// Ollama's `Host` value, made once: `authority` as a header value (`None` if it cannot be one).
pub fn host_value(authority: &str) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(authority.as_bytes())).ok()
}

/// Request headers as sent to Ollama: hop-by-hop fields and `Expect` (the proxy answers
/// `100-continue` itself) removed, `X-Forwarded-Host`/`-Proto` set by the proxy (a client's own
/// values are replaced), the client appended to `X-Forwarded-For`, `Host` set to Ollama's (`host`,
/// from [`host_value`]).
pub fn upstream_request(headers: &mut HeaderMap, client: IpAddr, host: Option<&HeaderValue>) {
    // Taken before the hop-by-hop fields go: a client may name `Host` in `Connection`.
    let client_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    if let Some(v) = forwarded_for(headers, client) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match client_host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    if let Some(v) = host {
        headers.insert(header::HOST, v.clone());
    }
}

/// Every earlier hop, from all the client's X-Forwarded-For fields, bytes as they were, then
/// `client`: built in one buffer of the exact size, which becomes the value without a copy.
fn forwarded_for(headers: &HeaderMap, client: IpAddr) -> Option<HeaderValue> {
    // The longest IPv6 text form is 45 bytes.
    let mut text = [0u8; 64];
    let free = {
        let mut rest = &mut text[..];
        write!(rest, "{client}").ok()?;
        rest.len()
    };
    let ip = text.get(..text.len() - free)?;
    let hops = || {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|v| !v.is_empty())
    };
    let len = hops().map(|v| v.len() + 2).sum::<usize>() + ip.len();
    let mut chain = Vec::with_capacity(len);
    for prev in hops() {
        chain.extend_from_slice(prev);
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(ip);
    HeaderValue::from_maybe_shared(Bytes::from(chain)).ok()
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
        let host = host_value("desk.lan:11434");
        upstream_request(&mut h, "192.168.1.20".parse().unwrap(), host.as_ref());
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
        h.append("x-forwarded-for", HeaderValue::from_static("  "));
        let host = host_value("desk.lan:11434");
        upstream_request(&mut h, "192.168.1.20".parse().unwrap(), host.as_ref());
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

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    #[test]
    fn ipv6_clients_and_no_earlier_hops() {
        let mut h = HeaderMap::new();
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        upstream_request(&mut h, longest, None);
        assert_eq!(h["x-forwarded-for"], longest.to_string().as_str());
        assert!(!h.contains_key(header::HOST));
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
