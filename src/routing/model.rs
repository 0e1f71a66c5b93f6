//! Which model a request names, and model names compared as Ollama compares them (see "Routing" in
//! docs/behaviour.md).

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// Ollama's defaults for the parts a model name leaves out: `llama3.2` is
/// `registry.ollama.ai/library/llama3.2:latest`.
const DEFAULT_HOST: &str = "registry.ollama.ai";
const DEFAULT_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";

/// The form of `name` that two names share when Ollama takes them for the same model: host,
/// namespace and tag filled in with Ollama's defaults, ASCII lowercase (Ollama's `ParseName` and
/// `EqualFold`). A name Ollama would not parse is only lowercased.
pub fn canonical(name: &str) -> String {
    let name = name.trim();
    let name = name
        .strip_prefix("http://")
        .or_else(|| name.strip_prefix("https://"))
        .unwrap_or(name);
    let (path, tag) = match name.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (name, DEFAULT_TAG),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (host, namespace, model) = match parts.as_slice() {
        [model] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *model),
        [namespace, model] => (DEFAULT_HOST, *namespace, *model),
        [host, namespace, model] => (*host, *namespace, *model),
        _ => return name.to_ascii_lowercase(),
    };
    format!("{host}/{namespace}/{model}:{tag}").to_ascii_lowercase()
}

/// True when Ollama takes `a` and `b` for the same model (`llama3.2` and `llama3.2:latest`).
pub fn same_model(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

/// The JSON keys of a request body that name its model, in the order Ollama reads them, or `None`
/// for a request that names no model (it goes to the preferred backend).
pub fn model_keys(method: &str, path: &str) -> Option<&'static [&'static str]> {
    match (method, path) {
        (
            "POST",
            "/api/chat"
            | "/api/generate"
            | "/api/embed"
            | "/api/embeddings"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings",
        ) => Some(&["model"]),
        // Ollama reads `name` when `model` is empty for these (LiteLLM asks /api/show by `name`).
        ("POST", "/api/pull" | "/api/show") | ("DELETE", "/api/delete") => Some(&["model", "name"]),
        ("POST", "/api/copy") => Some(&["source"]),
        _ => None,
    }
}

/// The model a request names: the first of [`model_keys`] that is a non-empty string in the JSON
/// object `body`. Keys match as Ollama's JSON decoding (Go's `encoding/json`) matches them: in any
/// letter case, the last one in the body setting the value (`null` sets nothing), and what follows
/// the object is not read (Go's `json.Decoder` stops there). `None` for a request without a model,
/// or a body that is not a JSON object. Only the values of those keys are kept: the rest of the
/// body (prompts, images) is skipped unread.
pub fn requested_model(method: &str, path: &str, body: &[u8]) -> Option<String> {
    let keys = model_keys(method, path)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = (&mut de).deserialize_map(Named { keys }).ok()?;
    found.into_iter().find_map(|value| {
        value?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

/// Reads the values of `keys` from a JSON object: per key, the last value under it in any letter
/// case.
struct Named {
    keys: &'static [&'static str],
}

type Found = Vec<Option<Value>>;

impl<'de> Visitor<'de> for Named {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found: Found = vec![None; self.keys.len()];
        while let Some(key) = map.next_key::<String>()? {
            let Some(i) = self.keys.iter().position(|k| k.eq_ignore_ascii_case(&key)) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value: Value = map.next_value()?;
            if let Some(slot) = found.get_mut(i).filter(|_| !value.is_null()) {
                *slot = Some(value);
            }
        }
        Ok(found)
    }
}

/// Longest model name logs and events show, in characters.
pub const SHOWN_MAX: usize = 128;

/// A model name as logs and events show it (it comes from a client): at most [`SHOWN_MAX`]
/// characters (a longer one cut, ending in `…`), control characters and those that break or
/// reorder lines replaced by `\u{FFFD}`, so that a request can neither forge log lines nor fill
/// the log or the events file. A name that needs none of this is lent back as it is.
pub fn shown(name: &str) -> Cow<'_, str> {
    let long = name.chars().nth(SHOWN_MAX).is_some();
    if !long && name.chars().all(|c| harmless(c) == c) {
        return Cow::Borrowed(name);
    }
    let keep = if long { SHOWN_MAX - 1 } else { SHOWN_MAX };
    let mut out: String = name.chars().take(keep).map(harmless).collect();
    if long {
        out.push('…');
    }
    Cow::Owned(out)
}

fn harmless(c: char) -> char {
    let breaks = matches!(
        c,
        '\u{2028}'
            | '\u{2029}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{061C}'
    );
    if c.is_control() || breaks {
        '\u{FFFD}'
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_ollama_compares_them() {
        for (a, b) in [
            ("llama3.2", "llama3.2:latest"),
            ("llama3.2", "library/llama3.2"),
            ("llama3.2", "registry.ollama.ai/library/llama3.2:latest"),
            ("Llama3.2:Latest", "llama3.2"),
            ("jmorgan/coder:7b", "registry.ollama.ai/jmorgan/coder:7b"),
            ("hf.co/bartowski/Qwen:Q4_K_M", "hf.co/bartowski/qwen:q4_k_m"),
            (" llama3.2 ", "llama3.2"),
        ] {
            assert!(same_model(a, b), "{a} = {b}");
        }
        for (a, b) in [
            ("llama3.2", "llama3.2:1b"),
            ("llama3.2", "llama3"),
            ("jmorgan/coder:7b", "coder:7b"),
            ("hf.co/a/b", "a/b"),
        ] {
            assert!(!same_model(a, b), "{a} != {b}");
        }
        assert_eq!(canonical("a/b/c/d"), "a/b/c/d");
    }

    #[test]
    fn the_model_field_of_each_endpoint() {
        let chat = br#"{"model":"llama3.2","messages":[]}"#;
        for path in [
            "/api/chat",
            "/api/generate",
            "/api/show",
            "/v1/chat/completions",
        ] {
            assert_eq!(
                requested_model("POST", path, chat).as_deref(),
                Some("llama3.2")
            );
        }
        assert_eq!(requested_model("GET", "/api/chat", chat), None);
        assert_eq!(requested_model("POST", "/api/create", chat), None);
        assert_eq!(requested_model("POST", "/api/blobs/sha256:x", chat), None);
        let pull = br#"{"name":"qwen:7b"}"#;
        assert_eq!(
            requested_model("POST", "/api/pull", pull).as_deref(),
            Some("qwen:7b")
        );
        // LiteLLM's show.
        assert_eq!(
            requested_model("POST", "/api/show", pull).as_deref(),
            Some("qwen:7b")
        );
        assert_eq!(requested_model("POST", "/api/chat", pull), None);
        let both = br#"{"name":"a","model":"b"}"#;
        assert_eq!(
            requested_model("DELETE", "/api/delete", both).as_deref(),
            Some("b")
        );
        let empty_model = br#"{"model":"","name":"a"}"#;
        assert_eq!(
            requested_model("POST", "/api/pull", empty_model).as_deref(),
            Some("a")
        );
        let copy = br#"{"source":"llama3.2","destination":"mine"}"#;
        assert_eq!(
            requested_model("POST", "/api/copy", copy).as_deref(),
            Some("llama3.2")
        );
        let cased = br#"{"Model":"llama3.2"}"#;
        assert_eq!(
            requested_model("POST", "/api/embed", cased).as_deref(),
            Some("llama3.2")
        );
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"model":5}"#,
            b"",
            br#"{"model":"a""#,
        ] {
            assert_eq!(requested_model("POST", "/api/chat", bad), None);
        }
        // As Go decodes it: the last key in any case sets the value; other keys and nested
        // objects are skipped.
        let mixed = br#"{"MODEL":"x","messages":[{"model":"y"}],"model":"b","Model":"c"}"#;
        assert_eq!(
            requested_model("POST", "/api/chat", mixed).as_deref(),
            Some("c")
        );
        // As Go decodes it: null sets nothing, and what follows the object is not read.
        let null = br#"{"model":"a","Model":null} trailing"#;
        assert_eq!(
            requested_model("POST", "/api/chat", null).as_deref(),
            Some("a")
        );
        let escaped = br#"{"mod\u0065l":"llama3.2"}"#;
        assert_eq!(
            requested_model("POST", "/api/chat", escaped).as_deref(),
            Some("llama3.2")
        );
    }

    #[test]
    fn a_shown_name_is_short_and_on_one_line() {
        assert!(matches!(
            shown("llama3.2:latest"),
            Cow::Borrowed("llama3.2:latest")
        ));
        assert_eq!(
            shown("a\nINFO forged\r\u{2028}\u{200F}"),
            "a\u{FFFD}INFO forged\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        let exact = "é".repeat(SHOWN_MAX);
        assert_eq!(shown(&exact), exact);
        let name = "é".repeat(1 << 20);
        let long = shown(&name);
        assert_eq!(long.chars().count(), SHOWN_MAX);
        assert!(long.ends_with("é…"));
    }
}
