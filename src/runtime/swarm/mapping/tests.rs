use super::*;
use crate::runtime::{ContainerOptions, ContainerRequest, LogRotation, RequestMount};
use crate::spec::Placement;
use bollard::models::{PortStatus, TaskStatus};

fn request() -> ServiceRequest {
    let labels = BTreeMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_APP.to_string(), "web".to_string()),
        (LABEL_SPEC_HASH.to_string(), "abc123".to_string()),
        (LABEL_REVISION.to_string(), "rev9".to_string()),
        ("team".to_string(), "shop".to_string()),
    ]);
    ServiceRequest {
        app: "web".into(),
        container: ContainerRequest {
            name: "berth-web".into(),
            image: "berth-demo:v1".into(),
            command: Some(vec!["httpd".into(), "-f".into()]),
            env: vec![("TOKEN".into(), "s3cret".into())],
            ports: vec![8080],
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            labels,
            network: Some("berth-swarm".into()),
            options: ContainerOptions {
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
                mounts: vec![RequestMount {
                    kind: MountKind::Volume("berth-web-data".into()),
                    target: "/data".into(),
                    read_only: false,
                }],
                aliases: vec!["web".into()],
                stop_signal: Some("SIGQUIT".into()),
                log_rotation: Some(LogRotation {
                    max_size_bytes: 1 << 20,
                    max_files: 2,
                }),
                ..ContainerOptions::default()
            },
        },
        env_description: vec!["TOKEN<from-host>".into()],
        user_labels: BTreeMap::from([("team".to_string(), "shop".to_string())]),
        replicas: 3,
        health: Some(HealthSpec {
            probe: Probe::HttpGet {
                path: "/healthz".into(),
                port: 8080,
            },
            interval_seconds: 2,
            timeout_seconds: 1,
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay_seconds: 0,
        }),
        placement: Placement {
            constraints: vec!["node.role==manager".into()],
            preferences: vec!["node.labels.zone".into()],
        },
        max_replicas_per_node: Some(2),
        start_first: true,
        stop_grace_seconds: 10,
        network: "berth-swarm".into(),
    }
}

#[test]
fn service_spec_carries_everything_the_issue_lists() {
    let spec = service_spec(&request(), Some("t1"));
    let labels = spec.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_INSTANCE], "t1");
    assert_eq!(labels[LABEL_APP], "web");
    assert_eq!(labels[LABEL_SPEC_HASH], "abc123");
    assert_eq!(labels["team"], "shop");
    assert!(labels[LABEL_SECTIONS].contains("image="));
    assert!(
        labels.values().all(|v| !v.contains("s3cret")),
        "env values never go into labels"
    );
    assert_eq!(spec.name.as_deref(), Some("berth-web"));
    let task = spec.task_template.as_ref().unwrap();
    let c = task.container_spec.as_ref().unwrap();
    assert_eq!(c.image.as_deref(), Some("berth-demo:v1"));
    assert_eq!(
        c.command,
        Some(vec!["/bin/sh".to_string(), "-c".to_string()])
    );
    assert_eq!(c.args, Some(vec!["httpd".to_string(), "-f".to_string()]));
    assert_eq!(c.env, Some(vec!["TOKEN=s3cret".to_string()]));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(c.stop_grace_period, Some(10 * NANOS));
    assert_eq!(c.init, Some(true));
    let cl = c.labels.as_ref().unwrap();
    assert_eq!(cl["team"], "shop");
    assert_eq!(cl[LABEL_SPEC_HASH], "abc123");
    assert!(
        !cl.contains_key(LABEL_MANAGED),
        "task containers are not the docker backend's"
    );
    let health = c.health_check.as_ref().unwrap();
    let test = health.test.as_ref().unwrap();
    assert_eq!(test[0], "CMD-SHELL");
    assert!(test[1].contains("http://127.0.0.1:8080/healthz"));
    assert_eq!(health.interval, Some(2 * NANOS));
    assert_eq!(health.retries, Some(3));
    let mounts = c.mounts.as_ref().unwrap();
    assert_eq!(mounts[0].typ, Some(MountTypeEnum::VOLUME));
    assert_eq!(mounts[0].source.as_deref(), Some("berth-web-data"));
    let vol_labels = mounts[0]
        .volume_options
        .as_ref()
        .and_then(|o| o.labels.as_ref())
        .unwrap();
    assert_eq!(vol_labels[LABEL_INSTANCE], "t1");
    let res = task.resources.as_ref().unwrap();
    assert_eq!(res.limits.as_ref().unwrap().nano_cpus, Some(500_000_000));
    assert_eq!(
        res.reservations.as_ref().unwrap().memory_bytes,
        Some(64 << 20)
    );
    let restart = task.restart_policy.as_ref().unwrap();
    assert_eq!(
        restart.condition,
        Some(TaskSpecRestartPolicyConditionEnum::ANY)
    );
    let placement = task.placement.as_ref().unwrap();
    assert_eq!(
        placement.constraints,
        Some(vec!["node.role==manager".to_string()])
    );
    assert_eq!(placement.max_replicas, Some(2));
    assert_eq!(
        placement.preferences.as_ref().unwrap()[0]
            .spread
            .as_ref()
            .unwrap()
            .spread_descriptor
            .as_deref(),
        Some("node.labels.zone")
    );
    let net = &task.networks.as_ref().unwrap()[0];
    assert_eq!(net.target.as_deref(), Some("berth-swarm"));
    assert_eq!(net.aliases, Some(vec!["web".to_string()]));
    let log = task.log_driver.as_ref().unwrap();
    assert_eq!(log.name.as_deref(), Some("json-file"));
    assert_eq!(log.options.as_ref().unwrap()["max-file"], "2");
    assert_eq!(
        spec.mode
            .as_ref()
            .unwrap()
            .replicated
            .as_ref()
            .unwrap()
            .replicas,
        Some(3)
    );
    let update = spec.update_config.as_ref().unwrap();
    assert_eq!(update.parallelism, Some(1));
    assert_eq!(
        update.order,
        Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
    );
    assert_eq!(
        update.failure_action,
        Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
    );
    // 0 s initial delay + 3 failures x 2 s + 1 s timeout = 7 s.
    assert_eq!(update.monitor, Some(7 * NANOS));
    let rollback = spec.rollback_config.as_ref().unwrap();
    assert_eq!(
        rollback.order,
        Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST)
    );
    let ports = spec.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].target_port, Some(8080));
    assert_eq!(
        ports[0].published_port, None,
        "an ephemeral host port per task"
    );
    assert_eq!(
        ports[0].publish_mode,
        Some(EndpointPortConfigPublishModeEnum::HOST)
    );
}

#[test]
fn recreate_stops_first_and_no_health_means_a_five_second_monitor() {
    let mut req = request();
    req.start_first = false;
    req.health = None;
    let spec = service_spec(&req, None);
    assert!(!spec.labels.as_ref().unwrap().contains_key(LABEL_INSTANCE));
    let update = spec.update_config.unwrap();
    assert_eq!(
        update.order,
        Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
    );
    assert_eq!(update.monitor, Some(5 * NANOS));
    let c = spec.task_template.unwrap().container_spec.unwrap();
    assert!(c.health_check.is_none());
}

#[test]
fn a_change_moves_only_its_own_section() {
    let before = request_sections(&request());
    let mut req = request();
    req.placement.constraints = vec!["node.role==worker".into()];
    let after = request_sections(&req);
    let moved: Vec<&String> = before
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert_eq!(moved, vec!["placement"]);
    // Resolved env values are not in any digest: a changed host value moves nothing.
    let mut req = request();
    req.container.env = vec![("TOKEN".into(), "other".into())];
    assert_eq!(request_sections(&req), before);
    // Replicas are compared directly, not through a section.
    let mut req = request();
    req.replicas = 1;
    assert_eq!(request_sections(&req), before);
    assert_eq!(decode_sections(&encode_sections(&before)), before);
}

#[test]
fn ownership_needs_the_label_and_the_exact_instance() {
    let ours = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
    assert!(owns(Some(&ours), None));
    assert!(!owns(Some(&ours), Some("t1")));
    let mut theirs = ours.clone();
    theirs.insert(LABEL_INSTANCE.to_string(), "t2".into());
    assert!(!owns(Some(&theirs), None));
    assert!(!owns(Some(&theirs), Some("t1")));
    assert!(!owns(None, None));
    assert_eq!(service_name("web", None), "berth-web");
    assert_eq!(service_name("web", Some("t1")), "berth-t1-web");
}

#[test]
fn tasks_map_state_ports_and_errors() {
    let spec = TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some("berth-demo:v1".into()),
            labels: Some(HashMap::from([(
                LABEL_SPEC_HASH.to_string(),
                "abc123".to_string(),
            )])),
            health_check: Some(health_check(&request().health.unwrap())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let running = Task {
        id: Some("t1".into()),
        node_id: Some("node-a".into()),
        slot: Some(1),
        spec: Some(spec.clone()),
        desired_state: Some(TaskState::RUNNING),
        status: Some(TaskStatus {
            state: Some(TaskState::RUNNING),
            port_status: Some(PortStatus {
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(8080),
                    published_port: Some(30123),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    name: None,
                }]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = observed_task(&running, "node-a");
    assert!(t.local);
    assert_eq!(t.host_port, Some(30123));
    assert_eq!(t.health.as_deref(), Some("healthy"));
    assert_eq!(t.spec_hash, "abc123");
    assert_eq!(t.member().as_deref(), Some("127.0.0.1:30123"));
    assert_eq!(observed_task(&running, "node-b").member(), None);

    let pending = Task {
        id: Some("t2".into()),
        spec: Some(spec),
        desired_state: Some(TaskState::RUNNING),
        status: Some(TaskStatus {
            state: Some(TaskState::PENDING),
            err: Some("no suitable node (scheduling constraints not satisfied on 1 node)".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = observed_task(&pending, "node-a");
    assert!(!t.local);
    assert_eq!(t.state, "pending");
    assert!(t.error.as_deref().unwrap().contains("no suitable node"));
    assert_eq!(t.member(), None);
}
