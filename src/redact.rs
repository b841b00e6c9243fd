//! Redaction: the one place that decides what counts as a secret and hides it. Used for
//! every API response body (apps, specs, events with their details, scaling decisions,
//! plans, errors) and for every log line `berth` writes (`main.rs` wraps the log writer).
//! Pure string/JSON rewriting; must not touch anything else.
//!
//! Rules:
//! - a variable *name* is secret when it contains, case-insensitively, one of SECRET, TOKEN,
//!   PASSWORD, PASSWD, KEY, CREDENTIAL, PRIVATE;
//! - `valueFrom` env vars never carry a value anywhere berth shows (the host supplies it at
//!   container creation only);
//! - in JSON, an object `{"name": <secret name>, "value": ...}` (an env entry) gets
//!   `"value": "<redacted>"`, and any member whose key is a secret name gets `"<redacted>"`;
//! - in text (and every JSON string), `NAME=value` with a secret NAME becomes
//!   `NAME=<redacted>`.

use crate::spec::{EnvValue, EnvVar};
use serde_json::Value;
use std::borrow::Cow;

/// What a hidden value shows as.
pub const REDACTED: &str = "<redacted>";

const SECRET_WORDS: [&str; 7] = [
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
];

/// Does this variable or field name look like it holds a secret?
pub fn is_secret_name(name: &str) -> bool {
    let name = name.as_bytes();
    SECRET_WORDS.iter().any(|word| {
        name.windows(word.len())
            .any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
    })
}

/// The value of an env var as berth may show it: None for `valueFrom` (no value is ever
/// known outside container creation), `<redacted>` for a literal under a secret name.
pub fn env_value(var: &EnvVar) -> Option<String> {
    match &var.value {
        EnvValue::FromHost => None,
        EnvValue::Literal(_) if is_secret_name(&var.name) => Some(REDACTED.to_string()),
        EnvValue::Literal(value) => Some(redact_text(value).into_owned()),
    }
}

/// Redacts a JSON document in place (see the module rules).
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Cow::Owned(redacted) = redact_text(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => {
            let env_entry = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(is_secret_name);
            for (key, member) in map.iter_mut() {
                let hide = (env_entry && key == "value") || is_secret_name(key);
                if hide && !member.is_null() {
                    *member = Value::String(REDACTED.to_string());
                } else {
                    redact_json(member);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn ends_value(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '`' | ',' | ';' | '&' | ')' | ']' | '}' | '<' | '>' | '\\'
        )
}

/// Replaces the value of every `NAME=value` whose NAME is secret with `<redacted>`.
/// Borrows when nothing changed.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    if !text.contains('=') {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(offset) = text[search..].find('=') {
        let eq = search + offset;
        search = eq + 1;
        let name_start = text[..eq]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_name_char(*c))
            .last()
            .map_or(eq, |(i, _)| i);
        let name = &text[name_start..eq];
        if name.is_empty() || !is_secret_name(name) {
            continue;
        }
        let value_end = text[search..]
            .find(ends_value)
            .map_or(text.len(), |i| search + i);
        if value_end == search {
            continue;
        }
        out.push_str(&text[copied..search]);
        out.push_str(REDACTED);
        copied = value_end;
        search = value_end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_names() {
        for name in [
            "DB_PASSWORD",
            "api_key",
            "GITHUB_TOKEN",
            "Secret",
            "MYSQL_PASSWD",
            "GOOGLE_CREDENTIALS",
            "PRIVATE_PEM",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["NODE_ENV", "PORT", "REDIS_URL", "spec_hash", "image"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn env_values() {
        let var = |name: &str, value: EnvValue| EnvVar {
            name: name.into(),
            value,
        };
        assert_eq!(
            env_value(&var("NODE_ENV", EnvValue::Literal("production".into()))),
            Some("production".into())
        );
        assert_eq!(
            env_value(&var("API_TOKEN", EnvValue::Literal("t0p".into()))),
            Some(REDACTED.into())
        );
        assert_eq!(env_value(&var("REDIS_URL", EnvValue::FromHost)), None);
    }

    #[test]
    fn text() {
        assert_eq!(
            redact_text("start with DB_PASSWORD=hunter2 and PORT=80"),
            "start with DB_PASSWORD=<redacted> and PORT=80"
        );
        assert_eq!(
            redact_text("url?api_key=abc&x=1, \"TOKEN=q\""),
            "url?api_key=<redacted>&x=1, \"TOKEN=<redacted>\""
        );
        assert_eq!(redact_text("KEY=<redacted>"), "KEY=<redacted>");
        assert_eq!(redact_text("a == b; KEY="), "a == b; KEY=");
        assert!(matches!(redact_text("PORT=80"), Cow::Borrowed(_)));
        assert_eq!(redact_text("é SECRET=ü tail"), "é SECRET=<redacted> tail");
    }

    #[test]
    fn json() {
        let mut doc = json!({
            "env": [
                {"name": "DB_PASSWORD", "value": {"literal": "hunter2"}},
                {"name": "NODE_ENV", "value": {"literal": "production"}},
                {"name": "REDIS_URL", "value": "fromHost"},
                {"name": "API_KEY", "valueFrom": "sdk"}
            ],
            "details": {"aws_secret": "s3", "nested": {"private": {"a": 1}}, "n": null},
            "message": "created with SECRET_X=abc",
            "image": "app:1"
        });
        redact_json(&mut doc);
        assert_eq!(doc["env"][0]["value"], REDACTED);
        assert_eq!(doc["env"][1]["value"]["literal"], "production");
        assert_eq!(doc["env"][2]["value"], "fromHost");
        assert_eq!(doc["env"][3]["valueFrom"], "sdk");
        assert_eq!(doc["details"]["aws_secret"], REDACTED);
        assert_eq!(doc["details"]["nested"]["private"], REDACTED);
        assert!(doc["details"]["n"].is_null());
        assert_eq!(doc["message"], "created with SECRET_X=<redacted>");
        assert_eq!(doc["image"], "app:1");
    }
}
