//! The walker over a real temp directory (`dir::read_snapshot`) and a real git repository
//! built with git2 (`git::read_commit`), plus the walker's fault rules over a fake tree
//! (a directory that cannot be listed or read is not reproducible as root on a real disk).

use super::*;
use crate::source::{dir, git, GitConfig, Snapshot};
use git2::{Oid, Repository, Signature};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

fn paths(entries: &[UnreadableEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect()
}

fn names(files: &[(PathBuf, String)]) -> Vec<String> {
    files
        .iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

fn reason_of<'a>(snap: &'a Snapshot, path: &str) -> &'a str {
    &snap
        .unreadable
        .iter()
        .find(|e| e.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} is not unreadable: {:?}", snap.unreadable))
        .reason
}

/// `d/d/.../d` with `levels` components.
fn nested(levels: usize) -> PathBuf {
    (0..levels).map(|_| "d").collect()
}

/// One layout both sources can hold: read files, skipped names, a name that is not UTF-8
/// and a directory past the depth cap.
const LAYOUT: &[(&[u8], &str)] = &[
    (b"a.yaml", "a: 1"),
    (b"sub/b.yml", "b: 1"),
    (b".hidden.yaml", "h: 1"),
    (b".git-like/c.yaml", "c: 1"),
    (b"notes.txt", "n"),
    (b"web.yaml~", "w: 0"),
    (b"bad\xffname.yaml", "x: 1"),
    (b"bad\xffnotes.txt", "x"),
    (b"bad\xffdir/c.yaml", "x: 2"),
];

fn write_fs(root: &Path, path: &[u8], text: &str) {
    let path = root.join(OsStr::from_bytes(path));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_directory_reports_what_it_cannot_read_and_reads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (path, text) in LAYOUT {
        write_fs(root, path, text);
    }
    let deep = nested(MAX_DEPTH);
    write_fs(root, deep.join("ok.yaml").as_os_str().as_bytes(), "ok: 1");
    write_fs(
        root,
        deep.join("d/lost.yaml").as_os_str().as_bytes(),
        "l: 1",
    );
    let snap = dir::read_snapshot(root).unwrap();
    assert_eq!(
        names(&snap.files),
        vec![
            "a.yaml".to_string(),
            deep.join("ok.yaml").display().to_string(),
            "sub/b.yml".to_string(),
        ]
    );
    let too_deep = deep.join("d").display().to_string();
    assert_eq!(
        paths(&snap.unreadable),
        vec![
            "bad\u{FFFD}dir".to_string(),
            "bad\u{FFFD}name.yaml".to_string(),
            too_deep.clone(),
        ]
    );
    assert!(reason_of(&snap, "bad\u{FFFD}name.yaml").contains("not valid UTF-8"));
    assert!(reason_of(&snap, &too_deep).contains("deeper than 16 levels"));
}

#[test]
fn dangling_links_and_link_loops_are_unreadable_and_change_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("a.yaml"), "a: 1").unwrap();
    std::fs::write(root.join("web-v1.yml"), "w: 1").unwrap();
    std::os::unix::fs::symlink("web-v1.yml", root.join("web.yaml")).unwrap();
    let good = dir::read_snapshot(root).unwrap();
    assert!(good.unreadable.is_empty(), "{:?}", good.unreadable);

    // Half of a swap: the link's target is gone.
    std::fs::remove_file(root.join("web-v1.yml")).unwrap();
    std::os::unix::fs::symlink("x.yaml", root.join("y.yaml")).unwrap();
    std::os::unix::fs::symlink("y.yaml", root.join("x.yaml")).unwrap();
    std::os::unix::fs::symlink("/nonexistent-berth-mount", root.join("apps")).unwrap();
    std::os::unix::fs::symlink("gone.txt", root.join("notes.txt")).unwrap();
    let broken = dir::read_snapshot(root).unwrap();
    assert_eq!(names(&broken.files), vec!["a.yaml"]);
    assert_eq!(
        paths(&broken.unreadable),
        vec!["apps", "web.yaml", "x.yaml", "y.yaml"],
        "a dangling notes.txt cannot hold specs"
    );
    let web = reason_of(&broken, "web.yaml");
    assert!(
        web.starts_with("is a symlink to `web-v1.yml` that cannot be followed"),
        "{web}"
    );
    assert!(web.ends_with("fix or remove the link"), "{web}");
    assert!(
        reason_of(&broken, "x.yaml").contains("os error 40"),
        "a loop"
    );
    assert_ne!(broken.revision, good.revision);

    // Fixing the link makes it readable again, at the old revision.
    for name in ["x.yaml", "y.yaml", "apps", "notes.txt"] {
        std::fs::remove_file(root.join(name)).unwrap();
    }
    std::fs::write(root.join("web-v1.yml"), "w: 1").unwrap();
    assert_eq!(dir::read_snapshot(root).unwrap(), good);
}

#[test]
fn a_fifo_with_a_spec_name_is_unreadable_and_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe.yaml"))
        .arg(dir.path().join("pipe.log"))
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(status.success());
    let snap = dir::read_snapshot(dir.path()).unwrap();
    assert_eq!(paths(&snap.unreadable), vec!["pipe.yaml"]);
    assert!(reason_of(&snap, "pipe.yaml").starts_with("is a fifo, not a regular file"));
}

#[test]
fn a_link_to_an_enclosing_directory_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/a.yaml"), "a: 1").unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
    let snap = dir::read_snapshot(dir.path()).unwrap();
    assert_eq!(names(&snap.files), vec!["sub/a.yaml"]);
    assert!(snap.unreadable.is_empty(), "{:?}", snap.unreadable);
}

#[test]
fn an_unreadable_root_is_a_source_error() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("missing", dir.path().join("root")).unwrap();
    let err = dir::read_snapshot(&dir.path().join("root")).unwrap_err();
    assert!(matches!(err, SourceError::Read { .. }), "{err}");
}

/// A git tree node for `commit`: a blob with a file mode, or a sub-tree.
enum Node<'a> {
    Blob(&'a str, i32),
    Tree(Vec<(Vec<u8>, Node<'a>)>),
    Gitlink,
}

fn build(repo: &Repository, entries: Vec<(Vec<u8>, Node<'_>)>) -> Oid {
    let mut builder = repo.treebuilder(None).unwrap();
    for (name, node) in entries {
        let (oid, mode) = match node {
            Node::Blob(text, mode) => (repo.blob(text.as_bytes()).unwrap(), mode),
            Node::Tree(sub) => (build(repo, sub), 0o040000),
            // Some commit of another repository: git does not check it exists.
            Node::Gitlink => (Oid::from_str(&"1".repeat(40)).unwrap(), 0o160000),
        };
        builder.insert(name, oid, mode).unwrap();
    }
    builder.write().unwrap()
}

/// Inserts `path` (slash-separated bytes) into a nested entry list.
fn insert<'a>(entries: &mut Vec<(Vec<u8>, Node<'a>)>, path: &[u8], node: Node<'a>) {
    match path.iter().position(|b| *b == b'/') {
        None => entries.push((path.to_vec(), node)),
        Some(i) => {
            let (head, rest) = (&path[..i], &path[i + 1..]);
            let slot = match entries.iter().position(|(n, _)| n == head) {
                Some(j) => j,
                None => {
                    entries.push((head.to_vec(), Node::Tree(Vec::new())));
                    entries.len() - 1
                }
            };
            let Node::Tree(sub) = &mut entries[slot].1 else {
                panic!("{} is a file", String::from_utf8_lossy(head))
            };
            insert(sub, rest, node);
        }
    }
}

/// A bare repository with one commit holding `entries`; returns the repository, the commit
/// and a config for it.
fn commit(dir: &Path, entries: Vec<(Vec<u8>, Node<'_>)>) -> (Repository, Oid, GitConfig) {
    let repo = Repository::init_bare(dir.join("repo.git")).unwrap();
    let tree_id = build(&repo, entries);
    let oid = {
        let tree = repo.find_tree(tree_id).unwrap();
        let sig = Signature::now("berth-test", "test@berth.invalid").unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "specs", &tree, &[])
            .unwrap()
    };
    let config = GitConfig::new(
        dir.join("repo.git").display().to_string(),
        dir.join("cache"),
    );
    (repo, oid, config)
}

#[test]
fn a_git_tree_follows_the_same_rules_as_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    let mut files = Vec::new();
    for (path, text) in LAYOUT {
        insert(&mut entries, path, Node::Blob(text, 0o100644));
        files.push((path.to_vec(), *text));
    }
    let deep = nested(MAX_DEPTH);
    let ok = deep.join("ok.yaml").display().to_string();
    let lost = deep.join("d/lost.yaml").display().to_string();
    insert(&mut entries, ok.as_bytes(), Node::Blob("ok: 1", 0o100644));
    insert(&mut entries, lost.as_bytes(), Node::Blob("l: 1", 0o100644));
    let (repo, oid, config) = commit(dir.path(), entries);
    let from_git = git::read_commit(&repo, oid, &config).unwrap();
    assert_eq!(from_git.revision, oid.to_string());

    let fs_root = dir.path().join("fs");
    for (path, text) in LAYOUT {
        write_fs(&fs_root, path, text);
    }
    write_fs(&fs_root, ok.as_bytes(), "ok: 1");
    write_fs(&fs_root, lost.as_bytes(), "l: 1");
    let from_dir = dir::read_snapshot(&fs_root).unwrap();
    assert_eq!(from_git.files, from_dir.files);
    assert_eq!(from_git.unreadable, from_dir.unreadable);
    assert_eq!(from_git.unreadable.len(), 3, "{:?}", from_git.unreadable);
}

#[test]
fn git_symlinks_and_submodules_with_spec_names_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        (b"a.yaml".to_vec(), Node::Blob("a: 1", 0o100644)),
        (b"web.yaml".to_vec(), Node::Blob("a.yaml", 0o120000)),
        (b"docs".to_vec(), Node::Blob("elsewhere", 0o120000)),
        (b"lib.yaml".to_vec(), Node::Gitlink),
        (b"vendor".to_vec(), Node::Gitlink),
    ];
    let (repo, oid, mut config) = commit(dir.path(), entries);
    let snap = git::read_commit(&repo, oid, &config).unwrap();
    assert_eq!(names(&snap.files), vec!["a.yaml"]);
    assert_eq!(paths(&snap.unreadable), vec!["lib.yaml", "web.yaml"]);
    assert!(reason_of(&snap, "web.yaml").contains("does not follow symlinks in a git source"));
    assert!(reason_of(&snap, "lib.yaml").contains("submodule"));

    // A sub-path naming the symlink itself is unreadable too, not read as its target's name.
    config.path = "web.yaml".into();
    let single = git::read_commit(&repo, oid, &config).unwrap();
    assert!(single.files.is_empty());
    assert_eq!(paths(&single.unreadable), vec!["web.yaml"]);
}

/// A fake tree for the fault rules: `list` of `locked` fails, `read` of `broken.yaml` fails.
struct Faulty;

impl EntryTree for Faulty {
    type Dir = &'static str;
    type File = &'static str;
    type Key = &'static str;

    fn key(&self, dir: &&'static str) -> &'static str {
        dir
    }

    fn list(
        &self,
        dir: &&'static str,
        _rel: &Path,
    ) -> Result<Vec<Entry<&'static str, &'static str>>, Fault> {
        let utf8 = |n: &str| Name::Utf8(n.to_string());
        match *dir {
            "root" => Ok(vec![
                Entry {
                    name: utf8("locked"),
                    kind: Kind::Dir("locked"),
                },
                Entry {
                    name: utf8("open"),
                    kind: Kind::Dir("open"),
                },
                Entry {
                    name: utf8("broken.yaml"),
                    kind: Kind::File("broken.yaml"),
                },
            ]),
            "open" => Ok(vec![Entry {
                name: utf8("ok.yaml"),
                kind: Kind::File("ok.yaml"),
            }]),
            _ => Err(Fault::Entry(
                "the directory cannot be listed (denied)".into(),
            )),
        }
    }

    fn read(&self, file: &&'static str, _rel: &Path) -> Result<String, Fault> {
        match *file {
            "ok.yaml" => Ok("ok: 1".into()),
            _ => Err(Fault::Entry("cannot be read (EIO)".into())),
        }
    }
}

#[test]
fn a_directory_that_cannot_be_listed_and_a_file_that_cannot_be_read_are_unreadable() {
    let walked = walk(&Faulty, "root").unwrap();
    assert_eq!(names(&walked.files), vec!["open/ok.yaml"]);
    assert_eq!(
        walked.unreadable,
        vec![
            UnreadableEntry {
                path: "broken.yaml".into(),
                reason: "cannot be read (EIO)".into(),
            },
            UnreadableEntry {
                path: "locked".into(),
                reason: "the directory cannot be listed (denied)".into(),
            },
        ]
    );
}

#[test]
fn editor_temp_and_backup_names_are_not_specs() {
    for name in ["web.yaml", "web.yml", "a-b.c.yaml"] {
        assert!(is_spec_file(name), "{name}");
    }
    for name in [
        ".web.yaml",
        ".web.yaml.swp",
        ".web.yaml.swx",
        ".#web.yaml",
        "#web.yaml#",
        "web.yaml~",
        "~web.yaml",
        "web.yaml.bak",
        "web.yaml.tmp",
        "web.yaml.orig",
        "4913",
        "..data",
        "notes.txt",
    ] {
        assert!(!is_spec_file(name), "{name}");
    }
    // A dangling entry of unknown type is reported when it could be a directory of specs.
    assert!(may_hold_specs("apps") && may_hold_specs("web.yaml"));
    assert!(!may_hold_specs("notes.txt") && !may_hold_specs("#web.yaml#"));
}
