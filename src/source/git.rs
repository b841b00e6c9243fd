//! Git source (git2): keeps a bare mirror of one branch under the state directory, fetches
//! it (shallow where the transport allows), and reads the spec files of the fetched commit
//! (optionally below a sub-path) through the shared walker (`walk`) into a `Snapshot` whose
//! revision is the commit sha.
//! Force-pushes are followed (the fetch refspec is forced and the mirror has no local
//! branch to merge into). Remotes must prove who they are (`trust`: ssh host key, https
//! certificate); a refused or failed fetch becomes a typed `SourceError` naming the remote.
//! After a fetch the mirror is compacted when it grew (`compact`). Blocking: call from
//! `spawn_blocking`. Must not touch: Docker, nginx, the store, any working tree (the mirror
//! is bare; the remote is only read).

use super::trust::{Refusal, RemoteTrust};
use super::walk::{self, Entry, EntryTree, Fault, Kind, Name, Walked};
use super::{compact, Snapshot, SourceError, UnreadableEntry};
use crate::spec::MAX_FILE_BYTES;
use git2::{
    AutotagOption, CredentialType, ErrorClass, ErrorCode, FetchOptions, FetchPrune, ObjectType,
    Oid, RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// Poll interval when none is given.
pub const DEFAULT_POLL: Duration = Duration::from_secs(15);
/// Longest wait between retries while the remote is unreachable.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Env var holding an https token, unless `--git-token-env` names another.
pub const DEFAULT_TOKEN_ENV: &str = "BERTH_GIT_TOKEN";
const CONNECT_TIMEOUT_MS: i32 = 10_000;
const SERVER_TIMEOUT_MS: i32 = 30_000;

/// One git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConfig {
    /// Local path, `file://`, `https://`, `ssh://` or scp-like `user@host:path`.
    pub url: String,
    pub branch: String,
    /// Directory (or single file) inside the repository; empty for the root.
    pub path: PathBuf,
    pub poll: Duration,
    /// Where the bare mirrors live (one sub-directory per URL).
    pub cache_dir: PathBuf,
    /// Name of the env var holding an https token (read at every fetch, so it can rotate).
    pub token_env: Option<String>,
    /// Private key for ssh URLs (no passphrase).
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file for ssh URLs; `None`: `~/.ssh/known_hosts` when it exists. A host
    /// whose key is not listed is refused.
    pub known_hosts: Option<PathBuf>,
    /// Extra CA (PEM) trusted for https URLs, besides the system CAs.
    pub ca_file: Option<PathBuf>,
}

impl GitConfig {
    /// Defaults: branch `main`, repository root, 15 s poll, token from `$BERTH_GIT_TOKEN`.
    pub fn new(url: impl Into<String>, cache_dir: impl Into<PathBuf>) -> GitConfig {
        GitConfig {
            url: url.into(),
            branch: "main".to_string(),
            path: PathBuf::new(),
            poll: DEFAULT_POLL,
            cache_dir: cache_dir.into(),
            token_env: Some(DEFAULT_TOKEN_ENV.to_string()),
            ssh_key: None,
            known_hosts: None,
            ca_file: None,
        }
    }

    /// The known_hosts file ssh host keys are checked against: `known_hosts`, else
    /// `$HOME/.ssh/known_hosts` when it exists, else none (every host is unknown).
    pub fn known_hosts_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.known_hosts {
            return Some(path.clone());
        }
        let default = PathBuf::from(std::env::var_os("HOME")?).join(".ssh/known_hosts");
        default.exists().then_some(default)
    }

    /// `url@branch` or `url@branch:path`, without credentials.
    pub fn describe(&self) -> String {
        let url = redact_url(&self.url);
        if self.path.as_os_str().is_empty() {
            format!("{url}@{}", self.branch)
        } else {
            format!("{url}@{}:{}", self.branch, self.path.display())
        }
    }

    /// The bare mirror of this URL.
    pub fn mirror_dir(&self) -> PathBuf {
        let digest = Sha256::digest(self.url.as_bytes());
        self.cache_dir.join(hex::encode(&digest[..8]))
    }

    fn error(&self, message: impl Into<String>) -> SourceError {
        SourceError::Git {
            url: redact_url(&self.url),
            branch: self.branch.clone(),
            message: message.into(),
        }
    }
}

/// What the fetcher learned about the remote across fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitState {
    /// The transport refused a shallow fetch once: fetch full history from now on.
    pub shallow_unsupported: bool,
    /// The last fetch was shallow.
    pub last_fetch_shallow: bool,
}

/// How a URL is reached (decides credentials and whether shallow fetch is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Local,
    Http,
    Ssh,
}

pub fn transport(url: &str) -> Transport {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Transport::Http
    } else if lower.starts_with("ssh://") || lower.starts_with("git+ssh://") {
        Transport::Ssh
    } else if lower.starts_with("file://") || url.starts_with('/') || url.starts_with('.') {
        Transport::Local
    } else if let Some((user_host, _)) = url.split_once(':') {
        // scp-like `git@host:org/repo.git` (no slash before the colon).
        if !user_host.contains('/') && !user_host.is_empty() {
            Transport::Ssh
        } else {
            Transport::Local
        }
    } else {
        Transport::Local
    }
}

/// `https://user:secret@host/x` -> `https://user:***@host/x` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Wait before the next fetch: the poll interval while healthy; after `failures` failed
/// fetches in a row, the interval doubled per extra failure, capped at 5 minutes (or the
/// poll interval when that is longer).
pub fn retry_delay(poll: Duration, failures: u32) -> Duration {
    if failures <= 1 {
        return poll;
    }
    let factor = 1u32 << (failures - 1).min(16);
    let cap = MAX_RETRY_DELAY.max(poll);
    poll.saturating_mul(factor).min(cap)
}

fn set_timeouts_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain integer options, set once before any fetch from this process.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(SERVER_TIMEOUT_MS);
        }
    });
}

fn open_or_init(config: &GitConfig) -> Result<Repository, SourceError> {
    let dir = config.mirror_dir();
    if let Ok(repo) = Repository::open_bare(&dir) {
        return Ok(repo);
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        config.error(format!(
            "cannot create the mirror directory {}: {e}",
            dir.display()
        ))
    })?;
    Repository::init_bare(&dir).map_err(|e| {
        config.error(format!(
            "cannot create a bare mirror in {}: {}",
            dir.display(),
            e.message()
        ))
    })
}

fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// Which credential the last credentials callback handed out (names the failing one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Offered {
    #[default]
    Nothing,
    SshKey {
        user: String,
    },
    Token,
}

fn callbacks(
    config: &GitConfig,
    trust: &RemoteTrust,
    offered: &Arc<Mutex<Offered>>,
) -> RemoteCallbacks<'static> {
    let token_env = config.token_env.clone();
    let ssh_key = config.ssh_key.clone();
    let offered = offered.clone();
    let trust = trust.clone();
    let mut attempts = 0u32;
    let mut callbacks = RemoteCallbacks::new();
    callbacks.certificate_check(move |cert, host| trust.check(cert, host));
    callbacks.credentials(move |_url, username, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "the remote rejected the credentials 3 times",
            ));
        }
        let offer = |what: Offered| *offered.lock().expect("offered lock") = what;
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = &ssh_key {
                let user = username.unwrap_or("git");
                offer(Offered::SshKey {
                    user: user.to_string(),
                });
                return git2::Cred::ssh_key(user, None, key, None);
            }
        }
        if allowed.contains(CredentialType::USERNAME) {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let token = token_env
                .as_deref()
                .and_then(|name| std::env::var(name).ok())
                .filter(|t| !t.is_empty());
            if let Some(token) = token {
                offer(Offered::Token);
                return git2::Cred::userpass_plaintext(
                    username.unwrap_or("x-access-token"),
                    &token,
                );
            }
        }
        Err(git2::Error::from_str(&format!(
            "the remote asks for credentials: put an https token in ${} or pass --git-ssh-key for ssh",
            token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV)
        )))
    });
    callbacks
}

fn fetch(
    repo: &Repository,
    config: &GitConfig,
    shallow: bool,
    trust: &RemoteTrust,
    offered: &Arc<Mutex<Offered>>,
) -> Result<(), git2::Error> {
    let mut remote = repo.remote_anonymous(&config.url)?;
    let refspec = format!(
        "+refs/heads/{0}:{1}",
        config.branch,
        tracking_ref(&config.branch)
    );
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(config, trust, offered))
        .download_tags(AutotagOption::None)
        .prune(FetchPrune::On);
    if shallow {
        options.depth(1);
    }
    remote.fetch(&[refspec.as_str()], Some(&mut options), None)
}

/// A failed fetch as the error that says what to fix: the trust check's refusal, a
/// rejected credential, an untrusted certificate, or the remote's own message.
fn fetch_error(
    config: &GitConfig,
    error: git2::Error,
    refusal: Option<Refusal>,
    offered: Offered,
) -> SourceError {
    let url = redact_url(&config.url);
    let certificate_failure =
        error.code() == ErrorCode::Certificate || error.class() == ErrorClass::Ssl;
    match refusal {
        // The extra CA did not verify it, but the system CAs may have: only a failed
        // certificate check is about this refusal.
        Some(Refusal::CertificateUntrusted { .. }) if !certificate_failure => {}
        Some(refusal) => return refusal.into_error(url, error),
        None => {}
    }
    if certificate_failure {
        let detail = error.message().to_string();
        return SourceError::CertificateUntrusted {
            url,
            detail,
            source: error,
        };
    }
    if error.code() == ErrorCode::Auth {
        match offered {
            Offered::SshKey { user } => {
                return SourceError::SshAuth {
                    url,
                    user,
                    source: error,
                }
            }
            Offered::Token => {
                return SourceError::TokenAuth {
                    url,
                    token_env: config
                        .token_env
                        .clone()
                        .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_string()),
                    source: error,
                }
            }
            Offered::Nothing => {}
        }
    }
    config.error(error.message().to_string())
}

/// Fetches the branch and reads its commit. `state` remembers a transport that refused
/// shallow fetches.
pub fn fetch_snapshot(config: &GitConfig, state: &mut GitState) -> Result<Snapshot, SourceError> {
    set_timeouts_once();
    let repo = open_or_init(config)?;
    let trust = RemoteTrust::new(
        config.known_hosts_path(),
        config.ca_file.clone(),
        &config.url,
    );
    let offered = Arc::new(Mutex::new(Offered::Nothing));
    let shallow = !state.shallow_unsupported && transport(&config.url) != Transport::Local;
    let mut result = fetch(&repo, config, shallow, &trust, &offered);
    state.last_fetch_shallow = shallow;
    if let Err(e) = &result {
        if shallow && e.message().to_ascii_lowercase().contains("shallow") {
            state.shallow_unsupported = true;
            state.last_fetch_shallow = false;
            result = fetch(&repo, config, false, &trust, &offered);
        }
    }
    if let Err(e) = result {
        let offered = offered.lock().expect("offered lock").clone();
        return Err(fetch_error(config, e, trust.refusal(), offered));
    }
    let snapshot = read_branch(&repo, config)?;
    drop(repo);
    compact::compact_if_needed(&config.mirror_dir());
    Ok(snapshot)
}

/// The snapshot of the branch as the mirror on disk last fetched it (no network).
pub fn cached_snapshot(config: &GitConfig) -> Result<Snapshot, SourceError> {
    let repo = Repository::open_bare(config.mirror_dir())
        .map_err(|e| config.error(format!("no mirror on disk: {}", e.message())))?;
    read_branch(&repo, config)
}

fn read_branch(repo: &Repository, config: &GitConfig) -> Result<Snapshot, SourceError> {
    let reference = repo
        .find_reference(&tracking_ref(&config.branch))
        .map_err(|_| {
            config.error(format!(
                "branch {} is not on the remote: check --branch",
                config.branch
            ))
        })?;
    let oid = reference
        .peel_to_commit()
        .map_err(|e| config.error(e.message().to_string()))?
        .id();
    read_commit(repo, oid, config)
}

/// The spec files of one commit (below `config.path`), paths relative to that path, read
/// through the shared walker (`walk`). Symlinks are not followed in a git source: one with a
/// spec-file name is an unreadable entry (so is a submodule with such a name). A git object
/// that cannot be read fails the whole read (the mirror is damaged; the caller keeps the
/// last synced snapshot).
pub fn read_commit(
    repo: &Repository,
    oid: Oid,
    config: &GitConfig,
) -> Result<Snapshot, SourceError> {
    let git_err = |e: git2::Error| config.error(e.message().to_string());
    let commit = repo.find_commit(oid).map_err(git_err)?;
    let tree = commit.tree().map_err(git_err)?;
    let git_tree = GitTree { repo, config };
    let walked = if config.path.as_os_str().is_empty() || config.path == Path::new(".") {
        walk::walk(&git_tree, tree.id())?
    } else {
        let sub_path = || SourceError::SubPath {
            url: redact_url(&config.url),
            path: config.path.clone(),
            revision: oid.to_string(),
        };
        let entry = tree.get_path(&config.path).map_err(|_| sub_path())?;
        let name = config
            .path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        match entry.kind() {
            Some(ObjectType::Tree) => walk::walk(&git_tree, entry.id())?,
            Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => Walked {
                files: Vec::new(),
                unreadable: vec![UnreadableEntry {
                    path: name,
                    reason: SYMLINK_REASON.to_string(),
                }],
            },
            Some(ObjectType::Blob) => Walked {
                files: vec![(name, blob_text(repo, entry.id()).map_err(git_err)?)],
                unreadable: Vec::new(),
            },
            _ => return Err(sub_path()),
        }
    };
    Ok(Snapshot {
        revision: oid.to_string(),
        files: walked.files,
        unreadable: walked.unreadable,
    })
}

/// Git's file mode of a symlink: a blob holding the link's target.
const SYMLINK_MODE: i32 = 0o120000;
const SYMLINK_REASON: &str = "is a symlink, and berth does not follow symlinks in a git \
     source: commit the file itself at this path";

/// The trees of one repository, for the walker.
struct GitTree<'a> {
    repo: &'a Repository,
    config: &'a GitConfig,
}

impl EntryTree for GitTree<'_> {
    type Dir = Oid;
    type File = Oid;
    type Key = Oid;

    fn key(&self, dir: &Oid) -> Oid {
        *dir
    }

    fn list(&self, dir: &Oid, _rel: &Path) -> Result<Vec<Entry<Oid, Oid>>, Fault> {
        let tree = self
            .repo
            .find_tree(*dir)
            .map_err(|e| Fault::Source(self.config.error(e.message().to_string())))?;
        let entries = tree
            .iter()
            .map(|entry| {
                let name = match entry.name() {
                    Ok(name) => Name::Utf8(name.to_string()),
                    Err(_) => Name::NotUtf8(String::from_utf8_lossy(entry.name_bytes()).into()),
                };
                let kind = match entry.kind() {
                    Some(ObjectType::Tree) => Kind::Dir(entry.id()),
                    Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => {
                        Kind::Other(SYMLINK_REASON.to_string())
                    }
                    Some(ObjectType::Blob) => Kind::File(entry.id()),
                    Some(ObjectType::Commit) => Kind::Other(
                        "is a git submodule, and berth does not read submodules: commit the \
                         spec file into this repository"
                            .to_string(),
                    ),
                    _ => Kind::Other(
                        "is a git tree entry berth cannot read: commit a regular file".to_string(),
                    ),
                };
                Entry { name, kind }
            })
            .collect();
        Ok(entries)
    }

    fn read(&self, file: &Oid, _rel: &Path) -> Result<String, Fault> {
        blob_text(self.repo, *file)
            .map_err(|e| Fault::Source(self.config.error(e.message().to_string())))
    }
}

/// A blob as text. One larger than the spec limit is not loaded: the parser gets
/// `MAX_FILE_BYTES + 1` bytes of padding and refuses the file by its size, as it does for a
/// directory source (which reads only that much).
fn blob_text(repo: &Repository, id: Oid) -> Result<String, git2::Error> {
    let (size, _) = repo.odb()?.read_header(id)?;
    if size > MAX_FILE_BYTES {
        return Ok(" ".repeat(MAX_FILE_BYTES + 1));
    }
    let blob = repo.find_blob(id)?;
    Ok(String::from_utf8_lossy(blob.content()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(transport("/srv/git/apps.git"), Transport::Local);
        assert_eq!(transport("./apps"), Transport::Local);
        assert_eq!(transport("file:///srv/git/apps.git"), Transport::Local);
        assert_eq!(transport("https://example.org/a/b.git"), Transport::Http);
        assert_eq!(transport("ssh://git@example.org/a/b.git"), Transport::Ssh);
        assert_eq!(transport("git@example.org:a/b.git"), Transport::Ssh);
        assert_eq!(transport("apps"), Transport::Local);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://bot:ghp_secret@example.org/a.git"),
            "https://bot:***@example.org/a.git"
        );
        assert_eq!(redact_url("git@example.org:a.git"), "git@example.org:a.git");
        let mut config = GitConfig::new("https://u:p@h/x.git", "/tmp");
        config.path = "deploy".into();
        assert_eq!(config.describe(), "https://u:***@h/x.git@main:deploy");
    }

    #[test]
    fn retry_backs_off_and_caps() {
        let poll = Duration::from_secs(15);
        assert_eq!(retry_delay(poll, 0), poll);
        assert_eq!(retry_delay(poll, 1), poll);
        assert_eq!(retry_delay(poll, 2), Duration::from_secs(30));
        assert_eq!(retry_delay(poll, 3), Duration::from_secs(60));
        assert_eq!(retry_delay(poll, 10), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(poll, 1000), MAX_RETRY_DELAY);
        let slow = Duration::from_secs(600);
        assert_eq!(retry_delay(slow, 5), slow);
    }

    #[test]
    fn mirror_dir_depends_on_the_url_only() {
        let a = GitConfig::new("/a", "/cache");
        let mut b = GitConfig::new("/a", "/cache");
        b.branch = "other".into();
        assert_eq!(a.mirror_dir(), b.mirror_dir());
        assert_ne!(a.mirror_dir(), GitConfig::new("/b", "/cache").mirror_dir());
    }
}
