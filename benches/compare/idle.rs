//! The idle cost of the daemon: the real `berth serve` binary (release build) on
//! examples/apps (3 apps, 4 containers, default settings: passes every 5 s, probes on each
//! app's interval, the autoscaler every 15 s), once converged, its CPU (utime + stime from
//! /proc/<pid>/stat) over 60 s; with the watched directory and with a git source (a local
//! bare repository polled every 15 s, the default). Everything on its own instance label, state dir and
//! ports; the child is stopped with SIGTERM and its containers and nginx removed by the
//! scene's guards.

use crate::support::{cpu_seconds_of, free_port, http_status, path_with_sbin, Scene};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the converged daemon is watched.
const WINDOW: Duration = Duration::from_secs(60);

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@127.0.0.1"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// (CPU % of one core over the window, RSS MiB at its end).
fn measure(use_git: bool) -> (f64, f64) {
    let scene = Scene::new(if use_git {
        "bench-idle-git"
    } else {
        "bench-idle"
    });
    for entry in std::fs::read_dir("examples/apps").expect("examples/apps") {
        let path = entry.unwrap().path();
        std::fs::copy(&path, scene.specs.path().join(path.file_name().unwrap())).unwrap();
    }
    let source = if use_git {
        let bare = scene.state.path().join("repo.git");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let work = scene.specs.path();
        git(work, &["init", "-q", "-b", "main"]);
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", "apps"]);
        git(work, &["push", "-q", bare.to_str().unwrap(), "main"]);
        vec![
            "--git".to_string(),
            format!("file://{}", bare.display()),
            "--branch".into(),
            "main".into(),
        ]
    } else {
        vec![
            "--dir".to_string(),
            scene.specs.path().display().to_string(),
        ]
    };
    let api = format!("127.0.0.1:{}", free_port());
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("serve")
            .args(&source)
            .args([
                "--state-dir",
                scene.state.path().to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", scene.port),
                "--instance",
                &scene.instance,
                "--network",
                &scene.instance,
                "--api-listen",
                &api,
            ])
            .env("PATH", path_with_sbin())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth serve"),
    );
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_status(scene.port, "/web/") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the demo was not served within 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past the confirming passes, first probes and the autoscaler's first ticks.
    std::thread::sleep(Duration::from_secs(20));
    let pid_text = pid.to_string();
    let cpu0 = cpu_seconds_of(&pid_text);
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let cpu = cpu_seconds_of(&pid_text) - cpu0;
    let pct = cpu / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib(pid);
    drop(child);
    drop(scene);
    (pct, rss)
}

pub async fn section() -> String {
    let (dir_pct, dir_rss) = tokio::task::spawn_blocking(|| measure(false))
        .await
        .unwrap();
    let (git_pct, git_rss) = tokio::task::spawn_blocking(|| measure(true)).await.unwrap();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Idle cost of `berth serve`, examples/apps (3 apps, 4 containers), converged\n\n\
         CPU is utime + stime of the daemon from /proc over {} s (10 ms ticks); defaults: \
         passes every 5 s, probes on each app's interval, autoscaler every 15 s.\n\n\
         | source | CPU, % of one core | RSS |\n|---|---|---|\n\
         | watched directory | {dir_pct:.2}% | {dir_rss:.1} MiB |\n\
         | git (local bare repository, polled every 15 s) | {git_pct:.2}% | {git_rss:.1} MiB |",
        WINDOW.as_secs()
    );
    md
}
