//! Docker Engine adapter (bollard 0.18): the only code in berth that talks to the engine.
//!
//! Owns: connecting like the docker CLI (`DOCKER_HOST`, unix:// and tcp://, API version
//! negotiation), the single labelled list call behind `observe`, create/start/stop/remove of
//! berth-owned containers, the berth bridge network, mapping bollard errors to
//! [`RuntimeError`], the per-kind API call counters ([`DockerRuntime::calls`]), and read-only
//! one-shot stats of berth's containers (at most [`STATS_CONCURRENCY`] in flight).
//!
//! Must not touch: any container that lacks `berth.managed=true` (or, when this runtime has an
//! instance, lacks the matching `berth.instance`; without an instance, containers that carry
//! any `berth.instance` belong to someone else too). Every start/stop/remove/inspect inspects
//! first and refuses with [`RuntimeError::NotOwned`]. It never pulls, builds or removes
//! images, never touches nginx or the store, and never logs env values.

use super::{
    CallCounts, ContainerObserver, ContainerRequest, ContainerRuntime, ContainerState,
    ContainerStats, ObservedContainer, RuntimeError, LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED,
    LABEL_PORT, LABEL_REVISION, LABEL_SPEC_HASH,
};
use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, ListContainersOptions,
    MemoryStatsStats, RemoveContainerOptions, StartContainerOptions, Stats, StatsOptions,
    StopContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, HostConfig, PortBinding, PortMap, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::network::{CreateNetworkOptions, ListNetworksOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Where the docker CLI looks when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Per-request timeout (seconds); `stop` extends it by its own grace period.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Port the docker CLI assumes for `tcp://host` without a port (plain HTTP).
const DEFAULT_TCP_PORT: u16 = 2375;
/// One-shot stats calls in flight at once (each is a few cgroup reads in dockerd).
pub const STATS_CONCURRENCY: usize = 8;

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
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a CPU limit is expressed on this engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuLimit {
    /// Hard cap: `NanoCpus` = millis × 10⁶ (CFS quota). Works on this host (cgroup v1).
    Nano(i64),
    /// Relative weight: `CpuShares` = millis × 1024 / 1000 (min 2). Fallback when the engine
    /// refuses `NanoCpus` because the kernel has no CFS bandwidth control.
    Shares(i64),
    None,
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

/// A parsed `DOCKER_HOST` value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(String),
    Tcp(String),
}

/// Parses a `DOCKER_HOST` value the way the docker CLI does for the schemes berth supports.
fn parse_docker_host(host: &str) -> Result<Endpoint, String> {
    let host = host.trim();
    if host.is_empty() {
        return parse_docker_host(DEFAULT_DOCKER_HOST);
    }
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("unix:// needs a socket path".to_string());
        }
        return Ok(Endpoint::Unix(path.to_string()));
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(host.to_string()));
    }
    let rest = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"));
    if let Some(rest) = rest {
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("cannot parse tcp address {host:?}"));
        }
        // host:port, [v6]:port, or a bare host (CLI default port 2375).
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[..i].ends_with(':') && !authority.ends_with(']'),
            None => false,
        };
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{DEFAULT_TCP_PORT}")
        };
        return Ok(Endpoint::Tcp(format!("tcp://{authority}")));
    }
    let scheme = host.split("://").next().unwrap_or(host);
    Err(format!(
        "unsupported DOCKER_HOST scheme {scheme:?}: berth supports unix:// and tcp://"
    ))
}

impl DockerRuntime {
    /// Docker 20.10's duplicate-name check is not atomic: two berth processes (say, one
    /// killed while its create was in flight and its successor) can create two networks
    /// with one name, after which every attach by name fails as ambiguous. Keep the oldest
    /// berth-labelled network of that name and remove the others (never a foreign one).
    async fn remove_duplicate_networks(&self, name: &str) -> Result<(), RuntimeError> {
        let options = ListNetworksOptions {
            filters: HashMap::from([("name".to_string(), vec![name.to_string()])]),
        };
        Counters::bump(&self.counters.list);
        let mut same: Vec<_> = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| self.map_err("list networks", e))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        if same.len() < 2 {
            return Ok(());
        }
        same.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        for extra in same.iter().skip(1) {
            let ours = extra
                .labels
                .as_ref()
                .is_some_and(|l| l.get(LABEL_MANAGED).map(String::as_str) == Some("true"));
            let (Some(id), true) = (extra.id.as_deref(), ours) else {
                continue;
            };
            Counters::bump(&self.counters.network);
            match self.docker.remove_network(id).await {
                Ok(()) => tracing::warn!(network = %name, id, "removed a duplicate network"),
                Err(e) => {
                    tracing::warn!(network = %name, id, "cannot remove a duplicate network: {e}")
                }
            }
        }
        Ok(())
    }

    /// Connects like the docker CLI: `DOCKER_HOST` (unix:// or tcp://), else the default unix
    /// socket. Pings the engine and negotiates the API version (this engine speaks 1.41).
    /// `instance` scopes everything to containers labelled `berth.instance=<instance>`.
    pub async fn connect(instance: Option<String>) -> Result<Self, RuntimeError> {
        let host = std::env::var("DOCKER_HOST").ok();
        Self::connect_to(host.as_deref(), instance).await
    }

    /// Like [`connect`](Self::connect) with an explicit `DOCKER_HOST`-style address instead of
    /// the environment (`None` = default socket).
    pub async fn connect_to(
        host: Option<&str>,
        instance: Option<String>,
    ) -> Result<Self, RuntimeError> {
        let endpoint = match host {
            Some(h) if !h.trim().is_empty() => h.trim().to_string(),
            _ => DEFAULT_DOCKER_HOST.to_string(),
        };
        let unreachable = |message: String| RuntimeError::Unreachable {
            endpoint: endpoint.clone(),
            message,
        };
        let parsed = parse_docker_host(&endpoint).map_err(&unreachable)?;
        if matches!(parsed, Endpoint::Tcp(_))
            && std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty())
        {
            return Err(unreachable(
                "DOCKER_TLS_VERIFY is set but berth only speaks plain http to tcp:// engines"
                    .to_string(),
            ));
        }
        let docker = match &parsed {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            Endpoint::Tcp(addr) => {
                Docker::connect_with_http(addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
        }
        .map_err(|e| unreachable(root_cause(&e)))?;
        docker
            .ping()
            .await
            .map_err(|e| unreachable(root_cause(&e)))?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            unreachable(format!(
                "api version negotiation failed: {}",
                error_text(&e)
            ))
        })?;
        let version = docker.client_version();
        tracing::debug!(
            endpoint = %endpoint,
            api = %format!("{}.{}", version.major_version, version.minor_version),
            instance = ?instance,
            "connected to docker engine"
        );
        Ok(Self {
            docker,
            init: true,
            endpoint,
            instance,
            counters: Counters::default(),
            cfs_refused: AtomicBool::new(false),
            known_networks: Mutex::new(HashSet::new()),
        })
    }

    /// Whether created containers get Docker's init as PID 1 (default true).
    pub fn with_init(mut self, init: bool) -> Self {
        self.init = init;
        self
    }

    /// The endpoint this runtime talks to (as given by `DOCKER_HOST` or the default).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `berth.instance` label this runtime is scoped to, if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// True when the labels say this runtime owns the container.
    fn owns(&self, labels: Option<&HashMap<String, String>>) -> bool {
        owns(labels, self.instance.as_deref())
    }

    fn map_err(&self, operation: &str, err: BollardError) -> RuntimeError {
        match err {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => RuntimeError::Engine {
                operation: operation.to_string(),
                message: format!("{} (http {status_code})", lower_first(message.trim())),
            },
            BollardError::RequestTimeoutError => RuntimeError::Engine {
                operation: operation.to_string(),
                message: "the request timed out".to_string(),
            },
            e @ (BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::SocketNotFoundError(_)) => RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!("{operation}: {}", root_cause(&e)),
            },
            other => RuntimeError::Engine {
                operation: operation.to_string(),
                message: error_text(&other),
            },
        }
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
            Err(e) => Err(self.map_err(operation, e)),
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

    fn cpu_limit(&self, cpu_millis: Option<u32>) -> CpuLimit {
        match cpu_millis {
            None | Some(0) => CpuLimit::None,
            Some(m) if self.cfs_refused.load(Ordering::Relaxed) => CpuLimit::Shares(shares(m)),
            Some(m) => CpuLimit::Nano(i64::from(m) * 1_000_000),
        }
    }

    fn labels_for(&self, request: &ContainerRequest) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = request
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        match &self.instance {
            Some(instance) => {
                labels.insert(LABEL_INSTANCE.to_string(), instance.clone());
            }
            None => {
                // Without an instance, berth owns only un-instanced containers.
                labels.remove(LABEL_INSTANCE);
            }
        }
        if let Some(first) = request.ports.first() {
            labels
                .entry(LABEL_PORT.to_string())
                .or_insert_with(|| first.to_string());
        }
        labels
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

/// Ownership rule shared by observe and the inspect checks.
fn owns(labels: Option<&HashMap<String, String>>, instance: Option<&str>) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && labels.get(LABEL_INSTANCE).map(String::as_str) == instance
}

fn shares(cpu_millis: u32) -> i64 {
    (i64::from(cpu_millis) * 1024 / 1000).max(2)
}

fn is_cfs_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("nanocpus") && (m.contains("cfs") || m.contains("cgroup is not mounted"))
}

fn is_cpu_range_refusal(message: &str) -> bool {
    message.to_ascii_lowercase().contains("range of cpus")
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The bollard config for a request (no I/O; env values only go into the request body).
fn container_config(
    request: &ContainerRequest,
    labels: HashMap<String, String>,
    cpu: CpuLimit,
    init: bool,
) -> Config<String> {
    let mut exposed = HashMap::new();
    let mut bindings: PortMap = HashMap::new();
    for port in &request.ports {
        exposed.insert(port_key(*port), HashMap::new());
        bindings.insert(
            port_key(*port),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_string()),
                host_port: Some(String::new()), // ephemeral: docker picks a free port
            }]),
        );
    }
    let (nano_cpus, cpu_shares) = match cpu {
        CpuLimit::Nano(n) => (Some(n), None),
        CpuLimit::Shares(s) => (None, Some(s)),
        CpuLimit::None => (None, None),
    };
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        nano_cpus,
        cpu_shares,
        memory: request
            .memory_bytes
            .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        network_mode: request.network.clone(),
        init: Some(init),
        ..Default::default()
    };
    Config {
        image: Some(request.image.clone()),
        cmd: request.command.clone(),
        env: Some(
            request
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(labels),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Every (container port, host port) pair published on 127.0.0.1, sorted by container port.
fn loopback_pairs(
    bindings: impl IntoIterator<Item = (u16, Option<String>, Option<u16>)>,
) -> Vec<(u16, u16)> {
    let mut pairs: Vec<(u16, u16)> = bindings
        .into_iter()
        .filter_map(|(private, ip, public)| {
            let public = public.filter(|p| *p != 0)?;
            (ip.as_deref() == Some("127.0.0.1")).then_some((private, public))
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The host port for the primary container port (from `berth.port`), else for the lowest
/// container port published on 127.0.0.1.
fn pick_host_port(published: &[(u16, u16)], primary: Option<u16>) -> Option<u16> {
    match primary {
        Some(p) => published.iter().find(|(private, _)| *private == p),
        None => published.first(),
    }
    .map(|(_, public)| *public)
}

fn primary_port(labels: &HashMap<String, String>) -> Option<u16> {
    labels.get(LABEL_PORT).and_then(|p| p.parse().ok())
}

fn label(labels: &HashMap<String, String>, key: &str) -> String {
    labels.get(key).cloned().unwrap_or_default()
}

/// Maps one list entry; `None` unless `instance` owns it.
fn observed_from_summary(
    summary: ContainerSummary,
    instance: Option<&str>,
) -> Option<ObservedContainer> {
    if !owns(summary.labels.as_ref(), instance) {
        return None;
    }
    let labels = summary.labels.unwrap_or_default();
    let id = summary.id.unwrap_or_default();
    let name = summary
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| short(&id).to_string());
    let ports = summary.ports.unwrap_or_default();
    let published = loopback_pairs(
        ports
            .into_iter()
            .map(|p| (p.private_port, p.ip, p.public_port)),
    );
    let host_port = pick_host_port(&published, primary_port(&labels));
    Some(ObservedContainer {
        name,
        app: label(&labels, LABEL_APP),
        image: summary.image.unwrap_or_default(),
        spec_hash: label(&labels, LABEL_SPEC_HASH),
        revision: label(&labels, LABEL_REVISION),
        state: ContainerState::parse(summary.state.as_deref().unwrap_or_default()),
        host_port,
        published,
        created: summary.created.unwrap_or_default(),
        id,
    })
}

/// Maps an inspect response (the caller has checked ownership).
fn observed_from_inspect(info: ContainerInspectResponse) -> ObservedContainer {
    let config = info.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let id = info.id.unwrap_or_default();
    let bindings = info
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(key, bound)| {
            let private = key.split('/').next().and_then(|p| p.parse::<u16>().ok());
            bound.unwrap_or_default().into_iter().filter_map(move |b| {
                let public = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok());
                private.map(|private| (private, b.host_ip, public))
            })
        })
        .collect::<Vec<_>>();
    let published = loopback_pairs(bindings);
    let state = info
        .state
        .and_then(|s| s.status)
        .map(|s| ContainerState::parse(s.as_ref()))
        .unwrap_or(ContainerState::Unknown);
    ObservedContainer {
        name: info
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| short(&id).to_string()),
        app: label(&labels, LABEL_APP),
        image: config.image.unwrap_or_default(),
        spec_hash: label(&labels, LABEL_SPEC_HASH),
        revision: label(&labels, LABEL_REVISION),
        state,
        host_port: pick_host_port(&published, primary_port(&labels)),
        published,
        created: info.created.as_deref().and_then(parse_rfc3339).unwrap_or(0),
        id,
    }
}

/// Unix seconds from Docker's RFC 3339 timestamps ("2024-05-07T21:09:36.123456789Z").
fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    // Time part: hh:mm:ss[.frac](Z|±hh:mm)
    let tz_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, tz) = rest.split_at(tz_at);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    let offset = match tz.chars().next() {
        None | Some('Z') | Some('z') => 0,
        Some(sign) => {
            let (h, m) = tz[1..].split_once(':')?;
            let secs = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
            if sign == '-' {
                -secs
            } else {
                secs
            }
        }
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The innermost cause of a connection failure ("connection refused (os error 111)"),
/// without the http client's wrapper messages.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    lower_first(current.to_string().trim())
}

/// The error and its sources, deduplicated, lowercase first letters.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = lower_first(e.to_string().trim());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Maps one engine stats answer; `None` for a container that is not running (the engine
/// answers with zeroed counters then).
fn stats_from(id: &str, stats: &Stats) -> Option<ContainerStats> {
    let cpu = &stats.cpu_stats;
    if cpu.cpu_usage.total_usage == 0 && cpu.system_cpu_usage.unwrap_or(0) == 0 {
        return None;
    }
    let online_cpus = cpu
        .online_cpus
        .map(|n| n as u32)
        .or_else(|| cpu.cpu_usage.percpu_usage.as_ref().map(|v| v.len() as u32))
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let memory = &stats.memory_stats;
    // What `docker stats` shows: usage less the inactive page cache.
    let cache = match memory.stats {
        Some(MemoryStatsStats::V1(v1)) => v1.total_inactive_file,
        Some(MemoryStatsStats::V2(v2)) => v2.inactive_file,
        None => 0,
    };
    let usage = memory.usage.unwrap_or(0);
    Some(ContainerStats {
        id: id.to_string(),
        cpu_total_ns: cpu.cpu_usage.total_usage,
        system_cpu_ns: cpu.system_cpu_usage,
        online_cpus,
        memory_bytes: usage.saturating_sub(cache),
        memory_limit_bytes: memory.limit.unwrap_or(0),
    })
}

impl DockerRuntime {
    /// One one-shot stats call. `Ok(None)` when the container is gone or not running.
    async fn stats_one(&self, id: &str) -> Result<Option<ContainerStats>, RuntimeError> {
        use futures_util::StreamExt;
        Counters::bump(&self.counters.stats);
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = self.docker.stats(id, Some(options));
        match stream.next().await {
            None => Ok(None),
            Some(Ok(stats)) => Ok(stats_from(id, &stats)),
            Some(Err(BollardError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            })) => Ok(None),
            Some(Err(e)) => Err(self.map_err("stats", e)),
        }
    }
}

impl ContainerObserver for DockerRuntime {
    async fn observe(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let mut wanted = vec![format!("{LABEL_MANAGED}=true")];
        if let Some(instance) = &self.instance {
            wanted.push(format!("{LABEL_INSTANCE}={instance}"));
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
            .map_err(|e| self.map_err("list containers", e))?;
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
        use futures_util::{stream, StreamExt};
        let calls: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| async move { self.stats_one(&id).await })
            .collect();
        let results: Vec<Result<Option<ContainerStats>, RuntimeError>> = stream::iter(calls)
            .buffer_unordered(STATS_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.len());
        for result in results {
            if let Some(stats) = result? {
                out.push(stats);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
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
            network: c.network.load(Ordering::Relaxed),
            stats: c.stats.load(Ordering::Relaxed),
        }
    }
}

impl ContainerRuntime for DockerRuntime {
    async fn create(&self, request: &ContainerRequest) -> Result<String, RuntimeError> {
        let labels = self.labels_for(request);
        let mut cpu = self.cpu_limit(request.cpu_millis);
        // At most: one CPU fallback, one CPU-range fallback, one conflict race.
        for _attempt in 0..4 {
            let config = container_config(request, labels.clone(), cpu, self.init);
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
                    return Ok(created.id);
                }
                Err(e) => e,
            };
            let BollardError::DockerResponseServerError {
                status_code,
                message,
            } = &err
            else {
                return Err(self.map_err("create", err));
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
            return Err(self.map_err("create", err));
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
        let Some(info) = self.owned("start", id).await? else {
            return Err(RuntimeError::Engine {
                operation: "start".to_string(),
                message: format!("container {id} does not exist"),
            });
        };
        if info.state.and_then(|s| s.running) == Some(true) {
            return Ok(());
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
                self.map_err("start", e)
            })?;
        tracing::info!(container = %id, "started container");
        Ok(())
    }

    async fn stop(&self, id: &str, timeout_seconds: u32) -> Result<(), RuntimeError> {
        let Some(info) = self.owned("stop", id).await? else {
            return Ok(());
        };
        let state = info
            .state
            .and_then(|s| s.status)
            .map(|s| ContainerState::parse(s.as_ref()))
            .unwrap_or(ContainerState::Unknown);
        if matches!(
            state,
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
            Err(e) => return Err(self.map_err("stop", e)),
        }
        tracing::info!(container = %id, "stopped container");
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if self.owned("remove", id).await?.is_none() {
            return Ok(());
        }
        Counters::bump(&self.counters.remove);
        let options = RemoveContainerOptions {
            force: true,
            v: true,
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
            Err(e) => return Err(self.map_err("remove", e)),
        }
        tracing::info!(container = %id, "removed container");
        Ok(())
    }

    async fn ensure_network(&self, name: &str) -> Result<(), RuntimeError> {
        if self
            .known_networks
            .lock()
            .map(|k| k.contains(name))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        if let Some(instance) = &self.instance {
            labels.insert(LABEL_INSTANCE.to_string(), instance.clone());
        }
        let options = CreateNetworkOptions {
            name: name.to_string(),
            check_duplicate: true,
            driver: "bridge".to_string(),
            labels,
            ..Default::default()
        };
        Counters::bump(&self.counters.network);
        match self.docker.create_network(options).await {
            Ok(_) => tracing::info!(network = %name, "created network"),
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) if status_code == 409 || message.contains("already exists") => {}
            Err(e) => return Err(self.map_err("create network", e)),
        }
        self.remove_duplicate_networks(name).await?;
        if let Ok(mut known) = self.known_networks.lock() {
            known.insert(name.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn request() -> ContainerRequest {
        ContainerRequest {
            name: "web-abc".into(),
            image: "berth-demo:v1".into(),
            command: None,
            env: vec![("SECRET".into(), "hunter2".into())],
            ports: vec![8080, 9090],
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            labels: BTreeMap::from([(LABEL_APP.to_string(), "web".to_string())]),
            network: Some("berth".into()),
        }
    }

    #[test]
    fn docker_host_parsing_follows_the_cli() {
        assert_eq!(
            parse_docker_host(""),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            parse_docker_host("unix:///tmp/d.sock"),
            Ok(Endpoint::Unix("/tmp/d.sock".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://127.0.0.1:2375"),
            Ok(Endpoint::Tcp("tcp://127.0.0.1:2375".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://localhost"),
            Ok(Endpoint::Tcp("tcp://localhost:2375".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://[::1]"),
            Ok(Endpoint::Tcp("tcp://[::1]:2375".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://[::1]:1234/"),
            Ok(Endpoint::Tcp("tcp://[::1]:1234".into()))
        );
        assert!(parse_docker_host("ssh://me@host")
            .unwrap_err()
            .contains("unsupported"));
        assert!(parse_docker_host("unix://").is_err());
    }

    #[test]
    fn config_carries_limits_ports_labels_and_policy() {
        let rt_labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_PORT.to_string(), "8080".to_string()),
        ]);
        let cfg = container_config(&request(), rt_labels, CpuLimit::Nano(500_000_000), true);
        let host = cfg.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.cpu_shares, None);
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.network_mode.as_deref(), Some("berth"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let bindings = host.port_bindings.unwrap();
        let b = bindings["8080/tcp"].as_ref().unwrap();
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some(""));
        assert!(bindings.contains_key("9090/tcp"));
        assert_eq!(cfg.env.unwrap(), vec!["SECRET=hunter2".to_string()]);

        let shares_cfg = container_config(&request(), HashMap::new(), CpuLimit::Shares(512), false);
        let host = shares_cfg.host_config.unwrap();
        assert_eq!((host.nano_cpus, host.cpu_shares), (None, Some(512)));
    }

    #[test]
    fn cpu_fallback_detection() {
        assert!(is_cfs_refusal("NanoCPUs can not be set, as your kernel does not support CPU CFS scheduler or the cgroup is not mounted"));
        assert!(!is_cfs_refusal("No such image: x"));
        assert!(is_cpu_range_refusal(
            "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
        ));
        assert_eq!(shares(500), 512);
        assert_eq!(shares(1), 2);
    }

    #[test]
    fn host_port_prefers_the_labelled_port_on_loopback() {
        let bindings = vec![
            (9090, Some("127.0.0.1".to_string()), Some(40001)),
            (8080, Some("0.0.0.0".to_string()), Some(40002)),
            (8080, Some("127.0.0.1".to_string()), Some(40003)),
            (7070, None, None),
        ];
        let published = loopback_pairs(bindings);
        assert_eq!(published, vec![(8080, 40003), (9090, 40001)]);
        assert_eq!(pick_host_port(&published, Some(8080)), Some(40003));
        assert_eq!(pick_host_port(&published, Some(9090)), Some(40001));
        assert_eq!(pick_host_port(&published, None), Some(40003));
        assert_eq!(pick_host_port(&published, Some(7070)), None);
    }

    #[test]
    fn ownership_needs_managed_and_matching_instance() {
        let mut labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        assert!(owns(Some(&labels), None));
        assert!(!owns(Some(&labels), Some("t1")));
        labels.insert(LABEL_INSTANCE.to_string(), "t1".to_string());
        assert!(owns(Some(&labels), Some("t1")));
        assert!(!owns(Some(&labels), Some("t2")));
        assert!(!owns(Some(&labels), None));
        assert!(!owns(None, None));
        let foreign = HashMap::from([(LABEL_MANAGED.to_string(), "yes".to_string())]);
        assert!(!owns(Some(&foreign), None));
    }

    #[test]
    fn summary_maps_to_observed() {
        let summary = ContainerSummary {
            id: Some("0123456789abcdef".into()),
            names: Some(vec!["/web-abc".into()]),
            image: Some("berth-demo:v1".into()),
            created: Some(1_700_000_000),
            state: Some("running".into()),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_APP.to_string(), "web".to_string()),
                (LABEL_SPEC_HASH.to_string(), "h1".to_string()),
                (LABEL_REVISION.to_string(), "r1".to_string()),
                (LABEL_PORT.to_string(), "8080".to_string()),
            ])),
            ports: Some(vec![bollard::models::Port {
                ip: Some("127.0.0.1".into()),
                private_port: 8080,
                public_port: Some(32768),
                typ: None,
            }]),
            ..Default::default()
        };
        let o = observed_from_summary(summary.clone(), None).unwrap();
        assert_eq!(o.name, "web-abc");
        assert_eq!(o.app, "web");
        assert_eq!(o.spec_hash, "h1");
        assert_eq!(o.revision, "r1");
        assert_eq!(o.state, ContainerState::Running);
        assert_eq!(o.address().as_deref(), Some("127.0.0.1:32768"));
        assert_eq!(o.published, vec![(8080, 32768)]);
        assert_eq!(o.created, 1_700_000_000);
        assert!(observed_from_summary(summary, Some("other")).is_none());
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn request_debug_redacts_env_values() {
        let text = format!("{:?}", request());
        assert!(text.contains("SECRET=<redacted>"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn error_text_is_lowercase_and_chained() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = BollardError::from(io);
        assert_eq!(error_text(&e), "connection refused");
        assert_eq!(root_cause(&e), "connection refused");
    }
}
