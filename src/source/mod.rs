//! Sources of desired state. Each produces a `Snapshot { revision, files, unreadable }`: a
//! watched directory (`dir` + `watch`, revision = content hash of the spec set and of the
//! unreadable entries) or a git repository (`git`, revision = commit sha), both read through
//! the one tree walker (`walk`), plus the optional webhook listener (`webhook`) that only
//! wakes the git poll. A new snapshot wakes the reconcile loop through a `Waker`; the loop
//! still re-plans from scratch. Must not touch: Docker, nginx, the store, the spec parser.

pub mod compact;
pub mod dir;
pub mod git;
pub mod trust;
pub mod walk;
pub mod watch;
pub mod webhook;

use crate::clock::now_ms;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::{info, warn};

pub use crate::spec::UnreadableEntry;
pub use git::GitConfig;

/// The spec files of one revision: paths relative to the source root, with contents, and
/// the entries that may hold specs but cannot be read (sources fail closed: such an entry is
/// reported and its apps are held, never treated as deleted). Both sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: String,
    pub files: Vec<(PathBuf, String)>,
    pub unreadable: Vec<UnreadableEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read spec directory {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot watch {path}: {message}; changes are picked up by the timer pass only")]
    Watch { path: PathBuf, message: String },
    #[error("cannot sync git repository {url} (branch {branch}): {message}; check the URL, branch and credentials")]
    Git {
        url: String,
        branch: String,
        message: String,
    },
    #[error("ssh authentication to {url} failed as user {user}: check --git-ssh-key and that the deploy key is added to the repository")]
    SshAuth {
        url: String,
        user: String,
        #[source]
        source: git2::Error,
    },
    #[error("https authentication to {url} failed: check the token in ${token_env} (--git-token-env) and that it may read the repository")]
    TokenAuth {
        url: String,
        token_env: String,
        #[source]
        source: git2::Error,
    },
    #[error("refusing to fetch {url}: the ssh host key of {host} is not known ({key_type} {fingerprint}){other}; if that is the server's key, add it to {known_hosts} (ssh-keyscan) or pass --git-known-hosts FILE that lists it",
        host = .key.host, key_type = .key.key_type, fingerprint = .key.fingerprint, known_hosts = .key.known_hosts)]
    UnknownHostKey {
        url: String,
        key: Box<HostKey>,
        /// `; the file lists only <types> keys for it` when another algorithm is listed.
        other: String,
        #[source]
        source: git2::Error,
    },
    #[error("refusing to fetch {url}: the ssh host key of {host} ({key_type} {fingerprint}) {what} {known_hosts} line {line} (someone may be intercepting the connection); if the server's key really changed, replace that line",
        host = .key.host, key_type = .key.key_type, fingerprint = .key.fingerprint, known_hosts = .key.known_hosts)]
    HostKeyMismatch {
        url: String,
        key: Box<HostKey>,
        /// `does not match the key in` or `is marked @revoked in`.
        what: &'static str,
        line: usize,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read the known_hosts file {path} to check {url}: {message}; fix its permissions or pass --git-known-hosts")]
    KnownHosts {
        url: String,
        path: PathBuf,
        message: String,
    },
    #[error("the tls certificate of {url} has expired or is not valid yet ({detail}): renew the server's certificate")]
    CertificateExpired {
        url: String,
        detail: String,
        #[source]
        source: git2::Error,
    },
    #[error("the tls certificate of {url} is not trusted ({detail}): pass the CA that signed it with --git-ca-file")]
    CertificateUntrusted {
        url: String,
        detail: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot use the CA file {path} for {url}: {message}; pass a PEM file holding the CA certificate to --git-ca-file")]
    CaFile {
        url: String,
        path: PathBuf,
        message: String,
    },
    #[error("path {path} does not exist at commit {revision} of {url}: fix --path or commit the directory")]
    SubPath {
        url: String,
        path: PathBuf,
        revision: String,
    },
    #[error("the git source {location} has not synced yet: wait for the first sync (see `berth status` for its errors)")]
    NotSynced { location: String },
    #[error(
        "cannot listen for webhooks on {addr}: {message}; pick a free address for --webhook-listen"
    )]
    Webhook { addr: String, message: String },
}

/// The ssh host key a server presented, and the known_hosts file it was looked up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The name looked up: `host`, or `[host]:port` on a port other than 22.
    pub host: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, ...
    pub key_type: String,
    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The file's path, or why there is none.
    pub known_hosts: String,
}

/// Where the specs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A directory (or a single file), re-read on every pass and watched for changes.
    Dir(PathBuf),
    /// A git repository, fetched every poll interval (or at once on a webhook).
    Git(GitConfig),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Dir(_) => "dir",
            SourceConfig::Git(_) => "git",
        }
    }

    /// Human description for logs: the directory, or `url@branch:path`.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Dir(path) => path.display().to_string(),
            SourceConfig::Git(git) => git.describe(),
        }
    }
}

/// Health of the source, for the loop (events) and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub kind: String,
    pub location: String,
    /// Revision of the snapshot the loop works from (git: last synced commit).
    pub revision: Option<String>,
    /// Unix ms of the last successful sync (git) or read (dir).
    pub synced_at: Option<i64>,
    /// Why the source is degraded (git remote unreachable, ...): the loop keeps using the
    /// last synced revision meanwhile.
    pub degraded: Option<String>,
    /// Consecutive failed syncs.
    pub failures: u32,
}

/// Called with a short reason ("file", "git", "webhook") when a new snapshot is there.
pub type Waker = Arc<dyn Fn(&'static str) + Send + Sync>;

/// One source at run time: its configuration, the last snapshot (git) and its status.
/// Cheap to share (`Arc<Source>`); `task` is the watcher or the poll loop, for the
/// composition root to run.
pub struct Source {
    config: SourceConfig,
    latest: Mutex<Option<Snapshot>>,
    status: Mutex<SourceStatus>,
    /// Wakes the git poll at once (webhook).
    poll_now: Notify,
    /// Serialises git fetches (poll loop, pass, webhook).
    git_lock: tokio::sync::Mutex<git::GitState>,
    /// Directory: the texts of unchanged files, so a pass re-reads only what changed.
    read_cache: dir::ReadCache,
}

impl Source {
    /// Forgets what the directory reader remembered between passes (a new leader reads
    /// every file again).
    pub fn forget_cache(&self) {
        self.read_cache.clear();
    }

    pub fn new(config: SourceConfig) -> Arc<Source> {
        let status = SourceStatus {
            kind: config.kind().to_string(),
            location: config.describe(),
            ..SourceStatus::default()
        };
        Arc::new(Source {
            config,
            latest: Mutex::new(None),
            status: Mutex::new(status),
            poll_now: Notify::new(),
            git_lock: tokio::sync::Mutex::new(git::GitState::default()),
            read_cache: dir::ReadCache::default(),
        })
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    pub fn status(&self) -> SourceStatus {
        self.status.lock().expect("source status lock").clone()
    }

    /// The snapshot a pass works from. A directory is read now (level-triggered: a missed
    /// file event is corrected by the next pass). A git source returns the last synced
    /// commit, syncing first when it never synced; it fails only when no revision was ever
    /// synced (not even one cached on disk by an earlier run).
    pub async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        match &self.config {
            SourceConfig::Dir(path) => {
                let snapshot = dir::read_snapshot_cached(path, &self.read_cache)?;
                let mut status = self.status.lock().expect("source status lock");
                status.revision = Some(snapshot.revision.clone());
                status.synced_at = Some(now_ms());
                Ok(snapshot)
            }
            SourceConfig::Git(_) => {
                if let Some(snapshot) = self.latest.lock().expect("latest lock").clone() {
                    return Ok(snapshot);
                }
                match self.sync().await {
                    Ok(_) => {}
                    Err(e) if self.latest.lock().expect("latest lock").is_none() => return Err(e),
                    Err(_) => {}
                }
                Ok(self
                    .latest
                    .lock()
                    .expect("latest lock")
                    .clone()
                    .expect("set by sync"))
            }
        }
    }

    /// The snapshot a pass would work from, without changing anything: a directory is read
    /// (its status is not touched), a git source returns its last synced commit and never
    /// fetches (`NotSynced` before the first sync). For read-only callers (the API's plan).
    pub async fn peek(&self) -> Result<Snapshot, SourceError> {
        match &self.config {
            SourceConfig::Dir(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || dir::read_snapshot(&path))
                    .await
                    .unwrap_or_else(|e| {
                        Err(SourceError::Read {
                            path: PathBuf::new(),
                            message: format!("the read task failed: {e}"),
                        })
                    })
            }
            SourceConfig::Git(_) => {
                self.latest
                    .lock()
                    .expect("latest lock")
                    .clone()
                    .ok_or_else(|| SourceError::NotSynced {
                        location: self.config.describe(),
                    })
            }
        }
    }

    /// Git: fetches the branch and reads the commit. Returns whether the revision changed.
    /// On failure the last synced snapshot is kept (or, on a fresh start, the revision the
    /// on-disk mirror holds from an earlier run) and the status says degraded.
    /// A directory source has nothing to sync (returns false).
    pub async fn sync(&self) -> Result<bool, SourceError> {
        let SourceConfig::Git(config) = &self.config else {
            return Ok(false);
        };
        let mut state = self.git_lock.lock().await;
        let config_for_task = config.clone();
        let state_for_task = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut st = state_for_task;
            let result = git::fetch_snapshot(&config_for_task, &mut st);
            (result, st)
        })
        .await;
        let (result, new_state) = match result {
            Ok(pair) => pair,
            Err(e) => (
                Err(SourceError::Git {
                    url: config.url.clone(),
                    branch: config.branch.clone(),
                    message: format!("the git task failed: {e}"),
                }),
                state.clone(),
            ),
        };
        *state = new_state;
        match result {
            Ok(snapshot) => {
                let changed = {
                    let mut latest = self.latest.lock().expect("latest lock");
                    let changed = latest.as_ref().map(|s| &s.revision) != Some(&snapshot.revision);
                    *latest = Some(snapshot.clone());
                    changed
                };
                let mut status = self.status.lock().expect("source status lock");
                if status.degraded.is_some() {
                    info!(source = %status.location, "git source recovered");
                }
                status.revision = Some(snapshot.revision);
                status.synced_at = Some(now_ms());
                status.degraded = None;
                status.failures = 0;
                Ok(changed)
            }
            Err(e) => {
                // A fresh start with an unreachable remote: fall back to the mirror on disk.
                if self.latest.lock().expect("latest lock").is_none() {
                    let config = config.clone();
                    let cached = tokio::task::spawn_blocking(move || git::cached_snapshot(&config))
                        .await
                        .ok()
                        .and_then(Result::ok);
                    if let Some(snapshot) = cached {
                        warn!(revision = %snapshot.revision, "git remote unreachable; using the revision cached on disk");
                        let mut status = self.status.lock().expect("source status lock");
                        status.revision = Some(snapshot.revision.clone());
                        *self.latest.lock().expect("latest lock") = Some(snapshot);
                    }
                }
                let mut status = self.status.lock().expect("source status lock");
                status.failures += 1;
                status.degraded = Some(e.to_string());
                warn!(failures = status.failures, "{e}");
                Err(e)
            }
        }
    }

    /// Wakes the git poll at once (the webhook's only effect). No-op for a directory.
    pub fn poll_now(&self) {
        self.poll_now.notify_one();
    }

    /// The source's background work, for the composition root to run: the directory
    /// watcher, or the git poll loop. `wake` is called when a new snapshot is there. Errors
    /// setting up a watch are returned at once (the timer pass still reads the directory).
    pub fn task(
        self: &Arc<Self>,
        wake: Waker,
    ) -> Result<Pin<Box<dyn Future<Output = ()> + Send + 'static>>, SourceError> {
        match &self.config {
            SourceConfig::Dir(path) => Ok(Box::pin(watch::watch(
                path.clone(),
                watch::WatchTiming::default(),
                wake,
            )?)),
            SourceConfig::Git(config) => {
                let source = self.clone();
                let poll = config.poll;
                Ok(Box::pin(async move {
                    loop {
                        let failures = source.status().failures;
                        let delay = git::retry_delay(poll, failures);
                        let trigger = tokio::select! {
                            _ = tokio::time::sleep(delay) => if failures > 0 { "git-retry" } else { "git-poll" },
                            _ = source.poll_now.notified() => "webhook",
                        };
                        if let Ok(true) = source.sync().await {
                            wake(if trigger == "webhook" {
                                "webhook"
                            } else {
                                "git"
                            });
                        }
                    }
                }))
            }
        }
    }
}

/// Content hash of a file set and the unreadable entries (each sorted by path): the
/// revision of a directory source. An entry becoming unreadable, readable again, or
/// unreadable for another reason changes it.
pub fn content_revision(files: &[(PathBuf, String)], unreadable: &[UnreadableEntry]) -> String {
    let mut hasher = Sha256::new();
    for (path, text) in files {
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    for entry in unreadable {
        hasher.update([1]);
        hasher.update(entry.path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(entry.reason.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..6])
}
