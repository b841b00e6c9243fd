//! Rolling update under load: one http app with N replicas behind nginx (N from
//! `BERTH_BENCH_ROLLOUT_REPLICAS`, 3 and 5 by default), ~500 req/s from wrk (wrk.rs), image
//! v1 -> v2 a few seconds into the load; failed requests counted for berth and for
//! `docker-compose up -d` recreating the same N replicas behind an nginx configured like
//! berth's.
//!
//! compose has no proxy and cannot publish one host port for N replicas, so its side is
//! what a compose user would run: N services on fixed loopback ports and a host nginx
//! whose upstream lists them, with the same upstream settings berth renders
//! (`max_fails=1 fail_timeout=2s`, `proxy_next_upstream error timeout http_502 http_503`,
//! 3 tries, keep-alive). Everything is removed by Drop guards.

use super::wrk::{wrk_binary, Load, Wrk, CONNECTIONS, DELAY_MS, QUIET, TIMEOUT};
use super::{cell, controller, env, free_port, median, ms, nginx_binary, write_spec};
use super::{ComposeGuard, NginxGuard};
use berth::reconcile;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

/// Load duration for a rollout of `replicas` (35 s for 3, 5 s more per extra replica: one
/// replica at a time takes ~2 s on a quiet machine, ~4 s while other builds share the two
/// cores, and compose's `up -d` took up to 12 s then); the update starts [`UPDATE_AT`]
/// into it.
pub(super) fn load_for(replicas: usize) -> Duration {
    Duration::from_secs(20 + 5 * replicas as u64)
}
pub(super) const UPDATE_AT: Duration = Duration::from_secs(3);
/// Stop timeout both tools give a replaced container (berth: `--stop-timeout`; compose `-t`).
const STOP_TIMEOUT: u32 = 2;

/// The app under test, as a user would write it (health every 2 s, drain 1 s).
pub fn web_spec(image: &str, replicas: usize) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: {image}\n  ports:\n    - containerPort: 8080\n  health:\n    httpGet: {{ path: /healthz, port: 8080 }}\n    intervalSeconds: 2\n    timeoutSeconds: 1\n  replicas: {replicas}\n  termination:\n    drainSeconds: 1\n"
    )
}

/// One rollout under load, berth side: converge v1, start wrk, switch the spec to v2 at
/// [`UPDATE_AT`] and run passes until the plan is empty. Returns the load counts, the time
/// from the spec change to the pass that found nothing left to do and the nginx reloads
/// the rollout's passes made (0 with dynamic upstreams).
pub(super) async fn berth_once(run: usize, replicas: usize) -> (Load, f64, usize) {
    let load_time = load_for(replicas);
    let env = env(&format!("roll{replicas}x{run}"));
    write_spec(
        env.specs.path(),
        "web",
        &web_spec("berth-demo:v1", replicas),
    );
    let ctl = controller(&env).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = reconcile::run_pass(&ctl, "bench").await.unwrap();
        assert_eq!(report.steps_failed, 0, "{report:?}");
        if !report.changed && super::http_status(env.port, "/web/") == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "web v1 never converged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wrk = Wrk::start(&format!("http://127.0.0.1:{}/web/", env.port), load_time);
    let load_started = Instant::now();
    tokio::time::sleep(UPDATE_AT).await;
    write_spec(
        env.specs.path(),
        "web",
        &web_spec("berth-demo:v2", replicas),
    );
    let update = Instant::now();
    let mut reloads = 0;
    loop {
        let report = reconcile::run_pass(&ctl, "bench").await.unwrap();
        assert_eq!(report.steps_failed, 0, "{report:?}");
        reloads += report.reloads;
        if !report.changed {
            break;
        }
        assert!(
            update.elapsed() < load_time - QUIET,
            "the rollout outlasted the load"
        );
    }
    let rollout = ms(update.elapsed());
    assert!(
        load_started.elapsed() < load_time - QUIET,
        "the rollout ended after the load stopped; lengthen load_for"
    );
    let load = tokio::task::spawn_blocking(move || wrk.finish())
        .await
        .unwrap();
    assert!(
        load.v1 > 0 && load.v2 > 0,
        "berth run {run}: the load did not see v1 then v2: {load:?}"
    );
    drop(ctl);
    drop(env);
    (load, rollout, reloads)
}

/// compose's side: the project, its fixed ports and the host nginx in front, torn down on drop.
/// Fields drop in order: the host nginx stops first, then `docker-compose down`.
struct ComposeScene {
    nginx: Option<NginxGuard>,
    compose: ComposeGuard,
    ports: Vec<u16>,
    nginx_port: u16,
}

impl ComposeScene {
    fn new(run: usize, replicas: usize) -> ComposeScene {
        ComposeScene {
            nginx: None,
            compose: ComposeGuard {
                project: format!("benchroll{replicas}x{run}p{}", std::process::id()),
                dir: tempfile::tempdir().unwrap(),
            },
            ports: (0..replicas).map(|_| free_port()).collect(),
            nginx_port: free_port(),
        }
    }

    fn write_compose(&self, image: &str) {
        let mut yaml = String::from("version: \"2.4\"\nservices:\n");
        for (i, port) in self.ports.iter().enumerate() {
            let _ = write!(
                yaml,
                "  web{i}:\n    image: {image}\n    ports: [\"127.0.0.1:{port}:8080\"]\n    labels:\n      berth.instance: {}\n",
                self.compose.project
            );
        }
        std::fs::write(self.compose.dir.path().join("docker-compose.yml"), yaml).unwrap();
    }

    fn compose_up(&self) {
        let timeout = STOP_TIMEOUT.to_string();
        super::compose_up(
            self.compose.dir.path(),
            &self.compose.project,
            &["-t", &timeout],
        );
    }

    /// A host nginx whose upstream is the N published ports, set up like berth's.
    fn start_nginx(&mut self) {
        let prefix = self.compose.dir.path().join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let servers: String = self
            .ports
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let conf = format!(
            "daemon on;\npid {pid};\nerror_log {prefix}/logs/error.log warn;\nworker_processes 1;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n\
                 upstream web {{\n{servers}        keepalive 16;\n    }}\n\
                 server {{\n        listen 127.0.0.1:{port};\n\
                     location /web/ {{\n            proxy_pass http://web/;\n\
                         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n\
                         proxy_next_upstream error timeout http_502 http_503;\n\
                         proxy_next_upstream_tries 3;\n            proxy_connect_timeout 2s;\n\
                     }}\n        }}\n}}\n",
            pid = prefix.join("nginx.pid").display(),
            prefix = prefix.display(),
            port = self.nginx_port,
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let out = Command::new(nginx_binary())
            .args(["-p", prefix.to_str().unwrap(), "-c"])
            .arg(&conf_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx failed to start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.nginx = Some(NginxGuard { prefix });
    }
}

/// One rollout under load, compose side: `up -d` with v1, nginx in front, wrk, then `up -d`
/// with v2 at [`UPDATE_AT`]. The rollout time runs from the second `up` to every replica
/// answering v2 on its port.
fn compose_once(run: usize, replicas: usize) -> (Load, f64) {
    let load_time = load_for(replicas);
    let mut scene = ComposeScene::new(run, replicas);
    scene.write_compose("berth-demo:v1");
    scene.compose_up();
    scene.start_nginx();
    let deadline = Instant::now() + Duration::from_secs(60);
    while super::http_status(scene.nginx_port, "/web/") != Some(200)
        || scene
            .ports
            .iter()
            .any(|p| super::http_status(*p, "/") != Some(200))
    {
        assert!(Instant::now() < deadline, "compose v1 never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrk = Wrk::start(
        &format!("http://127.0.0.1:{}/web/", scene.nginx_port),
        load_time,
    );
    let load_started = Instant::now();
    std::thread::sleep(UPDATE_AT);
    scene.write_compose("berth-demo:v2");
    let update = Instant::now();
    scene.compose_up();
    while scene
        .ports
        .iter()
        .any(|p| body(*p).as_deref() != Some("v2\n"))
    {
        assert!(
            update.elapsed() < load_time - QUIET,
            "compose's v2 never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rollout = ms(update.elapsed());
    assert!(
        load_started.elapsed() < load_time - QUIET,
        "the compose update ended after the load stopped; lengthen load_for"
    );
    let load = wrk.finish();
    assert!(
        load.v1 > 0 && load.v2 > 0,
        "compose run {run}: the load did not see v1 then v2: {load:?}"
    );
    drop(scene);
    (load, rollout)
}

fn body(port: u16) -> Option<String> {
    match super::support::http_get(&format!("127.0.0.1:{port}"), "/", None) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// One rollout table per replica count: `runs` repetitions each, berth and compose
/// interleaved.
pub async fn section(runs: usize, replica_counts: &[usize]) -> String {
    assert!(
        wrk_binary().exists(),
        "wrk is not installed: run scripts/bench.sh or apt-get install wrk"
    );
    let mut md = String::new();
    for &replicas in replica_counts {
        md.push_str(&table(runs, replicas).await);
    }
    md
}

/// The rollout table of `replicas` replicas.
async fn table(runs: usize, replicas: usize) -> String {
    let load_time = load_for(replicas);
    let mut berth = Vec::new();
    let mut compose = Vec::new();
    let mut berth_reloads = Vec::new();
    for run in 0..runs {
        let (load, rollout, reloads) = berth_once(run, replicas).await;
        eprintln!(
            "rollout {replicas} replicas, run {run}: berth failed {} of {} ({:.0} req/s), rollout {rollout:.0} ms, {reloads} nginx reloads; {}",
            load.failed(),
            load.sent,
            load.rps(),
            load.detail
        );
        berth.push((load, rollout));
        berth_reloads.push(reloads);
        let (load, rollout) = tokio::task::spawn_blocking(move || compose_once(run, replicas))
            .await
            .unwrap();
        eprintln!(
            "rollout {replicas} replicas, run {run}: compose failed {} of {} ({:.0} req/s), update {rollout:.0} ms; {}",
            load.failed(),
            load.sent,
            load.rps(),
            load.detail
        );
        compose.push((load, rollout));
    }
    let mode = match std::env::var("BERTH_TEST_PROXY_MODE").as_deref() {
        Ok("reload") => "reload",
        _ => "dynamic",
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Rolling update under load ({replicas} replicas, `berth-demo:v1` -> `v2`, {runs} runs, berth `--proxy-mode {mode}`)\n\n\
         wrk (Debian's 4.1, 1 thread, {CONNECTIONS} keep-alive connections, {DELAY_MS} ms think \
         time, {}s with no request sent in the last {}s, {}s timeout, so every request sent is \
         answered or timed out before wrk stops) \
         on 127.0.0.1 through nginx; the update starts {}s into the load. **Failed** = answers \
         other than 200 + requests sent that got no answer + connections that could not open. \
         **Closed idle** = wrk's read errors: the server closed a keep-alive connection; with no \
         request unanswered these are idle connections an nginx reload's old workers closed \
         (a client reconnects; nothing was lost). berth: the spec changes to v2 and passes run \
         until the plan is empty (health every 2 s, `drainSeconds: 1`, stop timeout \
         {STOP_TIMEOUT} s). compose: `docker-compose up -d -t {STOP_TIMEOUT}` with v2 in the \
         file recreates {replicas} services on fixed loopback ports behind a host nginx configured \
         like berth's (it never reloads).\n\n\
         | run | berth failed / sent | closed idle | req/s | rollout ms | compose failed / sent | closed idle | req/s | update ms |\n\
         |---|---|---|---|---|---|---|---|---|",
        load_time.as_secs(),
        QUIET.as_secs(),
        TIMEOUT.as_secs(),
        UPDATE_AT.as_secs()
    );
    for (run, ((b, br), (c, cr))) in berth.iter().zip(&compose).enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} / {} | {} | {:.0} | {br:.0} | {} / {} | {} | {:.0} | {cr:.0} |",
            run + 1,
            b.failed(),
            b.sent,
            b.read_errors,
            b.rps(),
            c.failed(),
            c.sent,
            c.read_errors,
            c.rps()
        );
    }
    let sum = |v: &[(Load, f64)], f: fn(&Load) -> u64| v.iter().map(|(l, _)| f(l)).sum::<u64>();
    let runs_failing = |v: &[(Load, f64)]| v.iter().filter(|(l, _)| l.failed() > 0).count();
    let summary = |v: &[(Load, f64)]| {
        let (failed, sent) = (sum(v, Load::failed), sum(v, |l| l.sent));
        format!(
            "**{failed} / {sent}** ({:.3}%; {} non-200, {} unanswered, {} connect), {} of {runs} runs with a failure | {} | {:.0} (median) | {} |",
            failed as f64 * 100.0 / sent.max(1) as f64,
            sum(v, |l| l.non_200),
            sum(v, Load::unanswered),
            sum(v, |l| l.connect_errors),
            runs_failing(v),
            sum(v, |l| l.read_errors),
            median(v.iter().map(|(l, _)| l.rps()).collect()),
            cell(&v.iter().map(|(_, r)| *r).collect::<Vec<_>>()),
        )
    };
    let _ = writeln!(md, "| all | {} {}", summary(&berth), summary(&compose));
    let _ = writeln!(
        md,
        "\nnginx reloads during berth's rollouts (per run): {:?} (`BERTH_TEST_PROXY_MODE=reload` runs the reload mode).",
        berth_reloads
    );
    let worst =
        |v: &[(Load, f64)], f: fn(&Load) -> f64| v.iter().map(|(l, _)| f(l)).fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "\nWorst p99 latency of a run: berth {:.1} ms, compose {:.1} ms; slowest single \
         request: berth {:.0} ms, compose {:.0} ms. Every run of both saw v1 and then v2 \
         answers through nginx under the load (checked).",
        worst(&berth, |l| l.p99_ms),
        worst(&compose, |l| l.p99_ms),
        worst(&berth, |l| l.max_ms),
        worst(&compose, |l| l.max_ms),
    );
    md
}
