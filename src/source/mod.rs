//! Sources of desired state. Each produces a `Snapshot { revision, files }`; the loop is
//! woken by a new snapshot but still re-plans from scratch. Must not touch: Docker, nginx,
//! the store.

pub mod dir;

use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The spec files of one revision: paths relative to the source root, with contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: String,
    pub files: Vec<(PathBuf, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read spec directory {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// Content hash of a file set (sorted by path): the revision of a directory source.
pub fn content_revision(files: &[(PathBuf, String)]) -> String {
    let mut hasher = Sha256::new();
    for (path, text) in files {
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..6])
}
