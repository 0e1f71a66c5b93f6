//! Which `/api/show` requests may be answered from the cache, and under which key.
//!
//! Ollama's answer depends on every field it reads (`system`, `template`, `options`, ...), and its
//! Go decoder matches keys case-insensitively (`"Model"` may win over `"model"`), so only a request
//! that can mean nothing but "show this model" is cached: a JSON object with exactly one of `model`
//! or `name` (a string) and optionally `verbose` (a bool), each once and spelled exactly so.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::Key;

/// A JSON object's members in order, duplicates kept (a map would silently keep one of them).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Object)
    }
}

/// A model name as Ollama accepts them: not empty, no spaces or control characters (which also
/// keeps the key `"<model> verbose"` unambiguous).
fn plausible_model(m: &str) -> bool {
    !m.is_empty() && !m.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The cache key of an `/api/show` request body, or `None` when it must be forwarded uncached.
pub fn show_key(body: &[u8]) -> Option<Key> {
    let Members(members) = serde_json::from_slice(body).ok()?;
    let mut model = None;
    let mut verbose = None;
    for (name, value) in members {
        match (name.as_str(), value) {
            ("model" | "name", Value::String(m)) if model.is_none() => model = Some(m),
            ("verbose", Value::Bool(v)) if verbose.is_none() => verbose = Some(v),
            _ => return None,
        }
    }
    let model = model.filter(|m| plausible_model(m))?;
    let suffix = if verbose == Some(true) {
        " verbose"
    } else {
        ""
    };
    Some(Key::Show(format!("{model}{suffix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> Option<Key> {
        show_key(body.as_bytes())
    }

    fn show(k: &str) -> Option<Key> {
        Some(Key::Show(k.into()))
    }

    #[test]
    fn plain_requests_are_cached() {
        assert_eq!(key(r#"{"model":"llama3.2"}"#), show("llama3.2"));
        assert_eq!(key(r#"{"name":"llama3.2"}"#), show("llama3.2"));
        assert_eq!(
            key(r#" {"model" : "a:1b" , "verbose": false} "#),
            show("a:1b")
        );
        assert_eq!(key(r#"{"verbose":true,"model":"a"}"#), show("a verbose"));
        // An escaped key is the same key to both decoders.
        assert_eq!(key(r#"{"mod\u0065l":"a"}"#), show("a"));
    }

    #[test]
    fn any_other_member_is_forwarded_uncached() {
        for body in [
            r#"{"model":"llama3.2","system":"INJECTED"}"#,
            r#"{"model":"a","template":"x"}"#,
            r#"{"model":"a","options":{}}"#,
            r#"{"model":"a","keep_alive":"5m"}"#,
            r#"{"model":"a","x":null}"#,
        ] {
            assert_eq!(key(body), None, "{body}");
        }
    }

    #[test]
    fn other_letter_cases_and_duplicates_are_forwarded_uncached() {
        for body in [
            r#"{"model":"a","Model":"b"}"#,
            r#"{"Model":"a"}"#,
            r#"{"MODEL":"a"}"#,
            r#"{"NAME":"a"}"#,
            r#"{"model":"a","Verbose":true}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a","name":"b"}"#,
            r#"{"model":"a","name":"a"}"#,
            r#"{"model":"a","verbose":true,"verbose":false}"#,
            // U+212A KELVIN SIGN and U+017F LONG S fold to k and s in Go.
            "{\"model\":\"a\",\"\u{212a}eep_alive\":\"0\"}",
            "{\"model\":\"a\",\"\u{17f}ystem\":\"x\"}",
        ] {
            assert_eq!(key(body), None, "{body}");
        }
    }

    #[test]
    fn wrong_shapes_are_forwarded_uncached() {
        for body in [
            "",
            "null",
            r#""llama3.2""#,
            r#"["model","a"]"#,
            r#"{}"#,
            r#"{"verbose":true}"#,
            r#"{"model":7}"#,
            r#"{"model":null}"#,
            r#"{"model":["a"]}"#,
            r#"{"model":""}"#,
            r#"{"model":"a verbose"}"#,
            r#"{"model":"a\n"}"#,
            r#"{"model":"a","verbose":"true"}"#,
            r#"{"model":"a","verbose":1}"#,
            r#"{"model":"a","verbose":null}"#,
            r#"{"model":"a"} {"system":"x"}"#,
            r#"{"model":"a""#,
        ] {
            assert_eq!(key(body), None, "{body}");
        }
        assert_eq!(show_key(b"{\"model\":\"a\xff\"}"), None);
    }
}
