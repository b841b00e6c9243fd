//! Validation: turns a deserialized `raw::App` into the model's `AppSpec`, applying every
//! default and checking every rule that serde's types cannot express (ranges, cross-field
//! rules, name syntax, the nginx injection guard on routes). Problems come back as
//! (field path, message) pairs; `parse` attaches file/line/column. Pure; must not know about
//! YAML text or files.

use super::locate::{fpath, FieldPath};
use super::model::{
    AppSpec, AppType, EnvValue, EnvVar, HealthSpec, HttpScaling, ImagePullPolicy, Probe, Resources,
    Route, RouteProxy, RouteTls, Scaling, ScalingMode,
};
use super::raw;
use super::units;
use super::workload::{self, SpecPolicy};
use std::collections::HashSet;

/// One problem: where (field path) and what to do (message).
pub type Problem = (FieldPath, String);

pub const DEFAULT_INTERVAL_SECONDS: u32 = 5;
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 2;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
pub const DEFAULT_INITIAL_DELAY_SECONDS: u32 = 0;
pub const DEFAULT_MIN_REPLICAS: u32 = 1;
pub const DEFAULT_COOLDOWN_SECONDS: u32 = 60;
pub const DEFAULT_SCALE_OUT_PCT: f64 = 80.0;
pub const DEFAULT_SCALE_IN_PCT: f64 = 30.0;
pub const DEFAULT_WINDOW_SECONDS: u32 = 20;
pub const DEFAULT_DRAIN_SECONDS: u32 = 5;
pub const MAX_REPLICAS: u32 = 1000;

/// Why `name` is not a DNS label, or None when it is one.
pub fn dns_label_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-');
    (!ok).then(|| {
        format!(
            "`{}` is not a valid app name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'",
            name.escape_debug()
        )
    })
}

fn valid_host(host: &str) -> bool {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    !rest.is_empty()
        && host.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn has_space_or_control(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn err(&mut self, at: FieldPath, msg: impl Into<String>) {
        self.problems.push((at, msg.into()));
    }

    /// `value` (or `default` when absent) if it lies in `min..=max`; otherwise a problem and
    /// None.
    fn int(
        &mut self,
        at: FieldPath,
        value: Option<i64>,
        default: u32,
        min: u32,
        max: u32,
    ) -> Option<u32> {
        let Some(v) = value else {
            return Some(default);
        };
        if v < i64::from(min) || v > i64::from(max) {
            self.err(
                at,
                format!("{v} is out of range: use a value from {min} to {max}"),
            );
            return None;
        }
        u32::try_from(v).ok()
    }

    fn port(&mut self, at: FieldPath, value: i64) -> Option<u16> {
        match u16::try_from(value) {
            Ok(p) if p >= 1 => Some(p),
            _ => {
                self.err(at, format!("port {value} is out of range: use 1 to 65535"));
                None
            }
        }
    }

    /// A finite number with `min < value <= max` (`min_inclusive` allows equality).
    fn number(
        &mut self,
        at: FieldPath,
        v: f64,
        min: f64,
        min_inclusive: bool,
        max: f64,
    ) -> Option<f64> {
        let above = if min_inclusive { v >= min } else { v > min };
        if v.is_finite() && above && v <= max {
            return Some(v);
        }
        let low = if min_inclusive {
            "at least"
        } else {
            "greater than"
        };
        self.err(
            at,
            format!("must be {low} {min} and at most {max}, got {v}"),
        );
        None
    }
}

/// Validate and apply defaults under the operator's `policy`.
pub fn validate_with(app: raw::App, policy: &SpecPolicy) -> Result<AppSpec, Vec<Problem>> {
    let mut c = Checker::default();
    let name = app.metadata.name;
    if let Some(msg) = dns_label_problem(&name) {
        c.err(fpath!["metadata", "name"], msg);
    }
    let s = app.spec;
    let app_type = match s.app_type {
        Some(raw::AppType::Worker) => AppType::Worker,
        Some(raw::AppType::Http) | None => AppType::Http,
    };

    check_image(&mut c, &s.image);
    check_command(&mut c, s.command.as_deref());
    let max_replicas = match &s.scaling {
        Some(sc) => sc.max_replicas,
        None => s.replicas.unwrap_or(1),
    };
    let (ports, ports_ok, published) = workload::check_ports(
        &mut c.problems,
        app_type,
        s.ports.as_deref(),
        s.strategy,
        u32::try_from(max_replicas).unwrap_or(0),
    );
    let health = s
        .health
        .as_ref()
        .and_then(|h| check_health(&mut c, app_type, h, &ports, ports_ok));
    let resources = check_resources(&mut c, s.resources.as_ref());
    let replicas = c.int(fpath!["spec", "replicas"], s.replicas, 0, 0, MAX_REPLICAS);
    let replicas = s.replicas.and(replicas);
    let scaling = s
        .scaling
        .as_ref()
        .and_then(|sc| check_scaling(&mut c, app_type, sc));
    if let (Some(r), Some(sc)) = (replicas, &scaling) {
        if r < sc.min_replicas || r > sc.max_replicas {
            c.err(
                fpath!["spec", "replicas"],
                format!(
                    "replicas ({r}) must lie between minReplicas ({}) and maxReplicas ({}): change replicas or the bounds",
                    sc.min_replicas, sc.max_replicas
                ),
            );
        }
    }
    let env = check_env(&mut c, s.env.as_deref());
    let drain = s.termination.as_ref().and_then(|t| t.drain_seconds);
    let drain_seconds = c
        .int(
            fpath!["spec", "termination", "drainSeconds"],
            drain,
            DEFAULT_DRAIN_SECONDS,
            0,
            3600,
        )
        .unwrap_or(DEFAULT_DRAIN_SECONDS);
    let route = check_route(&mut c, app_type, &name, s.route.as_ref());
    let workload = workload::check_workload(&mut c.problems, &s, policy, published);
    if let Some(i) = workload.depends_on.iter().position(|d| *d == name) {
        c.err(
            fpath!["spec", "dependsOn", i],
            format!("`{name}` cannot depend on itself: remove it"),
        );
    }
    let termination =
        workload::check_termination(&mut c.problems, s.termination.as_ref(), drain_seconds);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(AppSpec {
        name,
        app_type,
        image: s.image,
        image_pull_policy: match s.image_pull_policy {
            Some(raw::ImagePullPolicy::Always) => ImagePullPolicy::Always,
            Some(raw::ImagePullPolicy::Never) => ImagePullPolicy::Never,
            Some(raw::ImagePullPolicy::IfNotPresent) | None => ImagePullPolicy::IfNotPresent,
        },
        command: s.command,
        ports,
        health,
        resources,
        replicas,
        scaling,
        env,
        termination,
        route,
        workload,
    })
}

fn check_image(c: &mut Checker, image: &str) {
    if image.is_empty() {
        c.err(
            fpath!["spec", "image"],
            "image must not be empty: set an image reference like `my-app:1.2`",
        );
    } else if has_space_or_control(image) {
        c.err(
            fpath!["spec", "image"],
            format!(
                "image `{}` contains whitespace or control characters: remove them",
                image.escape_debug()
            ),
        );
    } else if image.starts_with('-') {
        c.err(
            fpath!["spec", "image"],
            "image must not start with '-': use an image reference like `my-app:1.2`",
        );
    }
}

fn check_command(c: &mut Checker, command: Option<&[String]>) {
    let Some(cmd) = command else { return };
    if cmd.is_empty() {
        c.err(
            fpath!["spec", "command"],
            "command must not be empty: remove it to use the image's own entrypoint",
        );
    }
    for (i, arg) in cmd.iter().enumerate() {
        if arg.contains('\0') {
            c.err(
                fpath!["spec", "command", i],
                "argument contains a NUL character: remove it",
            );
        }
    }
}

fn check_probe_port(
    c: &mut Checker,
    at: FieldPath,
    port: i64,
    ports: &[u16],
    ports_ok: bool,
) -> u16 {
    let Some(p) = c.port(at.clone(), port) else {
        return 0;
    };
    if ports_ok && !ports.is_empty() && !ports.contains(&p) {
        let listed: Vec<String> = ports.iter().map(u16::to_string).collect();
        c.err(
            at,
            format!(
                "probe port {p} is not one of the app's ports ({}): probe a listed port",
                listed.join(", ")
            ),
        );
    }
    p
}

fn check_health(
    c: &mut Checker,
    app_type: AppType,
    h: &raw::Health,
    ports: &[u16],
    ports_ok: bool,
) -> Option<HealthSpec> {
    if app_type == AppType::Worker {
        c.err(
            fpath!["spec", "health"],
            "workers have no ports to probe: remove `health` or set `type: http`",
        );
        return None;
    }
    let probe = match (&h.http_get, &h.tcp_socket) {
        (Some(g), None) => {
            let port = check_probe_port(
                c,
                fpath!["spec", "health", "httpGet", "port"],
                g.port,
                ports,
                ports_ok,
            );
            let at = fpath!["spec", "health", "httpGet", "path"];
            if !g.path.starts_with('/') {
                c.err(
                    at,
                    format!("probe path `{}` must start with '/'", g.path.escape_debug()),
                );
            } else if has_space_or_control(&g.path) || g.path.len() > 1024 {
                c.err(at, "probe path must be at most 1024 characters without whitespace or control characters: use a plain URL path");
            }
            Some(Probe::HttpGet {
                path: g.path.clone(),
                port,
            })
        }
        (None, Some(t)) => {
            let port = check_probe_port(
                c,
                fpath!["spec", "health", "tcpSocket", "port"],
                t.port,
                ports,
                ports_ok,
            );
            Some(Probe::TcpSocket { port })
        }
        (None, None) => {
            c.err(
                fpath!["spec", "health"],
                "set exactly one probe: `httpGet: {path, port}` or `tcpSocket: {port}`",
            );
            None
        }
        (Some(_), Some(_)) => {
            c.err(
                fpath!["spec", "health", "tcpSocket"],
                "set only one probe: remove either `httpGet` or `tcpSocket`",
            );
            None
        }
    };
    let interval = c.int(
        fpath!["spec", "health", "intervalSeconds"],
        h.interval_seconds,
        DEFAULT_INTERVAL_SECONDS,
        1,
        3600,
    );
    // The default timeout never exceeds the interval, so `intervalSeconds: 1` alone is valid.
    let default_timeout = DEFAULT_TIMEOUT_SECONDS.min(interval.unwrap_or(DEFAULT_TIMEOUT_SECONDS));
    let timeout = c.int(
        fpath!["spec", "health", "timeoutSeconds"],
        h.timeout_seconds,
        default_timeout,
        1,
        3600,
    );
    if let (Some(i), Some(t)) = (interval, timeout) {
        if t > i {
            c.err(
                fpath!["spec", "health", "timeoutSeconds"],
                format!("timeoutSeconds ({t}) must not exceed intervalSeconds ({i}): lower it or raise intervalSeconds"),
            );
        }
    }
    let failure = c.int(
        fpath!["spec", "health", "failureThreshold"],
        h.failure_threshold,
        DEFAULT_FAILURE_THRESHOLD,
        1,
        100,
    );
    let success = c.int(
        fpath!["spec", "health", "successThreshold"],
        h.success_threshold,
        DEFAULT_SUCCESS_THRESHOLD,
        1,
        100,
    );
    let delay = c.int(
        fpath!["spec", "health", "initialDelaySeconds"],
        h.initial_delay_seconds,
        DEFAULT_INITIAL_DELAY_SECONDS,
        0,
        3600,
    );
    Some(HealthSpec {
        probe: probe?,
        interval_seconds: interval?,
        timeout_seconds: timeout?,
        failure_threshold: failure?,
        success_threshold: success?,
        initial_delay_seconds: delay?,
    })
}

fn check_resources(c: &mut Checker, r: Option<&raw::Resources>) -> Resources {
    let Some(r) = r else {
        return Resources::default();
    };
    let cpu_millis = r.cpu.as_ref().and_then(|q| {
        units::cpu_millis(&q.0)
            .map_err(|m| c.err(fpath!["spec", "resources", "cpu"], m))
            .ok()
    });
    let memory_bytes = r.memory.as_ref().and_then(|q| {
        units::memory_bytes(&q.0)
            .map_err(|m| c.err(fpath!["spec", "resources", "memory"], m))
            .ok()
    });
    Resources {
        cpu_millis,
        memory_bytes,
    }
}

fn check_scaling(c: &mut Checker, app_type: AppType, sc: &raw::Scaling) -> Option<Scaling> {
    let min = c.int(
        fpath!["spec", "scaling", "minReplicas"],
        sc.min_replicas,
        DEFAULT_MIN_REPLICAS,
        0,
        MAX_REPLICAS,
    );
    let max = c.int(
        fpath!["spec", "scaling", "maxReplicas"],
        Some(sc.max_replicas),
        1,
        1,
        MAX_REPLICAS,
    );
    if let (Some(lo), Some(hi)) = (min, max) {
        if hi < lo {
            c.err(
                fpath!["spec", "scaling", "maxReplicas"],
                format!("maxReplicas ({hi}) must be at least minReplicas ({lo}): raise maxReplicas or lower minReplicas"),
            );
        }
    }
    let policy = sc.policy.as_ref();
    let mode = match policy.and_then(|p| p.mode) {
        Some(raw::Mode::Manual) => ScalingMode::Manual,
        Some(raw::Mode::Auto) | None => ScalingMode::Auto,
    };
    let cooldown = c.int(
        fpath!["spec", "scaling", "policy", "cooldownSeconds"],
        policy.and_then(|p| p.cooldown_seconds),
        DEFAULT_COOLDOWN_SECONDS,
        0,
        86400,
    );
    let http = match policy.and_then(|p| p.http.as_ref()) {
        None => Some(None),
        Some(_) if app_type == AppType::Worker => {
            c.err(
                fpath!["spec", "scaling", "policy", "http"],
                "workers receive no http traffic to scale on: remove `http` or set `type: http`",
            );
            None
        }
        Some(h) => check_http_policy(c, h).map(Some),
    };
    Some(Scaling {
        min_replicas: min?,
        max_replicas: max?,
        mode,
        cooldown_seconds: cooldown?,
        http: http?,
    })
}

fn check_http_policy(c: &mut Checker, h: &raw::HttpPolicy) -> Option<HttpScaling> {
    let base = fpath!["spec", "scaling", "policy", "http"];
    let target = c.number(
        base.clone().push("targetRPSPerReplica"),
        h.target_rps_per_replica,
        0.0,
        false,
        1e9,
    );
    let latency = c.number(
        base.clone().push("maxP95LatencyMs"),
        h.max_p95_latency_ms.unwrap_or(0.0),
        0.0,
        true,
        3.6e6,
    );
    let out = c.number(
        base.clone().push("scaleOutThresholdPct"),
        h.scale_out_threshold_pct.unwrap_or(DEFAULT_SCALE_OUT_PCT),
        0.0,
        false,
        100.0,
    );
    let inn = c.number(
        base.clone().push("scaleInThresholdPct"),
        h.scale_in_threshold_pct.unwrap_or(DEFAULT_SCALE_IN_PCT),
        0.0,
        false,
        100.0,
    );
    if let (Some(o), Some(i)) = (out, inn) {
        if i >= o {
            c.err(
                base.clone().push("scaleInThresholdPct"),
                format!(
                    "scaleInThresholdPct ({i}) must be below scaleOutThresholdPct ({o}): lower it"
                ),
            );
        }
    }
    let window = c.int(
        base.push("windowSeconds"),
        h.window_seconds,
        DEFAULT_WINDOW_SECONDS,
        1,
        3600,
    );
    Some(HttpScaling {
        target_rps_per_replica: target?,
        max_p95_latency_ms: latency?,
        scale_out_threshold_pct: out?,
        scale_in_threshold_pct: inn?,
        window_seconds: window?,
    })
}

fn check_env(c: &mut Checker, env: Option<&[raw::Env]>) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, e) in env.unwrap_or_default().iter().enumerate() {
        if !valid_env_name(&e.name) {
            c.err(
                fpath!["spec", "env", i, "name"],
                format!(
                    "`{}` is not a valid variable name: use letters, digits and '_', not starting with a digit",
                    e.name.escape_debug()
                ),
            );
        } else if !seen.insert(&e.name) {
            c.err(
                fpath!["spec", "env", i, "name"],
                format!("variable `{}` is set twice: keep one entry", e.name),
            );
        }
        let value = match (&e.value, e.value_from) {
            (Some(v), None) => {
                if v.contains('\0') {
                    c.err(
                        fpath!["spec", "env", i, "value"],
                        "value contains a NUL character: remove it",
                    );
                }
                EnvValue::Literal(v.clone())
            }
            (None, Some(raw::ValueFrom::Sdk)) => EnvValue::FromHost,
            (None, None) => {
                c.err(
                    fpath!["spec", "env", i],
                    "set exactly one of `value` or `valueFrom: sdk`",
                );
                continue;
            }
            (Some(_), Some(_)) => {
                c.err(
                    fpath!["spec", "env", i, "valueFrom"],
                    "set only one of `value` or `valueFrom`: remove one",
                );
                continue;
            }
        };
        out.push(EnvVar {
            name: e.name.clone(),
            value,
        });
    }
    out
}

fn check_route(
    c: &mut Checker,
    app_type: AppType,
    name: &str,
    r: Option<&raw::Route>,
) -> Option<Route> {
    if app_type == AppType::Worker {
        if r.is_some() {
            c.err(
                fpath!["spec", "route"],
                "workers are not routed: remove `route` or set `type: http`",
            );
        }
        return None;
    }
    let Some(r) = r else {
        return Some(Route {
            host: None,
            path: format!("/{name}"),
            strip_prefix: true,
            proxy: RouteProxy::default(),
            tls: None,
        });
    };
    let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        if !valid_host(h) {
            c.err(
                fpath!["spec", "route", "host"],
                format!(
                    "`{}` is not a valid host name: use a DNS name like app.example.com, optionally starting with `*.`",
                    h.escape_debug()
                ),
            );
        }
    }
    let path = match (&r.path, &host) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => "/".to_string(),
        (None, None) => format!("/{name}"),
    };
    let at = fpath!["spec", "route", "path"];
    if !path.starts_with('/') {
        c.err(
            at,
            format!("route path `{}` must start with '/'", path.escape_debug()),
        );
    } else if let Some(bad) = path
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '~' | '/' | '-')))
    {
        c.err(
            at,
            format!(
                "route path contains `{}`: use only letters, digits and . _ ~ / - (the path is written into the nginx config)",
                bad.escape_debug()
            ),
        );
    } else if path.len() > 256 {
        c.err(at, "route path is longer than 256 characters: shorten it");
    } else if path.contains("//") || path.split('/').any(|seg| seg == "." || seg == "..") {
        c.err(
            at,
            "route path must not contain empty, `.` or `..` segments: write it in its plain form like /api/v1",
        );
    }
    let tls = check_route_tls(c, r, host.is_some());
    Some(Route {
        host,
        path,
        strip_prefix: r.strip_prefix.unwrap_or(true),
        proxy: check_route_proxy(c, r),
        tls,
    })
}

/// `route.tls`: host routes only; both paths absolute and normalized (the operator's
/// `--allow-tls-dir` prefixes are checked against them by the reconcile shell).
fn check_route_tls(c: &mut Checker, r: &raw::Route, has_host: bool) -> Option<RouteTls> {
    let tls = r.tls.as_ref()?;
    if !has_host {
        c.err(
            fpath!["spec", "route", "tls"],
            "tls needs a host route: set `route.host` (a path-only route is served on any host, so no certificate can match it)",
        );
        return None;
    }
    let mut file = |key: &'static str, value: &str| {
        let at = fpath!["spec", "route", "tls", key];
        match tls_path(value) {
            Ok(path) => Some(path),
            Err(m) => {
                c.err(at, m);
                None
            }
        }
    };
    let cert_file = file("certFile", &tls.cert_file);
    let key_file = file("keyFile", &tls.key_file);
    Some(RouteTls {
        cert_file: cert_file?,
        key_file: key_file?,
        redirect_http: tls.redirect_http.unwrap_or(false),
        fingerprint: String::new(),
    })
}

/// A TLS file path: absolute, normalized (no empty, `.` or `..` segments), and only
/// characters safe in the nginx config.
fn tls_path(value: &str) -> Result<std::path::PathBuf, String> {
    if !value.starts_with('/') {
        return Err(format!(
            "`{}` is not an absolute path: write the full host path, e.g. /etc/berth/tls/app.pem",
            value.escape_debug()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '/' | '+' | '@')))
    {
        return Err(format!(
            "the path contains `{}`: use only letters, digits and . _ - + @ / (it is written into the nginx config)",
            bad.escape_debug()
        ));
    }
    if value.len() > 1024
        || value.ends_with('/')
        || value[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(
            "the path must be normalized (no empty, `.` or `..` segments, no trailing /): write it in its plain form".to_string(),
        );
    }
    Ok(std::path::PathBuf::from(value))
}

/// `route.maxBodySize`, `route.timeouts`, `route.headers`.
fn check_route_proxy(c: &mut Checker, r: &raw::Route) -> RouteProxy {
    let defaults = RouteProxy::default();
    let max_body_bytes = match &r.max_body_size {
        None => defaults.max_body_bytes,
        Some(size) => units::body_size_bytes(&size.0)
            .map_err(|m| c.err(fpath!["spec", "route", "maxBodySize"], m))
            .unwrap_or(defaults.max_body_bytes),
    };
    let t = r.timeouts.as_ref();
    let mut timeout = |key: &'static str, value: Option<i64>, default: u32| {
        c.int(
            fpath!["spec", "route", "timeouts", key],
            value,
            default,
            1,
            3600,
        )
        .unwrap_or(default)
    };
    let connect_timeout_seconds = timeout(
        "connect",
        t.and_then(|t| t.connect),
        defaults.connect_timeout_seconds,
    );
    let read_timeout_seconds = timeout(
        "read",
        t.and_then(|t| t.read),
        defaults.read_timeout_seconds,
    );
    let send_timeout_seconds = timeout(
        "send",
        t.and_then(|t| t.send),
        defaults.send_timeout_seconds,
    );
    let mut headers = Vec::new();
    for (name, value) in r.headers.iter().flatten() {
        let at = fpath!["spec", "route", "headers", name.as_str()];
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            c.err(
                at,
                format!(
                    "header name `{}` must be 1 to 64 letters, digits or `-`",
                    name.escape_debug()
                ),
            );
        } else if let Some(bad) = value.chars().find(|ch| {
            !(' '..='~').contains(ch) || matches!(ch, '"' | '\\' | '$' | '{' | '}' | ';')
        }) {
            c.err(
                at,
                format!(
                    "header value contains `{}`: use printable ASCII without \" \\ $ {{ }} ; (the value is written into the nginx config)",
                    bad.escape_debug()
                ),
            );
        } else if value.len() > 1024 {
            c.err(
                at,
                "header value is longer than 1024 characters: shorten it",
            );
        } else {
            headers.push((name.clone(), value.clone()));
        }
    }
    RouteProxy {
        max_body_bytes,
        connect_timeout_seconds,
        read_timeout_seconds,
        send_timeout_seconds,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web", "my-app", "a1", "a-1-b", &"a".repeat(63)] {
            assert_eq!(dns_label_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "a-",
            "My",
            "a_b",
            "a.b",
            "../x",
            "a/b",
            " a",
            "é",
            &"a".repeat(64),
        ] {
            assert!(dns_label_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "api.localhost",
            "app.example.com",
            "*.example.com",
            "a-b.c1.io",
            "1.2.3.4",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "", "*.", "a..b", "-a.com", "a-.com", "a b", "a;b", "a.com.", "*", "a.*.com",
            "a_b.com", "x{y}",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "a_b", "NODE_ENV", "X1"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É"] {
            assert!(!valid_env_name(bad), "{bad:?}");
        }
    }
}
