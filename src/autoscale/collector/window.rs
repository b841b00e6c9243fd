//! The autoscaler's window math (pure: no I/O, no clock; time is a parameter): one access
//! log line -> a `LogLine`, per-app sliding windows of time buckets with a log-scale
//! latency histogram, the window summary (rps, p95, in-flight, per-upstream rps), and CPU
//! shares from two stats samples. Must not touch: files (collector.rs tails the log).

use crate::runtime::ContainerStats;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A window is kept in at most this many time buckets (at least 1 s wide each).
pub const MAX_BUCKETS: i64 = 60;
/// Latency histogram: bucket `i` holds [0.1 ms x 1.1^i, 0.1 ms x 1.1^(i+1)); ~5% error.
const HIST_BUCKETS: usize = 170;
const HIST_BASE_MS: f64 = 0.1;
const HIST_RATIO: f64 = 1.1;

/// One line of the `berth` log_format (see the proxy's main nginx.conf). Fields berth does
/// not use are ignored, so the format can grow.
#[derive(Debug, Deserialize)]
struct RawLine<'a> {
    time: f64,
    #[serde(borrow)]
    app: Cow<'a, str>,
    status: u16,
    #[serde(default)]
    request_time: f64,
    #[serde(borrow, default)]
    upstream_time: Cow<'a, str>,
    #[serde(borrow, default)]
    upstream: Cow<'a, str>,
    #[serde(default)]
    connections: u64,
}

/// A parsed access log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Unix milliseconds (nginx's `$msec`).
    pub at: i64,
    pub app: String,
    pub status: u16,
    /// Seconds from the first client byte to the last byte sent.
    pub request_time: f64,
    /// Seconds the upstream(s) took; `None` when no upstream was asked (e.g. 503 with no
    /// replica).
    pub upstream_time: Option<f64>,
    /// The upstream that answered (the last one tried).
    pub upstream: Option<String>,
    /// nginx's active client connections (whole server) when the line was written.
    pub connections: u64,
}

/// Parses one line; `None` for anything that is not a berth log line.
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let raw: RawLine = serde_json::from_slice(line).ok()?;
    if !raw.time.is_finite() || raw.time <= 0.0 {
        return None;
    }
    Some(LogLine {
        at: (raw.time * 1000.0).round() as i64,
        app: raw.app.into_owned(),
        status: raw.status,
        request_time: raw.request_time.max(0.0),
        upstream_time: sum_times(&raw.upstream_time),
        upstream: last_upstream(&raw.upstream),
        connections: raw.connections,
    })
}

/// `$upstream_response_time` lists one time per upstream tried (", " between tries,
/// " : " between upstream groups); "-" for a try that got no answer.
fn sum_times(text: &str) -> Option<f64> {
    let mut total = None;
    for part in text.split([',', ':']) {
        if let Ok(v) = part.trim().parse::<f64>() {
            if v.is_finite() && v >= 0.0 {
                total = Some(total.unwrap_or(0.0) + v);
            }
        }
    }
    total
}

fn last_upstream(text: &str) -> Option<String> {
    // Addresses contain ':' themselves, so split only on the separators nginx writes.
    let last = text.rsplit(',').next()?.rsplit(" : ").next()?.trim();
    (!last.is_empty() && last != "-").then(|| last.to_string())
}

fn hist_index(ms: f64) -> usize {
    if ms <= HIST_BASE_MS {
        return 0;
    }
    let i = ((ms / HIST_BASE_MS).ln() / HIST_RATIO.ln()).floor();
    (i as usize).min(HIST_BUCKETS - 1)
}

/// Representative value of a histogram bucket: its geometric middle.
fn hist_value(index: usize) -> f64 {
    HIST_BASE_MS * HIST_RATIO.powf(index as f64 + 0.5)
}

#[derive(Debug, Clone)]
pub(super) struct Bucket {
    start: i64,
    requests: u64,
    errors: u64,
    /// Sum of request times, seconds (for the mean number in flight).
    busy_seconds: f64,
    /// Upstream latency histogram (allocated on the first upstream answer).
    latency: Vec<u32>,
    latency_count: u64,
    max_connections: u64,
    upstreams: Vec<(String, u64)>,
}

impl Bucket {
    fn new(start: i64) -> Self {
        Self {
            start,
            requests: 0,
            errors: 0,
            busy_seconds: 0.0,
            latency: Vec::new(),
            latency_count: 0,
            max_connections: 0,
            upstreams: Vec::new(),
        }
    }

    fn add(&mut self, line: &LogLine) {
        self.requests += 1;
        if line.status >= 500 {
            self.errors += 1;
        }
        self.busy_seconds += line.request_time;
        self.max_connections = self.max_connections.max(line.connections);
        if let Some(seconds) = line.upstream_time {
            if self.latency.is_empty() {
                self.latency = vec![0; HIST_BUCKETS];
            }
            self.latency[hist_index(seconds * 1000.0)] += 1;
            self.latency_count += 1;
        }
        if let Some(addr) = &line.upstream {
            match self.upstreams.iter_mut().find(|(a, _)| a == addr) {
                Some((_, n)) => *n += 1,
                None => self.upstreams.push((addr.clone(), 1)),
            }
        }
    }
}

/// One app's sliding window: time buckets covering the last `window` milliseconds.
#[derive(Debug, Clone)]
pub(super) struct AppWindow {
    pub(super) window_ms: i64,
    pub(super) bucket_ms: i64,
    pub(super) buckets: VecDeque<Bucket>,
}

impl AppWindow {
    pub(super) fn new(window_seconds: u32) -> Self {
        let window_ms = i64::from(window_seconds.max(1)) * 1000;
        Self {
            window_ms,
            bucket_ms: (window_ms / MAX_BUCKETS).max(1000),
            buckets: VecDeque::new(),
        }
    }

    pub(super) fn add(&mut self, line: &LogLine) {
        let start = line.at - line.at.rem_euclid(self.bucket_ms);
        // Lines arrive nearly in order: look from the back.
        let mut pos = self.buckets.len();
        while pos > 0 && self.buckets[pos - 1].start > start {
            pos -= 1;
        }
        if pos > 0 && self.buckets[pos - 1].start == start {
            self.buckets[pos - 1].add(line);
        } else {
            let mut bucket = Bucket::new(start);
            bucket.add(line);
            self.buckets.insert(pos, bucket);
        }
    }

    /// Drops buckets that ended before the window.
    fn evict(&mut self, now: i64) {
        let horizon = now - self.window_ms;
        while let Some(front) = self.buckets.front() {
            if front.start + self.bucket_ms <= horizon {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// The figures over the window ending at `now`, counting only time since
    /// `coverage_start` (the first line read) so a young window is not diluted.
    pub(super) fn summary(&mut self, coverage_start: i64, now: i64) -> WindowSummary {
        let window = self;
        window.evict(now);
        let coverage_ms = (now.saturating_sub(coverage_start))
            .clamp(1000, window.window_ms)
            .max(1000);
        let seconds = coverage_ms as f64 / 1000.0;
        let horizon = now - coverage_ms;
        let mut out = WindowSummary {
            window_seconds: window.window_ms as f64 / 1000.0,
            coverage_seconds: seconds,
            ..Default::default()
        };
        let mut hist = vec![0u64; HIST_BUCKETS];
        let mut latency_count = 0u64;
        let mut busy = 0.0;
        let mut upstreams: BTreeMap<String, u64> = BTreeMap::new();
        for bucket in window
            .buckets
            .iter()
            .filter(|b| b.start + window.bucket_ms > horizon && b.start <= now)
        {
            out.requests += bucket.requests;
            out.errors_5xx += bucket.errors;
            busy += bucket.busy_seconds;
            out.nginx_connections_max = out.nginx_connections_max.max(bucket.max_connections);
            for (i, n) in bucket.latency.iter().enumerate() {
                hist[i] += u64::from(*n);
            }
            latency_count += bucket.latency_count;
            for (addr, n) in &bucket.upstreams {
                *upstreams.entry(addr.clone()).or_default() += n;
            }
        }
        out.rps = out.requests as f64 / seconds;
        out.in_flight = busy / seconds;
        out.upstream_rps = upstreams
            .into_iter()
            .map(|(addr, n)| (addr, n as f64 / seconds))
            .collect();
        if latency_count > 0 {
            // Nearest rank: the smallest value with at least 95% of samples at or below it.
            let rank = ((latency_count as f64) * 0.95).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in hist.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    out.p95_ms = Some(hist_value(i));
                    break;
                }
            }
        }
        out
    }
}

/// Request figures of one app over its window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowSummary {
    pub window_seconds: f64,
    /// Seconds of the window the log covers (less than the window right after start).
    pub coverage_seconds: f64,
    pub requests: u64,
    pub errors_5xx: u64,
    pub rps: f64,
    /// 95th percentile upstream time, ms; `None` without upstream answers.
    pub p95_ms: Option<f64>,
    /// Mean requests in flight (sum of request times / coverage).
    pub in_flight: f64,
    /// Highest nginx-wide active connection count seen in the window.
    pub nginx_connections_max: u64,
    /// Upstream address -> requests/s it answered.
    pub upstream_rps: BTreeMap<String, f64>,
}

/// What one poll read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    pub bytes: u64,
    pub lines: u64,
    /// Lines that are not berth JSON log lines.
    pub bad_lines: u64,
    /// Lines for apps the autoscaler does not watch (manual, unrouted `-`).
    pub ignored: u64,
}

impl IngestStats {
    pub(super) fn add(&mut self, other: IngestStats) {
        self.bytes += other.bytes;
        self.lines += other.lines;
        self.bad_lines += other.bad_lines;
        self.ignored += other.ignored;
    }
}

/// CPU and memory of one container between two stats samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ContainerUsage {
    /// Cores used on average since the previous sample; `None` on the first sample.
    pub cpu_cores: Option<f64>,
    /// Memory in use, percent of the limit.
    pub memory_pct: Option<f64>,
}

/// Remembers each container's previous CPU counters so that one-shot samples (which carry
/// no previous reading) still give a CPU share: the share over the tick.
#[derive(Debug, Default)]
pub struct CpuTracker {
    last: HashMap<String, (u64, u64)>,
}

impl CpuTracker {
    /// Turns this tick's samples into usage; containers not sampled are forgotten.
    pub fn update(&mut self, samples: &[ContainerStats]) -> HashMap<String, ContainerUsage> {
        let mut out = HashMap::new();
        let mut next = HashMap::new();
        for s in samples {
            let cpu_cores = match (self.last.get(&s.id), s.system_cpu_ns) {
                (Some(&(prev_total, prev_system)), Some(system)) if system > prev_system => {
                    let used = s.cpu_total_ns.saturating_sub(prev_total) as f64;
                    Some(used / (system - prev_system) as f64 * f64::from(s.online_cpus))
                }
                _ => None,
            };
            if let Some(system) = s.system_cpu_ns {
                next.insert(s.id.clone(), (s.cpu_total_ns, system));
            }
            let memory_pct = (s.memory_limit_bytes > 0)
                .then(|| s.memory_bytes as f64 / s.memory_limit_bytes as f64 * 100.0);
            out.insert(
                s.id.clone(),
                ContainerUsage {
                    cpu_cores,
                    memory_pct,
                },
            );
        }
        self.last = next;
        out
    }
}
