//! Directory source: reads every `*.yaml` / `*.yml` under a directory (recursively,
//! following a symlinked root so ConfigMap-style swaps work), skipping hidden, backup and
//! temp files. Files larger than the spec limit are read only up to that limit plus one
//! byte, so the spec parser refuses them without berth loading a huge file.

use super::{content_revision, Snapshot, SourceError};
use crate::spec::MAX_FILE_BYTES;
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Reads the directory (or a single file) into a snapshot; paths are relative to `root`
/// (a single file keeps its own name).
pub fn read_snapshot(root: &Path) -> Result<Snapshot, SourceError> {
    let mut files = Vec::new();
    let metadata = std::fs::metadata(root).map_err(|e| SourceError::Read {
        path: root.to_path_buf(),
        message: e.to_string(),
    })?;
    if metadata.is_file() {
        let name = root.file_name().map(PathBuf::from).unwrap_or_default();
        files.push((name, read_capped(root)?));
    } else {
        walk(root, Path::new(""), &mut files, 0)?;
    }
    files.sort();
    Ok(Snapshot {
        revision: content_revision(&files),
        files,
    })
}

fn walk(
    root: &Path,
    relative: &Path,
    files: &mut Vec<(PathBuf, String)>,
    depth: usize,
) -> Result<(), SourceError> {
    if depth > 16 {
        return Ok(());
    }
    let dir = root.join(relative);
    let entries = std::fs::read_dir(&dir).map_err(|e| SourceError::Read {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = relative.join(&name);
        // Follow symlinks for the type (the `..data` swap pattern points at directories).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &rel, files, depth + 1)?;
        } else if meta.is_file() && is_spec_file(&name) {
            files.push((rel, read_capped(&path)?));
        }
    }
    Ok(())
}

fn read_capped(path: &Path) -> Result<String, SourceError> {
    let file = std::fs::File::open(path).map_err(|e| SourceError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SourceError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
