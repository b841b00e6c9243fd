//! Docker Engine adapter (bollard 0.18): `DockerRuntime` is the only code in berth that talks
//! to the engine. This file owns the runtime itself: the single labelled list call behind
//! `observe`, create/start/stop/remove/inspect of berth-owned containers (each re-checking
//! ownership first), and the per-kind API call counters ([`DockerRuntime::calls`]). The
//! other jobs live next to it:
//!
//! | file | job |
//! |---|---|
//! | `connect.rs` | `DOCKER_HOST` parsing, ping + API version negotiation, bollard errors -> [`RuntimeError`] |
//! | `mapping.rs` | pure: request -> create body (labels, limits, restart policy, loopback ports, init), ownership rule, list/inspect -> [`ObservedContainer`] |
//! | `mounts.rs` | pure: the request's mounts plus the carried anonymous volumes of the replaced container |
//! | `network.rs` | berth's bridge network and the repair of this instance's duplicates |
//! | `stats.rs` | read-only one-shot stats (at most [`STATS_CONCURRENCY`] in flight) |
//! | `image.rs` | local image inspect, the registry's current digest of a tag, pulls with credentials |
//! | `logs.rs` | read-only container logs (timestamps, stdout and stderr, optionally followed) |
//! | `volume.rs` | berth's named volumes: labelled list, ensure (create when missing, refuse a foreign one), remove; anonymous volumes removed with an app |
//!
//! Must not touch: any container that lacks `berth.managed=true` (or, when this runtime has an
//! instance, lacks the matching `berth.instance`; without an instance, containers that carry
//! any `berth.instance` belong to someone else too). Every start/stop/remove/inspect inspects
//! first and refuses with [`RuntimeError::NotOwned`] (except the first start of a container
//! this runtime itself created with its labels). It pulls images (`image.rs`) but never
//! builds, tags or removes one, never touches nginx or the store, and never logs env values
//! or registry secrets.
//! Volumes: only volumes labelled `berth.managed=true` (and this instance) are created,
//! listed or removed, and an anonymous volume is deleted only by
//! `remove(.., RemoveVolumes::Anonymous)` (the app is gone) and only when no other container
//! uses it.

mod connect;
mod host;
mod image;
mod logs;
mod mapping;
mod mounts;
mod network;
mod stats;
mod volume;

pub(crate) use connect::map_error as map_engine_error;
pub use connect::DEFAULT_DOCKER_HOST;
pub use host::EngineFacts;
pub use stats::STATS_CONCURRENCY;

use super::{
    CallCounts, ContainerObserver, ContainerRequest, ContainerRuntime, ContainerState,
    ContainerStats, ObservedContainer, ObservedVolume, RemoveVolumes, RuntimeError,
};
use bollard::container::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::Docker;
use connect::{lower_first, map_error, REQUEST_TIMEOUT_SECS};
use mapping::{
    container_config, create_labels, inspect_state, is_cfs_refusal, is_cpu_range_refusal,
    observed_from_inspect, observed_from_summary, owns, shares, short, CpuLimit,
};
use mounts::{anonymous_volumes, mounts};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
struct Counters {
    list: AtomicU64,
    inspect: AtomicU64,
    create: AtomicU64,
    start: AtomicU64,
    stop: AtomicU64,
    remove: AtomicU64,
    network: AtomicU64,
    stats: AtomicU64,
    images: AtomicU64,
    pulls: AtomicU64,
    volume: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The Docker implementation of [`ContainerRuntime`].
///
/// CPU limits: a request's `cpu_millis` becomes `NanoCpus` (a hard CFS quota). When the engine
/// refuses NanoCpus ("NanoCPUs can not be set, as your kernel does not support CPU CFS
/// scheduler or the cgroup is not mounted"), the create is retried once with `CpuShares`
/// (millis × 1024 / 1000, a relative weight, not a cap), a warning is logged and every later
/// create goes straight to shares. When the request asks for more CPUs than the host has
/// ("Range of CPUs is from 0.01 to N"), the create is retried without a CPU limit (a cap above
/// the host's CPU count cannot bind anyway). Memory limits are passed as `Memory`; an engine
/// without the memory cgroup accepts and discards them with a warning, which is logged.
///
/// Containers run with Docker's init (`--init`, tini) as PID 1 unless [`with_init(false)`]
/// (Self::with_init): a server running as PID 1 (busybox httpd in the demo images) ignores
/// SIGTERM, so every stop would wait the full timeout and end in SIGKILL; with init it exits
/// on SIGTERM at once (measured here: 5.1 s vs 0.1 s for `stop -t 5`).
pub struct DockerRuntime {
    docker: Docker,
    init: bool,
    endpoint: String,
    instance: Option<String>,
    counters: Counters,
    cfs_refused: AtomicBool,
    known_networks: Mutex<HashSet<String>>,
    known_volumes: Mutex<HashSet<String>>,
    /// Containers this runtime created (with its ownership labels) and has not started yet:
    /// their start needs no ownership inspect first.
    created: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("endpoint", &self.endpoint)
            .field("instance", &self.instance)
            .field("calls", &self.calls())
            .finish()
    }
}

impl DockerRuntime {
    /// Whether created containers get Docker's init as PID 1 (default true).
    pub fn with_init(mut self, init: bool) -> Self {
        self.init = init;
        self
    }

    /// The endpoint this runtime talks to (as given by `DOCKER_HOST` or the default).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine client (the swarm backend shares this runtime's connection).
    pub(crate) fn client(&self) -> &Docker {
        &self.docker
    }

    /// The `berth.instance` label this runtime is scoped to, if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// True when the labels say this runtime owns the container.
    fn owns(&self, labels: Option<&HashMap<String, String>>) -> bool {
        owns(labels, self.instance.as_deref())
    }

    /// One inspect call. `Ok(None)` when the container does not exist.
    async fn inspect_raw(
        &self,
        operation: &str,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        Counters::bump(&self.counters.inspect);
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(map_error(&self.endpoint, operation, e)),
        }
    }

    /// Inspects `id` and refuses unless this runtime owns it. `Ok(None)` when gone.
    async fn owned(
        &self,
        operation: &str,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let Some(info) = self.inspect_raw(operation, id).await? else {
            return Ok(None);
        };
        let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
        if !self.owns(labels) {
            tracing::warn!(container = %id, operation, "refusing to touch a container berth does not own");
            return Err(RuntimeError::NotOwned { id: id.to_string() });
        }
        Ok(Some(info))
    }

    /// A name conflict: adopt the existing container when berth owns it, else refuse.
    async fn adopt_existing(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        let Some(info) = self.inspect_raw("create", name).await? else {
            return Ok(None); // removed in between; the caller retries the create
        };
        let id = info.id.clone().unwrap_or_else(|| name.to_string());
        let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
        if self.owns(labels) {
            tracing::debug!(container = %name, id = %short(&id), "container already exists; reusing it");
            Ok(Some(id))
        } else {
            Err(RuntimeError::Engine {
                operation: "create".to_string(),
                message: format!(
                    "container name {name} is already taken by container {} which berth does not own; rename or remove it",
                    short(&id)
                ),
            })
        }
    }
}

impl ContainerObserver for DockerRuntime {
    async fn observe(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let mut wanted = vec![format!("{}=true", super::LABEL_MANAGED)];
        if let Some(instance) = &self.instance {
            wanted.push(format!("{}={instance}", super::LABEL_INSTANCE));
        }
        let options = ListContainersOptions {
            all: true,
            filters: HashMap::from([("label".to_string(), wanted)]),
            ..Default::default()
        };
        Counters::bump(&self.counters.list);
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| map_error(&self.endpoint, "list containers", e))?;
        let instance = self.instance.as_deref();
        let mut observed: Vec<ObservedContainer> = list
            .into_iter()
            .filter_map(|s| observed_from_summary(s, instance))
            .collect();
        observed.sort_by(|a, b| a.app.cmp(&b.app).then_with(|| a.name.cmp(&b.name)));
        Ok(observed)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ObservedContainer>, RuntimeError> {
        Ok(self.owned("inspect", id).await?.map(observed_from_inspect))
    }

    async fn stats(&self, ids: &[String]) -> Result<Vec<ContainerStats>, RuntimeError> {
        self.stats_of(ids).await
    }

    async fn logs(
        &self,
        id: &str,
        request: &super::LogRequest,
    ) -> Result<super::LogLines, RuntimeError> {
        self.logs_of(id, request).await
    }

    fn calls(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            list: c.list.load(Ordering::Relaxed),
            inspect: c.inspect.load(Ordering::Relaxed),
            create: c.create.load(Ordering::Relaxed),
            start: c.start.load(Ordering::Relaxed),
            stop: c.stop.load(Ordering::Relaxed),
            remove: c.remove.load(Ordering::Relaxed),
            update: 0,
            network: c.network.load(Ordering::Relaxed),
            stats: c.stats.load(Ordering::Relaxed),
            images: c.images.load(Ordering::Relaxed),
            pulls: c.pulls.load(Ordering::Relaxed),
            volume: c.volume.load(Ordering::Relaxed),
        }
    }

    async fn volumes(&self, app: Option<&str>) -> Result<Vec<ObservedVolume>, RuntimeError> {
        self.list_volumes(app).await
    }

    async fn local_image(&self, image: &str) -> Result<Option<super::LocalImage>, RuntimeError> {
        self.local_image_of(image).await
    }

    async fn registry_digest(
        &self,
        image: &str,
        auth: Option<&super::credentials::RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        self.registry_digest_of(image, auth).await
    }
}

impl ContainerRuntime for DockerRuntime {
    async fn create(&self, request: &ContainerRequest) -> Result<String, RuntimeError> {
        let labels = create_labels(request, self.instance.as_deref());
        // The replaced container's anonymous volumes (an image's VOLUME) move to the new
        // one, as docker compose does: a rollout never starts a database on empty data.
        let carried = match &request.options.carry_volumes_from {
            Some(old) => self
                .owned("create", old)
                .await?
                .and_then(|info| info.mounts)
                .map(|m| anonymous_volumes(&m))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mounts = mounts(request, &carried);
        let mut cpu =
            CpuLimit::for_millis(request.cpu_millis, self.cfs_refused.load(Ordering::Relaxed));
        // At most: one CPU fallback, one CPU-range fallback, one conflict race.
        for _attempt in 0..4 {
            let config = container_config(request, labels.clone(), cpu, self.init, mounts.clone());
            let options = CreateContainerOptions {
                name: request.name.clone(),
                platform: None,
            };
            Counters::bump(&self.counters.create);
            let err = match self.docker.create_container(Some(options), config).await {
                Ok(created) => {
                    for warning in &created.warnings {
                        tracing::warn!(container = %request.name, warning = %warning, "docker create warning");
                    }
                    tracing::info!(
                        container = %request.name,
                        image = %request.image,
                        id = %short(&created.id),
                        "created container"
                    );
                    if let Ok(mut fresh) = self.created.lock() {
                        fresh.insert(created.id.clone());
                    }
                    return Ok(created.id);
                }
                Err(e) => e,
            };
            let BollardError::DockerResponseServerError {
                status_code,
                message,
            } = &err
            else {
                return Err(map_error(&self.endpoint, "create", err));
            };
            let lower = message.to_ascii_lowercase();
            if *status_code == 404 && lower.contains("no such image") {
                return Err(RuntimeError::ImageMissing {
                    image: request.image.clone(),
                });
            }
            if *status_code == 409 {
                match self.adopt_existing(&request.name).await? {
                    Some(id) => return Ok(id),
                    None => continue,
                }
            }
            if matches!(cpu, CpuLimit::Nano(_)) && is_cfs_refusal(message) {
                self.cfs_refused.store(true, Ordering::Relaxed);
                tracing::warn!(
                    container = %request.name,
                    "engine refuses NanoCpus (no CFS bandwidth control); falling back to CpuShares, which weight but do not cap CPU"
                );
                cpu = CpuLimit::Shares(shares(request.cpu_millis.unwrap_or(0)));
                continue;
            }
            if !matches!(cpu, CpuLimit::None) && is_cpu_range_refusal(message) {
                tracing::warn!(
                    container = %request.name,
                    cpu_millis = request.cpu_millis,
                    "requested CPU limit exceeds the host's CPUs; creating without a CPU limit"
                );
                cpu = CpuLimit::None;
                continue;
            }
            if *status_code == 404 && lower.contains("network") {
                if let Some(network) = &request.network {
                    if let Ok(mut known) = self.known_networks.lock() {
                        known.remove(network);
                    }
                    return Err(RuntimeError::Engine {
                        operation: "create".to_string(),
                        message: format!(
                            "network {network} does not exist (ensure_network creates it): {}",
                            lower_first(message)
                        ),
                    });
                }
            }
            return Err(map_error(&self.endpoint, "create", err));
        }
        Err(RuntimeError::Engine {
            operation: "create".to_string(),
            message: format!(
                "gave up creating container {} after repeated conflicts",
                request.name
            ),
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        // One this runtime just created carries its labels and is not running: no inspect.
        let fresh = self.created.lock().is_ok_and(|mut c| c.remove(id));
        if !fresh {
            let Some(info) = self.owned("start", id).await? else {
                return Err(RuntimeError::Engine {
                    operation: "start".to_string(),
                    message: format!("container {id} does not exist"),
                });
            };
            if info.state.and_then(|s| s.running) == Some(true) {
                return Ok(());
            }
        }
        Counters::bump(&self.counters.start);
        // 304 (already started) is success in bollard.
        self.docker
            .start_container(id, None::<StartContainerOptions<String>>)
            .await
            .map_err(|e| {
                // Two networks with one name (see remove_duplicate_networks): forget what we
                // know so the next ensure_network repairs it.
                if e.to_string().contains("is ambiguous") {
                    if let Ok(mut known) = self.known_networks.lock() {
                        known.clear();
                    }
                }
                map_error(&self.endpoint, "start", e)
            })?;
        tracing::info!(container = %id, "started container");
        Ok(())
    }

    async fn stop(&self, id: &str, timeout_seconds: u32) -> Result<(), RuntimeError> {
        let Some(info) = self.owned("stop", id).await? else {
            return Ok(());
        };
        if matches!(
            inspect_state(&info),
            ContainerState::Created
                | ContainerState::Exited
                | ContainerState::Dead
                | ContainerState::Removing
        ) {
            return Ok(());
        }
        // The engine waits up to `timeout_seconds` before killing: give the request room.
        let needed = Duration::from_secs(u64::from(timeout_seconds) + 30);
        let docker = if needed > Duration::from_secs(REQUEST_TIMEOUT_SECS) {
            self.docker.clone().with_timeout(needed)
        } else {
            self.docker.clone()
        };
        Counters::bump(&self.counters.stop);
        let options = StopContainerOptions {
            t: i64::from(timeout_seconds),
        };
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(map_error(&self.endpoint, "stop", e)),
        }
        tracing::info!(container = %id, "stopped container");
        Ok(())
    }

    async fn remove(&self, id: &str, volumes: RemoveVolumes) -> Result<Vec<String>, RuntimeError> {
        if let Ok(mut fresh) = self.created.lock() {
            fresh.remove(id);
        }
        let Some(info) = self.owned("remove", id).await? else {
            return Ok(Vec::new());
        };
        let anonymous: Vec<String> = info
            .mounts
            .as_deref()
            .map(anonymous_volumes)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Counters::bump(&self.counters.remove);
        let options = RemoveContainerOptions {
            force: true,
            v: volumes == RemoveVolumes::Anonymous,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => {}
            Err(e) => return Err(map_error(&self.endpoint, "remove", e)),
        }
        tracing::info!(container = %id, "removed container");
        if volumes == RemoveVolumes::Keep {
            return Ok(anonymous);
        }
        for name in anonymous {
            if let Err(e) = self.remove_anonymous_now(&name).await {
                tracing::debug!(volume = %name, "anonymous volume kept: {e}");
            }
        }
        Ok(Vec::new())
    }

    async fn ensure_volume(&self, name: &str, app: &str) -> Result<(), RuntimeError> {
        self.ensure_volume_now(name, app).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.remove_owned_volume(name).await
    }

    async fn remove_anonymous_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.remove_anonymous_now(name).await
    }

    async fn ensure_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.ensure_network_now(name).await
    }

    async fn pull(
        &self,
        image: &str,
        auth: Option<&super::credentials::RegistryAuth>,
    ) -> Result<super::PullReport, RuntimeError> {
        self.pull_image(image, auth).await
    }
}
