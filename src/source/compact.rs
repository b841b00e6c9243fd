//! Compaction of a git source's bare mirror. Every fetch leaves a pack (or loose objects)
//! behind and libgit2 has no `gc`, so on a busy repository the mirror would grow without
//! bound. After a fetch, when `objects/` holds more than [`MAX_PACKS`] packs or more than
//! [`MAX_LOOSE`] loose objects, `git gc --quiet` (the git CLI) repacks it into one pack and
//! drops what no ref reaches any more. Without the git CLI the mirror is left as it is and a
//! warning says to install git. Must not touch: anything outside the mirror directory, the
//! remote, the refs' targets.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{debug, warn};

/// More packs than this after a fetch: compact.
pub const MAX_PACKS: usize = 10;
/// More loose objects than this after a fetch: compact.
pub const MAX_LOOSE: usize = 100;

/// What a mirror's object store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorStats {
    pub packs: usize,
    pub loose: usize,
}

impl MirrorStats {
    pub fn needs_compaction(&self) -> bool {
        self.packs > MAX_PACKS || self.loose > MAX_LOOSE
    }
}

/// Counts the packs (`objects/pack/*.pack`) and loose objects (`objects/xx/*`) of a bare
/// repository; a missing directory counts as empty.
pub fn mirror_stats(mirror: &Path) -> MirrorStats {
    let objects = mirror.join("objects");
    let count = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| keep(&e.file_name().to_string_lossy()))
                    .count()
            })
            .unwrap_or(0)
    };
    let packs = count(&objects.join("pack"), &|name| name.ends_with(".pack"));
    let mut loose = 0;
    for byte in 0..=255u8 {
        let dir = objects.join(format!("{byte:02x}"));
        loose += count(&dir, &|name| name.len() == 38);
    }
    MirrorStats { packs, loose }
}

/// Compacts the mirror when it crossed a threshold. Returns the stats before and after when
/// it ran `git gc`; `None` when nothing was needed or git could not do it (a warning says
/// why). Call with no libgit2 handle open on the mirror.
pub fn compact_if_needed(mirror: &Path) -> Option<(MirrorStats, MirrorStats)> {
    let before = mirror_stats(mirror);
    if !before.needs_compaction() {
        return None;
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(mirror)
        .args(["-c", "gc.autoDetach=false", "gc", "--quiet"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let after = mirror_stats(mirror);
            debug!(
                mirror = %mirror.display(),
                packs_before = before.packs,
                loose_before = before.loose,
                packs_after = after.packs,
                loose_after = after.loose,
                "git mirror compacted"
            );
            Some((before, after))
        }
        Ok(out) => {
            warn!(
                mirror = %mirror.display(),
                packs = before.packs,
                loose = before.loose,
                "cannot compact the git mirror: git gc failed: {}; the mirror keeps growing until it succeeds",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!(
                    mirror = %mirror.display(),
                    "cannot compact the git mirror: the git CLI cannot run ({e}); install git (apt-get install git) or the mirror grows with every fetch"
                );
            }
            None
        }
    }
}
