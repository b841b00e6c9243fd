//! Reconcile figures on the real engine and a real nginx, printed as a table:
//! - time from the start of `apply` to the first HTTP 200 through nginx, one app;
//! - a no-op pass with 50 apps (Docker calls, wall time, CPU time).
//!
//! Run: `cargo bench --bench reconcile` (needs Docker, nginx and the demo images:
//! scripts/setup.sh). All traffic goes to 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use berth::reconcile::{self, Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::ContainerObserver;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{cpu_seconds, docker_controller, http_status, test_settings, Scene};

fn app_spec(name: &str, kind: &str) -> String {
    let route = if kind == "http" {
        "  ports:\n    - containerPort: 8080\n  health:\n    httpGet: { path: /healthz, port: 8080 }\n    intervalSeconds: 5\n"
    } else {
        "  command: [\"/bin/busybox\", \"sh\", \"-c\", \"while true; do sleep 5; done\"]\n"
    };
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  image: berth-demo:v1\n{route}  replicas: 1\n  termination:\n    drainSeconds: 0\n"
    )
}

async fn controller(env: &Scene) -> std::sync::Arc<Controller<DockerRuntime>> {
    let settings = Settings {
        interval: Duration::from_secs(5),
        parallel_apps: 8,
        ..test_settings(
            &env.instance,
            berth::source::SourceConfig::Dir(env.specs.path().to_path_buf()),
        )
    };
    docker_controller(&env.instance, None, env.state.path(), env.port, settings).await
}

fn env(tag: &str) -> Scene {
    Scene::new(&format!("bench-{tag}"))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let status = std::process::Command::new("./examples/images/build.sh").status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "examples/images/build.sh failed"
    );

    // 1. apply start -> first 200 through nginx, one app, fresh host each run.
    let mut first_200 = Vec::new();
    let mut apply_done = Vec::new();
    for run in 0..5 {
        let env = env(&format!("first{run}"));
        write(env.specs.path(), "web", &app_spec("web", "http"));
        let ctl = controller(&env).await;
        // Start nginx first so the measurement is about the app, as in a running berth.
        ctl.ensure_proxy_running().await.unwrap();
        let started = Instant::now();
        let pass = tokio::spawn({
            let ctl = ctl.clone();
            async move { reconcile::run_pass(&ctl, "bench").await }
        });
        let port = env.port;
        let waiter = tokio::task::spawn_blocking(move || loop {
            if http_status(port, "/web/") == Some(200) {
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("no 200 within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        let seen = waiter.await.unwrap();
        pass.await.unwrap().unwrap();
        first_200.push(seen.as_secs_f64() * 1000.0);
        apply_done.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    // 2. no-op pass with 50 apps (25 http, 25 workers): calls, wall, CPU.
    let env = env("noop50");
    for i in 0..50 {
        let kind = if i % 2 == 0 { "http" } else { "worker" };
        let name = format!("app{i:02}");
        write(env.specs.path(), &name, &app_spec(&name, kind));
    }
    let ctl = controller(&env).await;
    let converge = Instant::now();
    let report = reconcile::run_pass(&ctl, "bench").await.unwrap();
    let converge_ms = converge.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let before = ctl.runtime().calls();
    let runs = 20;
    for _ in 0..runs {
        let cpu = cpu_seconds();
        let t = Instant::now();
        let r = reconcile::run_pass(&ctl, "bench").await.unwrap();
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
        cpus.push((cpu_seconds() - cpu) * 1000.0);
        assert!(!r.changed);
    }
    let calls = ctl.runtime().calls().since(&before);

    println!();
    println!("| measurement | median | runs |");
    println!("|---|---|---|");
    println!(
        "| apply start -> first 200 through nginx (1 app, 1 replica) | {:.0} ms | {} (all: {:?}) |",
        median(first_200.clone()),
        first_200.len(),
        first_200.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    println!(
        "| apply --once pass complete (same app) | {:.0} ms | {} |",
        median(apply_done.clone()),
        apply_done.len()
    );
    println!("| converge 50 apps from empty | {converge_ms:.0} ms | 1 |");
    println!(
        "| no-op pass, 50 apps: wall | {:.1} ms | {runs} |",
        median(walls)
    );
    println!(
        "| no-op pass, 50 apps: CPU (user+sys, 10 ms ticks) | {:.1} ms | {runs} |",
        cpus.iter().sum::<f64>() / runs as f64
    );
    println!(
        "| no-op pass, 50 apps: Docker calls per pass | list {:.1}, inspect {:.1}, mutating {:.1} | {runs} |",
        calls.list as f64 / runs as f64,
        calls.inspect as f64 / runs as f64,
        calls.mutating() as f64 / runs as f64
    );
}
