//! Directory source: reads every `*.yaml` / `*.yml` under a directory (or a single file)
//! through the shared walker (`walk`: recursive, hidden/backup/temp names skipped, depth
//! cap). Symlinks are followed for the entry's type, so a symlinked root and ConfigMap-style
//! `..data` swaps work; a symlink that cannot be followed (dangling, a loop) and any other
//! entry that cannot be inspected, listed or read is an unreadable entry of the snapshot,
//! never skipped. Files larger than the spec limit are read only up to that limit plus one
//! byte, so the spec parser refuses them without berth loading a huge file. A root that
//! cannot be read at all is `SourceError::Read`. Must not touch: the spec parser, the store.

use super::walk::{self, Entry, EntryTree, Fault, Kind, Name};
use super::{content_revision, Snapshot, SourceError};
use crate::spec::MAX_FILE_BYTES;
use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use super::walk::is_spec_file;

/// A file's identity and last change as the file system reports them; a file whose stamp is
/// unchanged since it was read has unchanged contents (as git's index assumes), except when
/// it changed within `RACY_MS` of being read, when the stamp cannot tell (see `ReadCache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// A file changed this close to when it was read may change again within the same clock
/// tick without its stamp changing: such a file is read again next time.
const RACY_MS: i128 = 2_000;

/// The texts of the files a source read last time, by path and stamp, so a pass over an
/// unchanged directory of 1,000 specs reads none of them again and does not hash their
/// texts again (it still lists the directories and inspects every entry that may hold
/// specs, so added, removed, renamed or edited files are seen at once).
#[derive(Debug, Default)]
pub struct ReadCache {
    files: std::sync::Mutex<HashMap<PathBuf, (Stamp, i128, String)>>,
    /// The last read's revision and a cheap hash of its paths and unreadable entries: a
    /// read that took every text from the cache and found the same paths has the same
    /// contents, so it reuses the revision instead of hashing every text again.
    last: std::sync::Mutex<Option<(u64, String)>>,
}

impl ReadCache {
    /// Forgets every remembered file (the next read reads them all).
    pub fn clear(&self) {
        self.files.lock().expect("read cache lock").clear();
        *self.last.lock().expect("read cache lock") = None;
    }
}

/// A cheap (not cryptographic) hash of a walk's paths and unreadable entries.
fn layout_hash(walked: &walk::Walked) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (path, _) in &walked.files {
        path.hash(&mut hasher);
    }
    walked.unreadable.hash(&mut hasher);
    hasher.finish()
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Reads the directory (or a single file) into a snapshot; paths are relative to `root`
/// (a single file keeps its own name).
pub fn read_snapshot(root: &Path) -> Result<Snapshot, SourceError> {
    read_snapshot_cached(root, &ReadCache::default())
}

/// `read_snapshot`, taking the text of files whose stamp did not change from `cache` (and
/// leaving only the files seen in this read in it).
pub fn read_snapshot_cached(root: &Path, cache: &ReadCache) -> Result<Snapshot, SourceError> {
    let root_error = |e: std::io::Error| SourceError::Read {
        path: root.to_path_buf(),
        message: e.to_string(),
    };
    let metadata = std::fs::metadata(root).map_err(root_error)?;
    if metadata.is_file() {
        let name = root.file_name().map(PathBuf::from).unwrap_or_default();
        let files = vec![(name, read_capped(root).map_err(root_error)?)];
        return Ok(Snapshot {
            revision: content_revision(&files, &[]),
            files,
            unreadable: Vec::new(),
        });
    }
    let dir = FsDir {
        path: root.to_path_buf(),
        key: key(&metadata),
    };
    let tree = FsTree {
        root,
        cache,
        seen: std::sync::Mutex::new(HashMap::new()),
        misses: std::sync::atomic::AtomicUsize::new(0),
    };
    let walked = walk::walk(&tree, dir)?;
    *cache.files.lock().expect("read cache lock") = tree.seen.into_inner().expect("seen lock");
    let layout = layout_hash(&walked);
    let all_cached = tree.misses.into_inner() == 0;
    let mut last = cache.last.lock().expect("read cache lock");
    let revision = match last.as_ref() {
        Some((was, revision)) if all_cached && *was == layout => revision.clone(),
        _ => {
            let revision = content_revision(&walked.files, &walked.unreadable);
            *last = Some((layout, revision.clone()));
            revision
        }
    };
    Ok(Snapshot {
        revision,
        files: walked.files,
        unreadable: walked.unreadable,
    })
}

/// The file system below one root, with the texts read last time.
struct FsTree<'a> {
    root: &'a Path,
    cache: &'a ReadCache,
    /// What this read saw, which becomes the cache.
    seen: std::sync::Mutex<HashMap<PathBuf, (Stamp, i128, String)>>,
    /// Files read from disk in this read (not taken from the cache).
    misses: std::sync::atomic::AtomicUsize,
}

/// A directory on disk and its identity (device, inode).
struct FsDir {
    path: PathBuf,
    key: (u64, u64),
}

fn key(metadata: &Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

impl EntryTree for FsTree<'_> {
    type Dir = FsDir;
    type File = (PathBuf, Stamp);
    type Key = (u64, u64);

    fn key(&self, dir: &FsDir) -> (u64, u64) {
        dir.key
    }

    fn list(&self, dir: &FsDir, rel: &Path) -> Result<Vec<Entry<FsDir, (PathBuf, Stamp)>>, Fault> {
        let fault = |e: std::io::Error| {
            if rel.as_os_str().is_empty() {
                Fault::Source(SourceError::Read {
                    path: self.root.to_path_buf(),
                    message: e.to_string(),
                })
            } else {
                Fault::Entry(format!(
                    "the directory cannot be listed ({e}): check its permissions"
                ))
            }
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir.path).map_err(fault)? {
            // A failed step of the listing leaves it incomplete: the whole directory is
            // unreadable, not just one unknown entry.
            let entry = entry.map_err(fault)?;
            let name = match entry.file_name().into_string() {
                Ok(name) => Name::Utf8(name),
                Err(raw) => Name::NotUtf8(raw.to_string_lossy().into_owned()),
            };
            // A regular file (the listing's own type, no extra call) that is no spec file
            // is not looked at; the walker would skip it anyway.
            let plain_file = entry.file_type().is_ok_and(|t| t.is_file());
            if plain_file && matches!(&name, Name::Utf8(n) if !walk::is_spec_file(n)) {
                continue;
            }
            let path = entry.path();
            // Follows symlinks for the type (the `..data` swap points at directories). A
            // regular file is inspected relative to the open directory (no path lookup).
            let meta = match entry.metadata() {
                Ok(meta) if plain_file && meta.is_file() => Ok(meta),
                _ => std::fs::metadata(&path),
            };
            let kind = match meta {
                Ok(meta) if meta.is_dir() => Kind::Dir(FsDir {
                    key: key(&meta),
                    path,
                }),
                Ok(meta) if meta.is_file() => Kind::File((path, Stamp::of(&meta))),
                Ok(meta) => Kind::Other(format!(
                    "is a {}, not a regular file: replace it with a regular file",
                    special_kind(&meta)
                )),
                Err(e) => Kind::Unknown(inspect_error(&path, &e)),
            };
            entries.push(Entry { name, kind });
        }
        Ok(entries)
    }

    fn read(&self, file: &(PathBuf, Stamp), _rel: &Path) -> Result<String, Fault> {
        let (path, stamp) = file;
        // Taken out of the old cache (which this read's `seen` replaces): one copy of the
        // text goes to the snapshot, the other stays cached.
        let cached = self
            .cache
            .files
            .lock()
            .expect("read cache lock")
            .remove(path)
            .filter(|(was, read_at, _)| {
                was == stamp && read_at - stamp.mtime_ns.max(stamp.ctime_ns) > RACY_MS * 1_000_000
            })
            .map(|(_, read_at, text)| (read_at, text));
        let (read_at, text) = match cached {
            Some(hit) => hit,
            None => {
                self.misses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let read_at = now_ns();
                let text = read_capped(path).map_err(|e| {
                    Fault::Entry(format!("cannot be read ({e}): check its permissions"))
                })?;
                (read_at, text)
            }
        };
        let copy = text.clone();
        self.seen
            .lock()
            .expect("seen lock")
            .insert(path.clone(), (*stamp, read_at, text));
        Ok(copy)
    }
}

fn special_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Why an entry's metadata cannot be read, and what to do.
fn inspect_error(path: &Path, error: &std::io::Error) -> String {
    match std::fs::read_link(path) {
        Ok(target) => format!(
            "is a symlink to `{}` that cannot be followed ({error}): fix or remove the link",
            target.display()
        ),
        Err(_) => format!("cannot be inspected ({error}): check its permissions"),
    }
}

fn read_capped(path: &Path) -> Result<String, std::io::Error> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_see_every_edit_add_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::default();
        std::fs::write(dir.path().join("a.yaml"), "v: 1").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "w: 1").unwrap();
        let first = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(first, read_snapshot(dir.path()).unwrap());
        // Same size, rewritten at once (inside the racy window): still seen.
        std::fs::write(dir.path().join("a.yaml"), "v: 2").unwrap();
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::write(dir.path().join("c.yaml"), "x: 1").unwrap();
        let second = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(second, read_snapshot(dir.path()).unwrap());
        assert_eq!(second.files[0].1, "v: 2");
        assert_eq!(
            cache.files.lock().unwrap().len(),
            2,
            "b.yaml left the cache"
        );
        // An old file (past the racy window) is served from the cache while its stamp
        // holds, and read again when it changes.
        let old = dir.path().join("a.yaml");
        let stamp = Stamp::of(&std::fs::metadata(&old).unwrap());
        cache
            .files
            .lock()
            .unwrap()
            .insert(old.clone(), (stamp, now_ns(), "v: cached".to_string()));
        std::thread::sleep(std::time::Duration::from_millis(10));
        {
            let mut files = cache.files.lock().unwrap();
            let entry = files.get_mut(&old).unwrap();
            entry.1 = stamp.mtime_ns.max(stamp.ctime_ns) + (RACY_MS + 1) * 1_000_000;
        }
        let third = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(
            third.files[0].1, "v: cached",
            "unchanged stamp: not read again"
        );
        std::fs::write(&old, "v: 3 longer").unwrap();
        let fourth = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(fourth.files[0].1, "v: 3 longer");
    }

    /// Marks every cached file as read long after its last change (past the racy window).
    fn age(cache: &ReadCache) {
        for (stamp, read_at, _) in cache.files.lock().unwrap().values_mut() {
            *read_at = stamp.mtime_ns.max(stamp.ctime_ns) + (RACY_MS + 1) * 1_000_000;
        }
    }

    #[test]
    fn a_read_served_from_the_cache_reuses_the_revision_until_the_paths_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "v: 1").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "w: 1").unwrap();
        let cache = ReadCache::default();
        let first = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(first, read_snapshot(dir.path()).unwrap());
        // Every text comes from the cache and the paths are the same: the last revision
        // is reused, not computed again (a forged one shows it).
        age(&cache);
        cache.last.lock().unwrap().as_mut().unwrap().1 = "reused".to_string();
        let second = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(second.revision, "reused");
        assert_eq!(second.files, first.files);
        // A removed file changes the paths: computed again, as a fresh read has it.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        age(&cache);
        let third = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(third, read_snapshot(dir.path()).unwrap());
        // A file read from disk (a new one) computes it too.
        std::fs::write(dir.path().join("c.yaml"), "x: 1").unwrap();
        age(&cache);
        let fourth = read_snapshot_cached(dir.path(), &cache).unwrap();
        assert_eq!(fourth, read_snapshot(dir.path()).unwrap());
        assert_ne!(fourth.revision, third.revision);
    }

    #[test]
    fn filters_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "x: 2").unwrap();
        std::fs::write(dir.path().join("a.yaml~"), "x: 3").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yml"), "y: 1").unwrap();
        let snap = read_snapshot(dir.path()).unwrap();
        let names: Vec<_> = snap.files.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            names,
            vec![PathBuf::from("a.yaml"), PathBuf::from("sub/b.yml")]
        );
        let again = read_snapshot(dir.path()).unwrap();
        assert_eq!(snap.revision, again.revision);
        std::fs::write(dir.path().join("a.yaml"), "x: 9").unwrap();
        assert_ne!(read_snapshot(dir.path()).unwrap().revision, snap.revision);
    }

    #[test]
    fn configmap_style_symlinks_are_followed_once() {
        // root/..2024_1/web.yaml, root/..data -> ..2024_1, root/web.yaml -> ..data/web.yaml
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2024_1")).unwrap();
        std::fs::write(root.join("..2024_1/web.yaml"), "v: 1").unwrap();
        std::os::unix::fs::symlink("..2024_1", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/web.yaml", root.join("web.yaml")).unwrap();
        let snap = read_snapshot(root).unwrap();
        assert_eq!(
            snap.files,
            vec![(PathBuf::from("web.yaml"), "v: 1".to_string())]
        );
        // The swap: a new timestamped dir, a new link renamed over ..data.
        std::fs::create_dir(root.join("..2024_2")).unwrap();
        std::fs::write(root.join("..2024_2/web.yaml"), "v: 2").unwrap();
        std::os::unix::fs::symlink("..2024_2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..2024_1")).unwrap();
        let swapped = read_snapshot(root).unwrap();
        assert_eq!(swapped.files[0].1, "v: 2");
        assert_ne!(swapped.revision, snap.revision);
    }

    #[test]
    fn a_root_that_is_a_symlink_is_read_through() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::fs::write(dir.path().join("v1/a.yaml"), "a: 1").unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
        let snap = read_snapshot(&dir.path().join("current")).unwrap();
        assert_eq!(snap.files.len(), 1);
    }

    #[test]
    fn huge_file_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.yaml"), vec![b'a'; MAX_FILE_BYTES * 3]).unwrap();
        let snap = read_snapshot(dir.path()).unwrap();
        assert_eq!(snap.files[0].1.len(), MAX_FILE_BYTES + 1);
    }
}
