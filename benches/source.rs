//! Source figures on the real engine, a real nginx and a real git repository, as a table:
//! time from `git push` of a commit adding an app to the first HTTP 200 for that app through
//! nginx, by the poll path (default 15 s interval) and by the webhook path (signed POST right
//! after the push); and a directory drop for comparison.
//!
//! Run: `cargo bench --bench source` (needs Docker, nginx, git and the demo images:
//! scripts/setup.sh). All traffic goes to 127.0.0.1; each run adds a new one-replica app.
//! `BERTH_BENCH_RUNS` sets the runs per path (default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use berth::reconcile::{Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::source::{git::DEFAULT_POLL, webhook, GitConfig, SourceConfig};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    docker_controller, free_port, http_status, test_settings, DockerCleanup, NginxGuard,
};

const SECRET: &[u8] = b"berth-bench-webhook-secret";

fn app_spec(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  type: http\n  image: berth-demo:v1\n  ports:\n    - containerPort: 8080\n  health:\n    httpGet: {{ path: /healthz, port: 8080 }}\n    intervalSeconds: 5\n  replicas: 1\n  termination:\n    drainSeconds: 0\n"
    )
}

fn git(cwd: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@berth.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("git CLI");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn post_webhook(addr: std::net::SocketAddr) {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        webhook::PATH,
        webhook::sign(SECRET, body),
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
}

/// Fields drop in order: nginx stops before the dir holding its pid file is deleted;
/// containers and the network go last.
struct Env {
    _nginx: NginxGuard,
    instance: String,
    dir: tempfile::TempDir,
    port: u16,
    _cleanup: DockerCleanup,
}

fn env(tag: &str) -> Env {
    let instance = format!("bench-src-{tag}-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    Env {
        _nginx: NginxGuard {
            prefix: dir.path().join("state/nginx"),
        },
        _cleanup: DockerCleanup::new(&instance),
        instance,
        dir,
        port: free_port(),
    }
}

async fn controller(env: &Env, source: SourceConfig) -> Arc<Controller<DockerRuntime>> {
    let settings = Settings {
        interval: Duration::from_secs(3600),
        ..test_settings(&env.instance, source)
    };
    let state = env.dir.path().join("state");
    docker_controller(&env.instance, None, &state, env.port, settings).await
}

/// Waits (blocking) for the first 200 on `/<app>/`; returns ms since `since`.
fn first_200(port: u16, app: &str, since: Instant) -> f64 {
    let path = format!("/{app}/");
    loop {
        if http_status(port, &path) == Some(200) {
            return since.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "no 200 for {app} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

/// Runs `runs` commits on a git source and measures push -> first 200.
async fn git_path(tag: &str, runs: usize, with_webhook: bool) -> Vec<f64> {
    let env = env(tag);
    let base = env.dir.path();
    git(base, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(base, &["init", "-q", "-b", "main", "work"]);
    let work = base.join("work");
    let remote = base.join("remote.git");
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    std::fs::create_dir_all(work.join("apps")).unwrap();
    std::fs::write(work.join("apps/base.yaml"), app_spec("base")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "base"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let mut config = GitConfig::new(remote.to_str().unwrap(), base.join("state/git"));
    config.path = "apps".into();
    config.poll = DEFAULT_POLL;
    let ctl = controller(&env, SourceConfig::Git(config)).await;
    let hook = if with_webhook {
        Some(
            webhook::bind("127.0.0.1:0", SECRET.to_vec(), ctl.source().clone())
                .await
                .map(|(addr, task)| (addr, tokio::spawn(task)))
                .unwrap(),
        )
    } else {
        None
    };
    let served = support::Served::start(&ctl, None);
    let port = env.port;
    tokio::task::spawn_blocking(move || first_200(port, "base", Instant::now()))
        .await
        .unwrap();
    let mut times = Vec::new();
    for run in 0..runs {
        let app = format!("{tag}{run}");
        std::fs::write(work.join(format!("apps/{app}.yaml")), app_spec(&app)).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &app]);
        // Spread the pushes over the poll cycle, as real pushes are.
        let pushed = Instant::now();
        git(&work, &["push", "-q", "origin", "main"]);
        if let Some((addr, _)) = &hook {
            let addr = *addr;
            tokio::task::spawn_blocking(move || post_webhook(addr))
                .await
                .unwrap();
        }
        let ms = tokio::task::spawn_blocking(move || first_200(port, &app, pushed))
            .await
            .unwrap();
        times.push(ms);
        // Land the next push at a different point of the poll cycle.
        tokio::time::sleep(Duration::from_millis(1700 + 2300 * run as u64 % 7000)).await;
    }
    served.stop().await;
    if let Some((_, task)) = hook {
        task.abort();
    }
    times
}

async fn dir_path(runs: usize) -> Vec<f64> {
    let env = env("dir");
    let specs = env.dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(specs.join("base.yaml"), app_spec("base")).unwrap();
    let ctl = controller(&env, SourceConfig::Dir(specs.clone())).await;
    let served = support::Served::start(&ctl, None);
    let port = env.port;
    tokio::task::spawn_blocking(move || first_200(port, "base", Instant::now()))
        .await
        .unwrap();
    let mut times = Vec::new();
    for run in 0..runs {
        let app = format!("dir{run}");
        let written = Instant::now();
        std::fs::write(specs.join(format!("{app}.yaml")), app_spec(&app)).unwrap();
        let ms = tokio::task::spawn_blocking(move || first_200(port, &app, written))
            .await
            .unwrap();
        times.push(ms);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    served.stop().await;
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary too and
    // must not spend minutes measuring.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let status = Command::new("./examples/images/build.sh").status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "examples/images/build.sh failed"
    );
    let runs: usize = std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let webhook = git_path("hook", runs, true).await;
    let dir = dir_path(runs).await;
    let poll = git_path("poll", runs, false).await;

    println!();
    println!("| path | min | median | max | runs |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        (
            "git push + signed webhook -> first 200 (poll 15 s)",
            &webhook,
        ),
        ("git push, poll only (15 s) -> first 200", &poll),
        ("file dropped in watched dir -> first 200", &dir),
    ] {
        let (min, median, max) = stats(v);
        println!(
            "| {name} | {min:.0} ms | {median:.0} ms | {max:.0} ms | {} (all: {:?}) |",
            v.len(),
            v.iter().map(|x| x.round()).collect::<Vec<_>>()
        );
    }
}
