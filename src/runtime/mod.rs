//! The container runtime boundary: the read-only `ContainerObserver` trait and the mutating
//! `ContainerRuntime` trait on top of it, the observed-state types they return, and the
//! ownership labels. `docker/` is the only code that talks to the Docker Engine's containers
//! (bollard), `swarm/` the only code that talks to its services and tasks.
//! Only `reconcile` holds a `ContainerRuntime`; the API, the prober and the autoscaler get
//! observers.
//! Must not touch: nginx, the store, or any container without `berth.managed=true`.

pub mod credentials;
pub mod docker;
pub mod swarm;

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;

pub const LABEL_MANAGED: &str = "berth.managed";
pub const LABEL_APP: &str = "berth.app";
pub const LABEL_SPEC_HASH: &str = "berth.spec-hash";
pub const LABEL_REVISION: &str = "berth.revision";
pub const LABEL_SOURCE_FILE: &str = "berth.source-file";
/// Optional extra label: lets a test or a second controller own a disjoint set of containers.
pub const LABEL_INSTANCE: &str = "berth.instance";
/// The container port whose 127.0.0.1 host port `observe` reports (the request's first port).
/// Set by the runtime on create unless the request already carries it.
pub const LABEL_PORT: &str = "berth.port";

/// What Docker reports about the container process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
    Unknown,
}

impl ContainerState {
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "restarting" => Self::Restarting,
            "paused" => Self::Paused,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            "removing" => Self::Removing,
            _ => Self::Unknown,
        }
    }
}

/// One berth-owned container, as seen by a single labelled list call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub app: String,
    pub image: String,
    /// The local image ID (`sha256:...`) the container was created from; empty when the
    /// engine did not say. A tag that moved since shows as another ID than the tag's now.
    pub image_id: String,
    pub spec_hash: String,
    pub revision: String,
    pub state: ContainerState,
    /// Host port on 127.0.0.1 that Docker published for the app's first container port.
    pub host_port: Option<u16>,
    /// Every published (container port, host port on 127.0.0.1) pair.
    pub published: Vec<(u16, u16)>,
    /// Unix seconds.
    pub created: i64,
}

impl ObservedContainer {
    /// `127.0.0.1:<port>` when published.
    pub fn address(&self) -> Option<String> {
        self.host_port.map(|p| format!("127.0.0.1:{p}"))
    }
}

/// Everything needed to create one container; built by `reconcile` from an `AppSpec`.
/// `Debug` prints env names only (values are redacted), so the request is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerRequest {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    /// Final env, host-supplied values already resolved. Never logged.
    pub env: Vec<(String, String)>,
    /// Container ports to publish on 127.0.0.1 with an ephemeral host port.
    pub ports: Vec<u16>,
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// Ownership labels (managed, app, spec hash, revision, ...).
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    /// Workload options (mounts, fixed host ports, aliases, entrypoint, ...).
    pub options: ContainerOptions,
}

/// The workload options of one container (all default: as before issue 12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerOptions {
    /// Replaces the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub mounts: Vec<RequestMount>,
    /// Ports bound to a fixed host address, besides the ephemeral loopback ones.
    pub host_ports: Vec<HostPort>,
    /// Names other containers on the network reach this one by (`<app>`).
    pub aliases: Vec<String>,
    pub stop_signal: Option<String>,
    /// json-file rotation; None: the engine's default log config.
    pub log_rotation: Option<LogRotation>,
    /// A berth-owned container (the one being replaced) whose anonymous volumes (an image's
    /// VOLUME) the new container mounts at the same paths, as docker compose does.
    pub carry_volumes_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMount {
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A Docker volume by its full name (`berth-<app>-<name>`; `ensure_volume` creates it).
    Volume(String),
    /// A host path (the spec layer checked it against `--allow-host-path`).
    Bind(String),
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    pub max_size_bytes: u64,
    pub max_files: u32,
}

/// What removing a container does to its anonymous volumes (an image's VOLUME). The caller
/// must say: a rollout or heal keeps them (the replacement mounts them), only removing the
/// app deletes them. Named volumes are never deleted by a container removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveVolumes {
    /// Rollouts, heals, scale-in, failed starts: the volumes stay.
    Keep,
    /// The app is removed: its anonymous volumes (also the ones carried over from earlier
    /// containers) go too, unless another container still uses them.
    Anonymous,
}

/// A berth-managed Docker volume, as one labelled list call reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedVolume {
    pub name: String,
    pub app: String,
    /// RFC 3339 creation time as the engine reports it (may be empty).
    pub created: String,
}

impl std::fmt::Debug for ContainerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(name, _)| format!("{name}=<redacted>"))
            .collect();
        f.debug_struct("ContainerRequest")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &env)
            .field("ports", &self.ports)
            .field("cpu_millis", &self.cpu_millis)
            .field("memory_bytes", &self.memory_bytes)
            .field("labels", &self.labels)
            .field("network", &self.network)
            .field("options", &self.options)
            .finish()
    }
}

/// Engine API calls made by a runtime, by kind (every request sent counts, failed or not).
/// Tests and benchmarks use it to prove that a no-op pass is one list and nothing mutating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub list: u64,
    pub inspect: u64,
    pub create: u64,
    pub start: u64,
    pub stop: u64,
    pub remove: u64,
    /// Service updates (the swarm backend).
    pub update: u64,
    /// Network creations (`ensure_network` is cached, so a steady state makes none).
    pub network: u64,
    /// One-shot stats calls (read-only; the autoscaler's collector).
    pub stats: u64,
    /// Image inspects and registry digest checks (read-only; the image worker's).
    pub images: u64,
    /// Image pulls.
    pub pulls: u64,
    /// Volume creations and removals (listing counts as `list`, inspecting as `inspect`).
    pub volume: u64,
}

impl CallCounts {
    /// create + start + stop + remove + update + network + pulls + volume.
    pub fn mutating(&self) -> u64 {
        self.create
            + self.start
            + self.stop
            + self.remove
            + self.update
            + self.network
            + self.pulls
            + self.volume
    }

    /// Calls made since an earlier snapshot of the same counter.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts {
            list: self.list.saturating_sub(earlier.list),
            inspect: self.inspect.saturating_sub(earlier.inspect),
            create: self.create.saturating_sub(earlier.create),
            start: self.start.saturating_sub(earlier.start),
            stop: self.stop.saturating_sub(earlier.stop),
            remove: self.remove.saturating_sub(earlier.remove),
            update: self.update.saturating_sub(earlier.update),
            network: self.network.saturating_sub(earlier.network),
            stats: self.stats.saturating_sub(earlier.stats),
            images: self.images.saturating_sub(earlier.images),
            pulls: self.pulls.saturating_sub(earlier.pulls),
            volume: self.volume.saturating_sub(earlier.volume),
        }
    }
}

/// One one-shot resource sample of a running container (raw counters; the autoscaler turns
/// two samples into a CPU share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStats {
    pub id: String,
    /// Total CPU time the container used, nanoseconds (cgroup counter).
    pub cpu_total_ns: u64,
    /// Host-wide CPU time at the same moment, nanoseconds (all CPUs); `None` when the engine
    /// does not report it.
    pub system_cpu_ns: Option<u64>,
    /// CPUs the host has online (the scale of `system_cpu_ns`).
    pub online_cpus: u32,
    /// Memory in use without the page cache that can be dropped (what `docker stats` shows).
    pub memory_bytes: u64,
    /// Memory limit (the host's memory when the container has none).
    pub memory_limit_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the docker engine at {endpoint}: {message} (is the daemon running? check DOCKER_HOST)")]
    Unreachable { endpoint: String, message: String },
    #[error("image {image} is not present on this host: build or load it (docker build / docker load), or let berth pull it (imagePullPolicy IfNotPresent or Always)")]
    ImageMissing { image: String },
    #[error("{}", pull_text(image, registry, *failure, message))]
    Pull {
        image: String,
        registry: String,
        failure: PullFailure,
        message: String,
    },
    #[error("refusing to touch container {id}: it does not carry the berth.managed label (or belongs to another berth.instance)")]
    NotOwned { id: String },
    #[error("docker engine error during {operation}: {message}")]
    Engine { operation: String, message: String },
}

/// Why a pull or a registry check failed, as far as the engine's answer tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFailure {
    /// 401/403: missing or wrong credentials, or no access to the repository.
    Unauthorized,
    /// 404: no such repository or tag.
    NotFound,
    /// The registry cannot be reached (refused, DNS, timeout, TLS).
    Unreachable,
    Other,
}

fn pull_text(image: &str, registry: &str, failure: PullFailure, message: &str) -> String {
    match failure {
        PullFailure::Unauthorized => format!(
            "registry {registry} refused image {image} (unauthorized): add or fix its credentials in the docker config (docker login {registry}, or auths/credHelpers in $DOCKER_CONFIG/config.json) and check the account may read the repository; the engine said: {message}"
        ),
        PullFailure::NotFound => format!(
            "image {image} was not found on registry {registry}: check the repository and tag in spec.image, or push the image; the engine said: {message}"
        ),
        PullFailure::Unreachable => format!(
            "cannot reach registry {registry} to pull image {image}: check the address and that the registry is up (berth retries with backoff); the engine said: {message}"
        ),
        PullFailure::Other => format!(
            "pulling image {image} from registry {registry} failed: {message}"
        ),
    }
}

/// One image on this host: its ID and the registry digests it is known by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LocalImage {
    /// `sha256:...`, what a container's `image_id` is compared with.
    pub id: String,
    /// `repo@sha256:...` entries (empty for an image that never came from a registry).
    pub repo_digests: Vec<String>,
}

impl LocalImage {
    /// True when the image is known by the registry manifest `digest` (`sha256:...`).
    pub fn has_digest(&self, digest: &str) -> bool {
        self.repo_digests
            .iter()
            .any(|d| d.rsplit_once('@').is_some_and(|(_, got)| got == digest))
    }
}

/// What one pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullReport {
    /// The manifest digest the engine reported, when it did.
    pub digest: Option<String>,
    /// Layers the engine downloaded (0 when the image was up to date).
    pub layers_downloaded: u32,
    /// Bytes of the downloaded layers, as far as the engine reported them.
    pub bytes: u64,
}

/// The read-only half of a backend: what the API, the autoscaler and the prober may hold.
/// Nothing here changes a container, a network or the engine's state, so a holder of only
/// this trait cannot mutate the host (the compiler enforces "only reconcile mutates").
/// Backend-neutral: a container here is a Docker container or, for a cluster backend, a task.
pub trait ContainerObserver: Send + Sync + 'static {
    /// One list call filtered on the ownership label (and instance label when set).
    fn observe(&self) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send;
    /// Inspects one berth-owned container: state and published host port; None when gone.
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ObservedContainer>, RuntimeError>> + Send;
    /// One one-shot stats call per id (ids come from `observe`, so they are berth's), a
    /// bounded number in flight at once. Containers that are gone or not running are left
    /// out; any other failure fails the whole call.
    fn stats(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerStats>, RuntimeError>> + Send;
    /// Engine API calls made so far, by kind (tests and benchmarks prove no-op passes with it).
    fn calls(&self) -> CallCounts;
    /// The local image `image` names (ID and registry digests); None when the host lacks it.
    fn local_image(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, RuntimeError>> + Send {
        let _ = image;
        async { Ok(None) }
    }
    /// The manifest digest the registry serves for `image` now (asks the registry, changes
    /// nothing on the host).
    fn registry_digest(
        &self,
        image: &str,
        auth: Option<&credentials::RegistryAuth>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        let _ = auth;
        let image = image.to_string();
        async move {
            Err(RuntimeError::Engine {
                operation: "registry digest".to_string(),
                message: format!("this backend cannot ask a registry about {image}"),
            })
        }
    }
    /// The lines one berth-owned container wrote (stdout and stderr), oldest first; with
    /// `follow` the stream stays open for new lines until the container stops or the
    /// stream is dropped. Read-only (the engine's log endpoint). A backend without logs
    /// answers an error saying so.
    fn logs(
        &self,
        id: &str,
        request: &LogRequest,
    ) -> impl Future<Output = Result<LogLines, RuntimeError>> + Send {
        let _ = (id, request);
        async {
            Err(RuntimeError::Engine {
                operation: "logs".to_string(),
                message: "this backend does not serve container logs".to_string(),
            })
        }
    }
    /// berth's volumes (one labelled list call), of one app or all.
    fn volumes(
        &self,
        app: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ObservedVolume>, RuntimeError>> + Send;
}

/// Which lines `ContainerObserver::logs` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogRequest {
    /// At most this many of the newest lines (None: all).
    pub tail: Option<u32>,
    /// Only lines written at or after this unix second.
    pub since_seconds: Option<i64>,
    /// Keep the stream open for new lines.
    pub follow: bool,
}

/// One line a container wrote, without its line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The engine's RFC 3339 timestamp (nanoseconds, UTC): sortable as text.
    pub timestamp: String,
    pub stderr: bool,
    pub text: String,
}

/// A container's log lines as they arrive.
pub type LogLines = futures_util::stream::BoxStream<'static, Result<LogLine, RuntimeError>>;

/// The mutating half, on top of the observer: only `reconcile` holds a value of a type
/// that implements it. Every method is idempotent: "already exists", "already stopped" and
/// "already gone" are `Ok`.
pub trait ContainerRuntime: ContainerObserver {
    /// Creates (but does not start) a container; returns its id. An existing container with
    /// the same name and berth's label is returned as is.
    fn create(
        &self,
        request: &ContainerRequest,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn stop(
        &self,
        id: &str,
        timeout_seconds: u32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a container; `volumes` says whether its anonymous volumes go with it.
    /// Returns the anonymous volumes it had that stay on the host (none with `Anonymous`,
    /// or when the container was already gone).
    fn remove(
        &self,
        id: &str,
        volumes: RemoveVolumes,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
    /// Makes sure the dedicated network exists.
    fn ensure_network(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Pulls `image` from its registry (progress goes to the log).
    fn pull(
        &self,
        image: &str,
        auth: Option<&credentials::RegistryAuth>,
    ) -> impl Future<Output = Result<PullReport, RuntimeError>> + Send {
        let _ = auth;
        let image = image.to_string();
        async move {
            Err(RuntimeError::Engine {
                operation: "pull".to_string(),
                message: format!("this backend cannot pull {image}"),
            })
        }
    }
    /// Makes sure berth's volume `name` of `app` exists (created with the ownership labels
    /// when missing); refuses a volume of that name berth does not own.
    fn ensure_volume(
        &self,
        name: &str,
        app: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Deletes one of berth's volumes (`berth volumes prune`); gone is `Ok`, in use is an
    /// error naming the volume.
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Deletes an anonymous volume (64 hex digits, as `remove` reports them) of a removed
    /// app; gone is `Ok`, a name that is not anonymous or a volume still in use is an
    /// error (the volume stays).
    fn remove_anonymous_volume(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The swarm backend's service half, when this runtime is one: the pass then plans and
    /// applies service steps (`plan::swarm`) instead of container steps. The docker
    /// backend has none.
    fn swarm(&self) -> Option<&swarm::SwarmRuntime> {
        None
    }
}

/// A runtime seen through its read-only half only: a task that owns an `Observer` can
/// observe, inspect and read stats, and nothing else (the inner runtime is private).
#[derive(Debug)]
pub struct Observer<R> {
    runtime: std::sync::Arc<R>,
}

impl<R> Observer<R> {
    pub fn new(runtime: std::sync::Arc<R>) -> Self {
        Self { runtime }
    }
}

impl<R> Clone for Observer<R> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
        }
    }
}

impl<R: ContainerObserver> ContainerObserver for Observer<R> {
    fn observe(&self) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send {
        self.runtime.observe()
    }

    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ObservedContainer>, RuntimeError>> + Send {
        self.runtime.inspect(id)
    }

    fn stats(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerStats>, RuntimeError>> + Send {
        self.runtime.stats(ids)
    }

    fn calls(&self) -> CallCounts {
        self.runtime.calls()
    }

    fn local_image(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, RuntimeError>> + Send {
        self.runtime.local_image(image)
    }

    fn registry_digest(
        &self,
        image: &str,
        auth: Option<&credentials::RegistryAuth>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        self.runtime.registry_digest(image, auth)
    }

    fn logs(
        &self,
        id: &str,
        request: &LogRequest,
    ) -> impl Future<Output = Result<LogLines, RuntimeError>> + Send {
        self.runtime.logs(id, request)
    }

    fn volumes(
        &self,
        app: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ObservedVolume>, RuntimeError>> + Send {
        self.runtime.volumes(app)
    }
}
