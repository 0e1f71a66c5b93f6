//! `/v1/models` and `/v1/models/{id}` derived from a cached `/api/tags` answer, in Ollama's shape.

use serde_json::{json, Value};

/// One OpenAI model object for a tags entry.
fn model_object(m: &Value) -> Option<Value> {
    let name = m.get("name").or_else(|| m.get("model"))?.as_str()?;
    let created = m
        .get("modified_at")
        .and_then(Value::as_str)
        .and_then(rfc3339_unix)
        .unwrap_or(0);
    Some(json!({"id": name, "object": "model", "created": created, "owned_by": owner(name)}))
}

/// The namespace of a model name: `library` when none (`llama3:8b`), else the part before the model.
fn owner(name: &str) -> String {
    let base = name.split(':').next().unwrap_or(name);
    let parts: Vec<&str> = base.split('/').collect();
    match parts.len() {
        0 | 1 => "library".into(),
        n => parts[n - 2].into(),
    }
}

/// `{"object":"list","data":[...]}` from a tags body.
pub fn list(tags: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(tags).ok()?;
    let data: Vec<Value> = v
        .get("models")?
        .as_array()?
        .iter()
        .filter_map(model_object)
        .collect();
    Some(json!({"object": "list", "data": data}))
}

/// The model `id` from a tags body, its name compared as Ollama compares names (with or without
/// `:latest`, host and namespace, in any case); `None` when absent.
pub fn find(tags: &str, id: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(tags).ok()?;
    v.get("models")?
        .as_array()?
        .iter()
        .find(|m| {
            // The same name the list shows: `name`, or `model` when there is no name.
            m.get("name")
                .or_else(|| m.get("model"))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty() && crate::routing::same_model(n, id))
        })
        .and_then(model_object)
}

/// Unix seconds of an RFC 3339 timestamp such as `2024-06-01T10:11:12.123456789-07:00`; `None`
/// for anything else (never a panic: the text comes from Ollama, or from the cache file).
pub fn rfc3339_unix(s: &str) -> Option<i64> {
    crate::rfc3339::unix(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: &str = r#"{"models":[
        {"name":"llama3.2:latest","model":"llama3.2:latest","modified_at":"2024-06-01T10:11:12.123456789-07:00"},
        {"name":"jmorgan/coder:7b","model":"jmorgan/coder:7b","modified_at":"1970-01-01T00:00:10Z"}]}"#;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_unix("2024-06-01T17:11:12Z"), Some(1_717_261_872));
        assert_eq!(
            rfc3339_unix("2024-06-01T10:11:12.123456789-07:00"),
            Some(1_717_261_872)
        );
        assert_eq!(rfc3339_unix("garbage"), None);
        assert_eq!(
            rfc3339_unix("2024-06-01T17:11:12+00:00"),
            Some(1_717_261_872)
        );
    }

    #[test]
    fn hostile_timestamps_are_none_not_a_panic() {
        for s in [
            "2024-06-01T10:11:12\u{e9}0000",
            "2024-06-01T10:11:12\u{e9}",
            "2024-06-01T10:11:1\u{e9}Z",
            "\u{e9}024-06-01T10:11:12Z",
            "2024-06-01T10:11:12.\u{20ac}Z",
            "2024-06-01T10:11:12.999\u{1f600}",
            "2024-06-01T10:11:12+0\u{e9}:00",
            "2024-06-01T10:11:12+07\u{e9}00",
            "2024-06-01T10:11:12+07:0\u{e9}",
            "2024-06-01T10:11:12+07:00:00",
            "2024-06-01T10:11:12+7:00",
            "+024-06-01T10:11:12Z",
            "2024-+6-01T10:11:12Z",
            "2024-06-01T-1:11:12Z",
            "2024-06-01T10:11:12",
            "2024-06-01",
            "",
            "----------T--------Z",
        ] {
            assert_eq!(rfc3339_unix(s), None, "{s:?}");
        }
    }

    /// Every prefix, and every position given a multi-byte or odd character, of a few valid
    /// timestamps: the neighbourhood a truncated or corrupted value lands in. (No proptest: this
    /// deterministic sweep covers the byte-boundary class that panicked, without a new crate.)
    #[test]
    fn no_panic_near_valid_timestamps() {
        let valid = [
            "2024-06-01T10:11:12.123456789-07:00",
            "1970-01-01T00:00:10Z",
            "2024-06-01T17:11:12+05:30",
        ];
        let odd = [
            '\u{e9}',
            '\u{20ac}',
            '\u{1f600}',
            '\0',
            '.',
            '+',
            '-',
            'Z',
            ':',
        ];
        for v in valid {
            assert!(rfc3339_unix(v).is_some(), "{v}");
            for end in 0..=v.len() {
                let _ = rfc3339_unix(&v[..end]);
                let (head, tail) = v.split_at(end);
                // Inserted, or in place of the next 1 to 3 characters.
                for (c, skip) in odd.iter().flat_map(|c| (0..4).map(move |k| (c, k))) {
                    let rest = tail.get(skip..).unwrap_or("");
                    let _ = rfc3339_unix(&format!("{head}{c}{rest}"));
                }
            }
        }
    }

    #[test]
    fn list_and_find() {
        let l = list(TAGS).unwrap();
        assert_eq!(l["object"], "list");
        assert_eq!(
            l["data"][0],
            json!({"id":"llama3.2:latest","object":"model","created":1_717_261_872,"owned_by":"library"})
        );
        assert_eq!(l["data"][1]["owned_by"], "jmorgan");
        assert_eq!(find(TAGS, "llama3.2").unwrap()["id"], "llama3.2:latest");
        assert_eq!(find(TAGS, "jmorgan/coder:7b").unwrap()["created"], 10);
        assert!(find(TAGS, "nope").is_none());
        // As Ollama compares names: case, and the default host and namespace.
        assert_eq!(find(TAGS, "LLama3.2").unwrap()["id"], "llama3.2:latest");
        let full = "registry.ollama.ai/library/llama3.2:latest";
        assert_eq!(find(TAGS, full).unwrap()["id"], "llama3.2:latest");
        assert!(find(TAGS, "llama3.2:1b").is_none());
        let only_model = r#"{"models":[{"model":"onlymodel:7b"}]}"#;
        assert_eq!(list(only_model).unwrap()["data"][0]["id"], "onlymodel:7b");
        assert_eq!(
            find(only_model, "onlymodel:7b").unwrap()["id"],
            "onlymodel:7b"
        );
    }
}
