//! One app's container steps within a pass (`AppRun`): creates with their health gate,
//! rolling replaces (surge 1: create -> start -> healthy -> swap in the upstream -> drain ->
//! stop -> remove), removals with their drain, self-heal repairs and failed rollouts, and
//! the app's proxy sync after each membership change. Must not touch: other apps (each
//! app has its own run), the pass's proxy-only batch (apply.rs).

use super::apply::ApplyReport;
use super::prober::host_port_for;
use super::StepError;
use super::{now_ms, Controller};
use crate::health::{effective_health, probe_once, probe_port};
use crate::plan::{
    render, CreateReason, DesiredApp, Health, Observed, RemoveReason, ReplaceReason, Step,
};
use crate::runtime::{
    ContainerRequest, ContainerRuntime, ContainerState, ObservedContainer, RemoveVolumes,
};
use crate::spec::{AppType, ImagePullPolicy, Strategy};
use crate::store::EventType;
use futures_util::future::join_all;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info_span, warn, Instrument};

/// One app's container steps and its live upstream membership.
pub(super) struct AppRun<'a, R: ContainerRuntime> {
    pub(super) ctl: &'a Arc<Controller<R>>,
    pub(super) app: &'a str,
    /// None when the app is being removed.
    pub(super) desired: Option<&'a DesiredApp>,
    pub(super) observed: &'a Observed,
    pub(super) revision: &'a str,
    pub(super) listen: &'a str,
    pub(super) listen_tls: &'a render::TlsListen,
    pub(super) members: Vec<String>,
    /// Every address this pass put in the upstream (the plan's members, then each sync):
    /// a container that left it during the pass still gets its drain.
    pub(super) routed_in_pass: BTreeSet<String>,
    pub(super) report: ApplyReport,
    /// The pass's engine bound (`--parallel`): held for each create + start only, so an
    /// app waiting on its health gate does not keep another app's create waiting.
    pub(super) engine_slots: &'a tokio::sync::Semaphore,
    /// True once the pass's proxy batch (new routes, removed apps' routes) is done: this
    /// run waits for it before it changes what nginx serves or stops a container.
    pub(super) proxy_ready: tokio::sync::watch::Receiver<bool>,
}

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A container name unique per generation: `berth-<app>-<hash6>-<suffix>`.
fn container_name(app: &str, hash: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let counter = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = (nanos ^ (counter << 24)) & 0xff_ffff;
    format!("berth-{app}-{}-{suffix:06x}", &hash[..hash.len().min(6)])
}

impl<'a, R: ContainerRuntime> AppRun<'a, R> {
    fn routed(&self) -> bool {
        self.desired
            .is_some_and(|d| d.spec.app_type == AppType::Http)
    }

    pub(super) fn observed_container(&self, id: &str) -> Option<&'a ObservedContainer> {
        self.observed.containers.iter().find(|c| c.id == id)
    }

    pub(super) async fn run(&mut self, steps: &[&Step]) {
        let mut creates = Vec::new();
        let mut removes = Vec::new();
        for step in steps {
            match step {
                // Surge 1: a failed replacement stops the rest of this rollout.
                Step::Replace { .. } if !self.replace(step).await => break,
                Step::Replace { .. } => {}
                Step::Create { .. } => creates.push(*step),
                Step::Remove { .. } => removes.push(*step),
                _ => {}
            }
        }
        if !creates.is_empty() {
            let stopped: Vec<&str> = removes
                .iter()
                .filter_map(|s| match s {
                    Step::Remove {
                        id,
                        reason: RemoveReason::NotRunning,
                        ..
                    } => Some(id.as_str()),
                    _ => None,
                })
                .collect();
            self.create_all(&creates, &stopped).await;
        }
        if !removes.is_empty() {
            self.remove_all(&removes).await;
        }
    }

    /// Waits until the pass's proxy batch is done (at once when it is).
    pub(super) async fn proxy_batch_done(&mut self) {
        // Err only when the batch's sender is gone without sending, i.e. never.
        let _ = self.proxy_ready.wait_for(|ready| *ready).await;
    }

    /// Writes this app's proxy files for the current members (no-op when unchanged).
    pub(super) async fn sync_proxy(&mut self) -> Result<(), StepError> {
        self.proxy_batch_done().await;
        let Some(desired) = self.desired.filter(|_| self.routed()) else {
            return Ok(());
        };
        self.members.sort();
        self.members.dedup();
        self.routed_in_pass.extend(self.members.iter().cloned());
        let files = render::render_app(
            &desired.spec,
            &self.members,
            self.listen,
            self.listen_tls,
            self.ctl.proxy.upstreams(),
        );
        match self.ctl.proxy.submit(files, Vec::new()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.ctl
                    .event(
                        Some(self.app),
                        EventType::ProxyRejected,
                        e.to_string(),
                        self.revision,
                        serde_json::Value::Null,
                    )
                    .await;
                Err(e.into())
            }
        }
    }

    fn request(&self, desired: &DesiredApp) -> Result<ContainerRequest, StepError> {
        let settings = &self.ctl.settings;
        super::request::container_request(
            desired,
            container_name(&desired.spec.name, &desired.hash),
            self.revision,
            &settings.network,
            &settings.host_env,
        )
        .map_err(StepError::from)
    }

    /// Create + start + wait healthy. On failure the new container is removed again (its
    /// volumes kept). `carry_from`: the container it replaces, whose anonymous volumes it
    /// mounts. The app's named volumes are created first when missing.
    pub(super) async fn bring_up(
        &self,
        desired: &DesiredApp,
        carry_from: Option<&str>,
    ) -> Result<ObservedContainer, Stop> {
        let setup = |e: crate::runtime::RuntimeError| Stop::Failed(e.into());
        let mut request = self.request(desired).map_err(Stop::Failed)?;
        request.options.carry_volumes_from = carry_from.map(str::to_string);
        let runtime = &self.ctl.runtime;
        for volume in super::request::named_volumes(&desired.spec) {
            runtime
                .ensure_volume(&volume, &desired.spec.name)
                .await
                .map_err(setup)?;
        }
        let slot = self.engine_slots.acquire().await.expect("semaphore open");
        self.ctl.may_mutate().map_err(Stop::Failed)?;
        let id = match runtime.create(&request).await {
            Ok(id) => id,
            // The image worker pulls it; the next pass (woken by the worker) creates.
            Err(crate::runtime::RuntimeError::ImageMissing { image })
                if desired.spec.image_pull_policy != ImagePullPolicy::Never =>
            {
                return Err(Stop::PullPending(image));
            }
            Err(e) => return Err(setup(e)),
        };
        let result = async {
            let started = runtime.start(&id).await.map_err(setup);
            drop(slot);
            started?;
            self.wait_healthy(desired, &id)
                .await
                .map_err(|m| Stop::Failed(StepError::NeverHealthy(m)))
        }
        .await;
        if result.is_err() {
            match runtime.remove(&id, RemoveVolumes::Keep).await {
                Ok(kept) => self.remember_kept_volumes(kept).await,
                Err(e) => warn!(
                    app = self.app,
                    "cannot remove failed container {}: {e}", request.name
                ),
            }
        }
        result
    }

    /// Polls the probe quickly (every 50 ms) until `successThreshold` passes in a row, or
    /// the startup window (`initialDelaySeconds + failureThreshold x intervalSeconds +
    /// timeoutSeconds`) runs out, or the container stops.
    async fn wait_healthy(
        &self,
        desired: &DesiredApp,
        id: &str,
    ) -> Result<ObservedContainer, String> {
        let runtime = &self.ctl.runtime;
        let inspect = || async {
            runtime
                .inspect(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the new container disappeared".to_string())
        };
        let mut container = inspect().await?;
        let Some(health) = effective_health(&desired.spec) else {
            // Workers without a check: running is healthy.
            self.ctl
                .probes
                .lock()
                .expect("probe lock")
                .set(id, Health::Healthy, now_ms());
            return match container.state {
                ContainerState::Running => Ok(container),
                other => Err(format!("the new container is {other:?}, not running")),
            };
        };
        let port = probe_port(&health.probe);
        let window = Duration::from_secs(u64::from(
            health.initial_delay_seconds
                + health.failure_threshold.max(1) * health.interval_seconds.max(1)
                + health.timeout_seconds,
        ));
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(u64::from(health.initial_delay_seconds))).await;
        let timeout = Duration::from_secs(u64::from(health.timeout_seconds.max(1)));
        let mut successes = 0;
        let mut last_error = String::from("no probe ran");
        let mut last_inspect = Instant::now();
        loop {
            if let Some(host_port) = host_port_for(&container, port) {
                match probe_once(&health.probe, host_port, timeout).await {
                    Ok(()) => {
                        successes += 1;
                        if successes >= health.success_threshold.max(1) {
                            self.ctl.probes.lock().expect("probe lock").set(
                                id,
                                Health::Healthy,
                                now_ms(),
                            );
                            return Ok(container);
                        }
                    }
                    Err(e) => {
                        successes = 0;
                        last_error = e.to_string();
                    }
                }
            } else {
                last_error = format!("container port {port} is not published yet");
            }
            if started.elapsed() >= window {
                return Err(format!(
                    "not healthy within the {} s startup window: {last_error}",
                    window.as_secs()
                ));
            }
            if last_inspect.elapsed() >= Duration::from_secs(1) || container.host_port.is_none() {
                container = inspect().await?;
                last_inspect = Instant::now();
                if container.state != ContainerState::Running {
                    return Err(format!(
                        "the new container stopped ({:?}) before it became healthy; last probe: {last_error}",
                        container.state
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Was this address in the app's upstream when the pass started? (Phase 1 may already
    /// have taken it out; it still needs its drain.)
    pub(super) fn was_routed(&self, address: &str) -> bool {
        [render::conf_file(self.app), render::members_file(self.app)]
            .iter()
            .filter_map(|file| self.observed.proxy_files.get(file))
            .any(|text| render::members_in(text).iter().any(|m| m == address))
    }

    /// Returns false when the rollout must stop here.
    async fn replace(&mut self, step: &Step) -> bool {
        let Step::Replace {
            old_id,
            old_name,
            hash,
            reason,
            order,
            of,
            drain_seconds,
            ..
        } = step
        else {
            return true;
        };
        let Some(desired) = self.desired else {
            return false;
        };
        let span = info_span!("step", app = self.app, step = "replace", order, of);
        let result = async {
            if *order == 1 && *reason != ReplaceReason::Unhealthy {
                let why = match reason {
                    ReplaceReason::ImageChanged => " (image digest changed)",
                    _ => "",
                };
                self.ctl
                    .event(
                        Some(self.app),
                        EventType::RolloutStarted,
                        format!("rolling out spec {hash}{why} ({of} containers)"),
                        self.revision,
                        serde_json::json!({ "spec_hash": hash, "image": desired.spec.image }),
                    )
                    .await;
            }
            if desired.spec.workload.strategy == Strategy::Recreate {
                return self.recreate(desired, old_id, *drain_seconds).await;
            }
            let new = self.bring_up(desired, Some(old_id)).await?;
            // One reload swaps the healthy new replica in and the old one out (capacity
            // stays at n); `retire` then only drains and stops the old one. Every nginx
            // reload closes idle keep-alive client connections, so fewer reloads per
            // rollout means fewer closes racing a client's next request.
            if let Some(address) = new.address() {
                self.members.push(address);
            }
            if let Some(old_address) = self.observed_container(old_id).and_then(|c| c.address()) {
                self.members.retain(|m| *m != old_address);
            }
            self.sync_proxy().await.map_err(Stop::Failed)?;
            self.retire(
                &[old_id.as_str()],
                *drain_seconds,
                RemoveVolumes::Keep,
                false,
            )
            .await
            .map_err(Stop::Failed)?;
            Ok(new)
        }
        .instrument(span)
        .await;
        match result {
            Ok(new) => {
                self.report.steps_applied += 1;
                self.ctl.metrics.steps_applied("replace", 1);
                if *reason == ReplaceReason::Unhealthy {
                    self.record_repair(hash, Some(old_id)).await;
                    self.ctl
                        .event(
                            Some(self.app),
                            EventType::Healed,
                            format!("replaced unhealthy {old_name} with {}", new.name),
                            self.revision,
                            serde_json::Value::Null,
                        )
                        .await;
                } else if order == of {
                    self.ctl
                        .event(
                            Some(self.app),
                            EventType::RolloutSucceeded,
                            format!("spec {hash} serving on {of} containers"),
                            self.revision,
                            serde_json::json!({ "spec_hash": hash }),
                        )
                        .await;
                }
                true
            }
            Err(Stop::PullPending(image)) => {
                self.ask_for_pull(&image).await;
                false
            }
            Err(Stop::Failed(error)) => {
                let message = error.to_string();
                let never_healthy = error.never_healthy();
                self.report.failed(self.app, error);
                self.ctl.metrics.steps_failed("replace", 1);
                if never_healthy && *reason == ReplaceReason::Outdated {
                    let text = format!(
                        "rollout of spec {hash} failed, the previous containers keep serving: {message}"
                    );
                    self.record_failed_rollout(hash, &message, text).await;
                } else {
                    self.ctl
                        .event_once(self.app, EventType::RuntimeError, message, self.revision)
                        .await;
                }
                false
            }
        }
    }

    /// The image is missing and the policy lets berth pull it (`images::ask_for_pull`):
    /// neither done nor failed, the plan holds the app until the pull ends.
    async fn ask_for_pull(&mut self, image: &str) {
        self.report.pulls_pending.insert(self.app.to_string());
        super::images::ask_for_pull(self.ctl, self.app, image, self.revision).await;
    }

    /// All creates of the app at once; each healthy container joins the upstream together.
    /// `stopped`: containers this pass removes as not running; each create stands in for
    /// one of them and takes over its anonymous volumes (a healed database keeps its data).
    async fn create_all(&mut self, steps: &[&Step], stopped: &[&str]) {
        let Some(desired) = self.desired else {
            return;
        };
        let span = info_span!("step", app = self.app, step = "create", count = steps.len());
        let results = join_all(
            steps
                .iter()
                .enumerate()
                .map(|(i, _)| self.bring_up(desired, stopped.get(i).copied())),
        )
        .instrument(span)
        .await;
        // The healthy ones join the upstream first: the events and records below are
        // store writes that must not delay the new members' first requests.
        let joined = results.iter().filter(|r| r.is_ok()).count();
        for new in results.iter().flatten() {
            if let Some(address) = new.address() {
                self.members.push(address);
            }
        }
        if joined > 0 {
            if let Err(error) = self.sync_proxy().await {
                self.report.failed(self.app, error);
            }
        }
        for (step, result) in steps.iter().zip(results) {
            match result {
                Ok(new) => {
                    self.report.steps_applied += 1;
                    self.ctl.metrics.steps_applied("create", 1);
                    if matches!(
                        step,
                        Step::Create {
                            reason: CreateReason::ReplacesStopped,
                            ..
                        }
                    ) {
                        self.record_repair(&desired.hash, None).await;
                    }
                    self.ctl.clear_reported(self.app, EventType::RuntimeError);
                    self.ctl
                        .event(
                            Some(self.app),
                            EventType::Created,
                            format!("container {} is healthy", new.name),
                            self.revision,
                            serde_json::json!({ "container": new.name, "spec_hash": desired.hash }),
                        )
                        .await;
                }
                Err(Stop::PullPending(image)) => self.ask_for_pull(&image).await,
                Err(Stop::Failed(error)) => {
                    let message = error.to_string();
                    let never_healthy = error.never_healthy();
                    self.report.failed(self.app, error);
                    self.ctl.metrics.steps_failed("create", 1);
                    if !never_healthy {
                        self.ctl
                            .event_once(self.app, EventType::RuntimeError, message, self.revision)
                            .await;
                    } else {
                        let text = format!("spec {} never became healthy: {message}", desired.hash);
                        self.record_failed_rollout(&desired.hash, &message, text)
                            .await;
                    }
                }
            }
        }
    }

    async fn remove_all(&mut self, steps: &[&Step]) {
        let ids: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Remove { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let drain = steps
            .iter()
            .filter_map(|s| match s {
                Step::Remove { drain_seconds, .. } => Some(*drain_seconds),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        // Only removing the app deletes its anonymous volumes; named volumes always stay.
        let app_removed = steps.iter().all(|s| {
            matches!(
                s,
                Step::Remove {
                    reason: RemoveReason::AppRemoved,
                    ..
                }
            )
        });
        let volumes = if app_removed {
            RemoveVolumes::Anonymous
        } else {
            RemoveVolumes::Keep
        };
        let span = info_span!("step", app = self.app, step = "remove", count = ids.len());
        match self
            .retire(&ids, drain, volumes, false)
            .instrument(span)
            .await
        {
            Ok(()) => {
                if app_removed {
                    self.remove_kept_volumes().await;
                    self.report_kept_volumes().await;
                }
                self.report.steps_applied += ids.len();
                self.ctl.metrics.steps_applied("remove", ids.len());
                for step in steps {
                    if let Step::Remove { name, reason, .. } = step {
                        self.ctl
                            .event(
                                Some(self.app),
                                EventType::Removed,
                                format!("removed {name} ({reason:?})"),
                                self.revision,
                                serde_json::Value::Null,
                            )
                            .await;
                    }
                }
            }
            Err(error) => {
                self.ctl.metrics.steps_failed("remove", ids.len());
                self.report.failed(self.app, error);
            }
        }
    }
}

/// Why a new container (a create or a replacement) did not come up: a pull it waits for
/// (neither done nor failed), or a failure (`StepError::NeverHealthy` marks the rollout
/// failed; anything else is retried on later passes).
pub(super) enum Stop {
    PullPending(String),
    Failed(StepError),
}
