//! berth next to `docker-compose up -d` and raw bollard create+start, on the real engine:
//! 1. convergence of N = 1, 10, 50 one-replica http apps from empty to all answering 200;
//! 2. the cost of a no-op pass with 200 apps (Docker calls, wall, CPU);
//! 3. controller RSS and idle CPU with 1,000 apps loaded (workers, `replicas: 0`), and the
//!    idle cost of `berth serve` on examples/apps, directory and git source (idle.rs);
//! 4. a rolling update of 3 and of 5 replicas under ~500 req/s, berth vs compose recreate
//!    (rollout.rs, `BERTH_BENCH_ROLLOUT_REPLICAS=3,5`, `BERTH_BENCH_ROLLOUT_RUNS=10`), and
//!    convergence of 50 apps whose images come from a local registry, berth vs compose
//!    (registry.rs);
//! 5. scaling 3 -> 5 -> 3 under the same load (failed requests, closed keep-alive, nginx
//!    reloads) and the latency of each member change from berth's decision to nginx
//!    holding the list and to the first request a new member served (scale.rs,
//!    `BERTH_BENCH_SCALE_CYCLES=10`);
//! 6. the swarm backend next to the docker backend: converge N apps and the rolling
//!    update under load on a single-node swarm the bench creates and leaves (swarm.rs);
//! 7. the long versions of the fault suite (faults.rs, on tests/fault/mod.rs);
//! 8. takeover time of highly available controllers on PostgreSQL (ha.rs, on tests/ha/mod.rs).
//!
//! The 50-app convergence also says where berth's pass spent its time, from berth's own
//! tracing spans (spans.rs).
//!
//! Run: `cargo bench --bench compare` (prints the tables); `-- --write` or
//! `BERTH_BENCH_WRITE=1` also writes bench/RESULTS.md; `-- --only rollout,faults` runs
//! some sections (and `--write` keeps the others' text). Needs Docker, nginx, Debian's
//! docker-compose v1 at /usr/bin/docker-compose, wrk and the demo images
//! (`scripts/bench.sh` installs them and runs this).
//! All traffic goes to 127.0.0.1; everything created is removed by Drop guards
//! (containers by `berth.instance` label, `docker-compose down -v`, nginx by QUIT).
//! `BERTH_BENCH_PARALLEL=N` runs berth with another `--parallel` (raw stays at 8);
//! `BERTH_BENCH_CONVERGE_SIZES=50` runs the converge section for some sizes only (1,10,50),
//! `BERTH_BENCH_CONVERGE_RUNS=5` more runs of each (3).

#[path = "../tests/fault/mod.rs"]
mod fault;
#[path = "compare/faults.rs"]
mod faults;
#[path = "../tests/ha/mod.rs"]
mod ha;
#[path = "compare/ha.rs"]
mod ha_bench;
#[path = "compare/idle.rs"]
mod idle;
#[path = "compare/registry.rs"]
mod registry;
#[path = "compare/rollout.rs"]
mod rollout;
#[path = "compare/scale.rs"]
mod scale;
#[path = "compare/spans.rs"]
mod spans;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "compare/swarm.rs"]
mod swarm;
#[path = "compare/wrk.rs"]
mod wrk;

use berth::reconcile::{self, Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::ContainerObserver;
use bollard::container::{Config, CreateContainerOptions, StartContainerOptions};
use bollard::models::{HostConfig, PortBinding};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{
    cpu_seconds, docker_controller, ensure_images, free_port, http_status, nginx_binary,
    test_settings, DockerCleanup, NginxGuard, Scene,
};

const IMAGE: &str = "berth-demo:v1";
const COMPOSE: &str = "/usr/bin/docker-compose";
/// berth's default `parallel_apps`; the raw baseline uses the same concurrency.
const PARALLEL: usize = 8;
/// Upper bound for any "wait until everything answers 200" loop.
const WAIT_LIMIT: Duration = Duration::from_secs(180);

fn app_spec(name: &str, kind: &str, replicas: u32) -> String {
    let body = if kind == "http" {
        "  ports:\n    - containerPort: 8080\n  health:\n    httpGet: { path: /healthz, port: 8080 }\n    intervalSeconds: 5\n"
    } else {
        "  command: [\"/bin/busybox\", \"sh\", \"-c\", \"while true; do sleep 5; done\"]\n"
    };
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  image: {IMAGE}\n{body}  replicas: {replicas}\n  termination:\n    drainSeconds: 0\n"
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Blocks until every (port, path) answered 200 once; elapsed since `started`.
/// Panics after [`WAIT_LIMIT`].
///
/// Checks the targets in order and asks only the first one still pending each round (the
/// next one at once after a 200): the time is the same as polling them all (every target
/// must answer, and one that answered keeps answering), but the harness sends ~200
/// requests a second instead of thousands, which on 2 cores took CPU from the engine
/// while berth was being measured through nginx (compose and raw are polled only after
/// they return, so they did not pay it).
fn wait_all(targets: Vec<(u16, String)>, started: Instant) -> Duration {
    let mut pending = targets.into_iter().peekable();
    loop {
        while let Some((port, path)) = pending.peek() {
            if http_status(*port, path) != Some(200) {
                break;
            }
            pending.next();
        }
        let Some((port, path)) = pending.peek() else {
            return started.elapsed();
        };
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "127.0.0.1:{port}{path} (and any after it) still not 200 after {WAIT_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn env(tag: &str) -> Scene {
    Scene::new(&format!("bench-cmp-{tag}"))
}

async fn controller(env: &Scene) -> std::sync::Arc<Controller<DockerRuntime>> {
    let settings = Settings {
        interval: Duration::from_secs(5),
        // BERTH_BENCH_PARALLEL tries another `--parallel` for berth (raw stays at PARALLEL).
        parallel_apps: std::env::var("BERTH_BENCH_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PARALLEL),
        ..test_settings(
            &env.instance,
            berth::source::SourceConfig::Dir(env.specs.path().to_path_buf()),
        )
    };
    docker_controller(&env.instance, None, env.state.path(), env.port, settings).await
}

fn write_spec(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// "median (min-max)" in whole milliseconds; just the value for one run.
fn cell(v: &[f64]) -> String {
    let m = median(v.to_vec());
    if v.len() < 2 {
        return format!("{m:.0}");
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(0.0, f64::max);
    format!("{m:.0} ({lo:.0}–{hi:.0})")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// (a) berth: `run_pass` start -> every app answers 200 through nginx; also pass complete,
/// and where the pass spent its time (from berth's spans).
async fn berth_converge(n: usize, run: usize) -> (f64, f64, String) {
    let env = env(&format!("b{n}x{run}"));
    for i in 0..n {
        let name = format!("app{i:02}");
        write_spec(env.specs.path(), &name, &app_spec(&name, "http", 1));
    }
    let ctl = controller(&env).await;
    // nginx is already up in a running berth; start it outside the measurement.
    ctl.ensure_proxy_running().await.unwrap();
    spans::take();
    let started = Instant::now();
    let pass = tokio::spawn({
        let ctl = ctl.clone();
        async move { reconcile::run_pass(&ctl, "bench").await }
    });
    let targets = (0..n).map(|i| (env.port, format!("/app{i:02}/"))).collect();
    let seen = tokio::task::spawn_blocking(move || wait_all(targets, started))
        .await
        .unwrap();
    let report = pass.await.unwrap().unwrap();
    let done = started.elapsed();
    assert_eq!(report.steps_failed, 0, "{report:?}");
    let profile = pass_profile(&report, &spans::take());
    drop(ctl);
    drop(env);
    (ms(seen), ms(done), profile)
}

/// Where a converging pass spent its time: its phases, and from berth's `app_steps` and
/// `step` spans how long the container steps of each app took (create + start + health
/// gate) and how many ran at once.
fn pass_profile(report: &reconcile::PassReport, spans: &[spans::Span]) -> String {
    let Some(pass) = spans.iter().find(|s| s.name == "reconcile_pass") else {
        return "no spans recorded".into();
    };
    let apps: Vec<&spans::Span> = spans.iter().filter(|s| s.name == "app_steps").collect();
    let creates: Vec<f64> = spans
        .iter()
        .filter(|s| s.name == "step" && s.step == "create")
        .map(spans::Span::ms)
        .collect();
    if apps.is_empty() || creates.is_empty() {
        return "no container steps recorded".into();
    }
    let first = apps.iter().map(|s| s.opened).min().unwrap();
    let last = apps.iter().map(|s| s.closed).max().unwrap();
    let busy: f64 = apps.iter().map(|s| s.ms()).sum();
    let window = spans::since_ms(first, last);
    let p = report.phases;
    format!(
        "pass {:.0} ms; phases source {:.0}, observe {:.0}, desired {:.0}, plan {:.0}, apply {:.0}, record {:.0}, publish {:.0} ms; \
         the first app's container steps began {:.0} ms into the pass (network, the one nginx test + reload of every new route); \
         per app, waiting for an engine slot + create + start + health gate: median {:.0} ms, max {:.0} ms; \
         the apps' steps ran from {:.0} to {:.0} ms, {:.1} apps at a time on average ({} allowed, {PARALLEL} creates + starts at once)",
        pass.ms(),
        p.source_ms,
        p.observe_ms,
        p.desired_ms,
        p.plan_ms,
        p.apply_ms,
        p.record_ms,
        p.publish_ms,
        spans::since_ms(pass.opened, first),
        median(creates.clone()),
        creates.iter().cloned().fold(0.0, f64::max),
        spans::since_ms(pass.opened, first),
        spans::since_ms(pass.opened, last),
        busy / window.max(1e-9),
        PARALLEL * 4,
    )
}

/// `docker-compose -p NAME down -v` on drop (plus a label sweep as a fallback).
struct ComposeGuard {
    project: String,
    dir: tempfile::TempDir,
}

impl Drop for ComposeGuard {
    fn drop(&mut self) {
        let _ = Command::new(COMPOSE)
            .current_dir(self.dir.path())
            .args(["-p", &self.project, "down", "-v", "-t", "1"])
            .output();
        // Whatever `down` left behind (the services carry the berth.instance label).
        drop(DockerCleanup::new(&self.project));
    }
}

/// (b) `docker-compose up -d` start -> every service answers 200 on its published port.
fn compose_converge(n: usize, run: usize) -> (f64, f64) {
    let guard = ComposeGuard {
        project: format!("benchcmp{n}x{run}p{}", std::process::id()),
        dir: tempfile::tempdir().unwrap(),
    };
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..n {
        let _ = write!(
            yaml,
            "  app{i:02}:\n    image: {IMAGE}\n    ports: [\"127.0.0.1::8080\"]\n    labels:\n      berth.instance: {}\n",
            guard.project
        );
    }
    std::fs::write(guard.dir.path().join("docker-compose.yml"), yaml).unwrap();
    let started = Instant::now();
    compose_up(guard.dir.path(), &guard.project, &[]);
    let up_returned = started.elapsed();
    // Published ports, one `docker ps` (compose has no proxy: one port per service).
    let ps = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={}", guard.project),
            "--format",
            "{{.Ports}}",
        ])
        .output()
        .unwrap();
    let ports: Vec<u16> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter_map(|l| {
            // "127.0.0.1:49153->8080/tcp"
            l.split("->").next()?.rsplit(':').next()?.parse().ok()
        })
        .collect();
    assert_eq!(ports.len(), n, "published ports: {ports:?}");
    let seen = wait_all(
        ports.into_iter().map(|p| (p, "/".into())).collect(),
        started,
    );
    drop(guard);
    (ms(seen), ms(up_returned))
}

/// `docker-compose -p PROJECT up -d EXTRA...` in `dir`; panics with compose's stderr.
fn compose_up(dir: &Path, project: &str, extra: &[&str]) {
    let out = Command::new(COMPOSE)
        .current_dir(dir)
        .args(["-p", project, "up", "-d"])
        .args(extra)
        .output()
        .expect("run docker-compose");
    assert!(
        out.status.success(),
        "docker-compose up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (c) the raw limit: bollard create+start+inspect of N containers, PARALLEL at a time,
/// -> each answers 200 on its published port.
/// `like_berth`: the containers join their own user-defined bridge network (as berth's and
/// compose's do) and run Docker's init (as berth's do), which the engine pays for.
async fn raw_converge(docker: &Docker, n: usize, run: usize, like_berth: bool) -> f64 {
    let tag = if like_berth { "rawnet" } else { "raw" };
    let instance = format!("bench-cmp-{tag}{n}x{run}-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    if like_berth {
        docker
            .create_network(bollard::network::CreateNetworkOptions {
                name: instance.clone(),
                labels: HashMap::from([("berth.instance".to_string(), instance.clone())]),
                ..Default::default()
            })
            .await
            .expect("create network");
    }
    let started = Instant::now();
    let ports: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|i| {
            let docker = docker.clone();
            let instance = instance.clone();
            async move {
                let mut bindings = HashMap::new();
                bindings.insert(
                    "8080/tcp".to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                );
                let config = Config {
                    image: Some(IMAGE.to_string()),
                    labels: Some(HashMap::from([(
                        "berth.instance".to_string(),
                        instance.clone(),
                    )])),
                    host_config: Some(HostConfig {
                        port_bindings: Some(bindings),
                        network_mode: like_berth.then(|| instance.clone()),
                        init: like_berth.then_some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let name = format!("{instance}-{i}");
                let created = docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: name.as_str(),
                            platform: None,
                        }),
                        config,
                    )
                    .await
                    .expect("create");
                docker
                    .start_container(&created.id, None::<StartContainerOptions<String>>)
                    .await
                    .expect("start");
                let inspect = docker
                    .inspect_container(&created.id, None)
                    .await
                    .expect("inspect");
                inspect
                    .network_settings
                    .and_then(|s| s.ports)
                    .and_then(|p| p.get("8080/tcp").cloned().flatten())
                    .and_then(|b| b.first()?.host_port.clone())
                    .and_then(|p| p.parse::<u16>().ok())
                    .expect("published port")
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let targets = ports.into_iter().map(|p| (p, "/".to_string())).collect();
    let seen = tokio::task::spawn_blocking(move || wait_all(targets, started))
        .await
        .unwrap();
    ms(seen)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        })
        .unwrap_or_else(|e| format!("unavailable ({e})"))
}

fn machine() -> String {
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let nginx = sh(&nginx_binary().to_string_lossy(), &["-v"]);
    let compose = sh(COMPOSE, &["version", "--short"]);
    let wrk = sh(&wrk::wrk_binary().to_string_lossy(), &["--version"]);
    format!(
        "| written (UTC) | {} |\n| nproc | {} |\n| memory | {mem_gib} |\n| kernel | {} |\n| Docker server | {} |\n| nginx | {} |\n| docker-compose | {} |\n| wrk | {} |\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M"]),
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        sh("docker", &["version", "--format", "{{.Server.Version}}"]),
        nginx.trim_start_matches("nginx version: "),
        compose,
        wrk.lines().next().unwrap_or("not installed").split(" Copyright").next().unwrap_or(""),
    )
}

/// RSS and idle CPU with 1,000 apps loaded (run first, while the process is young).
async fn footprint() -> String {
    let mut md = String::new();
    let rss_before = rss_mib();
    let env = env("mem1000");
    for i in 0..1000 {
        let name = format!("w{i:04}");
        write_spec(env.specs.path(), &name, &app_spec(&name, "worker", 0));
    }
    // As in a daemon whose specs were not edited in the last seconds: a file changed
    // within 2 s of a read is read again by the next pass (its stamp cannot tell).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ctl = controller(&env).await;
    let t = Instant::now();
    let first = reconcile::run_pass(&ctl, "bench").await.unwrap();
    let first_ms = ms(t.elapsed());
    assert_eq!(first.steps_failed, 0, "{first:?}");
    let rss_loaded = rss_mib();
    // Idle: a timer pass every 5 s (serve's default interval), 3 passes over 15 s.
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut pass_ms = Vec::new();
    let mut phases = Vec::new();
    for k in 0..3 {
        let next = t0 + Duration::from_secs(5 * k);
        tokio::time::sleep_until(next.into()).await;
        let t = Instant::now();
        let report = reconcile::run_pass(&ctl, "timer").await.unwrap();
        pass_ms.push(ms(t.elapsed()));
        phases.push(report.phases);
    }
    let last = phases.last().copied().unwrap_or_default();
    tokio::time::sleep_until((t0 + Duration::from_secs(15)).into()).await;
    let idle_pct = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let rss_after = rss_mib();
    let _ = writeln!(
            md,
            "\n### Controller footprint, 1,000 apps (workers, `replicas: 0`)\n\nThe spec files were written 2.5 s before the first pass (a file changed within 2 s of a read is read again by the next pass: its stamp cannot tell).\n\n| measurement | value |\n|---|---|\n\
             | RSS of the bench process before the controller | {rss_before:.1} MiB |\n\
             | RSS after the first pass (1,000 apps in store + snapshot) | {rss_loaded:.1} MiB |\n\
             | RSS after 3 more timer passes | {rss_after:.1} MiB |\n\
             | first pass (records 1,000 apps) | {first_ms:.0} ms |\n\
             | timer pass, median of 3 | {:.1} ms |\n\
             | its phases (last pass): source, observe, desired, plan, apply, record, publish | {:.1}, {:.1}, {:.1}, {:.1}, {:.1}, {:.1}, {:.1} ms |\n\
             | idle CPU, passes every 5 s over 15 s | {idle_pct:.2}% of one core |",
            median(pass_ms),
            last.source_ms,
            last.observe_ms,
            last.desired_ms,
            last.plan_ms,
            last.apply_ms,
            last.record_ms,
            last.publish_ms
        );
    drop(ctl);
    drop(env);
    md
}

/// The cost of a no-op pass with 200 apps.
async fn noop() -> String {
    let mut md = String::new();
    let replicas: u32 = std::env::var("BERTH_BENCH_NOOP_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let env = env("noop200");
    for i in 0..200 {
        let name = format!("w{i:03}");
        write_spec(
            env.specs.path(),
            &name,
            &app_spec(&name, "worker", replicas),
        );
    }
    let ctl = controller(&env).await;
    let report = reconcile::run_pass(&ctl, "bench").await.unwrap();
    assert_eq!(report.steps_failed, 0, "{report:?}");
    let runs = 20;
    let before = ctl.runtime().calls();
    let mut walls = Vec::new();
    let mut cpu = 0.0;
    let mut phases = Vec::new();
    for _ in 0..runs {
        let c = cpu_seconds();
        let t = Instant::now();
        let r = reconcile::run_pass(&ctl, "bench").await.unwrap();
        walls.push(ms(t.elapsed()));
        cpu += cpu_seconds() - c;
        assert!(!r.changed);
        phases.push(r.phases);
    }
    let phase = |f: fn(&reconcile::PassPhases) -> f64| median(phases.iter().map(f).collect());
    let calls = ctl.runtime().calls().since(&before);
    let per = |v: u64| v as f64 / runs as f64;
    let _ = writeln!(
            md,
            "\n### No-op pass, 200 apps (workers, `replicas: {replicas}`), {runs} passes\n\n| measurement | value |\n|---|---|\n\
             | wall, median | {:.1} ms |\n\
             | CPU (user+sys, 10 ms ticks), mean | {:.1} ms |\n\
             | phases, medians: source, observe, desired, plan, apply, record, publish | {:.1}, {:.1}, {:.1}, {:.1}, {:.1}, {:.1}, {:.1} ms |\n\
             | Docker calls per pass | list {:.1}, inspect {:.1}, mutating {:.1} |",
            median(walls),
            cpu * 1000.0 / runs as f64,
            phase(|p| p.source_ms),
            phase(|p| p.observe_ms),
            phase(|p| p.desired_ms),
            phase(|p| p.plan_ms),
            phase(|p| p.apply_ms),
            phase(|p| p.record_ms),
            phase(|p| p.publish_ms),
            per(calls.list),
            per(calls.inspect),
            per(calls.mutating())
        );
    drop(ctl);
    drop(env);
    md
}

/// Convergence of N = 1, 10, 50 apps, interleaved per run: berth, compose, raw.
async fn convergence() -> String {
    let mut md = String::new();
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let _ = writeln!(
            md,
            "\n### Convergence from empty to all answering 200 (1 replica each, `{IMAGE}`)\n\n\
             Median (min–max) in ms; ratio of medians = berth / other. berth: `run_pass` start -> every app 200 through \
             nginx (nginx already running); compose: `docker-compose up -d` start -> every service \
             200 on its published port; raw: bollard create+start+inspect, {PARALLEL} at a time -> \
             each 200 on its port (default bridge, no init); raw-net: the same, the containers on \
             their own user-defined bridge network with Docker's init, as berth's (and, for the \
             network, compose's) are. Each run starts with another of the four, each after \
             the machine went quiet (at most 15% busy over 0.5 s); every \"all 200\" is polled \
             the same way, one target at a time (the first not yet 200, every 5 ms).\n\n\
             | N | runs | berth all 200 | berth pass done | compose all 200 | compose `up` returned | raw all 200 | raw-net all 200 | berth/compose | berth/raw | berth/raw-net |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        );
    let mut notes = String::new();
    let sizes: Vec<usize> = std::env::var("BERTH_BENCH_CONVERGE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 50]);
    let runs: usize = std::env::var("BERTH_BENCH_CONVERGE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for n in sizes {
        let (mut b, mut bd, mut c, mut cu, mut r) = (vec![], vec![], vec![], vec![], vec![]);
        let mut rn = vec![];
        let mut profiles = Vec::new();
        for run in 0..runs {
            // Each run starts with another contender (berth, compose, raw, raw-net, ...),
            // after the machine went quiet: the kernel tears the previous measurement's
            // containers down (network namespaces, mounts) after their removal returned, and
            // that work must not land on whoever comes next.
            for k in 0..4 {
                quiet().await;
                match (run + k) % 4 {
                    0 => {
                        let (seen, done, profile) = berth_converge(n, run).await;
                        b.push(seen);
                        bd.push(done);
                        eprintln!("N={n} run {run}: berth's pass: {profile}");
                        profiles.push(profile);
                    }
                    1 => {
                        let (seen, up) =
                            tokio::task::spawn_blocking(move || compose_converge(n, run))
                                .await
                                .unwrap();
                        c.push(seen);
                        cu.push(up);
                    }
                    2 => r.push(raw_converge(&docker, n, run, false).await),
                    _ => rn.push(raw_converge(&docker, n, run, true).await),
                }
            }
            eprintln!(
                "N={n} run {run}: berth {:.0} ms, compose {:.0} ms, raw {:.0} ms, raw on a network with init {:.0} ms",
                b[run], c[run], r[run], rn[run]
            );
        }
        let runs = b.len();
        let ratio_c = median(b.clone()) / median(c.clone());
        let ratio_r = median(b.clone()) / median(r.clone());
        let ratio_rn = median(b.clone()) / median(rn.clone());
        let _ = writeln!(
            md,
            "| {n} | {runs} | {} | {} | {} | {} | {} | {} | {ratio_c:.2} | {ratio_r:.2} | {ratio_rn:.2} |",
            cell(&b),
            cell(&bd),
            cell(&c),
            cell(&cu),
            cell(&r),
            cell(&rn)
        );
        if n == 50 {
            for (run, profile) in profiles.iter().enumerate() {
                let _ = writeln!(notes, "- run {}: {profile}", run + 1);
            }
        }
    }
    if !notes.is_empty() {
        let _ = write!(
            md,
            "\nWhere berth's 50-app pass spent its time (from berth's own tracing spans, \
             `reconcile_pass`, `app_steps`, `step`, and the pass's phases):\n\n{notes}"
        );
    }
    md
}

/// Waits until the machine is quiet: at most 15% of the CPUs busy over half a second (at
/// most 30 s).
async fn quiet() {
    let started = Instant::now();
    let mut last = cpu_times();
    while started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_times();
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        last = now;
        if total > 0 && busy * 100 <= total * 15 {
            return;
        }
    }
}

/// (busy, total) clock ticks of all CPUs since boot, from /proc/stat's first line (idle
/// and iowait count as not busy).
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The sections of bench/RESULTS.md, in file order, by the names `--only` takes.
const SECTIONS: [&str; 10] = [
    "footprint",
    "noop",
    "idle",
    "converge",
    "registry",
    "rollout",
    "scale",
    "swarm",
    "faults",
    "ha",
];

/// Where a section's text starts and ends in bench/RESULTS.md, so one section can be
/// refreshed (`--only rollout --write`) without re-running the others.
fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- section {name} -->"),
        format!("<!-- end {name} -->"),
    )
}

/// The sections already in `text`, by name.
fn sections_in(text: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for name in SECTIONS {
        let (begin, end) = markers(name);
        if let Some(a) = text.find(&begin) {
            if let Some(b) = text[a..].find(&end) {
                found.insert(name.to_string(), text[a + begin.len()..a + b].to_string());
            }
        }
    }
    found
}

/// Waits (at most 2 minutes) until the 1-minute load average is below the core count, so
/// a section does not start in the tail of the previous one's container starts.
async fn settle() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let one_minute = loadavg()
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .unwrap_or(0.0);
        if one_minute < cores {
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Runs one section, framed by when it ran and the load average around it.
async fn run_section(name: &str) -> String {
    settle().await;
    let start_load = loadavg();
    let started = sh("date", &["-u", "+%Y-%m-%d %H:%M"]);
    let body = match name {
        "footprint" => footprint().await,
        "noop" => noop().await,
        "idle" => idle::section().await,
        "converge" => convergence().await,
        "registry" => registry::section().await,
        "rollout" => {
            let runs = std::env::var("BERTH_BENCH_ROLLOUT_RUNS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            let replicas: Vec<usize> = std::env::var("BERTH_BENCH_ROLLOUT_REPLICAS")
                .ok()
                .map(|v| {
                    v.split(',')
                        .map(|n| {
                            n.trim().parse().unwrap_or_else(|_| {
                                panic!("BERTH_BENCH_ROLLOUT_REPLICAS={v}: give replica counts like 3,5")
                            })
                        })
                        .collect()
                })
                .unwrap_or_else(|| vec![3, 5]);
            rollout::section(runs, &replicas).await
        }
        "scale" => {
            let cycles = std::env::var("BERTH_BENCH_SCALE_CYCLES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            scale::section(cycles).await
        }
        "swarm" => {
            let runs = std::env::var("BERTH_BENCH_SWARM_RUNS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3);
            swarm::section(runs).await
        }
        "faults" => faults::section().await,
        "ha" => ha_bench::section().await,
        other => panic!("unknown section {other}; sections: {}", SECTIONS.join(", ")),
    };
    let end_load = loadavg();
    let mut md = body;
    let _ = writeln!(
        md,
        "\n_Measured {started} UTC; load average (1, 5, 15 min) {start_load} at the start, \
         {end_load} at the end._"
    );
    let busiest = [start_load.as_str(), end_load.as_str()]
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if busiest > cores {
        let _ = writeln!(
            md,
            "\n**Loaded run:** the 1-minute load average reached {busiest:.1} on {cores} cores \
             (container starts load dockerd and fuse-overlayfs, and other work may share the \
             machine), so absolute times are inflated; compare ratios."
        );
    }
    md
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // berth's span times (only its pass and step spans are enabled; no output).
    spans::install();
    let write_results = args.iter().any(|a| a == "--write")
        || std::env::var("BERTH_BENCH_WRITE").is_ok_and(|v| !v.is_empty() && v != "0");
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| SECTIONS.iter().map(|s| s.to_string()).collect());
    for name in &only {
        assert!(
            SECTIONS.contains(&name.as_str()),
            "unknown section {name:?} after --only; sections: {}",
            SECTIONS.join(", ")
        );
    }
    ensure_images();
    let machine = machine();
    let mut fresh = BTreeMap::new();
    // In file order, so the footprint runs while the process is young.
    for name in SECTIONS.iter().filter(|s| only.iter().any(|o| o == *s)) {
        eprintln!("section {name}");
        let md = run_section(name).await;
        println!("{md}");
        fresh.insert(name.to_string(), md);
        if write_results {
            // After every section, so a later failure keeps what was measured.
            write_file(&machine, &fresh);
        }
    }
}

/// Writes bench/RESULTS.md: the machine, the `fresh` sections, the others kept from the file.
fn write_file(machine: &str, fresh: &BTreeMap<String, String>) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "bench", "RESULTS.md"]
        .iter()
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut kept = sections_in(&std::fs::read_to_string(&path).unwrap_or_default());
    kept.extend(fresh.clone());
    let mut text = format!(
        "# berth comparison benchmarks\n\nGenerated by `cargo bench --bench compare -- --write` \
         (`-- --only {}` runs some sections and keeps the others); every table below comes \
         from that harness. All traffic on 127.0.0.1.\n\n## Machine\n\n| | |\n|---|---|\n{machine}",
        SECTIONS.join(",")
    );
    for name in SECTIONS {
        let (begin, end) = markers(name);
        let body = kept.get(name).cloned().unwrap_or_else(|| {
            format!("\n_Section {name} not measured yet: `cargo bench --bench compare -- --only {name} --write`._\n")
        });
        let _ = write!(text, "\n{begin}{body}{end}\n");
    }
    text.push_str(NOTES);
    std::fs::write(&path, text).unwrap();
    eprintln!("wrote {}", path.display());
}

const NOTES: &str = "\n## Where berth loses, and what the comparison leaves out\n\n\
- compose does no health gating and has no proxy: its containers are \"up\" as soon as the \
engine started them, and each service answers on its own published port. berth waits for \
`/healthz` to pass before it routes a replica and then pushes it to nginx (reloads, in \
`--proxy-mode reload`), so its first 200 comes later by design, and its figure includes the \
nginx hop.\n\
- The raw bollard path is the floor for create+start on this engine (the default bridge, no \
init, no health check, no store, no proxy). raw-net asks the engine for what berth asks: a \
user-defined network (name discovery between apps) and Docker's init (signals reach the \
app, zombies are reaped); compose v1 asks for the network but not init.\n\
- The compose figure includes `docker-compose` v1's Python start-up (`docker-compose version` \
alone takes ~0.4 s here) and one `docker ps` to find the published ports; compose also \
creates its network per project.\n\
- At N = 1 berth's figure can come out below compose's: that is compose's fixed cost (Python \
start-up, project network creation), not a faster container start; raw shows the floor.\n\
- The footprint rows use workers with `replicas: 0` (no containers), so the one list call \
per pass returns nothing; they measure berth's own work (spec snapshot, plan, store), not \
the engine's. The 200-app no-op row runs one worker container per app \
(`BERTH_BENCH_NOOP_REPLICAS=0` for none). RSS is the whole bench process (tokio runtime \
included).\n\
- Rolling update: berth's rollout takes longer than compose's update (one replica at a time, \
each behind a health gate and a drain), so berth loses on time to the new version. compose's \
`up -d` stops and recreates all the services at once with no health gate, so nginx has no \
live upstream for a moment and answers 502. With dynamic upstreams (the default) berth \
changes an app's members without reloading nginx, so no keep-alive connection is closed and \
no request races a reload. In `--proxy-mode reload` (`BERTH_TEST_PROXY_MODE=reload` here) \
berth reloads once per replaced replica, every reload closes idle keep-alive client \
connections, and a request written at that instant gets no answer; wrk does not retry it \
(RFC 9112 section 9.3.1 allows clients to retry such idempotent requests, and browsers and \
most HTTP client libraries do).\n\
- Converging 50 apps is bound by the engine, not by berth. A profile taken by hand \
(2026-12-02, `perf record -a -F 199` over the section, 2 CPUs ~97% busy while containers \
start, half of it in the kernel), by process: dockerd's re-executions (libnetwork's setkey \
hook, the embedded DNS set-up in each container's network namespace) 22%, dockerd 11%, \
runc 10%, iptables 5%, containerd-shim 5%, fuse-overlayfs 2.6%, containerd 2%; the bench \
process with berth in it under 1%, nginx 0.5%. Within berth's pass, at 8 at a time, a \
create takes ~0.15 s, a start ~1.4 s and the health gate ~35 ms (one probe); with \
`--parallel` 16 or 32 each start takes 2 to 4 times as long and the total stays the same \
(~4.5 containers a second). So berth / raw-net stays near 1.0, and berth / raw is the \
engine's price of the network and init (raw-net / raw 1.2 to 1.4 here; init alone ~5%). \
berth / compose at 50 apps is ~1.0 (compose's Python start-up is amortised), not the 0.9 \
aimed at: berth asks the engine for compose's containers plus Docker's init, and going \
lower would take dropping init (~5%, not enough alone) and the network that lets apps find \
each other.\n\
- Member changes: both directions reach nginx without a reload. A scale-up's members are \
pushed as soon as their health gate passes (before the pass records its events); a \
scale-in's list goes out in the pass's proxy batch right after the plan, so adding members \
takes longer from the decision to nginx than removing them (the create, start and gate).\n\
- compose has no reconciler, so the fault tables are berth's alone: what berth guarantees \
(converged, no orphans or duplicates, nothing running lost), not a comparison.\n";
