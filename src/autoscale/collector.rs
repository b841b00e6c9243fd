//! The autoscaler's collector: per-app request metrics from nginx's JSON access log (tailed
//! from its file) in sliding windows, and per-container CPU and memory from one-shot Docker
//! stats samples. Owns the tail position, the windows and the previous CPU counters.
//! Must not touch: Docker (it only turns samples the loop fetched into figures), nginx
//! (it only reads the log file, never rotates, truncates or reopens nginx's handle), the
//! store.
//!
//! Why tail the file rather than syslog over UDP: the private nginx already writes this
//! file; tailing needs no change to nginx's config, no port to own, survives a berth
//! restart (it re-reads the tail of the file to refill the window), and loses nothing under
//! load, where a UDP receive buffer silently drops datagrams. Rotation (new inode) and
//! truncation (copytruncate) are followed.

mod window;

pub use window::{
    parse_line, ContainerUsage, CpuTracker, IngestStats, LogLine, WindowSummary, MAX_BUCKETS,
};

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use window::AppWindow;

/// On the first open, read at most this much of the file's end to refill the windows.
pub const BACKFILL_BYTES: u64 = 8 * 1024 * 1024;
/// Upper bound of one read; a larger backlog is read over several polls.
pub const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of the file's beginning remembered to notice a truncation.
const HEAD_BYTES: usize = 64;
#[derive(Debug, thiserror::Error)]
#[error("cannot read the nginx access log {path}: {message} (the private nginx writes it under the state dir; in production mode pass --autoscale-access-log with berth's log_format)")]
pub struct AccessLogError {
    pub path: PathBuf,
    pub message: String,
}

/// Follows one access log file and keeps every watched app's window.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    file: Option<(std::fs::File, u64)>,
    offset: u64,
    /// The file's first bytes when it was opened: a different beginning later means the
    /// file was truncated and rewritten (copytruncate) even if it is not shorter now.
    head: Vec<u8>,
    partial: Vec<u8>,
    /// First moment from which the log is complete (None: nothing read yet).
    coverage_start: Option<i64>,
    /// Lines written at or after this time (the first poll) are counted into `requests`;
    /// the tail read at start (backfill for the windows) is not counted again.
    counting_since: Option<i64>,
    /// Requests per app read since the last `take_requests`.
    requests: crate::metrics::RequestTally,
    /// Skip up to the first newline (the first read started mid-file).
    skip_to_newline: bool,
    apps: HashMap<String, AppWindow>,
    /// Totals since start.
    pub totals: IngestStats,
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

impl AccessLog {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            offset: 0,
            head: Vec::new(),
            partial: Vec::new(),
            coverage_start: None,
            counting_since: None,
            requests: Default::default(),
            skip_to_newline: false,
            apps: HashMap::new(),
            totals: IngestStats::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the watched apps and their window lengths; other apps' windows are dropped and a
    /// changed window starts empty.
    pub fn configure(&mut self, apps: &BTreeMap<String, u32>) {
        self.apps.retain(|name, _| apps.contains_key(name));
        for (name, seconds) in apps {
            let fresh = AppWindow::new(*seconds);
            match self.apps.get(name) {
                Some(w) if w.window_ms == fresh.window_ms => {}
                _ => {
                    self.apps.insert(name.clone(), fresh);
                }
            }
        }
    }

    /// Reads what nginx appended since the last poll. A missing file is not an error (nginx
    /// has not started yet); it is picked up once it appears.
    pub fn poll(&mut self, now: i64) -> Result<IngestStats, AccessLogError> {
        self.counting_since.get_or_insert(now);
        let path = self.path.clone();
        let err = move |e: std::io::Error| AccessLogError {
            path: path.clone(),
            message: e.to_string(),
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(err(e)),
        };
        let mut stats = IngestStats::default();
        let ino = inode(&meta);
        let rotated = matches!(&self.file, Some((_, known)) if *known != ino);
        if rotated {
            // Finish the old file (nginx may have written to it until it reopened).
            stats.add(self.read_available().map_err(&err)?);
            self.file = None;
        }
        if self.file.is_none() {
            let file = std::fs::File::open(&self.path).map_err(&err)?;
            let len = meta.len();
            let first_open = self.coverage_start.is_none();
            self.offset = if first_open {
                len.saturating_sub(BACKFILL_BYTES)
            } else {
                0
            };
            self.partial.clear();
            self.head.clear();
            self.skip_to_newline = self.offset > 0;
            if self.offset == 0 && first_open {
                // The whole file is there: the log is complete from its beginning.
                self.coverage_start = Some(i64::MIN);
            }
            self.file = Some((file, ino));
        } else if meta.len() < self.offset || !self.same_head().map_err(&err)? {
            // Truncated in place (copytruncate): start over.
            self.offset = 0;
            self.partial.clear();
            self.skip_to_newline = false;
            self.head.clear();
        }
        stats.add(self.read_available().map_err(&err)?);
        if self.head.len() < HEAD_BYTES {
            self.head = self.read_head().map_err(&err)?;
        }
        if self.coverage_start.is_none() && self.offset > 0 && !self.skip_to_newline {
            // Started mid-file and nothing parsed yet: complete from now on at least.
            self.coverage_start = Some(now);
        }
        self.totals.add(stats);
        Ok(stats)
    }

    fn read_head(&mut self) -> std::io::Result<Vec<u8>> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        file.seek(SeekFrom::Start(0))?;
        let mut head = Vec::with_capacity(HEAD_BYTES);
        file.take(HEAD_BYTES as u64).read_to_end(&mut head)?;
        Ok(head)
    }

    /// False when the file no longer starts with the bytes it started with.
    fn same_head(&mut self) -> std::io::Result<bool> {
        if self.head.is_empty() {
            return Ok(true);
        }
        let now = self.read_head()?;
        Ok(now.len() >= self.head.len() && now[..self.head.len()] == self.head[..])
    }

    fn read_available(&mut self) -> std::io::Result<IngestStats> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(Default::default());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut data = Vec::new();
        file.take(MAX_READ_BYTES).read_to_end(&mut data)?;
        self.offset += data.len() as u64;
        let mut stats = self.ingest_bytes(&data);
        stats.bytes = data.len() as u64;
        Ok(stats)
    }

    /// Parses the complete lines of `data`, which continues what the previous call got; an
    /// incomplete last line is kept for the next call.
    pub fn ingest_bytes(&mut self, data: &[u8]) -> IngestStats {
        let mut stats = IngestStats::default();
        let mut rest = data;
        if self.skip_to_newline {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    rest = &rest[i + 1..];
                    self.skip_to_newline = false;
                }
                None => return stats,
            }
        }
        if !self.partial.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.ingest_line(&line, &mut stats);
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    return stats;
                }
            }
        }
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.ingest_line(&rest[..i], &mut stats);
            rest = &rest[i + 1..];
        }
        self.partial = rest.to_vec();
        stats
    }

    fn ingest_line(&mut self, line: &[u8], stats: &mut IngestStats) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        stats.lines += 1;
        let Some(parsed) = parse_line(line) else {
            stats.bad_lines += 1;
            return;
        };
        if self.coverage_start.is_none() {
            self.coverage_start = Some(parsed.at);
        }
        if parsed.app != "-" && self.counting_since.is_some_and(|since| parsed.at >= since) {
            self.requests
                .add(&parsed.app, parsed.status, parsed.request_time);
        }
        match self.apps.get_mut(parsed.app.as_str()) {
            Some(window) => window.add(&parsed),
            None => stats.ignored += 1,
        }
    }

    /// The requests counted since the last call (for /metrics).
    pub fn take_requests(&mut self) -> crate::metrics::RequestTally {
        std::mem::take(&mut self.requests)
    }

    /// The app's figures over its window ending at `now`; `None` when the app is not
    /// watched or nothing was read yet.
    pub fn summary(&mut self, app: &str, now: i64) -> Option<WindowSummary> {
        let coverage_start = self.coverage_start?;
        Some(self.apps.get_mut(app)?.summary(coverage_start, now))
    }
}

#[cfg(test)]
mod tests;
