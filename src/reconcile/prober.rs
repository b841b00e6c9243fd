//! Background health probing: probes every running container of a desired app on its
//! interval and feeds the `ProbeTracker`; a health change wakes the loop. Probes read only.

use super::{now_ms, Controller};
use crate::health::{effective_health, probe_once, probe_port};
use crate::plan::{Desired, Health, Observed};
use crate::runtime::{ContainerRuntime, ContainerState, ObservedContainer};
use crate::spec::HealthSpec;
use crate::store::EventType;
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Duration;

/// The host port that reaches `container_port` of this container.
pub(crate) fn host_port_for(container: &ObservedContainer, container_port: u16) -> Option<u16> {
    container
        .published
        .iter()
        .find(|(c, _)| *c == container_port)
        .map(|(_, h)| *h)
        .or(container.host_port)
}

/// Work items: running containers of desired apps with their health settings.
fn targets<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
) -> impl Iterator<Item = (&'a ObservedContainer, Option<HealthSpec>)> + 'a {
    observed
        .containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .filter_map(|c| {
            let app = desired.apps.get(&c.app)?;
            // Probes describe the desired spec; old generations keep the defaults of theirs.
            Some((c, effective_health(&app.spec)))
        })
}

async fn probe_container(container: &ObservedContainer, spec: &HealthSpec) -> Result<(), String> {
    let port = probe_port(&spec.probe);
    let Some(host_port) = host_port_for(container, port) else {
        return Err(format!(
            "container port {port} is not published on 127.0.0.1"
        ));
    };
    probe_once(
        &spec.probe,
        host_port,
        Duration::from_secs(u64::from(spec.timeout_seconds.max(1))),
    )
    .await
}

/// Before planning: containers the tracker has never seen (after a berth restart, or made
/// by hand) get one probe now, so a restart does not empty the upstreams.
pub(crate) async fn probe_unknown<R: ContainerRuntime>(
    ctl: &Controller<R>,
    desired: &Desired,
    observed: &mut Observed,
) {
    let unknown: Vec<_> = targets(desired, observed)
        .filter(|(c, _)| !observed.health.contains_key(&c.id))
        .collect();
    if unknown.is_empty() {
        return;
    }
    let results = join_all(unknown.iter().map(|(c, spec)| async move {
        match spec {
            Some(spec) => Some(probe_container(c, spec).await),
            None => None,
        }
    }))
    .await;
    let now = now_ms();
    let mut probes = ctl.probes.lock().expect("probe lock");
    for ((container, spec), result) in unknown.iter().zip(results) {
        match (spec, result) {
            (Some(spec), Some(result)) => {
                probes.record(&container.id, result, spec, now);
            }
            _ => probes.set(&container.id, Health::Healthy, now),
        }
    }
    observed.health = probes.snapshot();
}

/// Runs until aborted: every 500 ms probes what is due, wakes the loop on a change.
pub(crate) async fn run<R: ContainerRuntime>(ctl: Arc<Controller<R>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(last) = ctl.last.lock().expect("last lock").clone() else {
            continue;
        };
        let now = now_ms();
        let due: Vec<(ObservedContainer, HealthSpec)> = {
            let probes = ctl.probes.lock().expect("probe lock");
            targets(&last.desired, &last.observed)
                .filter_map(|(c, spec)| Some((c.clone(), spec?)))
                .filter(|(c, spec)| probes.due(&c.id, spec, now))
                .collect()
        };
        if due.is_empty() {
            continue;
        }
        let results = join_all(due.iter().map(|(c, spec)| probe_container(c, spec))).await;
        let now = now_ms();
        let mut changes = Vec::new();
        {
            let mut probes = ctl.probes.lock().expect("probe lock");
            for ((container, spec), result) in due.iter().zip(results) {
                let error = result.as_ref().err().cloned();
                if let Some(health) = probes.record(&container.id, result, spec, now) {
                    changes.push((container.clone(), health, error));
                }
            }
        }
        for (container, health, error) in &changes {
            if *health == Health::Unhealthy {
                ctl.event(
                    Some(&container.app),
                    EventType::Unhealthy,
                    format!(
                        "container {} failed its health check: {}",
                        container.name,
                        error.as_deref().unwrap_or("probe failed")
                    ),
                    &last.desired.revision,
                    serde_json::Value::Null,
                )
                .await;
            }
        }
        if !changes.is_empty() {
            ctl.wake_with("health");
        }
    }
}
