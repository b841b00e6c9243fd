//! The reconcile controller: the ONLY code that mutates Docker (through
//! `ContainerRuntime`) or nginx (through `Proxy`). Each pass (`pass.rs`) reads the source
//! snapshot, observes (one labelled list call), builds `Desired` with per-app isolation
//! (`read.rs` around `desired`, pure), checks the deletion budget (`plan::prune`, pure),
//! plans from scratch, applies (`apply.rs`), and records events, statuses and the
//! revision in the store (`records.rs`). `run.rs` is the loop that runs passes until
//! cancelled; `prober.rs` the background health prober; `swarm.rs` the swarm backend's part
//! of a pass (service steps, rollouts followed and recorded). Triggers (file events, git
//! polls, webhooks, the prober, the autoscaler, the timer) only wake the loop; they never
//! decide what to do.
//!
//! This module starts no task of its own: the composition root (`crate::daemon`) starts
//! the loop, the prober and everything else. Its fields are private; other modules get
//! read-only faces (`runtime()` is a `ContainerObserver`, `proxy()` a `ProxyReader`, the
//! last pass through a `watch` of `Arc<LastPass>`).

mod app_retire;
mod app_run;
mod apply;
pub mod desired;
mod heal_state;
mod images;
mod pass;
mod prober;
mod read;
mod records;
pub mod request;
mod run;
mod step_error;
pub mod swarm;
pub mod tls;
pub mod volumes;

pub use crate::clock::now_ms;
pub use crate::last_pass::LastPass;
pub use crate::metrics::{self, Metrics};
pub use apply::apply;
pub use desired::{desired_from, DesiredState, KnownApp, LastGoodSpec, Quarantine};
pub use images::{
    ImageBook, ImageSettings, ImageWorker, Images, DEFAULT_IMAGE_POLL, PULL_CONCURRENCY,
};
pub use pass::{observe, plan_only, run_pass};
pub use prober::run as run_prober;
pub use read::{known_apps, read_desired, read_overrides};
pub use run::{run_loop, PROXY_LOG_MAX_BYTES};
pub use step_error::StepError;

use crate::health::{ProbeRecord, ProbeTracker};
use crate::leader::Leadership;
use crate::plan::prune::DeletionBudget;
use crate::plan::{HealState, RetryState};
use crate::proxy::{Proxy, ProxyError, ProxyReader};
use crate::runtime::{ContainerObserver, ContainerRuntime, Observer, RuntimeError};
use crate::source::{Source, SourceConfig, SourceError, Waker};
use crate::spec::LoadedSpecs;
use crate::store::{
    AppStatus, EventType, HistoryLimits, NewEvent, RevisionStatus, Store, StoreError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

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
    /// How many container creates + starts run at the same time (four times as many apps
    /// may be in their steps at once, e.g. waiting on a health gate).
    pub parallel_apps: usize,
    /// Values for `valueFrom: sdk` env vars (berth's environment plus the host env file).
    pub host_env: BTreeMap<String, String>,
    /// Seconds Docker waits after SIGTERM before SIGKILL when stopping a container.
    pub stop_timeout_seconds: u32,
    /// How many apps one pass may remove (`--max-prune`, `--allow-mass-prune`).
    pub deletion_budget: DeletionBudget,
    /// How much event, scaling and revision history the daemon keeps (`--history-days`,
    /// `--history-rows`).
    pub history: HistoryLimits,
    /// Registry credentials' config dir and the moving-tag poll (`--docker-config`,
    /// `--image-poll`).
    pub images: ImageSettings,
    /// What specs may reach on the host (`--allow-host-path`).
    pub spec_policy: crate::spec::SpecPolicy,
    /// `--listen-tls` and the `--allow-tls-dir` prefixes route certificates may come from.
    pub tls: tls::TlsSettings,
}

/// Where a pass spent its time, in milliseconds (benchmarks and slow-pass logs read it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassPhases {
    /// Reading the source's snapshot.
    pub source_ms: f64,
    /// Source events, the proxy check and observing the engine, the proxy files and state.
    pub observe_ms: f64,
    /// Specs -> desired (isolation, deletion budget) and its events.
    pub desired_ms: f64,
    /// Probing unknown containers, reading overrides, planning.
    pub plan_ms: f64,
    pub apply_ms: f64,
    /// Statuses, removed apps and the revision in the store.
    pub record_ms: f64,
    /// Publishing the last pass.
    pub publish_ms: f64,
}

/// Summary of one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    pub revision: String,
    pub steps_applied: usize,
    pub steps_failed: usize,
    pub reloads: usize,
    pub changed: bool,
    /// When (unix ms) the next pass is due because a self-heal or retry backoff ends; the
    /// loop runs then even if nothing wakes it and the timer has not fired.
    pub requeue_at: Option<i64>,
    pub phases: PassPhases,
}

/// What was last written for an app, to skip identical writes: its status and last error,
/// and for an app that ran its own current spec, that spec (the whole of it: route, health
/// and scaling edits included, and the TLS files' fingerprint) and its file. Any change is
/// the app's new last good spec, recorded in the pass that read it.
#[derive(PartialEq)]
struct WrittenStatus {
    status: AppStatus,
    error: Option<String>,
    spec: Option<(Arc<crate::spec::AppSpec>, std::path::PathBuf)>,
}

/// Wakes the loop early, with the reason the next pass records as its trigger. Shared
/// (behind an `Arc`) by the controller and the wakers handed to other tasks, which hold no
/// reference to the controller itself.
#[derive(Debug, Default)]
struct LoopWake {
    notify: Notify,
    reason: Mutex<Option<&'static str>>,
}

impl LoopWake {
    fn wake(&self, reason: &'static str) {
        *self.reason.lock().expect("wake lock") = Some(reason);
        self.notify.notify_one();
    }

    fn take_reason(&self) -> Option<&'static str> {
        self.reason.lock().expect("wake lock").take()
    }
}

/// The controller: adapters plus the little in-memory state the loop keeps between passes.
/// Fields are private: only this module's code reaches the mutating adapters.
pub struct Controller<R: ContainerRuntime> {
    runtime: Arc<R>,
    proxy: Proxy,
    store: Store,
    settings: Settings,
    /// The spec source (snapshot, status).
    source: Arc<Source>,
    /// Passes run, by trigger (`start`, `timer`, `file`, `git`, `webhook`, `wake`, ...).
    pass_counts: Mutex<BTreeMap<String, u64>>,
    probes: Mutex<ProbeTracker>,
    heal: Mutex<BTreeMap<String, HealState>>,
    /// Set once `heal` holds the store's self-heal state (`heal_state::ensure_loaded`).
    heal_loaded: tokio::sync::OnceCell<()>,
    /// Retry backoff of apps whose last apply failed.
    retry: Mutex<BTreeMap<String, RetryState>>,
    /// The last pass, published for the API, the prober and the autoscaler.
    last: watch::Sender<Option<Arc<LastPass>>>,
    wake: Arc<LoopWake>,
    /// Last error event text per (app, kind), so a persisting error is recorded once.
    reported: Mutex<HashMap<(String, String), String>>,
    /// Per-app status last written to the store, to skip identical writes.
    written_status: Mutex<HashMap<String, WrittenStatus>>,
    /// Counters read by the API's /metrics (shared with the autoscaler).
    metrics: Arc<Metrics>,
    /// App -> the file behind its current state, for events.
    app_files: Mutex<BTreeMap<String, String>>,
    /// Last (revision, status, message) written to the store's revisions table.
    recorded_revision: Mutex<Option<(String, RevisionStatus, String)>>,
    /// The specs of the last snapshot read, by its revision: an unchanged source is not
    /// parsed again (a timer pass over 1,000 unchanged files parses nothing).
    loaded: Mutex<Option<(String, Arc<LoadedSpecs>)>>,
    /// What the store remembers about every app (source file, last good spec), read once
    /// and kept until this controller writes an app row (it is the only writer of them).
    known: Mutex<Option<Arc<BTreeMap<String, KnownApp>>>>,
    /// The last `desired_from` answer and the inputs it came from: a pass whose revision,
    /// known apps and present apps did not change reuses it (and its shared `Desired`).
    desired: Mutex<Option<read::DesiredCache>>,
    /// Registry images: pulls asked for, followed tags, finished jobs (`images.rs`).
    images: Arc<Images>,
    /// Swarm backend: app -> the spec hash of the update berth asked Swarm for, until
    /// Swarm finished it or rolled it back (`swarm::record_rollouts`).
    swarm_rolling: Mutex<BTreeMap<String, String>>,
    /// Backend warnings already logged, by key (`placement:<app>`: the docker backend
    /// ignores the app's swarm-only options; `remote:<app>`: the autoscaler cannot read
    /// the app's tasks on other nodes).
    backend_warned: Mutex<std::collections::BTreeSet<String>>,
    /// May this controller act (the leader lease, `crate::leader`); always with SQLite.
    leadership: Arc<Leadership>,
    /// The epoch of the last pass that ran as the leader (None after a follower pass): a
    /// different epoch means leadership was lost or changed hands in between, so the
    /// caches that assume continuity are dropped (`forget_continuity`).
    acted_epoch: Mutex<Option<i64>>,
    /// The store's overrides as last read, with the store's overrides generation before
    /// that read: a pass reuses them while no write went through this process (only the
    /// leader, in this process, writes them), so a no-op pass makes no store round trip.
    overrides: Mutex<Option<(u64, Arc<crate::plan::Overrides>)>>,
    /// Self-heal state must be loaded from the store again (a new leadership).
    heal_reload: std::sync::atomic::AtomicBool,
}

impl<R: ContainerRuntime> Controller<R> {
    /// A controller that always leads (SQLite store, tests).
    pub fn new(runtime: R, proxy: Proxy, store: Store, settings: Settings) -> Arc<Self> {
        Self::with_leadership(runtime, proxy, store, settings, Leadership::single("berth"))
    }

    /// A controller that acts only while `leadership` says so (a PostgreSQL store shared
    /// with other controllers).
    pub fn with_leadership(
        runtime: R,
        proxy: Proxy,
        store: Store,
        settings: Settings,
        leadership: Arc<Leadership>,
    ) -> Arc<Self> {
        let source = Source::new(settings.source.clone());
        Arc::new(Self {
            runtime: Arc::new(runtime),
            proxy,
            store,
            settings,
            source,
            pass_counts: Mutex::new(BTreeMap::new()),
            probes: Mutex::new(ProbeTracker::default()),
            heal: Mutex::new(BTreeMap::new()),
            heal_loaded: tokio::sync::OnceCell::new(),
            retry: Mutex::new(BTreeMap::new()),
            last: watch::Sender::new(None),
            wake: Arc::new(LoopWake::default()),
            reported: Mutex::new(HashMap::new()),
            written_status: Mutex::new(HashMap::new()),
            metrics: Arc::new(Metrics::default()),
            app_files: Mutex::new(BTreeMap::new()),
            recorded_revision: Mutex::new(None),
            loaded: Mutex::new(None),
            known: Mutex::new(None),
            desired: Mutex::new(None),
            images: Arc::new(Images::default()),
            swarm_rolling: Mutex::new(BTreeMap::new()),
            backend_warned: Mutex::new(std::collections::BTreeSet::new()),
            leadership,
            acted_epoch: Mutex::new(None),
            overrides: Mutex::new(None),
            heal_reload: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Who leads and whether this controller may act.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// Refuses a mutation (container create/start/stop/remove) once this controller may no
    /// longer act: a leader whose lease could not be renewed stops before it can expire.
    pub(crate) fn may_mutate(&self) -> Result<(), StepError> {
        if self.leadership.may_act() {
            Ok(())
        } else {
            Err(StepError::NotLeader {
                controller: self.leadership.id().to_string(),
            })
        }
    }

    /// Drops every cache that assumed this controller was the only writer without a gap
    /// (known apps, the desired cache, the overrides, written statuses and revision, reported errors, the
    /// dir source's read cache, resolved image IDs, retry backoff, self-heal state) so the
    /// next pass re-observes and re-reads everything from scratch.
    pub(crate) fn forget_continuity(&self) {
        *self.known.lock().expect("known lock") = None;
        *self.desired.lock().expect("desired lock") = None;
        *self.loaded.lock().expect("loaded lock") = None;
        *self.overrides.lock().expect("overrides lock") = None;
        self.written_status
            .lock()
            .expect("written status lock")
            .clear();
        *self
            .recorded_revision
            .lock()
            .expect("recorded revision lock") = None;
        self.reported.lock().expect("reported lock").clear();
        self.retry.lock().expect("retry lock").clear();
        self.heal.lock().expect("heal lock").clear();
        self.heal_reload
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.source.forget_cache();
        self.images.lock().forget_resolved();
    }

    /// True while a pull an app asked for is pending or running (`apply --once` waits).
    pub fn pulls_pending(&self) -> bool {
        self.images.pulls_pending()
    }

    /// True while a finished pull waits for the next pass to record it: a pull asked for
    /// early in a pass can end before that pass does.
    pub fn pulls_unrecorded(&self) -> bool {
        self.images.pulls_unrecorded()
    }

    /// The image pulling task for the daemon to run (`ImageWorker::run`): the only holder
    /// of the runtime besides the controller, and it only pulls and inspects images.
    pub fn image_worker(&self) -> ImageWorker<R> {
        ImageWorker {
            runtime: self.runtime.clone(),
            images: self.images.clone(),
            metrics: self.metrics.clone(),
            wake: self.waker(),
            settings: self.settings.images.clone(),
        }
    }

    /// The runtime, read-only (observe, inspect, stats, call counts).
    pub fn runtime(&self) -> &impl ContainerObserver {
        self.runtime.as_ref()
    }

    /// A read-only runtime handle another task can own (the autoscaler's stats): it
    /// implements `ContainerObserver` only.
    pub fn observer(&self) -> Observer<R> {
        Observer::new(self.runtime.clone())
    }

    /// The proxy, read-only (files on disk, access log, master pid, reload count).
    pub fn proxy(&self) -> ProxyReader<'_> {
        self.proxy.reader()
    }

    /// The store handle. The loop and the autoscaler write through it; the API gets a
    /// `ReadStore` instead.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The spec source (its snapshot and status; its background task is started by the
    /// composition root).
    pub fn source(&self) -> &Arc<Source> {
        &self.source
    }

    /// The in-process counters.
    pub fn counters(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The prober's latest record for a container.
    pub fn probe_record(&self, container_id: &str) -> Option<ProbeRecord> {
        self.probes
            .lock()
            .expect("probe lock")
            .record_of(container_id)
            .cloned()
    }

    /// The self-heal state of an app (backoff, repairs, quarantine).
    pub fn heal_state(&self, app: &str) -> Option<HealState> {
        self.heal.lock().expect("heal lock").get(app).cloned()
    }

    /// The last pass (None before the first one).
    pub fn last_pass(&self) -> Option<Arc<LastPass>> {
        self.last.borrow().clone()
    }

    /// A receiver that sees every pass the loop publishes.
    pub fn subscribe_last_pass(&self) -> watch::Receiver<Option<Arc<LastPass>>> {
        self.last.subscribe()
    }

    /// Publishes `pass` as the last pass (the loop does after each pass; tests of readers
    /// publish their own).
    pub fn publish_last_pass(&self, pass: LastPass) {
        self.last.send_replace(Some(Arc::new(pass)));
    }

    /// Wakes the loop for `reason` (the next pass's trigger).
    pub fn wake_with(&self, reason: &'static str) {
        self.wake.wake(reason);
    }

    /// A waker for another task (a source, the autoscaler): it wakes this loop and holds no
    /// reference to the controller.
    pub fn waker(&self) -> Waker {
        let wake = self.wake.clone();
        Arc::new(move |reason| wake.wake(reason))
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

    /// Starts the private nginx when it is not running (the first pass does this too).
    /// Returns whether it had to start it.
    pub async fn ensure_proxy_running(&self) -> Result<bool, ProxyError> {
        self.proxy.ensure_running().await
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
        // A follower's view of the apps is the leader's to record; its own proxy is its own.
        let own_proxy = matches!(
            event_type,
            EventType::ProxyReloaded | EventType::ProxyRejected | EventType::ProxyStarted
        );
        if !own_proxy && !self.leadership.may_act() {
            return;
        }
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
