//! Response bodies of the API and the pure functions that build them from store rows and
//! the last pass. Owns the JSON shape documented in `openapi.json`. Pure: no I/O, no clock,
//! no locks (callers hand in what they read). Must not touch: the store, the runtime, the
//! proxy. Env values are shown through `redact::env_value`; every body is redacted again as
//! a whole before it is sent (`routes::json`).

use super::redact;
use crate::health::ProbeRecord;
use crate::plan::{Health, ReplicaSource, Step};
use crate::reconcile::LastPass;
use crate::runtime::ContainerState;
use crate::spec::{AppSpec, HttpScaling, ScalingMode};
use crate::store::{AppRow, FailedRollout, ReplicaOverrideRow, ScalingDecisionRow};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// One line of `GET /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSummary {
    pub name: String,
    /// synced, progressing, degraded, quarantined, failed-rollout, crash-looping (or removed).
    pub status: String,
    /// Effective replica count of the last pass; null before any pass planned the app.
    pub desired_replicas: Option<u32>,
    /// Healthy containers of the desired spec at the last pass.
    pub ready_replicas: Option<u32>,
    /// Where `desired_replicas` came from: spec, override, bounds or default.
    pub replica_source: Option<&'static str>,
    /// Source revision the app was last planned from.
    pub revision: Option<String>,
    pub spec_hash: Option<String>,
    /// Spec file, relative to the source root.
    pub source_file: Option<String>,
    /// Unix milliseconds of the last pass that reconciled the app.
    pub last_reconciled_at: Option<i64>,
    pub last_error: Option<String>,
    /// berth-owned containers of the app seen by the last pass (any state, any generation).
    /// Always set in the list; None (absent) in `AppDetail`, whose `containers` is the list
    /// of those containers itself (one key, one type: see `openapi.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<usize>,
    /// False when the app is only in the store (removed from the source, or no pass yet).
    pub in_source: bool,
}

/// `GET /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppList {
    /// Revision of the last pass (null before the first one).
    pub revision: Option<String>,
    /// Unix milliseconds of the last pass.
    pub last_pass_at: Option<i64>,
    pub apps: Vec<AppSummary>,
    /// The last pass's spec issues, file-level ones included (a file that defines no valid
    /// app, an unreadable entry): what `berth validate` would print.
    pub issues: Vec<SpecIssueDto>,
}

/// One spec issue: where (file, line, column, field) and what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecIssueDto {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted field path; empty for a whole-document or whole-file issue.
    pub field: String,
    pub message: String,
    /// The app it belongs to, when the document got far enough to name one.
    pub app: Option<String>,
}

/// The replica count of one app and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replicas {
    pub effective: Option<u32>,
    /// spec, override, bounds (the override was clamped, or minReplicas applied) or default.
    pub source: Option<&'static str>,
    /// The planner's own account: `{"source": "override", "requested": 9, "clamped": true}`.
    pub detail: Option<ReplicaSource>,
    /// `spec.replicas` as written.
    pub spec: Option<u32>,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub mode: Option<ScalingMode>,
    /// The autoscaler's (or an operator's) override in the store.
    #[serde(rename = "override")]
    pub override_: Option<ReplicaOverrideRow>,
}

/// One container of an app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `berth.spec-hash` label.
    pub spec_hash: String,
    pub revision: String,
    pub state: ContainerState,
    pub health: Health,
    /// `127.0.0.1:<port>` the upstream and the probes use.
    pub address: Option<String>,
    /// Unix milliseconds; the container's creation time (berth starts a container right
    /// after creating it; the one list call carries no separate start time).
    pub started_at: i64,
    /// Runs the desired spec (false: an old generation being replaced).
    pub current: bool,
    pub last_probe_at: Option<i64>,
    pub last_probe_error: Option<String>,
}

/// The last spec that rolled out healthy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastGood {
    pub spec_hash: String,
    pub revision: Option<String>,
    pub at: Option<i64>,
}

/// `GET /api/v1/apps/{name}`: the summary's fields (but its container count) and more.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppDetail {
    #[serde(flatten)]
    pub summary: AppSummary,
    pub replicas: Replicas,
    pub containers: Vec<Container>,
    /// Why the app is held (its current spec is invalid), when it is.
    pub held_reason: Option<String>,
    pub failed_rollout: Option<FailedRollout>,
    pub last_good: Option<LastGood>,
    /// The desired spec, env values redacted (`valueFrom` vars show no value).
    pub spec: Option<Value>,
    /// What the last pass planned for this app (no-ops included, with their reason).
    pub planned_steps: Vec<Step>,
    /// The app's Swarm service and its tasks (`--backend swarm`); null otherwise.
    pub service: Option<SwarmService>,
}

/// An app's Swarm service as the last pass saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwarmService {
    pub id: String,
    pub name: String,
    pub image: String,
    pub spec_hash: String,
    pub replicas: Option<u32>,
    /// Swarm's update state (`updating`, `completed`, `rollback_completed`, ...) and message.
    pub update_state: Option<String>,
    pub update_message: Option<String>,
    pub tasks: Vec<SwarmTask>,
}

/// One task of an app's Swarm service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwarmTask {
    pub id: String,
    pub slot: Option<u32>,
    pub node: String,
    /// On the node this berth runs on (its nginx routes to it).
    pub local: bool,
    pub state: String,
    pub desired_state: String,
    /// `healthy`, `starting` or `unhealthy` for a task with a health check.
    pub health: Option<String>,
    pub image: String,
    pub spec_hash: String,
    /// Swarm's error, or its last message while the task is not running.
    pub error: Option<String>,
    /// `127.0.0.1:<port>` when nginx routes to it.
    pub address: Option<String>,
}

fn swarm_service(s: &crate::runtime::swarm::ObservedService) -> SwarmService {
    SwarmService {
        id: s.id.clone(),
        name: s.name.clone(),
        image: s.image.clone(),
        spec_hash: s.spec_hash.clone(),
        replicas: s.replicas,
        update_state: s.update.as_ref().map(|u| u.state.clone()),
        update_message: s
            .update
            .as_ref()
            .map(|u| u.message.clone())
            .filter(|m| !m.is_empty()),
        tasks: s
            .tasks
            .iter()
            .map(|t| SwarmTask {
                id: t.id.clone(),
                slot: t.slot,
                node: t.node.clone(),
                local: t.local,
                state: t.state.clone(),
                desired_state: t.desired_state.clone(),
                health: t.health.clone(),
                image: t.image.clone(),
                spec_hash: t.spec_hash.clone(),
                error: t.error.clone().or_else(|| {
                    (t.state != "running" && !t.message.is_empty()).then(|| t.message.clone())
                }),
                address: t.member(),
            })
            .collect(),
    }
}

/// `GET /api/v1/apps/{name}/scaling`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    pub app: String,
    pub replicas: Replicas,
    pub cooldown_seconds: Option<u32>,
    pub http: Option<HttpScaling>,
    /// Newest first, each with the metrics and factors that caused it.
    pub decisions: Vec<ScalingDecisionRow>,
}

/// `spec`, `override`, `bounds` or `default`.
pub fn replica_source_name(source: &ReplicaSource) -> &'static str {
    match source {
        ReplicaSource::Spec => "spec",
        ReplicaSource::Override { clamped: false, .. } => "override",
        ReplicaSource::Override { clamped: true, .. } | ReplicaSource::MinReplicas => "bounds",
        ReplicaSource::Default => "default",
    }
}

fn summary(
    name: &str,
    row: Option<&AppRow>,
    last: Option<&LastPass>,
    containers: Option<usize>,
) -> AppSummary {
    let desired = last.and_then(|l| l.desired.apps.get(name));
    let held = last.is_some_and(|l| l.desired.held.contains_key(name));
    let planned = last.and_then(|l| l.plan.apps.get(name));
    let status = match row {
        Some(row) => row.status.as_str(),
        None if held => "quarantined",
        None => "progressing",
    };
    let in_pass = desired.is_some() || held;
    AppSummary {
        name: name.to_string(),
        status: status.to_string(),
        desired_replicas: planned.map(|p| p.desired_replicas),
        ready_replicas: planned.map(|p| p.ready_replicas),
        replica_source: planned.map(|p| replica_source_name(&p.replica_source)),
        revision: match (desired, last) {
            (Some(_), Some(last)) => Some(last.desired.revision.clone()),
            _ => row.map(|r| r.revision.clone()),
        },
        spec_hash: desired
            .map(|d| d.hash.clone())
            .or_else(|| row.map(|r| r.spec_hash.clone())),
        source_file: desired
            .map(|d| d.source.file.display().to_string())
            .or_else(|| row.map(|r| r.source_file.clone())),
        last_reconciled_at: match last {
            Some(last) if in_pass => Some(last.at),
            _ => row.map(|r| r.last_reconciled_at.unwrap_or(r.updated_at)),
        },
        last_error: row.and_then(|r| r.last_error.clone()),
        containers,
        in_source: desired.is_some(),
    }
}

/// Every app the store or the last pass knows, ordered by name.
pub fn app_list(rows: &[AppRow], last: Option<&LastPass>) -> AppList {
    let by_name: HashMap<&str, &AppRow> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut names: BTreeSet<&str> = by_name.keys().copied().collect();
    let mut containers: HashMap<&str, usize> = HashMap::new();
    if let Some(last) = last {
        names.extend(last.desired.apps.keys().map(String::as_str));
        names.extend(last.desired.held.keys().map(String::as_str));
        for c in &last.observed.containers {
            *containers.entry(c.app.as_str()).or_default() += 1;
        }
    }
    AppList {
        revision: last.map(|l| l.desired.revision.clone()),
        last_pass_at: last.map(|l| l.at),
        issues: last
            .map(|l| {
                l.issues
                    .iter()
                    .map(|i| SpecIssueDto {
                        file: i.file.display().to_string(),
                        line: i.line,
                        column: i.column,
                        field: i.field.clone(),
                        message: i.message.clone(),
                        app: i.app.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        apps: names
            .into_iter()
            .map(|name| {
                summary(
                    name,
                    by_name.get(name).copied(),
                    last,
                    Some(containers.get(name).copied().unwrap_or(0)),
                )
            })
            .collect(),
    }
}

/// Is the app known at all (store row, desired, held or with containers)?
pub fn app_known(name: &str, row: Option<&AppRow>, last: Option<&LastPass>) -> bool {
    row.is_some()
        || last.is_some_and(|l| {
            l.desired.apps.contains_key(name)
                || l.desired.held.contains_key(name)
                || l.observed.containers.iter().any(|c| c.app == name)
        })
}

fn replicas(
    name: &str,
    spec: Option<&AppSpec>,
    last: Option<&LastPass>,
    override_: Option<ReplicaOverrideRow>,
) -> Replicas {
    let planned = last.and_then(|l| l.plan.apps.get(name));
    let scaling = spec.and_then(|s| s.scaling.as_ref());
    Replicas {
        effective: planned.map(|p| p.desired_replicas),
        source: planned.map(|p| replica_source_name(&p.replica_source)),
        detail: planned.map(|p| p.replica_source),
        spec: spec.and_then(|s| s.replicas),
        min: scaling.map(|s| s.min_replicas),
        max: scaling.map(|s| s.max_replicas),
        mode: scaling.map(|s| s.mode),
        override_,
    }
}

/// Rewrites a serialized `AppSpec`'s env into the YAML form (`{"name", "value"}` or
/// `{"name", "valueFrom": "sdk"}`), secret values redacted, `valueFrom` values absent.
pub fn display_spec(mut spec: Value) -> Value {
    if let Some(env) = spec.get_mut("env").and_then(Value::as_array_mut) {
        for entry in env.iter_mut() {
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let literal = entry
                .get("value")
                .and_then(|v| v.get("literal"))
                .and_then(Value::as_str)
                .map(str::to_string);
            *entry = match literal {
                Some(value) => {
                    let var = crate::spec::EnvVar {
                        name: name.clone(),
                        value: crate::spec::EnvValue::Literal(value),
                    };
                    serde_json::json!({ "name": name, "value": redact::env_value(&var) })
                }
                None => serde_json::json!({ "name": name, "valueFrom": "sdk" }),
            };
        }
    }
    redact::redact_json(&mut spec);
    spec
}

/// The app detail, without probe records (`fill_probes` adds them after the last-pass lock
/// is released).
pub fn app_detail(
    name: &str,
    row: Option<&AppRow>,
    last: Option<&LastPass>,
    override_: Option<ReplicaOverrideRow>,
    failed_rollout: Option<FailedRollout>,
) -> AppDetail {
    let desired = last.and_then(|l| l.desired.apps.get(name));
    let observed: Vec<_> = last
        .map(|l| {
            l.observed
                .containers
                .iter()
                .filter(|c| c.app == name)
                .collect()
        })
        .unwrap_or_default();
    let containers = observed
        .iter()
        .map(|c| Container {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            spec_hash: c.spec_hash.clone(),
            revision: c.revision.clone(),
            state: c.state,
            health: last.map_or(Health::Starting, |l| l.observed.health_of(&c.id)),
            address: c.address(),
            started_at: c.created.saturating_mul(1000),
            current: desired.is_some_and(|d| d.hash == c.spec_hash),
            last_probe_at: None,
            last_probe_error: None,
        })
        .collect();
    let spec = match (desired, row) {
        (Some(d), _) => serde_json::to_value(&d.spec).ok(),
        (None, Some(row)) => serde_json::from_str(&row.spec_json).ok(),
        (None, None) => None,
    };
    AppDetail {
        summary: summary(name, row, last, None),
        replicas: replicas(name, desired.map(|d| &*d.spec), last, override_),
        containers,
        held_reason: last.and_then(|l| l.desired.held.get(name).cloned()),
        failed_rollout,
        last_good: row.and_then(|r| {
            Some(LastGood {
                spec_hash: r.last_good_hash.clone()?,
                revision: r.last_good_revision.clone(),
                at: r.last_good_at,
            })
        }),
        spec: spec.map(display_spec),
        planned_steps: last
            .map(|l| l.plan.steps_for(name).cloned().collect())
            .unwrap_or_default(),
        service: last
            .and_then(|l| l.observed.services.iter().find(|s| s.app == name))
            .map(swarm_service),
    }
}

/// Adds the prober's live view to each container: its health (when the prober has one),
/// last probe time and error.
pub fn fill_probes(detail: &mut AppDetail, probe: impl Fn(&str) -> Option<ProbeRecord>) {
    for container in &mut detail.containers {
        if let Some(record) = probe(&container.id) {
            if let Some(health) = record.health {
                container.health = health;
            }
            container.last_probe_at = Some(record.last_probe_at).filter(|at| *at > 0);
            container.last_probe_error = record.last_error.map(|e| redact::redact_text(&e).into());
        }
    }
}

/// The scaling view of an app.
pub fn scaling(
    name: &str,
    last: Option<&LastPass>,
    override_: Option<ReplicaOverrideRow>,
    decisions: Vec<ScalingDecisionRow>,
) -> Scaling {
    let spec = last
        .and_then(|l| l.desired.apps.get(name))
        .map(|d| &*d.spec);
    let scaling = spec.and_then(|s| s.scaling.as_ref());
    Scaling {
        app: name.to_string(),
        replicas: replicas(name, spec, last, override_),
        cooldown_seconds: scaling.map(|s| s.cooldown_seconds),
        http: scaling.and_then(|s| s.http.clone()),
        decisions,
    }
}
