//! The swarm backend's plan (pure, issue 14): desired apps × observed services -> service
//! steps (`create service`, `update service: image, replicas, ...` naming what changed,
//! `remove service` within the deletion budget), the proxy files of each http app with the
//! local node's running tasks as members, and the same per-app summary, text, JSON and
//! exit-code conventions as the container plan. Swarm itself rolls the tasks (start-first,
//! rollback on failure); a spec whose rollout Swarm rolled back is held by its failed
//! rollout mark until the spec changes, as with containers.
//! Must not touch: I/O, the clock (`now` is a parameter: an app whose last service step
//! failed waits out its retry backoff, as with containers).

use super::{
    display, effective_replicas, render, step_rank, AppSummary, Desired, Observed, Overrides, Plan,
    Step,
};
use crate::runtime::swarm::ObservedService;
use crate::spec::AppType;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// What the pass wants each app's service to be, beyond the spec: the section digests of
/// the service spec it would write (`runtime::swarm::mapping::request_sections`) and the
/// service name. Apps missing here are compared by spec hash only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub service: String,
    pub sections: BTreeMap<String, String>,
}

/// Sections whose change is already named by another word (or not a change at all).
const NOT_NAMED: [&str; 1] = ["image"];

/// What differs between the service and what the pass wants, by name, in a fixed order.
pub fn changes(
    service: &ObservedService,
    image: &str,
    hash: &str,
    replicas: u32,
    wanted: Option<&Wanted>,
) -> Vec<String> {
    let mut out = Vec::new();
    if service.image != image {
        out.push("image".to_string());
    }
    if service.replicas != Some(replicas) {
        out.push(match service.replicas {
            Some(old) => format!("replicas {old} -> {replicas}"),
            None => format!("replicas -> {replicas}"),
        });
    }
    let mut sections_differ = false;
    if let Some(wanted) = wanted {
        for (name, digest) in &wanted.sections {
            if service.sections.get(name) != Some(digest) {
                sections_differ = true;
                if !NOT_NAMED.contains(&name.as_str()) {
                    out.push(name.clone());
                }
            }
        }
    }
    if service.spec_hash != hash && !sections_differ && service.image == image {
        out.push("spec".to_string());
    }
    out
}

/// The swarm plan. `wanted` comes from the pass (see [`Wanted`]).
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    overrides: &Overrides,
    wanted: &BTreeMap<String, Wanted>,
    now: i64,
) -> Plan {
    let by_app: BTreeMap<&str, &ObservedService> = observed
        .services
        .iter()
        .map(|s| (s.app.as_str(), s))
        .collect();
    let ready_apps: BTreeSet<&str> = observed
        .services
        .iter()
        .filter(|s| s.running() > 0)
        .map(|s| s.app.as_str())
        .collect();
    let mut steps = Vec::new();
    let mut apps = BTreeMap::new();
    let mut wanted_files: HashSet<String> = HashSet::new();
    for (name, app) in &desired.apps {
        let (replicas, replica_source) =
            effective_replicas(&app.spec, overrides.replicas.get(name).copied());
        let service = by_app.get(name.as_str()).copied();
        let members = service.map(ObservedService::members).unwrap_or_default();
        let ready = service.map_or(0, |s| {
            s.tasks
                .iter()
                .filter(|t| {
                    t.state == "running" && t.desired_state == "running" && t.spec_hash == app.hash
                })
                .count() as u32
        });
        apps.insert(
            name.clone(),
            AppSummary {
                desired_replicas: replicas,
                replica_source,
                hash: app.hash.clone(),
                ready_replicas: ready,
                members: members.clone(),
            },
        );
        if app.spec.app_type == AppType::Http {
            for (file, text) in render::render_app(
                &app.spec,
                &members,
                &desired.proxy_listen,
                &desired.proxy_tls,
                desired.upstreams,
            ) {
                let current = observed.proxy_files.get(&file);
                if current != Some(&text) {
                    steps.push(Step::WriteProxy {
                        app: name.clone(),
                        diff: display::unified_diff(
                            &file,
                            current.map(String::as_str).unwrap_or(""),
                            &text,
                        ),
                        file: file.clone(),
                        text,
                    });
                }
                wanted_files.insert(file);
            }
        }
        let want = wanted.get(name);
        let service_name = want
            .map(|w| w.service.clone())
            .or_else(|| service.map(|s| s.name.clone()))
            .unwrap_or_else(|| format!("berth-{name}"));
        let waiting: Vec<&str> = app
            .spec
            .workload
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|dep| !ready_apps.contains(dep))
            .collect();
        let failed = overrides.failed_rollouts.get(name) == Some(&app.hash);
        let held = super::heal::retry_blocked_reason(observed.retry.get(name), &app.hash, now);
        match service {
            _ if held.is_some() => steps.push(Step::NoOp {
                app: name.clone(),
                reason: held.unwrap_or_default(),
            }),
            None if !waiting.is_empty() => steps.push(Step::NoOp {
                app: name.clone(),
                reason: format!(
                    "waiting for {} (dependsOn: no running task yet)",
                    waiting.join(", ")
                ),
            }),
            None => steps.push(Step::CreateService {
                app: name.clone(),
                service: service_name,
                hash: app.hash.clone(),
                image: app.spec.image.clone(),
                replicas,
            }),
            Some(s) => {
                let changed = changes(s, &app.spec.image, &app.hash, replicas, want);
                if failed && s.spec_hash != app.hash {
                    steps.push(Step::NoOp {
                        app: name.clone(),
                        reason: format!(
                            "the rollout of spec {} failed and Swarm rolled the service back to spec {}: fix the spec (a new spec is rolled out)",
                            app.hash, s.spec_hash
                        ),
                    });
                } else if !changed.is_empty() {
                    steps.push(Step::UpdateService {
                        app: name.clone(),
                        service: s.name.clone(),
                        id: s.id.clone(),
                        old_hash: s.spec_hash.clone(),
                        hash: app.hash.clone(),
                        image: app.spec.image.clone(),
                        replicas,
                        changes: changed,
                    });
                } else if let Some(reason) = unsettled(s, replicas) {
                    steps.push(Step::NoOp {
                        app: name.clone(),
                        reason,
                    });
                }
            }
        }
    }

    for s in &observed.services {
        if desired.apps.contains_key(&s.app) {
            continue;
        }
        if let Some(why) = desired.held.get(&s.app) {
            steps.push(Step::NoOp {
                app: s.app.clone(),
                reason: format!("kept running: {why}"),
            });
        } else if let Some(blocked) = &desired.prune_blocked {
            steps.push(Step::NoOp {
                app: s.app.clone(),
                reason: format!("kept running: {blocked}"),
            });
        } else {
            steps.push(Step::RemoveService {
                app: s.app.clone(),
                service: s.name.clone(),
                id: s.id.clone(),
            });
        }
    }

    for (file, text) in &observed.proxy_files {
        if wanted_files.contains(file) {
            continue;
        }
        let app = render::app_of_file(file).to_string();
        if desired.held.contains_key(&app)
            || (desired.prune_blocked.is_some() && !desired.apps.contains_key(&app))
        {
            continue;
        }
        steps.push(Step::RemoveProxy {
            diff: display::unified_diff(file, text, ""),
            app,
            file: file.clone(),
        });
    }

    steps.sort_by(|a, b| (a.app(), step_rank(a)).cmp(&(b.app(), step_rank(b))));
    Plan {
        revision: desired.revision.clone(),
        steps,
        apps,
    }
}

/// Why a service whose spec is in sync is not settled yet (Swarm is rolling it, or tasks
/// are not running, with Swarm's own error), for the plan's no-op line.
fn unsettled(s: &ObservedService, replicas: u32) -> Option<String> {
    if let Some(update) = s.update.as_ref().filter(|u| u.in_progress()) {
        return Some(format!(
            "swarm is rolling the service ({}): {} of {replicas} tasks running",
            update.state.replace('_', " "),
            s.running()
        ));
    }
    let running = s.running();
    if running >= replicas {
        return None;
    }
    let why = s
        .tasks
        .iter()
        .filter(|t| t.desired_state == "running" && t.state != "running")
        .find_map(|t| {
            t.error
                .clone()
                .or_else(|| (!t.message.is_empty()).then(|| t.message.clone()))
                .map(|e| format!("{}: {e}", t.state))
        })
        .unwrap_or_else(|| "tasks starting".to_string());
    Some(format!("{running} of {replicas} tasks running ({why})"))
}

#[cfg(test)]
mod tests;
