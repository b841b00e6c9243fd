//! `apply(plan)`: carries out a plan. Proxy-only changes go as one batch with one reload,
//! while the first containers are created and started (an app changes what nginx serves
//! only after the batch); each app runs its container steps in plan order (`app_run.rs`, apps in
//! parallel: `parallel_apps` creates + starts at once, up to four times as many apps in
//! their steps, e.g. waiting on a health gate). Rollouts are surge 1: create -> start -> healthy -> add
//! to upstream -> take the old one out -> drain -> stop -> remove. A new generation that
//! never becomes healthy is removed, the old one keeps serving and the spec hash is marked
//! failed.

use super::app_run::AppRun;
use super::Controller;
use super::StepError;
use crate::plan::{Desired, Observed, Plan, RemoveReason, Step};
use crate::runtime::ContainerRuntime;
use crate::store::EventType;
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{info_span, warn, Instrument};

/// Apps in their steps at once per `--parallel` slot (see `apply`).
const SURGE_PER_SLOT: usize = 4;

/// Proxy files one app writes `(file, text)` and removes.
type FileChanges = (Vec<(String, String)>, Vec<String>);

/// What `apply` did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub steps_applied: usize,
    pub steps_failed: usize,
    /// Last error per app.
    pub errors: BTreeMap<String, StepError>,
    /// Apps whose rollout failed in this pass.
    pub failed_rollouts: BTreeSet<String>,
    /// Apps whose create found the image missing and asked the image worker for a pull:
    /// neither done nor failed (their retry backoff is kept).
    pub pulls_pending: BTreeSet<String>,
}

impl ApplyReport {
    fn merge(&mut self, other: ApplyReport) {
        self.steps_applied += other.steps_applied;
        self.steps_failed += other.steps_failed;
        self.errors.extend(other.errors);
        self.failed_rollouts.extend(other.failed_rollouts);
        self.pulls_pending.extend(other.pulls_pending);
    }

    pub(super) fn failed(&mut self, app: &str, error: StepError) {
        self.steps_failed += 1;
        self.errors.insert(app.to_string(), error);
    }
}

pub async fn apply<'a, R: ContainerRuntime>(
    ctl: &'a Arc<Controller<R>>,
    desired: &'a Desired,
    observed: &'a Observed,
    plan: &'a Plan,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    if !plan.has_changes() {
        return report;
    }
    if plan.steps.iter().any(Step::touches_containers) {
        if let Err(e) = ctl.runtime.ensure_network(&ctl.settings.network).await {
            warn!("cannot ensure network {}: {e}", ctl.settings.network);
        }
    }
    // 1. The proxy batch runs while the first containers are created and started: an
    // app's run waits for it only before it changes what nginx serves (`proxy_ready`).
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let proxy_batch = async move {
        let mut batch = ApplyReport::default();
        apply_proxy_files(ctl, desired, observed, plan, &mut batch).await;
        ready_tx.send_replace(true);
        batch
    };
    let (batch, steps) = tokio::join!(
        proxy_batch,
        container_steps(ctl, desired, observed, plan, ready_rx)
    );
    report.merge(batch);
    report.merge(steps);
    report
}

/// 2. Container steps, per app in order, apps in parallel.
async fn container_steps<'a, R: ContainerRuntime>(
    ctl: &'a Arc<Controller<R>>,
    desired: &'a Desired,
    observed: &'a Observed,
    plan: &'a Plan,
    proxy_ready: tokio::sync::watch::Receiver<bool>,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    let mut apps: BTreeMap<&'a str, Vec<&'a Step>> = BTreeMap::new();
    for step in plan.steps.iter().filter(|s| s.touches_containers()) {
        apps.entry(step.app()).or_default().push(step);
    }
    // Two bounds: `parallel` creates + starts at once (the engine's load), and up to
    // SURGE_PER_SLOT times as many apps in their steps at once, so apps waiting on a
    // health gate neither hold up other apps' creates nor put an unbounded number of
    // surge containers on the host.
    let parallel = ctl.settings.parallel_apps.max(1);
    let engine_slots = Semaphore::new(parallel);
    let engine_slots = &engine_slots;
    let limit = Arc::new(Semaphore::new(parallel * SURGE_PER_SLOT));
    let run_app = |app: &'a str, steps: Vec<&'a Step>| {
        let limit = limit.clone();
        let proxy_ready = proxy_ready.clone();
        let members = plan
            .apps
            .get(app)
            .map(|s| s.members.clone())
            .unwrap_or_default();
        async move {
            let _permit = limit.acquire().await.expect("semaphore open");
            let span = info_span!("app_steps", app);
            let mut run = AppRun {
                ctl,
                app,
                desired: desired.apps.get(app),
                observed,
                revision: &plan.revision,
                listen: &desired.proxy_listen,
                listen_tls: &desired.proxy_tls,
                routed_in_pass: members.iter().cloned().collect(),
                members,
                report: ApplyReport::default(),
                engine_slots,
                proxy_ready,
            };
            run.run(&steps).instrument(span).await;
            run.report
        }
    };
    // Apps leaving the source go in waves: an app only after the leaving apps that depend
    // on it (dependsOn, reverse order); everything else runs with the first wave.
    let leaving: BTreeSet<&str> = apps
        .iter()
        .filter(|(_, steps)| {
            steps.iter().all(|s| {
                matches!(
                    s,
                    Step::Remove {
                        reason: RemoveReason::AppRemoved,
                        ..
                    }
                )
            })
        })
        .map(|(app, _)| *app)
        .collect();
    for (i, wave) in removal_waves(&leaving, &desired.leaving_deps)
        .into_iter()
        .enumerate()
    {
        let mut runs = Vec::new();
        for app in wave {
            if let Some(steps) = apps.remove(app) {
                runs.push(run_app(app, steps));
            }
        }
        if i == 0 {
            let staying: Vec<&str> = apps
                .keys()
                .copied()
                .filter(|app| !leaving.contains(app))
                .collect();
            for app in staying {
                if let Some(steps) = apps.remove(app) {
                    runs.push(run_app(app, steps));
                }
            }
        }
        for app_report in join_all(runs).await {
            report.merge(app_report);
        }
    }
    report
}

/// Step 1 of every apply (both backends): the plan's proxy files, all apps at once, one
/// test, one reload (member files are pushes in dynamic mode).
pub(super) async fn apply_proxy_files<R: ContainerRuntime>(
    ctl: &Arc<Controller<R>>,
    desired: &Desired,
    observed: &Observed,
    plan: &Plan,
    report: &mut ApplyReport,
) {
    // 1. Proxy files, all apps at once: one test, one reload. With static upstreams a
    // brand-new app that is about to get containers skips its placeholder (503) files: its
    // creates write the real ones, which saves a reload on the way to its first 200. With
    // dynamic upstreams its config does not depend on members, so every new app's config
    // goes into this one reload and its creates only push members (no reload at all).
    let dynamic = desired.upstreams == crate::plan::render::Upstreams::Dynamic;
    let creating: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Create { .. }))
        .map(Step::app)
        .collect();
    let mut changes: BTreeMap<&str, FileChanges> = BTreeMap::new();
    for step in &plan.steps {
        match step {
            Step::WriteProxy {
                app, file, text, ..
            } => {
                let new_app_placeholder = !dynamic
                    && creating.contains(app.as_str())
                    && !observed.proxy_files.contains_key(file);
                if !new_app_placeholder {
                    let change = changes.entry(app).or_default();
                    change.0.push((file.clone(), text.clone()));
                }
            }
            Step::RemoveProxy { app, file, .. } => {
                changes.entry(app).or_default().1.push(file.clone());
            }
            _ => {}
        }
    }
    // Submitted per app but at once: the proxy combines them into one test and one reload,
    // and only if nginx rejects the whole does it try each app alone.
    let submitted = changes
        .into_iter()
        .map(|(app, (writes, removes))| async move {
            let (written, removed) = (writes.len(), removes.len());
            (
                app,
                written,
                removed,
                ctl.proxy.submit(writes, removes).await,
            )
        });
    let mut reloaded = false;
    for (app, written, removed, result) in join_all(submitted).await {
        let count = written + removed;
        match result {
            Ok(outcome) => {
                report.steps_applied += count;
                reloaded |= outcome.reloaded;
                ctl.metrics.steps_applied("write-proxy", written);
                ctl.metrics.steps_applied("remove-proxy", removed);
            }
            Err(e) => {
                report.steps_failed += count;
                ctl.metrics.steps_failed("write-proxy", written);
                ctl.metrics.steps_failed("remove-proxy", removed);
                let message = e.to_string();
                report.errors.insert(app.to_string(), StepError::from(e));
                ctl.event(
                    Some(app),
                    EventType::ProxyRejected,
                    message,
                    &plan.revision,
                    serde_json::Value::Null,
                )
                .await;
            }
        }
    }
    if reloaded {
        ctl.event(
            None,
            EventType::ProxyReloaded,
            "nginx reloaded with the new proxy files".to_string(),
            &plan.revision,
            serde_json::Value::Null,
        )
        .await;
    }
}

/// The leaving apps in removal order: each wave holds the apps no other remaining leaving
/// app depends on (`deps`: app -> its dependsOn). Pure. A cycle (only possible in old
/// last good specs) ends up in one last wave.
fn removal_waves<'a>(
    leaving: &BTreeSet<&'a str>,
    deps: &BTreeMap<String, Vec<String>>,
) -> Vec<Vec<&'a str>> {
    let mut left = leaving.clone();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let needed = |x: &str| {
            left.iter()
                .any(|y| *y != x && deps.get(*y).is_some_and(|d| d.iter().any(|n| n == x)))
        };
        let mut wave: Vec<&str> = left.iter().copied().filter(|x| !needed(x)).collect();
        if wave.is_empty() {
            wave = left.iter().copied().collect();
        }
        for app in &wave {
            left.remove(app);
        }
        waves.push(wave);
    }
    if waves.is_empty() {
        waves.push(Vec::new()); // the first wave also runs every other app
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_apps_are_removed_dependents_first() {
        let deps = BTreeMap::from([
            ("web".to_string(), vec!["api".to_string()]),
            ("api".to_string(), vec!["db".to_string()]),
            ("x".to_string(), vec!["y".to_string()]),
            ("y".to_string(), vec!["x".to_string()]),
        ]);
        let leaving: BTreeSet<&str> = ["db", "api", "web", "other"].into();
        assert_eq!(
            removal_waves(&leaving, &deps),
            vec![vec!["other", "web"], vec!["api"], vec!["db"]]
        );
        // db stays in the source: api and web go together with it untouched.
        let leaving: BTreeSet<&str> = ["api", "web"].into();
        assert_eq!(
            removal_waves(&leaving, &deps),
            vec![vec!["web"], vec!["api"]]
        );
        let cycle: BTreeSet<&str> = ["x", "y"].into();
        assert_eq!(removal_waves(&cycle, &deps), vec![vec!["x", "y"]]);
        assert_eq!(
            removal_waves(&BTreeSet::new(), &deps),
            vec![Vec::<&str>::new()]
        );
    }
}
