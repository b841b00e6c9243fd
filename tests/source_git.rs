//! The git source against real repositories made with the git CLI in temp dirs: sub-path,
//! new commits, revert, force-push, branches, file:// URLs, unreachable remotes (keep the
//! last revision, degraded, back on recovery, offline restart from the mirror), the poll
//! loop and the signed webhook. No network: every remote is a local bare repository.

use berth::source::webhook;
use berth::source::{GitConfig, Source, SourceConfig, Waker};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bare "remote" plus a work clone to commit from.
struct Repo {
    _dir: tempfile::TempDir,
    remote: PathBuf,
    work: PathBuf,
    cache: PathBuf,
}

fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=berth-test",
            "-c",
            "user.email=test@berth.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the git CLI is installed");
    assert!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        let work = dir.path().join("work");
        let cache = dir.path().join("cache");
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        Repo {
            _dir: dir,
            remote,
            work,
            cache,
        }
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Commits everything and pushes `branch`; returns the commit sha.
    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn config(&self) -> GitConfig {
        let mut config = GitConfig::new(self.remote.to_str().unwrap(), &self.cache);
        config.poll = Duration::from_secs(60);
        config
    }
}

fn names(source_files: &[(PathBuf, String)]) -> Vec<String> {
    source_files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect()
}

#[tokio::test]
async fn sub_path_new_commits_revert_and_force_push() {
    let repo = Repo::new();
    repo.write("deploy/web.yaml", "image: v1\n");
    repo.write("deploy/nested/jobs.yml", "image: j1\n");
    repo.write("deploy/.hidden.yaml", "no\n");
    repo.write("deploy/web.yaml~", "no\n");
    repo.write("README.md", "not a spec\n");
    repo.write("other/x.yaml", "outside the path\n");
    let first = repo.commit("first");
    let mut config = repo.config();
    config.path = "deploy".into();
    let source = Source::new(SourceConfig::Git(config));

    let snap = source.snapshot().await.unwrap();
    assert_eq!(snap.revision, first);
    assert_eq!(names(&snap.files), vec!["nested/jobs.yml", "web.yaml"]);
    assert_eq!(snap.files[1].1, "image: v1\n");
    assert!(!source.sync().await.unwrap(), "nothing new");

    repo.write("deploy/web.yaml", "image: v2\n");
    let second = repo.commit("v2");
    assert!(source.sync().await.unwrap());
    let snap = source.snapshot().await.unwrap();
    assert_eq!(snap.revision, second);
    assert_eq!(snap.files[1].1, "image: v2\n");

    // Revert: the previous content comes back under a new revision.
    git(&repo.work, &["revert", "--no-edit", "HEAD"]);
    git(&repo.work, &["push", "-q", "origin", "HEAD"]);
    let reverted = git(&repo.work, &["rev-parse", "HEAD"]);
    assert!(source.sync().await.unwrap());
    let snap = source.snapshot().await.unwrap();
    assert_eq!(snap.revision, reverted);
    assert_eq!(snap.files[1].1, "image: v1\n");

    // Force-push a rewritten history: the mirror follows it.
    git(&repo.work, &["reset", "-q", "--hard", &first]);
    repo.write("deploy/web.yaml", "image: rewritten\n");
    let rewritten = repo.commit("rewritten");
    assert!(source.sync().await.unwrap());
    let snap = source.snapshot().await.unwrap();
    assert_eq!(snap.revision, rewritten);
    assert_eq!(snap.files[1].1, "image: rewritten\n");
    let status = source.status();
    assert_eq!(status.revision.as_deref(), Some(rewritten.as_str()));
    assert_eq!(status.degraded, None);
}

#[tokio::test]
async fn file_url_branch_and_single_file_path() {
    let repo = Repo::new();
    repo.write("apps.yaml", "a: 1\n");
    repo.commit("main");
    git(&repo.work, &["checkout", "-q", "-b", "release"]);
    repo.write("apps.yaml", "a: release\n");
    let release = repo.commit("release");
    let mut config = repo.config();
    config.url = format!("file://{}", repo.remote.display());
    config.branch = "release".into();
    config.path = "apps.yaml".into();
    let source = Source::new(SourceConfig::Git(config));
    let snap = source.snapshot().await.unwrap();
    assert_eq!(snap.revision, release);
    assert_eq!(
        snap.files,
        vec![(PathBuf::from("apps.yaml"), "a: release\n".to_string())]
    );
}

#[tokio::test]
async fn missing_branch_and_missing_path_say_what_to_fix() {
    let repo = Repo::new();
    repo.write("a.yaml", "a: 1\n");
    repo.commit("one");
    let mut config = repo.config();
    config.branch = "nope".into();
    let err = Source::new(SourceConfig::Git(config))
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("branch nope is not on the remote"), "{err}");
    assert!(err.contains("check --branch"), "{err}");

    let mut config = repo.config();
    config.path = "deploy".into();
    let err = Source::new(SourceConfig::Git(config))
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("path deploy does not exist"), "{err}");
}

#[tokio::test]
async fn unreachable_remote_keeps_the_last_revision_then_recovers() {
    let repo = Repo::new();
    repo.write("a.yaml", "a: 1\n");
    let first = repo.commit("one");
    let source = Source::new(SourceConfig::Git(repo.config()));
    assert_eq!(source.snapshot().await.unwrap().revision, first);

    // The remote goes away.
    let moved = repo.remote.with_extension("gone");
    std::fs::rename(&repo.remote, &moved).unwrap();
    let err = source.sync().await.unwrap_err().to_string();
    assert!(err.contains("cannot sync git repository"), "{err}");
    assert!(source.sync().await.is_err());
    let status = source.status();
    assert_eq!(status.failures, 2);
    assert!(status.degraded.is_some());
    assert_eq!(status.revision.as_deref(), Some(first.as_str()));
    assert_eq!(source.snapshot().await.unwrap().revision, first);

    // A restart while it is down serves the commit the mirror on disk holds.
    let restarted = Source::new(SourceConfig::Git(repo.config()));
    let snap = restarted.snapshot().await.unwrap();
    assert_eq!(snap.revision, first);
    assert!(restarted.status().degraded.is_some());

    // Back, with a new commit meanwhile.
    std::fs::rename(&moved, &repo.remote).unwrap();
    repo.write("a.yaml", "a: 2\n");
    let second = repo.commit("two");
    assert!(source.sync().await.unwrap());
    let status = source.status();
    assert_eq!(status.failures, 0);
    assert_eq!(status.degraded, None);
    assert_eq!(source.snapshot().await.unwrap().revision, second);

    // A fresh start with no mirror and no remote is an error that says what to check.
    let nowhere = Source::new(SourceConfig::Git(GitConfig::new(
        repo.work.join("missing.git").to_str().unwrap(),
        repo.cache.join("other"),
    )));
    let err = nowhere.snapshot().await.unwrap_err().to_string();
    assert!(
        err.contains("check the URL, branch and credentials"),
        "{err}"
    );
}

fn counting_waker() -> (Waker, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    (
        Arc::new(move |_reason| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
        count,
    )
}

async fn wait_for(count: &AtomicU64, at_least: u64, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if count.load(Ordering::SeqCst) >= at_least {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// POSTs `body` to the webhook on loopback with optional headers; returns the status code.
fn post(addr: std::net::SocketAddr, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        webhook::PATH,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn poll_loop_picks_up_a_commit_within_one_interval() {
    let repo = Repo::new();
    repo.write("a.yaml", "a: 1\n");
    repo.commit("one");
    let mut config = repo.config();
    config.poll = Duration::from_millis(500);
    let source = Source::new(SourceConfig::Git(config));
    source.snapshot().await.unwrap();
    let (waker, wakes) = counting_waker();
    let _tasks = tokio::spawn(source.task(waker).unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(wakes.load(Ordering::SeqCst), 0, "no commit, no wake");
    repo.write("a.yaml", "a: 2\n");
    let second = repo.commit("two");
    let took = wait_for(&wakes, 1, Duration::from_secs(5)).await;
    assert!(took.is_some(), "the poll loop never saw the commit");
    assert!(took.unwrap() < Duration::from_millis(1500), "{took:?}");
    assert_eq!(source.snapshot().await.unwrap().revision, second);
}

#[tokio::test]
async fn a_signed_webhook_polls_at_once_and_an_unsigned_one_is_refused() {
    let repo = Repo::new();
    repo.write("a.yaml", "a: 1\n");
    repo.commit("one");
    // A poll interval far longer than the test: only the webhook can make it fetch.
    let mut config = repo.config();
    config.poll = Duration::from_secs(3600);
    let source = Source::new(SourceConfig::Git(config));
    source.snapshot().await.unwrap();
    let (waker, wakes) = counting_waker();
    let _tasks = tokio::spawn(source.task(waker).unwrap());
    let secret = b"0123456789abcdef-test-secret".to_vec();
    let (addr, hook) = webhook::bind("127.0.0.1:0", secret.clone(), source.clone())
        .await
        .map(|(addr, task)| (addr, tokio::spawn(task)))
        .unwrap();

    repo.write("a.yaml", "a: 2\n");
    let second = repo.commit("two");
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let unsigned = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || post(addr, &[], &body))
            .await
            .unwrap()
    };
    assert_eq!(unsigned, 401);
    let forged = {
        let body = body.clone();
        let sig = webhook::sign(b"not the secret at all", &body);
        tokio::task::spawn_blocking(move || post(addr, &[("X-Hub-Signature-256", sig)], &body))
            .await
            .unwrap()
    };
    assert_eq!(forged, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        wakes.load(Ordering::SeqCst),
        0,
        "refused calls change nothing"
    );

    let sig = webhook::sign(&secret, &body);
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        post(
            addr,
            &[
                ("X-GitHub-Event", "push".to_string()),
                ("X-Hub-Signature-256", sig),
            ],
            &body,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 202);
    assert!(wait_for(&wakes, 1, Duration::from_secs(5)).await.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(source.snapshot().await.unwrap().revision, second);
    hook.abort();
}

#[tokio::test]
async fn a_short_webhook_secret_is_refused() {
    let source = Source::new(SourceConfig::Dir(PathBuf::from(".")));
    let err = match webhook::bind("127.0.0.1:0", b"short".to_vec(), source).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a short secret was accepted"),
    };
    assert!(err.contains("shorter than 16 bytes"), "{err}");
}

#[test]
fn cli_plans_from_a_git_repository_and_refuses_dir_with_git() {
    let repo = Repo::new();
    repo.write(
        "apps/web.yaml",
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: berth-demo:v1\n  ports:\n    - containerPort: 8080\n",
    );
    repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let berth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("BERTH_STATE_DIR", state.path())
            .output()
            .unwrap()
    };
    let url = format!("file://{}", repo.remote.display());
    let out = berth(&[
        "plan",
        "--observed-empty",
        "--git",
        &url,
        "--branch",
        "main",
        "--path",
        "apps",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("+ web: create container"), "{text}");
    assert!(
        state.path().join("git").is_dir(),
        "the mirror lives in the state dir"
    );

    let out = berth(&["plan", "--observed-empty", "--git", &url, "--dir", "x"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));

    let out = berth(&["serve", "--dir", ".", "--webhook-listen", "127.0.0.1:0"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--git"));
}
