//! The swarm backend's part of a pass (issue 14): what the pass wants each service to be
//! (`wanted`: the section digests `plan::swarm` compares), Swarm's rollouts turned into
//! berth's records (`record_rollouts`: a rolled-back update is a failed rollout mark and
//! a `rollout-failed` event, a finished one `rollout-succeeded`), applying service steps
//! after the shared proxy batch (`apply`), and how soon the next pass must look again
//! (`follow_at`: every 200 ms while Swarm moves tasks, so nginx learns a new task's port
//! before Swarm stops the old one). Must not touch: containers (Swarm owns the tasks), the
//! docker backend's path.

use super::apply::{apply_proxy_files, ApplyReport};
use super::request::service_request;
use super::{now_ms, Controller, StepError};
use crate::plan::swarm::Wanted;
use crate::plan::{effective_replicas, Desired, Observed, Overrides, Plan, Step};
use crate::runtime::swarm::{mapping, ObservedService, ServiceRuntime, SwarmRuntime};
use crate::runtime::ContainerRuntime;
use crate::store::EventType;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::warn;

/// How often a pass looks again while Swarm is moving an app's tasks.
pub const FOLLOW_MS: i64 = 200;
/// How often while tasks are not all running but nothing moves (pending, restarting).
pub const SETTLE_MS: i64 = 2_000;

/// The attachable overlay network the services join (`--network` + `-swarm`, so it never
/// collides with the docker backend's bridge of that name).
pub fn overlay_name(network: &str) -> String {
    format!("{network}-swarm")
}

/// The service name and section digests the pass would write for each desired app.
pub(super) fn wanted<R: ContainerRuntime>(
    ctl: &Controller<R>,
    swarm: &SwarmRuntime,
    desired: &Desired,
    overrides: &Overrides,
) -> BTreeMap<String, Wanted> {
    let overlay = overlay_name(&ctl.settings.network);
    desired
        .apps
        .iter()
        .filter_map(|(name, app)| {
            let (replicas, _) =
                effective_replicas(&app.spec, overrides.replicas.get(name).copied());
            let service = mapping::service_name(name, swarm.instance());
            let request = service_request(
                app,
                service.clone(),
                &desired.revision,
                &overlay,
                &ctl.settings.host_env,
                replicas,
                ctl.settings.stop_timeout_seconds,
                true,
            )
            .ok()?;
            Some((
                name.clone(),
                Wanted {
                    service,
                    sections: mapping::request_sections(&request),
                },
            ))
        })
        .collect()
}

/// Turns what Swarm did with the updates berth started into berth's records, before the
/// plan reads the failed rollout marks.
pub(super) async fn record_rollouts<R: ContainerRuntime>(
    ctl: &Controller<R>,
    observed: &Observed,
    revision: &str,
) {
    let rolling = ctl.swarm_rolling.lock().expect("rolling lock").clone();
    for (app, hash) in rolling {
        let Some(s) = observed.services.iter().find(|s| s.app == app) else {
            ctl.swarm_rolling.lock().expect("rolling lock").remove(&app);
            continue;
        };
        let rolled_back = s.update.as_ref().is_some_and(|u| u.rolled_back());
        if rolled_back && s.spec_hash != hash {
            let message = s
                .update
                .as_ref()
                .map(|u| u.message.clone())
                .unwrap_or_default();
            let reason = format!(
                "swarm rolled the service {} back from spec {hash} to spec {}: {message}; berth keeps it there until the spec changes",
                s.name, s.spec_hash
            );
            if let Err(e) = ctl
                .store
                .mark_rollout_failed(&app, &hash, revision, &reason, now_ms())
                .await
            {
                warn!(%app, "cannot record the failed rollout: {e}");
                continue;
            }
            ctl.event(
                Some(&app),
                EventType::RolloutFailed,
                reason,
                revision,
                serde_json::json!({ "service": s.name, "spec_hash": hash }),
            )
            .await;
            ctl.swarm_rolling.lock().expect("rolling lock").remove(&app);
        } else if s.spec_hash == hash && settled(s) {
            ctl.event(
                Some(&app),
                EventType::RolloutSucceeded,
                format!(
                    "service {} runs spec {hash}: {} tasks running",
                    s.name,
                    s.running()
                ),
                revision,
                serde_json::json!({ "service": s.name, "spec_hash": hash }),
            )
            .await;
            ctl.swarm_rolling.lock().expect("rolling lock").remove(&app);
        }
    }
}

/// The autoscaler reads CPU and memory of this node's task containers only: an
/// autoscaled app with running tasks on other nodes is warned about once, naming how many
/// it cannot see (and again after all of them were back on this node once).
pub(super) fn warn_remote_tasks<R: ContainerRuntime>(
    ctl: &Controller<R>,
    desired: &Desired,
    observed: &Observed,
) {
    let mut warned = ctl.backend_warned.lock().expect("warned lock");
    for s in &observed.services {
        let autoscaled = desired.apps.get(&s.app).is_some_and(|a| {
            a.spec
                .scaling
                .as_ref()
                .is_some_and(|sc| sc.mode == crate::spec::ScalingMode::Auto)
        });
        let remote = s
            .tasks
            .iter()
            .filter(|t| !t.local && t.state == "running" && t.desired_state == "running")
            .count();
        let key = format!("remote:{}", s.app);
        if autoscaled && remote > 0 {
            if warned.insert(key) {
                warn!(
                    app = %s.app,
                    remote,
                    "the autoscaler reads CPU and memory of this node's tasks only: {remote} running tasks of this app are on other nodes (request rates come from this node's nginx)"
                );
            }
        } else {
            warned.remove(&key);
        }
    }
}

/// Swarm is done with the service: no update moving, every wanted task running.
fn settled(s: &ObservedService) -> bool {
    !s.updating()
        && !s.update.as_ref().is_some_and(|u| u.rolled_back())
        && s.replicas.is_some_and(|r| s.running() >= r)
}

/// When the next pass must look again: soon while Swarm moves tasks or berth waits for a
/// rollout's outcome, later while tasks are not all running; None when settled.
pub(super) fn follow_at<R: ContainerRuntime>(
    ctl: &Controller<R>,
    observed: &Observed,
    now: i64,
) -> Option<i64> {
    let following = !ctl.swarm_rolling.lock().expect("rolling lock").is_empty();
    if following || observed.services.iter().any(ObservedService::updating) {
        return Some(now + FOLLOW_MS);
    }
    observed
        .services
        .iter()
        .any(|s| !settled(s) && s.replicas.is_some_and(|r| r > 0))
        .then_some(now + SETTLE_MS)
}

/// Applies a swarm plan: the proxy batch first (as the docker backend), then each service
/// step. Swarm rolls the tasks itself; berth follows them in the next passes.
pub(super) async fn apply<R: ContainerRuntime>(
    ctl: &Arc<Controller<R>>,
    swarm: &SwarmRuntime,
    desired: &Desired,
    observed: &Observed,
    plan: &Plan,
    overrides: &Overrides,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    if !plan.has_changes() {
        return report;
    }
    apply_proxy_files(ctl, desired, observed, plan, &mut report).await;
    let overlay = overlay_name(&ctl.settings.network);
    let brings_up = plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreateService { .. } | Step::UpdateService { .. }));
    if brings_up {
        if let Err(e) = swarm.ensure_overlay(&overlay).await {
            warn!("cannot ensure the overlay network {overlay}: {e}");
        }
    }
    for step in &plan.steps {
        let kind = step.kind();
        let app = step.app();
        let outcome = match step {
            Step::CreateService { hash, .. } | Step::UpdateService { hash, .. } => {
                let Some(wanted) = desired.apps.get(app) else {
                    continue;
                };
                let (replicas, _) =
                    effective_replicas(&wanted.spec, overrides.replicas.get(app).copied());
                let request = service_request(
                    wanted,
                    mapping::service_name(app, swarm.instance()),
                    &plan.revision,
                    &overlay,
                    &ctl.settings.host_env,
                    replicas,
                    ctl.settings.stop_timeout_seconds,
                    false,
                );
                match request {
                    Err(e) => Err(StepError::from(e)),
                    Ok(request) => match step {
                        Step::UpdateService {
                            id,
                            service,
                            changes,
                            old_hash,
                            ..
                        } => {
                            let Some(current) = observed.services.iter().find(|s| &s.id == id)
                            else {
                                continue;
                            };
                            match swarm.update_service(current, &request).await {
                                Ok(()) => {
                                    if old_hash != hash {
                                        ctl.swarm_rolling
                                            .lock()
                                            .expect("rolling lock")
                                            .insert(app.to_string(), hash.clone());
                                    }
                                    // A replicas-only change is not a rollout.
                                    let event =
                                        (old_hash != hash).then_some(EventType::RolloutStarted);
                                    Ok((
                                        event,
                                        format!(
                                            "updating service {service}: {} (swarm rolls the tasks start-first)",
                                            changes.join(", ")
                                        ),
                                    ))
                                }
                                Err(e) => Err(StepError::from(e)),
                            }
                        }
                        _ => match swarm.create_service(&request).await {
                            Ok(_) => {
                                ctl.swarm_rolling
                                    .lock()
                                    .expect("rolling lock")
                                    .insert(app.to_string(), hash.clone());
                                Ok((
                                    Some(EventType::Created),
                                    format!(
                                        "created service {} (image {}, {replicas} replicas)",
                                        request.container.name, request.container.image
                                    ),
                                ))
                            }
                            Err(e) => Err(StepError::from(e)),
                        },
                    },
                }
            }
            Step::RemoveService { id, service, .. } => match swarm.remove_service(id).await {
                Ok(()) => Ok((
                    Some(EventType::Removed),
                    format!("removed service {service}: the app left the source"),
                )),
                Err(e) => Err(StepError::from(e)),
            },
            _ => continue,
        };
        match outcome {
            Ok((event, message)) => {
                report.steps_applied += 1;
                ctl.metrics.steps_applied(kind, 1);
                if let Some(event) = event {
                    ctl.event(
                        Some(app),
                        event,
                        message,
                        &plan.revision,
                        serde_json::Value::Null,
                    )
                    .await;
                }
            }
            Err(error) => {
                ctl.metrics.steps_failed(kind, 1);
                ctl.event(
                    Some(app),
                    EventType::RuntimeError,
                    format!("{kind} failed: {error}"),
                    &plan.revision,
                    serde_json::Value::Null,
                )
                .await;
                report.failed(app, error);
            }
        }
    }
    report
}
