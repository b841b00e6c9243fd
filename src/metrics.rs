//! In-process counters of berth's tasks (atomics, no I/O, no locks on the hot path except
//! the small per-label maps): passes, pass durations, errors, steps by kind, nginx reloads
//! and failures, source read errors, events by type (the loop and `apply`), autoscaler
//! decisions (the autoscaler), image pulls and moving-tag checks (the image worker). Writers only increment them; `api::metrics` reads a
//! `MetricsSnapshot` and renders the Prometheus text. Must not touch: the store, Docker, nginx, the wall clock (a pass is
//! timed with the monotonic clock only).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the pass-duration histogram buckets; `+Inf` is implied.
/// A no-op pass takes milliseconds, a rollout waits for health checks and drains (minutes).
pub const PASS_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Step kinds as `plan::Step::kind` names them (no-op steps are not counted).
pub const STEP_KINDS: [&str; 8] = [
    "create",
    "replace",
    "remove",
    "write-proxy",
    "remove-proxy",
    "create-service",
    "update-service",
    "remove-service",
];

fn kind_index(kind: &str) -> Option<usize> {
    STEP_KINDS.iter().position(|k| *k == kind)
}

/// Counters shared by the loop (writer) and the API (reader).
#[derive(Debug, Default)]
pub struct Metrics {
    passes: AtomicU64,
    pass_errors: AtomicU64,
    /// Non-cumulative counts per bucket; index `PASS_DURATION_BUCKETS.len()` is `+Inf`.
    pass_buckets: [AtomicU64; PASS_DURATION_BUCKETS.len() + 1],
    pass_micros: AtomicU64,
    steps_applied: [AtomicU64; STEP_KINDS.len()],
    steps_failed: [AtomicU64; STEP_KINDS.len()],
    nginx_reloads: AtomicU64,
    nginx_reload_failures: AtomicU64,
    nginx_member_pushes: AtomicU64,
    source_errors: AtomicU64,
    requests: Mutex<RequestTally>,
    events: Mutex<BTreeMap<String, u64>>,
    /// (app, direction) -> decisions.
    scaling_decisions: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Image pulls by result (`success`, `failure`).
    image_pulls: [AtomicU64; 2],
    /// Moving-tag checks by result (`unchanged`, `changed`, `failure`).
    image_checks: [AtomicU64; 3],
}

/// `berth_image_pulls_total` results.
pub const PULL_RESULTS: [&str; 2] = ["success", "failure"];
/// `berth_image_checks_total` results.
pub const CHECK_RESULTS: [&str; 3] = ["unchanged", "changed", "failure"];

/// A plain copy of the counters, for rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub passes: u64,
    pub pass_errors: u64,
    /// Cumulative counts, one per `PASS_DURATION_BUCKETS` entry, then `+Inf` (== passes
    /// that recorded a duration).
    pub pass_buckets: Vec<u64>,
    pub pass_seconds_sum: f64,
    pub steps_applied: BTreeMap<&'static str, u64>,
    pub steps_failed: BTreeMap<&'static str, u64>,
    pub nginx_reloads: u64,
    pub nginx_reload_failures: u64,
    pub nginx_member_pushes: u64,
    pub source_errors: u64,
    /// Requests per app from nginx's access log (since this berth started).
    pub requests: RequestTally,
    pub events: BTreeMap<String, u64>,
    pub scaling_decisions: BTreeMap<(String, &'static str), u64>,
    /// By `PULL_RESULTS`.
    pub image_pulls: BTreeMap<&'static str, u64>,
    /// By `CHECK_RESULTS`.
    pub image_checks: BTreeMap<&'static str, u64>,
    /// This controller's id in the leader lease (`berth_leader{id}`), filled by the API's
    /// view from `crate::leader::Leadership`.
    pub leader_id: String,
    /// This controller may act (always with a SQLite store).
    pub is_leader: bool,
    /// Times this controller became the leader.
    pub leader_changes: u64,
}

impl Metrics {
    /// One pass finished (`ok` false when it ended in an error).
    pub fn pass_finished(&self, duration: Duration, ok: bool) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.pass_errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = duration.as_secs_f64();
        let bucket = PASS_DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(PASS_DURATION_BUCKETS.len());
        self.pass_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.pass_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Starts timing a pass: the guard records it as failed when dropped, unless `ok` was
    /// called first (so every early `?` return counts as an error).
    pub fn pass_started(&self) -> PassTimer<'_> {
        PassTimer {
            metrics: self,
            started: std::time::Instant::now(),
            done: false,
        }
    }

    pub fn steps_applied(&self, kind: &str, count: usize) {
        if let Some(i) = kind_index(kind) {
            self.steps_applied[i].fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    pub fn steps_failed(&self, kind: &str, count: usize) {
        if let Some(i) = kind_index(kind) {
            self.steps_failed[i].fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    pub fn nginx_reloads(&self, count: usize) {
        self.nginx_reloads
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Adds requests the access log collector read (`berth_app_requests_total`,
    /// `berth_app_request_duration_seconds`).
    pub fn add_requests(&self, tally: RequestTally) {
        if tally.apps.is_empty() {
            return;
        }
        self.requests.lock().expect("requests lock").merge(tally);
    }

    /// Upstream member lists nginx confirmed (dynamic upstreams: a change without reload).
    pub fn nginx_member_pushes(&self, count: usize) {
        self.nginx_member_pushes
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn nginx_reload_failed(&self) {
        self.nginx_reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The source could not be read (directory gone, git fetch failed, ...).
    pub fn source_error(&self) {
        self.source_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An event of this type was recorded.
    pub fn event(&self, event_type: &str) {
        *self
            .events
            .lock()
            .expect("metrics lock")
            .entry(event_type.to_string())
            .or_default() += 1;
    }

    /// The autoscaler decided to change `app` from `from` to `to` replicas.
    pub fn scaling_decision(&self, app: &str, from: u32, to: u32) {
        let direction = match to.cmp(&from) {
            std::cmp::Ordering::Greater => "out",
            std::cmp::Ordering::Less => "in",
            std::cmp::Ordering::Equal => "hold",
        };
        *self
            .scaling_decisions
            .lock()
            .expect("metrics lock")
            .entry((app.to_string(), direction))
            .or_default() += 1;
    }

    /// One image pull ended (`ok` false when it failed).
    pub fn image_pull(&self, ok: bool) {
        self.image_pulls[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// One moving-tag check ended: `Some(true)` the registry's digest changed, `Some(false)`
    /// it did not, `None` the check failed.
    pub fn image_check(&self, changed: Option<bool>) {
        let i = match changed {
            Some(false) => 0,
            Some(true) => 1,
            None => 2,
        };
        self.image_checks[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let pass_buckets = self
            .pass_buckets
            .iter()
            .map(|b| {
                cumulative += load(b);
                cumulative
            })
            .collect();
        let by_kind = |counters: &[AtomicU64; STEP_KINDS.len()]| {
            STEP_KINDS
                .iter()
                .zip(counters)
                .map(|(kind, n)| (*kind, load(n)))
                .collect()
        };
        MetricsSnapshot {
            passes: load(&self.passes),
            pass_errors: load(&self.pass_errors),
            pass_buckets,
            pass_seconds_sum: load(&self.pass_micros) as f64 / 1e6,
            steps_applied: by_kind(&self.steps_applied),
            steps_failed: by_kind(&self.steps_failed),
            nginx_reloads: load(&self.nginx_reloads),
            nginx_reload_failures: load(&self.nginx_reload_failures),
            nginx_member_pushes: load(&self.nginx_member_pushes),
            requests: self.requests.lock().expect("requests lock").clone(),
            source_errors: load(&self.source_errors),
            events: self.events.lock().expect("metrics lock").clone(),
            scaling_decisions: self.scaling_decisions.lock().expect("metrics lock").clone(),
            image_pulls: PULL_RESULTS
                .iter()
                .zip(&self.image_pulls)
                .map(|(r, n)| (*r, load(n)))
                .collect(),
            image_checks: CHECK_RESULTS
                .iter()
                .zip(&self.image_checks)
                .map(|(r, n)| (*r, load(n)))
                .collect(),
            leader_id: String::new(),
            is_leader: false,
            leader_changes: 0,
        }
    }
}

/// Times one pass; see `Metrics::pass_started`.
pub struct PassTimer<'a> {
    metrics: &'a Metrics,
    started: std::time::Instant,
    done: bool,
}

impl PassTimer<'_> {
    /// The pass succeeded.
    pub fn ok(mut self) {
        self.done = true;
        self.metrics.pass_finished(self.started.elapsed(), true);
    }
}

impl Drop for PassTimer<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.pass_finished(self.started.elapsed(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_errors_count() {
        let m = Metrics::default();
        m.pass_finished(Duration::from_millis(3), true);
        m.pass_finished(Duration::from_millis(700), false);
        m.pass_finished(Duration::from_secs(1000), true);
        let s = m.snapshot();
        assert_eq!(s.passes, 3);
        assert_eq!(s.pass_errors, 1);
        assert_eq!(s.pass_buckets[0], 1);
        assert_eq!(s.pass_buckets[7], 2); // <= 1 s
        assert_eq!(*s.pass_buckets.last().unwrap(), 3);
        assert!((s.pass_seconds_sum - 1000.703).abs() < 1e-6);
    }

    #[test]
    fn timer_counts_a_dropped_pass_as_an_error() {
        let m = Metrics::default();
        m.pass_started().ok();
        drop(m.pass_started());
        let s = m.snapshot();
        assert_eq!((s.passes, s.pass_errors), (2, 1));
    }

    #[test]
    fn steps_events_and_decisions_by_label() {
        let m = Metrics::default();
        m.steps_applied("create", 2);
        m.steps_failed("replace", 1);
        m.steps_applied("no-op", 5);
        m.event("created");
        m.event("created");
        m.scaling_decision("web", 2, 4);
        let s = m.snapshot();
        assert_eq!(s.steps_applied["create"], 2);
        assert_eq!(s.steps_failed["replace"], 1);
        assert_eq!(s.steps_applied.values().sum::<u64>(), 2);
        assert_eq!(s.events["created"], 2);
        assert_eq!(s.scaling_decisions[&("web".to_string(), "out")], 1);
    }
}

/// Upper bounds (seconds) of `berth_app_request_duration_seconds` buckets.
pub const REQUEST_DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Requests per app: counts by status code and a duration histogram (nginx's
/// `$request_time`). Pure data: the collector fills one, the counters merge it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTally {
    pub apps: BTreeMap<String, AppRequests>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppRequests {
    pub codes: BTreeMap<u16, u64>,
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    pub buckets: Vec<u64>,
    pub seconds_sum: f64,
}

impl RequestTally {
    pub fn add(&mut self, app: &str, status: u16, seconds: f64) {
        let entry = match self.apps.get_mut(app) {
            Some(entry) => entry,
            None => self.apps.entry(app.to_string()).or_default(),
        };
        *entry.codes.entry(status).or_insert(0) += 1;
        if entry.buckets.is_empty() {
            entry.buckets = vec![0; REQUEST_DURATION_BUCKETS.len() + 1];
        }
        let bucket = REQUEST_DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(REQUEST_DURATION_BUCKETS.len());
        entry.buckets[bucket] += 1;
        entry.seconds_sum += seconds;
    }

    pub fn merge(&mut self, other: RequestTally) {
        for (app, theirs) in other.apps {
            let ours = self.apps.entry(app).or_default();
            for (code, n) in theirs.codes {
                *ours.codes.entry(code).or_insert(0) += n;
            }
            if ours.buckets.is_empty() {
                ours.buckets = vec![0; REQUEST_DURATION_BUCKETS.len() + 1];
            }
            for (slot, n) in ours.buckets.iter_mut().zip(theirs.buckets) {
                *slot += n;
            }
            ours.seconds_sum += theirs.seconds_sum;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}
