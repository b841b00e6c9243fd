//! Per-app isolation (pure): turns loaded specs plus what the store remembers about each app
//! into `Desired`. A valid app is desired. An app whose spec fails to parse or validate is
//! *quarantined*: it keeps reconciling on its last good spec (from the store) when there is
//! one, else it is held as it runs. A file that cannot be parsed, and a source entry that
//! cannot be read, keep the apps the store says came from it (an unreadable directory: from
//! any file below it); a file that disappeared removes them (subject to the deletion budget).
//! Must not touch: I/O of any kind, the clock (callers hand in store rows and observations).

pub use crate::last_pass::Quarantine;
use crate::plan::{Desired, DesiredApp};
use crate::spec::{AppSpec, LoadedSpecs, SourceRef, SpecIssue};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The last spec of an app that parsed and validated, as kept in the store (recorded in the
/// pass that read it).
#[derive(Debug, Clone, PartialEq)]
pub struct LastGoodSpec {
    pub spec: AppSpec,
    pub revision: String,
    pub source_file: String,
}

/// What the store remembers about an app.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownApp {
    /// The file its spec came from last time it was valid.
    pub source_file: String,
    pub last_good: Option<LastGoodSpec>,
}

/// `Desired` plus what the loop reports about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub desired: Desired,
    pub issues: Vec<SpecIssue>,
    pub quarantined: BTreeMap<String, Quarantine>,
    /// App -> the file that caused its current state (events carry it).
    pub files: BTreeMap<String, String>,
}

/// Builds `Desired` with per-app isolation. `known` comes from the store; `present` are the
/// apps that have containers or proxy files on the host now.
pub fn desired_from(
    loaded: &LoadedSpecs,
    revision: &str,
    proxy_listen: &str,
    known: &BTreeMap<String, KnownApp>,
    present: &BTreeSet<String>,
) -> DesiredState {
    // Problems that name an app quarantine that app only.
    let mut named: BTreeMap<&str, &SpecIssue> = BTreeMap::new();
    for issue in &loaded.issues {
        if let Some(app) = &issue.app {
            named.entry(app.as_str()).or_insert(issue);
        }
    }
    // Files (and directories) whose apps cannot all be known: unreadable, or a document that
    // failed before naming its app.
    let mut suspect: BTreeMap<String, String> = BTreeMap::new();
    for issue in loaded.issues.iter().filter(|i| i.app.is_none()) {
        suspect
            .entry(issue.file.display().to_string())
            .or_insert_with(|| issue.to_string());
    }
    for file in &loaded.unreadable_files {
        let file = file.display().to_string();
        suspect
            .entry(file.clone())
            .or_insert_with(|| format!("{file}: cannot be read or parsed"));
    }

    let mut state = DesiredState {
        desired: Desired {
            revision: revision.to_string(),
            prune_blocked: None,
            proxy_listen: proxy_listen.to_string(),
            ..Desired::default()
        },
        issues: loaded.issues.clone(),
        ..DesiredState::default()
    };
    for (name, (spec, source)) in &loaded.apps {
        if named.contains_key(name.as_str()) {
            continue;
        }
        state
            .desired
            .apps
            .insert(name.clone(), DesiredApp::new(spec.clone(), source.clone()));
        state
            .files
            .insert(name.clone(), source.file.display().to_string());
    }
    for (name, issue) in &named {
        quarantine(
            &mut state,
            known,
            name,
            issue.to_string(),
            issue.file.display().to_string(),
        );
    }
    for (name, app) in known {
        if state.desired.apps.contains_key(name) || state.quarantined.contains_key(name) {
            continue;
        }
        if let Some((path, why)) = suspect_holding(&suspect, &app.source_file) {
            let reason = if path == app.source_file {
                format!(
                    "{path} could not be read or parsed, so its apps keep running as before: {why}"
                )
            } else {
                format!(
                    "{path} could not be read, so the apps from {} below it keep running as \
                     before: {why}",
                    app.source_file
                )
            };
            quarantine(&mut state, known, name, reason, app.source_file.clone());
        }
    }
    // Removal order: what the apps leaving the source depended on.
    for (name, app) in known {
        let desired = &state.desired;
        if desired.apps.contains_key(name) || desired.held.contains_key(name) {
            continue;
        }
        if let Some(last) = &app.last_good {
            if !last.spec.workload.depends_on.is_empty() {
                state
                    .desired
                    .leaving_deps
                    .insert(name.clone(), last.spec.workload.depends_on.clone());
            }
        }
    }
    if !suspect.is_empty() {
        let files: Vec<&str> = suspect.keys().map(String::as_str).collect();
        for name in present {
            if state.desired.apps.contains_key(name)
                || state.desired.held.contains_key(name)
                || known.contains_key(name)
            {
                continue;
            }
            state.desired.held.insert(
                name.clone(),
                format!(
                    "berth has no record of the file that defines this app and {} could not be \
                     read or parsed; it is kept until they can",
                    files.join(", ")
                ),
            );
        }
    }
    state
}

/// The suspect path that holds `file`: the file itself, or a directory above it.
fn suspect_holding<'a>(
    suspect: &'a BTreeMap<String, String>,
    file: &str,
) -> Option<(&'a str, &'a str)> {
    if let Some((path, why)) = suspect.get_key_value(file) {
        return Some((path.as_str(), why.as_str()));
    }
    suspect
        .iter()
        .find(|(path, _)| !path.is_empty() && Path::new(file).starts_with(path.as_str()))
        .map(|(path, why)| (path.as_str(), why.as_str()))
}

fn quarantine(
    state: &mut DesiredState,
    known: &BTreeMap<String, KnownApp>,
    name: &str,
    reason: String,
    file: String,
) {
    let last_good = known.get(name).and_then(|k| k.last_good.as_ref());
    match last_good {
        Some(good) => {
            let source = SourceRef {
                file: good.source_file.clone().into(),
                line: 0,
            };
            let mut app = DesiredApp::new(good.spec.clone(), source);
            app.revision = Some(good.revision.clone());
            state.desired.apps.insert(name.to_string(), app);
        }
        None => {
            state.desired.held.insert(name.to_string(), reason.clone());
        }
    }
    state.files.insert(name.to_string(), file.clone());
    state.quarantined.insert(
        name.to_string(),
        Quarantine {
            reason,
            file,
            last_good_revision: last_good.map(|g| g.revision.clone()),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(name: &str, image: &str) -> AppSpec {
        crate::spec::model::test_worker(name, image)
    }

    fn loaded(apps: &[(&str, &str, &str)], issues: Vec<SpecIssue>) -> LoadedSpecs {
        LoadedSpecs {
            apps: apps
                .iter()
                .map(|(name, image, file)| {
                    (
                        name.to_string(),
                        (
                            spec(name, image),
                            SourceRef {
                                file: PathBuf::from(file),
                                line: 1,
                            },
                        ),
                    )
                })
                .collect(),
            issues,
            unreadable_files: vec![],
        }
    }

    fn issue(file: &str, line: usize, app: Option<&str>, message: &str) -> SpecIssue {
        SpecIssue {
            file: file.into(),
            line,
            column: 3,
            field: "spec.image".into(),
            message: message.into(),
            app: app.map(str::to_string),
        }
    }

    fn known(entries: &[(&str, &str, Option<&str>)]) -> BTreeMap<String, KnownApp> {
        entries
            .iter()
            .map(|(name, file, good_image)| {
                (
                    name.to_string(),
                    KnownApp {
                        source_file: file.to_string(),
                        last_good: good_image.map(|image| LastGoodSpec {
                            spec: spec(name, image),
                            revision: "good-rev".into(),
                            source_file: file.to_string(),
                        }),
                    },
                )
            })
            .collect()
    }

    fn present(apps: &[&str]) -> BTreeSet<String> {
        apps.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn valid_apps_are_desired_with_their_file() {
        let l = loaded(
            &[("a", "img:1", "a.yaml"), ("b", "img:1", "b.yaml")],
            vec![],
        );
        let s = desired_from(&l, "r2", "127.0.0.1:8080", &BTreeMap::new(), &present(&[]));
        assert_eq!(s.desired.apps.len(), 2);
        assert_eq!(s.desired.prune_blocked, None);
        assert!(s.quarantined.is_empty());
        assert_eq!(s.files["b"], "b.yaml");
        assert_eq!(s.desired.apps["a"].revision, None);
    }

    #[test]
    fn a_broken_spec_runs_its_last_good_spec_and_the_others_update() {
        let l = loaded(
            &[("a", "img:2", "a.yaml"), ("b", "img:2", "b.yaml")],
            vec![issue("c.yaml", 7, Some("c"), "must not be empty")],
        );
        let k = known(&[
            ("a", "a.yaml", Some("img:1")),
            ("b", "b.yaml", Some("img:1")),
            ("c", "c.yaml", Some("img:1")),
        ]);
        let s = desired_from(&l, "r2", "l", &k, &present(&["a", "b", "c"]));
        assert_eq!(s.desired.apps["a"].spec.image, "img:2");
        assert_eq!(s.desired.apps["b"].spec.image, "img:2");
        let c = &s.desired.apps["c"];
        assert_eq!(c.spec.image, "img:1", "runs its last good spec");
        assert_eq!(c.revision.as_deref(), Some("good-rev"));
        let q = &s.quarantined["c"];
        assert_eq!(q.reason, "c.yaml:7:3: spec.image: must not be empty");
        assert_eq!(q.last_good_revision.as_deref(), Some("good-rev"));
        assert_eq!(s.files["c"], "c.yaml");
        assert!(s.desired.held.is_empty());
        assert_eq!(s.desired.prune_blocked, None);
    }

    #[test]
    fn a_broken_spec_without_last_good_is_held() {
        let l = loaded(&[], vec![issue("c.yaml", 2, Some("c"), "bad")]);
        let s = desired_from(&l, "r", "l", &BTreeMap::new(), &present(&["c"]));
        assert!(s.desired.apps.is_empty());
        assert!(s.desired.held["c"].contains("c.yaml:2:3"));
        assert_eq!(s.quarantined["c"].last_good_revision, None);
    }

    #[test]
    fn an_unparseable_file_keeps_its_apps_and_a_deleted_file_does_not() {
        let mut l = loaded(
            &[("a", "img:1", "a.yaml")],
            vec![issue("b.yaml", 1, None, "did not find expected key")],
        );
        l.unreadable_files = vec!["b.yaml".into()];
        let k = known(&[
            ("a", "a.yaml", Some("img:1")),
            ("b1", "b.yaml", Some("img:1")),
            ("b2", "b.yaml", None),
            ("gone", "gone.yaml", Some("img:1")),
        ]);
        let s = desired_from(&l, "r", "l", &k, &present(&["a", "b1", "b2", "gone"]));
        assert_eq!(s.desired.apps["b1"].spec.image, "img:1");
        assert!(s.quarantined["b1"]
            .reason
            .starts_with("b.yaml could not be read or parsed"));
        assert!(s.desired.held.contains_key("b2"));
        // gone.yaml left the source: its app is neither desired nor held -> removed.
        assert!(!s.desired.apps.contains_key("gone"));
        assert!(!s.desired.held.contains_key("gone"));
        assert_eq!(s.desired.prune_blocked, None);
    }

    #[test]
    fn unknown_running_apps_are_held_while_some_file_cannot_be_parsed() {
        let mut l = loaded(&[("a", "img:1", "a.yaml")], vec![]);
        l.unreadable_files = vec!["x.yaml".into()];
        let s = desired_from(&l, "r", "l", &BTreeMap::new(), &present(&["a", "mystery"]));
        assert!(s.desired.held["mystery"].contains("x.yaml"));
        // Without a broken file, an unknown app is simply not desired.
        let l = loaded(&[("a", "img:1", "a.yaml")], vec![]);
        let s = desired_from(&l, "r", "l", &BTreeMap::new(), &present(&["a", "mystery"]));
        assert!(s.desired.held.is_empty());
    }

    #[test]
    fn a_file_whose_other_document_is_broken_keeps_only_the_named_app() {
        // b.yaml defines b1 (valid) and b2 (invalid, named): b1 updates, b2 is quarantined.
        let l = loaded(
            &[("b1", "img:2", "b.yaml")],
            vec![issue("b.yaml", 12, Some("b2"), "unknown field")],
        );
        let k = known(&[
            ("b1", "b.yaml", Some("img:1")),
            ("b2", "b.yaml", Some("img:1")),
        ]);
        let s = desired_from(&l, "r", "l", &k, &present(&["b1", "b2"]));
        assert_eq!(s.desired.apps["b1"].spec.image, "img:2");
        assert!(!s.quarantined.contains_key("b1"));
        assert_eq!(s.desired.apps["b2"].spec.image, "img:1");
    }

    #[test]
    fn the_same_app_in_two_files_is_quarantined() {
        let l = loaded(
            &[("a", "img:2", "a.yaml")],
            vec![issue(
                "dup.yaml",
                1,
                Some("a"),
                "app a is also defined in a.yaml",
            )],
        );
        let k = known(&[("a", "a.yaml", Some("img:1"))]);
        let s = desired_from(&l, "r", "l", &k, &present(&["a"]));
        assert_eq!(s.desired.apps["a"].spec.image, "img:1");
        assert!(s.quarantined.contains_key("a"));
    }

    #[test]
    fn an_unreadable_directory_holds_every_app_below_it() {
        let mut l = loaded(
            &[("a", "img:2", "a.yaml")],
            vec![issue("team", 1, None, "the directory cannot be listed")],
        );
        l.unreadable_files = vec!["team".into()];
        let k = known(&[
            ("a", "a.yaml", Some("img:1")),
            ("t1", "team/t1.yaml", Some("img:1")),
            ("t2", "team/deep/t2.yaml", None),
            // A sibling whose name only starts like the directory is not below it.
            ("other", "teams/other.yaml", Some("img:1")),
        ]);
        let s = desired_from(&l, "r", "l", &k, &present(&["a", "t1", "t2", "other"]));
        assert_eq!(s.desired.apps["a"].spec.image, "img:2");
        assert_eq!(
            s.desired.apps["t1"].spec.image, "img:1",
            "runs its last good spec"
        );
        let q = &s.quarantined["t1"];
        assert!(
            q.reason
                .starts_with("team could not be read, so the apps from team/t1.yaml below it"),
            "{}",
            q.reason
        );
        assert!(
            q.reason.contains("the directory cannot be listed"),
            "{}",
            q.reason
        );
        assert_eq!(q.file, "team/t1.yaml");
        assert!(s.desired.held["t2"].contains("team could not be read"));
        assert!(!s.desired.apps.contains_key("other"));
        assert!(!s.desired.held.contains_key("other"));
    }

    #[test]
    fn an_unreadable_file_entry_holds_its_apps() {
        let l = crate::spec::load_source(
            &[],
            &[crate::spec::UnreadableEntry {
                path: "web.yaml".into(),
                reason: "is a symlink to `..data/web.yaml` that cannot be followed".into(),
            }],
        );
        let k = known(&[("web", "web.yaml", Some("img:1"))]);
        let s = desired_from(&l, "r", "l", &k, &present(&["web", "mystery"]));
        assert_eq!(s.desired.apps["web"].spec.image, "img:1");
        assert!(s.quarantined["web"].reason.contains("cannot be followed"));
        assert_eq!(s.issues.len(), 1);
        assert_eq!(s.issues[0].file, PathBuf::from("web.yaml"));
        assert!(s.desired.held["mystery"].contains("web.yaml"));
    }
}
