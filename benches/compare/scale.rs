//! Scaling under load and member-change latency: one http app at 3 replicas behind berth's
//! nginx, ~500 req/s from wrk (wrk.rs), and per cycle the spec's `replicas` edited 3 -> 5
//! (passes until the plan is empty), then 5 -> 3 (the same). Per cycle: failed requests,
//! closed keep-alive connections and nginx reloads (the target is 0 / 0 / 0).
//!
//! Per member change, three wall clocks (this process, nginx, ms resolution or better):
//! - berth's decision, from its tracing spans (spans.rs): a `create` step ends when its
//!   new replicas passed the health gate and join the members; a scale-in is decided by
//!   the plan (its member list leaves the replicas out and goes to nginx with the pass's
//!   proxy batch, before any container step): the pass span's start plus the pass's
//!   observe, desired and plan phases;
//! - nginx answering with the new list: a thread asks nginx's admin socket
//!   (`GET /members/web`, the Lua side's dict) every millisecond while the passes run and
//!   keeps the arrival time of each new answer;
//! - the first request a new member served: nginx's access log (`time`, `upstream`).
//!
//! Everything is removed by the Scene's Drop guards.

use super::rollout::web_spec;
use super::spans::{self, since_ms};
use super::wrk::{Load, Wrk, QUIET};
use super::{controller, env, median, ms, write_spec, Scene};
use berth::plan::render::members_in;
use berth::reconcile::{self, Controller};
use berth::runtime::docker::DockerRuntime;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// wrk's duration per cycle; the scale-up starts [`WARM`] into it.
const CYCLE_LOAD: Duration = Duration::from_secs(16);
const WARM: Duration = Duration::from_secs(1);
const FROM: usize = 3;
const TO: usize = 5;

/// One member change as seen by the three clocks.
#[derive(Debug, Clone)]
struct Change {
    /// Members added (empty for a scale-in).
    added: Vec<String>,
    /// berth's decision (see the module doc).
    decided: Option<SystemTime>,
    /// The first answer of the admin socket with the new list.
    nginx_holds: Option<SystemTime>,
    /// From the spec edit to the pass that found nothing left to do.
    passes_ms: f64,
}

impl Change {
    fn nginx_ms(&self) -> Option<f64> {
        Some(since_ms(self.decided?, self.nginx_holds?))
    }
}

/// One cycle 3 -> 5 -> 3 under load.
struct Cycle {
    load: Load,
    reloads: u64,
    up: Change,
    down: Change,
    /// decision -> first request served, per added member (ms).
    first_served: Vec<Option<f64>>,
}

/// `GET /members/<app>` on nginx's admin socket: the list nginx's Lua side holds.
fn admin_get(socket: &Path, app: &str) -> Option<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(format!("GET /members/{app} HTTP/1.0\r\nHost: berth\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// Polls the admin socket every millisecond until `stop`; each new answer with the wall
/// time it arrived.
fn watch_members(
    socket: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(SystemTime, String)>> {
    std::thread::spawn(move || {
        let mut seen: Vec<(SystemTime, String)> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(text) = admin_get(&socket, "web") {
                if seen.last().map(|(_, t)| t) != Some(&text) {
                    seen.push((SystemTime::now(), text));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    })
}

fn member_set(text: &str) -> BTreeSet<String> {
    members_in(text).into_iter().collect()
}

/// Edits `replicas` and runs passes until the plan is empty, watching nginx's list.
async fn change(
    ctl: &Arc<Controller<DockerRuntime>>,
    env: &Scene,
    socket: &Path,
    replicas: usize,
    reloads: &mut u64,
) -> Change {
    let before = admin_get(socket, "web").map(|t| member_set(&t));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_members(socket.to_path_buf(), stop.clone());
    spans::take();
    write_spec(
        env.specs.path(),
        "web",
        &web_spec("berth-demo:v1", replicas),
    );
    let edited = Instant::now();
    let mut first_phases = None;
    loop {
        let report = reconcile::run_pass(ctl, "bench").await.unwrap();
        assert_eq!(report.steps_failed, 0, "{report:?}");
        *reloads += report.reloads as u64;
        first_phases.get_or_insert(report.phases);
        if !report.changed {
            break;
        }
        assert!(
            edited.elapsed() < CYCLE_LOAD - QUIET - WARM,
            "scaling to {replicas} outlasted the load"
        );
    }
    let passes_ms = ms(edited.elapsed());
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("member watcher");
    let steps = spans::take();
    let decided = if replicas > FROM {
        steps
            .iter()
            .find(|s| s.name == "step" && s.app == "web" && s.step == "create")
            .map(|s| s.closed)
    } else {
        // The first pass after the edit planned the scale-in.
        let pass = steps
            .iter()
            .filter(|s| s.name == "reconcile_pass")
            .min_by_key(|s| s.opened);
        pass.zip(first_phases).map(|(pass, p)| {
            pass.opened
                + Duration::from_secs_f64((p.observe_ms + p.desired_ms + p.plan_ms) / 1000.0)
        })
    };
    // The list nginx ends with, and the first answer that had it.
    let last = seen.last().map(|(_, text)| member_set(text));
    let nginx_holds = last.as_ref().and_then(|target| {
        seen.iter()
            .find(|(_, text)| member_set(text) == *target)
            .map(|(at, _)| *at)
            .filter(|_| before.as_ref() != Some(target))
    });
    if let Some(target) = &last {
        assert_eq!(target.len(), replicas, "nginx holds {target:?}");
    }
    let added = match (&before, &last) {
        (Some(before), Some(after)) => after.difference(before).cloned().collect(),
        _ => Vec::new(),
    };
    Change {
        added,
        decided,
        nginx_holds,
        passes_ms,
    }
}

/// The first `time` at or after `after` at which `address` answered a request 200, from
/// nginx's access log (`upstream` is the last member a request tried).
fn first_served(log: &str, address: &str, after: SystemTime) -> Option<SystemTime> {
    let after_s = after
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["app"] == "web" && v["status"] == 200)
        .filter(|v| {
            v["upstream"]
                .as_str()
                .and_then(|u| u.rsplit(", ").next())
                .is_some_and(|u| u == address)
        })
        .filter_map(|v| v["time"].as_f64())
        // nginx logs whole ms: a request served in the decision's millisecond counts.
        .find(|t| *t >= (after_s * 1000.0).floor() / 1000.0)
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t))
}

async fn cycle(
    ctl: &Arc<Controller<DockerRuntime>>,
    env: &Scene,
    socket: &Path,
    access_log: &Path,
) -> Cycle {
    let reloads_before = ctl.proxy().reloads();
    let wrk = Wrk::start(&format!("http://127.0.0.1:{}/web/", env.port), CYCLE_LOAD);
    let started = Instant::now();
    tokio::time::sleep(WARM).await;
    let mut reloads = 0;
    let up = change(ctl, env, socket, TO, &mut reloads).await;
    tokio::time::sleep(WARM).await;
    let down = change(ctl, env, socket, FROM, &mut reloads).await;
    assert!(
        started.elapsed() < CYCLE_LOAD - QUIET,
        "the cycle ended after the load stopped; lengthen CYCLE_LOAD"
    );
    let load = tokio::task::spawn_blocking(move || wrk.finish())
        .await
        .unwrap();
    reloads = reloads.max(ctl.proxy().reloads() - reloads_before);
    let log = std::fs::read_to_string(access_log).unwrap_or_default();
    let first_served = up
        .added
        .iter()
        .map(|address| {
            let decided = up.decided?;
            Some(since_ms(decided, first_served(&log, address, decided)?))
        })
        .collect();
    Cycle {
        load,
        reloads,
        up,
        down,
        first_served,
    }
}

/// "median / max" of the values, or "-" when there is none.
fn median_max(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    format!("{:.1} / {max:.1}", median(values.to_vec()))
}

/// The scale table and the member-change latency table, `cycles` cycles.
pub async fn section(cycles: usize) -> String {
    assert!(
        super::wrk::wrk_binary().exists(),
        "wrk is not installed: run scripts/bench.sh or apt-get install wrk"
    );
    spans::install();
    let env = env("scale");
    write_spec(env.specs.path(), "web", &web_spec("berth-demo:v1", FROM));
    let ctl = controller(&env).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = reconcile::run_pass(&ctl, "bench").await.unwrap();
        assert_eq!(report.steps_failed, 0, "{report:?}");
        if !report.changed && super::http_status(env.port, "/web/") == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "web never converged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let socket = env.state.path().join("nginx/conf.d/_berth/admin.sock");
    let dynamic = socket.exists();
    let access_log = ctl.proxy().access_log().expect("private nginx");
    let mut done = Vec::new();
    for n in 0..cycles {
        let c = cycle(&ctl, &env, &socket, &access_log).await;
        eprintln!(
            "scale cycle {n}: failed {} of {} ({:.0} req/s), {} reloads, up {:.0} ms (nginx {:?} ms after the decision, first served {:?}), down {:.0} ms (nginx {:?} ms); {}",
            c.load.failed(),
            c.load.sent,
            c.load.rps(),
            c.reloads,
            c.up.passes_ms,
            c.up.nginx_ms(),
            c.first_served,
            c.down.passes_ms,
            c.down.nginx_ms(),
            c.load.detail
        );
        done.push(c);
    }
    drop(ctl);
    drop(env);
    table(&done, dynamic)
}

fn table(done: &[Cycle], dynamic: bool) -> String {
    let mode = if dynamic { "dynamic" } else { "reload" };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Scaling {FROM} -> {TO} -> {FROM} under load ({} cycles, berth `--proxy-mode {mode}`)\n\n\
         One http app (`berth-demo:v1`, health every 2 s, `drainSeconds: 1`) behind berth's \
         nginx, wrk as in the rolling update ({}s per cycle, nothing sent in the last {}s). \
         Each cycle edits the spec's `replicas` {FROM} -> {TO} {}s into the load and runs \
         passes until the plan is empty, waits {}s, then {TO} -> {FROM} the same way. \
         **Failed** and **closed keep-alive** as in the rolling update; **reloads**: nginx \
         reloads during the cycle. Pass times run from the spec edit to the pass that found \
         nothing to do (the scale-in includes its 1 s drain and the stop).\n\n\
         | cycle | failed / sent | closed keep-alive | req/s | nginx reloads | {FROM} -> {TO} ms | {TO} -> {FROM} ms |\n\
         |---|---|---|---|---|---|---|",
        done.len(),
        CYCLE_LOAD.as_secs(),
        QUIET.as_secs(),
        WARM.as_secs(),
        WARM.as_secs(),
    );
    for (n, c) in done.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} / {} | {} | {:.0} | {} | {:.0} | {:.0} |",
            n + 1,
            c.load.failed(),
            c.load.sent,
            c.load.read_errors,
            c.load.rps(),
            c.reloads,
            c.up.passes_ms,
            c.down.passes_ms
        );
    }
    let failed: u64 = done.iter().map(|c| c.load.failed()).sum();
    let sent: u64 = done.iter().map(|c| c.load.sent).sum();
    let _ = writeln!(
        md,
        "| all | **{failed} / {sent}** ({} non-200, {} unanswered, {} connect) | {} | {:.0} (median) | **{}** | {:.0} (median) | {:.0} (median) |",
        done.iter().map(|c| c.load.non_200).sum::<u64>(),
        done.iter().map(|c| c.load.unanswered()).sum::<u64>(),
        done.iter().map(|c| c.load.connect_errors).sum::<u64>(),
        done.iter().map(|c| c.load.read_errors).sum::<u64>(),
        median(done.iter().map(|c| c.load.rps()).collect()),
        done.iter().map(|c| c.reloads).sum::<u64>(),
        median(done.iter().map(|c| c.up.passes_ms).collect()),
        median(done.iter().map(|c| c.down.passes_ms).collect()),
    );
    if !dynamic {
        let _ = writeln!(
            md,
            "\nMember-change latency is measured in dynamic mode only (it reads nginx's admin socket)."
        );
        return md;
    }
    let up: Vec<f64> = done.iter().filter_map(|c| c.up.nginx_ms()).collect();
    let down: Vec<f64> = done.iter().filter_map(|c| c.down.nginx_ms()).collect();
    let all: Vec<f64> = up.iter().chain(&down).cloned().collect();
    let served: Vec<f64> = done
        .iter()
        .flat_map(|c| c.first_served.iter().flatten())
        .cloned()
        .collect();
    let members: usize = done.iter().map(|c| c.first_served.len()).sum();
    let _ = writeln!(
        md,
        "\n#### Member-change latency, median / max in ms\n\n\
         **Decision**, from berth's own spans: an added member when its `create` step ends \
         (its replicas passed the health gate and join the members); a removed one when the \
         pass's plan is made (the `reconcile_pass` span's start plus its observe, desired and \
         plan phases: the plan's member list leaves the replicas out and goes to nginx with \
         the pass's proxy batch, before the drain and the stop). **nginx answers**: the first answer of nginx's admin socket \
         (`GET /members/web`, polled every 1 ms by the bench while the passes run, so up to \
         ~1 ms late) holding the new list. **First request**: the first 200 in nginx's access \
         log served by an added member (wrk's requests, at the rate in the table above, go \
         round-robin over {TO} members, so a member's first request comes a few ms after nginx \
         holds it; the log has whole ms). The target is a median of at most 50 ms from the decision to \
         nginx.\n\n\
         | member change | changes | decision -> nginx answers with the new list | decision -> first request served by an added member |\n\
         |---|---|---|---|\n\
         | add {} ({FROM} -> {TO}) | {} | {} | {} ({} of {members} members seen) |\n\
         | remove {} ({TO} -> {FROM}) | {} | {} | |\n\
         | **all** | {} | **{}** | |",
        TO - FROM,
        up.len(),
        median_max(&up),
        median_max(&served),
        served.len(),
        TO - FROM,
        down.len(),
        median_max(&down),
        all.len(),
        median_max(&all),
    );
    md
}
