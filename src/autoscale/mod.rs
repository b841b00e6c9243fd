//! The autoscaler: every tick, for each app in `scaling.policy.mode: auto`, it collects the
//! window metrics (`collector`: nginx access log + one-shot Docker stats), asks the pure
//! `policy` for a decision, and when the replica count changes writes the replica override
//! and a `scaling_decisions` row (metrics, factors, reason) to the store and wakes the
//! reconcile loop. Apps in mode manual, or without a scaling block, get no override (a
//! stale one is cleared); bounds changed in git clamp an existing override.
//!
//! Must not touch: Docker or nginx beyond reading (it holds a `ContainerObserver` for stats
//! and the access log's path; only `reconcile` mutates them), the specs or git. It gets
//! only what it needs (`AutoscaleDeps`: the store, a stats source, the last pass through a
//! `watch`, the counters) and a waker; it does not know the reconcile module.

pub mod collector;
pub mod policy;

use crate::clock::now_ms;
use crate::last_pass::LastPass;
use crate::metrics::Metrics as Counters;
use crate::plan::{effective_replicas, Health};
use crate::runtime::{ContainerObserver, ContainerState, RuntimeError};
use crate::source::Waker;
use crate::spec::{AppSpec, ScalingMode};
use crate::store::{NewScalingDecision, OverrideChange, Store, StoreError};
use collector::{AccessLog, AccessLogError, CpuTracker, IngestStats, WindowSummary};
use policy::{AppState, Decision, Input, Metrics, PolicyConfig};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Default time between two autoscaler ticks.
pub const DEFAULT_TICK: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum AutoscaleError {
    #[error("autoscaler: {0}")]
    Store(#[from] StoreError),
    #[error("autoscaler: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("autoscaler: {0}")]
    AccessLog(#[from] AccessLogError),
}

/// How the autoscaler runs (flags of `berth serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleSettings {
    pub tick: Duration,
    pub policy: PolicyConfig,
    /// The nginx access log to read; `None` uses the private nginx's (`Proxy::access_log`).
    pub access_log: Option<PathBuf>,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        Self {
            tick: DEFAULT_TICK,
            policy: PolicyConfig::default(),
            access_log: None,
        }
    }
}

/// Everything the autoscaler may use, and nothing more: the store (it writes only replica
/// overrides and scaling decisions), a read-only runtime for stats, the last reconcile pass,
/// and the counters behind /metrics.
pub struct AutoscaleDeps<O: ContainerObserver> {
    pub store: Store,
    pub stats: O,
    pub last_pass: watch::Receiver<Option<Arc<LastPass>>>,
    pub counters: Arc<Counters>,
    /// Only the leader writes overrides (HA: a follower's ticks are skipped).
    pub leadership: Arc<crate::leader::Leadership>,
}

/// What one app looked like in the last reconcile pass.
#[derive(Debug, Clone)]
struct AppView {
    spec: std::sync::Arc<AppSpec>,
    ready: u32,
    /// Ready containers of the current spec: (id, name, address).
    ready_containers: Vec<(String, String, Option<String>)>,
}

/// What one tick did, per app.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// Decisions of apps in mode auto (holds included).
    pub decisions: BTreeMap<String, Decision>,
    /// Overrides written (scaling changes and clamps).
    pub written: usize,
    /// Stale overrides removed (mode manual or no scaling block).
    pub cleared: usize,
    /// What the access log poll read.
    pub ingest: IngestStats,
}

/// The autoscaler's state between ticks.
pub struct Autoscaler {
    settings: AutoscaleSettings,
    log: Option<Arc<Mutex<AccessLog>>>,
    cpu: CpuTracker,
    states: BTreeMap<String, AppState>,
    /// Last warning per source, so a persisting problem is logged once.
    warned: HashMap<&'static str, String>,
}

impl Autoscaler {
    /// `default_log` is the private nginx's access log (used unless the settings name one).
    pub fn new(settings: AutoscaleSettings, default_log: Option<PathBuf>) -> Self {
        let log = settings
            .access_log
            .clone()
            .or(default_log)
            .map(|path| Arc::new(Mutex::new(AccessLog::new(path))));
        Self {
            settings,
            log,
            cpu: CpuTracker::default(),
            states: BTreeMap::new(),
            warned: HashMap::new(),
        }
    }

    fn warn_once(&mut self, source: &'static str, message: String) {
        if self.warned.get(source) != Some(&message) {
            warn!("{message}");
            self.warned.insert(source, message);
        }
    }

    fn clear_warning(&mut self, source: &'static str) {
        self.warned.remove(source);
    }

    /// One tick at `now` (unix ms). Reads the last pass and the store, collects, decides,
    /// writes overrides and decision rows. Does not wake the loop (`run` does when
    /// `written > 0`).
    pub async fn tick<O: ContainerObserver>(
        &mut self,
        deps: &AutoscaleDeps<O>,
        now: i64,
    ) -> Result<TickReport, AutoscaleError> {
        let mut report = TickReport::default();
        let last = deps.last_pass.borrow().clone();
        let Some(apps) = last.as_deref().map(snapshot_apps) else {
            return Ok(report);
        };
        let overrides: BTreeMap<String, u32> = deps.store.replica_overrides().await?;

        // Apps without an autoscaler: no override.
        let mut auto: BTreeMap<String, AppView> = BTreeMap::new();
        for (name, view) in apps {
            let scaling = view.spec.scaling.as_ref();
            match scaling {
                Some(s) if s.mode == ScalingMode::Auto => {
                    auto.insert(name, view);
                }
                _ => {
                    self.states.remove(&name);
                    if let Some(stored) = overrides.get(&name) {
                        clear_override(deps, &name, &view.spec, *stored, now).await?;
                        report.cleared += 1;
                    }
                }
            }
        }
        self.states.retain(|name, _| auto.contains_key(name));

        // Collect: the access log once for all apps, stats of the ready containers.
        let windows: BTreeMap<String, u32> = auto
            .iter()
            .filter_map(|(name, v)| {
                let http = v.spec.scaling.as_ref()?.http.as_ref()?;
                Some((name.clone(), http.window_seconds))
            })
            .collect();
        let summaries = self
            .collect_requests(&deps.counters, &windows, now, &mut report)
            .await;
        let ids: Vec<String> = auto
            .iter()
            .filter(|(name, _)| windows.contains_key(*name))
            .flat_map(|(_, v)| v.ready_containers.iter().map(|(id, _, _)| id.clone()))
            .collect();
        let usage = if ids.is_empty() {
            self.cpu.update(&[]);
            HashMap::new()
        } else {
            match deps.stats.stats(&ids).await {
                Ok(samples) => {
                    self.clear_warning("stats");
                    self.cpu.update(&samples)
                }
                Err(e) => {
                    self.warn_once("stats", format!("autoscaler: no CPU/memory this tick: {e}"));
                    HashMap::new()
                }
            }
        };

        for (name, view) in &auto {
            let Some(scaling) = view.spec.scaling.as_ref() else {
                continue;
            };
            let stored = overrides.get(name).copied();
            let (current, _) = effective_replicas(&view.spec, stored);
            let state = match self.states.get_mut(name) {
                Some(state) => state,
                None => {
                    let state = seeded_state(&deps.store, name).await?;
                    self.states.entry(name.clone()).or_insert(state)
                }
            };
            let summary = summaries.get(name);
            let (metrics, sampled) = metrics_for(view, summary, &usage);
            let decision = match &scaling.http {
                Some(http) => {
                    let input = Input {
                        scaling,
                        override_replicas: stored,
                        current,
                        ready: view.ready,
                        metrics: &metrics,
                    };
                    policy::decide(&self.settings.policy, &input, http, state, now)
                }
                // No request policy: nothing to act on, but the bounds still hold.
                None => policy::bounds_only(scaling, stored, current),
            };
            if decision.changes() {
                let metrics_json = metrics_json(view, &metrics, summary, sampled, current, stored);
                write_decision(deps, name, &decision, metrics_json, now).await?;
                report.written += 1;
            } else {
                debug!(app = %name, replicas = current, "autoscaler holds: {}", decision.reason);
            }
            report.decisions.insert(name.clone(), decision);
        }
        Ok(report)
    }

    async fn collect_requests(
        &mut self,
        counters: &Arc<Counters>,
        windows: &BTreeMap<String, u32>,
        now: i64,
        report: &mut TickReport,
    ) -> BTreeMap<String, WindowSummary> {
        let Some(log) = self.log.clone() else {
            return BTreeMap::new();
        };
        let windows = windows.clone();
        let counters = counters.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut log = log.lock().expect("access log lock");
            log.configure(&windows);
            let ingest = log.poll(now);
            let summaries: BTreeMap<String, WindowSummary> = windows
                .keys()
                .filter_map(|app| Some((app.clone(), log.summary(app, now)?)))
                .collect();
            counters.add_requests(log.take_requests());
            (ingest, summaries)
        })
        .await;
        match result {
            Ok((Ok(ingest), summaries)) => {
                self.clear_warning("access-log");
                report.ingest = ingest;
                summaries
            }
            Ok((Err(e), summaries)) => {
                self.warn_once("access-log", e.to_string());
                summaries
            }
            Err(e) => {
                self.warn_once(
                    "access-log",
                    format!("autoscaler: reading the access log failed: {e}"),
                );
                BTreeMap::new()
            }
        }
    }
}

/// Per-app view of the last pass. Held apps (invalid spec) are not in `desired.apps`, so
/// the autoscaler leaves them alone.
fn snapshot_apps(last: &LastPass) -> BTreeMap<String, AppView> {
    let mut out = BTreeMap::new();
    for (name, app) in &last.desired.apps {
        let ready_containers = last
            .observed
            .containers
            .iter()
            .filter(|c| {
                c.app == *name
                    && c.spec_hash == app.hash
                    && c.state == ContainerState::Running
                    && last.observed.health_of(&c.id) == Health::Healthy
            })
            .map(|c| (c.id.clone(), c.name.clone(), c.address()))
            .collect::<Vec<_>>();
        let ready = last
            .plan
            .apps
            .get(name)
            .map_or(ready_containers.len() as u32, |s| s.ready_replicas);
        out.insert(
            name.clone(),
            AppView {
                spec: app.spec.clone(),
                ready,
                ready_containers,
            },
        );
    }
    out
}

/// Cooldown survives a restart: the last change recorded in the store starts it.
async fn seeded_state(store: &Store, app: &str) -> Result<AppState, AutoscaleError> {
    let last_change_at = store
        .scaling_decisions(app, crate::store::DECISIONS_KEPT_PER_APP)
        .await?
        .into_iter()
        .find(|row| {
            let action = row.factors.get("action").and_then(|a| a.as_str());
            !matches!(action, Some("clamp" | "clear"))
        })
        .map(|row| row.at);
    Ok(AppState {
        last_change_at,
        ..AppState::default()
    })
}

/// The policy's inputs from the window summary and the ready containers' stats.
fn metrics_for(
    view: &AppView,
    summary: Option<&WindowSummary>,
    usage: &HashMap<String, collector::ContainerUsage>,
) -> (Metrics, usize) {
    let limit_cores = view
        .spec
        .resources
        .cpu_millis
        .map_or(1.0, |m| f64::from(m) / 1000.0);
    let mut cpu = Vec::new();
    let mut memory = Vec::new();
    for (id, _, _) in &view.ready_containers {
        if let Some(u) = usage.get(id) {
            if let Some(cores) = u.cpu_cores {
                cpu.push(cores / limit_cores * 100.0);
            }
            if let Some(m) = u.memory_pct {
                memory.push(m);
            }
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let metrics = Metrics {
        coverage_seconds: summary.map_or(0.0, |s| s.coverage_seconds),
        rps: summary.map(|s| s.rps),
        p95_ms: summary.and_then(|s| s.p95_ms),
        in_flight: summary.map(|s| s.in_flight),
        cpu_pct: mean(&cpu),
        memory_pct: mean(&memory),
    };
    (metrics, cpu.len().max(memory.len()))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The metrics a decision row carries (what `berth status` and the API show).
fn metrics_json(
    view: &AppView,
    metrics: &Metrics,
    summary: Option<&WindowSummary>,
    sampled: usize,
    current: u32,
    stored: Option<u32>,
) -> serde_json::Value {
    let opt = |v: Option<f64>| v.map(round2);
    let names: HashMap<&str, &str> = view
        .ready_containers
        .iter()
        .filter_map(|(_, name, addr)| Some((addr.as_deref()?, name.as_str())))
        .collect();
    let upstreams: serde_json::Map<String, serde_json::Value> = summary
        .map(|s| {
            s.upstream_rps
                .iter()
                .map(|(addr, rps)| {
                    (
                        addr.clone(),
                        json!({ "rps": round2(*rps), "container": names.get(addr.as_str()) }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "window_seconds": summary.map(|s| s.window_seconds),
        "coverage_seconds": summary.map(|s| s.coverage_seconds),
        "requests": summary.map(|s| s.requests),
        "errors_5xx": summary.map(|s| s.errors_5xx),
        "rps": opt(metrics.rps),
        "p95_ms": opt(metrics.p95_ms),
        "in_flight": opt(metrics.in_flight),
        "nginx_connections_max": summary.map(|s| s.nginx_connections_max),
        "cpu_pct": opt(metrics.cpu_pct),
        "memory_pct": opt(metrics.memory_pct),
        "containers_sampled": sampled,
        "replicas": current,
        "ready": view.ready,
        "override": stored,
        "upstreams": upstreams,
    })
}

async fn write_decision<O: ContainerObserver>(
    deps: &AutoscaleDeps<O>,
    app: &str,
    decision: &Decision,
    metrics: serde_json::Value,
    now: i64,
) -> Result<(), AutoscaleError> {
    deps.store
        .record_scaling_change(
            OverrideChange::Set(decision.to),
            &NewScalingDecision {
                app: app.to_string(),
                at: now,
                from_replicas: decision.from,
                to_replicas: decision.to,
                reason: decision.reason.clone(),
                metrics,
                factors: decision.factors_json(),
            },
        )
        .await?;
    deps.counters
        .scaling_decision(app, decision.from, decision.to);
    info!(
        app,
        from = decision.from,
        to = decision.to,
        "autoscaler: {}",
        decision.reason
    );
    Ok(())
}

/// Mode manual or no scaling block: the override is dropped (the plan ignores it already;
/// a later switch back to auto starts from the spec, not from a stale count).
async fn clear_override<O: ContainerObserver>(
    deps: &AutoscaleDeps<O>,
    app: &str,
    spec: &AppSpec,
    stored: u32,
    now: i64,
) -> Result<(), AutoscaleError> {
    let (effective, _) = effective_replicas(spec, None);
    let why = match &spec.scaling {
        Some(_) => "scaling.policy.mode is manual",
        None => "the spec has no scaling block",
    };
    let reason = format!(
        "{why}: the autoscaler's override ({stored}) is dropped, the spec's count ({effective}) applies"
    );
    deps.store
        .record_scaling_change(
            OverrideChange::Clear,
            &NewScalingDecision {
                app: app.to_string(),
                at: now,
                from_replicas: stored,
                to_replicas: effective,
                reason: reason.clone(),
                metrics: json!({ "override": stored, "replicas": effective }),
                factors: json!({ "action": "clear" }),
            },
        )
        .await?;
    deps.counters.scaling_decision(app, stored, effective);
    info!(app, "autoscaler: {reason}");
    Ok(())
}

/// Runs ticks until the task is aborted (the composition root owns it): decide, write, and
/// wake the reconcile loop through `wake` when an override changed. `default_log` is the
/// private nginx's access log.
pub async fn run<O: ContainerObserver>(
    deps: AutoscaleDeps<O>,
    settings: AutoscaleSettings,
    default_log: Option<PathBuf>,
    wake: Waker,
) {
    let tick = settings.tick.max(Duration::from_millis(100));
    let mut scaler = Autoscaler::new(settings, default_log);
    info!(
        tick_ms = tick.as_millis() as u64,
        "autoscaler started (apps with scaling.policy.mode: auto)"
    );
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !deps.leadership.may_act() {
            continue;
        }
        match scaler.tick(&deps, now_ms()).await {
            Ok(report) => {
                if report.written + report.cleared > 0 {
                    wake("autoscale");
                }
            }
            Err(e) => warn!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests;
