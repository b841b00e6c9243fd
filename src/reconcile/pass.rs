//! One reconcile pass: read the source, observe, build `Desired` (read.rs), plan, apply,
//! record; and `plan_only`, the same prologue without the apply, changing nothing the
//! loop reads. Must not touch: the loop's timing (run.rs) or what is recorded per app
//! (records.rs).

use super::apply::ApplyReport;
use super::desired::DesiredState;
use super::read::{cached_overrides, read_desired, read_overrides};
use super::records::{forget_removed, record_revision, record_statuses};
use super::{apply, prober, tls, Controller, LastPass, PassPhases, PassReport, ReconcileError};
use crate::clock::now_ms;
use crate::health::ProbeTracker;
use crate::plan::prune::PruneVerdict;
use crate::plan::{self, Desired, Observed, Overrides, Plan};
use crate::runtime::swarm::ServiceObserver;
use crate::runtime::ContainerRuntime;
use crate::spec::SpecIssue;
use crate::store::EventType;
use std::sync::{Arc, Mutex};
use tracing::{info, info_span, warn, Instrument};

/// Observes containers (one list call), health, proxy files and heal state. The loop's
/// probe tracker forgets containers that are gone.
pub async fn observe<R: ContainerRuntime>(ctl: &Controller<R>) -> Result<Observed, ReconcileError> {
    observe_with(ctl, &ctl.probes).await
}

/// `observe` with the health from `probes` (the loop's tracker, or a copy of it).
async fn observe_with<R: ContainerRuntime>(
    ctl: &Controller<R>,
    probes: &Mutex<ProbeTracker>,
) -> Result<Observed, ReconcileError> {
    let (containers, services) = match ctl.runtime.swarm() {
        Some(swarm) => {
            let services = swarm.services().await?;
            (crate::runtime::swarm::local_containers(&services), services)
        }
        None => (ctl.runtime.observe().await?, Vec::new()),
    };
    let proxy_files = ctl.proxy.current_files().await?;
    let health = {
        let mut probes = probes.lock().expect("probe lock");
        probes.retain(|id| containers.iter().any(|c| c.id == id));
        probes.snapshot()
    };
    super::heal_state::ensure_loaded(ctl).await?;
    let heal = ctl.heal.lock().expect("heal lock").clone();
    let retry = ctl.retry.lock().expect("retry lock").clone();
    Ok(Observed {
        containers,
        health,
        proxy_files,
        heal,
        retry,
        images: ctl.images.lock().view(),
        services,
    })
}

/// What the next pass would do, without doing it. Changes nothing the loop reads: the
/// source is peeked (a git source is never fetched; before its first sync this fails with
/// `NotSynced`), probes of unknown containers go into a copy of the tracker, and the store
/// is only read.
pub async fn plan_only<R: ContainerRuntime>(
    ctl: &Controller<R>,
) -> Result<(Plan, Vec<SpecIssue>), ReconcileError> {
    let snapshot = ctl.source.peek().await?;
    let probes = Mutex::new(ctl.probes.lock().expect("probe lock").clone());
    let mut observed = observe_with(ctl, &probes).await?;
    let (read, _) = read_desired(ctl, &snapshot, &observed).await?;
    let (_, plan, _) = probe_and_plan(ctl, &probes, &read.desired, &mut observed, false).await?;
    Ok((plan, read.state.issues.clone()))
}

/// The end of every pass's prologue (a real pass and `plan_only`): probe containers whose
/// health is unknown (into `probes`), read the replica overrides (a loop pass: kept until
/// this process writes them), plan as of now.
async fn probe_and_plan<R: ContainerRuntime>(
    ctl: &Controller<R>,
    probes: &Mutex<ProbeTracker>,
    desired: &Desired,
    observed: &mut Observed,
    loop_pass: bool,
) -> Result<(Overrides, Plan, i64), ReconcileError> {
    // `plan_only` reads the store itself: it changes nothing the loop reads.
    let overrides = if loop_pass {
        cached_overrides(ctl).await?
    } else {
        read_overrides(&ctl.store).await?
    };
    let now = now_ms();
    let plan = match ctl.runtime.swarm() {
        // Swarm's health checks decide a task's health: nothing for berth to probe.
        Some(swarm) => {
            let wanted = super::swarm::wanted(ctl, swarm, desired, &overrides);
            plan::swarm::plan(desired, observed, &overrides, &wanted, now)
        }
        None => {
            prober::probe_unknown(probes, desired, observed).await;
            plan::plan(desired, observed, &overrides, now)
        }
    };
    Ok((overrides, plan, now))
}

/// One pass: read the source, observe, build desired (isolation + budget), plan, apply,
/// record.
pub async fn run_pass<R: ContainerRuntime>(
    ctl: &Arc<Controller<R>>,
    trigger: &str,
) -> Result<PassReport, ReconcileError> {
    let started = std::time::Instant::now();
    let mut phases = PassPhases::default();
    let mut lap = Lap::new();
    let timer = ctl.metrics.pass_started();
    *ctl.pass_counts
        .lock()
        .expect("pass counts lock")
        .entry(trigger.to_string())
        .or_default() += 1;
    // Leadership (always, with SQLite): a pass that acts under another epoch than the last
    // acting pass starts from scratch; a follower only keeps its own nginx in sync.
    let acting = ctl.leadership.acting_epoch();
    let new_term = {
        let mut acted = ctl.acted_epoch.lock().expect("acted epoch lock");
        let new_term = acting.is_some() && *acted != acting;
        *acted = acting;
        new_term
    };
    if new_term {
        if ctl.leadership.is_leased() {
            info!(
                epoch = acting.unwrap_or(0),
                "leading: re-observing everything from scratch"
            );
        }
        ctl.forget_continuity();
    }
    let snapshot = ctl
        .source
        .snapshot()
        .await
        .inspect_err(|_| ctl.metrics.source_error())?;
    let revision = snapshot.revision.clone();
    phases.source_ms = lap.next();
    let span = info_span!("reconcile_pass", revision = %revision, trigger);
    async {
        // Counted at the proxy: apps whose changes shared one reload count it once, and the
        // reload of an adopted nginx counts too.
        let reloads_before = ctl.proxy.reloads();
        let pushes_before = ctl.proxy.pushes();
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
        phases.observe_ms = lap.next();
        let (read, verdict) = read_desired(ctl, &snapshot, &observed).await?;
        let state = &*read.state;
        // nginx reads berth's copies of the validated TLS files: write the new ones before
        // the plan's config names them.
        for (app, why) in tls::write_copies(&read.desired, &ctl.settings.tls) {
            warn!(%app, "tls files not copied: {why}");
        }
        // Copies neither the desired state nor a config file on disk names are never read
        // again (a renewed certificate's old copy, a removed app's).
        for path in tls::prune_copies(&read.desired, &observed.proxy_files, &ctl.settings.tls) {
            info!(path = %path.display(), "removed an unused tls copy");
        }
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
        for app in ctl.desired_apps_not_quarantined(state) {
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
        let desired = &*read.desired;
        let pull_failures =
            super::images::record_outcomes(ctl, desired, &mut observed, &revision).await;
        phases.desired_ms = lap.next();
        match ctl.runtime.swarm() {
            // Swarm's rollouts are recorded by the leader (failed rollouts are desired state).
            Some(_) if acting.is_some() => {
                super::swarm::record_rollouts(ctl, &observed, &revision).await;
                super::swarm::warn_remote_tasks(ctl, desired, &observed);
            }
            Some(_) => {}
            None => warn_swarm_options(ctl, desired),
        }
        let (overrides, mut plan, now) =
            probe_and_plan(ctl, &ctl.probes, desired, &mut observed, true).await?;
        if acting.is_none() {
            plan = plan.proxy_only();
        }
        phases.plan_ms = lap.next();
        let mut report = match ctl.runtime.swarm() {
            Some(swarm) => {
                super::swarm::apply(ctl, swarm, desired, &observed, &plan, &overrides).await
            }
            None => apply(ctl, desired, &observed, &plan).await,
        };
        phases.apply_ms = lap.next();
        update_retry(ctl, desired, &plan, &report, now_ms());
        // Pulls that failed since the last pass: their backoff is set already.
        for (app, error) in pull_failures {
            report.failed(&app, error);
        }
        let reloads = (ctl.proxy.reloads() - reloads_before) as usize;
        let pushes = (ctl.proxy.pushes() - pushes_before) as usize;
        ctl.metrics.nginx_reloads(reloads);
        ctl.metrics.nginx_member_pushes(pushes);
        // Desired state is the leader's to write (the store would refuse a follower's).
        if acting.is_some() && ctl.leadership.may_act() {
            record_statuses(ctl, state, &plan, &overrides, &report).await;
            forget_removed(ctl, state, &verdict, &report).await;
            record_revision(ctl, state, &verdict, &report).await;
        }
        phases.record_ms = lap.next();
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
        // A pass that built a new desired state or changed the host leaves glibc holding
        // its peak heap; hand the free pages back (a no-op pass allocates little).
        let fresh = ctl
            .last_pass()
            .is_none_or(|last| !Arc::ptr_eq(&last.desired, &read.desired));
        let trim = fresh || report.steps_applied + report.steps_failed > 0;
        ctl.publish_last_pass(LastPass {
            at: now,
            trigger: trigger.to_string(),
            desired: read.desired.clone(),
            observed,
            plan,
            issues: state.issues.clone(),
            quarantined: state.quarantined.clone(),
            prune: Some(verdict),
            source: ctl.source.status(),
            duration_ms,
        });
        timer.ok();
        let requeue_at = {
            let heal = ctl.heal.lock().expect("heal lock");
            let retry = ctl.retry.lock().expect("retry lock");
            plan::heal::next_due(heal.values(), retry.values(), now_ms())
        };
        let requeue_at = match (ctl.runtime.swarm(), &ctl.last_pass()) {
            (Some(_), Some(last)) => {
                let follow = super::swarm::follow_at(ctl, &last.observed, now_ms());
                match (requeue_at, follow) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => requeue_at,
        };
        if trim {
            release_free_memory();
        }
        phases.publish_ms = lap.next();
        Ok(PassReport {
            phases,
            requeue_at,
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

/// Hands the heap's free pages back to the OS: glibc keeps what a big pass freed, so the
/// RSS would stay at that pass's peak (a new desired state for 1,000 apps is built next to
/// the old one).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The docker backend runs no services: `placement` and `maxReplicasPerNode` are ignored,
/// with one warning per app (and again after a restart).
fn warn_swarm_options<R: ContainerRuntime>(ctl: &Controller<R>, desired: &Desired) {
    let mut warned = ctl.backend_warned.lock().expect("warned lock");
    for (name, app) in &desired.apps {
        let key = format!("placement:{name}");
        if app.spec.workload.uses_swarm_options() {
            if warned.insert(key) {
                warn!(app = %name, "placement and maxReplicasPerNode only apply with --backend swarm; the docker backend ignores them");
            }
        } else {
            warned.remove(&key);
        }
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

/// Per-app retry backoff after apply: an app whose steps failed backs off (doubling from 2 s
/// up to 5 min, per spec hash), except a failed rollout, which its failed-rollout mark holds;
/// an app whose container steps all succeeded starts clean; an app that did nothing (held by
/// its backoff, or in sync) keeps its state.
fn update_retry<R: ContainerRuntime>(
    ctl: &Controller<R>,
    desired: &Desired,
    plan: &Plan,
    report: &ApplyReport,
    now: i64,
) {
    let mut retry = ctl.retry.lock().expect("retry lock");
    retry.retain(|app, _| desired.apps.contains_key(app));
    for (app, error) in &report.errors {
        // A failed rollout is held by its failed-rollout mark until the spec changes.
        if report.failed_rollouts.contains(app) {
            retry.remove(app);
            continue;
        }
        if let Some(wanted) = desired.apps.get(app) {
            let next =
                plan::heal::after_failure(retry.get(app), &wanted.hash, &error.to_string(), now);
            warn!(
                app = %app,
                failures = next.failures,
                retry_in_ms = next.retry_at - now,
                "apply failed; backing off: {error}"
            );
            retry.insert(app.clone(), next);
        }
    }
    for app in desired.apps.keys() {
        if !report.errors.contains_key(app)
            && !report.pulls_pending.contains(app)
            && plan.steps_for(app).any(|s| s.touches_containers())
        {
            retry.remove(app);
        }
    }
}

/// A stopwatch for the phases of a pass.
struct Lap(std::time::Instant);

impl Lap {
    fn new() -> Self {
        Self(std::time::Instant::now())
    }

    /// Milliseconds since the last call (or the start), and starts the next lap.
    fn next(&mut self) -> f64 {
        let now = std::time::Instant::now();
        let ms = (now - self.0).as_secs_f64() * 1000.0;
        self.0 = now;
        ms
    }
}
