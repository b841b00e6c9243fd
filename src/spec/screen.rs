//! Hostile-input screen: a single linear byte scan that runs before serde_yaml sees a file.
//! It refuses files over `MAX_FILE_BYTES`, flow nesting (`[`/`{`) deeper than
//! `MAX_FLOW_DEPTH`, block nesting (indentation and `- `/`? ` indicators) deeper than
//! `MAX_BLOCK_DEPTH`, and documents with more than `MAX_ALIASES_PER_DOC` alias uses, each with
//! a line and column. serde_yaml's time to reach its own recursion limit grows quadratically with
//! flow nesting, so this screen is what keeps a hostile file to milliseconds.
//!
//! It is a conservative approximation of YAML's lexical rules (quotes, comments, block
//! scalars, document markers): where it is unsure it scans more text as structure, which can
//! only cause a false refusal of absurd input, never let deep nesting through. Owns no parsing
//! of values and no I/O.

/// Largest spec file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deepest flow nesting (`[`/`{`) accepted. An App needs at most 3 (`env: [{...}]`).
pub const MAX_FLOW_DEPTH: usize = 20;
/// Deepest block nesting accepted. An App needs about 6.
pub const MAX_BLOCK_DEPTH: usize = 64;
/// Most `*alias` uses accepted in one document.
pub const MAX_ALIASES_PER_DOC: usize = 64;

/// Why a file was refused; line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// A block scalar (`|` / `>`) whose content lines are skipped: lines indented more than
/// `parent` belong to it, and once the first one fixes `content`, lines indented at least that.
struct BlockScalar {
    parent: usize,
    content: Option<usize>,
}

struct Screen {
    flow: usize,
    quote: Quote,
    stack: Vec<usize>,
    aliases: usize,
    block_scalar: Option<BlockScalar>,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn blank_or_end(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_none_or(|&b| is_blank(b))
}

fn is_marker(bytes: &[u8], marker: &[u8; 3]) -> bool {
    bytes.starts_with(marker) && blank_or_end(bytes, 3)
}

/// Scan `text`; Ok when nothing hostile was found.
pub fn screen(text: &str) -> Result<(), Rejection> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Rejection {
            line: 1,
            column: 1,
            message: format!(
                "file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB): split it into smaller files",
                text.len()
            ),
        });
    }
    let mut s = Screen {
        flow: 0,
        quote: Quote::None,
        stack: Vec::new(),
        aliases: 0,
        block_scalar: None,
    };
    for (idx, raw_line) in text.split('\n').enumerate() {
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        s.line(idx + 1, line.as_bytes())?;
    }
    Ok(())
}

impl Screen {
    fn line(&mut self, line_no: usize, bytes: &[u8]) -> Result<(), Rejection> {
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let rest_blank = bytes[indent..].iter().all(|&b| is_blank(b));

        if let Some(bs) = &mut self.block_scalar {
            if rest_blank {
                return Ok(());
            }
            match bs.content {
                None if indent > bs.parent => {
                    bs.content = Some(indent);
                    return Ok(());
                }
                Some(c) if indent >= c => return Ok(()),
                _ => self.block_scalar = None,
            }
        }

        // Document markers end everything open, as they do in YAML.
        let mut start = 0;
        if is_marker(bytes, b"---") || is_marker(bytes, b"...") {
            self.flow = 0;
            self.quote = Quote::None;
            self.stack.clear();
            self.aliases = 0;
            if bytes[0] == b'.' {
                return Ok(());
            }
            start = 3;
        } else if self.quote == Quote::None && self.flow == 0 {
            if rest_blank || bytes.get(indent) == Some(&b'#') {
                return Ok(());
            }
            start = self.block_indicators(line_no, bytes, indent)?;
        }
        self.scan(line_no, bytes, start)
    }

    /// Track block nesting for a line that starts in block context: its indentation plus any
    /// compact `- ` / `? ` / `: ` indicators open one level each. Returns where content starts.
    fn block_indicators(
        &mut self,
        line_no: usize,
        bytes: &[u8],
        indent: usize,
    ) -> Result<usize, Rejection> {
        let mut col = indent;
        let mut first = true;
        loop {
            if first {
                while self.stack.last().is_some_and(|&top| top > col) {
                    self.stack.pop();
                }
                first = false;
            }
            if self.stack.last() != Some(&col) {
                self.stack.push(col);
            }
            if self.stack.len() > MAX_BLOCK_DEPTH {
                return Err(Rejection {
                    line: line_no,
                    column: col + 1,
                    message: format!(
                        "block nesting is deeper than {MAX_BLOCK_DEPTH} levels: an App needs only a few, flatten this structure"
                    ),
                });
            }
            let is_indicator =
                matches!(bytes.get(col), Some(b'-' | b'?' | b':')) && blank_or_end(bytes, col + 1);
            if !is_indicator {
                return Ok(col);
            }
            col += 1;
            while bytes.get(col).is_some_and(|&b| is_blank(b)) {
                col += 1;
            }
            if col >= bytes.len() || bytes[col] == b'#' {
                return Ok(col);
            }
        }
    }

    fn scan(&mut self, line_no: usize, bytes: &[u8], start: usize) -> Result<(), Rejection> {
        let mut i = start;
        let mut node_start = true;
        let mut after_blank = true;
        // Column of the innermost block node on this line, the parent of a block scalar.
        let parent = self.stack.last().copied().unwrap_or(0);
        while i < bytes.len() {
            let b = bytes[i];
            match self.quote {
                Quote::Double => {
                    if b == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b == b'"' {
                        self.quote = Quote::None;
                        node_start = false;
                        after_blank = false;
                    }
                    i += 1;
                    continue;
                }
                Quote::Single => {
                    if b == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        self.quote = Quote::None;
                        node_start = false;
                        after_blank = false;
                    }
                    i += 1;
                    continue;
                }
                Quote::None => {}
            }
            if is_blank(b) {
                after_blank = true;
                i += 1;
                continue;
            }
            match b {
                b'#' if after_blank => return Ok(()),
                b'"' if node_start => self.quote = Quote::Double,
                b'\'' if node_start => self.quote = Quote::Single,
                b'[' | b'{' if node_start || self.flow > 0 => {
                    self.flow += 1;
                    if self.flow > MAX_FLOW_DEPTH {
                        return Err(Rejection {
                            line: line_no,
                            column: i + 1,
                            message: format!(
                                "flow collections ([ ] and {{ }}) nest deeper than {MAX_FLOW_DEPTH} levels: an App needs at most 3, flatten this structure"
                            ),
                        });
                    }
                    node_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    node_start = false;
                }
                b',' if self.flow > 0 => node_start = true,
                b':' if self.flow > 0 || blank_or_end(bytes, i + 1) => node_start = true,
                b'*' if node_start => {
                    self.aliases += 1;
                    if self.aliases > MAX_ALIASES_PER_DOC {
                        return Err(Rejection {
                            line: line_no,
                            column: i + 1,
                            message: format!(
                                "more than {MAX_ALIASES_PER_DOC} aliases (*name) in one document: write the values out instead"
                            ),
                        });
                    }
                    node_start = false;
                }
                // Anchors and tags precede a node; skip the token and stay at node start.
                b'&' | b'!' if node_start => {
                    while i + 1 < bytes.len()
                        && !is_blank(bytes[i + 1])
                        && !(self.flow > 0 && matches!(bytes[i + 1], b',' | b']' | b'}'))
                    {
                        i += 1;
                    }
                }
                b'|' | b'>' if node_start && self.flow == 0 => {
                    self.block_scalar = Some(BlockScalar {
                        parent,
                        content: None,
                    });
                    return Ok(());
                }
                b'-' | b'?' if node_start && blank_or_end(bytes, i + 1) => {}
                _ => node_start = false,
            }
            after_blank = false;
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Rejection {
        screen(text).expect_err("should be rejected")
    }

    #[test]
    fn accepts_ordinary_specs() {
        let ok = [
            "a: 1\nb: [1, 2, {c: 3}]\n",
            "env:\n- name: A\n  value: \"[[[[[[[[[[[[[[[[[[[[[[[[\"\n",
            "env:\n- name: A\n  value: '{{{{{{{{{{{{{{{{{{{{{{{{{{{{{''{{{{{{{{{{{{'\n",
            "a: b # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
            "# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\na: 1\n",
            "command: it's [[[[[[[[[[[[[[[[[[[[[[[[[[[ plain\n",
            "script: |\n  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n  {{{{{{{{{{{{{{{{{{{{{{{{{{\nnext: 1\n",
            "- a: >-\n    [[[[[[[[[[[[[[[[[[[[[[[[[[[\n  b: 2\n",
            "a: \"multi\n  line [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n  end\"\n",
            "x: &a 1\ny: *a\n",
        ];
        for text in ok {
            assert_eq!(screen(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn rejects_deep_flow_nesting_with_line() {
        let text = format!("a: 1\nb: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let r = rejected(&text);
        assert_eq!((r.line, r.column), (2, 4 + MAX_FLOW_DEPTH));
        assert!(r.message.contains("flow collections"), "{}", r.message);

        let mixed = format!("a:\n  b: {}\n", "{a: [".repeat(20));
        assert_eq!(rejected(&mixed).line, 2);

        let multiline = format!("a: [\n{}\n", "[\n".repeat(30));
        assert_eq!(rejected(&multiline).line, 2 + MAX_FLOW_DEPTH - 1);
    }

    #[test]
    fn block_scalars_do_not_hide_later_lines() {
        let text = format!("- a: |\n    text\n  b: {}\n", "[".repeat(30));
        assert_eq!(rejected(&text).line, 3);
    }

    #[test]
    fn rejects_deep_block_nesting_with_line() {
        let dashes = format!("a:\n{}x\n", "- ".repeat(10_000));
        let r = rejected(&dashes);
        assert_eq!(r.line, 2);
        assert!(r.message.contains("block nesting"), "{}", r.message);

        let mut maps = String::new();
        for depth in 0..1000 {
            maps.push_str(&" ".repeat(depth));
            maps.push_str("a:\n");
        }
        assert_eq!(rejected(&maps).line, MAX_BLOCK_DEPTH + 1);

        let keys = format!("{}x\n", "? ".repeat(200));
        assert_eq!(rejected(&keys).line, 1);
    }

    #[test]
    fn document_markers_reset_state() {
        let docs = "a: [\n---\nb: 1\n".to_string() + &"---\nc: [[[1]]]\n".repeat(50);
        assert_eq!(screen(&docs), Ok(()));
    }

    #[test]
    fn rejects_too_many_aliases() {
        let mut text = String::from("a: &a x\nlist:\n");
        for _ in 0..=MAX_ALIASES_PER_DOC {
            text.push_str("- *a\n");
        }
        let r = rejected(&text);
        assert_eq!((r.line, r.column), (3 + MAX_ALIASES_PER_DOC, 3));
        // Counted per document.
        let per_doc = "---\nx: [*a, *a, *a, *a, *a, *a, *a, *a]\n".repeat(20);
        assert_eq!(screen(&per_doc), Ok(()));
    }

    #[test]
    fn rejects_big_files() {
        let big = "a: 1\n".repeat(MAX_FILE_BYTES / 5 + 1);
        let r = rejected(&big);
        assert_eq!((r.line, r.column), (1, 1));
        assert!(r.message.contains("split it"), "{}", r.message);
    }
}
