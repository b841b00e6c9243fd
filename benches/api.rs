//! Load test of `GET /api/v1/apps` with 200 apps, printed as a table (requests/s and
//! latency percentiles per number of keep-alive connections).
//!
//! Run: `cargo bench --bench api` (release build). The server is the real router with the
//! real `Controller` adapter and a file-backed SQLite store (200 app rows) plus a last pass
//! of 200 apps x 3 containers; the container runtime is a fake that refuses mutation. The
//! client is a bounded keep-alive HTTP/1.1 client on 127.0.0.1 in the same process: each
//! row sends a fixed number of requests (after a warm-up) or stops at a time cap. Server
//! and client share the machine's cores, so the figures are a floor. Under `cargo test`
//! (no `--bench` argument, debug build) it runs a short smoke version of the same rows.

#[path = "../tests/api_support/mod.rs"]
mod api_support;

use api_support::{container, spec, PASS_AT};
use berth::api::{self, ApiConfig};
use berth::plan::{self, Desired, DesiredApp, Health, Observed, Overrides};
use berth::proxy::Proxy;
use berth::reconcile::{Controller, LastPass, Settings};
use berth::runtime::ContainerObserver;
use berth::spec::SourceRef;
use berth::store::{AppDesiredRecord, AppStatus, Store};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const APPS: usize = 200;
const REQUESTS_PER_ROW: usize = 20_000;
const WARMUP: usize = 500;
/// Requests per row (and warm-up) when run by `cargo test` rather than `cargo bench`.
const SMOKE_REQUESTS_PER_ROW: usize = 320;
const SMOKE_WARMUP: usize = 32;
const TIME_CAP: Duration = Duration::from_secs(30);
const CONNECTIONS: [usize; 3] = [1, 8, 32];

/// One keep-alive connection: sends GET and reads one content-length framed answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Conn {
    async fn open(address: &str, path: &str) -> Conn {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(256 * 1024),
            request: format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").into_bytes(),
        }
    }

    /// Returns the body length; panics on anything but a 200.
    async fn get(&mut self) -> usize {
        self.stream.write_all(&self.request).await.expect("send");
        self.buf.clear();
        let mut chunk = [0u8; 64 * 1024];
        let (head_end, body_len) = loop {
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("utf-8 head");
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .expect("content-length");
                break (end + 4, len);
            }
        };
        while self.buf.len() < head_end + body_len {
            let n = self.stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "server closed mid-body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        body_len
    }
}

/// A controller like `berth serve` builds, on a SQLite file, with the fake runtime.
async fn controller(
    state: &std::path::Path,
) -> std::sync::Arc<Controller<api_support::FakeRuntime>> {
    let store = Store::open(&state.join("berth.db")).await.unwrap();
    let proxy = Proxy::private(
        state.join("nginx"),
        "127.0.0.1:1".into(),
        "/nonexistent/nginx".into(),
    );
    let settings = Settings {
        source: berth::source::SourceConfig::Dir(state.join("specs")),
        interval: Duration::from_secs(5),
        network: "berth-bench".into(),
        parallel_apps: 1,
        host_env: BTreeMap::new(),
        stop_timeout_seconds: 1,
        deletion_budget: Default::default(),
        history: Default::default(),
        images: Default::default(),
        spec_policy: Default::default(),
        tls: Default::default(),
    };
    Controller::new(Default::default(), proxy, store, settings)
}

async fn populate(ctl: &Controller<api_support::FakeRuntime>) {
    let mut apps = BTreeMap::new();
    let mut containers = Vec::new();
    for i in 0..APPS {
        let name = format!("app-{i:03}");
        let mut spec = spec(&name);
        spec.replicas = Some(3);
        let app = DesiredApp::new(
            spec,
            SourceRef {
                file: format!("apps/{name}.yaml").into(),
                line: 1,
            },
        );
        for n in 0..3 {
            containers.push(container(&name, (i * 3 + n) as u16, &app.hash));
        }
        let status = if i % 10 == 0 {
            AppStatus::Degraded
        } else {
            AppStatus::Synced
        };
        let error = (status == AppStatus::Degraded).then_some("1 of 3 containers unhealthy");
        ctl.store()
            .record_app_pass(
                &AppDesiredRecord {
                    name: name.clone(),
                    spec_json: serde_json::to_string(&app.spec).unwrap(),
                    spec_hash: app.hash.clone(),
                    source_file: app.source.file.display().to_string(),
                    revision: "rev1".into(),
                    at: PASS_AT,
                },
                status,
                error,
            )
            .await
            .unwrap();
        apps.insert(name, app);
    }
    let desired = Desired {
        revision: "rev1".into(),
        apps,
        held: BTreeMap::new(),
        prune_blocked: None,
        proxy_listen: "127.0.0.1:8080".into(),
        proxy_tls: Default::default(),
        upstreams: Default::default(),
        leaving_deps: Default::default(),
    };
    let observed = Observed {
        health: containers
            .iter()
            .map(|c| (c.id.clone(), Health::Healthy))
            .collect(),
        containers,
        proxy_files: BTreeMap::new(),
        heal: BTreeMap::new(),
        retry: BTreeMap::new(),
        images: BTreeMap::new(),
        services: Vec::new(),
    };
    let plan = plan::plan(&desired, &observed, &Overrides::default(), PASS_AT);
    ctl.publish_last_pass(LastPass {
        at: PASS_AT,
        trigger: "bench".into(),
        desired: desired.into(),
        observed,
        plan,
        issues: Vec::new(),
        duration_ms: 1,
        ..LastPass::default()
    });
}

struct Row {
    connections: usize,
    requests: usize,
    seconds: f64,
    micros: Vec<u64>,
    body_bytes: usize,
}

async fn run_row(address: &str, connections: usize, requests: usize, warmup: usize) -> Row {
    let per_conn = requests / connections;
    let mut conns = Vec::new();
    for _ in 0..connections {
        let mut conn = Conn::open(address, "/api/v1/apps").await;
        for _ in 0..warmup / connections {
            conn.get().await;
        }
        conns.push(conn);
    }
    let deadline = Instant::now() + TIME_CAP;
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut micros = Vec::with_capacity(per_conn);
                let mut body = 0;
                for _ in 0..per_conn {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    body = conn.get().await;
                    micros.push(t.elapsed().as_micros() as u64);
                }
                (micros, body)
            })
        })
        .collect();
    let mut micros = Vec::new();
    let mut body_bytes = 0;
    for task in tasks {
        let (m, b) = task.await.unwrap();
        micros.extend(m);
        body_bytes = b;
    }
    let seconds = started.elapsed().as_secs_f64();
    micros.sort_unstable();
    Row {
        connections,
        requests: micros.len(),
        seconds,
        micros,
        body_bytes,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// The dashboard: bytes a first visit transfers (page, script, CSS, the overview fragment of
/// 200 apps), the overview's latency on one connection (a new pass is not published during
/// the run, so after the first request these are the memo's answers), one render's cost
/// (the first request of each wall-clock second renders), and what 10 open browsers polling
/// every 2 s cost in real time: 10 connections, 200 ms apart, each polling every 2 s for
/// `window`, the process's CPU time over the window (clients included, so a ceiling).
async fn dashboard(address: &str, requests: usize) {
    let mut total = 0;
    for path in api::dashboard::OPEN_ROUTES.iter().chain(&["/ui/overview"]) {
        total += Conn::open(address, path).await.get().await;
    }
    let mut conn = Conn::open(address, "/ui/overview").await;
    for _ in 0..requests / 10 {
        conn.get().await;
    }
    let mut micros = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        conn.get().await;
        micros.push(started.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    // One render: a request right after a wall-clock second turns (the memo's key).
    let mut renders = Vec::new();
    for _ in 0..5 {
        let next_second = 1_000 - (berth::clock::now_ms() % 1_000) as u64;
        tokio::time::sleep(Duration::from_millis(next_second + 5)).await;
        let started = Instant::now();
        conn.get().await;
        renders.push(started.elapsed().as_micros() as u64);
    }
    renders.sort_unstable();
    let window = Duration::from_secs(if requests > 100 { 20 } else { 6 });
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let browsers: Vec<_> = (0..10u64)
        .map(|i| {
            let address = address.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200 * i)).await;
                let mut conn = Conn::open(&address, "/ui/overview").await;
                let mut polls = 0;
                while started.elapsed() < window {
                    conn.get().await;
                    polls += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                polls
            })
        })
        .collect();
    let mut polls = 0;
    for browser in browsers {
        polls += browser.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_share = (cpu_seconds() - cpu_before) / elapsed;
    println!(
        "dashboard, {APPS} apps: first visit {:.1} KiB (page + script + css + overview); \
         GET /ui/overview p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {requests}; \
         one render (first request of a second) median {:.2} ms; \
         10 browsers polling every 2 s for {:.0} s ({polls} polls): {:.2}% of one core",
        total as f64 / 1024.0,
        percentile(&micros, 50.0),
        percentile(&micros, 99.0),
        percentile(&micros, 100.0),
        percentile(&renders, 50.0),
        elapsed,
        cpu_share * 100.0,
    );
}

/// This process's user + system CPU seconds (from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (requests, warmup) = if full {
        (REQUESTS_PER_ROW, WARMUP)
    } else {
        println!("smoke run (cargo test); `cargo bench --bench api` gives the figures");
        (SMOKE_REQUESTS_PER_ROW, SMOKE_WARMUP)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ctl = controller(state.path()).await;
        populate(&ctl).await;
        let listener = api::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let router = api::router(ctl.clone(), &ApiConfig::default());
        tokio::spawn(api::serve(listener, router, std::future::pending()));

        // Sanity: the answer holds every app.
        let list = api::client::Client::new(&address, None, Duration::from_secs(5))
            .get("/api/v1/apps")
            .await
            .unwrap();
        assert_eq!(list["apps"].as_array().unwrap().len(), APPS);

        println!(
            "GET /api/v1/apps, {APPS} apps x 3 containers, SQLite file store, loopback, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:>5}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}",
            "conns", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "body KiB"
        );
        for connections in CONNECTIONS {
            let row = run_row(&address, connections, requests, warmup).await;
            println!(
                "{:>5}  {:>8}  {:>9.0}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}  {:>9.1}",
                row.connections,
                row.requests,
                row.requests as f64 / row.seconds,
                percentile(&row.micros, 50.0),
                percentile(&row.micros, 90.0),
                percentile(&row.micros, 99.0),
                percentile(&row.micros, 100.0),
                row.body_bytes as f64 / 1024.0,
            );
        }
        dashboard(&address, if full { 2_000 } else { 50 }).await;
        let calls = ctl.runtime().calls();
        assert_eq!(
            calls.mutating(),
            0,
            "the api made a mutating call: {calls:?}"
        );
    });
}
