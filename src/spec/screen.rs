//! Hostile-input screen: a single linear byte scan that runs before serde_yaml sees a file.
//! It refuses files over `MAX_FILE_BYTES`, flow nesting (`[`/`{`) deeper than
//! `MAX_FLOW_DEPTH`, block nesting (indentation and `- `/`? ` indicators) deeper than
//! `MAX_BLOCK_DEPTH`, documents with more than `MAX_ALIASES_PER_DOC` alias uses, and (as a
//! backstop) documents with more than `MAX_FLOW_OPENS_PER_DOC` `[`/`{` characters anywhere,
//! each with a line and column. libyaml's time grows with flow depth times the number of
//! tokens (quadratically for pure nesting), so this screen is what keeps a hostile file to
//! milliseconds.
//!
//! The structural scan follows libyaml's lexical rules where they decide what is a flow
//! bracket: quotes, plain scalars (also multi-line), comments, block scalars, document
//! markers, every line break libyaml knows and byte order marks. The raw bracket count needs
//! no such rules, so even input that fooled the structural scan stays bounded. Owns no
//! parsing of values and no I/O.

/// Largest spec file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deepest flow nesting (`[`/`{`) accepted. An App needs at most about 5, even written
/// entirely in flow style.
pub const MAX_FLOW_DEPTH: usize = 20;
/// Most `[` and `{` characters in one document, wherever they are (also in strings and
/// comments). A backstop that bounds the parser's flow depth even if the lexical scan were
/// ever out of step with libyaml: at this depth a 1 MiB document still parses in well under
/// a second.
pub const MAX_FLOW_OPENS_PER_DOC: usize = 128;
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

/// Where the scan is relative to YAML tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// Where a node may start: `[`, `{`, quotes, `*`, `&`, `!`, `|`, `>` are indicators here.
    Start,
    /// Inside a plain (unquoted) scalar, where quotes are ordinary characters and, in block
    /// context, so are brackets.
    Plain,
    /// Just after a quoted scalar, an alias or a closing bracket.
    After,
}

/// A block scalar (`|` / `>`) whose content lines are skipped: lines indented more than
/// `parent` belong to it, and once the first one fixes `content`, lines indented at least that.
struct BlockScalar {
    parent: isize,
    content: Option<usize>,
}

struct Screen {
    flow: usize,
    quote: Quote,
    tok: Tok,
    /// For a plain scalar in block context: continuation lines are indented more than this
    /// (the column of the enclosing block collection, as libyaml's `parser->indent`).
    plain_parent: isize,
    stack: Vec<usize>,
    aliases: usize,
    opens: usize,
    block_scalar: Option<BlockScalar>,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn blank_or_end(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_none_or(|&b| is_blank(b))
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

fn is_marker(bytes: &[u8], marker: &[u8; 3]) -> bool {
    bytes.starts_with(marker) && blank_or_end(bytes, 3)
}

/// Split into lines the way libyaml does: `\n`, `\r\n`, `\r`, NEL, LS and PS all end a line.
fn yaml_lines(text: &str) -> impl Iterator<Item = &[u8]> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos > bytes.len() {
            return None;
        }
        let start = pos;
        let mut i = pos;
        while i < bytes.len() {
            let (brk, len) = match bytes[i] {
                b'\n' => (true, 1),
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => (true, 2),
                b'\r' => (true, 1),
                0xC2 if bytes.get(i + 1) == Some(&0x85) => (true, 2),
                0xE2 if bytes.get(i + 1) == Some(&0x80)
                    && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) =>
                {
                    (true, 3)
                }
                _ => (false, 1),
            };
            if brk {
                pos = i + len;
                return Some(&bytes[start..i]);
            }
            i += len;
        }
        pos = bytes.len() + 1;
        Some(&bytes[start..])
    })
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
        tok: Tok::Start,
        plain_parent: -1,
        stack: Vec::new(),
        aliases: 0,
        opens: 0,
        block_scalar: None,
    };
    for (idx, line) in yaml_lines(text).enumerate() {
        s.line(idx + 1, line)?;
    }
    Ok(())
}

impl Screen {
    fn reset(&mut self) {
        self.flow = 0;
        self.quote = Quote::None;
        self.tok = Tok::Start;
        self.plain_parent = -1;
        self.stack.clear();
        self.aliases = 0;
        self.opens = 0;
        self.block_scalar = None;
    }

    /// Count every `[` and `{` of the document, wherever it is.
    fn count_opens(&mut self, line_no: usize, bytes: &[u8], from: usize) -> Result<(), Rejection> {
        for (i, &b) in bytes.iter().enumerate().skip(from) {
            if b == b'[' || b == b'{' {
                self.opens += 1;
                if self.opens > MAX_FLOW_OPENS_PER_DOC {
                    return Err(Rejection {
                        line: line_no,
                        column: i + 1,
                        message: format!(
                            "more than {MAX_FLOW_OPENS_PER_DOC} `[` and `{{` characters in one document: write lists and mappings in block style"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line_no: usize, bytes: &[u8]) -> Result<(), Rejection> {
        // libyaml skips a byte order mark at the start of any line.
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        let marker = is_marker(bytes, b"---") || is_marker(bytes, b"...");
        // The structural scan goes first so that its (more precise) message wins.
        self.structure(line_no, bytes, marker)?;
        self.count_opens(line_no, bytes, if marker { 3 } else { 0 })
    }

    fn structure(&mut self, line_no: usize, bytes: &[u8], marker: bool) -> Result<(), Rejection> {
        // Document markers end everything open, as they do in YAML.
        let mut start = 0;
        if marker {
            self.reset();
            if bytes[0] == b'.' {
                return Ok(());
            }
            start = 3;
        }

        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let rest_blank = bytes[indent..].iter().all(|&b| is_blank(b));

        if let Some(bs) = &mut self.block_scalar {
            if rest_blank {
                return Ok(());
            }
            match bs.content {
                None if indent as isize > bs.parent => {
                    bs.content = Some(indent);
                    return Ok(());
                }
                Some(c) if indent >= c => return Ok(()),
                _ => self.block_scalar = None,
            }
        }

        if start > 0 || self.quote != Quote::None || self.flow > 0 {
            // After `---`, inside a quoted scalar or inside a flow collection: no block
            // structure to track, and the token state carries over from the previous line.
            return self.scan(line_no, bytes, start, start);
        }
        if rest_blank {
            return Ok(());
        }
        if bytes.get(indent) == Some(&b'#') {
            // A comment line ends a plain scalar.
            self.tok = Tok::Start;
            return Ok(());
        }
        if self.tok == Tok::Plain && indent as isize > self.plain_parent {
            // Continuation of a multi-line plain scalar, as libyaml reads it.
            return self.scan(line_no, bytes, indent, usize::MAX);
        }
        self.tok = Tok::Start;
        let content = self.block_indicators(line_no, bytes, indent)?;
        self.scan(line_no, bytes, content, content)
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

    /// The column of the block collection that owns a node starting at byte `i` of a line
    /// whose content starts at `content`: the entry's own collection (`- x`, top-level `x`)
    /// when the node is the first thing on the line, else the mapping of the key before it.
    fn parent_of(&self, i: usize, content: usize) -> isize {
        let n = self.stack.len();
        let col = if i == content {
            n.checked_sub(2)
        } else {
            n.checked_sub(1)
        };
        col.and_then(|c| self.stack.get(c))
            .map_or(-1, |&c| c as isize)
    }

    fn open_flow(&mut self, line_no: usize, i: usize) -> Result<(), Rejection> {
        self.flow += 1;
        self.tok = Tok::Start;
        if self.flow > MAX_FLOW_DEPTH {
            return Err(Rejection {
                line: line_no,
                column: i + 1,
                message: format!(
                    "flow collections ([ ] and {{ }}) nest deeper than {MAX_FLOW_DEPTH} levels: an App needs at most a few, flatten this structure"
                ),
            });
        }
        Ok(())
    }

    /// Scan one line from byte `start`; `content` is where the line's first node starts
    /// (`usize::MAX` when the line continues an earlier node).
    fn scan(
        &mut self,
        line_no: usize,
        bytes: &[u8],
        start: usize,
        content: usize,
    ) -> Result<(), Rejection> {
        let mut i = start;
        let mut after_blank = true;
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
                        self.tok = Tok::After;
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
                        self.tok = Tok::After;
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
            if b == b'#' && after_blank {
                // A comment ends the line, and any plain scalar with it.
                self.tok = Tok::Start;
                return Ok(());
            }
            let plain = self.tok == Tok::Plain;
            let start_tok = self.tok == Tok::Start;
            let in_flow = self.flow > 0;
            match b {
                b'[' | b'{' if in_flow || !plain => self.open_flow(line_no, i)?,
                b']' | b'}' if in_flow || !plain => {
                    self.flow = self.flow.saturating_sub(1);
                    self.tok = Tok::After;
                }
                b',' if in_flow => self.tok = Tok::Start,
                b':' if !plain
                    || blank_or_end(bytes, i + 1)
                    || (in_flow && bytes.get(i + 1).is_some_and(|&n| is_flow_indicator(n))) =>
                {
                    self.tok = Tok::Start
                }
                b'"' if !plain => self.quote = Quote::Double,
                b'\'' if !plain => self.quote = Quote::Single,
                b'*' if start_tok => {
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
                    while i + 1 < bytes.len()
                        && !is_blank(bytes[i + 1])
                        && !is_flow_indicator(bytes[i + 1])
                    {
                        i += 1;
                    }
                    self.tok = Tok::After;
                }
                // Anchors and tags precede a node; skip the token and stay at node start.
                b'&' | b'!' if start_tok => {
                    while i + 1 < bytes.len()
                        && !is_blank(bytes[i + 1])
                        && !(in_flow && is_flow_indicator(bytes[i + 1]))
                    {
                        i += 1;
                    }
                }
                b'|' | b'>' if start_tok && !in_flow => {
                    self.block_scalar = Some(BlockScalar {
                        parent: self.parent_of(i, content),
                        content: None,
                    });
                    self.tok = Tok::Start;
                    return Ok(());
                }
                b'-' | b'?' if start_tok && blank_or_end(bytes, i + 1) => {}
                _ => {
                    if !plain {
                        self.tok = Tok::Plain;
                        if !in_flow {
                            self.plain_parent = self.parent_of(i, content);
                        }
                    }
                }
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
    fn tricks_that_could_hide_nesting_are_caught() {
        let deep = "[".repeat(100);
        let cases = [
            // Line breaks other than \n end a comment for libyaml.
            format!("# x\r{deep}"),
            format!("# x\u{85}{deep}"),
            format!("# x\u{2028}{deep}"),
            format!("# x\u{2029}{deep}"),
            // A byte order mark at the start of a line is skipped by libyaml.
            format!("\u{feff}{deep}"),
            format!("a: 1\n\u{feff}b: {deep}"),
            // A quote inside a multi-line plain scalar is not a quote.
            format!("x: [a\n'b, {deep}"),
            format!("a: b\n  'c\nd: {deep}"),
            // Block scalar content of a sequence entry may sit at the entry's column + 2.
            format!("- |\n  'x\n- {deep}"),
            // Brackets right after a quoted scalar or a flow collection.
            format!("a: \"x\"{deep}"),
            format!("a: [x] {deep}"),
            // Everything in quotes: only the raw count can see it, and it does.
            format!("a: '{deep}{deep}'"),
            format!("a: \"{deep}{deep}\""),
        ];
        for text in &cases {
            assert!(screen(text).is_err(), "{text:?}");
        }
        let r = rejected(&format!("a: '{}'", "[".repeat(200)));
        assert_eq!((r.line, r.column), (1, 5 + MAX_FLOW_OPENS_PER_DOC));
        assert!(r.message.contains("block style"), "{}", r.message);
    }

    #[test]
    fn plain_scalars_keep_quotes_and_brackets_literal() {
        let ok = [
            "a: it's\nb: [1]\n",
            "a: b\n  it's a long\n  'plain' text\nc: [x]\n",
            "- |\n  'x\n  y\n- [a]\n",
            "x: [a\n  b, 'c']\n",
            "a: \"x\" # ' comment\nb: [1]\n",
        ];
        for text in ok {
            assert_eq!(screen(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn rejects_big_files() {
        let big = "a: 1\n".repeat(MAX_FILE_BYTES / 5 + 1);
        let r = rejected(&big);
        assert_eq!((r.line, r.column), (1, 1));
        assert!(r.message.contains("split it"), "{}", r.message);
    }
}
