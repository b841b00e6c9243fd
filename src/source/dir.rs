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
/// unchanged directory of 1,000 specs reads none of them again (it still lists the
/// directories and inspects every entry, so added, removed, renamed or edited files are
/// seen at once).
#[derive(Debug, Default)]
pub struct ReadCache {
    files: std::sync::Mutex<HashMap<PathBuf, (Stamp, i128, String)>>,
}

impl ReadCache {
    /// Forgets every remembered file (the next read reads them all).
    pub fn clear(&self) {
        self.files.lock().expect("read cache lock").clear();
    }
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
    let walked = if metadata.is_file() {
        let name = root.file_name().map(PathBuf::from).unwrap_or_default();
        let text = read_capped(root).map_err(root_error)?;
        walk::Walked {
            files: vec![(name, text)],
            unreadable: Vec::new(),
        }
    } else {
        let dir = FsDir {
            path: root.to_path_buf(),
            key: key(&metadata),
        };
        let tree = FsTree {
            root,
            cache,
            seen: std::sync::Mutex::new(HashMap::new()),
        };
        let walked = walk::walk(&tree, dir)?;
        *cache.files.lock().expect("read cache lock") = tree.seen.into_inner().expect("seen lock");
        walked
    };
    Ok(Snapshot {
        revision: content_revision(&walked.files, &walked.unreadable),
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
            let path = entry.path();
            // Follows symlinks for the type (the `..data` swap points at directories).
            let kind = match std::fs::metadata(&path) {
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
        let cached = self
            .cache
            .files
            .lock()
            .expect("read cache lock")
            .get(path)
            .filter(|(was, read_at, _)| {
                was == stamp && read_at - stamp.mtime_ns.max(stamp.ctime_ns) > RACY_MS * 1_000_000
            })
            .map(|(_, read_at, text)| (*read_at, text.clone()));
        let (read_at, text) = match cached {
            Some(hit) => hit,
            None => {
                let read_at = now_ns();
                let text = read_capped(path).map_err(|e| {
                    Fault::Entry(format!("cannot be read ({e}): check its permissions"))
                })?;
                (read_at, text)
            }
        };
        self.seen
            .lock()
            .expect("seen lock")
            .insert(path.clone(), (*stamp, read_at, text.clone()));
        Ok(text)
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
