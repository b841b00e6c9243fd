//! The swarm backend next to the docker backend (issue 14), on a single-node swarm the
//! bench creates and leaves (`support::swarm::SwarmScene`): converging N http apps from
//! empty to every app answering 200 through nginx, and the rolling update of 3 replicas
//! under ~500 req/s (the rollout section's app, wrk and counting) on both backends.

use super::rollout::{web_spec, UPDATE_AT};
use super::wrk::{Load, Wrk, QUIET};
use super::{app_spec, berth_converge, cell, median, ms, wait_all, write_spec};
use crate::support::swarm::SwarmScene;
use berth::reconcile::{self, Controller};
use berth::runtime::swarm::SwarmRuntime;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs passes the way the loop does (again at once after a change, else at the requeue
/// time, at most `idle` later) until `stop` is cancelled.
async fn follow(
    ctl: Arc<Controller<SwarmRuntime>>,
    stop: tokio_util::sync::CancellationToken,
    idle: Duration,
) {
    while !stop.is_cancelled() {
        let report = reconcile::run_pass(&ctl, "bench").await.expect("pass");
        assert_eq!(report.steps_failed, 0, "{report:?}");
        if report.changed {
            continue;
        }
        let wait = report
            .requeue_at
            .map(|at| Duration::from_millis((at - reconcile::now_ms()).max(1) as u64))
            .unwrap_or(idle)
            .min(idle);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Swarm: first pass start -> every app answers 200 through nginx (nginx already running).
async fn swarm_converge(n: usize, run: usize) -> f64 {
    let scene = SwarmScene::new(&format!("bench-swarm-c{n}x{run}"));
    for i in 0..n {
        let name = format!("app{i:02}");
        write_spec(scene.scene.specs.path(), &name, &app_spec(&name, "http", 1));
    }
    let ctl = scene.controller().await;
    ctl.ensure_proxy_running().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let passes = tokio::spawn(follow(ctl.clone(), stop.clone(), Duration::from_secs(1)));
    let port = scene.scene.port;
    let targets = (0..n).map(|i| (port, format!("/app{i:02}/"))).collect();
    let seen = tokio::task::spawn_blocking(move || wait_all(targets, started))
        .await
        .unwrap();
    stop.cancel();
    passes.await.unwrap();
    drop(ctl);
    drop(scene);
    ms(seen)
}

/// Load duration of a swarm run: Swarm's update takes longer than berth's (each new task
/// waits for its first health check, every 2 s here), so the load runs longer than the
/// rollout section's 23 s.
const LOAD: Duration = Duration::from_secs(35);

/// One swarm rollout under load: converge v1 (3 tasks), start wrk, switch the spec to v2
/// and follow until nginx routes to 3 v2 tasks only. Returns the load, the time from the
/// spec change to that pass, and the time until Swarm called the update complete (after
/// its monitor window).
async fn swarm_rollout(run: usize) -> (Load, f64, f64) {
    let scene = SwarmScene::new(&format!("bench-swarm-roll{run}"));
    let specs = scene.scene.specs.path().to_path_buf();
    write_spec(&specs, "web", &web_spec("berth-demo:v1", 3));
    let ctl = scene.controller().await;
    let port = scene.scene.port;
    // nginx routes to 3 tasks of `image` only (and, with `done`, Swarm finished).
    let serving = |image: &str, done: bool| {
        let last = ctl.last_pass().expect("a pass");
        !last.plan.has_changes()
            && last.observed.services.iter().any(|s| {
                s.app == "web"
                    && s.image == image
                    && s.running() == 3
                    && (!done || !s.updating())
                    && s.tasks
                        .iter()
                        .filter(|t| t.member().is_some())
                        .all(|t| t.image == image)
            })
            && last.plan.apps["web"].members.len() == 3
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        reconcile::run_pass(&ctl, "bench").await.expect("pass");
        if serving("berth-demo:v1", true) && super::http_status(port, "/web/") == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "web v1 never converged on swarm");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wrk = Wrk::start(&format!("http://127.0.0.1:{port}/web/"), LOAD);
    let load_started = Instant::now();
    tokio::time::sleep(UPDATE_AT).await;
    write_spec(&specs, "web", &web_spec("berth-demo:v2", 3));
    let update = Instant::now();
    let mut served_at = None;
    loop {
        let report = reconcile::run_pass(&ctl, "bench").await.expect("pass");
        assert_eq!(report.steps_failed, 0, "{report:?}");
        if served_at.is_none() && serving("berth-demo:v2", false) {
            served_at = Some(ms(update.elapsed()));
        }
        if !report.changed && report.requeue_at.is_none() && serving("berth-demo:v2", true) {
            break;
        }
        assert!(
            update.elapsed() < LOAD - QUIET - UPDATE_AT,
            "the swarm rollout outlasted the load"
        );
        if !report.changed {
            let wait = report
                .requeue_at
                .map(|at| (at - reconcile::now_ms()).clamp(1, 1000) as u64)
                .unwrap_or(200);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
    let completed = ms(update.elapsed());
    let rollout = served_at.unwrap_or(completed);
    assert!(
        load_started.elapsed() < LOAD - QUIET,
        "the swarm rollout ended after the load stopped"
    );
    let load = tokio::task::spawn_blocking(move || wrk.finish())
        .await
        .unwrap();
    assert!(
        load.v1 > 0 && load.v2 > 0,
        "swarm run {run}: the load did not see v1 then v2: {load:?}"
    );
    drop(ctl);
    drop(scene);
    (load, rollout, completed)
}

fn failed_cell(loads: &[Load]) -> String {
    let failed: u64 = loads.iter().map(Load::failed).sum();
    let sent: u64 = loads.iter().map(|l| l.sent).sum();
    let runs_failing = loads.iter().filter(|l| l.failed() > 0).count();
    format!(
        "**{failed} / {sent}** ({:.3}%), {runs_failing} of {} runs with a failure",
        100.0 * failed as f64 / sent.max(1) as f64,
        loads.len()
    )
}

pub async fn section(runs: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Swarm backend next to the docker backend (single-node swarm, `berth-demo:v1`)\n\n\
         **Converge**: from the first pass to every app answering 200 through nginx (nginx \
         already running), 1 replica each, median (min–max) ms. docker: one pass creates and \
         health-gates the containers (the converge section's measurement). swarm: passes as \
         the loop runs them (again at once after a change, every 200 ms while Swarm moves \
         tasks); Swarm starts the tasks, its health check (every 5 s, run in the container) \
         gates them, berth pushes each task's host port to nginx.\n\n\
         | N | runs | docker backend | swarm backend | swarm/docker |\n|---|---|---|---|---|"
    );
    for n in [1usize, 10] {
        let (mut d, mut s) = (Vec::new(), Vec::new());
        for run in 0..2 {
            let (seen, _, _) = berth_converge(n, 100 + run).await;
            d.push(seen);
            s.push(swarm_converge(n, run).await);
            eprintln!(
                "swarm converge N={n} run {run}: docker {:.0} ms, swarm {:.0} ms",
                d[run], s[run]
            );
        }
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {:.2} |",
            d.len(),
            cell(&d),
            cell(&s),
            median(s.clone()) / median(d.clone())
        );
    }
    let _ = writeln!(
        md,
        "\n**Rolling update under load**: the rollout section's app (3 replicas, health every \
         2 s, `berth-demo:v1` -> `v2`) and wrk load (~500 req/s, 10 keep-alive connections, \
         through nginx on 127.0.0.1), {runs} runs each. docker: berth's surge-1 rollout (the \
         rollout section's berth side). swarm: Swarm's start-first update, parallelism 1, \
         berth following the tasks (a {}-s load, longer than the rollout section's); rollout = \
         spec change -> nginx routes to 3 v2 tasks only; done = Swarm calls the update \
         complete (after its monitor window, 7 s here: the probe's time to call a task \
         unhealthy).\n\n\
         | backend | failed / sent | req/s (median) | rollout ms | done ms | worst p99 ms |\n|---|---|---|---|---|---|",
        LOAD.as_secs()
    );
    let (mut dl, mut dt, mut sl, mut st, mut sd) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (load, rollout, _) = super::rollout::berth_once(100 + run, 3).await;
        eprintln!(
            "docker rollout run {run}: {} failed of {}, {rollout:.0} ms",
            load.failed(),
            load.sent
        );
        dl.push(load);
        dt.push(rollout);
        let (load, rollout, done) = swarm_rollout(run).await;
        sd.push(done);
        eprintln!(
            "swarm rollout run {run}: {} failed of {}, {rollout:.0} ms",
            load.failed(),
            load.sent
        );
        sl.push(load);
        st.push(rollout);
    }
    for (name, loads, times, done) in [
        ("docker", &dl, &dt, cell(&dt)),
        ("swarm", &sl, &st, cell(&sd)),
    ] {
        let rps = median(loads.iter().map(Load::rps).collect());
        let p99 = loads.iter().map(|l| l.p99_ms).fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "| {name} | {} | {rps:.0} | {} | {done} | {p99:.1} |",
            failed_cell(loads),
            cell(times)
        );
    }
    if cfg!(debug_assertions) {
        let _ = writeln!(
            md,
            "\nberth ran from a debug build here (`cargo bench --profile dev`), both backends alike."
        );
    }
    md
}
