//! Parsing files of App documents: screen -> split into documents -> deserialize each with
//! serde_yaml (the only serde_yaml user in berth) -> validate -> issues with file, line,
//! column and field path. `load_files` then checks names across files. Pure: callers hand in
//! file contents; no file system, no clock.

use super::diagnose::{self, SerdeProblem};
use super::locate::{self, fpath, FieldPath, Locator, Seg};
use super::model::{AppSpec, LoadedSpecs, SourceRef, SpecIssue, UnreadableEntry};
use super::raw;
use super::screen;
use super::split::{self, Chunk};
use super::validate::{self, Problem};
use super::workload::SpecPolicy;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use super::screen::MAX_FILE_BYTES;

/// Most issues reported for one document; the rest are summarised in one more issue.
pub const MAX_ISSUES_PER_DOCUMENT: usize = 50;

/// The result of parsing one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedFile {
    /// Valid apps, in document order.
    pub apps: Vec<(AppSpec, SourceRef)>,
    pub issues: Vec<SpecIssue>,
    /// False when the file could not be parsed far enough to know every app it defines
    /// (too big, hostile, or a broken document whose name could not be read). Callers must
    /// then not remove anything that might have come from this file.
    pub readable: bool,
    /// Apps whose document named them but failed to parse or validate (each also has
    /// issues with `app: Some(name)`): keep what runs for them.
    pub invalid_apps: Vec<(String, SourceRef)>,
}

/// One document's outcome, with the positions `load_files` needs for cross-file issues.
#[derive(Debug, Clone)]
struct Doc {
    name: Option<String>,
    source: SourceRef,
    /// 1-based (line, column) of `metadata.name` in the file.
    name_pos: (usize, usize),
    /// 1-based (line, column) of `spec.route` (or of the name, for the default route).
    route_pos: (usize, usize),
    /// 1-based (line, column) of `spec.dependsOn` and of `spec.ports` (or of the name).
    deps_pos: (usize, usize),
    ports_pos: (usize, usize),
    app: Option<AppSpec>,
    issues: Vec<SpecIssue>,
}

struct FileResult {
    docs: Vec<Doc>,
    file_issues: Vec<SpecIssue>,
    readable: bool,
}

/// Only the name, for attributing a document that failed: every other field is skipped
/// without following aliases.
#[derive(Deserialize)]
struct NameOnly {
    metadata: Option<MetaOnly>,
}

#[derive(Deserialize)]
struct MetaOnly {
    name: Option<String>,
}

fn issue(
    file: &Path,
    (line, column): (usize, usize),
    field: &FieldPath,
    message: String,
    app: Option<&str>,
) -> SpecIssue {
    SpecIssue {
        file: file.to_path_buf(),
        line,
        column,
        field: field.to_string(),
        message,
        app: app.map(str::to_string),
    }
}

/// An issue the shell found in a loaded app (a TLS file that cannot be used, ...), placed
/// at `field` (keys from the document root) of the app's document in `text`, the file's
/// content; the document's line when the field cannot be found.
pub fn issue_at(
    text: &str,
    source: &SourceRef,
    field: &[&str],
    message: String,
    app: &str,
) -> SpecIssue {
    let path = FieldPath(field.iter().map(|&k| Seg::from(k)).collect());
    let skip = source.line.saturating_sub(1);
    let doc: String = text
        .split_inclusive('\n')
        .skip(skip)
        .collect::<Vec<_>>()
        .concat();
    let at = Locator::new(&doc)
        .find(&path)
        .map_or((source.line, 1), |f| (skip + f.line, f.column));
    issue(&source.file, at, &path, message, Some(app))
}

/// File position of `path` in `chunk`, falling back to the document's first content line.
fn position(chunk: &Chunk<'_>, loc: &Locator<'_>, path: &FieldPath) -> (usize, usize) {
    match loc.find(path) {
        Some(f) => (chunk.line_offset + f.line, f.column),
        None => (chunk.first_content_line(), 1),
    }
}

/// The document's app name when it can be known for sure and is a valid name.
fn attributable_name(
    chunk: &Chunk<'_>,
    loc: &Locator<'_>,
    problem: &SerdeProblem,
) -> Option<String> {
    let name = if problem.syntax {
        // Broken YAML: read the name the simple way, if it is written simply.
        let found = loc.find(&fpath!["metadata", "name"])?;
        if found.depth != 2 {
            return None;
        }
        found.value.and_then(locate::inline_scalar)?.to_string()
    } else {
        // Well-formed YAML of the wrong shape: let serde read just the name.
        let de = serde_yaml::Deserializer::from_str(chunk.text);
        NameOnly::deserialize(de).ok()?.metadata?.name?
    };
    validate::dns_label_problem(&name).is_none().then_some(name)
}

fn parse_chunk(file: &Path, chunk: &Chunk<'_>, policy: &SpecPolicy) -> (Doc, bool) {
    let source = SourceRef {
        file: file.to_path_buf(),
        line: chunk.first_content_line(),
    };
    let loc = Locator::new(chunk.text);
    let name_pos = position(chunk, &loc, &fpath!["metadata", "name"]);
    let de = serde_yaml::Deserializer::from_str(chunk.text);
    let parsed: Result<raw::App, _> = serde_path_to_error::deserialize(de);
    let (name, result) = match parsed {
        Ok(app) => {
            let name = app.metadata.name.clone();
            let name = validate::dns_label_problem(&name).is_none().then_some(name);
            (name, validate::validate_with(app, policy))
        }
        Err(err) => {
            let problem = diagnose::from_serde(&err, chunk.line_offset);
            let name = attributable_name(chunk, &loc, &problem);
            let pos = match problem.position {
                Some((line, col)) if !problem.prefer_locator => (chunk.line_offset + line, col),
                _ => position(chunk, &loc, &problem.path),
            };
            let issue = issue(file, pos, &problem.path, problem.message, name.as_deref());
            let doc = Doc {
                name,
                source,
                name_pos,
                route_pos: name_pos,
                deps_pos: name_pos,
                ports_pos: name_pos,
                app: None,
                issues: vec![issue],
            };
            let attributed = doc.name.is_some();
            return (doc, attributed);
        }
    };
    let route_pos = match loc.find(&fpath!["spec", "route"]) {
        Some(f) if f.depth == 2 => (chunk.line_offset + f.line, f.column),
        _ => name_pos,
    };
    let top = |path: FieldPath| match loc.find(&path) {
        Some(f) if f.depth == 2 => (chunk.line_offset + f.line, f.column),
        _ => name_pos,
    };
    let deps_pos = top(fpath!["spec", "dependsOn"]);
    let ports_pos = top(fpath!["spec", "ports"]);
    match result {
        Ok(app) => (
            Doc {
                name,
                source,
                name_pos,
                route_pos,
                deps_pos,
                ports_pos,
                app: Some(app),
                issues: Vec::new(),
            },
            true,
        ),
        Err(problems) => {
            let issues = problem_issues(file, chunk, &loc, &problems, name.as_deref());
            let attributed = name.is_some();
            (
                Doc {
                    name,
                    source,
                    name_pos,
                    route_pos,
                    deps_pos,
                    ports_pos,
                    app: None,
                    issues,
                },
                attributed,
            )
        }
    }
}

fn problem_issues(
    file: &Path,
    chunk: &Chunk<'_>,
    loc: &Locator<'_>,
    problems: &[Problem],
    name: Option<&str>,
) -> Vec<SpecIssue> {
    let mut issues: Vec<SpecIssue> = problems
        .iter()
        .take(MAX_ISSUES_PER_DOCUMENT)
        .map(|(at, msg)| issue(file, position(chunk, loc, at), at, msg.clone(), name))
        .collect();
    if problems.len() > MAX_ISSUES_PER_DOCUMENT {
        issues.push(issue(
            file,
            (chunk.first_content_line(), 1),
            &FieldPath::default(),
            format!(
                "{} more problems in this document are not shown: fix the ones above first",
                problems.len() - MAX_ISSUES_PER_DOCUMENT
            ),
            name,
        ));
    }
    issues
}

fn parse_file_inner(file: &Path, text: &str, policy: &SpecPolicy) -> FileResult {
    if let Err(r) = screen::screen(text) {
        return FileResult {
            docs: Vec::new(),
            file_issues: vec![issue(
                file,
                (r.line, r.column),
                &FieldPath::default(),
                r.message,
                None,
            )],
            readable: false,
        };
    }
    let mut docs = Vec::new();
    let mut readable = true;
    for chunk in split::split_documents(text) {
        if chunk.is_empty() {
            continue;
        }
        let (doc, attributed) = parse_chunk(file, &chunk, policy);
        readable &= attributed;
        docs.push(doc);
    }
    FileResult {
        docs,
        file_issues: Vec::new(),
        readable,
    }
}

/// Parse one file of App documents (`---` separated; empty documents are skipped). `file` is
/// only used to label apps and issues.
pub fn parse_file(file: &Path, text: &str) -> ParsedFile {
    let r = parse_file_inner(file, text, &SpecPolicy::default());
    let mut out = ParsedFile {
        issues: r.file_issues,
        readable: r.readable,
        ..ParsedFile::default()
    };
    for doc in r.docs {
        out.issues.extend(doc.issues);
        match (doc.app, doc.name) {
            (Some(app), _) => out.apps.push((app, doc.source)),
            (None, Some(name)) => out.invalid_apps.push((name, doc.source)),
            (None, None) => {}
        }
    }
    out
}

fn place(file: &Path, line: usize) -> String {
    format!("{}:{line}", file.display())
}

/// Most other places named in one cross-file issue (a hostile source could repeat a name
/// thousands of times).
const MAX_PLACES_LISTED: usize = 3;

/// `a, b, c and 7 more`, from an iterator of places (only the first few are formatted).
fn list_places(total: usize, places: impl Iterator<Item = String>) -> String {
    let shown: Vec<String> = places.take(MAX_PLACES_LISTED).collect();
    let mut text = shown.join(", ");
    if total > shown.len() {
        text.push_str(&format!(" and {} more", total - shown.len()));
    }
    text
}

/// Parse every file, then check across files: an app defined in more than one place gets an
/// issue at each place and is dropped (only that app); two apps claiming the same route
/// (host and path) likewise, since nginx would refuse the whole configuration.
pub fn load_files(files: &[(PathBuf, String)]) -> LoadedSpecs {
    load_source(files, &[])
}

/// `load_files` for a whole source snapshot: each entry the source could not read becomes an
/// issue at its path (line 1, column 1, no field) and an unreadable file, so the apps that
/// came from it are kept exactly like those of a file that cannot be parsed.
pub fn load_source(files: &[(PathBuf, String)], unreadable: &[UnreadableEntry]) -> LoadedSpecs {
    load_source_with(files, unreadable, &SpecPolicy::default())
}

/// `load_source` under the operator's policy (`--allow-host-path`).
pub fn load_source_with(
    files: &[(PathBuf, String)],
    unreadable: &[UnreadableEntry],
    policy: &SpecPolicy,
) -> LoadedSpecs {
    let mut out = LoadedSpecs::default();
    for entry in unreadable {
        out.unreadable_files.push(entry.path.clone());
        out.issues.push(issue(
            &entry.path,
            (1, 1),
            &FieldPath::default(),
            format!(
                "{}; the apps that came from this path keep running until berth can read it",
                entry.reason
            ),
            None,
        ));
    }
    let mut by_name: BTreeMap<String, Vec<Doc>> = BTreeMap::new();
    for (file, text) in files {
        let r = parse_file_inner(file, text, policy);
        if !r.readable {
            out.unreadable_files.push(file.clone());
        }
        out.issues.extend(r.file_issues);
        for mut doc in r.docs {
            out.issues.append(&mut doc.issues);
            if let Some(name) = doc.name.clone() {
                by_name.entry(name).or_default().push(doc);
            }
        }
    }

    let mut candidates: Vec<Doc> = Vec::new();
    for (name, docs) in by_name {
        if docs.len() == 1 {
            candidates.extend(docs);
            continue;
        }
        for (i, doc) in docs.iter().enumerate() {
            let others = list_places(
                docs.len() - 1,
                docs.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, o)| place(&o.source.file, o.name_pos.0)),
            );
            out.issues.push(issue(
                &doc.source.file,
                doc.name_pos,
                &fpath!["metadata", "name"],
                format!("app `{name}` is also defined at {others}: keep exactly one definition"),
                Some(&name),
            ));
        }
    }

    let mut by_route: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, doc) in candidates.iter().enumerate() {
        if let Some(route) = doc.app.as_ref().and_then(|a| a.route.as_ref()) {
            let key_path = route.path.trim_end_matches('/');
            let key = (route.host.clone().unwrap_or_default(), key_path.to_string());
            by_route.entry(key).or_default().push(i);
        }
    }
    let mut conflicted = vec![false; candidates.len()];
    for ((host, _), idxs) in by_route.iter().filter(|(_, v)| v.len() > 1) {
        for &i in idxs {
            conflicted[i] = true;
            let doc = &candidates[i];
            let route = doc.app.as_ref().and_then(|a| a.route.as_ref());
            let shown = route.map(|r| r.path.clone()).unwrap_or_default();
            let others = list_places(
                idxs.len() - 1,
                idxs.iter().filter(|&&j| j != i).map(|&j| {
                    let o = &candidates[j];
                    format!(
                        "`{}` ({})",
                        o.name.as_deref().unwrap_or(""),
                        place(&o.source.file, o.route_pos.0)
                    )
                }),
            );
            let host_text = if host.is_empty() {
                "any host".to_string()
            } else {
                format!("host {host}")
            };
            out.issues.push(issue(
                &doc.source.file,
                doc.route_pos,
                &fpath!["spec", "route"],
                format!(
                    "route {shown} on {host_text} is also claimed by {others}: give each app its own path or host"
                ),
                doc.name.as_deref(),
            ));
        }
    }

    let known: BTreeSet<&str> = candidates
        .iter()
        .filter_map(|d| d.name.as_deref())
        .collect();
    let check_unknown = out.unreadable_files.is_empty();
    cross_workload(
        &candidates,
        &known,
        check_unknown,
        &mut conflicted,
        &mut out.issues,
    );

    for (doc, conflict) in candidates.into_iter().zip(conflicted) {
        if let (Some(app), false) = (doc.app, conflict) {
            out.apps.insert(app.name.clone(), (app, doc.source));
        }
    }
    out.issues
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    out
}

/// Rules across apps for the workload options: a dependency must exist (unless a file could
/// not be read: it may be there), `dependsOn` must not form a cycle, and two apps must not
/// publish the same host address and port (0.0.0.0 / :: overlap every address).
fn cross_workload(
    docs: &[Doc],
    known: &BTreeSet<&str>,
    check_unknown: bool,
    conflicted: &mut [bool],
    issues: &mut Vec<SpecIssue>,
) {
    let index: BTreeMap<&str, usize> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((d.app.as_ref()?.name.as_str(), i)))
        .collect();
    fn deps(doc: &Doc) -> &[String] {
        doc.app
            .as_ref()
            .map(|a| a.workload.depends_on.as_slice())
            .unwrap_or_default()
    }
    for (i, doc) in docs.iter().enumerate() {
        for dep in deps(doc) {
            if check_unknown && !known.contains(dep.as_str()) {
                conflicted[i] = true;
                issues.push(issue(
                    &doc.source.file,
                    doc.deps_pos,
                    &fpath!["spec", "dependsOn"],
                    format!("depends on `{dep}`, which no spec defines: add that app or remove it from dependsOn"),
                    doc.name.as_deref(),
                ));
            }
        }
    }
    // Cycles: depth-first search; a back edge closes the cycle on the stack.
    let mut state = vec![0u8; docs.len()]; // 0 new, 1 on stack, 2 done
    let mut in_cycle: BTreeMap<usize, String> = BTreeMap::new();
    fn visit(
        i: usize,
        docs: &[Doc],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
        in_cycle: &mut BTreeMap<usize, String>,
    ) {
        state[i] = 1;
        stack.push(i);
        let deps = docs[i]
            .app
            .as_ref()
            .map(|a| a.workload.depends_on.clone())
            .unwrap_or_default();
        for dep in deps {
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            match state[j] {
                0 => visit(j, docs, index, state, stack, in_cycle),
                1 => {
                    let from = stack.iter().position(|&k| k == j).unwrap_or(0);
                    let members = &stack[from..];
                    let mut names: Vec<&str> = members
                        .iter()
                        .filter_map(|&k| docs[k].name.as_deref())
                        .collect();
                    names.push(docs[j].name.as_deref().unwrap_or(""));
                    let text = names.join(" -> ");
                    for &k in members {
                        in_cycle.entry(k).or_insert_with(|| text.clone());
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state[i] = 2;
    }
    for i in 0..docs.len() {
        if state[i] == 0 && docs[i].app.is_some() {
            visit(i, docs, &index, &mut state, &mut Vec::new(), &mut in_cycle);
        }
    }
    for (i, cycle) in in_cycle {
        conflicted[i] = true;
        let doc = &docs[i];
        issues.push(issue(
            &doc.source.file,
            doc.deps_pos,
            &fpath!["spec", "dependsOn"],
            format!("dependsOn forms a cycle ({cycle}): no app of it could ever start; remove one of these dependencies"),
            doc.name.as_deref(),
        ));
    }
    // One host address and port, two apps.
    let mut claims: Vec<(usize, &crate::spec::PublishedPort)> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if let Some(app) = &doc.app {
            claims.extend(app.workload.published.iter().map(|p| (i, p)));
        }
    }
    let wildcard = |ip: &str| ip == "0.0.0.0" || ip == "::";
    for &(i, p) in &claims {
        let others: Vec<usize> = claims
            .iter()
            .filter(|(j, q)| {
                *j != i
                    && q.host_port == p.host_port
                    && q.protocol == p.protocol
                    && (q.host_ip == p.host_ip || wildcard(&q.host_ip) || wildcard(&p.host_ip))
            })
            .map(|(j, _)| *j)
            .collect();
        if others.is_empty() {
            continue;
        }
        conflicted[i] = true;
        let doc = &docs[i];
        let places = list_places(
            others.len(),
            others.iter().map(|&j| {
                format!(
                    "`{}` ({})",
                    docs[j].name.as_deref().unwrap_or(""),
                    place(&docs[j].source.file, docs[j].ports_pos.0)
                )
            }),
        );
        issues.push(issue(
            &doc.source.file,
            doc.ports_pos,
            &fpath!["spec", "ports"],
            format!(
                "host port {}:{}/{} is also published by {places}: give each app its own hostPort",
                p.host_ip,
                p.host_port,
                p.protocol.as_str()
            ),
            doc.name.as_deref(),
        ));
    }
}
