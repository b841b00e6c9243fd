//! The validated App model: what the rest of berth consumes after `spec` has parsed and
//! checked a file. Plain data, no I/O, no serde_yaml (that stays inside `spec`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Unit-test fixture: a one-replica worker on `image`, every other field at its default.
#[cfg(test)]
pub(crate) fn test_worker(name: &str, image: &str) -> AppSpec {
    AppSpec {
        name: name.into(),
        app_type: AppType::Worker,
        image: image.into(),
        image_pull_policy: ImagePullPolicy::IfNotPresent,
        command: None,
        ports: vec![],
        health: None,
        resources: Resources::default(),
        replicas: Some(1),
        scaling: None,
        env: vec![],
        termination: Termination {
            drain_seconds: 0,
            ..Termination::default()
        },
        route: None,
        workload: Workload::default(),
    }
}

/// A validated application spec. Every field already has its default applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    /// DNS label, unique across the source.
    pub name: String,
    pub app_type: AppType,
    pub image: String,
    /// `spec.imagePullPolicy` (default `IfNotPresent`); absent in specs stored by an older
    /// berth, which did not pull (they read back as the default).
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    pub command: Option<Vec<String>>,
    /// Container ports; http apps have at least one, the first one is routed.
    pub ports: Vec<u16>,
    pub health: Option<HealthSpec>,
    pub resources: Resources,
    /// `spec.replicas` as written (None when absent).
    pub replicas: Option<u32>,
    pub scaling: Option<Scaling>,
    pub env: Vec<EnvVar>,
    pub termination: Termination,
    /// Only for http apps; defaults to path `/<name>` on any host.
    pub route: Option<Route>,
    /// Container options of real workloads (volumes, fixed host ports, dependencies,
    /// strategy, entrypoint, user, labels, logging). Absent in specs stored by older
    /// versions of berth, hence the serde default.
    #[serde(default)]
    pub workload: Workload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppType {
    Http,
    Worker,
}

/// When berth pulls an app's image (see docs/SPEC.md). Not part of the spec hash: changing
/// it never restarts containers by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    /// Pull only when the host lacks the image.
    #[default]
    IfNotPresent,
    /// Follow the tag: check the registry's digest every `--image-poll` seconds, pull and
    /// roll out when it moved.
    Always,
    /// Never pull: the image must be on the host (berth before registry support).
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub initial_delay_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    HttpGet { path: String, port: u16 },
    TcpSocket { port: u16 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a core (`0.5` and `"500m"` both give 500).
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub mode: ScalingMode,
    pub cooldown_seconds: u32,
    pub http: Option<HttpScaling>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalingMode {
    Auto,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpScaling {
    pub target_rps_per_replica: f64,
    pub max_p95_latency_ms: f64,
    pub scale_out_threshold_pct: f64,
    pub scale_in_threshold_pct: f64,
    pub window_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    Literal(String),
    /// `valueFrom: sdk`: supplied by the host at deploy time, never stored in git.
    FromHost,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub drain_seconds: u32,
    /// Seconds between the stop signal and SIGKILL; None: berth's `--stop-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u32>,
    /// Signal that asks the container to stop (`SIGTERM`, `SIGINT`, ...); None: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// The workload options of an app (issue 12). Every field defaults to "as before".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Workload {
    /// Replaces the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid` or a user name.
    pub user: Option<String>,
    pub volumes: Vec<Mount>,
    /// Ports published on a fixed host address (`hostPort`).
    pub published: Vec<PublishedPort>,
    /// Apps that need a healthy replica before this app's containers are created.
    pub depends_on: Vec<String>,
    pub strategy: Strategy,
    /// User labels (never `berth.*`).
    pub labels: BTreeMap<String, String>,
    pub logging: Logging,
    /// Swarm placement (`--backend swarm` only; not part of the spec hash).
    pub placement: Placement,
    /// Most tasks on one node (`--backend swarm` only; not part of the spec hash).
    pub max_replicas_per_node: Option<u32>,
}

/// Swarm placement: constraints (`node.role==manager`) and spread preferences (the node
/// attributes tasks spread over, e.g. `node.labels.zone`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Placement {
    pub constraints: Vec<String>,
    pub preferences: Vec<String>,
}

impl Workload {
    /// True when the spec uses an option only the swarm backend honours.
    pub fn uses_swarm_options(&self) -> bool {
        self.placement != Placement::default() || self.max_replicas_per_node.is_some()
    }
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub mount_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MountSource {
    /// A berth-managed Docker volume `berth-<app>-<name>`.
    Named(String),
    /// A host directory or file; only under an `--allow-host-path` prefix.
    HostPath(String),
    Tmpfs,
}

/// The Docker volume behind the named volume `name` of `app`.
pub fn volume_name(app: &str, name: &str) -> String {
    format!("berth-{app}-{name}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How a changed spec replaces running containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Start the new replica, wait healthy, then stop the old one (surge 1).
    #[default]
    Rolling,
    /// Stop the old replica, then start the new one (one owner of a data directory or port).
    Recreate,
}

/// json-file log rotation of every container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    pub max_size_bytes: u64,
    pub max_files: u32,
}

pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

impl Default for Logging {
    fn default() -> Self {
        Logging {
            max_size_bytes: DEFAULT_LOG_MAX_SIZE,
            max_files: DEFAULT_LOG_MAX_FILES,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub host: Option<String>,
    /// Always starts with `/`.
    pub path: String,
    /// Strip `path` before proxying, so the app sees `/` for `<path>/` (default true).
    pub strip_prefix: bool,
    /// Per-route proxy settings (body limit, timeouts, added headers). `serde(default)`:
    /// last good specs stored before these existed still load.
    #[serde(default)]
    pub proxy: RouteProxy,
    /// HTTPS for a host route (`route.tls`); None serves plain HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
}

/// `route.tls`: the certificate and key nginx serves on `--listen-tls` for the route's host.
/// The paths are host paths, allowed only under an `--allow-tls-dir` prefix (checked by the
/// reconcile shell, which also reads and checks the files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTls {
    /// Absolute, normalized path of the PEM certificate (chain).
    pub cert_file: PathBuf,
    /// Absolute, normalized path of the PEM private key.
    pub key_file: PathBuf,
    /// Answer plain-HTTP requests for the host with 308 to https.
    pub redirect_http: bool,
    /// Content hash of the certificate and key as last read by the shell (empty straight
    /// out of validation). Rendered into the app's config, so a renewed certificate on disk
    /// changes the text and reloads nginx once.
    #[serde(default)]
    pub fingerprint: String,
}

/// Largest request body a route accepts unless its spec says otherwise (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// How nginx proxies one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteProxy {
    /// nginx's `client_max_body_size`: a larger request body gets 413.
    pub max_body_bytes: u64,
    pub connect_timeout_seconds: u32,
    /// Between two reads from the app (upgraded WebSocket connections get an hour).
    pub read_timeout_seconds: u32,
    pub send_timeout_seconds: u32,
    /// Response headers added to every answer of the route, sorted by name.
    pub headers: Vec<(String, String)>,
}

impl Default for RouteProxy {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connect_timeout_seconds: 2,
            read_timeout_seconds: 60,
            send_timeout_seconds: 60,
            headers: Vec::new(),
        }
    }
}

/// Where an app's spec came from: file (relative to the source root) and the line of its
/// document, so every event and error can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRef {
    pub file: PathBuf,
    pub line: usize,
}

/// One spec problem. `Display` gives `file:line:column: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecIssue {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `spec.scaling.maxReplicas`; empty for whole-document errors.
    pub field: String,
    pub message: String,
    /// The app this issue belongs to, when the document got far enough to name it.
    pub app: Option<String>,
}

impl std::fmt::Display for SpecIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// An entry of the source that may hold specs but could not be read (a dangling symlink, a
/// name that is not UTF-8, a directory past the depth cap, ...): `path` relative to the
/// source root, `reason` what is wrong and what to do. The loader reports it as an issue and
/// treats it like a file that cannot be parsed; a directory stands for every file below it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct UnreadableEntry {
    pub path: PathBuf,
    pub reason: String,
}

/// The result of loading a set of spec files: the valid apps plus every problem found.
/// An app named in an issue is absent from `apps`; other apps are unaffected.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadedSpecs {
    pub apps: BTreeMap<String, (AppSpec, SourceRef)>,
    pub issues: Vec<SpecIssue>,
    /// Files that could not be read or parsed far enough to know which apps they define,
    /// and source entries that could not be read at all (a directory among them stands for
    /// every file below it). Callers must not remove anything that might have come from them.
    pub unreadable_files: Vec<PathBuf>,
}
