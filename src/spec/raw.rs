//! Raw serde types that mirror the App YAML exactly (camelCase keys, unknown fields are
//! errors). They carry no defaults and no cross-field rules: `validate` turns them into the
//! model. Their doc comments and `schemars` attributes are the JSON Schema that `berth schema`
//! prints, so keep them in step with docs/SPEC.md. Owns nothing else: no parsing of
//! quantities (see `units`), no I/O.

use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A berth App: one deployable application on this Docker host.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "App")]
pub struct App {
    /// Must be `v1`.
    pub api_version: ApiVersion,
    /// Must be `App`.
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "v1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Kind {
    App,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// App name, unique across the source: a DNS label (`[a-z0-9-]`, 1 to 63 characters,
    /// starts with a letter, does not end with `-`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// `http` (routed through nginx, needs a port) or `worker` (no ports, no route).
    #[serde(rename = "type")]
    #[schemars(default = "default_app_type")]
    pub app_type: Option<AppType>,
    /// Image reference, e.g. `my-app:1.2`. Must not be empty or contain whitespace.
    #[schemars(length(min = 1))]
    pub image: String,
    /// When berth pulls the image from its registry: `IfNotPresent` (only when the host
    /// lacks it), `Always` (follow the tag: the registry's digest is checked every
    /// `--image-poll` seconds and the app rolls out when it moved) or `Never` (the image must
    /// already be on the host). Credentials come from Docker's own config.json.
    #[schemars(default = "default_pull_policy")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Replaces the image's CMD (as docker compose's `command`); the ENTRYPOINT stays unless
    /// `entrypoint` is set. Omit to use the image's own.
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// Container ports. http apps need at least one tcp port (the first is routed); workers
    /// may only list ports they publish with `hostPort`.
    pub ports: Option<Vec<Port>>,
    /// Health probe used during rollouts.
    pub health: Option<Health>,
    pub resources: Option<Resources>,
    /// Fixed replica count, used when `scaling` is absent or its mode is `manual`.
    /// With `scaling` it must lie within minReplicas..=maxReplicas.
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i64>,
    pub scaling: Option<Scaling>,
    pub env: Option<Vec<Env>>,
    pub termination: Option<Termination>,
    /// berth extension (http apps only). Default: path `/<name>` on any host.
    pub route: Option<Route>,
    // ---- workload options (issue 12) ----
    /// Replaces the image's ENTRYPOINT (at least one element).
    #[schemars(length(min = 1))]
    pub entrypoint: Option<Vec<String>>,
    /// Working directory inside the container (absolute path).
    pub working_dir: Option<String>,
    /// User the process runs as: `uid`, `uid:gid`, `name` or `name:group`.
    pub user: Option<String>,
    /// Mounts: a berth-managed named volume (`name`), a host path (`hostPath`, only under
    /// an `--allow-host-path` prefix) or a tmpfs (`tmpfs: true`).
    pub volumes: Option<Vec<Volume>>,
    /// Apps that need at least one healthy replica before this app's containers are created.
    pub depends_on: Option<Vec<String>>,
    /// `rolling` (default: start new, then stop old) or `recreate` (stop old, then start new).
    #[schemars(default = "default_strategy")]
    pub strategy: Option<Strategy>,
    /// User labels on every container; keys starting with `berth.` are reserved.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// json-file log rotation (on by default: 10Mi x 3 files).
    pub logging: Option<Logging>,
    /// Where the swarm backend may run this app's tasks (`--backend swarm`); the docker
    /// backend ignores it with a warning.
    pub placement: Option<Placement>,
    /// Most tasks of this app on one node (`--backend swarm`; ignored by the docker backend).
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas_per_node: Option<i64>,
}

/// Swarm placement: constraints every node must meet, spread preferences among them.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// `<attribute> == <value>` or `!=`: attribute `node.id`, `node.hostname`, `node.role`
    /// (`manager`/`worker`), `node.platform.os`, `node.platform.arch`, `node.labels.<key>`
    /// or `engine.labels.<key>`.
    pub constraints: Option<Vec<String>>,
    /// Spread tasks evenly over the values of a node attribute, in order of priority.
    pub preferences: Option<Vec<PlacementPreference>>,
}

/// One spread preference.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementPreference {
    /// A node attribute, e.g. `node.labels.zone`.
    pub spread: String,
}

/// One mount. Exactly one of `name`, `hostPath` or `tmpfs: true`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Volume {
    /// Named volume: Docker volume `berth-<app>-<name>`, kept across rollouts and removal of
    /// the app (`berth volumes prune APP` deletes it). A DNS label.
    #[schemars(regex(pattern = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: Option<String>,
    /// Absolute host path; refused unless under an `--allow-host-path` prefix.
    pub host_path: Option<String>,
    /// `true`: an in-memory tmpfs.
    pub tmpfs: Option<bool>,
    /// Absolute path inside the container.
    pub mount_path: String,
    #[schemars(default = "default_false")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Rolling,
    Recreate,
}

fn default_strategy() -> Option<Strategy> {
    Some(Strategy::Rolling)
}

fn default_false() -> Option<bool> {
    Some(false)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// json-file log rotation.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Logging {
    /// Size of one log file before it rotates (`10Mi`, `1M`, bytes); at least 1Ki.
    pub max_size: Option<Memory>,
    /// Log files kept per container.
    #[schemars(range(min = 1, max = 100), default = "default_3")]
    pub max_files: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppType {
    Http,
    Worker,
}

fn default_app_type() -> Option<AppType> {
    Some(AppType::Http)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ImagePullPolicy {
    IfNotPresent,
    Always,
    Never,
}

fn default_pull_policy() -> Option<ImagePullPolicy> {
    Some(ImagePullPolicy::IfNotPresent)
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i64,
    /// Publish on this fixed host port (databases, brokers). Needs `strategy: recreate` and
    /// one replica (two containers cannot bind one port).
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<i64>,
    /// Host address of `hostPort` (default 127.0.0.1; any other address must be written).
    #[serde(rename = "hostIP")]
    #[schemars(default = "default_host_ip")]
    pub host_ip: Option<String>,
    /// `tcp` (default) or `udp` (udp ports need a hostPort).
    #[schemars(default = "default_protocol")]
    pub protocol: Option<Protocol>,
}

fn default_host_ip() -> Option<String> {
    Some("127.0.0.1".to_string())
}

fn default_protocol() -> Option<Protocol> {
    Some(Protocol::Tcp)
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Health {
    /// HTTP GET probe on one of the app's ports. Exactly one of httpGet / tcpSocket.
    pub http_get: Option<HttpGet>,
    /// TCP connect probe. Exactly one of httpGet / tcpSocket.
    pub tcp_socket: Option<TcpSocket>,
    /// Seconds between probes.
    #[schemars(range(min = 1, max = 3600), default = "default_5")]
    pub interval_seconds: Option<i64>,
    /// Seconds before one probe counts as failed; at most intervalSeconds.
    /// Default 2 (or intervalSeconds when that is smaller).
    #[schemars(range(min = 1, max = 3600), default = "default_2")]
    pub timeout_seconds: Option<i64>,
    /// Consecutive failures that make a replica unhealthy.
    #[schemars(range(min = 1, max = 100), default = "default_3")]
    pub failure_threshold: Option<i64>,
    /// berth extension: consecutive successes that make a replica healthy.
    #[schemars(range(min = 1, max = 100), default = "default_1")]
    pub success_threshold: Option<i64>,
    /// berth extension: seconds to wait after start before the first probe.
    #[schemars(range(min = 0, max = 3600), default = "default_0")]
    pub initial_delay_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpGet {
    /// Request path, starts with `/`.
    pub path: String,
    /// One of the app's container ports.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSocket {
    /// One of the app's container ports.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scaling {
    #[schemars(range(min = 0, max = 1000), default = "default_1")]
    pub min_replicas: Option<i64>,
    /// Required; at least minReplicas and at least 1.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i64,
    pub policy: Option<Policy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// `auto`: the autoscaler picks the count within the bounds; `manual`: use `replicas`.
    #[schemars(default = "default_mode")]
    pub mode: Option<Mode>,
    /// Minimum seconds between two scaling decisions.
    #[schemars(range(min = 0, max = 86400), default = "default_60")]
    pub cooldown_seconds: Option<i64>,
    /// HTTP metrics policy (http apps only).
    pub http: Option<HttpPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Auto,
    Manual,
}

fn default_mode() -> Option<Mode> {
    Some(Mode::Auto)
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpPolicy {
    /// Requests per second one replica should serve; required, greater than 0.
    #[serde(rename = "targetRPSPerReplica")]
    pub target_rps_per_replica: f64,
    /// Scale out when p95 latency exceeds this; 0 turns the latency rule off.
    #[serde(rename = "maxP95LatencyMs")]
    #[schemars(range(min = 0), default = "default_0_f")]
    pub max_p95_latency_ms: Option<f64>,
    /// Scale out above this percentage of the target load (greater than scaleInThresholdPct,
    /// at most 100).
    #[serde(rename = "scaleOutThresholdPct")]
    #[schemars(range(min = 1, max = 100), default = "default_80_f")]
    pub scale_out_threshold_pct: Option<f64>,
    /// Scale in below this percentage of the target load (greater than 0).
    #[serde(rename = "scaleInThresholdPct")]
    #[schemars(range(min = 0, max = 100), default = "default_30_f")]
    pub scale_in_threshold_pct: Option<f64>,
    /// Length of the metrics window in seconds.
    #[serde(rename = "windowSeconds")]
    #[schemars(range(min = 1, max = 3600), default = "default_20")]
    pub window_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Env {
    /// Variable name: letters, digits and `_`, not starting with a digit; unique.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Literal value. Exactly one of value / valueFrom.
    pub value: Option<String>,
    /// `sdk`: supplied by the host at deploy time, never stored in git, redacted in the API
    /// and logs. Exactly one of value / valueFrom.
    pub value_from: Option<ValueFrom>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueFrom {
    Sdk,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Termination {
    /// Seconds a replica keeps serving in-flight requests after leaving the upstream, before
    /// it is stopped.
    #[schemars(range(min = 0, max = 3600), default = "default_5")]
    pub drain_seconds: Option<i64>,
    /// Seconds between the stop signal and SIGKILL (default: berth's `--stop-timeout`).
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period_seconds: Option<i64>,
    /// Signal that stops the container, e.g. `SIGTERM`, `SIGINT`, `SIGQUIT` (default: the
    /// image's STOPSIGNAL, else SIGTERM).
    #[schemars(regex(pattern = r"^SIG[A-Z0-9+-]{2,12}$"))]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Host name to match (a DNS name, optionally starting with `*.`); omit for any host.
    pub host: Option<String>,
    /// URL path prefix: starts with `/`, only `A-Za-z0-9._~/-`. Default `/` when host is
    /// set, else `/<name>`.
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._~/-]*$"))]
    pub path: Option<String>,
    /// Strip the path prefix before proxying, so the app sees `/` for `<path>/`.
    #[schemars(default = "default_true")]
    pub strip_prefix: Option<bool>,
    /// Largest request body nginx accepts for this route: bytes as an integer, or a string
    /// with a unit (`512Ki`, `10Mi`, `1Gi`); at most 1Gi. Default 10Mi. A larger body gets
    /// 413.
    pub max_body_size: Option<BodySize>,
    /// Proxy timeouts in whole seconds (1..=3600).
    pub timeouts: Option<RouteTimeouts>,
    /// Response headers added to every answer of this route (`name: value`). Names are
    /// letters, digits and `-`; values are printable ASCII without `"`, `\`, `$`, `{`, `}`
    /// or `;` (they are written into the nginx config).
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// HTTPS for this route (host routes only), served on berth's `--listen-tls` address.
    pub tls: Option<RouteTls>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteTls {
    /// Absolute path on the host of the PEM certificate (leaf first, then the chain). It
    /// must lie under a prefix the operator allowed with `--allow-tls-dir`.
    pub cert_file: String,
    /// Absolute path on the host of the PEM private key matching the certificate, under an
    /// `--allow-tls-dir` prefix.
    pub key_file: String,
    /// Answer plain-HTTP requests for the host with 308 to the same URL over https.
    #[schemars(default = "default_false")]
    pub redirect_http: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// Seconds to establish a connection to a replica (then the next one is tried).
    #[schemars(range(min = 1, max = 3600), default = "default_2")]
    pub connect: Option<i64>,
    /// Seconds between two reads from the replica (an upgraded WebSocket connection gets
    /// 3600).
    #[schemars(range(min = 1, max = 3600), default = "default_60")]
    pub read: Option<i64>,
    /// Seconds between two writes to the replica.
    #[schemars(range(min = 1, max = 3600), default = "default_60")]
    pub send: Option<i64>,
}

fn default_0() -> Option<i64> {
    Some(0)
}
fn default_1() -> Option<i64> {
    Some(1)
}
fn default_2() -> Option<i64> {
    Some(2)
}
fn default_3() -> Option<i64> {
    Some(3)
}
fn default_5() -> Option<i64> {
    Some(5)
}
fn default_20() -> Option<i64> {
    Some(20)
}
fn default_60() -> Option<i64> {
    Some(60)
}
fn default_0_f() -> Option<f64> {
    Some(0.0)
}
fn default_30_f() -> Option<f64> {
    Some(30.0)
}
fn default_80_f() -> Option<f64> {
    Some(80.0)
}
fn default_true() -> Option<bool> {
    Some(true)
}

/// A number or a string, as written: `cpu: 0.5`, `cpu: "500m"`, `memory: 512Mi`.
/// Interpreted by `units`.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    Integer(i128),
    Float(f64),
    Text(String),
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Integer(n) => write!(f, "{n}"),
            Quantity::Float(x) => write!(f, "{x}"),
            Quantity::Text(s) => write!(f, "{s}"),
        }
    }
}

struct QuantityVisitor(&'static str);

impl<'de> Visitor<'de> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
        Ok(Quantity::Integer(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
        Ok(Quantity::Integer(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
        Ok(Quantity::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
        Ok(Quantity::Text(v.to_string()))
    }
}

/// CPU limit in cores: a number (`0.5`, `2`) or a string (`"500m"`, `"0.5"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cpu(pub Quantity);

/// Memory limit: bytes as an integer, or a string with a unit (`512Mi`, `1G`).
#[derive(Debug, Clone, PartialEq)]
pub struct Memory(pub Quantity);

/// A request body limit: bytes as an integer, or a string with a unit (`512Ki`, `10Mi`).
#[derive(Debug, Clone, PartialEq)]
pub struct BodySize(pub Quantity);

impl<'de> Deserialize<'de> for BodySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor(
            "a number of bytes or a string like \"10Mi\"",
        ))
        .map(BodySize)
    }
}

impl JsonSchema for BodySize {
    fn schema_name() -> String {
        "BodySize".to_string()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema_from_json(serde_json::json!({
            "description": "Largest request body: bytes as an integer, or a number with a unit: k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024), e.g. 10Mi. 1 byte to 1Gi; default 10Mi.",
            "default": "10Mi",
            "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 1073741824 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(k|K|M|G|Ki|Mi|Gi)?$" }
            ]
        }))
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor(
            "a number of cores like 0.5 or a string like \"500m\"",
        ))
        .map(Cpu)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor("a number of bytes or a size like 512Mi"))
            .map(Memory)
    }
}

fn schema_from_json(value: serde_json::Value) -> Schema {
    serde_json::from_value(value).unwrap_or(Schema::Bool(true))
}

impl JsonSchema for Cpu {
    fn schema_name() -> String {
        "Cpu".to_string()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema_from_json(serde_json::json!({
            "description": "CPU limit in cores: a number like 0.5 or 2, or a string like \"500m\" (millicores) or \"0.5\". At least 1m, at most 1024 cores, at most 3 decimals.",
            "anyOf": [
                { "type": "number", "exclusiveMinimum": 0, "maximum": 1024 },
                { "type": "string", "pattern": "^([0-9]+m|[0-9]+(\\.[0-9]{1,3})?|\\.[0-9]{1,3})$" }
            ]
        }))
    }
}

impl JsonSchema for Memory {
    fn schema_name() -> String {
        "Memory".to_string()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema_from_json(serde_json::json!({
            "description": "Memory limit: bytes as an integer, or a number with a unit: k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024), e.g. 512Mi. At least 6Mi (Docker's minimum).",
            "anyOf": [
                { "type": "integer", "minimum": 6291456 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(k|K|M|G|T|Ki|Mi|Gi|Ti)?$" }
            ]
        }))
    }
}
