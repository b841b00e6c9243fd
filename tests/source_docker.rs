//! Sources end to end against the real Docker engine and a real (private) nginx: a watched
//! directory (drop a file -> served, edit -> rollout, delete -> removed, 20 rapid saves ->
//! one pass), a git repository (commit -> served within one poll interval, the webhook makes
//! it immediate, revert, force-push), per-app isolation (one broken spec among three keeps
//! its last good spec, status says file:line) and the deletion budget (deleting 5 of 6 app
//! files is refused). Every test has its own instance label, network, state dir and nginx
//! port, and cleans up in Drop guards.

mod support;

use berth::plan::prune::PruneVerdict;
use berth::plan::Step;
use berth::reconcile::{self, Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerState, ObservedContainer};
use berth::source::{webhook, GitConfig, SourceConfig};
use berth::store::{AppStatus, EventQuery, EventRow, EventType};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    docker_controller, ensure_images, free_port, http_get, test_settings, unique_name,
    DockerCleanup, NginxGuard,
};

/// A bare "remote" plus a work clone to commit from (git CLI).
struct Repo {
    remote: PathBuf,
    work: PathBuf,
}

fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=berth-test",
            "-c",
            "user.email=test@berth.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
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
    fn new(base: &Path) -> Repo {
        let remote = base.join("remote.git");
        let work = base.join("work");
        git(base, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(base, &["init", "-q", "-b", "main", "work"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        Repo { remote, work }
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

enum Kind {
    Dir,
    Git { poll: Duration },
}

/// Fields drop in order: nginx stops first (its pid file lives under `dir`, which is deleted
/// when `dir` drops), containers are removed last.
struct Harness {
    _nginx: NginxGuard,
    dir: tempfile::TempDir,
    ctl: Arc<Controller<DockerRuntime>>,
    settings: Settings,
    state_path: PathBuf,
    port: u16,
    repo: Option<Repo>,
    _cleanup: DockerCleanup,
}

impl Harness {
    async fn new(prefix: &str, kind: Kind) -> Harness {
        ensure_images();
        let instance = unique_name(prefix);
        let cleanup = DockerCleanup::new(&instance);
        let dir = tempfile::tempdir().unwrap();
        let specs = dir.path().join("specs");
        std::fs::create_dir(&specs).unwrap();
        let state_path = dir.path().join("state");
        let (source, repo) = match kind {
            Kind::Dir => (SourceConfig::Dir(specs), None),
            Kind::Git { poll } => {
                let repo = Repo::new(dir.path());
                let mut git = GitConfig::new(repo.remote.to_str().unwrap(), state_path.join("git"));
                git.path = "apps".into();
                git.poll = poll;
                (SourceConfig::Git(git), Some(repo))
            }
        };
        let port = free_port();
        let settings = Settings {
            interval: Duration::from_secs(3600),
            ..test_settings(&instance, source)
        };
        let ctl = docker_controller(&instance, None, &state_path, port, settings.clone()).await;
        Harness {
            dir,
            ctl,
            settings,
            _nginx: NginxGuard {
                prefix: state_path.join("nginx"),
            },
            state_path,
            port,
            repo,
            _cleanup: cleanup,
        }
    }

    fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.specs().join(file), text).unwrap();
    }

    fn repo(&self) -> &Repo {
        self.repo.as_ref().expect("a git harness")
    }

    async fn pass(&self) -> reconcile::PassReport {
        reconcile::run_pass(&self.ctl, "test").await.expect("pass")
    }

    async fn running(&self, app: &str) -> Vec<ObservedContainer> {
        self.ctl
            .runtime()
            .observe()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.app == app && c.state == ContainerState::Running)
            .collect()
    }

    /// Waits until exactly `n` containers of `app` run (an old generation may still be
    /// draining right after the new one answers).
    async fn settled(&self, app: &str, n: usize) -> Vec<ObservedContainer> {
        let start = Instant::now();
        loop {
            let running = self.running(app).await;
            if running.len() == n {
                return running;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{app}: {} running, wanted {n}",
                running.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn events(&self, app: Option<&str>, event_type: EventType) -> Vec<EventRow> {
        self.ctl
            .store()
            .events(&EventQuery {
                app: app.map(str::to_string),
                event_type: Some(event_type),
                since: None,
                before_id: None,
                limit: 50,
            })
            .await
            .unwrap()
    }

    /// Waits (off the async threads) until GET `path` answers `status` with `body` five
    /// times in a row; returns the time to the first of those answers' run.
    async fn wait_body(&self, path: &str, status: u16, body: &str, timeout: Duration) -> Duration {
        let (addr, path, body) = (
            format!("127.0.0.1:{}", self.port),
            path.to_string(),
            body.to_string(),
        );
        let start = Instant::now();
        // Several answers in a row: during a rollout both generations are upstream members.
        let mut in_a_row = 0;
        tokio::task::spawn_blocking(move || loop {
            let got = http_get(&addr, &path, None).unwrap_or((0, String::new()));
            if got.0 == status && (status != 200 || got.1 == body) {
                in_a_row += 1;
                if in_a_row == 5 {
                    return start.elapsed();
                }
                continue;
            }
            in_a_row = 0;
            assert!(
                start.elapsed() < timeout,
                "GET {path}: wanted {status} {body:?}, still {got:?} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        })
        .await
        .unwrap()
    }

    /// Runs the daemon (loop, prober, source task) in the background until the returned
    /// guard drops.
    fn serve(&self) -> support::Served {
        support::Served::start(&self.ctl, None)
    }
}

fn http_spec(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  type: http
  image: {image}
  ports:
    - containerPort: 8080
  health:
    httpGet: {{ path: /healthz, port: 8080 }}
    intervalSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 3
  replicas: 1
  termination:
    drainSeconds: 0
"#
    )
}

fn worker_spec(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  type: worker
  image: {image}
  command: ["/bin/busybox", "sh", "-c", "while true; do sleep 1; done"]
  replicas: 1
  termination:
    drainSeconds: 0
"#
    )
}

/// vim's `:w`: probe file, swap file, original renamed to a backup, new file, backup gone.
fn vim_save(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join("4913"), "").unwrap();
    std::fs::remove_file(dir.join("4913")).unwrap();
    std::fs::write(dir.join(format!(".{name}.swp")), "swap").unwrap();
    let backup = dir.join(format!("{name}~"));
    let _ = std::fs::rename(dir.join(name), &backup);
    std::fs::write(dir.join(name), text).unwrap();
    let _ = std::fs::remove_file(backup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_drop_edit_burst_of_saves_and_delete() {
    let h = Harness::new("src-dir", Kind::Dir).await;
    h.write("keep.yaml", &worker_spec("keep", "berth-demo:v1"));
    let _serve = h.serve();
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Drop a file -> served.
    h.write("web.yaml", &http_spec("web", "berth-demo:v1"));
    let took = h
        .wait_body("/web/", 200, "v1\n", Duration::from_secs(60))
        .await;
    eprintln!("dir: file dropped -> first 200 in {took:?}");

    // Edit the image -> rollout.
    h.write("web.yaml", &http_spec("web", "berth-demo:v2"));
    h.wait_body("/web/", 200, "v2\n", Duration::from_secs(60))
        .await;
    let web = &h.settled("web", 1).await[0];
    assert_eq!(web.revision, h.ctl.source().status().revision.unwrap());

    // 20 rapid saves (editor churn included) -> one pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = h.ctl.passes("file");
    let burst = Instant::now();
    for i in 0..20 {
        let image = if i == 19 {
            "berth-demo:v1"
        } else {
            "berth-demo:v2"
        };
        let text = format!("# save {i}\n{}", http_spec("web", image));
        vim_save(&h.specs(), "web.yaml", &text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(h.specs().join(".web.yaml.swp")).unwrap();
    eprintln!("dir: 20 saves took {:?}", burst.elapsed());
    h.wait_body("/web/", 200, "v1\n", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.ctl.passes("file") - before,
        1,
        "20 rapid saves give one pass"
    );

    // Delete the file -> the app is removed (1 of 2 apps: within the budget).
    std::fs::remove_file(h.specs().join("web.yaml")).unwrap();
    let start = Instant::now();
    while !h.running("web").await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "web never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.wait_body("/web/", 404, "", Duration::from_secs(30)).await;
    assert_eq!(h.running("keep").await.len(), 1);
    // The route goes first (proxy phase), the containers next, and the app-level event
    // naming the file is recorded after the pass has removed them: wait for it.
    let from_file = |events: &[EventRow]| {
        events
            .iter()
            .any(|e| e.source_file.as_deref() == Some("web.yaml"))
    };
    let recorded = Instant::now();
    let mut removed = h.events(Some("web"), EventType::Removed).await;
    while !from_file(&removed) && recorded.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        removed = h.events(Some("web"), EventType::Removed).await;
    }
    assert!(from_file(&removed), "{removed:?}");
    assert!(h.ctl.store().app("web").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_commit_is_served_within_one_poll_then_revert_and_force_push() {
    let poll = Duration::from_secs(2);
    let h = Harness::new("src-git", Kind::Git { poll }).await;
    let repo = h.repo();
    repo.write("apps/keep.yaml", &worker_spec("keep", "berth-demo:v1"));
    repo.write("README.md", "not a spec\n");
    let first = repo.commit("keep");
    let _serve = h.serve();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.ctl.source().status().revision.as_deref(),
        Some(first.as_str())
    );

    // Commit -> picked up by the poll within one interval, then served.
    repo.write("apps/web.yaml", &http_spec("web", "berth-demo:v1"));
    let v1 = repo.commit("web v1");
    let committed = Instant::now();
    let start = Instant::now();
    while h.ctl.source().status().revision.as_deref() != Some(v1.as_str()) {
        assert!(
            start.elapsed() < poll + Duration::from_secs(2),
            "not polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = committed.elapsed();
    h.wait_body("/web/", 200, "v1\n", Duration::from_secs(60))
        .await;
    eprintln!(
        "git poll ({poll:?}): commit -> fetched in {seen:?}, first 200 in {:?}",
        committed.elapsed()
    );
    let web = &h.settled("web", 1).await[0];
    assert_eq!(web.revision, v1, "the container label carries the commit");

    // A new version, then `git revert`: the previous version comes back.
    repo.write("apps/web.yaml", &http_spec("web", "berth-demo:v2"));
    repo.commit("web v2");
    h.wait_body("/web/", 200, "v2\n", Duration::from_secs(60))
        .await;
    git(&repo.work, &["revert", "--no-edit", "HEAD"]);
    git(&repo.work, &["push", "-q", "origin", "HEAD"]);
    h.wait_body("/web/", 200, "v1\n", Duration::from_secs(60))
        .await;

    // Force-push a rewritten history (with a spec no earlier commit had, so the container
    // must be a new one labelled with the rewritten commit).
    git(&repo.work, &["reset", "-q", "--hard", &v1]);
    let forced = http_spec("web", "berth-demo:v2").replace(
        "  replicas: 1\n",
        "  replicas: 1\n  env:\n    - name: PUSH\n      value: forced\n",
    );
    repo.write("apps/web.yaml", &forced);
    let rewritten = repo.commit("rewritten");
    h.wait_body("/web/", 200, "v2\n", Duration::from_secs(60))
        .await;
    let web = h.settled("web", 1).await;
    assert_eq!(web[0].revision, rewritten);
    // The pass records the revision's outcome when it ends.
    let start = Instant::now();
    loop {
        let revisions = h.ctl.store().revisions(20).await.unwrap();
        if revisions.iter().any(|r| r.revision == rewritten) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{revisions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_webhook_makes_the_poll_immediate() {
    // A poll far longer than the test: only the webhook can bring the commit in.
    let h = Harness::new(
        "src-hook",
        Kind::Git {
            poll: Duration::from_secs(3600),
        },
    )
    .await;
    let repo = h.repo();
    repo.write("apps/keep.yaml", &worker_spec("keep", "berth-demo:v1"));
    repo.commit("keep");
    let secret = b"berth-test-webhook-secret".to_vec();
    let (addr, hook) = webhook::bind("127.0.0.1:0", secret.clone(), h.ctl.source().clone())
        .await
        .map(|(addr, task)| (addr, tokio::spawn(task)))
        .unwrap();
    let _serve = h.serve();
    tokio::time::sleep(Duration::from_millis(500)).await;

    repo.write("apps/web.yaml", &http_spec("web", "berth-demo:v1"));
    let v1 = repo.commit("web v1");
    let committed = Instant::now();
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let signature = webhook::sign(&secret, &body);
    let status = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            webhook::PATH,
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    h.wait_body("/web/", 200, "v1\n", Duration::from_secs(60))
        .await;
    eprintln!(
        "git webhook: commit -> first 200 in {:?}",
        committed.elapsed()
    );
    assert_eq!(
        h.ctl.source().status().revision.as_deref(),
        Some(v1.as_str())
    );
    // The change may have been applied by a pass already running (a confirming pass reads
    // the fresh snapshot too); the webhook's own wake-up still leads to a pass of its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.ctl.passes("webhook") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.ctl.passes("webhook") >= 1);
    hook.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broken_spec_among_three_keeps_its_last_good_spec() {
    let h = Harness::new(
        "src-iso",
        Kind::Git {
            poll: Duration::from_secs(3600),
        },
    )
    .await;
    let repo = h.repo();
    repo.write("apps/a.yaml", &http_spec("a", "berth-demo:v1"));
    repo.write("apps/b.yaml", &worker_spec("b", "berth-demo:v1"));
    repo.write("apps/c.yaml", &http_spec("c", "berth-demo:v1"));
    let good = repo.commit("three apps");
    h.ctl.source().sync().await.unwrap();
    let first = h.pass().await;
    assert_eq!(first.steps_failed, 0, "{first:?}");
    h.pass().await; // converged: records the last good specs
    let c_before = h.running("c").await;
    assert_eq!(c_before.len(), 1);
    assert_eq!(
        h.ctl.store().app("c").await.unwrap().unwrap().status,
        AppStatus::Synced
    );

    // One commit: a and b move to v2, c gets an invalid field.
    repo.write("apps/a.yaml", &http_spec("a", "berth-demo:v2"));
    repo.write("apps/b.yaml", &worker_spec("b", "berth-demo:v2"));
    repo.write(
        "apps/c.yaml",
        &http_spec("c", "berth-demo:v2")
            .replace("  replicas: 1\n", "  replicas: 1\n  replica: 3\n"),
    );
    let broken = repo.commit("a, b v2; c broken");
    assert!(h.ctl.source().sync().await.unwrap());
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    assert_eq!(report.revision, broken);
    h.wait_body("/a/", 200, "v2\n", Duration::from_secs(5))
        .await;
    assert_eq!(h.running("b").await[0].image, "berth-demo:v2");
    assert_eq!(h.running("b").await[0].revision, broken);
    // c keeps running its last good spec, untouched.
    let c_after = h.running("c").await;
    assert_eq!(c_after.len(), 1);
    assert_eq!(c_after[0].id, c_before[0].id);
    h.wait_body("/c/", 200, "v1\n", Duration::from_secs(5))
        .await;
    let row = h.ctl.store().app("c").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Quarantined);
    let why = row.last_error.unwrap();
    assert!(why.starts_with("c.yaml:"), "status says file:line: {why}");
    assert!(why.contains("replica"), "{why}");
    let events = h.events(Some("c"), EventType::Quarantined).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].source_file.as_deref(), Some("c.yaml"));
    assert_eq!(events[0].revision.as_deref(), Some(broken.as_str()));
    assert!(events[0].message.contains(&good), "{}", events[0].message);

    // Still reconciling on the last good spec: a container removed by hand comes back,
    // labelled with the revision of that spec.
    let rm = Command::new("docker")
        .args(["rm", "-f", &c_after[0].id])
        .output()
        .unwrap();
    assert!(rm.status.success());
    let start = Instant::now();
    while h.running("c").await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "c never healed");
        h.pass().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let healed = &h.running("c").await[0];
    assert_eq!(healed.image, "berth-demo:v1");
    assert_eq!(healed.revision, good);
    h.wait_body("/c/", 200, "v1\n", Duration::from_secs(10))
        .await;

    // Fixed: c updates too, status clears.
    repo.write("apps/c.yaml", &http_spec("c", "berth-demo:v2"));
    repo.commit("c fixed");
    h.ctl.source().sync().await.unwrap();
    h.pass().await;
    h.wait_body("/c/", 200, "v2\n", Duration::from_secs(5))
        .await;
    h.pass().await;
    let row = h.ctl.store().app("c").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Synced, "{:?}", row.last_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_five_of_six_files_is_refused_and_an_unparseable_file_keeps_its_app() {
    let h = Harness::new("src-budget", Kind::Dir).await;
    let apps = ["a1", "a2", "a3", "a4", "a5", "a6"];
    for app in apps {
        h.write(&format!("{app}.yaml"), &worker_spec(app, "berth-demo:v1"));
    }
    h.pass().await;
    h.pass().await;
    for app in apps {
        assert_eq!(h.running(app).await.len(), 1, "{app}");
    }

    // A file that fails to parse does not remove its app.
    h.write(
        "a6.yaml",
        "apiVersion: v1\nkind: App\nmetadata: [unclosed\n",
    );
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0);
    assert_eq!(h.running("a6").await.len(), 1);
    let row = h.ctl.store().app("a6").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Quarantined);
    assert!(row.last_error.unwrap().contains("a6.yaml"));
    h.write("a6.yaml", &worker_spec("a6", "berth-demo:v1"));

    // Five of six files deleted at once: refused, nothing removed, one event.
    for app in &apps[..5] {
        std::fs::remove_file(h.specs().join(format!("{app}.yaml"))).unwrap();
    }
    h.pass().await;
    h.pass().await;
    for app in apps {
        assert_eq!(h.running(app).await.len(), 1, "{app} kept");
    }
    let refused = h
        .events(None, EventType::Other("prune-refused".into()))
        .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].message.contains("a1, a2, a3, a4, a5"),
        "{}",
        refused[0].message
    );
    assert!(refused[0].message.contains("--allow-mass-prune"));
    let last = h.ctl.last_pass().unwrap();
    assert!(matches!(last.prune, Some(PruneVerdict::Refused { .. })));
    // The plan says the true cause for each app it keeps.
    let kept = last.plan.steps.iter().find_map(|step| match step {
        Step::NoOp { app, reason } if app == "a1" => Some(reason.clone()),
        _ => None,
    });
    let kept = kept.expect("a no-op step for a1");
    assert!(
        kept.starts_with("kept running: the deletion budget refused"),
        "{kept}"
    );

    // The same host with --allow-mass-prune: the five go.
    let mut settings = h.settings.clone();
    settings.deletion_budget.allow_mass_prune = true;
    let instance = h._cleanup.instance.clone();
    let allowed = docker_controller(&instance, None, &h.state_path, h.port, settings).await;
    let report = reconcile::run_pass(&allowed, "test").await.unwrap();
    assert_eq!(report.steps_failed, 0, "{report:?}");
    for app in &apps[..5] {
        assert!(h.running(app).await.is_empty(), "{app} removed");
    }
    assert_eq!(h.running("a6").await.len(), 1);
}

#[tokio::test]
async fn an_empty_source_never_prunes_everything() {
    let h = Harness::new("src-empty", Kind::Dir).await;
    h.write("a.yaml", &worker_spec("a", "berth-demo:v1"));
    h.pass().await;
    std::fs::remove_file(h.specs().join("a.yaml")).unwrap();
    h.pass().await;
    assert_eq!(h.running("a").await.len(), 1);
    let refused = h
        .events(None, EventType::Other("prune-refused".into()))
        .await;
    assert!(refused[0].message.contains("the source has no apps"));
}

/// Regression: the last good spec was recorded a pass late (only once an app was seen
/// synced), so breaking web.yaml right after v2 answered quarantined web on v1 and rolled it
/// back. The last good spec is now the last one that parsed and validated, recorded in the
/// pass that read it: a quarantined app never moves backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_right_after_a_rollout_never_rolls_back() {
    let h = Harness::new("src-noback", Kind::Dir).await;
    h.write("web.yaml", &http_spec("web", "berth-demo:v1"));
    let first = h.pass().await;
    assert_eq!(first.steps_failed, 0, "{first:?}");
    h.pass().await;
    h.wait_body("/web/", 200, "v1\n", Duration::from_secs(10))
        .await;

    // v2, and the pass that rolls it out is the only one before the file breaks.
    h.write("web.yaml", &http_spec("web", "berth-demo:v2"));
    let rolled = h.pass().await;
    assert_eq!(rolled.steps_failed, 0, "{rolled:?}");
    h.wait_body("/web/", 200, "v2\n", Duration::from_secs(10))
        .await;
    let v2_hash = h.ctl.store().app("web").await.unwrap().unwrap().spec_hash;
    let row = h.ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(
        row.last_good_hash.as_deref(),
        Some(v2_hash.as_str()),
        "the pass that read v2 records it as the last good spec"
    );

    // Broken (unknown field) before any confirming pass.
    h.write(
        "web.yaml",
        &http_spec("web", "berth-demo:v3")
            .replace("  replicas: 1\n", "  replicas: 1\n  replica: 3\n"),
    );
    let v2_ids: Vec<String> = h
        .settled("web", 1)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    for _ in 0..3 {
        let report = h.pass().await;
        assert_eq!(report.steps_failed, 0, "{report:?}");
    }
    let running = h.settled("web", 1).await;
    assert_eq!(
        running[0].image, "berth-demo:v2",
        "quarantined on v2, not rolled back"
    );
    assert_eq!(
        running.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        v2_ids,
        "the v2 container is untouched"
    );
    h.wait_body("/web/", 200, "v2\n", Duration::from_secs(5))
        .await;
    let row = h.ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Quarantined);
    assert_eq!(row.last_good_hash.as_deref(), Some(v2_hash.as_str()));
}

/// A route-only edit (no container change) is the app's last good spec from the pass that
/// read it: a broken edit right after keeps the app on the new route, not the one before.
#[tokio::test]
async fn a_broken_edit_after_a_route_only_edit_keeps_the_new_route() {
    let h = Harness::new("src-route", Kind::Dir).await;
    h.write("web.yaml", &http_spec("web", "berth-demo:v1"));
    let first = h.pass().await;
    assert_eq!(first.steps_failed, 0, "{first:?}");
    h.pass().await;
    h.wait_body("/web/", 200, "v1\n", Duration::from_secs(10))
        .await;
    let hash = h.ctl.store().app("web").await.unwrap().unwrap().spec_hash;

    // Only the route moves: same containers, new path.
    let moved = format!(
        "{}  route:\n    path: /moved\n",
        http_spec("web", "berth-demo:v1")
    );
    h.write("web.yaml", &moved);
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    h.wait_body("/moved/", 200, "v1\n", Duration::from_secs(10))
        .await;
    let row = h.ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.spec_hash, hash, "a route edit restarts no container");
    assert!(
        row.last_good_spec_json
            .as_deref()
            .is_some_and(|spec| spec.contains("/moved")),
        "the pass that read the route edit records it as the last good spec: {:?}",
        row.last_good_spec_json
    );

    // Broken (unknown field) right after.
    h.write(
        "web.yaml",
        &moved.replace("  replicas: 1\n", "  replicas: 1\n  replica: 3\n"),
    );
    for _ in 0..2 {
        let report = h.pass().await;
        assert_eq!(report.steps_failed, 0, "{report:?}");
    }
    let row = h.ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Quarantined);
    h.wait_body("/moved/", 200, "v1\n", Duration::from_secs(5))
        .await;
}
