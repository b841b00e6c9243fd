//! Directory watcher (notify): turns an editor's burst of saves,
//! renames and temp files into one wake-up of the reconcile loop. Every relevant file event
//! (hidden and temp names included: a ConfigMap swap renames `..data`) starts a settle
//! window; when events stop for `settle` (or `max_delay` passed), the directory is re-read
//! and the loop is woken only if the content revision changed. The parent directory is
//! watched too, so a root that is a symlink swapped to a new target is re-watched.
//! Must not touch: Docker, nginx, the store; it never decides what to reconcile.

use super::{dir, SourceError, Waker};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Timing of the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTiming {
    /// Quiet time after the last event before the directory is re-read.
    pub settle: Duration,
    /// Longest a steady stream of events can delay the re-read.
    pub max_delay: Duration,
}

impl Default for WatchTiming {
    fn default() -> Self {
        WatchTiming {
            settle: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// Is this event path about the source root (or something below it)?
fn relevant(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

/// Sets up the watch on `root` and returns the task (for the caller to run) that calls
/// `wake("file")` once per settled burst that changed the specs. Errors setting up the
/// watch are returned at once.
pub fn watch(
    root: PathBuf,
    timing: WatchTiming,
    wake: Waker,
) -> Result<impl Future<Output = ()> + Send + 'static, SourceError> {
    let root = std::path::absolute(&root).map_err(|e| SourceError::Watch {
        path: root.clone(),
        message: e.to_string(),
    })?;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let filter_root = root.clone();
    // A plain watcher, not notify-debouncer-full: the debouncer's thread ticks every
    // timeout/4 (40 times a second at 100 ms) even when nothing happens; the settle window
    // below does the same job with no timer while the directory is quiet.
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<Event>| {
        match result {
            // Access events (open/close, berth's own reads among them) change nothing;
            // counting them would make each re-read trigger the next.
            Ok(event) => {
                if !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| relevant(p, &filter_root))
                {
                    let _ = tx.send(());
                }
            }
            Err(e) => {
                warn!("file watcher: {e}");
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| SourceError::Watch {
        path: root.clone(),
        message: e.to_string(),
    })?;
    let watch_err = |e: notify::Error| SourceError::Watch {
        path: root.clone(),
        message: e.to_string(),
    };
    if root.is_dir() {
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(watch_err)?;
    }
    if let Some(parent) = root.parent() {
        // Catches a root symlink swapped to a new target, and a single-file source.
        watcher
            .watch(parent, RecursiveMode::NonRecursive)
            .map_err(watch_err)?;
    }
    let task = async move {
        let read = |root: PathBuf| async move {
            tokio::task::spawn_blocking(move || dir::read_snapshot(&root))
                .await
                .map_err(|e| SourceError::Read {
                    path: PathBuf::new(),
                    message: e.to_string(),
                })
                .and_then(|r| r)
        };
        let mut last_revision = read(root.clone()).await.ok().map(|s| s.revision);
        let mut target = std::fs::canonicalize(&root).ok();
        loop {
            if rx.recv().await.is_none() {
                return;
            }
            let first = Instant::now();
            loop {
                match tokio::time::timeout(timing.settle, rx.recv()).await {
                    Ok(Some(())) if first.elapsed() < timing.max_delay => continue,
                    Ok(None) => return,
                    _ => break,
                }
            }
            let now_target = std::fs::canonicalize(&root).ok();
            if now_target != target {
                debug!(root = %root.display(), "source root now points elsewhere; re-watching");
                let _ = watcher.unwatch(&root);
                if root.is_dir() {
                    if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
                        warn!("cannot watch {}: {e}", root.display());
                    }
                }
                target = now_target;
            }
            match read(root.clone()).await {
                Ok(snapshot) => {
                    if last_revision.as_ref() != Some(&snapshot.revision) {
                        debug!(revision = %snapshot.revision, "spec files changed");
                        last_revision = Some(snapshot.revision);
                        wake("file");
                    }
                }
                // Mid-swap or unreadable: the next event or the timer pass tries again.
                Err(e) => debug!("{e}"),
            }
        }
    };
    Ok(task)
}
