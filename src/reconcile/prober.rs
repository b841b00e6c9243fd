//! Background health probing: probes every running container of a desired app on its
//! interval and feeds the `ProbeTracker`; a health change wakes the loop. Probes read only.

use super::Controller;
use crate::clock::now_ms;
use crate::health::{effective_health, probe_once, probe_port, ProbeError, ProbeTracker};
use crate::plan::{Desired, Health, Observed};
use crate::runtime::{ContainerRuntime, ContainerState, ObservedContainer};
use crate::spec::HealthSpec;
use crate::store::EventType;
use futures_util::future::join_all;
use std::sync::{Arc, Mutex};
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

async fn probe_container(
    container: &ObservedContainer,
    spec: &HealthSpec,
) -> Result<(), ProbeError> {
    let port = probe_port(&spec.probe);
    let Some(host_port) = host_port_for(container, port) else {
        return Err(ProbeError::NotPublished { port });
    };
    probe_once(
        &spec.probe,
        host_port,
        Duration::from_secs(u64::from(spec.timeout_seconds.max(1))),
    )
    .await
}

/// Before planning: containers the tracker has never seen (after a berth restart, or made
/// by hand) get one probe now, so a restart does not empty the upstreams. The results go
/// into `probes` (the loop's tracker for a pass, a copy for a read-only plan).
pub(crate) async fn probe_unknown(
    probes: &Mutex<ProbeTracker>,
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
    let mut probes = probes.lock().expect("probe lock");
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

/// The longest the prober sleeps without looking at the last pass again (a safety net:
/// it is woken by every published pass anyway).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Runs until aborted: probes what is due, wakes the loop on a health change, then sleeps
/// until the next probe is due or a new pass is published (no fixed tick: an idle host
/// with no probes to run costs no wake-ups).
pub async fn run<R: ContainerRuntime>(ctl: Arc<Controller<R>>) {
    let mut passes = ctl.subscribe_last_pass();
    loop {
        let last = passes.borrow_and_update().clone();
        let mut next_at: Option<i64> = None;
        if let Some(last) = last {
            let now = now_ms();
            let due: Vec<(ObservedContainer, HealthSpec)> = {
                let probes = ctl.probes.lock().expect("probe lock");
                targets(&last.desired, &last.observed)
                    .filter_map(|(c, spec)| Some((c, spec?)))
                    .filter_map(|(c, spec)| match probes.next_due(&c.id, &spec) {
                        Some(at) if at > now => {
                            next_at = Some(next_at.map_or(at, |n: i64| n.min(at)));
                            None
                        }
                        _ => Some((c.clone(), spec)),
                    })
                    .collect()
            };
            if !due.is_empty() {
                probe_due(&ctl, &last.desired.revision, &due).await;
                // Probed: look again right away for the next due time.
                continue;
            }
        }
        let wait = next_at.map_or(MAX_IDLE, |at| {
            Duration::from_millis((at - now_ms()).clamp(1, MAX_IDLE.as_millis() as i64) as u64)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = passes.changed() => if changed.is_err() { return },
        }
    }
}

/// Probes `due` at once, records the results, records an event for each container that
/// became unhealthy and wakes the loop when any health changed.
async fn probe_due<R: ContainerRuntime>(
    ctl: &Controller<R>,
    revision: &str,
    due: &[(ObservedContainer, HealthSpec)],
) {
    let results = join_all(due.iter().map(|(c, spec)| probe_container(c, spec))).await;
    let now = now_ms();
    let mut changes = Vec::new();
    {
        let mut probes = ctl.probes.lock().expect("probe lock");
        for ((container, spec), result) in due.iter().zip(results) {
            let error = result.as_ref().err().map(ToString::to_string);
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
                revision,
                serde_json::Value::Null,
            )
            .await;
        }
    }
    if !changes.is_empty() {
        ctl.wake_with("health");
    }
}
