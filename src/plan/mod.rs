//! The plan engine: `plan(desired, observed, overrides, now) -> Plan`. Pure: no I/O, no
//! clock (time is the `now` parameter), no Docker, no nginx, no store. It also owns the
//! nginx rendering (`render`), the human/JSON display (`display`) and the pure self-heal
//! backoff rules (`heal`). `reconcile` is the only consumer that acts on a `Plan`.

mod app;
pub mod display;
pub mod heal;
mod image;
pub mod prune;
pub mod render;
pub mod swarm;

#[cfg(test)]
mod tests;

use crate::runtime::ObservedContainer;
use crate::spec::{AppSpec, AppType, ScalingMode, SourceRef, Strategy};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

use app::{plan_app, ready_apps, Seen};
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
    /// Where TLS servers listen (`--listen-tls`) and read their certificates from.
    pub proxy_tls: render::TlsListen,
    /// How members reach nginx: `server` lines (a reload) or a push to its Lua balancer.
    pub upstreams: render::Upstreams,
    /// `dependsOn` of the apps that left the source (from their last good spec): apply
    /// removes an app only after the leaving apps that depend on it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub leaving_deps: BTreeMap<String, Vec<String>>,
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
    /// Shared: the desired state, its published copy and the status records of a pass
    /// hold the same spec, so 1,000 apps are not copied three times.
    pub spec: std::sync::Arc<AppSpec>,
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
            spec: std::sync::Arc::new(spec),
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
    /// The swarm backend's services with their tasks (empty with the docker backend,
    /// whose `containers` are the whole picture; with swarm, `containers` are the local
    /// node's running tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::runtime::swarm::ObservedService>,
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
        /// `recreate`: the old one stops before the new one starts.
        #[serde(skip_serializing_if = "is_rolling")]
        strategy: Strategy,
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
    /// Swarm backend: create the app's service (Swarm starts its tasks).
    CreateService {
        app: String,
        service: String,
        hash: String,
        image: String,
        replicas: u32,
    },
    /// Swarm backend: replace the service's spec; `changes` names what differs (`image`,
    /// `replicas`, `env`, `placement`, ...). Swarm rolls the tasks start-first and rolls
    /// back on failure.
    UpdateService {
        app: String,
        service: String,
        id: String,
        old_hash: String,
        hash: String,
        image: String,
        replicas: u32,
        changes: Vec<String>,
    },
    /// Swarm backend: remove the service of an app that left the source (within the
    /// deletion budget, like container removals).
    RemoveService {
        app: String,
        service: String,
        id: String,
    },
}

fn is_rolling(s: &Strategy) -> bool {
    *s == Strategy::Rolling
}

impl Step {
    pub fn app(&self) -> &str {
        match self {
            Step::Create { app, .. }
            | Step::Replace { app, .. }
            | Step::Remove { app, .. }
            | Step::WriteProxy { app, .. }
            | Step::RemoveProxy { app, .. }
            | Step::NoOp { app, .. }
            | Step::CreateService { app, .. }
            | Step::UpdateService { app, .. }
            | Step::RemoveService { app, .. } => app,
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
            Step::CreateService { .. } => "create-service",
            Step::UpdateService { .. } => "update-service",
            Step::RemoveService { .. } => "remove-service",
        }
    }

    pub fn changes_something(&self) -> bool {
        !matches!(self, Step::NoOp { .. })
    }

    pub fn touches_containers(&self) -> bool {
        matches!(
            self,
            Step::Create { .. }
                | Step::Replace { .. }
                | Step::Remove { .. }
                | Step::CreateService { .. }
                | Step::UpdateService { .. }
                | Step::RemoveService { .. }
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
    /// The plan of a follower controller (HA): only its own node's proxy files; containers
    /// are the leader's. Other steps become a `NoOp` saying so.
    pub fn proxy_only(mut self) -> Plan {
        for step in &mut self.steps {
            if step.touches_containers() {
                *step = Step::NoOp {
                    app: step.app().to_string(),
                    reason: "follower: the leader changes containers".to_string(),
                };
            }
        }
        self
    }

    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(Step::changes_something)
    }

    /// The steps of one app, in order.
    pub fn steps_for<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Step> + 'a {
        self.steps.iter().filter(move |s| s.app() == app)
    }
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
    let ready_apps = ready_apps(desired, &by_app);

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
        let waiting: Vec<&str> = app
            .spec
            .workload
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|dep| !ready_apps.contains(dep))
            .collect();
        let brings_up = |s: &Step| matches!(s, Step::Create { .. } | Step::Replace { .. });
        if !waiting.is_empty() && outcome.steps.iter().any(brings_up) {
            // dependsOn: no container of this app is created before each dependency has a
            // healthy replica; what runs keeps running.
            steps.extend(outcome.steps.into_iter().filter(|s| !brings_up(s)));
            steps.push(Step::NoOp {
                app: name.clone(),
                reason: format!(
                    "waiting for {} (dependsOn: no healthy replica yet)",
                    waiting.join(", ")
                ),
            });
        } else {
            steps.extend(outcome.steps);
        }
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

pub(crate) fn step_rank(step: &Step) -> (u8, u32) {
    match step {
        Step::NoOp { .. } => (0, 0),
        Step::WriteProxy { .. } => (1, 0),
        Step::Replace { order, .. } => (2, *order),
        Step::Create { .. } => (3, 0),
        Step::Remove { .. } => (4, 0),
        Step::RemoveProxy { .. } => (5, 0),
        Step::CreateService { .. } | Step::UpdateService { .. } => (2, 0),
        Step::RemoveService { .. } => (4, 0),
    }
}
