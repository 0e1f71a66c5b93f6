//! One answer from several machines' model lists: `/api/tags` merged (a model on several machines
//! once, the newest), `/api/ps` joined (see "Routing" in docs/behaviour.md).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::canonical;
use crate::models::rfc3339_unix;

/// A `{"models":[...]}` body whose entries are kept byte for byte as Ollama sent them.
#[derive(Deserialize, Serialize)]
struct Models<'a> {
    #[serde(borrow)]
    models: Vec<&'a RawValue>,
}

/// The parts of an entry that merging reads.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
    #[serde(borrow, default)]
    model: Option<&'a str>,
    #[serde(borrow, default)]
    modified_at: Option<&'a str>,
}

/// The entries of each body that is a `{"models":[...]}` object; other bodies are left out.
fn entries<'a>(bodies: &[&'a str]) -> impl Iterator<Item = &'a RawValue> + 'a {
    let lists: Vec<Models<'a>> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect();
    lists.into_iter().flat_map(|l| l.models)
}

/// `{"models":[...]}` with `models`.
fn body(models: Vec<&RawValue>) -> String {
    serde_json::to_string(&Models { models }).unwrap_or_else(|_| r#"{"models":[]}"#.into())
}

/// `/api/tags` of several machines as one list: a model on several machines (names compared as
/// Ollama compares them) is listed once, with the entry whose `modified_at` is newest (the first
/// given among equals). Newest first, as Ollama sorts it. Entries are otherwise as Ollama sent
/// them; one without a name is kept as is; a body that is not a model list is left out.
pub fn merge_tags(bodies: &[&str]) -> String {
    // (key, modified, entry); the key `None` never merges.
    let mut kept: Vec<(Option<String>, i64, &RawValue)> = Vec::new();
    for raw in entries(bodies) {
        let entry: Option<Entry> = serde_json::from_str(raw.get()).ok();
        let key = entry
            .as_ref()
            .and_then(|e| e.name.or(e.model))
            .map(canonical);
        let modified = entry
            .as_ref()
            .and_then(|e| e.modified_at)
            .and_then(rfc3339_unix)
            .unwrap_or(i64::MIN);
        match kept.iter_mut().find(|k| key.is_some() && k.0 == key) {
            Some(k) if modified > k.1 => *k = (key, modified, raw),
            Some(_) => {}
            None => kept.push((key, modified, raw)),
        }
    }
    // Stable: equal times keep the order given.
    kept.sort_by_key(|k| std::cmp::Reverse(k.1));
    body(kept.into_iter().map(|k| k.2).collect())
}

/// `/api/ps` of the awake machines as one list: every entry of each, in the order given (a model
/// loaded on two machines is listed twice: it takes memory on both).
pub fn join_ps(bodies: &[&str]) -> String {
    body(entries(bodies).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn names(body: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("-").to_string())
            .collect()
    }

    #[test]
    fn a_model_on_several_machines_is_listed_once_the_newest() {
        let desktop = r#"{"models":[
            {"name":"llama3.2:latest","modified_at":"2024-06-01T10:00:00Z","size":1},
            {"name":"qwen:7b","modified_at":"2024-01-01T00:00:00Z"}]}"#;
        let minipc = r#"{"models":[
            {"name":"Llama3.2","modified_at":"2024-07-01T10:00:00+02:00","size":2},
            {"name":"phi3:mini","modified_at":"2023-01-01T00:00:00Z"}]}"#;
        let merged = merge_tags(&[desktop, minipc]);
        assert_eq!(names(&merged), ["Llama3.2", "qwen:7b", "phi3:mini"]);
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["models"][0]["size"], 2);
        // The same on both: the first given wins.
        let twice = merge_tags(&[desktop, desktop]);
        assert_eq!(names(&twice), ["llama3.2:latest", "qwen:7b"]);
    }

    #[test]
    fn entries_stay_as_ollama_sent_them() {
        let body =
            r#"{"models":[{"name":"b:1","z":1,"a":{"y":2,"x":[1, 2]},"modified_at":"bad"}]}"#;
        let merged = merge_tags(&[body, r#"{"models":[{"model":"only:1"},{"x":1}]}"#]);
        assert_eq!(
            merged,
            r#"{"models":[{"name":"b:1","z":1,"a":{"y":2,"x":[1, 2]},"modified_at":"bad"},{"model":"only:1"},{"x":1}]}"#
        );
    }

    #[test]
    fn bodies_that_are_not_lists_are_left_out() {
        let good = json!({"models":[{"name":"a:1"}]}).to_string();
        for bad in ["", "null", "[]", r#"{"error":"x"}"#, r#"{"models":5}"#] {
            assert_eq!(names(&merge_tags(&[bad, &good])), ["a:1"], "{bad}");
        }
        assert_eq!(merge_tags(&[]), r#"{"models":[]}"#);
    }

    #[test]
    fn ps_lists_every_machines_entries() {
        let a = r#"{"models":[{"name":"llama3.2:latest","size_vram":1}]}"#;
        let b = r#"{"models":[{"name":"llama3.2:latest","size_vram":2}]}"#;
        assert_eq!(
            join_ps(&[a, b]),
            r#"{"models":[{"name":"llama3.2:latest","size_vram":1},{"name":"llama3.2:latest","size_vram":2}]}"#
        );
    }
}
