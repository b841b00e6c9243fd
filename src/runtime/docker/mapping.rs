//! Pure mapping between bollard's types and berth's: the create body for a
//! [`ContainerRequest`] (labels forced, limits, restart policy, loopback port bindings,
//! init), the ownership rule, and list/inspect answers -> [`ObservedContainer`]. No I/O, no
//! clock, no engine calls: everything here is unit-tested without Docker.
//!
//! Must not touch: the engine (the other files of `docker/` call it); env values only go into
//! the create body and are never logged.

use crate::runtime::{
    ContainerRequest, ContainerState, ObservedContainer, LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED,
    LABEL_PORT, LABEL_REVISION, LABEL_SPEC_HASH,
};
use bollard::container::{Config, NetworkingConfig};
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, EndpointSettings, HostConfig, HostConfigLogConfig,
    Mount, PortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;

/// How a CPU limit is expressed on this engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CpuLimit {
    /// Hard cap: `NanoCpus` = millis × 10⁶ (CFS quota). Works on this host (cgroup v1).
    Nano(i64),
    /// Relative weight: `CpuShares` = millis × 1024 / 1000 (min 2). Fallback when the engine
    /// refuses `NanoCpus` because the kernel has no CFS bandwidth control.
    Shares(i64),
    None,
}

impl CpuLimit {
    /// The limit for `cpu_millis`: a NanoCpus cap, or shares once the engine refused caps.
    pub(super) fn for_millis(cpu_millis: Option<u32>, cfs_refused: bool) -> CpuLimit {
        match cpu_millis {
            None | Some(0) => CpuLimit::None,
            Some(m) if cfs_refused => CpuLimit::Shares(shares(m)),
            Some(m) => CpuLimit::Nano(i64::from(m) * 1_000_000),
        }
    }
}

/// Ownership rule shared by observe, the inspect checks and the network repair: berth's
/// label, and exactly this runtime's instance (none when it has none).
pub(super) fn owns(labels: Option<&HashMap<String, String>>, instance: Option<&str>) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && labels.get(LABEL_INSTANCE).map(String::as_str) == instance
}

/// The labels a container is created with: the request's, plus `berth.managed=true`, the
/// runtime's instance (or no instance label at all when it has none, so berth owns it) and
/// `berth.port` (the first port) unless the request sets it.
pub(super) fn create_labels(
    request: &ContainerRequest,
    instance: Option<&str>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = request
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    match instance {
        Some(instance) => {
            labels.insert(LABEL_INSTANCE.to_string(), instance.to_string());
        }
        None => {
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

pub(super) fn shares(cpu_millis: u32) -> i64 {
    (i64::from(cpu_millis) * 1024 / 1000).max(2)
}

pub(super) fn is_cfs_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("nanocpus") && (m.contains("cfs") || m.contains("cgroup is not mounted"))
}

pub(super) fn is_cpu_range_refusal(message: &str) -> bool {
    message.to_ascii_lowercase().contains("range of cpus")
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The bollard config for a request (no I/O; env values only go into the request body).
pub(super) fn container_config(
    request: &ContainerRequest,
    labels: HashMap<String, String>,
    cpu: CpuLimit,
    init: bool,
    mounts: Vec<Mount>,
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
    let options = &request.options;
    for p in &options.host_ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.insert(key.clone(), HashMap::new());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let log_config = options.log_rotation.map(|r| HostConfigLogConfig {
        typ: Some("json-file".to_string()),
        config: Some(HashMap::from([
            ("max-size".to_string(), r.max_size_bytes.to_string()),
            ("max-file".to_string(), r.max_files.to_string()),
        ])),
    });
    let networking_config = match (&request.network, options.aliases.is_empty()) {
        (Some(network), false) => Some(NetworkingConfig {
            endpoints_config: HashMap::from([(
                network.clone(),
                EndpointSettings {
                    aliases: Some(options.aliases.clone()),
                    ..Default::default()
                },
            )]),
        }),
        _ => None,
    };
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
        mounts: (!mounts.is_empty()).then_some(mounts),
        log_config,
        ..Default::default()
    };
    Config {
        image: Some(request.image.clone()),
        cmd: request.command.clone(),
        entrypoint: options.entrypoint.clone(),
        working_dir: options.working_dir.clone(),
        user: options.user.clone(),
        stop_signal: options.stop_signal.clone(),
        networking_config,
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
pub(super) fn observed_from_summary(
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
        image_id: summary.image_id.unwrap_or_default(),
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
pub(super) fn observed_from_inspect(info: ContainerInspectResponse) -> ObservedContainer {
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
        image_id: info.image.unwrap_or_default(),
        spec_hash: label(&labels, LABEL_SPEC_HASH),
        revision: label(&labels, LABEL_REVISION),
        state,
        host_port: pick_host_port(&published, primary_port(&labels)),
        published,
        created: info.created.as_deref().and_then(parse_rfc3339).unwrap_or(0),
        id,
    }
}

/// The process state an inspect answer reports.
pub(super) fn inspect_state(info: &ContainerInspectResponse) -> ContainerState {
    info.state
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .map(|s| ContainerState::parse(s.as_ref()))
        .unwrap_or(ContainerState::Unknown)
}

/// Unix seconds from Docker's RFC 3339 timestamps ("2024-05-07T21:09:36.123456789Z").
pub(super) fn parse_rfc3339(s: &str) -> Option<i64> {
    rfc3339(s).map(|t| t.as_second())
}

/// Docker's RFC 3339 timestamp (parsed by jiff: offsets and fractions as RFC 3339 allows).
pub(super) fn rfc3339(s: &str) -> Option<jiff::Timestamp> {
    s.trim().parse::<jiff::Timestamp>().ok()
}

pub(super) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::runtime::ContainerOptions;
    use std::collections::BTreeMap;

    pub(in crate::runtime::docker) fn request() -> ContainerRequest {
        ContainerRequest {
            name: "web-abc".into(),
            image: "berth-demo:v1".into(),
            command: Some(vec!["sh".into(), "-c".into(), "exec httpd".into()]),
            env: vec![
                ("MODE".into(), "test".into()),
                ("SECRET".into(), "hunter2".into()),
            ],
            ports: vec![8080, 9090],
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            labels: BTreeMap::from([
                (LABEL_APP.to_string(), "web".to_string()),
                (LABEL_INSTANCE.to_string(), "forged".to_string()),
            ]),
            network: Some("berth".into()),
            options: ContainerOptions::default(),
        }
    }

    #[test]
    fn config_carries_limits_ports_labels_and_policy() {
        let labels = create_labels(&request(), Some("t1"));
        let cfg = container_config(
            &request(),
            labels,
            CpuLimit::Nano(500_000_000),
            true,
            vec![],
        );
        assert_eq!(cfg.image.as_deref(), Some("berth-demo:v1"));
        assert_eq!(
            cfg.cmd,
            Some(vec!["sh".into(), "-c".into(), "exec httpd".into()])
        );
        assert_eq!(
            cfg.env.unwrap(),
            vec!["MODE=test".to_string(), "SECRET=hunter2".to_string()]
        );
        let labels = cfg.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_INSTANCE], "t1", "the runtime's instance wins");
        assert_eq!(labels[LABEL_APP], "web");
        assert_eq!(
            labels[LABEL_PORT], "8080",
            "the first port is the primary one"
        );
        let exposed = cfg.exposed_ports.unwrap();
        assert!(exposed.contains_key("8080/tcp") && exposed.contains_key("9090/tcp"));

        let host = cfg.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.cpu_shares, None);
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.network_mode.as_deref(), Some("berth"));
        let policy = host.restart_policy.unwrap();
        assert_eq!(policy.name, Some(RestartPolicyNameEnum::UNLESS_STOPPED));
        assert_eq!(policy.maximum_retry_count, None);
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings.len(), 2);
        for port in ["8080/tcp", "9090/tcp"] {
            let b = bindings[port].as_ref().unwrap();
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"), "{port}");
            assert_eq!(b[0].host_port.as_deref(), Some(""), "{port}: ephemeral");
        }

        let shares_cfg = container_config(
            &request(),
            HashMap::new(),
            CpuLimit::Shares(512),
            false,
            vec![],
        );
        let host = shares_cfg.host_config.unwrap();
        assert_eq!((host.nano_cpus, host.cpu_shares), (None, Some(512)));
        assert_eq!(host.init, Some(false));
        let plain = ContainerRequest {
            cpu_millis: None,
            memory_bytes: None,
            ports: vec![],
            network: None,
            ..request()
        };
        let host = container_config(&plain, HashMap::new(), CpuLimit::None, true, vec![])
            .host_config
            .unwrap();
        assert_eq!(
            (host.nano_cpus, host.cpu_shares, host.memory),
            (None, None, None)
        );
        assert!(host.port_bindings.unwrap().is_empty());
        assert_eq!(host.network_mode, None);
    }

    #[test]
    fn labels_without_an_instance_drop_any_instance_label() {
        let labels = create_labels(&request(), None);
        assert!(!labels.contains_key(LABEL_INSTANCE));
        assert!(owns(Some(&labels), None));
        let mut explicit = request();
        explicit
            .labels
            .insert(LABEL_PORT.to_string(), "9090".to_string());
        assert_eq!(create_labels(&explicit, None)[LABEL_PORT], "9090");
    }

    #[test]
    fn cpu_limits_and_fallback_detection() {
        assert_eq!(CpuLimit::for_millis(None, false), CpuLimit::None);
        assert_eq!(CpuLimit::for_millis(Some(0), false), CpuLimit::None);
        assert_eq!(
            CpuLimit::for_millis(Some(250), false),
            CpuLimit::Nano(250_000_000)
        );
        assert_eq!(CpuLimit::for_millis(Some(250), true), CpuLimit::Shares(256));
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

    fn berth_labels() -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_APP.to_string(), "web".to_string()),
            (LABEL_SPEC_HASH.to_string(), "h1".to_string()),
            (LABEL_REVISION.to_string(), "r1".to_string()),
            (LABEL_PORT.to_string(), "8080".to_string()),
        ])
    }

    #[test]
    fn summary_maps_to_observed() {
        let summary = ContainerSummary {
            id: Some("0123456789abcdef".into()),
            names: Some(vec!["/web-abc".into()]),
            image: Some("berth-demo:v1".into()),
            created: Some(1_700_000_000),
            state: Some("running".into()),
            labels: Some(berth_labels()),
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
    fn inspect_maps_to_observed() {
        use bollard::models::{ContainerConfig, ContainerStateStatusEnum, NetworkSettings};
        let info = ContainerInspectResponse {
            id: Some("fedcba9876543210ff".into()),
            name: Some("/web-def".into()),
            created: Some("2023-11-14T22:13:20.5Z".into()),
            config: Some(ContainerConfig {
                image: Some("berth-demo:v2".into()),
                labels: Some(berth_labels()),
                ..Default::default()
            }),
            state: Some(bollard::models::ContainerState {
                status: Some(ContainerStateStatusEnum::RESTARTING),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([
                    (
                        "8080/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some("40010".into()),
                        }]),
                    ),
                    ("9090/tcp".to_string(), None),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(inspect_state(&info), ContainerState::Restarting);
        let o = observed_from_inspect(info);
        assert_eq!(o.name, "web-def");
        assert_eq!(o.image, "berth-demo:v2");
        assert_eq!(o.state, ContainerState::Restarting);
        assert_eq!(o.host_port, Some(40010));
        assert_eq!(o.published, vec![(8080, 40010)]);
        assert_eq!(o.created, 1_700_000_000);
        assert_eq!(
            inspect_state(&ContainerInspectResponse::default()),
            ContainerState::Unknown
        );
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
}
