//! The status page `/proxy/`: one server-rendered HTML page, no script and no external asset, that
//! refreshes itself; everything that came from outside is escaped (see "Monitoring" in
//! docs/behaviour.md).

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderValue, Response};

use super::{card, Card};
use crate::handler::App;
use crate::monitor::events::{unix_now, Event};

/// Seconds between refreshes. The page names an empty inline icon: a browser's own
/// `GET /favicon.ico` would be work for Ollama and wake the machine.
const REFRESH: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:12px;background:#f4f5f7;color:#222}\
h1{font-size:1.3em;margin:0 0 12px}h2{font-size:1.1em;margin:18px 0 8px}\
.cards{display:flex;flex-wrap:wrap;gap:12px}\
.card{background:#fff;border-radius:8px;padding:12px;flex:1 1 280px;max-width:100%;box-sizing:border-box;box-shadow:0 1px 3px #0002}\
.state{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:bold;color:#fff;background:#888}\
.awake{background:#2a8a3e}.asleep{background:#555}.waking,.sleeping{background:#c07a00}\
dl{display:grid;grid-template-columns:auto minmax(0,1fr);gap:2px 10px;margin:8px 0}\
dt{color:#666;white-space:nowrap}dd{margin:0;overflow-wrap:anywhere}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff;font-size:.9em}\
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #ddd;vertical-align:top}\
th{white-space:nowrap}td.d{overflow-wrap:anywhere}\
form{display:inline-block;margin:4px 4px 0 0}button{padding:6px 12px;font-size:1em}\
input{padding:5px;font-size:1em;max-width:100%;box-sizing:border-box}\
@media(max-width:600px){thead{display:none}tr{display:block;border-bottom:1px solid #ddd;padding:4px 0}\
td{display:inline-block;border:0;padding:2px 6px}td.d{display:block}}";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as `2026-01-31T12:00:00Z`; past the year 9999 (which RFC 3339 cannot write), the
/// seconds.
pub fn rfc3339(at: u64) -> String {
    let mut out = String::new();
    match UNIX_EPOCH.checked_add(Duration::from_secs(at)) {
        Some(t) if write!(out, "{}", humantime::format_rfc3339_seconds(t)).is_ok() => out,
        _ => format!("{at} s after 1970"),
    }
}

fn ago(at: u64) -> String {
    let secs = unix_now().saturating_sub(at);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn hours(secs: u64) -> String {
    format!("{:.1} h", secs as f64 / 3600.0)
}

/// The page; `cookie`: the admin token was entered already, so its field is left out.
pub fn render(app: &App, cookie: bool) -> Response<Body> {
    let cards: Vec<Card> = app.backends.all().iter().map(|b| card(b)).collect();
    let admin = app.cfg.access.admin_token.is_some();
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH}\">\
<link rel=\"icon\" href=\"data:,\"><title>ollama-proxy</title><style>{STYLE}</style></head>\
<body><h1>ollama-proxy</h1><div class=\"cards\">"
    );
    for c in &cards {
        card_html(&mut h, c, admin, cookie);
    }
    h.push_str("</div><h2>Events</h2><div class=\"scroll\"><table id=\"events\"><thead><tr><th>When (UTC)</th><th>Backend</th><th>Event</th><th>Cause</th><th>Details</th></tr></thead><tbody>");
    let mut all: Vec<(&str, &Event)> = cards
        .iter()
        .flat_map(|c| c.snap.events.iter().map(move |e| (c.name.as_str(), e)))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.1.at));
    for (name, e) in all.into_iter().take(crate::monitor::events::KEEP) {
        event_row(&mut h, name, e);
    }
    h.push_str("</tbody></table></div><h2>Cached models</h2>");
    for c in &cards {
        models_html(&mut h, c);
    }
    h.push_str("</body></html>");
    let mut resp = Response::new(Body::from(h));
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn card_html(h: &mut String, c: &Card, admin: bool, cookie: bool) {
    let s = &c.snap;
    let (name, state) = (esc(&c.name), s.state.as_str());
    let _ = write!(h, "<section class=\"card\" id=\"backend-{name}\"><h2>{name} <span class=\"state {state}\">{state}</span></h2><dl>\
<dt>Since</dt><dd>{} ({} ago)</dd><dt>Held</dt><dd>{}</dd><dt>Asleep today</dt><dd>{}</dd>\
<dt>Asleep 7 days</dt><dd>{}</dd><dt>Wakes today</dt><dd>{}</dd>",
        rfc3339(s.since), ago(s.since), c.held, hours(s.asleep_today_s), hours(s.asleep_week_s), s.wakes_today);
    if let Some(e) = s.events.iter().find(|e| e.kind == "wake_requested") {
        let _ = write!(
            h,
            "<dt>Last wake</dt><dd class=\"last-wake\">{} {}</dd>",
            esc(e.cause.as_deref().unwrap_or("-")),
            esc(&describe(e))
        );
    }
    h.push_str("</dl>");
    if admin {
        let actions = [("wake", c.can_wake), ("sleep", c.can_sleep)];
        for action in actions.iter().filter(|a| a.1).map(|a| a.0) {
            let label = if action == "wake" {
                "Wake now"
            } else {
                "Sleep now"
            };
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/proxy/backends/{name}/{action}\">"
            );
            if !cookie {
                h.push_str("<input type=\"password\" name=\"token\" placeholder=\"admin token\" autocomplete=\"current-password\" required> ");
            }
            let _ = write!(h, "<button type=\"submit\">{label}</button></form>");
        }
    }
    h.push_str("</section>");
}

/// Method, path, model, client and details of an event, as plain text (escaped by the caller).
fn describe(e: &Event) -> String {
    let mut parts = Vec::new();
    if let (Some(m), Some(p)) = (&e.method, &e.path) {
        parts.push(format!("{m} {p}"));
    }
    if let Some(m) = &e.model {
        parts.push(format!("model {m}"));
    }
    if let Some(c) = &e.client {
        parts.push(format!("from {c}"));
    }
    if let Some(k) = &e.key {
        parts.push(format!("key {k}"));
    }
    if let Some(t) = e.took_s {
        parts.push(format!("after {t} s"));
    }
    if let Some(d) = &e.detail {
        parts.push(d.clone());
    }
    parts.join(", ")
}

fn event_row(h: &mut String, name: &str, e: &Event) {
    let cause = e.cause.as_deref().unwrap_or("");
    let _ = write!(
        h,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"d\">{}</td></tr>",
        rfc3339(e.at),
        esc(name),
        esc(&e.kind.replace('_', " ")),
        esc(cause),
        esc(&describe(e))
    );
}

fn models_html(h: &mut String, c: &Card) {
    let age = c.models_age.map_or("none cached".to_string(), |a| {
        format!("{} old", humantime::format_duration(Duration::from_secs(a)))
    });
    let _ = write!(
        h,
        "<p><b>{}</b>: {} models, {}</p><ul class=\"models\">",
        esc(&c.name),
        c.models.len(),
        esc(&age)
    );
    for m in &c.models {
        let _ = write!(h, "<li>{}</li>", esc(m));
    }
    h.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn any_time_is_written_without_a_panic() {
        assert_eq!(super::rfc3339(1_773_100_800), "2026-03-10T00:00:00Z");
        assert_eq!(
            super::rfc3339(u64::MAX),
            "18446744073709551615 s after 1970"
        );
        assert_eq!(super::rfc3339(253_402_300_800), "253402300800 s after 1970");
    }
}
