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

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// RFC 9110 §7.6.1 connection-specific fields (plus the old `Keep-Alive`/`Proxy-Connection`),
/// as names: compared and removed without parsing text.
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
    ]
}

/// Removes hop-by-hop fields, including those named in `Connection`. Most requests have none: one
/// look at the names they have decides that.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| hop_by_hop().contains(&name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `Connection: keep-alive` (most clients): removed below without making a name.
        .filter(|t| {
            !hop_by_hop()
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(t))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop() {
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
    // One look at the names says which removals and look-ups are needed: most requests carry
    // none of these fields (`strip_hop_by_hop` looks for its own).
    let (mut expect, mut forwarded_for, mut forwarded_host) = (false, false, false);
    for name in headers.keys() {
        expect |= name == header::EXPECT;
        forwarded_for |= name == X_FORWARDED_FOR;
        forwarded_host |= name == X_FORWARDED_HOST;
    }
    // Room for the fields added below, made once.
    headers.reserve(4);
    // Taken before the hop-by-hop fields go: a client may name `Host` in `Connection`.
    let client_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    if expect {
        headers.remove(header::EXPECT);
    }
    let chain = if forwarded_for {
        forwarded_chain(headers, client)
    } else {
        let mut text = [0u8; 64];
        ip_text(client, &mut text).and_then(|ip| HeaderValue::from_bytes(ip).ok())
    };
    if let Some(v) = chain {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match client_host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h);
        }
        None if forwarded_host => {
            headers.remove(&X_FORWARDED_HOST);
        }
        None => {}
    }
    if let Some(v) = host {
        headers.insert(header::HOST, v.clone());
    }
}

/// Every earlier hop, from all the client's X-Forwarded-For fields, bytes as they were, then
/// `client`: built in one buffer of the exact size, which becomes the value without a copy.
fn forwarded_chain(headers: &HeaderMap, client: IpAddr) -> Option<HeaderValue> {
    // The longest IPv6 text form is 45 bytes.
    let mut text = [0u8; 64];
    let ip = ip_text(client, &mut text)?;
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

/// `ip` as text in `buf`: IPv4 by hand (the formatting machinery costs more than the rest of the
/// header rewrite), IPv6 as `Display` writes it.
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> Option<&[u8]> {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut at = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    *buf.get_mut(at)? = b'.';
                    at += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in digits.iter().skip(skip) {
                    *buf.get_mut(at)? = b'0' + d;
                    at += 1;
                }
            }
            at
        }
        IpAddr::V6(_) => {
            let mut rest = &mut buf[..];
            write!(rest, "{ip}").ok()?;
            64 - rest.len()
        }
    };
    buf.get(..len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.255",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
            "::ffff:10.0.0.1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(
                ip_text(parsed, &mut buf).unwrap(),
                parsed.to_string().as_bytes()
            );
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 3, 7]);
            assert_eq!(ip_text(ip, &mut buf).unwrap(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn without_host_a_clients_x_forwarded_host_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        upstream_request(&mut h, "10.1.2.3".parse().unwrap(), None);
        assert!(!h.contains_key("x-forwarded-host"));
        assert!(!h.contains_key(header::EXPECT));
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h.len(), 2);
    }

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
