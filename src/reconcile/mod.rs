//! The reconcile loop and `apply`: the ONLY code that mutates Docker (through
//! `ContainerRuntime`) or nginx (through `Proxy`). Each pass reads the source, observes
//! (one labelled list call), plans from scratch, applies, and records events and statuses
//! in the store. Triggers only wake the loop; they never decide what to do.

mod apply;
pub mod metrics;
mod prober;

pub use apply::apply;
pub use metrics::Metrics;

use crate::health::ProbeTracker;
use crate::plan::{self, Desired, DesiredApp, HealState, Observed, Overrides, Plan};
use crate::proxy::{Proxy, ProxyError};
use crate::runtime::{ContainerRuntime, ObservedContainer, RuntimeError};
use crate::source::{self, Snapshot, SourceError};
use crate::spec::{self, LoadedSpecs, SpecIssue};
use crate::store::{AppStatus, EventType, NewEvent, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tracing::{info, info_span, warn, Instrument};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a controller needs to know that is not in the specs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory (or file) holding the App specs.
    pub source_dir: PathBuf,
    /// Timer between passes when nothing wakes the loop.
    pub interval: Duration,
    /// Dedicated Docker network every container joins.
    pub network: String,
    /// How many apps apply their steps at the same time.
    pub parallel_apps: usize,
    /// Values for `valueFrom: sdk` env vars (berth's environment plus the host env file).
    pub host_env: BTreeMap<String, String>,
    /// Seconds Docker waits after SIGTERM before SIGKILL when stopping a container.
    pub stop_timeout_seconds: u32,
}

/// What the last pass saw and decided (read by the API and the prober).
#[derive(Debug, Clone, Default)]
pub struct LastPass {
    pub at: i64,
    pub trigger: String,
    pub desired: Desired,
    pub observed: Observed,
    pub plan: Plan,
    pub issues: Vec<SpecIssue>,
    pub duration_ms: u128,
}

/// Summary of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub revision: String,
    pub steps_applied: usize,
    pub steps_failed: usize,
    pub reloads: usize,
    pub changed: bool,
}

/// The controller: adapters plus the little in-memory state the loop keeps between passes.
pub struct Controller<R: ContainerRuntime> {
    pub runtime: R,
    pub proxy: Proxy,
    pub store: Store,
    pub settings: Settings,
    pub probes: Mutex<ProbeTracker>,
    pub heal: Mutex<BTreeMap<String, HealState>>,
    pub last: Mutex<Option<LastPass>>,
    /// Wakes the loop early (prober saw a health change, a source changed, ...).
    pub wake: Notify,
    /// Last error event text per (app, kind), so a persisting error is recorded once.
    reported: Mutex<HashMap<(String, String), String>>,
    /// Per-app status last written to the store, to skip identical writes.
    written_status: Mutex<HashMap<String, (AppStatus, Option<String>)>>,
    /// Counters read by the API's /metrics.
    pub metrics: Metrics,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<R: ContainerRuntime> Controller<R> {
    pub fn new(runtime: R, proxy: Proxy, store: Store, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            proxy,
            store,
            settings,
            probes: Mutex::new(ProbeTracker::default()),
            heal: Mutex::new(BTreeMap::new()),
            last: Mutex::new(None),
            wake: Notify::new(),
            reported: Mutex::new(HashMap::new()),
            written_status: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
        })
    }

    /// Records an event in the store and the log. Store failures are logged, not fatal:
    /// losing an event must never stop a rollout.
    pub(crate) async fn event(
        &self,
        app: Option<&str>,
        event_type: EventType,
        message: String,
        revision: &str,
        mut details: serde_json::Value,
    ) {
        // Redacted before it is logged or stored, not only when the API serves it.
        let message = crate::redact::redact_text(&message).into_owned();
        crate::redact::redact_json(&mut details);
        info!(app = app.unwrap_or("-"), event = %event_type, "{message}");
        self.metrics.event(event_type.as_str());
        if event_type == EventType::ProxyRejected {
            self.metrics.nginx_reload_failed();
        }
        let event = NewEvent {
            app: app.map(str::to_string),
            event_type,
            message,
            revision: Some(revision.to_string()),
            source_file: None,
            details,
            at: now_ms(),
        };
        if let Err(e) = self.store.record_event(&event).await {
            warn!("cannot record event: {e}");
        }
    }

    /// Like `event`, but only when the message differs from the last one of this kind for
    /// this app (a missing image retried every pass is reported once).
    pub(crate) async fn event_once(
        &self,
        app: &str,
        event_type: EventType,
        message: String,
        revision: &str,
    ) {
        let key = (app.to_string(), event_type.to_string());
        {
            let mut reported = self.reported.lock().expect("reported lock");
            if reported.get(&key) == Some(&message) {
                return;
            }
            reported.insert(key, message.clone());
        }
        self.event(
            Some(app),
            event_type,
            message,
            revision,
            serde_json::Value::Null,
        )
        .await;
    }

    pub(crate) fn clear_reported(&self, app: &str, event_type: EventType) {
        self.reported
            .lock()
            .expect("reported lock")
            .remove(&(app.to_string(), event_type.to_string()));
    }
}

/// Builds `Desired` from loaded specs: valid apps are desired; apps named by an issue are
/// held (kept as they run); unreadable files forbid pruning.
pub fn desired_from(loaded: &LoadedSpecs, revision: &str, proxy_listen: &str) -> Desired {
    let mut held = BTreeMap::new();
    for issue in &loaded.issues {
        if let Some(app) = &issue.app {
            held.entry(app.clone()).or_insert_with(|| issue.to_string());
        }
    }
    Desired {
        revision: revision.to_string(),
        apps: loaded
            .apps
            .iter()
            .filter(|(name, _)| !held.contains_key(*name))
            .map(|(name, (spec, source))| {
                (name.clone(), DesiredApp::new(spec.clone(), source.clone()))
            })
            .collect(),
        held,
        prune_allowed: loaded.unreadable_files.is_empty(),
        proxy_listen: proxy_listen.to_string(),
    }
}

/// Reads the source and turns it into `Desired` (plus the spec issues found).
pub fn read_desired(
    settings: &Settings,
    proxy_listen: &str,
) -> Result<(Desired, Vec<SpecIssue>), ReconcileError> {
    let snapshot: Snapshot = source::dir::read_snapshot(&settings.source_dir)?;
    let loaded = spec::load_files(&snapshot.files);
    let desired = desired_from(&loaded, &snapshot.revision, proxy_listen);
    Ok((desired, loaded.issues))
}

/// Observes containers (one list call), health, proxy files and heal state.
pub async fn observe<R: ContainerRuntime>(ctl: &Controller<R>) -> Result<Observed, ReconcileError> {
    let containers: Vec<ObservedContainer> = ctl.runtime.observe().await?;
    let proxy_files = ctl.proxy.current_files().await?;
    let health = {
        let mut probes = ctl.probes.lock().expect("probe lock");
        probes.retain(|id| containers.iter().any(|c| c.id == id));
        probes.snapshot()
    };
    let heal = ctl.heal.lock().expect("heal lock").clone();
    Ok(Observed {
        containers,
        health,
        proxy_files,
        heal,
    })
}

/// Overrides kept in the store: autoscaler replicas and failed rollouts.
pub async fn read_overrides(store: &Store) -> Result<Overrides, ReconcileError> {
    Ok(Overrides {
        replicas: store.replica_overrides().await?,
        failed_rollouts: store
            .failed_rollouts()
            .await?
            .into_iter()
            .map(|(app, failed)| (app, failed.spec_hash))
            .collect(),
    })
}

/// What the next pass would do, without doing it (probes are read-only).
pub async fn plan_only<R: ContainerRuntime>(
    ctl: &Controller<R>,
) -> Result<(Plan, Vec<SpecIssue>), ReconcileError> {
    let (desired, issues) = read_desired(&ctl.settings, ctl.proxy.listen())?;
    let mut observed = observe(ctl).await?;
    prober::probe_unknown(ctl, &desired, &mut observed).await;
    let overrides = read_overrides(&ctl.store).await?;
    Ok((
        plan::plan(&desired, &observed, &overrides, now_ms()),
        issues,
    ))
}

/// One pass: read, observe, plan, apply, record.
pub async fn run_pass<R: ContainerRuntime>(
    ctl: &Arc<Controller<R>>,
    trigger: &str,
) -> Result<PassReport, ReconcileError> {
    let started = std::time::Instant::now();
    let timer = ctl.metrics.pass_started();
    let (desired, issues) = read_desired(&ctl.settings, ctl.proxy.listen())
        .inspect_err(|_| ctl.metrics.source_error())?;
    let span = info_span!("reconcile_pass", revision = %desired.revision, trigger);
    async {
        for issue in &issues {
            let app = issue
                .app
                .clone()
                .unwrap_or_else(|| issue.file.display().to_string());
            ctl.event_once(
                &app,
                EventType::SpecInvalid,
                issue.to_string(),
                &desired.revision,
            )
            .await;
        }
        if ctl.proxy.ensure_running().await? {
            ctl.event(
                None,
                EventType::Other("proxy-started".into()),
                "started the private nginx".to_string(),
                &desired.revision,
                serde_json::Value::Null,
            )
            .await;
        }
        let mut observed = observe(ctl).await?;
        prober::probe_unknown(ctl, &desired, &mut observed).await;
        let overrides = read_overrides(&ctl.store).await?;
        let now = now_ms();
        let plan = plan::plan(&desired, &observed, &overrides, now);
        let report = apply(ctl, &desired, &observed, &plan).await;
        record_statuses(ctl, &desired, &plan, &overrides, &report).await;
        ctl.metrics.nginx_reloads(report.reloads);
        let duration_ms = started.elapsed().as_millis();
        if plan.has_changes() {
            info!(
                applied = report.steps_applied,
                failed = report.steps_failed,
                reloads = report.reloads,
                duration_ms,
                "pass applied changes"
            );
        }
        *ctl.last.lock().expect("last lock") = Some(LastPass {
            at: now,
            trigger: trigger.to_string(),
            desired: desired.clone(),
            observed,
            plan,
            issues,
            duration_ms,
        });
        timer.ok();
        Ok(PassReport {
            revision: desired.revision.clone(),
            steps_applied: report.steps_applied,
            steps_failed: report.steps_failed,
            reloads: report.reloads,
            changed: report.steps_applied + report.steps_failed > 0,
        })
    }
    .instrument(span)
    .await
}

async fn record_statuses<R: ContainerRuntime>(
    ctl: &Controller<R>,
    desired: &Desired,
    plan: &Plan,
    overrides: &Overrides,
    report: &apply::ApplyReport,
) {
    let now = now_ms();
    for (name, app) in &desired.apps {
        let error = report.errors.get(name).cloned();
        let status = if overrides.failed_rollouts.get(name) == Some(&app.hash)
            || report.failed_rollouts.contains(name)
        {
            AppStatus::FailedRollout
        } else if error.is_some() {
            AppStatus::Degraded
        } else if plan.steps_for(name).any(|s| s.touches_containers()) {
            // Its steps succeeded; the follow-up pass (woken right away) observes the
            // result and says synced.
            AppStatus::Progressing
        } else if plan.apps[name].ready_replicas >= plan.apps[name].desired_replicas {
            AppStatus::Synced
        } else if plan
            .steps_for(name)
            .any(|s| matches!(s, crate::plan::Step::NoOp { .. }))
        {
            // Held back (self-heal backoff, quarantine): it will not fix itself.
            AppStatus::Degraded
        } else {
            // Containers still starting (not yet past their probes).
            AppStatus::Progressing
        };
        let key = (status, error.clone());
        let unchanged = ctl.written_status.lock().expect("status lock").get(name) == Some(&key);
        if unchanged {
            continue;
        }
        let spec_json = serde_json::to_string(&app.spec).unwrap_or_default();
        let record = crate::store::AppDesiredRecord {
            name: name.clone(),
            spec_json: spec_json.clone(),
            spec_hash: app.hash.clone(),
            source_file: app.source.file.display().to_string(),
            revision: desired.revision.clone(),
            at: now,
        };
        let result = async {
            ctl.store.upsert_app_desired(&record).await?;
            ctl.store
                .set_app_status(name, status, error.as_deref(), now)
                .await?;
            if status == AppStatus::Synced {
                ctl.store
                    .record_last_good(
                        name,
                        &spec_json,
                        &app.hash,
                        &desired.revision,
                        &record.source_file,
                        now,
                    )
                    .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                ctl.written_status
                    .lock()
                    .expect("status lock")
                    .insert(name.clone(), key);
            }
            Err(e) => warn!(app = %name, "cannot record status: {e}"),
        }
    }
    for (name, why) in &desired.held {
        let key = (AppStatus::Quarantined, Some(why.clone()));
        if ctl.written_status.lock().expect("status lock").get(name) == Some(&key) {
            continue;
        }
        if ctl
            .store
            .set_app_status(name, AppStatus::Quarantined, Some(why), now)
            .await
            .is_ok()
        {
            ctl.written_status
                .lock()
                .expect("status lock")
                .insert(name.clone(), key);
        }
    }
}

/// Runs passes until `shutdown` resolves: after each pass it waits for the timer or a
/// wake-up. Containers and the private nginx keep running after shutdown.
pub async fn serve<R: ContainerRuntime>(
    ctl: Arc<Controller<R>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let prober = tokio::spawn(prober::run(ctl.clone()));
    tokio::pin!(shutdown);
    let mut trigger = "start".to_string();
    loop {
        let pass = run_pass(&ctl, &trigger);
        tokio::select! {
            result = pass => match result {
                // Something changed: observe again right away to confirm (and record
                // synced). Only successful work re-triggers, so failures cannot spin.
                Ok(report) if report.steps_applied > 0 => {
                    trigger = "confirm".to_string();
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!("reconcile pass failed: {e}"),
            },
            _ = &mut shutdown => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(ctl.settings.interval) => trigger = "timer".to_string(),
            _ = ctl.wake.notified() => trigger = "wake".to_string(),
            _ = &mut shutdown => break,
        }
    }
    prober.abort();
    info!("reconcile loop stopped; containers and nginx keep running");
}
