//! spec: hostile input (DESIGN.md "Hostile input"). Every case must be refused quickly, with
//! the file, line and field of the problem, and must never overflow the stack. Time limits are
//! generous because tests run unoptimised; `cargo bench --bench spec` has the real figures.

use berth::spec::{
    load_files, parse_file, ParsedFile, SpecIssue, MAX_ALIASES_PER_DOC, MAX_BLOCK_DEPTH,
    MAX_FILE_BYTES, MAX_FLOW_DEPTH, MAX_FLOW_OPENS_PER_DOC,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Per-parse limit for unoptimised test builds on a busy machine: far above the real cost
/// (milliseconds, see the bench) yet far below what quadratic behaviour would take (minutes).
const BUDGET: Duration = Duration::from_secs(15);

const HEAD: &str = "apiVersion: v1\nkind: App\nmetadata:\n  name: evil\nspec:\n  image: x\n  ports: [{containerPort: 80}]\n";

fn timed_parse(name: &str, text: &str) -> ParsedFile {
    let start = Instant::now();
    let parsed = parse_file(Path::new(name), text);
    let took = start.elapsed();
    assert!(took < BUDGET, "{name}: took {took:?}");
    parsed
}

/// The file is refused as a whole: unreadable, no apps, one issue at `line` naming the file.
fn refused(parsed: &ParsedFile, file: &str, line: usize, says: &str) -> SpecIssue {
    assert!(!parsed.readable, "{file} should be unreadable");
    assert!(parsed.apps.is_empty());
    assert_eq!(parsed.issues.len(), 1, "{:#?}", parsed.issues);
    let i = parsed.issues[0].clone();
    assert_eq!(i.file, Path::new(file));
    assert_eq!(i.line, line, "{i}");
    assert_eq!(i.field, "", "{i}");
    assert_eq!(i.app, None);
    assert!(i.message.contains(says), "{i}");
    i
}

fn billion_laughs(levels: usize, width: usize) -> String {
    let mut s = String::from(HEAD);
    s.push_str("  command: &l0 [\"lol\"]\n");
    for level in 1..levels {
        let refs = vec![format!("*l{}", level - 1); width].join(", ");
        s.push_str(&format!("  x{level}: &l{level} [{refs}]\n"));
    }
    s
}

#[test]
fn alias_bomb_is_refused_by_the_alias_cap() {
    let text = billion_laughs(10, 10);
    let parsed = timed_parse("bomb.yaml", &text);
    // 10 aliases per line from line 9 on: the cap is crossed on line 8 + ceil((cap + 1) / 10).
    let line = 8 + (MAX_ALIASES_PER_DOC + 1).div_ceil(10);
    let i = refused(&parsed, "bomb.yaml", line, "aliases");
    assert!(i.column > 1);
}

#[test]
fn alias_bomb_under_the_cap_is_never_expanded() {
    // 6 levels of 8 (48 aliases, ~300k nodes if expanded): the typed schema refuses the first
    // alias-carrying field before anything is expanded.
    let text = billion_laughs(6, 8);
    assert!(text.matches('*').count() <= MAX_ALIASES_PER_DOC);
    let parsed = timed_parse("bomb.yaml", &text);
    assert_eq!(parsed.issues.len(), 1, "{:#?}", parsed.issues);
    let i = &parsed.issues[0];
    assert_eq!(
        (i.line, i.field.as_str(), i.app.as_deref()),
        (9, "spec.x1", Some("evil")),
        "{i}"
    );
    assert!(i.message.contains("unknown field `x1`"), "{i}");
    // Aliases inside a list of strings are expanded only as far as the type allows.
    let text = format!("{HEAD}  command: [&a x, {}]\n", vec!["*a"; 60].join(", "));
    let parsed = timed_parse("ok.yaml", &text);
    assert!(parsed.issues.is_empty(), "{:#?}", parsed.issues);
    assert_eq!(parsed.apps[0].0.command.as_ref().map(Vec::len), Some(61));
}

#[test]
fn deep_flow_nesting_is_refused() {
    for (open, close) in [("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")] {
        let text = format!(
            "{HEAD}  command: {}{}\n",
            open.repeat(10_000),
            close.repeat(10_000)
        );
        let parsed = timed_parse("flow.yaml", &text);
        let i = refused(&parsed, "flow.yaml", 8, "nest deeper than");
        assert!(i.column > 12, "{i}");
    }
    // Spread over lines, the line is where the limit is crossed.
    let text = format!("{HEAD}  command:\n{}", "    [\n".repeat(10_000));
    let parsed = timed_parse("flow.yaml", &text);
    refused(
        &parsed,
        "flow.yaml",
        8 + MAX_FLOW_DEPTH + 1,
        "nest deeper than",
    );
}

#[test]
fn deep_block_nesting_is_refused() {
    let text = format!("{HEAD}  command:\n  {}x\n", "- ".repeat(10_000));
    let parsed = timed_parse("block.yaml", &text);
    refused(&parsed, "block.yaml", 9, "block nesting");

    let text = format!("{HEAD}  command:\n  {}x\n", "? ".repeat(10_000));
    let parsed = timed_parse("block.yaml", &text);
    refused(&parsed, "block.yaml", 9, "block nesting");

    // Nested mappings, one space per level (as deep as fits in the size limit).
    let mut text = String::from(HEAD);
    for depth in 0..1400 {
        text.push_str(&" ".repeat(depth + 2));
        text.push_str("a:\n");
    }
    assert!(text.len() < MAX_FILE_BYTES);
    let parsed = timed_parse("block.yaml", &text);
    // `spec` and the first `a` are levels 1 and 2 ...
    refused(
        &parsed,
        "block.yaml",
        8 + MAX_BLOCK_DEPTH - 1,
        "block nesting",
    );
}

#[test]
fn brackets_the_scan_cannot_place_are_still_bounded() {
    // Nesting hidden in a quoted string is harmless, but the raw count of `[` and `{` per
    // document does not depend on reading quotes right, so it bounds the parser either way.
    let text = format!("{HEAD}  command: ['{}']\n", "[".repeat(10_000));
    let parsed = timed_parse("quoted.yaml", &text);
    let i = refused(
        &parsed,
        "quoted.yaml",
        8,
        "more than 128 `[` and `{` characters",
    );
    // Two brackets on line 7, `[` at column 12, the quoted ones from column 14.
    assert_eq!(i.column, 14 + MAX_FLOW_OPENS_PER_DOC - 3);
}

#[test]
fn nesting_within_the_limits_still_parses_safely() {
    let text = format!(
        "{HEAD}  command: {}{}\n",
        "[".repeat(MAX_FLOW_DEPTH),
        "]".repeat(MAX_FLOW_DEPTH)
    );
    let parsed = timed_parse("ok.yaml", &text);
    assert!(parsed.readable);
    assert_eq!(parsed.issues.len(), 1);
    assert_eq!(
        (parsed.issues[0].line, parsed.issues[0].field.as_str()),
        (8, "spec.command[0]")
    );
}

#[test]
fn big_files_are_refused_before_parsing() {
    let text = format!(
        "{HEAD}{}",
        "# padding padding padding padding\n".repeat(5 * 1024 * 1024 / 34)
    );
    assert!(text.len() > 5_000_000);
    let parsed = timed_parse("big.yaml", &text);
    let i = refused(&parsed, "big.yaml", 1, "over the limit of 1048576 bytes");
    assert_eq!(i.column, 1);
    assert!(i.message.contains("split it"), "{i}");

    let loaded = load_files(&[
        (PathBuf::from("big.yaml"), text),
        (PathBuf::from("ok.yaml"), HEAD.replace("evil", "fine")),
    ]);
    assert_eq!(loaded.unreadable_files, vec![PathBuf::from("big.yaml")]);
    assert_eq!(loaded.apps.keys().collect::<Vec<_>>(), vec!["fine"]);
}

#[test]
fn a_large_file_within_the_limit_parses_in_time() {
    // ~1 MiB of valid documents, each with flow nesting at the allowed depth in a string.
    let doc = "---\napiVersion: v1\nkind: App\nmetadata:\n  name: app-NNNN\nspec:\n  image: x\n  ports: [{containerPort: 80}]\n  command: [\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"]\n";
    let mut text = String::new();
    let mut n = 0;
    while text.len() + doc.len() < MAX_FILE_BYTES {
        text.push_str(&doc.replace("NNNN", &n.to_string()));
        n += 1;
    }
    let start = Instant::now();
    let parsed = parse_file(Path::new("many.yaml"), &text);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(parsed.issues.is_empty(), "{:?}", parsed.issues.first());
    assert_eq!(parsed.apps.len(), n);
}

#[test]
fn path_traversal_and_odd_names_are_refused_with_line_and_field() {
    for name in [
        "../etc",
        "..",
        "a/../../b",
        "/abs",
        "a\\\\b",
        "web;rm",
        "\"web x\"",
        "WEB",
        "Ω",
    ] {
        let text = HEAD.replace("evil", name);
        let parsed = timed_parse("names.yaml", &text);
        assert_eq!(parsed.issues.len(), 1, "{name}: {:#?}", parsed.issues);
        let i = &parsed.issues[0];
        assert_eq!(
            (i.line, i.column, i.field.as_str()),
            (4, 3, "metadata.name"),
            "{name}: {i}"
        );
        assert!(i.message.contains("not a valid app name"), "{i}");
        assert!(!parsed.readable);
    }
}

#[test]
fn wrong_types_and_unknown_fields_name_line_and_field() {
    let cases = [
        (
            "  replicas: [1]\n",
            8,
            "spec.replicas",
            "expected a whole number, found a list",
        ),
        (
            "  health: {tcpSocket: {port: \"80\"}}\n",
            8,
            "spec.health.tcpSocket.port",
            "expected a whole number, found the string \"80\"",
        ),
        (
            "  command: \"/bin/sh\"\n",
            8,
            "spec.command",
            "expected a list",
        ),
        (
            "  env: {A: b}\n",
            8,
            "spec.env",
            "expected a list, found a mapping",
        ),
        (
            "  resources: {memory: true}\n",
            8,
            "spec.resources.memory",
            "expected a number of bytes",
        ),
        (
            // compose's short syntax is no volume entry (and `/` is never mountable)
            "  volumes: [/:/host]\n",
            8,
            "spec.volumes[0]",
            "expected a mapping of fields",
        ),
        (
            "  privileged: true\n",
            8,
            "spec.privileged",
            "unknown field `privileged`",
        ),
    ];
    for (extra, line, field, says) in cases {
        let parsed = timed_parse("types.yaml", &format!("{HEAD}{extra}"));
        assert_eq!(parsed.issues.len(), 1, "{extra}: {:#?}", parsed.issues);
        let i = &parsed.issues[0];
        assert_eq!(
            (i.file.as_path(), i.line, i.field.as_str()),
            (Path::new("types.yaml"), line, field),
            "{i}"
        );
        assert!(i.message.contains(says), "{i}");
        assert_eq!(i.app.as_deref(), Some("evil"));
    }
}

#[test]
fn duplicate_names_across_files_name_both_places() {
    let loaded = load_files(&[
        (PathBuf::from("one.yaml"), HEAD.to_string()),
        (PathBuf::from("two.yaml"), format!("# moved\n{HEAD}")),
    ]);
    assert!(loaded.apps.is_empty());
    let got: Vec<(String, usize, String)> = loaded
        .issues
        .iter()
        .map(|i| (i.file.display().to_string(), i.line, i.field.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("one.yaml".into(), 4, "metadata.name".into()),
            ("two.yaml".into(), 5, "metadata.name".into())
        ]
    );
    assert!(loaded.issues[0].message.contains("two.yaml:5"));
    assert!(loaded.issues[1].message.contains("one.yaml:4"));
}

/// Lines of `item` appended to HEAD until the file is just under the size limit.
fn fill(extra_head: &str, item: impl Fn(usize) -> String) -> (String, usize) {
    let mut text = format!("{HEAD}{extra_head}");
    let mut n = 0;
    loop {
        let line = item(n);
        if text.len() + line.len() >= MAX_FILE_BYTES {
            return (text, n);
        }
        text.push_str(&line);
        n += 1;
    }
}

#[test]
fn huge_lists_and_repeated_names_stay_fast() {
    // Tens of thousands of env entries and ports: duplicate checks must not be quadratic.
    let (text, n) = fill("  env:\n", |i| format!("  - name: V{i}\n    value: x\n"));
    assert!(n > 30_000);
    let parsed = timed_parse("env.yaml", &text);
    assert!(parsed.issues.is_empty(), "{:?}", parsed.issues.first());
    assert_eq!(parsed.apps[0].0.env.len(), n);

    let mut text = HEAD.replace("  ports: [{containerPort: 80}]\n", "  ports:\n");
    while text.len() < MAX_FILE_BYTES - 100 {
        text.push_str("  - containerPort: 81\n");
    }
    let parsed = timed_parse("ports.yaml", &text);
    // Every duplicate is a problem, but only the first few are listed.
    assert_eq!(
        parsed.issues.len(),
        berth::spec::MAX_ISSUES_PER_DOCUMENT + 1
    );
    assert_eq!(
        (parsed.issues[0].line, parsed.issues[0].field.as_str()),
        (9, "spec.ports[1].containerPort")
    );
    assert!(parsed
        .issues
        .last()
        .is_some_and(|i| i.message.contains("more problems")));

    // Thousands of documents defining the same name: one issue each, each short.
    let doc = format!("---\n{HEAD}");
    let text = doc.repeat(MAX_FILE_BYTES / doc.len());
    let start = Instant::now();
    let loaded = load_files(&[(PathBuf::from("same.yaml"), text)]);
    assert!(start.elapsed() < BUDGET, "took {:?}", start.elapsed());
    assert!(loaded.apps.is_empty());
    assert_eq!(loaded.issues.len(), MAX_FILE_BYTES / doc.len());
    assert!(loaded
        .issues
        .iter()
        .all(|i| i.message.len() < 200 && i.field == "metadata.name"));
    assert!(
        loaded.issues[0]
            .message
            .contains("same.yaml:13, same.yaml:21, same.yaml:29 and "),
        "{}",
        loaded.issues[0]
    );
}

/// Random YAML-ish text (a small alphabet of indicators, breaks and letters, plus pieces of a
/// valid App) never panics and never takes long.
#[test]
fn random_input_never_panics() {
    const PIECES: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        "'",
        "\"",
        "#",
        ":",
        ": ",
        "- ",
        "? ",
        ",",
        "|",
        ">",
        "&a ",
        "*a",
        "!t ",
        "\n",
        "\r",
        "\r\n",
        "\u{85}",
        "\u{2028}",
        "\u{feff}",
        " ",
        "  ",
        "\t",
        "a",
        "1",
        "-1",
        "0.5",
        "---\n",
        "...\n",
        "%YAML 1.2\n",
        "\\",
        "é",
        "apiVersion: v1\n",
        "kind: App\n",
        "metadata:\n",
        "  name: web\n",
        "spec:\n",
        "  image: x\n",
        "  ports:\n",
        "  - containerPort: 80\n",
        "  env:\n",
        "  - name: A\n",
        "    value: b\n",
        "  health:\n",
        "    httpGet: {path: /, port: 80}\n",
        "  scaling: {maxReplicas: 2}\n",
        "  route: {path: /x}\n",
        "  resources: {cpu: 500m, memory: 1Gi}\n",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = Instant::now();
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let text: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        let parsed = parse_file(Path::new("fuzz.yaml"), &text);
        for i in &parsed.issues {
            assert!(i.line >= 1 && i.column >= 1, "{i} for {text:?}");
        }
        if !parsed.readable {
            assert!(
                !parsed.issues.is_empty(),
                "unreadable without an issue: {text:?}"
            );
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn carriage_return_line_breaks_do_not_merge_documents_silently() {
    let text = format!("{HEAD}---\n{HEAD}").replace('\n', "\r");
    let parsed = timed_parse("cr.yaml", &text);
    assert!(!parsed.readable);
    assert!(parsed.apps.is_empty());
    assert_eq!(parsed.issues.len(), 1, "{:#?}", parsed.issues);
    assert!(
        parsed.issues[0].message.contains("more than one document"),
        "{}",
        parsed.issues[0]
    );
    // \r\n files are ordinary.
    let text = format!("{HEAD}---\n{}", HEAD.replace("evil", "other")).replace('\n', "\r\n");
    let parsed = timed_parse("crlf.yaml", &text);
    assert!(
        parsed.readable && parsed.issues.is_empty(),
        "{:#?}",
        parsed.issues
    );
    assert_eq!(parsed.apps.len(), 2);
    assert_eq!(parsed.apps[1].1.line, 9);
}
