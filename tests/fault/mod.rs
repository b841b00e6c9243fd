//! Fault scenarios shared by the bounded fault suite (tests/fault_docker.rs, in CI) and the
//! long versions in the compare bench (`cargo bench --bench compare -- --only faults`).
//! Include next to the shared support module: `mod support; mod fault;` (the bench uses
//! `#[path]` for both).
//!
//! Owns: what a fault does with the shared `support::Scene` (instance label and network,
//! state dir with the private nginx, spec dir, nginx port), the `berth serve` child killed
//! with SIGKILL, the
//! kill-rounds scenario with its convergence check, and the cuttable Docker socket.
//! Must not touch: anything outside the scene's instance label, network and temp dirs.
#![allow(dead_code)]

pub use crate::support::Scene;
use crate::support::{docker_controller, path_with_sbin, test_settings};
use berth::reconcile::{Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerState, ObservedContainer};
use berth::source::SourceConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An http app on a demo image: health every second, no drain (faults want short passes).
pub fn app_spec(name: &str, image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  image: {image}
  ports:
    - containerPort: 8080
  health:
    httpGet: {{ path: /healthz, port: 8080 }}
    intervalSeconds: 1
    timeoutSeconds: 1
  replicas: {replicas}
  termination:
    drainSeconds: 0
"#
    )
}

/// The fault scenarios' use of the shared [`Scene`]: a controller with short timers, their
/// app spec, and `berth serve` as a child process.
impl Scene {
    /// An in-process controller for this scene (through `docker_host` when given).
    pub async fn controller(&self, docker_host: Option<&str>) -> Arc<Controller<DockerRuntime>> {
        let settings = Settings {
            stop_timeout_seconds: 1,
            ..test_settings(
                &self.instance,
                SourceConfig::Dir(self.specs.path().to_path_buf()),
            )
        };
        docker_controller(
            &self.instance,
            docker_host,
            self.state.path(),
            self.port,
            settings,
        )
        .await
    }

    pub fn write(&self, app: &str, image: &str, replicas: u32) {
        std::fs::write(
            self.specs.path().join(format!("{app}.yaml")),
            app_spec(app, image, replicas),
        )
        .unwrap();
    }

    pub fn serve_log(&self) -> PathBuf {
        self.state.path().join("serve.log")
    }

    /// Starts `berth serve` (the real binary) on this scene, its stderr appended to
    /// [`Scene::serve_log`].
    pub fn serve(&self) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "serve",
                "--dir",
                self.specs.path().to_str().unwrap(),
                "--state-dir",
                self.state.path().to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--instance",
                &self.instance,
                "--network",
                &self.instance,
                "--interval",
                "1",
                "--api-listen",
                "off",
                "--no-autoscale",
                "--stop-timeout",
                "1",
            ])
            .env("PATH", path_with_sbin())
            .stdout(Stdio::null())
            .env("NO_COLOR", "1")
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.serve_log())
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    }
}

pub async fn containers(ctl: &Controller<DockerRuntime>) -> Vec<ObservedContainer> {
    ctl.runtime().observe().await.unwrap()
}

/// Deterministic pseudo-random numbers (xorshift), so a failing run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Kills the `berth serve` child with SIGKILL when dropped.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What [`kill_rounds`] saw.
#[derive(Debug, Clone)]
pub struct KillReport {
    /// `berth serve` starts, each killed with SIGKILL after 0–1.5 s.
    pub kills: usize,
    /// Kills that landed while a pass was applying changes: the round's log has a line from
    /// inside a step (`:step{` span) after its last "pass applied changes".
    pub kills_mid_pass: usize,
    /// From the last start to every app at its wanted image and count, served through nginx.
    pub converge_after_restart: Duration,
    /// Containers at the end (all running, names unique, exactly as wanted).
    pub containers: usize,
}

/// The kill -9 scenario: `rounds` times, change the specs of `apps` (random image and
/// 1–3 replicas), start `berth serve`, SIGKILL it after 0–1.5 s (during creates, health
/// gates, reloads, removals). Then start it once more and require convergence within
/// `limit`: every app at its wanted image and count, running and served through nginx,
/// no container of another app, no duplicate names, nothing stopped left over.
pub async fn kill_rounds(
    scene: &Scene,
    apps: &[&str],
    rounds: usize,
    rng: &mut Rng,
    limit: Duration,
) -> Result<KillReport, String> {
    let log = scene.serve_log();
    let mut child = ChildGuard(None);
    let mut wanted: BTreeMap<String, (&str, u32)> = BTreeMap::new();
    let mut kills_mid_pass = 0;
    for round in 0..rounds {
        for app in apps {
            let image = if rng.next(2) == 0 {
                "berth-demo:v1"
            } else {
                "berth-demo:v2"
            };
            let replicas = 1 + rng.next(3) as u32;
            wanted.insert(app.to_string(), (image, replicas));
            scene.write(app, image, replicas);
        }
        let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        child.0 = Some(scene.serve());
        let delay = Duration::from_millis(rng.next(1500));
        tokio::time::sleep(delay).await;
        child.kill9();
        let text = std::fs::read(&log).unwrap_or_default();
        let round_text = String::from_utf8_lossy(&text[(log_before as usize).min(text.len())..]);
        let lines: Vec<&str> = round_text.lines().collect();
        let last_step = lines.iter().rposition(|l| l.contains(":step{"));
        let last_finish = lines
            .iter()
            .rposition(|l| l.contains("pass applied changes"));
        if last_step.is_some_and(|step| last_finish.is_none_or(|finish| finish < step)) {
            kills_mid_pass += 1;
        }
        if rounds <= 20 {
            eprintln!("round {round}: killed after {delay:?}");
        }
    }

    // Last start: it must converge with nothing left over.
    let restarted = Instant::now();
    child.0 = Some(scene.serve());
    let ctl_view = scene.controller(None).await;
    let converged = loop {
        let seen = containers(&ctl_view).await;
        let exact = wanted.iter().all(|(app, (image, replicas))| {
            let mine: Vec<_> = seen.iter().filter(|c| &c.app == app).collect();
            mine.len() == *replicas as usize
                && mine
                    .iter()
                    .all(|c| c.image == *image && c.state == ContainerState::Running)
        }) && seen.iter().all(|c| wanted.contains_key(&c.app));
        if exact && apps.iter().all(|app| scene.get(&format!("/{app}/")) == 200) {
            break true;
        }
        if restarted.elapsed() > limit {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let converge_after_restart = restarted.elapsed();
    child.kill9();
    let seen = containers(&ctl_view).await;
    if !converged {
        // Which app did not converge, and how: its containers against what was wanted and
        // what its route answers through nginx; then the last start's own log lines.
        let mut apps_text = String::new();
        for (app, (image, replicas)) in &wanted {
            let mine: Vec<_> = seen.iter().filter(|c| &c.app == app).collect();
            let ok = mine.len() == *replicas as usize
                && mine
                    .iter()
                    .all(|c| c.image == *image && c.state == ContainerState::Running);
            let status = scene.get(&format!("/{app}/"));
            apps_text.push_str(&format!(
                "{} {app}: wanted {replicas} x {image}, route answers {status}, has {:?}\n",
                if ok && status == 200 { "ok  " } else { "FAIL" },
                mine.iter()
                    .map(|c| (&c.name, &c.image, c.state))
                    .collect::<Vec<_>>(),
            ));
        }
        let foreign: Vec<_> = seen
            .iter()
            .filter(|c| !wanted.contains_key(&c.app))
            .map(|c| &c.name)
            .collect();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let problems: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains("error") || l.contains("WARN") || l.contains("ERROR"))
            .copied()
            .collect();
        let problems = &problems[problems.len().saturating_sub(20)..];
        let tail = &lines[lines.len().saturating_sub(40)..];
        return Err(format!(
            "not converged {limit:?} after restart\n{apps_text}containers of no wanted app: {foreign:?}\nlast warnings and errors:\n{}\nlast 40 log lines:\n{}",
            problems.join("\n"),
            tail.join("\n")
        ));
    }
    // No duplicates: the count per app is exact (checked above); no orphans: nothing else
    // carries the instance label, nothing stopped is left.
    let all = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.instance={}", scene.instance),
            "--format",
            "{{.Names}} {{.State}}",
        ])
        .output()
        .map_err(|e| format!("docker ps: {e}"))?;
    let listed = String::from_utf8_lossy(&all.stdout);
    if !listed.lines().all(|l| l.ends_with(" running")) || listed.lines().count() != seen.len() {
        return Err(format!("left-over containers:\n{listed}"));
    }
    Ok(KillReport {
        kills: rounds,
        kills_mid_pass,
        converge_after_restart,
        containers: seen.len(),
    })
}

/// A unix-socket forwarder to the real engine that can be cut and restored.
pub struct DockerLink {
    pub path: PathBuf,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl DockerLink {
    pub fn start(path: PathBuf) -> DockerLink {
        assert!(
            Path::new("/var/run/docker.sock").exists(),
            "the cuttable link forwards to /var/run/docker.sock, which does not exist"
        );
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    // Copy until either side closes, or the link is cut.
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut engine);
                    let cut = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {},
                        _ = cut => {},
                    }
                });
            }
        });
        DockerLink { path, up, task }
    }

    /// `unix://` address for `DOCKER_HOST`-style use.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for DockerLink {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The hostile spec corpus: (file name, contents) — an alias bomb, 10k-deep flow nesting,
/// 1k-deep block nesting (10k levels of block indentation cannot fit under the 1 MiB size
/// cap), a 5 MB file, an invalid name, path traversal in a name, a duplicate of `web` and a
/// wrong type.
pub fn hostile_corpus() -> Vec<(String, String)> {
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    vec![
        ("bomb.yaml", bomb),
        (
            "flow.yaml",
            format!("a: {}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        // 1,000 levels (~0.5 MB): under the size cap, so the block-depth screen answers.
        (
            "block.yaml",
            (0..1_000)
                .map(|depth| format!("{}k:\n", " ".repeat(depth)))
                .collect(),
        ),
        ("huge.yaml", "# padding\n".repeat(500_000)),
        ("badname.yaml", app_spec("Bad_Name", "berth-demo:v1", 1)),
        ("traversal.yaml", app_spec("../../etc", "berth-demo:v1", 1)),
        ("dup.yaml", app_spec("web", "berth-demo:v2", 3)),
        (
            "types.yaml",
            app_spec("typed", "berth-demo:v1", 1).replace("replicas: 1", "replicas: many"),
        ),
    ]
    .into_iter()
    .map(|(file, text): (&str, String)| (file.to_string(), text))
    .collect()
}
