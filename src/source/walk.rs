//! The one tree walker of both sources: the directory source (`dir`) and the git source
//! (`git`) each describe their tree through `EntryTree` (list a directory, read a file),
//! and `walk` applies the same rules to both: spec-file names only (`is_spec_file`), hidden
//! entries skipped, at most `MAX_DEPTH` directory levels, a directory that contains itself
//! (a symlink to an ancestor) read once. Sources fail closed: an entry that may hold specs
//! but cannot be read (a dangling symlink or symlink loop, an entry whose metadata or
//! content cannot be read, a directory that cannot be listed or lies past the depth cap, a
//! name that is not UTF-8, a git symlink or submodule with a spec-file name) is returned as
//! an `UnreadableEntry` with its path and reason, never silently dropped: the spec loader
//! turns it into an issue and the apps the store attributes to it are held. Must not touch:
//! the spec parser, the store, Docker, nginx; I/O happens only inside the `EntryTree`.

use super::SourceError;
use crate::spec::UnreadableEntry;
use std::path::{Path, PathBuf};

/// Deepest directory level read below the source root (the root's own entries are level 0,
/// a directory in the root is level 1). A directory deeper than this is an unreadable entry.
pub const MAX_DEPTH: usize = 16;

/// Is this a spec file berth should read? Only `*.yaml` / `*.yml`; hidden files (`.x.yaml`,
/// vim's `.x.yaml.swp`, emacs' `.#x.yaml`, the ConfigMap `..data` links), emacs autosaves
/// (`#x.yaml#`), backups (`x.yaml~`, `x.yaml.bak`) and temp names (`x.yaml.tmp`, vim's
/// `4913`) are not.
pub fn is_spec_file(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with('#') || name.starts_with('~') {
        return false;
    }
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Could an entry of unknown type with this name hold specs? A spec file name, or a name
/// without an extension (a directory, as far as the name tells). `notes.txt` or `web.yaml~`
/// could not, so a dangling link of that name is not worth an issue.
fn may_hold_specs(name: &str) -> bool {
    is_spec_file(name) || (!name.contains('.') && !name.starts_with('#') && !name.starts_with('~'))
}

/// An entry's name as the tree gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name {
    Utf8(String),
    /// Not valid UTF-8: its lossy rendering (U+FFFD for the invalid bytes).
    NotUtf8(String),
}

/// What an entry is, as far as the tree can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind<D, F> {
    Dir(D),
    /// A regular file (git: a blob that is not a symlink).
    File(F),
    /// Neither (a fifo, a socket, a device, a git symlink or submodule): what it is and what
    /// to do. Reported when its name is a spec file name.
    Other(String),
    /// What the entry is cannot be found out (a dangling symlink, a symlink loop, ...): why
    /// and what to do. Reported when its name may hold specs.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry<D, F> {
    pub name: Name,
    pub kind: Kind<D, F>,
}

/// A directory's entries.
pub(crate) type Entries<D, F> = Vec<Entry<D, F>>;

/// Why a tree operation failed.
#[derive(Debug)]
pub(crate) enum Fault {
    /// This entry cannot be read (why and what to do): it becomes an unreadable entry.
    Entry(String),
    /// The source as a whole cannot be read (the root, a damaged git object): the pass
    /// keeps the last state.
    Source(SourceError),
}

/// A tree of entries: a directory on disk or a git tree.
pub(crate) trait EntryTree {
    /// A directory's handle.
    type Dir;
    /// A file's handle.
    type File;
    /// A directory's identity, to notice a directory reached again inside itself.
    type Key: PartialEq;

    fn key(&self, dir: &Self::Dir) -> Self::Key;
    /// The entries of `dir` (at `rel` below the root), in any order. Listing the root must
    /// fail with `Fault::Source`.
    fn list(&self, dir: &Self::Dir, rel: &Path) -> Result<Entries<Self::Dir, Self::File>, Fault>;
    /// A file's text, at most `MAX_FILE_BYTES + 1` bytes of it (or that many bytes of
    /// padding for a bigger one) so the parser refuses it by its size without berth loading it.
    fn read(&self, file: &Self::File, rel: &Path) -> Result<String, Fault>;
}

/// What a walk found: spec files with their text and the entries that cannot be read, both
/// sorted by path (relative to the root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Walked {
    pub files: Vec<(PathBuf, String)>,
    pub unreadable: Vec<UnreadableEntry>,
}

impl Walked {
    fn unreadable(&mut self, path: PathBuf, reason: impl Into<String>) {
        self.unreadable.push(UnreadableEntry {
            path,
            reason: reason.into(),
        });
    }
}

/// Walks `tree` from `root`.
pub(crate) fn walk<T: EntryTree>(tree: &T, root: T::Dir) -> Result<Walked, SourceError> {
    let mut out = Walked::default();
    let mut ancestors = vec![tree.key(&root)];
    visit(tree, &root, Path::new(""), 0, &mut ancestors, &mut out)?;
    out.files.sort();
    out.unreadable.sort();
    Ok(out)
}

fn visit<T: EntryTree>(
    tree: &T,
    dir: &T::Dir,
    rel: &Path,
    depth: usize,
    ancestors: &mut Vec<T::Key>,
    out: &mut Walked,
) -> Result<(), SourceError> {
    let entries = match tree.list(dir, rel) {
        Ok(entries) => entries,
        Err(Fault::Entry(reason)) => {
            out.unreadable(rel.to_path_buf(), reason);
            return Ok(());
        }
        Err(Fault::Source(e)) => return Err(e),
    };
    for entry in entries {
        let (name, utf8) = match entry.name {
            Name::Utf8(name) => (name, true),
            Name::NotUtf8(lossy) => (lossy, false),
        };
        if name.starts_with('.') {
            continue;
        }
        let path = rel.join(&name);
        if !utf8 {
            let report = match &entry.kind {
                Kind::Dir(_) => true,
                Kind::File(_) | Kind::Other(_) => is_spec_file(&name),
                Kind::Unknown(_) => may_hold_specs(&name),
            };
            if report {
                out.unreadable(
                    path,
                    "the name is not valid UTF-8 (shown with replacement characters), so berth \
                     does not read it: rename it to a UTF-8 name",
                );
            }
            continue;
        }
        match entry.kind {
            Kind::Dir(sub) => {
                if depth + 1 > MAX_DEPTH {
                    out.unreadable(
                        path,
                        format!(
                            "the directory is nested deeper than {MAX_DEPTH} levels below the \
                             source root, so berth does not read it: move its spec files higher up"
                        ),
                    );
                    continue;
                }
                let key = tree.key(&sub);
                // A symlink back to a directory being walked: its files are read at their
                // own path already.
                if ancestors.contains(&key) {
                    continue;
                }
                ancestors.push(key);
                let result = visit(tree, &sub, &path, depth + 1, ancestors, out);
                ancestors.pop();
                result?;
            }
            Kind::File(file) if is_spec_file(&name) => match tree.read(&file, &path) {
                Ok(text) => out.files.push((path, text)),
                Err(Fault::Entry(reason)) => out.unreadable(path, reason),
                Err(Fault::Source(e)) => return Err(e),
            },
            Kind::File(_) => {}
            Kind::Other(reason) if is_spec_file(&name) => out.unreadable(path, reason),
            Kind::Other(_) => {}
            Kind::Unknown(reason) if may_hold_specs(&name) => out.unreadable(path, reason),
            Kind::Unknown(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
