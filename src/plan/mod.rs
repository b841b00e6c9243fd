//! The plan engine: `plan(desired, observed, overrides, now) -> Plan`. Pure: no I/O, no
//! clock (time is the `now` parameter), no Docker, no nginx, no store. It also owns the
//! nginx rendering (`render`), the human/JSON display (`display`) and the pure self-heal
//! backoff rules (`heal`). `reconcile` is the only consumer that acts on a `Plan`.

pub mod display;
pub mod heal;
mod image;
pub mod prune;
pub mod render;

#[cfg(test)]
mod tests;

use crate::runtime::{ContainerState, ObservedContainer};
use crate::spec::{AppSpec, AppType, ScalingMode, SourceRef};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

pub use heal::{HealState, RetryState};
pub use image::ImageView;

/// Drain for containers of an app that left the source (its spec, and so its
/// `drainSeconds`, is gone): the same as the spec default.
pub const APP_REMOVED_DRAIN_SECONDS: u32 = 5;

/// What the source says should run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Desired {
    /// Source revision (commit sha or content hash of the spec set).
    pub revision: String,
    pub apps: BTreeMap<String, DesiredApp>,
    /// Apps whose current spec is invalid or ambiguous: whatever runs for them is kept.
    pub held: BTreeMap<String, String>,
    /// Why this pass removes no app that left the source; `None` lets the plan remove
    /// every present app that is neither desired nor held. A file or directory the source
    /// cannot read (or a file that cannot be parsed) never blocks pruning as a whole: its
    /// apps are held (`held`, or quarantined in `apps`) by `reconcile::desired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_blocked: Option<PruneBlocked>,
    /// nginx `listen` value, e.g. `127.0.0.1:8080` (rendered into host-routed servers).
    pub proxy_listen: String,
    /// How members reach nginx: `server` lines (a reload) or a push to its Lua balancer.
    pub upstreams: render::Upstreams,
}

/// Why a pass removes none of the apps that left the source. `Display` gives the reason the
/// plan shows for each app it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum PruneBlocked {
    /// The deletion budget refused this pass's removals (`prune::check`): its reason says
    /// which apps, why and what to do.
    DeletionBudget { reason: String },
}

impl std::fmt::Display for PruneBlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PruneBlocked::DeletionBudget { reason } => {
                write!(
                    f,
                    "the deletion budget refused removing apps in this pass: {reason}"
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredApp {
    pub spec: AppSpec,
    pub source: SourceRef,
    /// `spec::spec_hash(&spec)`.
    pub hash: String,
    /// The revision this spec comes from when it is not `Desired::revision`: a quarantined
    /// app running its last good spec. Container labels carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl DesiredApp {
    pub fn new(spec: AppSpec, source: SourceRef) -> Self {
        let hash = crate::spec::spec_hash(&spec);
        Self {
            spec,
            source,
            hash,
            revision: None,
        }
    }
}

/// Health of one running container, as the prober last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not probed yet, or not yet past its success threshold.
    Starting,
    Healthy,
    Unhealthy,
}

/// What is there now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    /// Container id -> health. Missing means `Starting`.
    pub health: BTreeMap<String, Health>,
    /// Proxy file name -> current text, for every file berth manages.
    pub proxy_files: BTreeMap<String, String>,
    /// Per-app self-heal history (kept by the reconcile loop).
    pub heal: BTreeMap<String, HealState>,
    /// Per-app retry backoff of apps whose last apply failed (kept by the reconcile loop).
    pub retry: BTreeMap<String, RetryState>,
    /// Registry images the image worker tracks, by reference (`reconcile::images`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageView>,
}

impl Observed {
    pub fn health_of(&self, id: &str) -> Health {
        self.health.get(id).copied().unwrap_or(Health::Starting)
    }
}

/// Inputs kept in the store rather than in git.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides {
    /// Replica counts written by the autoscaler.
    pub replicas: BTreeMap<String, u32>,
    /// App -> spec hash whose rollout failed; not retried until the spec changes.
    pub failed_rollouts: BTreeMap<String, String>,
}

/// Where an app's effective replica count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "source")]
pub enum ReplicaSource {
    /// `spec.replicas`.
    Spec,
    /// The autoscaler's override, clamped to the bounds when `clamped`.
    Override { requested: u32, clamped: bool },
    /// `spec.scaling.minReplicas` (no replicas, no override).
    MinReplicas,
    /// Nothing said: one replica.
    Default,
}

/// effective = clamp(override if mode auto, min, max), else `replicas`, else minReplicas, else 1.
pub fn effective_replicas(spec: &AppSpec, override_replicas: Option<u32>) -> (u32, ReplicaSource) {
    if let Some(scaling) = &spec.scaling {
        if let (ScalingMode::Auto, Some(requested)) = (scaling.mode, override_replicas) {
            let value = requested.clamp(scaling.min_replicas, scaling.max_replicas);
            return (
                value,
                ReplicaSource::Override {
                    requested,
                    clamped: value != requested,
                },
            );
        }
    }
    if let Some(replicas) = spec.replicas {
        return (replicas, ReplicaSource::Spec);
    }
    if let Some(scaling) = &spec.scaling {
        return (scaling.min_replicas, ReplicaSource::MinReplicas);
    }
    (1, ReplicaSource::Default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CreateReason {
    /// Fewer containers than the effective replica count (first start, scale out, or a
    /// container removed by hand).
    BelowReplicas,
    /// Stands in for a container that stopped or exited (self-heal, under backoff).
    ReplacesStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceReason {
    /// Spec hash changed: rolling update.
    Outdated,
    /// Health probes fail: self-heal.
    Unhealthy,
    /// Same spec, but the tag of an `imagePullPolicy: Always` app now points to another
    /// image (the registry's digest moved and berth pulled it).
    ImageChanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoveReason {
    /// More containers than the effective replica count.
    ScaleIn,
    /// The app is no longer in the source.
    AppRemoved,
    /// Old generation left over beyond the replica count.
    Outdated,
    /// The container is not running (exited, dead or never started).
    NotRunning,
}

/// One thing to do. Closed set: `reconcile::apply` handles every variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Create, start, wait healthy, add to the upstream.
    Create {
        app: String,
        hash: String,
        image: String,
        reason: CreateReason,
    },
    /// Create the new one, wait healthy, add it, take the old one out, drain, stop, remove.
    /// `order` counts 1..=`of` within the app: replacements run one at a time (surge 1).
    Replace {
        app: String,
        old_id: String,
        old_name: String,
        old_hash: String,
        hash: String,
        image: String,
        reason: ReplaceReason,
        order: u32,
        of: u32,
        drain_seconds: u32,
    },
    /// Take out of the upstream (when routed), drain, stop, remove.
    Remove {
        app: String,
        id: String,
        name: String,
        reason: RemoveReason,
        drain_seconds: u32,
    },
    /// Write one proxy file (new or changed) with the unified diff from the current text.
    WriteProxy {
        app: String,
        file: String,
        text: String,
        diff: String,
    },
    /// Delete one proxy file berth no longer wants.
    RemoveProxy {
        app: String,
        file: String,
        diff: String,
    },
    /// Nothing will be done for this app, and why (held, failed rollout, backoff).
    NoOp { app: String, reason: String },
}

impl Step {
    pub fn app(&self) -> &str {
        match self {
            Step::Create { app, .. }
            | Step::Replace { app, .. }
            | Step::Remove { app, .. }
            | Step::WriteProxy { app, .. }
            | Step::RemoveProxy { app, .. }
            | Step::NoOp { app, .. } => app,
        }
    }

    /// Short kebab-case kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Create { .. } => "create",
            Step::Replace { .. } => "replace",
            Step::Remove { .. } => "remove",
            Step::WriteProxy { .. } => "write-proxy",
            Step::RemoveProxy { .. } => "remove-proxy",
            Step::NoOp { .. } => "no-op",
        }
    }

    pub fn changes_something(&self) -> bool {
        !matches!(self, Step::NoOp { .. })
    }

    pub fn touches_containers(&self) -> bool {
        matches!(
            self,
            Step::Create { .. } | Step::Replace { .. } | Step::Remove { .. }
        )
    }
}

/// Per-app summary carried with the plan (used by display, the API and the loop).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSummary {
    pub desired_replicas: u32,
    pub replica_source: ReplicaSource,
    pub hash: String,
    /// Running containers with the desired hash that are healthy.
    pub ready_replicas: u32,
    /// Upstream members the proxy files of this plan carry (healthy, kept or being
    /// replaced); `reconcile` starts each app's rollout from this set.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub revision: String,
    /// Ordered by app; within an app: proxy writes first, then replaces (in `order`),
    /// creates, removes, proxy removals.
    pub steps: Vec<Step>,
    pub apps: BTreeMap<String, AppSummary>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(Step::changes_something)
    }

    /// The steps of one app, in order.
    pub fn steps_for<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Step> + 'a {
        self.steps.iter().filter(move |s| s.app() == app)
    }
}

fn is_running(c: &ObservedContainer) -> bool {
    matches!(
        c.state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    )
}

/// The pure heart of berth.
pub fn plan(desired: &Desired, observed: &Observed, overrides: &Overrides, now: i64) -> Plan {
    // Health is looked up once per container here; everything below uses the pair.
    let mut by_app: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
    for container in &observed.containers {
        let health = observed.health_of(&container.id);
        by_app
            .entry(&container.app)
            .or_default()
            .push((container, health));
    }
    let mut steps = Vec::new();
    let mut apps = BTreeMap::new();
    let mut wanted_files: HashSet<String> = HashSet::new();

    for (name, app) in &desired.apps {
        let containers = by_app.remove(name.as_str()).unwrap_or_default();
        let (replicas, replica_source) =
            effective_replicas(&app.spec, overrides.replicas.get(name).copied());
        let outcome = plan_app(
            app,
            replicas,
            &containers,
            observed,
            overrides.failed_rollouts.get(name),
            now,
        );
        apps.insert(
            name.clone(),
            AppSummary {
                desired_replicas: replicas,
                replica_source,
                hash: app.hash.clone(),
                ready_replicas: outcome.ready,
                members: outcome.members.clone(),
            },
        );
        if app.spec.app_type == AppType::Http {
            for (file, text) in render::render_app(
                &app.spec,
                &outcome.members,
                &desired.proxy_listen,
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
        steps.extend(outcome.steps);
    }

    // Containers of apps that are not desired (any more).
    for (name, containers) in by_app {
        if let Some(why) = desired.held.get(name) {
            steps.push(Step::NoOp {
                app: name.to_string(),
                reason: format!("kept running: {why}"),
            });
            continue;
        }
        if let Some(blocked) = &desired.prune_blocked {
            steps.push(Step::NoOp {
                app: name.to_string(),
                reason: format!("kept running: {blocked}"),
            });
            continue;
        }
        for (c, _) in containers {
            steps.push(Step::Remove {
                app: name.to_string(),
                id: c.id.clone(),
                name: c.name.clone(),
                reason: RemoveReason::AppRemoved,
                drain_seconds: APP_REMOVED_DRAIN_SECONDS,
            });
        }
    }

    // Proxy files no desired app renders any more.
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

fn step_rank(step: &Step) -> (u8, u32) {
    match step {
        Step::NoOp { .. } => (0, 0),
        Step::WriteProxy { .. } => (1, 0),
        Step::Replace { order, .. } => (2, *order),
        Step::Create { .. } => (3, 0),
        Step::Remove { .. } => (4, 0),
        Step::RemoveProxy { .. } => (5, 0),
    }
}

struct AppOutcome {
    steps: Vec<Step>,
    /// Addresses that should be in the upstream right now (healthy, kept or being replaced).
    members: Vec<String>,
    ready: u32,
}

/// A container with its health.
type Seen<'a> = (&'a ObservedContainer, Health);

fn plan_app(
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

fn healthy_members<'a, 'b: 'a>(containers: impl Iterator<Item = &'a Seen<'b>>) -> Vec<String> {
    let mut members: Vec<String> = containers
        .filter(|(c, h)| c.state == ContainerState::Running && *h == Health::Healthy)
        .filter_map(|(c, _)| c.address())
        .collect();
    members.sort();
    members.dedup();
    members
}
