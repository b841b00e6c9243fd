//! Turns serde_yaml / serde_path_to_error failures into berth's issue vocabulary: a field
//! path, a position (when serde_yaml knows one) and a lowercase message that says what is
//! allowed and what to do. Owns the message rewriting; knows nothing about files.

use super::locate::{FieldPath, Seg};

/// What went wrong while deserializing one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerdeProblem {
    pub path: FieldPath,
    /// 1-based (line, column) inside the document, when serde_yaml reported one.
    pub position: Option<(usize, usize)>,
    pub message: String,
    /// The position is better found by locating `path` (missing/duplicate fields, whose
    /// serde_yaml position is the start of the enclosing mapping).
    pub prefer_locator: bool,
    /// The YAML itself is malformed (as opposed to well-formed YAML of the wrong shape).
    pub syntax: bool,
}

pub fn from_serde(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    line_offset: usize,
) -> SerdeProblem {
    let mut path = FieldPath(
        err.path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect(),
    );
    let inner = err.inner();
    let position = inner.location().map(|l| (l.line(), l.column()));
    let raw = strip_locations(&inner.to_string(), line_offset);
    let text = strip_yaml_path(&raw);
    let mut prefer_locator = false;
    let mut syntax = false;

    let message = if let Some(rest) = text.strip_prefix("unknown field ") {
        let (field, allowed) = split_expected(rest);
        match allowed {
            Some(a) if a.starts_with("there are no fields") => {
                format!("unknown field {field}: remove it (this mapping takes no fields)")
            }
            Some(a) => format!(
                "unknown field {field}: remove it or use {}",
                a.trim_start_matches("expected ")
            ),
            None => format!("unknown field {field}: remove it"),
        }
    } else if let Some(rest) = text.strip_prefix("unknown variant ") {
        let (value, allowed) = split_expected(rest);
        match allowed {
            Some(a) => format!(
                "unknown value {value}: use {}",
                a.trim_start_matches("expected ")
            ),
            None => format!("unknown value {value}"),
        }
    } else if let Some(field) = text.strip_prefix("missing field ") {
        prefer_locator = true;
        path.0.push(Seg::Key(field.trim_matches('`').to_string()));
        format!("required field {field} is missing: add it")
    } else if let Some(field) = text.strip_prefix("duplicate field ") {
        prefer_locator = true;
        path.0.push(Seg::Key(field.trim_matches('`').to_string()));
        format!("field {field} is set more than once: keep one")
    } else if let Some(rest) = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
    {
        let (found, expected) = split_expected(rest);
        let expected = expected.map(|e| describe_expected(e.trim_start_matches("expected ")));
        match expected {
            Some(e) => format!(
                "expected {e}, found {}: change the value",
                describe_found(found)
            ),
            None => format!("invalid value {}: change it", describe_found(found)),
        }
    } else if text.starts_with("recursion limit exceeded") {
        "nesting is too deep: an App needs only a few levels, flatten this structure".to_string()
    } else if text.starts_with("repetition limit exceeded") {
        "aliases expand to too much data: write the values out instead of using aliases".to_string()
    } else if text.starts_with("unknown anchor") {
        "alias refers to an anchor that is not defined before it: define `&name` first or write the value out".to_string()
    } else if text.starts_with("deserializing from YAML containing more than one document") {
        "more than one document where one was expected: use \\n line breaks and start each document with a `---` line".to_string()
    } else if is_data_error(&text) {
        format!("{}: change the value", tidy(&text))
    } else {
        syntax = true;
        format!(
            "invalid yaml: {}: fix the syntax (indentation, quotes, brackets)",
            tidy(&text)
        )
    };
    SerdeProblem {
        path,
        position,
        message,
        prefer_locator,
        syntax,
    }
}

fn is_data_error(text: &str) -> bool {
    text.starts_with("invalid length")
}

/// `x, expected y` -> (`x`, Some(`expected y`)); the split is at the last `, expected`.
fn split_expected(s: &str) -> (&str, Option<&str>) {
    match s
        .rfind(", expected ")
        .or_else(|| s.rfind(", there are no fields"))
    {
        Some(i) => (&s[..i], Some(s[i + 2..].trim())),
        None => (s, None),
    }
}

fn describe_expected(e: &str) -> String {
    match e {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" | "i128" | "u128" => {
            "a whole number".to_string()
        }
        "f64" | "f32" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        s if s.starts_with("struct ") => "a mapping of fields".to_string(),
        s if s.starts_with("enum ") => "one of the allowed values".to_string(),
        s => s.to_string(),
    }
}

fn describe_found(f: &str) -> String {
    match f {
        "map" => "a mapping".to_string(),
        "sequence" => "a list".to_string(),
        "unit value" => "an empty value".to_string(),
        s => {
            for (prefix, name) in [
                ("string ", "the string "),
                ("integer ", "the whole number "),
                ("floating point ", "the number "),
                ("boolean ", ""),
            ] {
                if let Some(v) = s.strip_prefix(prefix) {
                    return format!("{name}{}", v.trim_matches('`'));
                }
            }
            s.to_string()
        }
    }
}

/// Remove serde_yaml's `path: ` prefix (we report the path separately).
fn strip_yaml_path(s: &str) -> String {
    match s.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(' ') => rest.to_string(),
        _ => s.to_string(),
    }
}

/// Drop the first ` at line N column M` (it is the issue's own position) and shift the line
/// of any further one (a context position) from document lines to file lines.
fn strip_locations(s: &str, line_offset: usize) -> String {
    const AT: &str = " at line ";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut first = true;
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i]);
        let after = &rest[i + AT.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(n) = after[..digits].parse::<usize>() else {
            out.push_str(AT);
            rest = after;
            continue;
        };
        let tail = &after[digits..];
        let col_len = tail
            .strip_prefix(" column ")
            .map(|t| " column ".len() + t.bytes().take_while(u8::is_ascii_digit).count())
            .unwrap_or(0);
        if !first {
            out.push_str(&format!("{AT}{}{}", n + line_offset, &tail[..col_len]));
        }
        first = false;
        rest = &tail[col_len..];
    }
    out.push_str(rest);
    out
}

/// Lowercase the first letter and drop a trailing period.
pub fn tidy(s: &str) -> String {
    let s = s.trim().trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_and_shifts_locations() {
        assert_eq!(
            strip_locations(
                "did not find expected key at line 5 column 3, while parsing a block mapping at line 3 column 1",
                10
            ),
            "did not find expected key, while parsing a block mapping at line 13 column 1"
        );
        assert_eq!(strip_locations("no location", 4), "no location");
        assert_eq!(strip_locations("odd at line x", 4), "odd at line x");
    }

    #[test]
    fn strips_yaml_path_prefix() {
        assert_eq!(
            strip_yaml_path("spec.env[1]: unknown field `x`"),
            "unknown field `x`"
        );
        assert_eq!(strip_yaml_path("invalid type: map"), "invalid type: map");
    }

    #[test]
    fn tidies() {
        assert_eq!(tidy("Found a thing."), "found a thing");
    }
}
