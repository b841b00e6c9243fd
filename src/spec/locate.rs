//! Field paths and the locator that finds where a field path sits in a document's text, so
//! problems found after deserialization (min > max, a probe port that is not a port) still
//! point at a line and column. The locator is a line/indentation scan of block YAML with a
//! light touch of flow mappings; when a segment cannot be found it returns the deepest
//! ancestor it did find. Owns `Seg`/`FieldPath` formatting; no parsing of values.

use std::fmt;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A field path like `spec.env[1].valueFrom`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn push(mut self, seg: impl Into<Seg>) -> Self {
        self.0.push(seg.into());
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Build a `FieldPath` from keys and indices: `fpath!["spec", "env", i, "name"]`.
macro_rules! fpath {
    ($($seg:expr),* $(,)?) => {
        $crate::spec::locate::FieldPath(vec![$($crate::spec::locate::Seg::from($seg)),*])
    };
}
pub(crate) use fpath;

/// Where a path was found: 1-based line and column inside the document text, how many
/// segments were resolved, and the inline text after the last resolved key (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    pub line: usize,
    pub column: usize,
    pub depth: usize,
    pub value: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
struct VLine<'a> {
    /// 0-based line index in the document.
    line: usize,
    /// Byte column where `text` starts.
    col: usize,
    text: &'a str,
    full: &'a str,
}

/// A node's extent: an optional inline head (text after `key:` or `- ` on the same line)
/// followed by a contiguous range of the document's content lines.
#[derive(Debug, Clone, Copy)]
struct Block<'a> {
    head: Option<VLine<'a>>,
    start: usize,
    end: usize,
}

fn content_lines(text: &str) -> Vec<VLine<'_>> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let full = raw.strip_suffix('\r').unwrap_or(raw);
        let indent = full.bytes().take_while(|&b| b == b' ').count();
        let text = &full[indent..];
        let t = text.trim();
        if t.is_empty() || t.starts_with('#') || full.starts_with('%') {
            continue;
        }
        if indent == 0 && (is_marker(full, "---") || is_marker(full, "...")) {
            let rest = full[3..].trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            let col = full.len() - rest.len();
            out.push(VLine {
                line: i,
                col,
                text: rest,
                full,
            });
            continue;
        }
        out.push(VLine {
            line: i,
            col: indent,
            text,
            full,
        });
    }
    out
}

fn is_marker(line: &str, m: &str) -> bool {
    line.strip_prefix(m)
        .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ") || text.starts_with("-\t")
}

/// Strip a trailing comment and leading anchor/tag tokens from an inline value.
fn clean_inline(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if s.starts_with('#') {
            return "";
        }
        if s.starts_with('&') || s.starts_with('!') {
            let end = s.find([' ', '\t']).unwrap_or(s.len());
            s = &s[end..];
            continue;
        }
        return s;
    }
}

/// If `text` is a mapping entry for `key`, the byte offset just after its `:`.
fn key_match(text: &str, key: &str) -> Option<usize> {
    let after = if let Some(r) = text.strip_prefix(key) {
        r
    } else {
        ['"', '\'']
            .iter()
            .find_map(|q| text.strip_prefix(*q)?.strip_prefix(key)?.strip_prefix(*q))?
    };
    let trimmed = after.trim_start_matches([' ', '\t']);
    let rest = trimmed.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some(text.len() - rest.len())
}

struct Doc<'a> {
    lines: Vec<VLine<'a>>,
}

impl<'a> Doc<'a> {
    fn items(&self, b: Block<'a>) -> impl Iterator<Item = (Option<usize>, VLine<'a>)> + '_ {
        b.head
            .map(|h| (None, h))
            .into_iter()
            .chain((b.start..b.end).filter_map(|i| self.lines.get(i).map(|l| (Some(i), *l))))
    }

    fn first(&self, b: Block<'a>) -> Option<VLine<'a>> {
        self.items(b).next().map(|(_, l)| l)
    }

    /// Lines after index `i` (exclusive) that belong to a node whose key sits at `level`.
    fn child_range(
        &self,
        after: Option<usize>,
        b: Block<'a>,
        level: usize,
        seq_same: bool,
    ) -> (usize, usize) {
        let start = after.map(|i| i + 1).unwrap_or(b.start);
        let mut end = start;
        while end < b.end {
            let l = self.lines[end];
            if l.col > level || (seq_same && l.col == level && is_seq_item(l.text)) {
                end += 1;
            } else {
                break;
            }
        }
        (start, end)
    }

    fn find_key(&self, b: Block<'a>, key: &str) -> Option<(VLine<'a>, Option<&'a str>, Block<'a>)> {
        let first = self.first(b)?;
        if first.text.starts_with('{') {
            return flow_key(first, key);
        }
        let level = first.col;
        let mut hit = None;
        for (idx, l) in self.items(b) {
            if l.col == level {
                if let Some(off) = key_match(l.text, key) {
                    hit = Some((idx, l, off));
                }
            }
        }
        let (idx, l, off) = hit?;
        let rest = clean_inline(&l.text[off..]);
        let head = (!rest.is_empty()).then(|| VLine {
            line: l.line,
            col: l.col + (l.text.len() - rest.len()),
            text: rest,
            full: l.full,
        });
        let (start, end) = self.child_range(idx, b, level, head.is_none());
        Some((l, head.map(|h| h.text), Block { head, start, end }))
    }

    fn find_index(&self, b: Block<'a>, n: usize) -> Option<(VLine<'a>, Block<'a>)> {
        let first = self.first(b)?;
        if first.text.starts_with('[') {
            return flow_index(first, n);
        }
        let level = first.col;
        let (idx, l) = self
            .items(b)
            .filter(|(_, l)| l.col == level && is_seq_item(l.text))
            .nth(n)?;
        let rest = clean_inline(&l.text[1..]);
        let head = (!rest.is_empty()).then(|| VLine {
            line: l.line,
            col: l.col + (l.text.len() - rest.len()),
            text: rest,
            full: l.full,
        });
        let (start, end) = self.child_range(idx, b, level, false);
        Some((l, Block { head, start, end }))
    }
}

/// Find `key:` inside an inline flow mapping `{...}` (first occurrence after a `{`, `,` or
/// blank). The child is the rest of the line after the colon.
fn flow_key<'a>(l: VLine<'a>, key: &str) -> Option<(VLine<'a>, Option<&'a str>, Block<'a>)> {
    let bytes = l.text.as_bytes();
    let mut from = 0;
    while let Some(found) = l.text[from..].find(key) {
        let at = from + found;
        let before_ok = at > 0 && matches!(bytes[at - 1], b'{' | b',' | b' ' | b'\t');
        if before_ok {
            let after = l.text[at + key.len()..].trim_start();
            if let Some(rest) = after.strip_prefix(':') {
                let rest = rest.trim_start();
                let key_line = VLine {
                    line: l.line,
                    col: l.col + at,
                    text: &l.text[at..],
                    full: l.full,
                };
                let head = VLine {
                    line: l.line,
                    col: l.col + (l.text.len() - rest.len()),
                    text: rest,
                    full: l.full,
                };
                let value = rest.split([',', '}']).next().map(str::trim);
                return Some((
                    key_line,
                    value,
                    Block {
                        head: Some(head),
                        start: 0,
                        end: 0,
                    },
                ));
            }
        }
        from = at + key.len();
    }
    None
}

/// Find the `n`th element of an inline flow sequence `[...]`.
fn flow_index(l: VLine<'_>, n: usize) -> Option<(VLine<'_>, Block<'_>)> {
    let bytes = l.text.as_bytes();
    let mut depth = 0usize;
    let mut count = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' | b'\'' => quote = Some(b),
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 && n == 0 && b == b'[' {
                    return Some(flow_elem(l, i + 1));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                count += 1;
                if count == n {
                    return Some(flow_elem(l, i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn flow_elem(l: VLine<'_>, at: usize) -> (VLine<'_>, Block<'_>) {
    let rest = l.text[at..].trim_start();
    let v = VLine {
        line: l.line,
        col: l.col + (l.text.len() - rest.len()),
        text: rest,
        full: l.full,
    };
    (
        v,
        Block {
            head: Some(v),
            start: 0,
            end: 0,
        },
    )
}

fn char_column(l: &VLine<'_>) -> usize {
    l.full.get(..l.col).map_or(l.col, |p| p.chars().count()) + 1
}

/// A document's content lines, scanned once and searched for any number of paths.
pub struct Locator<'a> {
    doc: Doc<'a>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator {
            doc: Doc {
                lines: content_lines(text),
            },
        }
    }

    /// Find `path`. Returns the deepest resolved segment's position, or None when not even
    /// the first segment was found (callers fall back to the document start).
    pub fn find(&self, path: &FieldPath) -> Option<Found<'a>> {
        let doc = &self.doc;
        let mut block = Block {
            head: None,
            start: 0,
            end: doc.lines.len(),
        };
        let mut found: Option<Found<'a>> = None;
        for (depth, seg) in path.0.iter().enumerate() {
            let step = match seg {
                Seg::Key(k) => doc.find_key(block, k),
                Seg::Index(n) => doc.find_index(block, *n).map(|(l, b)| (l, None, b)),
            };
            let Some((l, value, child)) = step else {
                break;
            };
            found = Some(Found {
                line: l.line + 1,
                column: char_column(&l),
                depth: depth + 1,
                value,
            });
            block = child;
        }
        found
    }
}

/// Find `path` in the document `text` (see `Locator::find`).
#[cfg(test)]
pub fn locate<'a>(text: &'a str, path: &FieldPath) -> Option<Found<'a>> {
    Locator::new(text).find(path)
}

/// Read a scalar written inline (`name: web`, `name: "web" # c`) the simple way: plain or
/// quoted without escapes. None for anything else.
pub fn inline_scalar(value: &str) -> Option<&str> {
    let v = value.trim();
    if let Some(rest) = v.strip_prefix('"') {
        let end = rest.find('"')?;
        let s = &rest[..end];
        return (!s.contains('\\')).then_some(s);
    }
    if let Some(rest) = v.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return Some(&rest[..end]);
    }
    let plain = match v.find(" #").or_else(|| v.find("\t#")) {
        Some(i) => v[..i].trim_end(),
        None => v,
    };
    (!plain.is_empty()).then_some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: v1
kind: App
metadata:
  name: web   # the name
spec:
  ports:
    - containerPort: 8080
    - containerPort: 9090
  health:
    httpGet: { path: /healthz, port: 8080 }
  env:
  - name: A
    value: x
  - name: B
    valueFrom: sdk
  command: [\"/bin/sh\", \"-c\", \"true\"]
  scaling:
    minReplicas: 3
    maxReplicas: 2
";

    fn at(path: FieldPath) -> (usize, usize, usize) {
        let f = locate(DOC, &path).expect("found");
        (f.line, f.column, f.depth)
    }

    #[test]
    fn finds_block_keys_and_indices() {
        let cases: Vec<(FieldPath, (usize, usize, usize))> = vec![
            (fpath!["kind"], (2, 1, 1)),
            (fpath!["metadata", "name"], (4, 3, 2)),
            (fpath!["spec", "ports", 1, "containerPort"], (8, 7, 4)),
            (fpath!["spec", "ports", 0], (7, 5, 3)),
            (fpath!["spec", "env", 1, "valueFrom"], (15, 5, 4)),
            (fpath!["spec", "env", 0, "name"], (12, 5, 4)),
            (fpath!["spec", "scaling", "maxReplicas"], (19, 5, 3)),
            (fpath!["spec", "health", "httpGet", "port"], (10, 32, 4)),
            (fpath!["spec", "command", 2], (16, 30, 3)),
            // Missing segments fall back to the deepest ancestor.
            (fpath!["spec", "scaling", "policy", "mode"], (17, 3, 2)),
            (fpath!["spec", "env", 5, "name"], (11, 3, 2)),
            (fpath!["spec", "route"], (5, 1, 1)),
        ];
        for (p, want) in cases {
            assert_eq!(at(p.clone()), want, "{p}");
        }
        assert_eq!(locate(DOC, &fpath!["nope"]), None);
    }

    #[test]
    fn reads_inline_values() {
        let f = locate(DOC, &fpath!["metadata", "name"]).expect("found");
        assert_eq!(f.value.and_then(inline_scalar), Some("web"));
        assert_eq!(inline_scalar("\"web\" # c"), Some("web"));
        assert_eq!(inline_scalar("'web'"), Some("web"));
        assert_eq!(inline_scalar("\"w\\x\""), None);
    }

    #[test]
    fn handles_offset_markers_and_unicode() {
        let text = "---\n# c\nmetadata:\n  name: \"é\"\nspec:\n  image: x\n  replicas: 2\n";
        let f = locate(text, &fpath!["spec", "replicas"]).expect("found");
        assert_eq!((f.line, f.column), (7, 3));
        let text = "spec: {image: \"é\", replicas: 2}\n";
        let f = locate(text, &fpath!["spec", "replicas"]).expect("found");
        assert_eq!((f.line, f.column), (1, 20));
    }

    #[test]
    fn formats_paths() {
        assert_eq!(
            fpath!["spec", "env", 1, "valueFrom"].to_string(),
            "spec.env[1].valueFrom"
        );
        assert_eq!(FieldPath::default().to_string(), "");
    }
}
