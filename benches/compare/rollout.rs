//! Rolling update under load: one http app with 3 replicas behind nginx, ~500 req/s from
//! wrk (Debian's, one thread, loopback, bounded duration), image v1 -> v2 a few seconds into
//! the load; failed requests counted for berth and for `docker-compose up -d` recreating
//! the same three replicas behind an nginx configured like berth's.
//!
//! compose has no proxy and cannot publish one host port for three replicas, so its side is
//! what a compose user would run: three services on fixed loopback ports and a host nginx
//! whose upstream lists them, with the same upstream settings berth renders
//! (`max_fails=1 fail_timeout=2s`, `proxy_next_upstream error timeout http_502 http_503`,
//! 3 tries, keep-alive). Everything is removed by Drop guards.

use super::{cell, controller, env, free_port, median, ms, nginx_binary, write_spec};
use super::{ComposeGuard, NginxGuard};
use berth::reconcile;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Load duration; the update starts [`UPDATE_AT`] into it.
pub(super) const LOAD: Duration = Duration::from_secs(23);
pub(super) const UPDATE_AT: Duration = Duration::from_secs(3);
/// wrk connections and the think time per request: 10 x 1000/(18 ms + latency) ≈ 500 req/s.
const CONNECTIONS: u32 = 10;
const DELAY_MS: u32 = 18;
/// Stop timeout both tools give a replaced container (berth: `--stop-timeout`; compose `-t`).
const STOP_TIMEOUT: u32 = 2;

/// The app under test, as a user would write it (health every 2 s, drain 1 s).
pub(super) fn web_spec(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: {image}\n  ports:\n    - containerPort: 8080\n  health:\n    httpGet: {{ path: /healthz, port: 8080 }}\n    intervalSeconds: 2\n    timeoutSeconds: 1\n  replicas: 3\n  termination:\n    drainSeconds: 1\n"
    )
}

/// Quiet tail of each wrk run: no request is sent in the last seconds, so every request
/// sent has had time to be answered or to time out ([`TIMEOUT`]) when wrk stops (wrk drops
/// in-flight requests at its end).
pub(super) const QUIET: Duration = Duration::from_secs(3);
/// wrk's request timeout: a request unanswered this long counts as unanswered.
const TIMEOUT: Duration = Duration::from_secs(2);

/// wrk script: a think time per request; counts of requests sent (`request`), answers,
/// statuses and bodies; stops sending [`QUIET`] before the end. `done` prints one
/// machine-readable line with wrk's own socket-error counters. The clock is LuaJIT's ffi
/// `clock_gettime(CLOCK_MONOTONIC)` (wrk's Lua has no finer clock than `os.time`).
const WRK_SCRIPT: &str = r#"
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } berth_timespec;
int clock_gettime(int clk, berth_timespec *tp);
]]
local ts = ffi.new("berth_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  sent = 0; answered = 0; bad = 0; v1 = 0; v2 = 0; other = 0; s502 = 0; s503 = 0; s504 = 0
  first = 0; last = 0; stop_at = nil
end
function delay()
  local now = now_ms()
  if stop_at == nil then stop_at = now + SEND_MS end
  if now >= stop_at then return 3600000 end
  return DELAY
end
function request()
  -- wrk calls request() once before the run to check it (thread 0, before any delay()):
  -- not a request sent.
  if stop_at == nil then return wrk.format(nil, nil) end
  local now = now_ms()
  if sent == 0 then first = now end
  last = now
  sent = sent + 1
  return wrk.format(nil, nil)
end
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then bad = bad + 1 end
  if status == 502 then s502 = s502 + 1 elseif status == 503 then s503 = s503 + 1 elseif status == 504 then s504 = s504 + 1 end
  if body == "v1\n" then v1 = v1 + 1 elseif body == "v2\n" then v2 = v2 + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local keys = { "sent", "answered", "bad", "v1", "v2", "other", "s502", "s503", "s504" }
  local t = {}
  for _, k in ipairs(keys) do t[k] = 0 end
  local span = 0
  for _, thread in ipairs(threads) do
    for _, k in ipairs(keys) do t[k] = t[k] + thread:get(k) end
    span = math.max(span, thread:get("last") - thread:get("first"))
  end
  local e = summary.errors
  io.write(string.format(
    "BERTH-WRK sent=%d answered=%d non200=%d v1=%d v2=%d other=%d s502=%d s503=%d s504=%d send_ms=%d connect=%d read=%d write=%d timeout=%d p99_us=%d max_us=%d\n",
    t.sent, t.answered, t.bad, t.v1, t.v2, t.other, t.s502, t.s503, t.s504, span,
    e.connect, e.read, e.write, e.timeout, latency:percentile(99), latency.max))
end
"#;

/// What one wrk run counted.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Requests written (the script's `request` calls).
    pub sent: u64,
    /// Answers received, whatever their status.
    pub answered: u64,
    pub non_200: u64,
    /// wrk's connect errors: a connection the client wanted and could not open.
    pub connect_errors: u64,
    /// wrk's read errors: the server closed a connection (with or without a request on it).
    pub read_errors: u64,
    /// From the first to the last request sent.
    pub send_seconds: f64,
    pub v1: u64,
    pub v2: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// wrk's counts as printed (statuses, socket errors), for the log.
    pub detail: String,
}

impl Load {
    /// Requests that did not get a 200: non-200 answers, requests sent that never got an
    /// answer (reset, closed or timed out connections) and connections that could not open.
    pub fn failed(&self) -> u64 {
        self.non_200 + self.unanswered() + self.connect_errors
    }

    pub fn unanswered(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }

    /// Sending rate while the load ran (the quiet tail excluded).
    pub fn rps(&self) -> f64 {
        self.sent as f64 / self.send_seconds.max(1e-9)
    }

    fn parse(stdout: &str) -> Option<Load> {
        let line = stdout.lines().find(|l| l.starts_with("BERTH-WRK "))?;
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(Load {
            sent: field("sent"),
            answered: field("answered"),
            non_200: field("non200"),
            connect_errors: field("connect"),
            read_errors: field("read"),
            send_seconds: field("send_ms") as f64 / 1000.0,
            v1: field("v1"),
            v2: field("v2"),
            p99_ms: field("p99_us") as f64 / 1000.0,
            max_ms: field("max_us") as f64 / 1000.0,
            detail: line.trim_start_matches("BERTH-WRK ").to_string(),
        })
    }
}

/// A running wrk; [`Wrk::finish`] waits for it and parses its counts.
pub(super) struct Wrk {
    child: Option<Child>,
    _script: tempfile::NamedTempFile,
}

impl Wrk {
    pub(super) fn start(url: &str) -> Wrk {
        Wrk::start_for(url, LOAD)
    }

    /// Like [`Wrk::start`] with another load duration (the quiet tail included).
    pub(super) fn start_for(url: &str, load: Duration) -> Wrk {
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "load goes to loopback only: {url}"
        );
        let mut script = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut script,
            WRK_SCRIPT
                .replace("SEND_MS", &(load - QUIET).as_millis().to_string())
                .replace("DELAY", &DELAY_MS.to_string())
                .as_bytes(),
        )
        .unwrap();
        let child = Command::new(wrk_binary())
            .args([
                "-t1",
                &format!("-c{CONNECTIONS}"),
                &format!("-d{}s", load.as_secs()),
                "--timeout",
                &format!("{}s", TIMEOUT.as_secs()),
                "-s",
                script.path().to_str().unwrap(),
                url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wrk (apt-get install wrk)");
        Wrk {
            child: Some(child),
            _script: script,
        }
    }

    pub(super) fn finish(mut self) -> Load {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        Load::parse(&stdout).unwrap_or_else(|| {
            panic!(
                "wrk printed no counts: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wrk_binary() -> PathBuf {
    PathBuf::from("/usr/bin/wrk")
}

/// One rollout under load, berth side: converge v1, start wrk, switch the spec to v2 at
/// [`UPDATE_AT`] and run passes until the plan is empty. Returns the load counts and the
/// time from the spec change to the pass that found nothing left to do.
/// berth's side of one run: the load, the rollout's wall time and the nginx reloads the
/// rollout's passes made (0 with dynamic upstreams).
pub(super) async fn berth_once(run: usize) -> (Load, f64, usize) {
    let env = env(&format!("roll{run}"));
    write_spec(env.specs.path(), "web", &web_spec("berth-demo:v1"));
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
    let wrk = Wrk::start(&format!("http://127.0.0.1:{}/web/", env.port));
    let load_started = Instant::now();
    tokio::time::sleep(UPDATE_AT).await;
    write_spec(env.specs.path(), "web", &web_spec("berth-demo:v2"));
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
            update.elapsed() < LOAD - QUIET,
            "the rollout outlasted the load"
        );
    }
    let rollout = ms(update.elapsed());
    assert!(
        load_started.elapsed() < LOAD - QUIET,
        "the rollout ended after the load stopped; lengthen LOAD"
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
    ports: [u16; 3],
    nginx_port: u16,
}

impl ComposeScene {
    fn new(run: usize) -> ComposeScene {
        ComposeScene {
            nginx: None,
            compose: ComposeGuard {
                project: format!("benchroll{run}p{}", std::process::id()),
                dir: tempfile::tempdir().unwrap(),
            },
            ports: [free_port(), free_port(), free_port()],
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

    /// A host nginx whose upstream is the three published ports, set up like berth's.
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
fn compose_once(run: usize) -> (Load, f64) {
    let mut scene = ComposeScene::new(run);
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
    let wrk = Wrk::start(&format!("http://127.0.0.1:{}/web/", scene.nginx_port));
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
            update.elapsed() < LOAD - QUIET,
            "compose's v2 never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rollout = ms(update.elapsed());
    assert!(
        load_started.elapsed() < LOAD - QUIET,
        "the compose update ended after the load stopped; lengthen LOAD"
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

/// The rollout table: `runs` repetitions, berth and compose interleaved.
pub async fn section(runs: usize) -> String {
    assert!(
        wrk_binary().exists(),
        "wrk is not installed: run scripts/bench.sh or apt-get install wrk"
    );
    let mut berth = Vec::new();
    let mut compose = Vec::new();
    let mut berth_reloads = Vec::new();
    for run in 0..runs {
        let (load, rollout, reloads) = berth_once(run).await;
        eprintln!(
            "rollout run {run}: berth failed {} of {} ({:.0} req/s), rollout {rollout:.0} ms, {reloads} nginx reloads; {}",
            load.failed(),
            load.sent,
            load.rps(),
            load.detail
        );
        berth.push((load, rollout));
        berth_reloads.push(reloads);
        let (load, rollout) = tokio::task::spawn_blocking(move || compose_once(run))
            .await
            .unwrap();
        eprintln!(
            "rollout run {run}: compose failed {} of {} ({:.0} req/s), update {rollout:.0} ms; {}",
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
        "\n### Rolling update under load (3 replicas, `berth-demo:v1` -> `v2`, {runs} runs, berth `--proxy-mode {mode}`)\n\n\
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
         file recreates three services on fixed loopback ports behind a host nginx configured \
         like berth's (it never reloads).\n\n\
         | run | berth failed / sent | closed idle | req/s | rollout ms | compose failed / sent | closed idle | req/s | update ms |\n\
         |---|---|---|---|---|---|---|---|---|",
        LOAD.as_secs(),
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
