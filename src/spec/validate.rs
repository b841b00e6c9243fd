//! Validation: turns a deserialized `raw::App` into the model's `AppSpec`, applying every
//! default and checking every rule that serde's types cannot express (ranges, cross-field
//! rules, name syntax; routes and their nginx injection guard in `validate/route.rs`).
//! Problems come back as (field path, message) pairs; `parse` attaches file/line/column.
//! Pure; must not know about YAML text or files.

use super::locate::{fpath, FieldPath};
use super::model::{
    AppSpec, AppType, EnvValue, EnvVar, HealthSpec, HttpScaling, ImagePullPolicy, Probe, Resources,
    Scaling, ScalingMode,
};
use super::raw;
use super::units;
use super::workload::{self, SpecPolicy};
use std::collections::HashSet;

mod route;
use route::check_route;

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

    check_image(&mut c, &s.image, policy);
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

fn check_image(c: &mut Checker, image: &str, policy: &SpecPolicy) {
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
    } else if let Some(problem) = workload::registry_problem(image, policy) {
        c.err(fpath!["spec", "image"], problem);
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
    fn env_names() {
        for ok in ["A", "_", "a_b", "NODE_ENV", "X1"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É"] {
            assert!(!valid_env_name(bad), "{bad:?}");
        }
    }
}
