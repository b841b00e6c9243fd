//! The reconcile loop and `apply`: the ONLY code that mutates Docker (through
//! `ContainerRuntime`) or nginx (through `Proxy`). Each pass reads the source snapshot,
//! observes (one labelled list call), builds `Desired` with per-app isolation (`desired`,
//! pure), checks the deletion budget (`plan::prune`, pure), plans from scratch, applies, and
//! records events, statuses and the revision in the store. Triggers (file events, git polls,
//! webhooks, the prober, the timer) only wake the loop; they never decide what to do.

mod apply;
pub mod desired;
mod heal_state;
pub mod metrics;
mod prober;
pub mod request;

pub use apply::apply;
pub use desired::{desired_from, DesiredState, KnownApp, LastGoodSpec, Quarantine};
pub use metrics::Metrics;

use crate::health::ProbeTracker;
use crate::plan::prune::{self, DeletionBudget, PruneVerdict};
use crate::plan::{self, render, Desired, HealState, Observed, Overrides, Plan};
use crate::proxy::{Proxy, ProxyError};
use crate::runtime::{ContainerRuntime, ObservedContainer, RuntimeError};
use crate::source::{Source, SourceConfig, SourceError, SourceStatus, SourceTasks, Waker};
use crate::spec::{self, AppSpec, SpecIssue};
use crate::store::{
    AppStatus, EventType, HistoryLimits, NewEvent, NewRevision, RevisionSource, RevisionStatus,
    Store, StoreError,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Where the App specs come from: a watched directory (or file) or a git repository.
    pub source: SourceConfig,
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
    /// How many apps one pass may remove (`--max-prune`, `--allow-mass-prune`).
    pub deletion_budget: DeletionBudget,
    /// How much event, scaling and revision history `serve` keeps (`--history-days`,
    /// `--history-rows`).
    pub history: HistoryLimits,
}

/// How often `serve` deletes history beyond `Settings::history`.
pub const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The private nginx's access and error logs are rotated (one old generation kept) when
/// they grow past this; at 500 req/s the access log grows ~100 KB/s.
pub const PROXY_LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Rotates the private nginx's logs past [`PROXY_LOG_MAX_BYTES`] (logged, never fatal).
pub async fn rotate_proxy_logs<R: ContainerRuntime>(ctl: &Controller<R>) {
    match ctl.proxy.rotate_logs(PROXY_LOG_MAX_BYTES).await {
        Ok(rotated) if !rotated.is_empty() => {
            info!(files = ?rotated, "rotated the private nginx's logs")
        }
        Ok(_) => {}
        Err(e) => warn!("cannot rotate the private nginx's logs: {e}"),
    }
}

/// Deletes events, scaling decisions and revisions beyond `settings.history` (logged, never
/// fatal: a failed prune is retried next time).
pub async fn prune_history<R: ContainerRuntime>(ctl: &Controller<R>) {
    match ctl
        .store
        .prune_history(ctl.settings.history, now_ms())
        .await
    {
        Ok(pruned) if pruned.total() > 0 => info!(
            events = pruned.events,
            scaling_decisions = pruned.scaling_decisions,
            revisions = pruned.revisions,
            "pruned history beyond the retention limits"
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot prune history: {e}"),
    }
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
    /// Apps running on their last good spec (or held), and why.
    pub quarantined: BTreeMap<String, Quarantine>,
    /// The deletion budget's answer for this pass.
    pub prune: Option<PruneVerdict>,
    pub source: SourceStatus,
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
    /// The spec source (snapshot, status, watcher / poll loop).
    pub source: Arc<Source>,
    /// Passes run, by trigger (`start`, `timer`, `file`, `git`, `webhook`, `wake`, ...).
    pub pass_counts: Mutex<BTreeMap<String, u64>>,
    pub probes: Mutex<ProbeTracker>,
    pub heal: Mutex<BTreeMap<String, HealState>>,
    /// Set once `heal` holds the store's self-heal state (`heal_state::ensure_loaded`).
    heal_loaded: tokio::sync::OnceCell<()>,
    /// Set by `enable_autoscale`: `serve` then runs the autoscaler next to the loop.
    autoscale: Mutex<Option<crate::autoscale::AutoscaleSettings>>,
    pub last: Mutex<Option<LastPass>>,
    /// Wakes the loop early (prober saw a health change, a source changed, ...).
    pub wake: Notify,
    /// Last error event text per (app, kind), so a persisting error is recorded once.
    reported: Mutex<HashMap<(String, String), String>>,
    /// Per-app status last written to the store, to skip identical writes.
    written_status: Mutex<HashMap<String, (AppStatus, Option<String>)>>,
    /// Counters read by the API's /metrics.
    pub metrics: Metrics,
    /// Why the loop was last woken (read by `serve` for the pass's trigger).
    wake_reason: Mutex<Option<&'static str>>,
    /// App -> the file behind its current state, for events.
    app_files: Mutex<BTreeMap<String, String>>,
    /// Last (revision, status, message) written to the store's revisions table.
    recorded_revision: Mutex<Option<(String, RevisionStatus, String)>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<R: ContainerRuntime> Controller<R> {
    pub fn new(runtime: R, proxy: Proxy, store: Store, settings: Settings) -> Arc<Self> {
        let source = Source::new(settings.source.clone());
        Arc::new(Self {
            runtime,
            proxy,
            store,
            settings,
            source,
            pass_counts: Mutex::new(BTreeMap::new()),
            probes: Mutex::new(ProbeTracker::default()),
            heal: Mutex::new(BTreeMap::new()),
            heal_loaded: tokio::sync::OnceCell::new(),
            autoscale: Mutex::new(None),
            last: Mutex::new(None),
            wake: Notify::new(),
            reported: Mutex::new(HashMap::new()),
            written_status: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            wake_reason: Mutex::new(None),
            app_files: Mutex::new(BTreeMap::new()),
            recorded_revision: Mutex::new(None),
        })
    }

    /// Wakes the loop for `reason` (the next pass's trigger).
    pub fn wake_with(&self, reason: &'static str) {
        *self.wake_reason.lock().expect("wake lock") = Some(reason);
        self.wake.notify_one();
    }

    /// Passes run so far for `trigger`.
    pub fn passes(&self, trigger: &str) -> u64 {
        self.pass_counts
            .lock()
            .expect("pass counts lock")
            .get(trigger)
            .copied()
            .unwrap_or(0)
    }

    /// Makes `serve` run the autoscaler (it writes replica overrides into the store and
    /// wakes this loop; it never touches Docker or nginx itself).
    pub fn enable_autoscale(&self, settings: crate::autoscale::AutoscaleSettings) {
        *self.autoscale.lock().expect("autoscale lock") = Some(settings);
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
        let source_file = app.and_then(|a| {
            self.app_files
                .lock()
                .expect("app files lock")
                .get(a)
                .cloned()
        });
        let event = NewEvent {
            app: app.map(str::to_string),
            event_type,
            message,
            revision: Some(revision.to_string()),
            source_file,
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

    /// A host-wide event (no app), recorded only when its message differs from the last
    /// one of this kind. `None` clears it, so the same message is recorded again later.
    async fn global_event_once(
        &self,
        event_type: EventType,
        message: Option<String>,
        revision: &str,
        details: serde_json::Value,
    ) -> bool {
        let key = (String::new(), event_type.to_string());
        let Some(message) = message else {
            return self
                .reported
                .lock()
                .expect("reported lock")
                .remove(&key)
                .is_some();
        };
        {
            let mut reported = self.reported.lock().expect("reported lock");
            if reported.get(&key) == Some(&message) {
                return false;
            }
            reported.insert(key, message.clone());
        }
        self.event(None, event_type, message, revision, details)
            .await;
        true
    }

    pub(crate) fn clear_reported(&self, app: &str, event_type: EventType) {
        self.reported
            .lock()
            .expect("reported lock")
            .remove(&(app.to_string(), event_type.to_string()));
    }
}

/// What the store remembers about every app: its source file and last good spec. A last
/// good spec that no longer deserialises (an older berth wrote it) counts as none.
pub async fn known_apps(store: &Store) -> Result<BTreeMap<String, KnownApp>, ReconcileError> {
    let mut known = BTreeMap::new();
    for row in store.apps().await? {
        let last_good = match (&row.last_good_spec_json, &row.last_good_revision) {
            (Some(json), Some(revision)) => match serde_json::from_str::<AppSpec>(json) {
                Ok(spec) => Some(LastGoodSpec {
                    spec,
                    revision: revision.clone(),
                    source_file: row
                        .last_good_source_file
                        .clone()
                        .unwrap_or_else(|| row.source_file.clone()),
                }),
                Err(e) => {
                    warn!(app = %row.name, "ignoring the stored last good spec: {e}");
                    None
                }
            },
            _ => None,
        };
        known.insert(
            row.name.clone(),
            KnownApp {
                source_file: row.source_file.clone(),
                last_good,
            },
        );
    }
    Ok(known)
}

/// Apps with containers or proxy files on the host.
fn present_apps(observed: &Observed) -> BTreeSet<String> {
    observed
        .containers
        .iter()
        .map(|c| c.app.clone())
        .chain(
            observed
                .proxy_files
                .keys()
                .map(|f| render::app_of_file(f).to_string()),
        )
        .collect()
}

/// Loads the snapshot's specs into `Desired` (per-app isolation against the store) and
/// applies the deletion budget: when it refuses, pruning is off for this pass.
pub async fn read_desired<R: ContainerRuntime>(
    ctl: &Controller<R>,
    revision: &str,
    files: &[(std::path::PathBuf, String)],
    observed: &Observed,
) -> Result<(DesiredState, PruneVerdict), ReconcileError> {
    let loaded = spec::load_files(files);
    let known = known_apps(&ctl.store).await?;
    let mut state = desired_from(
        &loaded,
        revision,
        ctl.proxy.listen(),
        &known,
        &present_apps(observed),
    );
    let verdict = prune::check(&state.desired, observed, &ctl.settings.deletion_budget);
    if verdict.is_refused() {
        state.desired.prune_allowed = false;
    }
    Ok((state, verdict))
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
    heal_state::ensure_loaded(ctl).await?;
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
    let snapshot = ctl.source.snapshot().await?;
    let mut observed = observe(ctl).await?;
    let (state, _) = read_desired(ctl, &snapshot.revision, &snapshot.files, &observed).await?;
    let (_, plan, _) = probe_and_plan(ctl, &state.desired, &mut observed).await?;
    Ok((plan, state.issues))
}

/// The end of every pass's prologue (a real pass and `plan_only`): probe containers whose
/// health is unknown, read the replica overrides, plan as of now.
async fn probe_and_plan<R: ContainerRuntime>(
    ctl: &Controller<R>,
    desired: &Desired,
    observed: &mut Observed,
) -> Result<(Overrides, Plan, i64), ReconcileError> {
    prober::probe_unknown(ctl, desired, observed).await;
    let overrides = read_overrides(&ctl.store).await?;
    let now = now_ms();
    let plan = plan::plan(desired, observed, &overrides, now);
    Ok((overrides, plan, now))
}

/// One pass: read the source, observe, build desired (isolation + budget), plan, apply,
/// record.
pub async fn run_pass<R: ContainerRuntime>(
    ctl: &Arc<Controller<R>>,
    trigger: &str,
) -> Result<PassReport, ReconcileError> {
    let started = std::time::Instant::now();
    let timer = ctl.metrics.pass_started();
    *ctl.pass_counts
        .lock()
        .expect("pass counts lock")
        .entry(trigger.to_string())
        .or_default() += 1;
    let snapshot = ctl
        .source
        .snapshot()
        .await
        .inspect_err(|_| ctl.metrics.source_error())?;
    let revision = snapshot.revision.clone();
    let span = info_span!("reconcile_pass", revision = %revision, trigger);
    async {
        // Counted at the proxy: apps whose changes shared one reload count it once, and the
        // reload of an adopted nginx counts too.
        let reloads_before = ctl.proxy.reloads();
        report_source(ctl, &revision).await;
        if ctl.proxy.ensure_running().await? {
            ctl.event(
                None,
                EventType::ProxyStarted,
                "started the private nginx".to_string(),
                &revision,
                serde_json::Value::Null,
            )
            .await;
        }
        let mut observed = observe(ctl).await?;
        let (state, verdict) = read_desired(ctl, &revision, &snapshot.files, &observed).await?;
        *ctl.app_files.lock().expect("app files lock") = state.files.clone();
        for issue in &state.issues {
            let app = issue
                .app
                .clone()
                .unwrap_or_else(|| issue.file.display().to_string());
            ctl.event_once(&app, EventType::SpecInvalid, issue.to_string(), &revision)
                .await;
        }
        for (app, q) in &state.quarantined {
            let message = match &q.last_good_revision {
                Some(good) => format!(
                    "quarantined: keeps running its last good spec (revision {good}) until the spec is fixed: {}",
                    q.reason
                ),
                None => format!(
                    "quarantined: berth has no good spec of this app yet, so it is kept exactly as it runs: {}",
                    q.reason
                ),
            };
            ctl.event_once(app, EventType::Quarantined, message, &revision)
                .await;
        }
        for app in ctl.desired_apps_not_quarantined(&state) {
            ctl.clear_reported(&app, EventType::Quarantined);
        }
        let refusal = match &verdict {
            PruneVerdict::Refused { reason, .. } => Some(format!("prune refused: {reason}")),
            PruneVerdict::Allowed { .. } => None,
        };
        let details = serde_json::to_value(&verdict).unwrap_or_default();
        ctl.global_event_once(
            EventType::PruneRefused,
            refusal,
            &revision,
            details,
        )
        .await;
        let desired = &state.desired;
        let (overrides, plan, now) = probe_and_plan(ctl, desired, &mut observed).await?;
        let report = apply(ctl, desired, &observed, &plan).await;
        let reloads = (ctl.proxy.reloads() - reloads_before) as usize;
        record_statuses(ctl, &state, &plan, &overrides, &report).await;
        ctl.metrics.nginx_reloads(reloads);
        forget_removed(ctl, &state, &verdict, &report).await;
        record_revision(ctl, &state, &verdict, &report).await;
        let duration_ms = started.elapsed().as_millis();
        if plan.has_changes() {
            info!(
                applied = report.steps_applied,
                failed = report.steps_failed,
                reloads,
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
            issues: state.issues.clone(),
            quarantined: state.quarantined.clone(),
            prune: Some(verdict),
            source: ctl.source.status(),
            duration_ms,
        });
        timer.ok();
        Ok(PassReport {
            revision: revision.clone(),
            steps_applied: report.steps_applied,
            steps_failed: report.steps_failed,
            reloads,
            changed: report.steps_applied + report.steps_failed > 0,
        })
    }
    .instrument(span)
    .await
}

impl<R: ContainerRuntime> Controller<R> {
    fn desired_apps_not_quarantined(&self, state: &DesiredState) -> Vec<String> {
        state
            .desired
            .apps
            .keys()
            .filter(|a| !state.quarantined.contains_key(*a))
            .cloned()
            .collect()
    }
}

/// Records `source-degraded` once per distinct error and `source-recovered` when it clears.
async fn report_source<R: ContainerRuntime>(ctl: &Controller<R>, revision: &str) {
    let status = ctl.source.status();
    let kind = EventType::SourceDegraded;
    match &status.degraded {
        Some(why) => {
            let message = format!(
                "source {} is degraded, serving revision {revision} until it recovers: {why}",
                status.location
            );
            ctl.global_event_once(kind, Some(message), revision, serde_json::Value::Null)
                .await;
        }
        None => {
            if ctl
                .global_event_once(kind, None, revision, serde_json::Value::Null)
                .await
            {
                ctl.event(
                    None,
                    EventType::SourceRecovered,
                    format!(
                        "source {} recovered at revision {revision}",
                        status.location
                    ),
                    revision,
                    serde_json::Value::Null,
                )
                .await;
            }
        }
    }
}

/// Forgets apps that left the source once they are gone from the host, so a later spec of
/// the same name never revives their old last good spec.
async fn forget_removed<R: ContainerRuntime>(
    ctl: &Controller<R>,
    state: &DesiredState,
    verdict: &PruneVerdict,
    report: &apply::ApplyReport,
) {
    if verdict.is_refused() || !state.desired.prune_allowed {
        return;
    }
    let known = match ctl.store.apps().await {
        Ok(rows) => rows,
        Err(e) => {
            warn!("cannot list apps: {e}");
            return;
        }
    };
    for row in known {
        let name = &row.name;
        if state.desired.apps.contains_key(name)
            || state.desired.held.contains_key(name)
            || report.errors.contains_key(name)
        {
            continue;
        }
        match ctl.store.delete_app(name).await {
            Ok(_) => {
                ctl.written_status.lock().expect("status lock").remove(name);
                ctl.app_files
                    .lock()
                    .expect("app files lock")
                    .insert(name.clone(), row.source_file.clone());
                ctl.event(
                    Some(name),
                    EventType::Removed,
                    format!(
                        "app removed: its spec left the source ({})",
                        row.source_file
                    ),
                    &state.desired.revision,
                    serde_json::Value::Null,
                )
                .await;
            }
            Err(e) => warn!(app = %name, "cannot forget removed app: {e}"),
        }
    }
}

/// Records the outcome of this revision in the store (only when it changed).
async fn record_revision<R: ContainerRuntime>(
    ctl: &Controller<R>,
    state: &DesiredState,
    verdict: &PruneVerdict,
    report: &apply::ApplyReport,
) {
    let revision = &state.desired.revision;
    let mut notes = Vec::new();
    if !state.quarantined.is_empty() {
        let apps: Vec<&str> = state.quarantined.keys().map(String::as_str).collect();
        notes.push(format!("quarantined: {}", apps.join(", ")));
    }
    if let PruneVerdict::Refused { apps, .. } = verdict {
        notes.push(format!("prune refused for {}", apps.join(", ")));
    }
    if !report.errors.is_empty() {
        let apps: Vec<&str> = report.errors.keys().map(String::as_str).collect();
        notes.push(format!("failed: {}", apps.join(", ")));
    }
    let status = if report.steps_failed > 0 && report.steps_applied == 0 {
        RevisionStatus::Failed
    } else if notes.is_empty() {
        RevisionStatus::Applied
    } else {
        RevisionStatus::Partial
    };
    let mut message = format!("{} apps", state.desired.apps.len());
    for note in notes {
        message.push_str("; ");
        message.push_str(&note);
    }
    let key = (revision.clone(), status, message.clone());
    if ctl
        .recorded_revision
        .lock()
        .expect("revision lock")
        .as_ref()
        == Some(&key)
    {
        return;
    }
    let source = match ctl.settings.source {
        SourceConfig::Dir(_) => RevisionSource::Dir,
        SourceConfig::Git(_) => RevisionSource::Git,
    };
    let record = NewRevision {
        revision: revision.clone(),
        source,
        status,
        message,
        at: now_ms(),
    };
    match ctl.store.record_revision(&record).await {
        Ok(()) => *ctl.recorded_revision.lock().expect("revision lock") = Some(key),
        Err(e) => warn!("cannot record revision: {e}"),
    }
}

async fn record_statuses<R: ContainerRuntime>(
    ctl: &Controller<R>,
    state: &DesiredState,
    plan: &Plan,
    overrides: &Overrides,
    report: &apply::ApplyReport,
) {
    let now = now_ms();
    let desired: &Desired = &state.desired;
    for (name, app) in &desired.apps {
        if state.quarantined.contains_key(name) {
            // Runs its last good spec: status says why; desired and last-good rows stay.
            continue;
        }
        let mut error = report.errors.get(name).cloned();
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
            let heal = ctl.heal.lock().expect("heal lock");
            match plan::heal::crash_loop_reason(heal.get(name), &app.hash) {
                Some(why) => {
                    error = Some(why);
                    AppStatus::CrashLooping
                }
                None => AppStatus::Degraded,
            }
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
    let quarantined = state
        .quarantined
        .iter()
        .map(|(name, q)| (name, &q.reason))
        .chain(
            desired
                .held
                .iter()
                .filter(|(name, _)| !state.quarantined.contains_key(*name)),
        );
    for (name, why) in quarantined {
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
/// wake-up (the source's watcher or poll loop, the webhook, the prober). History beyond
/// `settings.history` is pruned by a task of its own at start and every
/// [`HISTORY_PRUNE_EVERY`]; the private nginx's logs are rotated before every pass once past
/// [`PROXY_LOG_MAX_BYTES`]. Containers and the private nginx keep running after shutdown.
pub async fn serve<R: ContainerRuntime + 'static>(
    ctl: Arc<Controller<R>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let prober = tokio::spawn(prober::run(ctl.clone()));
    let waker: Waker = {
        let weak = Arc::downgrade(&ctl);
        Arc::new(move |reason| {
            if let Some(ctl) = weak.upgrade() {
                ctl.wake_with(reason);
            }
        })
    };
    let _source_tasks: Option<SourceTasks> = match ctl.source.spawn(waker) {
        Ok(tasks) => Some(tasks),
        Err(e) => {
            warn!("{e}");
            None
        }
    };
    let autoscale = ctl.autoscale.lock().expect("autoscale lock").clone();
    let autoscaler = autoscale.map(|s| tokio::spawn(crate::autoscale::run(ctl.clone(), s)));
    tokio::pin!(shutdown);
    let mut trigger = "start".to_string();
    // Off the loop's path: a first prune of a large database must not delay the first pass.
    let history = tokio::spawn({
        let ctl = ctl.clone();
        async move {
            loop {
                prune_history(&ctl).await;
                tokio::time::sleep(HISTORY_PRUNE_EVERY).await;
            }
        }
    });
    loop {
        rotate_proxy_logs(&ctl).await;
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
            _ = ctl.wake.notified() => {
                let reason = ctl.wake_reason.lock().expect("wake lock").take();
                trigger = reason.unwrap_or("wake").to_string();
            }
            _ = &mut shutdown => break,
        }
    }
    prober.abort();
    history.abort();
    if let Some(autoscaler) = autoscaler {
        autoscaler.abort();
    }
    info!("reconcile loop stopped; containers and nginx keep running");
}
