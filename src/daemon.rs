//! The composition root: the one place that starts berth's long-running tasks (the
//! reconcile loop, the health prober, the leader lease (PostgreSQL store), the image worker (registry pulls and moving-tag
//! checks), the source's watcher or poll loop, the autoscaler, history pruning, the status
//! API, the webhook listener and the systemd notifier) in one `JoinSet`, hands each
//! only what it needs, and stops them on one cancellation token. Modules do not start each
//! other's tasks.
//!
//! Shutdown: when the token fires, the loop finishes the pass in flight (so nginx files are
//! never left between write and `nginx -t`/restore, and no container is left half made) and
//! the API drains its requests, bounded by `shutdown_timeout`; the background tasks (prober,
//! image worker, source, autoscaler, history, webhook, notifier) only read, pull or wake,
//! so they are aborted at once.
//! Containers and the private nginx keep running after berth stops.
//! Must not touch: any decision (it wires, it does not reconcile).

use crate::autoscale::{self, AutoscaleDeps, AutoscaleSettings};
use crate::clock::now_ms;
use crate::reconcile::{self, Controller};
use crate::runtime::ContainerRuntime;
use crate::store::{HistoryLimits, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the daemon deletes history beyond `Settings::history`.
pub const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Default bound on how long shutdown waits for the pass in flight (`--shutdown-timeout`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A task the caller prepared (bound its socket) for the daemon to run.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What `run` starts besides the loop, the prober and the source, which every daemon runs.
pub struct Daemon<R: ContainerRuntime> {
    pub controller: Arc<Controller<R>>,
    /// The autoscaler's settings; `None` runs no autoscaler.
    pub autoscale: Option<AutoscaleSettings>,
    /// The status API: its bound listener and router.
    pub api: Option<(TcpListener, axum::Router)>,
    /// The git webhook listener, already bound (`source::webhook::bind`).
    pub webhook: Option<Task>,
    /// The notifier draining the store's tap (`notify::start`); aborted on stop.
    pub notifier: Option<Task>,
    /// How long shutdown waits for the pass in flight and the API's open requests.
    pub shutdown_timeout: Duration,
    /// The leader lease's duration and renewal (used with a PostgreSQL store).
    pub lease: crate::leader::LeaseSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("berth's {task} task stopped unexpectedly: {message}; berth is shutting down (containers and nginx keep running)")]
    TaskEnded { task: &'static str, message: String },
}

/// Deletes events, scaling decisions and revisions beyond `limits` (logged, never fatal: a
/// failed prune is retried next time).
pub async fn prune_history(store: &Store, limits: HistoryLimits) {
    match store.prune_history(limits, now_ms()).await {
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

/// Passes `apply --once` runs at most: the first, and one after each round of pulls.
pub const APPLY_ONCE_MAX_PASSES: usize = 4;

/// `berth apply --once`: one pass; when it asked for image pulls, the image worker runs
/// until they end and another pass creates what waited for them (at most
/// [`APPLY_ONCE_MAX_PASSES`] passes). The worker stops with it.
pub async fn apply_once<R: ContainerRuntime>(
    ctl: &Arc<Controller<R>>,
) -> Result<reconcile::PassReport, reconcile::ReconcileError> {
    let worker = tokio::spawn(ctl.image_worker().run());
    let mut report = reconcile::run_pass(ctl, "apply --once").await;
    for _ in 1..APPLY_ONCE_MAX_PASSES {
        // A pull this pass asked for may already have ended (a fast local registry): its
        // outcome still needs the next pass.
        if report.is_err() || !(ctl.pulls_pending() || ctl.pulls_unrecorded()) {
            break;
        }
        while ctl.pulls_pending() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        report = reconcile::run_pass(ctl, "apply --once").await;
    }
    worker.abort();
    report
}

/// Runs `task` and answers with its name, so the `JoinSet` can say which task ended.
async fn named(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) -> &'static str {
    task.await;
    name
}

/// Runs every task until `shutdown` fires (or a task that should run forever ends, which is
/// an error), then stops them as the module doc says.
pub async fn run<R: ContainerRuntime>(
    daemon: Daemon<R>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let ctl = daemon.controller;
    // Tasks that finish their work on shutdown: the loop's pass, the API's requests.
    let mut draining: JoinSet<&'static str> = JoinSet::new();
    // Tasks that only read or wake: aborted at once on shutdown.
    let mut background: JoinSet<&'static str> = JoinSet::new();

    draining.spawn(named(
        "reconcile loop",
        reconcile::run_loop(ctl.clone(), shutdown.clone()),
    ));
    if let Some((listener, router)) = daemon.api {
        let stop = shutdown.clone();
        draining.spawn(named("status api", async move {
            if let Err(e) = crate::api::serve(listener, router, stop.cancelled_owned()).await {
                warn!("{e}");
            }
        }));
    }
    background.spawn(named("health prober", reconcile::run_prober(ctl.clone())));
    // HA: the leader lease (PostgreSQL store); aborted on stop, then released below.
    if ctl.leadership().is_leased() {
        background.spawn(named(
            "leader lease",
            crate::leader::run(
                ctl.store().clone(),
                ctl.leadership().clone(),
                daemon.lease.clone(),
                ctl.waker(),
            ),
        ));
    }
    // Pulls and moving-tag checks, outside the passes (a pull cut by shutdown is asked for
    // again by the next berth).
    background.spawn(named("image worker", ctl.image_worker().run()));
    match ctl.source().task(ctl.waker()) {
        Ok(task) => {
            background.spawn(named("source", task));
        }
        // The timer pass still reads the source; only the early wake-ups are lost.
        Err(e) => warn!("{e}"),
    }
    if let Some(settings) = daemon.autoscale {
        let deps = AutoscaleDeps {
            store: ctl.store().clone(),
            stats: ctl.observer(),
            last_pass: ctl.subscribe_last_pass(),
            counters: ctl.counters().clone(),
            leadership: ctl.leadership().clone(),
        };
        let access_log = ctl.proxy().access_log();
        background.spawn(named(
            "autoscaler",
            autoscale::run(deps, settings, access_log, ctl.waker()),
        ));
    }
    {
        // Off the loop's path: a first prune of a large database must not delay a pass.
        let store = ctl.store().clone();
        let limits = ctl.settings().history;
        background.spawn(named("history", async move {
            loop {
                prune_history(&store, limits).await;
                tokio::time::sleep(HISTORY_PRUNE_EVERY).await;
            }
        }));
    }
    if let Some(webhook) = daemon.webhook {
        background.spawn(named("webhook listener", webhook));
    }
    // systemd: READY=1 after the first pass, watchdog pings while passes complete.
    background.spawn(named(
        "service notifier",
        crate::service::run(ctl.subscribe_last_pass(), ctl.settings().interval),
    ));
    if let Some(notifier) = daemon.notifier {
        background.spawn(named("notifier", notifier));
    }

    let mut result = Ok(());
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some(ended) = draining.join_next() => {
            if !shutdown.is_cancelled() {
                result = Err(ended_early(ended));
            }
            shutdown.cancel();
        }
        Some(ended) = background.join_next() => {
            result = Err(ended_early(ended));
            shutdown.cancel();
        }
    }
    background.shutdown().await;
    let deadline = tokio::time::Instant::now() + daemon.shutdown_timeout;
    while !draining.is_empty() {
        match tokio::time::timeout_at(deadline, draining.join_next()).await {
            Ok(Some(Ok(name))) => info!("{name} stopped"),
            Ok(Some(Err(e))) => warn!("a task failed while stopping: {e}"),
            Ok(None) => break,
            Err(_) => {
                warn!(
                    timeout_s = daemon.shutdown_timeout.as_secs_f64(),
                    "shutdown timeout: stopping the pass in flight; the next start re-observes \
                     and finishes it (raise --shutdown-timeout to let passes finish)"
                );
                draining.shutdown().await;
                break;
            }
        }
    }
    // The pass in flight has finished (or was cut): a follower may take over at once.
    crate::leader::release(ctl.store(), ctl.leadership()).await;
    result
}

fn ended_early(ended: Result<&'static str, tokio::task::JoinError>) -> DaemonError {
    match ended {
        Ok(task) => DaemonError::TaskEnded {
            task,
            message: "it returned".to_string(),
        },
        // A panic: its message names the place (the tasks' names are in the log).
        Err(e) => DaemonError::TaskEnded {
            task: "a background",
            message: e.to_string(),
        },
    }
}
