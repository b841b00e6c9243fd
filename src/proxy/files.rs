//! The proxy's files: reading the managed per-app files, writing them atomically (temp
//! file in the same directory, fsync, rename), and rotating the private nginx's logs.
//! Must not touch: nginx's process (process.rs) beyond asking it to reopen its logs.

use super::process::{private_args, run_command};
use super::{io_error, Proxy, ProxyError, ProxyMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

impl Proxy {
    /// Private mode: renames `logs/access.log` and `logs/error.log` to `<name>.1` (replacing
    /// the previous `.1`) when they are larger than `max_bytes`, then has nginx reopen its
    /// logs (`-s reopen`). Returns the files rotated. External mode: nothing (the operator's
    /// logrotate owns those logs). The autoscaler's collector finishes the renamed file and
    /// follows the new one.
    pub async fn rotate_logs(&self, max_bytes: u64) -> Result<Vec<PathBuf>, ProxyError> {
        let ProxyMode::Private { prefix, binary, .. } = &self.mode else {
            return Ok(Vec::new());
        };
        let mut rotated = Vec::new();
        for name in ["access.log", "error.log"] {
            let path = prefix.join("logs").join(name);
            let size = match tokio::fs::metadata(&path).await {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&path, e)),
            };
            if size <= max_bytes {
                continue;
            }
            let old = prefix.join("logs").join(format!("{name}.1"));
            tokio::fs::rename(&path, &old)
                .await
                .map_err(|e| io_error(&path, e))?;
            rotated.push(path);
        }
        if rotated.is_empty() || self.running_pid().await.is_none() {
            // A stopped nginx creates fresh files when it starts.
            return Ok(rotated);
        }
        let output = run_command(
            &binary.display().to_string(),
            &private_args(prefix, &["-s", "reopen"]),
        )
        .await?;
        if !output.status.success() {
            return Err(ProxyError::ReloadFailed {
                message: format!(
                    "reopening the logs after rotating them: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(rotated)
    }

    /// Reads every managed per-app file (`*.conf`, `*.loc`, `*.members`) in the conf dir.
    pub async fn current_files(&self) -> Result<BTreeMap<String, String>, ProxyError> {
        let dir = self.conf_dir();
        // One blocking task for the whole directory: a hop to the blocking pool per file
        // cost more than the reads themselves with 1,000 apps.
        tokio::task::spawn_blocking(move || read_conf_dir(&dir))
            .await
            .map_err(|source| ProxyError::Task {
                what: "proxy file read",
                source,
            })?
    }
}

pub(super) async fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await;
}

pub(super) async fn read_optional(path: &Path) -> Result<Option<String>, ProxyError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

pub(super) async fn remove_optional(path: &Path) -> Result<(), ProxyError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Writes `text` to a temp file in the same directory, fsyncs it, and renames it over
/// `path` (tempfile's `persist`): a crash leaves the old file or the new one, never half of
/// either.
pub(super) async fn write_atomically(path: &Path, text: &str) -> Result<(), ProxyError> {
    let path = path.to_path_buf();
    let text = text.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".berth-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| io_error(dir, e))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| io_error(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| io_error(&path, e.error))?;
        Ok(())
    })
    .await
    .map_err(|source| ProxyError::Task {
        what: "proxy file write",
        source,
    })?
}

/// Every berth-managed per-app file (`*.conf`, `*.loc`, `*.members`; not hidden, and not
/// berth's own `_berth*`) in `dir` with its text; an absent directory has none.
fn read_conf_dir(dir: &Path) -> Result<BTreeMap<String, String>, ProxyError> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let per_app =
            name.ends_with(".conf") || name.ends_with(".loc") || name.ends_with(".members");
        if !per_app || name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        files.insert(name, text);
    }
    Ok(files)
}
