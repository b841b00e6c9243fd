//! One app's share of the plan (pure): sort its containers (keep, unhealthy, stale, not
//! running), apply the retry/self-heal gates, scale in, replace one-for-one (rolling or
//! recreate), create what is missing; and which apps count as ready for `dependsOn`.

use super::{
    heal, image, CreateReason, Desired, DesiredApp, Health, Observed, RemoveReason, ReplaceReason,
    Step,
};
use crate::runtime::{ContainerState, ObservedContainer};
use std::collections::{BTreeMap, BTreeSet};

fn is_running(c: &ObservedContainer) -> bool {
    matches!(
        c.state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    )
}

/// Apps with at least one running replica that is healthy (or, for an app without any
/// probe, running): what `dependsOn` waits for.
pub(super) fn ready_apps<'a>(
    desired: &Desired,
    by_app: &BTreeMap<&'a str, Vec<Seen>>,
) -> BTreeSet<&'a str> {
    by_app
        .iter()
        .filter(|(name, containers)| {
            let unprobed = desired
                .apps
                .get(**name)
                .is_some_and(|a| a.spec.health.is_none() && a.spec.ports.is_empty());
            containers.iter().any(|(c, h)| {
                c.state == ContainerState::Running && (*h == Health::Healthy || unprobed)
            })
        })
        .map(|(name, _)| *name)
        .collect()
}

pub(super) struct AppOutcome {
    pub(super) steps: Vec<Step>,
    /// Addresses that should be in the upstream right now (healthy, kept or being replaced).
    pub(super) members: Vec<String>,
    pub(super) ready: u32,
}

/// A container with its health.
pub(super) type Seen<'a> = (&'a ObservedContainer, Health);

pub(super) fn plan_app(
    app: &DesiredApp,
    replicas: u32,
    containers: &[Seen],
    observed: &Observed,
    failed_hash: Option<&String>,
    now: i64,
) -> AppOutcome {
    let name = &app.spec.name;
    let drain_seconds = app.spec.termination.drain_seconds;
    let rollout_failed = failed_hash == Some(&app.hash);
    let heal = observed.heal.get(name.as_str());
    let mut steps = Vec::new();

    let mut not_running = Vec::new();
    let mut keep = Vec::new(); // desired hash, running, healthy or starting
    let mut unhealthy = Vec::new(); // desired hash, running, unhealthy
    let mut stale = Vec::new(); // other hash (or an old image of a followed tag), running
    let old_image = image::old_image_of(app, observed);
    for seen in containers {
        let (c, health) = *seen;
        if !is_running(c) {
            not_running.push(c);
        } else if c.spec_hash != app.hash || old_image(c) {
            stale.push(*seen);
        } else if health == Health::Unhealthy || c.state == ContainerState::Restarting {
            unhealthy.push(c);
        } else {
            keep.push(*seen);
        }
    }
    let ready = keep.iter().filter(|(_, h)| *h == Health::Healthy).count() as u32;

    // Gates that leave the app exactly as it is: an app whose last apply failed waits for
    // its retry backoff; while self-heal backs off (or quarantined), an app with broken
    // containers is not repaired, so a crash loop cannot turn into a create/remove loop.
    let needs_heal = !unhealthy.is_empty() || !not_running.is_empty();
    let hold = heal::retry_blocked_reason(observed.retry.get(name.as_str()), &app.hash, now)
        .or_else(|| image::pull_hold(app, observed))
        .or_else(|| {
            needs_heal
                .then(|| heal::blocked_reason(heal, &app.hash, now))
                .flatten()
        });
    if let Some(reason) = hold {
        steps.push(Step::NoOp {
            app: name.clone(),
            reason,
        });
        let members = healthy_members(keep.iter().chain(stale.iter()));
        return AppOutcome {
            steps,
            members,
            ready,
        };
    }

    for c in &not_running {
        steps.push(Step::Remove {
            app: name.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            reason: RemoveReason::NotRunning,
            drain_seconds: 0,
        });
    }

    // Healthy before starting, then oldest first: the ones we keep on scale-in.
    // Stale ones: unhealthy first (replaced first), then oldest first.
    let order = |(c, h): &Seen| (*h == Health::Healthy, c.created);
    keep.sort_by(|a, b| {
        let ((ha, ca), (hb, cb)) = (order(a), order(b));
        (!ha, ca, &a.0.name).cmp(&(!hb, cb, &b.0.name))
    });
    stale.sort_by(|a, b| {
        let ((ha, ca), (hb, cb)) = (order(a), order(b));
        (ha, ca, &a.0.name).cmp(&(hb, cb, &b.0.name))
    });
    let wanted = replicas as usize;
    let mut removed: BTreeSet<&str> = BTreeSet::new();
    if keep.len() > wanted {
        // Least useful first: starting before healthy, newest before oldest.
        for (c, _) in keep.split_off(wanted).into_iter().rev() {
            removed.insert(&c.id);
            steps.push(Step::Remove {
                app: name.clone(),
                id: c.id.clone(),
                name: c.name.clone(),
                reason: RemoveReason::ScaleIn,
                drain_seconds,
            });
        }
    }
    let mut need = wanted - keep.len();

    // Candidates to replace one-for-one: unhealthy ones first, then the old generation.
    let mut replaceable: Vec<(&ObservedContainer, ReplaceReason)> = unhealthy
        .iter()
        .map(|c| (*c, ReplaceReason::Unhealthy))
        .collect();
    if rollout_failed {
        steps.push(Step::NoOp {
            app: name.clone(),
            reason: format!(
                "rollout of spec {} failed earlier; the running containers are kept until the spec changes",
                app.hash
            ),
        });
        // Keep the old generation serving; do not create more of the failed spec.
        need = 0;
    } else {
        replaceable.extend(stale.iter().map(|(c, _)| {
            let reason = if c.spec_hash == app.hash {
                ReplaceReason::ImageChanged
            } else {
                ReplaceReason::Outdated
            };
            (*c, reason)
        }));
    }

    let replace_count = need.min(replaceable.len());
    for (i, (c, reason)) in replaceable.iter().take(replace_count).enumerate() {
        steps.push(Step::Replace {
            app: name.clone(),
            old_id: c.id.clone(),
            old_name: c.name.clone(),
            old_hash: c.spec_hash.clone(),
            hash: app.hash.clone(),
            image: app.spec.image.clone(),
            reason: *reason,
            order: i as u32 + 1,
            of: replace_count as u32,
            drain_seconds,
            strategy: app.spec.workload.strategy,
        });
    }
    need -= replace_count;
    for (c, reason) in replaceable.iter().skip(replace_count) {
        removed.insert(&c.id);
        steps.push(Step::Remove {
            app: name.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            reason: match reason {
                ReplaceReason::Outdated | ReplaceReason::ImageChanged => RemoveReason::Outdated,
                ReplaceReason::Unhealthy => RemoveReason::ScaleIn,
            },
            drain_seconds,
        });
    }
    let create_reason = if not_running.is_empty() {
        CreateReason::BelowReplicas
    } else {
        CreateReason::ReplacesStopped
    };
    for _ in 0..need {
        steps.push(Step::Create {
            app: name.clone(),
            hash: app.hash.clone(),
            image: app.spec.image.clone(),
            reason: create_reason,
        });
    }

    // When the rollout failed and the stale generation is what serves, it stays routed.
    let serving = keep
        .iter()
        .chain(stale.iter())
        .filter(|(c, _)| !removed.contains(c.id.as_str()));
    let members = healthy_members(serving);
    AppOutcome {
        steps,
        members,
        ready,
    }
}

pub(super) fn healthy_members<'a, 'b: 'a>(
    containers: impl Iterator<Item = &'a Seen<'b>>,
) -> Vec<String> {
    let mut members: Vec<String> = containers
        .filter(|(c, h)| c.state == ContainerState::Running && *h == Health::Healthy)
        .filter_map(|(c, _)| c.address())
        .collect();
    members.sort();
    members.dedup();
    members
}
