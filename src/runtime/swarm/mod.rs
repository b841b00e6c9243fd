//! Docker Swarm backend (`--backend swarm`, issue 14): `SwarmRuntime` is the only code in
//! berth that talks to the engine's services and tasks. One Swarm service per app; Swarm
//! schedules, places, restarts and rolls the tasks (start-first, rollback on failure);
//! berth plans service-level steps (`plan::swarm`) and routes its nginx to the local
//! node's running tasks through their host-mode ports.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the observer (`ServiceObserver`: services + tasks, two list calls) and mutator (`ServiceRuntime`: create/update/remove a service, the attachable overlay) traits, `SwarmRuntime`, the swarm-manager check, call counters |
//! | `mapping.rs` | pure: request -> `ServiceSpec`, section digests, engine answers -> `ObservedService` |
//! | `containers.rs` | the container traits for the read-only users: the local node's running tasks as containers, stats and volumes of this node's engine; container mutations refused |
//! | `http.rs` | the one engine call bollard 0.18 lacks (`GET /tasks`): hyper's HTTP/1.1 client on the same socket |
//!
//! `SwarmRuntime` also implements the container traits so the API, prober and autoscaler
//! are unchanged: its containers are the local node's running tasks (stats and volumes go
//! to this node's engine); it refuses to create, start, stop or remove a container.
//! Must not touch: any service without `berth.managed=true` and this runtime's
//! `berth.instance` (every update and removal re-checks the labels), containers of the
//! docker backend, env values in labels.

mod containers;
mod http;
pub mod mapping;

use super::docker::DockerRuntime;
use super::{CallCounts, ContainerRequest, RuntimeError};
use crate::spec::{HealthSpec, Placement};
use bollard::network::CreateNetworkOptions;
use bollard::service::{ListServicesOptions, UpdateServiceOptions};
use bollard::Docker;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Per-section digests of the service spec berth wrote (`image=ab12cd,env=...`): the plan
/// names what changed by comparing them.
pub const LABEL_SECTIONS: &str = "berth.sections";

/// What the engine must say before berth uses it as a swarm backend.
pub const NOT_A_MANAGER: &str =
    "the engine is not a swarm manager: run docker swarm init or use --backend docker";

/// The update Swarm is running (or ran last) on a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateState {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
    /// `rollback_completed`.
    pub state: String,
    pub message: String,
}

impl UpdateState {
    /// Swarm is still moving tasks (berth follows closely).
    pub fn in_progress(&self) -> bool {
        matches!(self.state.as_str(), "updating" | "rollback_started")
    }

    /// Swarm rolled (or is rolling) the last update back.
    pub fn rolled_back(&self) -> bool {
        self.state.starts_with("rollback")
    }
}

/// One task of a berth service, as the tasks list reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedTask {
    pub id: String,
    pub slot: Option<u32>,
    pub node: String,
    /// Runs on the node this berth talks to (nginx can reach its host port on 127.0.0.1).
    pub local: bool,
    /// `new`, `pending`, `assigned`, `preparing`, `starting`, `running`, `shutdown`,
    /// `failed`, `rejected`, ...
    pub state: String,
    /// What Swarm wants: `running` or `shutdown` (being replaced or removed).
    pub desired_state: String,
    /// `healthy`/`starting`/`unhealthy` for tasks with a health check (Swarm reports a task
    /// running only once its check passes); None without one.
    pub health: Option<String>,
    pub image: String,
    /// The spec hash the task was created from.
    pub spec_hash: String,
    /// Swarm's error (`no suitable node (scheduling constraints not satisfied ...)`).
    pub error: Option<String>,
    pub message: String,
    pub container_id: Option<String>,
    /// The ephemeral host port of its first container port (host-mode publish).
    pub host_port: Option<u16>,
    pub created: String,
}

impl ObservedTask {
    /// Running, wanted, and reachable by this node's nginx.
    pub fn serves_locally(&self) -> bool {
        self.local && self.state == "running" && self.desired_state == "running"
    }

    /// `127.0.0.1:<port>` for a task that serves locally.
    pub fn member(&self) -> Option<String> {
        self.serves_locally()
            .then_some(self.host_port)
            .flatten()
            .map(|p| format!("127.0.0.1:{p}"))
    }
}

/// One berth service with its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedService {
    pub id: String,
    pub name: String,
    pub app: String,
    /// The engine's object version (an update must name it).
    pub version: u64,
    pub image: String,
    pub spec_hash: String,
    pub revision: String,
    /// `berth.sections` decoded (empty for a service berth did not write it on).
    pub sections: BTreeMap<String, String>,
    /// None: not a replicated service (berth creates replicated ones only).
    pub replicas: Option<u32>,
    pub update: Option<UpdateState>,
    pub tasks: Vec<ObservedTask>,
}

impl ObservedService {
    /// Swarm is moving this service's tasks right now.
    pub fn updating(&self) -> bool {
        self.update.as_ref().is_some_and(UpdateState::in_progress)
    }

    /// Tasks Swarm wants running that are running.
    pub fn running(&self) -> u32 {
        self.tasks
            .iter()
            .filter(|t| t.state == "running" && t.desired_state == "running")
            .count() as u32
    }

    /// Upstream members: the local node's running tasks, sorted.
    pub fn members(&self) -> Vec<String> {
        let mut members: Vec<String> = self.tasks.iter().filter_map(ObservedTask::member).collect();
        members.sort();
        members
    }
}

/// Everything Swarm needs for one app's service; built by `reconcile` from a desired app.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRequest {
    pub app: String,
    /// The container part (name = the service name, image, command, env resolved, limits,
    /// ownership labels, mounts, aliases, log rotation, stop signal).
    pub container: ContainerRequest,
    /// The spec's env as written (`NAME=value`, `NAME<from-host>`): the env section's
    /// digest, never the resolved values.
    pub env_description: Vec<String>,
    /// User labels (also on the task containers).
    pub user_labels: BTreeMap<String, String>,
    pub replicas: u32,
    pub health: Option<HealthSpec>,
    pub placement: Placement,
    pub max_replicas_per_node: Option<u32>,
    /// Rolling strategy: start the new task before stopping the old one.
    pub start_first: bool,
    pub stop_grace_seconds: u32,
    /// The attachable overlay network the service joins with the alias `<app>`.
    pub network: String,
}

/// The read-only half of the swarm backend.
pub trait ServiceObserver: Send + Sync + 'static {
    /// berth's services with their tasks: one services list call (filtered on the
    /// ownership label) and one tasks list call (those services' tasks).
    fn services(&self) -> impl Future<Output = Result<Vec<ObservedService>, RuntimeError>> + Send;
    /// This engine's swarm node id.
    fn local_node(&self) -> &str;
    /// Engine calls so far (`list` counts both lists; `create`, `update`, `remove`,
    /// `network` the mutations).
    fn service_calls(&self) -> CallCounts;
}

/// The mutating half: only `reconcile` calls it. Idempotent where the engine allows.
pub trait ServiceRuntime: ServiceObserver {
    fn create_service(
        &self,
        request: &ServiceRequest,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Replaces the service's spec (the engine rolls the tasks as its update config says).
    fn update_service(
        &self,
        service: &ObservedService,
        request: &ServiceRequest,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a berth service (its tasks stop); gone is `Ok`.
    fn remove_service(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Makes sure the attachable overlay network `name` exists.
    fn ensure_overlay(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

#[derive(Default)]
struct Counters {
    list: AtomicU64,
    inspect: AtomicU64,
    create: AtomicU64,
    update: AtomicU64,
    remove: AtomicU64,
    network: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The Swarm implementation of the service traits (and of the container traits, for the
/// read-only users: see the module doc).
pub struct SwarmRuntime {
    local: DockerRuntime,
    docker: Docker,
    instance: Option<String>,
    node_id: String,
    counters: Counters,
    overlays: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SwarmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmRuntime")
            .field("endpoint", &self.local.endpoint())
            .field("instance", &self.instance)
            .field("node", &self.node_id)
            .finish()
    }
}

pub(super) fn engine_error(operation: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Engine {
        operation: operation.to_string(),
        message: message.into(),
    }
}

impl SwarmRuntime {
    /// Connects like the docker backend (`DOCKER_HOST`) and checks that the engine is a
    /// swarm manager (only managers can create services).
    pub async fn connect(instance: Option<String>) -> Result<Self, RuntimeError> {
        let local = DockerRuntime::connect(instance.clone()).await?;
        let docker = local.client().clone();
        let info = docker
            .info()
            .await
            .map_err(|e| engine_error("info", e.to_string()))?;
        let swarm = info.swarm.unwrap_or_default();
        let active = swarm
            .local_node_state
            .is_some_and(|s| s.to_string() == "active");
        if !active || swarm.control_available != Some(true) {
            return Err(engine_error("swarm check", NOT_A_MANAGER));
        }
        Ok(Self {
            local,
            docker,
            instance,
            node_id: swarm.node_id.unwrap_or_default(),
            counters: Counters::default(),
            overlays: Mutex::new(HashSet::new()),
        })
    }

    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    fn map(&self, operation: &str, e: bollard::errors::Error) -> RuntimeError {
        super::docker::map_engine_error(self.local.endpoint(), operation, e)
    }

    /// The service `id` when berth owns it (None: gone); refuses a foreign one.
    async fn owned_service(
        &self,
        operation: &str,
        id: &str,
    ) -> Result<Option<bollard::models::Service>, RuntimeError> {
        bump(&self.counters.inspect);
        match self.docker.inspect_service(id, None).await {
            Ok(s) => {
                let labels = s.spec.as_ref().and_then(|s| s.labels.as_ref());
                if mapping::owns(labels, self.instance.as_deref()) {
                    Ok(Some(s))
                } else {
                    Err(RuntimeError::NotOwned { id: id.to_string() })
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.map(operation, e)),
        }
    }
}

impl ServiceObserver for SwarmRuntime {
    async fn services(&self) -> Result<Vec<ObservedService>, RuntimeError> {
        bump(&self.counters.list);
        let label = format!("{}=true", super::LABEL_MANAGED);
        let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
        filters.insert("label", vec![label.as_str()]);
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters,
                status: false,
            }))
            .await
            .map_err(|e| self.map("list services", e))?;
        let instance = self.instance.as_deref();
        let owned: Vec<&bollard::models::Service> = services
            .iter()
            .filter(|s| {
                mapping::owns(
                    s.spec.as_ref().and_then(|spec| spec.labels.as_ref()),
                    instance,
                )
            })
            .collect();
        let ids: Vec<String> = owned.iter().filter_map(|s| s.id.clone()).collect();
        let tasks = if ids.is_empty() {
            Vec::new()
        } else {
            bump(&self.counters.list);
            let filters = serde_json::json!({ "service": ids }).to_string();
            let version = self.docker.client_version();
            let path = format!(
                "/v{}.{}/tasks?filters={}",
                version.major_version,
                version.minor_version,
                http::encode_query(&filters)
            );
            http::get_json::<Vec<bollard::models::Task>>(self.local.endpoint(), &path)
                .await
                .map_err(|e| engine_error("list tasks", e.to_string()))?
        };
        let task_services: Vec<String> = tasks
            .iter()
            .map(|t| t.service_id.clone().unwrap_or_default())
            .collect();
        let observed_tasks: Vec<ObservedTask> = tasks
            .iter()
            .map(|t| mapping::observed_task(t, &self.node_id))
            .collect();
        let mut out: Vec<ObservedService> = owned
            .into_iter()
            .filter_map(|s| mapping::observed_service(s, &observed_tasks, &task_services, instance))
            .collect();
        out.sort_by(|a, b| a.app.cmp(&b.app));
        Ok(out)
    }

    fn local_node(&self) -> &str {
        &self.node_id
    }

    fn service_calls(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            list: c.list.load(Ordering::Relaxed),
            inspect: c.inspect.load(Ordering::Relaxed),
            create: c.create.load(Ordering::Relaxed),
            update: c.update.load(Ordering::Relaxed),
            remove: c.remove.load(Ordering::Relaxed),
            network: c.network.load(Ordering::Relaxed),
            ..CallCounts::default()
        }
    }
}

impl ServiceRuntime for SwarmRuntime {
    async fn create_service(&self, request: &ServiceRequest) -> Result<String, RuntimeError> {
        bump(&self.counters.create);
        let spec = mapping::service_spec(request, self.instance.as_deref());
        match self.docker.create_service(spec, None).await {
            Ok(answer) => Ok(answer.id.unwrap_or_default()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                // Created by an earlier pass that did not see the answer: adopt it if ours.
                match self
                    .owned_service("create service", &request.container.name)
                    .await?
                {
                    Some(s) => Ok(s.id.unwrap_or_default()),
                    None => Err(engine_error(
                        "create service",
                        format!(
                            "service {} vanished while it was created",
                            request.container.name
                        ),
                    )),
                }
            }
            Err(e) => Err(self.map("create service", e)),
        }
    }

    async fn update_service(
        &self,
        service: &ObservedService,
        request: &ServiceRequest,
    ) -> Result<(), RuntimeError> {
        // Ownership re-checked on the engine's current object, and its current version.
        let Some(current) = self.owned_service("update service", &service.id).await? else {
            return Err(engine_error(
                "update service",
                format!("service {} is gone; the next pass creates it", service.name),
            ));
        };
        let version = current
            .version
            .and_then(|v| v.index)
            .unwrap_or(service.version);
        bump(&self.counters.update);
        let spec = mapping::service_spec(request, self.instance.as_deref());
        self.docker
            .update_service(
                &service.id,
                spec,
                UpdateServiceOptions {
                    version,
                    ..Default::default()
                },
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.map("update service", e))
    }

    async fn remove_service(&self, id: &str) -> Result<(), RuntimeError> {
        if self.owned_service("remove service", id).await?.is_none() {
            return Ok(());
        }
        bump(&self.counters.remove);
        match self.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.map("remove service", e)),
        }
    }

    async fn ensure_overlay(&self, name: &str) -> Result<(), RuntimeError> {
        if self.overlays.lock().expect("overlay lock").contains(name) {
            return Ok(());
        }
        bump(&self.counters.inspect);
        match self.docker.inspect_network::<String>(name, None).await {
            Ok(net) => {
                let driver = net.driver.unwrap_or_default();
                if driver != "overlay" {
                    return Err(engine_error(
                        "ensure network",
                        format!("network {name} exists with driver {driver}, not overlay: remove it or pass another --network"),
                    ));
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                bump(&self.counters.network);
                let mut labels = HashMap::from([(super::LABEL_MANAGED, "true")]);
                if let Some(i) = self.instance.as_deref() {
                    labels.insert(super::LABEL_INSTANCE, i);
                }
                let created = self
                    .docker
                    .create_network(CreateNetworkOptions {
                        name,
                        driver: "overlay",
                        attachable: true,
                        check_duplicate: true,
                        labels,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(_) => {}
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        ..
                    }) => {}
                    Err(e) => return Err(self.map("create network", e)),
                }
            }
            Err(e) => return Err(self.map("inspect network", e)),
        }
        self.overlays
            .lock()
            .expect("overlay lock")
            .insert(name.to_string());
        Ok(())
    }
}

pub use containers::local_containers;
