//! Autoscaler costs, printed as a table:
//! 1. collector, synthetic: CPU to ingest the access log at 1,000 requests/s (lines in
//!    nginx's exact format, written to a file in 15 s ticks, 3 apps);
//! 2. collector, live: a real private nginx proxying ~1,000 requests/s (keep-alive clients
//!    on 127.0.0.1, bounded in count and time) to an in-process upstream, the collector
//!    tailing nginx's log every second on its own thread; its CPU time from
//!    /proc/thread-self/schedstat, and what it measured against the truth;
//! 3. one-shot stats of 4 containers (needs Docker and the demo images; skipped otherwise);
//! 4. policy::decide per call.
//!
//! Run: `cargo bench --bench autoscale` (nginx from scripts/setup.sh).

use berth::autoscale::collector::AccessLog;
use berth::autoscale::policy::{self, AppState, Input, Metrics, PolicyConfig};
use berth::proxy::Proxy;
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{
    ContainerObserver, ContainerRequest, ContainerRuntime, LABEL_APP, LABEL_REVISION,
    LABEL_SPEC_HASH,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RATE: u32 = 1_000;
const LIVE_SECONDS: u64 = 20;

/// CPU time of the calling thread, nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn log_line(at_ms: i64, app: &str, upstream_ms: u32, port: u16) -> String {
    format!(
        "{{\"time\":{}.{:03},\"app\":\"{app}\",\"status\":200,\"request_time\":{:.3},\
         \"upstream_time\":\"{:.3}\",\"upstream\":\"127.0.0.1:{port}\",\
         \"request_id\":\"9f86d081884c7d659a2feaa0c55ad015\",\"method\":\"GET\",\
         \"host\":\"127.0.0.1\",\"uri\":\"/\",\"connections\":17}}\n",
        at_ms / 1000,
        at_ms % 1000,
        f64::from(upstream_ms + 1) / 1000.0,
        f64::from(upstream_ms) / 1000.0,
    )
}

struct Row {
    what: String,
    figure: String,
    note: String,
}

fn synthetic(rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    std::fs::write(&path, "").unwrap();
    let mut log = AccessLog::new(path.clone());
    let apps: BTreeMap<String, u32> = [("web", 20), ("api", 20), ("shop", 60)]
        .iter()
        .map(|(a, w)| (a.to_string(), *w))
        .collect();
    log.configure(&apps);
    log.poll(0).unwrap();
    let names: Vec<&String> = apps.keys().collect();
    let tick_s = 15i64;
    let ticks = 8i64;
    let t0 = now_ms();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let mut cpu = 0u64;
    let mut lines = 0u64;
    let mut bytes = 0u64;
    for tick in 0..ticks {
        let mut text = String::new();
        for i in 0..(RATE as i64 * tick_s) {
            let at = t0 + tick * tick_s * 1000 + i * 1000 / i64::from(RATE);
            let app = names[(i % 3) as usize];
            text.push_str(&log_line(
                at,
                app,
                (i % 50) as u32 + 1,
                30000 + (i % 4) as u16,
            ));
        }
        file.write_all(text.as_bytes()).unwrap();
        let now = t0 + (tick + 1) * tick_s * 1000;
        let before = thread_cpu_ns();
        let stats = log.poll(now).unwrap();
        for app in apps.keys() {
            std::hint::black_box(log.summary(app, now));
        }
        cpu += thread_cpu_ns() - before;
        lines += stats.lines;
        bytes += stats.bytes;
    }
    let seconds = (ticks * tick_s) as f64;
    let cpu_s = cpu as f64 / 1e9;
    rows.push(Row {
        what: format!("collector, synthetic: {RATE} req/s, 3 apps, 15 s ticks, {seconds:.0} s"),
        figure: format!("{:.3}% of one core", cpu_s / seconds * 100.0),
        note: format!(
            "{lines} lines, {:.1} MB, {:.2} µs/line",
            bytes as f64 / 1e6,
            cpu as f64 / 1e3 / lines as f64
        ),
    });
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 answering "ok" to everything.
fn upstream(stop: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || serve_conn(conn));
        }
    });
    port
}

fn serve_conn(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        // Read one request head (GETs, no body).
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
        }
        if writer
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
            )
            .is_err()
        {
            return;
        }
    }
}

/// One keep-alive GET; true on a complete 200.
fn get(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> bool {
    if writer
        .write_all(b"GET /bench/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    let mut status = 0;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if status == 0 {
            status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).is_ok() && status == 200
}

async fn live(rows: &mut Vec<Row>) {
    let Some(binary) = nginx_binary() else {
        rows.push(Row {
            what: "collector, live nginx".into(),
            figure: "skipped".into(),
            note: "nginx is not installed (scripts/setup.sh)".into(),
        });
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let proxy = Proxy::private(state.path().join("nginx"), listen.clone(), binary);
    let stop = Arc::new(AtomicBool::new(false));
    let up = upstream(stop.clone());
    let yaml = "apiVersion: v1\nkind: App\nmetadata:\n  name: bench\nspec:\n  type: http\n  image: x\n  ports:\n    - containerPort: 8080\n";
    let loaded = berth::spec::load_files(&[(PathBuf::from("bench.yaml"), yaml.to_string())]);
    let spec = &loaded.apps["bench"].0;
    let files = berth::plan::render::render_app(
        spec,
        &[format!("127.0.0.1:{up}")],
        &listen,
        &Default::default(),
        berth::plan::render::Upstreams::Static,
    );
    proxy.prepare().await.unwrap();
    proxy.ensure_running().await.unwrap();
    proxy.apply_files(&files, &[]).await.unwrap();
    let log_path = proxy.access_log().unwrap();

    // Collector thread: tick every second, CPU from its own schedstat.
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let done = done.clone();
        let path = log_path.clone();
        std::thread::spawn(move || {
            let mut log = AccessLog::new(path);
            log.configure(&BTreeMap::from([("bench".to_string(), 10)]));
            log.poll(now_ms()).unwrap();
            let cpu0 = thread_cpu_ns();
            let mut last = None;
            let mut polls = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = now_ms();
                log.poll(now).unwrap();
                last = log.summary("bench", now);
                polls += 1;
            }
            (thread_cpu_ns() - cpu0, log.totals, last, polls)
        })
    };

    // Load: 8 keep-alive connections paced to RATE in total, at most RATE x LIVE_SECONDS.
    let sent = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    // Completed requests per wall-clock millisecond second, to check the window's figure.
    let done_at: Arc<std::sync::Mutex<Vec<i64>>> = Arc::default();
    let conns = 32u32;
    let started = Instant::now();
    let max = u64::from(RATE) * LIVE_SECONDS;
    let period = Duration::from_secs_f64(f64::from(conns) / f64::from(RATE));
    let clients: Vec<_> = (0..conns)
        .map(|_| {
            let (sent, ok, done_at) = (sent.clone(), ok.clone(), done_at.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut next = Instant::now();
                while started.elapsed() < Duration::from_secs(LIVE_SECONDS) {
                    if sent.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                    if get(&mut reader, &mut writer) {
                        ok.fetch_add(1, Ordering::Relaxed);
                        mine.push(now_ms());
                    }
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                done_at.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1100));
    done.store(true, Ordering::Relaxed);
    let (cpu, totals, last, polls) = collector.join().unwrap();
    let summary_at = now_ms();
    stop.store(true, Ordering::Relaxed);
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        eprintln!("last log line: {}", text.lines().last().unwrap_or(""));
        eprintln!(
            "{}",
            files
                .iter()
                .map(|(f, t)| format!("{f}:\n{t}"))
                .collect::<String>()
        );
    }
    let _ = proxy.stop().await;
    let ok = ok.load(Ordering::Relaxed);
    let achieved = ok as f64 / elapsed;
    let run = elapsed + 1.1;
    rows.push(Row {
        what: format!(
            "collector, live nginx: {achieved:.0} req/s for {elapsed:.0} s, 1 s ticks ({polls})"
        ),
        figure: format!("{:.3}% of one core", cpu as f64 / 1e9 / run * 100.0),
        note: format!(
            "{} lines, {:.2} µs/line, {:.1} ms CPU in total",
            totals.lines,
            cpu as f64 / 1e3 / totals.lines.max(1) as f64,
            cpu as f64 / 1e6
        ),
    });
    if let Some(s) = last {
        // The last summary was taken at most ~1 s before `summary_at`.
        let truth = done_at
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t > summary_at - 11_000)
            .count();
        rows.push(Row {
            what: "  what it measured (10 s window, at the end)".into(),
            figure: format!("{:.0} req/s", s.rps),
            note: format!(
                "{} requests in window (clients saw ~{truth} in the last 10-11 s), p95 upstream \
                 {:.2} ms, {:.2} in flight; {} sent, {ok} answered 200",
                s.requests,
                s.p95_ms.unwrap_or(0.0),
                s.in_flight,
                sent.load(Ordering::Relaxed).min(max),
            ),
        });
    }
}

async fn stats(rows: &mut Vec<Row>) {
    let docker_ok = std::process::Command::new("docker")
        .args(["image", "inspect", "berth-demo:v1"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let Ok(rt) = DockerRuntime::connect(Some("bench-autoscale-stats".into())).await else {
        return;
    };
    if !docker_ok {
        rows.push(Row {
            what: "stats, 4 containers".into(),
            figure: "skipped".into(),
            note: "no Docker engine or no berth-demo:v1 (scripts/setup.sh)".into(),
        });
        return;
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        let request = ContainerRequest {
            name: format!("bench-autoscale-stats-{i}-{}", std::process::id()),
            image: "berth-demo:v1".into(),
            command: None,
            env: Vec::new(),
            ports: vec![8080],
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            labels: BTreeMap::from([
                (LABEL_APP.to_string(), "bench".to_string()),
                (LABEL_SPEC_HASH.to_string(), "h".to_string()),
                (LABEL_REVISION.to_string(), "r".to_string()),
            ]),
            network: None,
            options: Default::default(),
        };
        let id = rt.create(&request).await.unwrap();
        rt.start(&id).await.unwrap();
        ids.push(id);
    }
    let rounds = 20;
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(rt.stats(&ids).await.unwrap());
    }
    let wall = t0.elapsed().as_secs_f64() / f64::from(rounds);
    let cpu = (thread_cpu_ns() - cpu0) as f64 / 1e6 / f64::from(rounds);
    for id in &ids {
        let _ = rt.stop(id, 0).await;
        let _ = rt
            .remove(id, berth::runtime::RemoveVolumes::Anonymous)
            .await;
    }
    rows.push(Row {
        what: "stats, 4 containers, one tick (8 in flight max)".into(),
        figure: format!("{:.1} ms wall", wall * 1000.0),
        note: format!(
            "{cpu:.2} ms berth CPU per tick = {:.4}% of a core at a 15 s tick",
            cpu / 15_000.0 * 100.0
        ),
    });
}

fn decide(rows: &mut Vec<Row>) {
    let yaml = "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: x\n  ports:\n    - containerPort: 8080\n  scaling:\n    maxReplicas: 10\n    policy:\n      http:\n        targetRPSPerReplica: 50\n        maxP95LatencyMs: 200\n";
    let loaded = berth::spec::load_files(&[(PathBuf::from("web.yaml"), yaml.to_string())]);
    let scaling = loaded.apps["web"].0.scaling.clone().unwrap();
    let http = scaling.http.clone().unwrap();
    let config = PolicyConfig::default();
    let mut state = AppState::default();
    let n = 200_000;
    let t0 = Instant::now();
    for i in 0..n {
        let metrics = Metrics {
            coverage_seconds: 20.0,
            rps: Some(100.0 + (i % 7) as f64),
            p95_ms: Some(50.0),
            in_flight: Some(3.0),
            cpu_pct: Some(40.0),
            memory_pct: Some(30.0),
        };
        let input = Input {
            scaling: &scaling,
            override_replicas: Some(3),
            current: 3,
            ready: 3,
            metrics: &metrics,
        };
        std::hint::black_box(policy::decide(
            &config,
            &input,
            &http,
            &mut state,
            i as i64 * 15_000,
        ));
    }
    let ns = t0.elapsed().as_nanos() as f64 / f64::from(n);
    rows.push(Row {
        what: "policy::decide, one app, one tick".into(),
        figure: format!("{ns:.0} ns"),
        note: "pure; history bounded by the stabilization window".into(),
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    synthetic(&mut rows);
    rt.block_on(live(&mut rows));
    rt.block_on(stats(&mut rows));
    decide(&mut rows);
    let w = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let f = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(0);
    println!("| {:<w$} | {:>f$} | notes", "what", "figure");
    println!("|{}|{}|------", "-".repeat(w + 2), "-".repeat(f + 2));
    for r in rows {
        println!("| {:<w$} | {:>f$} | {}", r.what, r.figure, r.note);
    }
}
