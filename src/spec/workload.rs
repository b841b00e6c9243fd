//! Validation of the workload options (issue 12): ports with fixed host ports, volumes
//! (named, hostPath under the operator's `--allow-host-path` prefixes, tmpfs), entrypoint,
//! workingDir, user, labels, logging, strategy, dependsOn, the stop signal and grace period.
//! Pure: (field path, message) problems like `validate`; the operator's policy is a
//! parameter. Cross-app rules (unknown dependencies, cycles, one host port claimed twice)
//! live in `parse::load_source`, which sees every app.

use super::locate::{fpath, FieldPath};
use super::model::{
    AppType, Logging, Mount, MountSource, Protocol, PublishedPort, Strategy, Termination, Workload,
};
use super::raw;
use super::units;
use super::validate::{dns_label_problem, Problem};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

/// What the operator allows specs to reach on the host (specs come from git: untrusted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecPolicy {
    /// `--allow-host-path` prefixes (absolute, normalized). Empty: no hostPath at all.
    pub allow_host_paths: Vec<String>,
    /// `--allow-registry` hosts (`registry.example.com`, `localhost:5000`, `docker.io`) an
    /// image may come from. Empty: any registry.
    pub allow_registries: Vec<String>,
}

/// The registry host of an image reference, as Docker resolves it: the first path
/// component when it has a `.` or a `:` or is `localhost`, else Docker Hub (`docker.io`).
pub fn image_registry(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// Why `image` may not be used under `policy` (its registry is not allowed), or None.
pub fn registry_problem(image: &str, policy: &SpecPolicy) -> Option<String> {
    if policy.allow_registries.is_empty() {
        return None;
    }
    let registry = image_registry(image);
    let allowed = |r: &String| {
        r.eq_ignore_ascii_case(&registry)
            || (is_docker_hub_name(r) && is_docker_hub_name(&registry))
    };
    if policy.allow_registries.iter().any(allowed) {
        return None;
    }
    Some(format!(
        "image `{image}` comes from registry `{registry}`, which this berth may not pull from (--allow-registry {}): use an image from an allowed registry, or have the operator allow `{registry}`",
        policy.allow_registries.join(", ")
    ))
}

fn is_docker_hub_name(registry: &str) -> bool {
    matches!(
        registry.to_ascii_lowercase().as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Docker socket paths a hostPath may never reach (neither the socket nor a directory
/// holding it), whatever the operator allowed.
pub const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// Why `path` is not an absolute, normalized path (no `.`/`..`/empty segments, no trailing
/// `/` except for `/` itself, no control characters), or None.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!(
            "`{}` is not absolute: start it with '/'",
            path.escape_debug()
        ));
    }
    if path.chars().any(char::is_control) || path.len() > 4096 {
        return Some("path must be at most 4096 characters without control characters".into());
    }
    if path != "/"
        && (path.ends_with('/')
            || path[1..]
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == ".."))
    {
        return Some(format!(
            "`{}` is not normalized: write it without `.`, `..`, `//` or a trailing '/'",
            path.escape_debug()
        ));
    }
    None
}

/// True when `path` is `prefix` or lies below it (both normalized).
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The stop signals a spec may name (what `docker stop` and compose's `stop_signal` take).
const STOP_SIGNALS: [&str; 9] = [
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGWINCH", "SIGPWR",
];

/// The termination block's extras (grace period, stop signal) next to `drain_seconds`.
pub(super) fn check_termination(
    problems: &mut Vec<Problem>,
    t: Option<&raw::Termination>,
    drain_seconds: u32,
) -> Termination {
    let grace = t.and_then(|t| t.grace_period_seconds);
    let grace_period_seconds = grace.and_then(|g| match u32::try_from(g) {
        Ok(g) if g <= 3600 => Some(g),
        _ => {
            problems.push((
                fpath!["spec", "termination", "gracePeriodSeconds"],
                format!("{g} is out of range: use a value from 0 to 3600"),
            ));
            None
        }
    });
    let stop_signal = t.and_then(|t| t.stop_signal.clone());
    if let Some(sig) = &stop_signal {
        if !STOP_SIGNALS.contains(&sig.as_str()) {
            problems.push((
                fpath!["spec", "termination", "stopSignal"],
                format!(
                    "`{}` is not a stop signal berth knows: use one of {}",
                    sig.escape_debug(),
                    STOP_SIGNALS.join(", ")
                ),
            ));
        }
    }
    Termination {
        drain_seconds,
        grace_period_seconds,
        stop_signal,
    }
}

/// Fills `spec.workload` (everything but the ports) and the termination extras.
pub(super) fn check_workload(
    problems: &mut Vec<Problem>,
    s: &raw::Spec,
    policy: &SpecPolicy,
    published: Vec<PublishedPort>,
) -> Workload {
    let mut err = |at: FieldPath, msg: String| problems.push((at, msg));
    let entrypoint = s.entrypoint.clone();
    if let Some(list) = &entrypoint {
        if list.is_empty() {
            err(
                fpath!["spec", "entrypoint"],
                "entrypoint must not be empty: remove it to use the image's own".into(),
            );
        }
        for (i, arg) in list.iter().enumerate() {
            if arg.contains('\0') {
                err(
                    fpath!["spec", "entrypoint", i],
                    "argument contains a NUL character: remove it".into(),
                );
            }
        }
    }
    if let Some(dir) = &s.working_dir {
        if let Some(m) = path_problem(dir) {
            err(fpath!["spec", "workingDir"], format!("workingDir {m}"));
        }
    }
    if let Some(user) = &s.user {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && !p.starts_with('-')
        };
        let mut parts = user.splitn(2, ':');
        let ok = parts.next().is_some_and(part_ok) && parts.next().is_none_or(part_ok);
        if !ok {
            err(
                fpath!["spec", "user"],
                format!(
                    "`{}` is not a user: write `uid`, `uid:gid`, `name` or `name:group`",
                    user.escape_debug()
                ),
            );
        }
    }
    let mut volumes = Vec::new();
    let mut paths = HashSet::new();
    for (i, v) in s.volumes.as_deref().unwrap_or_default().iter().enumerate() {
        let at = fpath!["spec", "volumes", i];
        let mount_ok = match path_problem(&v.mount_path) {
            Some(m) => {
                err(at.clone().push("mountPath"), format!("mountPath {m}"));
                false
            }
            None if v.mount_path == "/" => {
                err(
                    at.clone().push("mountPath"),
                    "mountPath must not be `/`: mount below it".into(),
                );
                false
            }
            None => true,
        };
        if mount_ok && !paths.insert(v.mount_path.clone()) {
            err(
                at.clone().push("mountPath"),
                format!(
                    "{} is mounted twice: give each volume its own mountPath",
                    v.mount_path
                ),
            );
        }
        let source = match (&v.name, &v.host_path, v.tmpfs) {
            (Some(name), None, None) => {
                if let Some(m) = dns_label_problem(name) {
                    let m = m.replace("app name", "volume name");
                    err(at.clone().push("name"), m);
                }
                Some(MountSource::Named(name.clone()))
            }
            (None, Some(host), None) => {
                check_host_path(&mut err, at.clone().push("hostPath"), host, policy);
                Some(MountSource::HostPath(host.clone()))
            }
            (None, None, Some(true)) => Some(MountSource::Tmpfs),
            (None, None, Some(false)) => {
                err(
                    at.clone().push("tmpfs"),
                    "tmpfs: false mounts nothing: write `tmpfs: true` or use `name`/`hostPath`"
                        .into(),
                );
                None
            }
            _ => {
                err(
                    at.clone(),
                    "set exactly one of `name` (named volume), `hostPath` or `tmpfs: true`".into(),
                );
                None
            }
        };
        if let Some(source) = source {
            volumes.push(Mount {
                source,
                mount_path: v.mount_path.clone(),
                read_only: v.read_only.unwrap_or(false),
            });
        }
    }
    let mut depends_on: Vec<String> = Vec::new();
    for (i, dep) in s
        .depends_on
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = fpath!["spec", "dependsOn", i];
        if let Some(m) = dns_label_problem(dep) {
            err(at, m);
        } else if depends_on.contains(dep) {
            err(
                at,
                format!("`{dep}` is listed twice: list each dependency once"),
            );
        } else {
            depends_on.push(dep.clone());
        }
    }
    let strategy = match s.strategy {
        Some(raw::Strategy::Recreate) => Strategy::Recreate,
        Some(raw::Strategy::Rolling) | None => Strategy::Rolling,
    };
    let mut labels = BTreeMap::new();
    for (key, value) in s.labels.as_ref().into_iter().flatten() {
        let at = fpath!["spec", "labels", key.as_str()];
        if key.starts_with("berth.") || key == "berth" {
            err(
                at,
                format!("label `{}` is reserved: berth.* labels are berth's own ownership labels; rename it", key.escape_debug()),
            );
        } else if key.is_empty()
            || key.len() > 256
            || key.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            err(
                at,
                "label keys are 1 to 256 characters without whitespace or control characters"
                    .into(),
            );
        } else if value.contains('\0') || value.len() > 4096 {
            err(
                at,
                "label values are at most 4096 characters without NUL".into(),
            );
        } else {
            labels.insert(key.clone(), value.clone());
        }
    }
    let mut logging = Logging::default();
    if let Some(l) = &s.logging {
        if let Some(q) = &l.max_size {
            match units::log_size_bytes(&q.0) {
                Ok(b) => logging.max_size_bytes = b,
                Err(m) => err(fpath!["spec", "logging", "maxSize"], m),
            }
        }
        if let Some(n) = l.max_files {
            match u32::try_from(n) {
                Ok(n) if (1..=100).contains(&n) => logging.max_files = n,
                _ => err(
                    fpath!["spec", "logging", "maxFiles"],
                    format!("{n} is out of range: use a value from 1 to 100"),
                ),
            }
        }
    }
    Workload {
        entrypoint,
        working_dir: s.working_dir.clone(),
        user: s.user.clone(),
        volumes,
        published,
        depends_on,
        strategy,
        labels,
        logging,
        placement: super::placement::check_placement(&mut err, s.placement.as_ref()),
        max_replicas_per_node: s
            .max_replicas_per_node
            .and_then(|n| match u32::try_from(n) {
                Ok(n) if (1..=1000).contains(&n) => Some(n),
                _ => {
                    err(
                        fpath!["spec", "maxReplicasPerNode"],
                        format!("{n} is out of range: use a value from 1 to 1000"),
                    );
                    None
                }
            }),
    }
}

fn check_host_path(
    err: &mut impl FnMut(FieldPath, String),
    at: FieldPath,
    host: &str,
    policy: &SpecPolicy,
) {
    if let Some(m) = path_problem(host) {
        err(at, format!("hostPath {m}"));
        return;
    }
    if let Some(sock) = DOCKER_SOCKETS.iter().find(|s| under(s, host)) {
        err(
            at,
            format!("hostPath {host} would expose the Docker socket ({sock}), which controls the whole host: berth never mounts it"),
        );
        return;
    }
    if !policy.allow_host_paths.iter().any(|p| under(host, p)) {
        let allowed = if policy.allow_host_paths.is_empty() {
            "no prefix is allowed".to_string()
        } else {
            format!("allowed: {}", policy.allow_host_paths.join(", "))
        };
        err(
            at,
            format!("hostPath {host} is not under an --allow-host-path prefix ({allowed}): start berth with --allow-host-path PREFIX for a directory it may mount, or use a named volume"),
        );
    }
}

/// The routed container ports (tcp, http apps only), whether every listed port was valid,
/// and the ports published on a fixed host address.
pub(super) fn check_ports(
    problems: &mut Vec<Problem>,
    app_type: AppType,
    ports: Option<&[raw::Port]>,
    strategy: Option<raw::Strategy>,
    max_replicas: u32,
) -> (Vec<u16>, bool, Vec<PublishedPort>) {
    let mut err = |at: FieldPath, msg: String| problems.push((at, msg));
    let list = ports.unwrap_or_default();
    let mut routed = Vec::new();
    let mut published: Vec<PublishedPort> = Vec::new();
    let mut seen = HashSet::new();
    let mut ok = true;
    let port_of = |v: i64| u16::try_from(v).ok().filter(|p| *p >= 1);
    for (i, p) in list.iter().enumerate() {
        let at = fpath!["spec", "ports", i];
        let protocol = match p.protocol {
            Some(raw::Protocol::Udp) => Protocol::Udp,
            _ => Protocol::Tcp,
        };
        let Some(port) = port_of(p.container_port) else {
            err(
                at.push("containerPort"),
                format!("port {} is out of range: use 1 to 65535", p.container_port),
            );
            ok = false;
            continue;
        };
        if !seen.insert((port, protocol)) {
            err(
                at.push("containerPort"),
                format!(
                    "port {port}/{} is listed twice: list each port once",
                    protocol.as_str()
                ),
            );
            ok = false;
            continue;
        }
        match p.host_port {
            Some(h) => {
                let Some(host_port) = port_of(h) else {
                    err(
                        at.push("hostPort"),
                        format!("port {h} is out of range: use 1 to 65535"),
                    );
                    ok = false;
                    continue;
                };
                let host_ip = p.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
                if host_ip.parse::<IpAddr>().is_err() {
                    err(
                        at.clone().push("hostIP"),
                        format!(
                            "`{}` is not an IP address: write one like 127.0.0.1 or 0.0.0.0",
                            host_ip.escape_debug()
                        ),
                    );
                }
                if strategy != Some(raw::Strategy::Recreate) {
                    err(
                        at.clone().push("hostPort"),
                        format!("hostPort {host_port} with strategy rolling would bind the port twice during a rollout (the new replica starts before the old one stops): set `strategy: recreate`"),
                    );
                } else if max_replicas > 1 {
                    err(
                        at.clone().push("hostPort"),
                        format!("hostPort {host_port} can be bound by one replica only, but this app may run {max_replicas}: use one replica or drop hostPort"),
                    );
                }
                if published.iter().any(|q| {
                    q.host_port == host_port && q.host_ip == host_ip && q.protocol == protocol
                }) {
                    err(
                        at.clone().push("hostPort"),
                        format!("{host_ip}:{host_port}/{} is published twice: publish each host port once", protocol.as_str()),
                    );
                }
                published.push(PublishedPort {
                    container_port: port,
                    host_port,
                    host_ip,
                    protocol,
                });
            }
            None => {
                if p.host_ip.is_some() {
                    err(
                        at.clone().push("hostIP"),
                        "hostIP needs a hostPort: add `hostPort` or remove `hostIP`".into(),
                    );
                }
                if protocol == Protocol::Udp {
                    err(
                        at.clone().push("protocol"),
                        "udp ports are not routed through nginx: publish them with `hostPort`"
                            .into(),
                    );
                    ok = false;
                    continue;
                }
                if app_type == AppType::Worker {
                    err(
                        at.clone().push("containerPort"),
                        "workers take no traffic through berth's proxy: publish this port with `hostPort` (and `strategy: recreate`) or remove it".into(),
                    );
                    ok = false;
                    continue;
                }
            }
        }
        if app_type == AppType::Http && protocol == Protocol::Tcp {
            routed.push(port);
        }
    }
    if app_type == AppType::Http && routed.is_empty() && ok {
        err(
            fpath!["spec", "ports"],
            "http apps need at least one tcp port: add `ports: [{containerPort: 8080}]` or set `type: worker`".into(),
        );
    }
    (routed, ok, published)
}
