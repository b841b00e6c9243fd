//! Splits a YAML stream into its documents by line, so each document is parsed on its own
//! and a broken document cannot take its neighbours down with it. YAML forbids `---` and
//! `...` at the start of a line inside any content (the spec's c-forbidden rule), so a line
//! scan finds the boundaries the parser would. Lines end at `\n` here; should a file use
//! libyaml's other line breaks (`\r`, NEL, LS, PS) a chunk may hold several documents, which
//! serde_yaml then refuses as one unreadable chunk (never silently). Owns nothing but the
//! splitting.

/// One document: its text (starting at the `---` line, if any) and the number of lines of the
/// file that precede it, to turn positions inside the document into file positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub text: &'a str,
    pub line_offset: usize,
}

impl Chunk<'_> {
    /// 1-based file line of the document's first content line (skipping blank lines,
    /// comments, directives and a bare `---`), or of its first line when it has none.
    pub fn first_content_line(&self) -> usize {
        for (i, line) in self.text.lines().enumerate() {
            if !is_meta_line(line, i == 0) {
                return self.line_offset + i + 1;
            }
        }
        self.line_offset + 1
    }

    /// True when the document holds nothing but blank lines, comments and markers.
    pub fn is_empty(&self) -> bool {
        self.text
            .lines()
            .enumerate()
            .all(|(i, line)| is_meta_line(line, i == 0))
    }
}

fn starts_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// A line that carries no content: blank, comment, directive, or a `---` / `...` marker with
/// at most a comment after it.
fn is_meta_line(line: &str, first: bool) -> bool {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || (first && line.starts_with('%')) {
        return true;
    }
    for marker in ["---", "..."] {
        if starts_marker(line, marker) {
            let rest = line[3..].trim();
            return rest.is_empty() || rest.starts_with('#');
        }
    }
    false
}

/// Split `text` into documents. A `---` line starts a new document (and belongs to it); a
/// `...` line ends the current one. Empty documents are kept; callers skip them.
pub fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0usize;
    let mut pos = 0usize;
    let mut line_no = 0usize;
    for line in text.split_inclusive('\n') {
        if starts_marker(line, "---") && pos > start {
            chunks.push(Chunk {
                text: &text[start..pos],
                line_offset: start_line,
            });
            start = pos;
            start_line = line_no;
        }
        pos += line.len();
        line_no += 1;
        if starts_marker(line, "...") {
            chunks.push(Chunk {
                text: &text[start..pos],
                line_offset: start_line,
            });
            start = pos;
            start_line = line_no;
        }
    }
    if pos > start {
        chunks.push(Chunk {
            text: &text[start..pos],
            line_offset: start_line,
        });
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_and_keeps_line_offsets() {
        let text = "# leading\na: 1\n---\nb: 2\n--- # c\n\n...\n---\nc: |\n  x\n";
        let chunks = split_documents(text);
        let got: Vec<(&str, usize, bool)> = chunks
            .iter()
            .map(|c| (c.text, c.line_offset, c.is_empty()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("# leading\na: 1\n", 0, false),
                ("---\nb: 2\n", 2, false),
                ("--- # c\n\n...\n", 4, true),
                ("---\nc: |\n  x\n", 7, false),
            ]
        );
        assert_eq!(chunks[0].first_content_line(), 2);
        assert_eq!(chunks[1].first_content_line(), 4);
        assert_eq!(chunks[3].first_content_line(), 9);
    }

    #[test]
    fn markers_need_column_zero_and_a_break() {
        let text = "a: |\n  ---\n----\nb: --- x\n";
        assert_eq!(split_documents(text).len(), 1);
        assert!(split_documents("").is_empty());
        assert_eq!(split_documents("---").len(), 1);
        assert_eq!(split_documents("a: 1\r\n---\r\nb: 2\r\n").len(), 2);
    }
}
