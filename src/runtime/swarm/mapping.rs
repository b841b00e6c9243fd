//! Pure mapping between berth and Swarm (issue 14): a [`ServiceRequest`] -> the engine's
//! `ServiceSpec` (labels like containers, image, command/entrypoint, env, limits and
//! reservations, replicas, the health check from the spec's probe, start-first update and
//! rollback configs, restart policy, mounts, the `<app>` alias on the overlay network, log
//! rotation, placement, host-mode ports), the per-section digests the plan compares
//! (`berth.sections`), and the engine's service and task answers -> [`ObservedService`].
//! Must not touch: the engine (no I/O), env values in labels or digests.

use super::{ObservedService, ObservedTask, ServiceRequest, LABEL_SECTIONS};
use crate::runtime::{
    MountKind, LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED, LABEL_REVISION, LABEL_SPEC_HASH,
};
use crate::spec::{HealthSpec, Probe};
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, HealthConfig, Limit, Mount, MountTypeEnum, MountVolumeOptions,
    NetworkAttachmentConfig, ResourceObject, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecLogDriver,
    TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

const NANOS: i64 = 1_000_000_000;

/// The Swarm service name of an app: `berth-<app>`, or `berth-<instance>-<app>` for a
/// controller scoped to an instance (two instances never share a service).
pub fn service_name(app: &str, instance: Option<&str>) -> String {
    match instance {
        Some(instance) => format!("berth-{instance}-{app}"),
        None => format!("berth-{app}"),
    }
}

/// True when the labels say this controller owns the service (`berth.managed=true` and
/// exactly its `berth.instance`, or none when it has none).
pub fn owns(labels: Option<&HashMap<String, String>>, instance: Option<&str>) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && labels.get(LABEL_INSTANCE).map(String::as_str) == instance
}

/// The container's health check from the spec's probe. It runs inside the container, so
/// it needs `wget` (or `curl`) for an HTTP probe and `nc` for a TCP one (README: the swarm
/// backend). Swarm reports a task `running` only once it is healthy.
pub fn health_check(health: &HealthSpec) -> HealthConfig {
    let command = match &health.probe {
        Probe::HttpGet { path, port } => {
            let url = format!("http://127.0.0.1:{port}{path}");
            format!("wget -q -O /dev/null '{url}' || curl -fsS -o /dev/null '{url}'")
        }
        Probe::TcpSocket { port } => format!("nc -z 127.0.0.1 {port}"),
    };
    HealthConfig {
        test: Some(vec!["CMD-SHELL".to_string(), command]),
        interval: Some(i64::from(health.interval_seconds.max(1)) * NANOS),
        timeout: Some(i64::from(health.timeout_seconds.max(1)) * NANOS),
        retries: Some(i64::from(health.failure_threshold.max(1))),
        start_period: Some(i64::from(health.initial_delay_seconds) * NANOS),
        start_interval: None,
    }
}

/// How long Swarm watches each updated task for a failure before the next one (and
/// before it calls the update done): the probe's time to declare the task unhealthy
/// (initial delay + failures × interval + timeout), at least 5 s.
pub fn monitor_seconds(health: Option<&HealthSpec>) -> u32 {
    health
        .map(|h| {
            h.initial_delay_seconds
                + h.failure_threshold.max(1) * h.interval_seconds.max(1)
                + h.timeout_seconds
        })
        .unwrap_or(0)
        .max(5)
}

/// The service spec berth creates or updates for `req`, and its section digests (also
/// stored in the `berth.sections` label).
pub fn service_spec(req: &ServiceRequest, instance: Option<&str>) -> ServiceSpec {
    let c = &req.container;
    let o = &c.options;
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<Mount> = o
        .mounts
        .iter()
        .map(|m| {
            let (typ, source) = match &m.kind {
                MountKind::Volume(name) => (MountTypeEnum::VOLUME, Some(name.clone())),
                MountKind::Bind(path) => (MountTypeEnum::BIND, Some(path.clone())),
                MountKind::Tmpfs => (MountTypeEnum::TMPFS, None),
            };
            Mount {
                target: Some(m.target.clone()),
                source,
                typ: Some(typ),
                read_only: Some(m.read_only),
                volume_options: matches!(m.kind, MountKind::Volume(_)).then(|| {
                    MountVolumeOptions {
                        labels: Some(
                            [
                                (LABEL_MANAGED.to_string(), "true".to_string()),
                                (LABEL_APP.to_string(), req.app.clone()),
                            ]
                            .into_iter()
                            .chain(instance.map(|i| (LABEL_INSTANCE.to_string(), i.to_string())))
                            .collect(),
                        ),
                        ..Default::default()
                    }
                }),
                ..Default::default()
            }
        })
        .collect();
    let nano_cpus = c.cpu_millis.map(|m| i64::from(m) * 1_000_000);
    let memory = c.memory_bytes.map(|b| b as i64);
    let resources = TaskSpecResources {
        limits: Some(Limit {
            nano_cpus,
            memory_bytes: memory,
            pids: None,
        }),
        reservations: Some(ResourceObject {
            nano_cpus,
            memory_bytes: memory,
            generic_resources: None,
        }),
    };
    let placement = TaskSpecPlacement {
        constraints: Some(req.placement.constraints.clone()),
        preferences: Some(
            req.placement
                .preferences
                .iter()
                .map(|p| TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some(p.clone()),
                    }),
                })
                .collect(),
        ),
        max_replicas: req.max_replicas_per_node.map(i64::from),
        platforms: None,
    };
    let log_driver = o.log_rotation.map(|r| TaskSpecLogDriver {
        name: Some("json-file".to_string()),
        options: Some(HashMap::from([
            ("max-size".to_string(), r.max_size_bytes.to_string()),
            ("max-file".to_string(), r.max_files.to_string()),
        ])),
    });
    let networks = vec![NetworkAttachmentConfig {
        target: Some(req.network.clone()),
        aliases: Some(o.aliases.clone()),
        driver_opts: None,
    }];
    let restart = TaskSpecRestartPolicy {
        condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
        delay: Some(2 * NANOS),
        max_attempts: Some(0),
        window: Some(0),
    };
    let container = TaskSpecContainerSpec {
        image: Some(c.image.clone()),
        // User labels plus the app and spec hash (each task's generation), never
        // `berth.managed`: the docker backend must not take task containers for its own.
        labels: Some(
            req.user_labels
                .clone()
                .into_iter()
                .chain([
                    (LABEL_APP.to_string(), req.app.clone()),
                    (
                        LABEL_SPEC_HASH.to_string(),
                        c.labels.get(LABEL_SPEC_HASH).cloned().unwrap_or_default(),
                    ),
                ])
                .collect(),
        ),
        // Swarm's Command is the ENTRYPOINT, Args the CMD.
        command: o.entrypoint.clone(),
        args: c.command.clone(),
        env: Some(env),
        dir: o.working_dir.clone(),
        user: o.user.clone(),
        mounts: Some(mounts),
        stop_signal: o.stop_signal.clone(),
        stop_grace_period: Some(i64::from(req.stop_grace_seconds) * NANOS),
        health_check: req.health.as_ref().map(health_check),
        // Docker's init as PID 1, like the docker backend: a server running as PID 1 may
        // ignore SIGTERM and every stop would wait for SIGKILL.
        init: Some(true),
        ..Default::default()
    };
    // Host-mode ports: every container port gets an ephemeral host port on the node
    // (nginx reaches the local tasks on 127.0.0.1:<port>); fixed hostPorts as written.
    let mut ports: Vec<EndpointPortConfig> = c
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(EndpointPortConfigProtocolEnum::TCP),
            target_port: Some(i64::from(*p)),
            published_port: None,
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            name: None,
        })
        .collect();
    for hp in &o.host_ports {
        ports.push(EndpointPortConfig {
            protocol: Some(if hp.protocol == "udp" {
                EndpointPortConfigProtocolEnum::UDP
            } else {
                EndpointPortConfigProtocolEnum::TCP
            }),
            target_port: Some(i64::from(hp.container_port)),
            published_port: Some(i64::from(hp.host_port)),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            name: None,
        });
    }
    let monitor = i64::from(monitor_seconds(req.health.as_ref())) * NANOS;
    let (update_order, rollback_order) = if req.start_first {
        (
            ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            ServiceSpecRollbackConfigOrderEnum::START_FIRST,
        )
    } else {
        (
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
        )
    };
    let task_template = TaskSpec {
        container_spec: Some(container),
        resources: Some(resources),
        restart_policy: Some(restart),
        placement: Some(placement),
        networks: Some(networks),
        log_driver,
        ..Default::default()
    };
    let update_config = ServiceSpecUpdateConfig {
        parallelism: Some(1),
        delay: Some(0),
        failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
        monitor: Some(monitor),
        max_failure_ratio: Some(0.0),
        order: Some(update_order),
    };
    let rollback_config = ServiceSpecRollbackConfig {
        parallelism: Some(1),
        delay: Some(0),
        failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
        monitor: Some(monitor),
        max_failure_ratio: Some(0.0),
        order: Some(rollback_order),
    };
    let endpoint_spec = EndpointSpec {
        mode: None,
        ports: Some(ports),
    };
    let sections = sections(
        req,
        &[
            ("image", serde_json::json!(c.image)),
            ("command", serde_json::json!([o.entrypoint, c.command])),
            ("env", serde_json::json!(req.env_description)),
            (
                "resources",
                serde_json::to_value(&task_template.resources).unwrap_or_default(),
            ),
            (
                "health",
                serde_json::to_value(
                    task_template
                        .container_spec
                        .as_ref()
                        .map(|c| &c.health_check),
                )
                .unwrap_or_default(),
            ),
            ("mounts", serde_json::json!(mounts_key(&o.mounts))),
            (
                "ports",
                serde_json::to_value(&endpoint_spec).unwrap_or_default(),
            ),
            (
                "placement",
                serde_json::to_value(&task_template.placement).unwrap_or_default(),
            ),
            ("labels", serde_json::json!(req.user_labels)),
            (
                "logging",
                serde_json::to_value(&task_template.log_driver).unwrap_or_default(),
            ),
            (
                "process",
                serde_json::json!([o.working_dir, o.user, o.stop_signal, req.stop_grace_seconds]),
            ),
            ("rollout", serde_json::json!([req.start_first, monitor])),
            ("network", serde_json::json!([req.network, o.aliases])),
        ],
    );
    let mut labels: HashMap<String, String> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    match instance {
        Some(i) => {
            labels.insert(LABEL_INSTANCE.to_string(), i.to_string());
        }
        None => {
            labels.remove(LABEL_INSTANCE);
        }
    }
    labels.insert(LABEL_SECTIONS.to_string(), encode_sections(&sections));
    ServiceSpec {
        name: Some(c.name.clone()),
        labels: Some(labels),
        task_template: Some(task_template),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(req.replicas)),
            }),
            ..Default::default()
        }),
        update_config: Some(update_config),
        rollback_config: Some(rollback_config),
        networks: None,
        endpoint_spec: Some(endpoint_spec),
    }
}

fn mounts_key(mounts: &[crate::runtime::RequestMount]) -> Vec<String> {
    mounts
        .iter()
        .map(|m| format!("{:?}:{}:{}", m.kind, m.target, m.read_only))
        .collect()
}

/// Six hex digits per section of the service spec (env by the spec's description, never
/// by the resolved values).
fn sections(
    _req: &ServiceRequest,
    parts: &[(&str, serde_json::Value)],
) -> BTreeMap<String, String> {
    parts
        .iter()
        .map(|(name, value)| {
            let digest = Sha256::digest(value.to_string().as_bytes());
            (name.to_string(), hex::encode(&digest[..3]))
        })
        .collect()
}

/// `image=ab12cd,env=...`: the `berth.sections` label.
pub fn encode_sections(sections: &BTreeMap<String, String>) -> String {
    sections
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `berth.sections` label -> section -> digest (unparsable parts are skipped).
pub fn decode_sections(label: &str) -> BTreeMap<String, String> {
    label
        .split(',')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The sections `service_spec` would label `req` with.
pub fn request_sections(req: &ServiceRequest) -> BTreeMap<String, String> {
    let spec = service_spec(req, None);
    spec.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SECTIONS))
        .map(|s| decode_sections(s))
        .unwrap_or_default()
}

fn task_state(state: Option<TaskState>) -> String {
    state.map(|s| s.to_string()).unwrap_or_default()
}

/// One engine task -> an observed task. `local_node` is this engine's node id.
pub fn observed_task(task: &Task, local_node: &str) -> ObservedTask {
    let status = task.status.as_ref();
    let container_spec = task.spec.as_ref().and_then(|s| s.container_spec.as_ref());
    let has_check = container_spec
        .and_then(|c| c.health_check.as_ref())
        .and_then(|h| h.test.as_ref())
        .is_some_and(|t| t.first().is_some_and(|first| first != "NONE"));
    let state = task_state(status.and_then(|s| s.state));
    let health = match (state.as_str(), has_check) {
        (_, false) => None,
        ("running", true) => Some("healthy".to_string()),
        ("starting", true) => Some("starting".to_string()),
        (_, true) => Some("unhealthy".to_string()).filter(|_| state == "failed"),
    };
    let host_port = status
        .and_then(|s| s.port_status.as_ref())
        .and_then(|p| p.ports.as_ref())
        .and_then(|ports| {
            ports.iter().find_map(|p| {
                (p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST)
                    && p.protocol != Some(EndpointPortConfigProtocolEnum::UDP))
                .then_some(p.published_port)
                .flatten()
            })
        })
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    let node = task.node_id.clone().unwrap_or_default();
    ObservedTask {
        id: task.id.clone().unwrap_or_default(),
        slot: task.slot.and_then(|s| u32::try_from(s).ok()),
        local: !node.is_empty() && node == local_node,
        node,
        state,
        desired_state: task_state(task.desired_state),
        health,
        image: container_spec
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        spec_hash: container_spec
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_SPEC_HASH))
            .cloned()
            .unwrap_or_default(),
        error: status.and_then(|s| s.err.clone()).filter(|e| !e.is_empty()),
        message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
        container_id: status
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone())
            .filter(|c| !c.is_empty()),
        host_port,
        created: task
            .created_at
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// One engine service (and its tasks) -> an observed service; None when berth does not own
/// it.
pub fn observed_service(
    service: &Service,
    tasks: &[ObservedTask],
    task_services: &[String],
    instance: Option<&str>,
) -> Option<ObservedService> {
    let spec = service.spec.as_ref()?;
    let labels = spec.labels.as_ref();
    if !owns(labels, instance) {
        return None;
    }
    let label = |key: &str| labels.and_then(|l| l.get(key)).cloned().unwrap_or_default();
    let id = service.id.clone().unwrap_or_default();
    let replicas = spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .and_then(|r| u32::try_from(r).ok());
    let image = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let update = service.update_status.as_ref().and_then(|u| {
        let state = u.state.map(|s| s.to_string()).unwrap_or_default();
        (!state.is_empty()).then(|| super::UpdateState {
            state,
            message: u.message.clone().unwrap_or_default(),
        })
    });
    Some(ObservedService {
        name: spec.name.clone().unwrap_or_default(),
        app: label(LABEL_APP),
        version: service
            .version
            .as_ref()
            .and_then(|v| v.index)
            .unwrap_or_default(),
        image,
        spec_hash: label(LABEL_SPEC_HASH),
        revision: label(LABEL_REVISION),
        sections: decode_sections(&label(LABEL_SECTIONS)),
        replicas,
        update,
        tasks: tasks
            .iter()
            .zip(task_services)
            .filter(|(_, s)| **s == id)
            .map(|(t, _)| t.clone())
            .collect(),
        id,
    })
}

#[cfg(test)]
mod tests;
