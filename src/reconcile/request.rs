//! Spec -> [`ContainerRequest`]: what `apply` asks the runtime to create for one replica of
//! a desired app (pure: the container name, revision, network and host env values are
//! parameters). The runtime turns the request into the engine's create body
//! (`runtime::docker::mapping`). Must not touch: the runtime, the store, the clock; env
//! values go only into the request, never into a log line or an error.

use crate::plan::DesiredApp;
use crate::runtime::swarm::ServiceRequest;
use crate::runtime::{
    ContainerOptions, ContainerRequest, HostPort, LogRotation, MountKind, RequestMount, LABEL_APP,
    LABEL_MANAGED, LABEL_REVISION, LABEL_SOURCE_FILE, LABEL_SPEC_HASH,
};
use crate::spec::{volume_name, AppSpec, EnvValue, MountSource};
use std::collections::BTreeMap;

/// Why a request cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("env {name} has valueFrom: sdk but the host supplies no value: set {name} in berth's environment or its --host-env file")]
    MissingHostEnv { name: String },
}

/// The request for one container of `desired` named `name`: the spec's image, command,
/// ports and limits; env with `valueFrom: sdk` values taken from `host_env`; the ownership
/// labels (managed, app, spec hash, the revision the spec comes from — the app's own for a
/// quarantined app on its last good spec, else `revision` — and the source file); the
/// network.
pub fn container_request(
    desired: &DesiredApp,
    name: String,
    revision: &str,
    network: &str,
    host_env: &BTreeMap<String, String>,
) -> Result<ContainerRequest, RequestError> {
    let spec = &desired.spec;
    let mut env = Vec::with_capacity(spec.env.len());
    for var in &spec.env {
        let value =
            match &var.value {
                EnvValue::Literal(v) => v.clone(),
                EnvValue::FromHost => host_env.get(&var.name).cloned().ok_or_else(|| {
                    RequestError::MissingHostEnv {
                        name: var.name.clone(),
                    }
                })?,
            };
        env.push((var.name.clone(), value));
    }
    // User labels first: the ownership labels below overwrite any of the same key (the
    // spec layer already refuses `berth.*`).
    let mut labels: BTreeMap<String, String> = spec.workload.labels.clone();
    labels.extend([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_APP.to_string(), spec.name.clone()),
        (LABEL_SPEC_HASH.to_string(), desired.hash.clone()),
        (
            LABEL_REVISION.to_string(),
            desired.revision.as_deref().unwrap_or(revision).to_string(),
        ),
        (
            LABEL_SOURCE_FILE.to_string(),
            desired.source.file.display().to_string(),
        ),
    ]);
    Ok(ContainerRequest {
        name,
        image: spec.image.clone(),
        command: spec.command.clone(),
        env,
        ports: spec.ports.clone(),
        cpu_millis: spec.resources.cpu_millis,
        memory_bytes: spec.resources.memory_bytes,
        labels,
        network: Some(network.to_string()),
        options: options(spec),
    })
}

/// The workload options: mounts (named volumes under their Docker names), fixed host
/// ports, the `<app>` network alias, entrypoint, workingDir, user, stop signal, log
/// rotation.
fn options(spec: &AppSpec) -> ContainerOptions {
    let w = &spec.workload;
    ContainerOptions {
        entrypoint: w.entrypoint.clone(),
        working_dir: w.working_dir.clone(),
        user: w.user.clone(),
        mounts: w
            .volumes
            .iter()
            .map(|m| RequestMount {
                kind: match &m.source {
                    MountSource::Named(name) => MountKind::Volume(volume_name(&spec.name, name)),
                    MountSource::HostPath(path) => MountKind::Bind(path.clone()),
                    MountSource::Tmpfs => MountKind::Tmpfs,
                },
                target: m.mount_path.clone(),
                read_only: m.read_only,
            })
            .collect(),
        host_ports: w
            .published
            .iter()
            .map(|p| HostPort {
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
                protocol: p.protocol.as_str(),
            })
            .collect(),
        aliases: vec![spec.name.clone()],
        stop_signal: spec.termination.stop_signal.clone(),
        log_rotation: Some(LogRotation {
            max_size_bytes: w.logging.max_size_bytes,
            max_files: w.logging.max_files,
        }),
        carry_volumes_from: None,
    }
}

/// The swarm backend's request for `desired`'s service (pure, like `container_request`):
/// the container part under the service name, the spec's env as written (for the env
/// section's digest), the effective `replicas`, health, placement, the rollout order
/// (start-first unless `strategy: recreate`) and the stop grace period. With
/// `lenient`, a host value the host does not supply becomes empty instead of an error (the
/// plan's section digests never include values).
#[allow(clippy::too_many_arguments)]
pub fn service_request(
    desired: &DesiredApp,
    service: String,
    revision: &str,
    network: &str,
    host_env: &BTreeMap<String, String>,
    replicas: u32,
    stop_timeout_seconds: u32,
    lenient: bool,
) -> Result<ServiceRequest, RequestError> {
    let spec = &desired.spec;
    let container = if lenient {
        let mut env = host_env.clone();
        for var in &spec.env {
            if var.value == EnvValue::FromHost {
                env.entry(var.name.clone()).or_default();
            }
        }
        container_request(desired, service, revision, network, &env)?
    } else {
        container_request(desired, service, revision, network, host_env)?
    };
    Ok(ServiceRequest {
        app: spec.name.clone(),
        container,
        env_description: spec
            .env
            .iter()
            .map(|e| match &e.value {
                EnvValue::Literal(v) => format!("{}={v}", e.name),
                EnvValue::FromHost => format!("{}<from-host>", e.name),
            })
            .collect(),
        user_labels: spec.workload.labels.clone(),
        replicas,
        health: spec.health.clone(),
        placement: spec.workload.placement.clone(),
        max_replicas_per_node: spec.workload.max_replicas_per_node,
        start_first: spec.workload.strategy == crate::spec::Strategy::Rolling,
        stop_grace_seconds: spec
            .termination
            .grace_period_seconds
            .unwrap_or(stop_timeout_seconds),
        network: network.to_string(),
    })
}

/// The Docker names of the named volumes `spec` mounts (created before its containers).
pub fn named_volumes(spec: &AppSpec) -> Vec<String> {
    spec.workload
        .volumes
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Named(name) => Some(volume_name(&spec.name, name)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::test_worker;
    use crate::spec::{AppType, EnvVar, Resources, SourceRef};

    fn desired() -> DesiredApp {
        let mut spec = test_worker("web", "berth-demo:v1");
        spec.app_type = AppType::Http;
        spec.ports = vec![8080, 9090];
        spec.command = Some(vec!["/bin/busybox".into(), "httpd".into()]);
        spec.resources = Resources {
            cpu_millis: Some(250),
            memory_bytes: Some(32 << 20),
        };
        spec.env = vec![
            EnvVar {
                name: "MODE".into(),
                value: EnvValue::Literal("test".into()),
            },
            EnvVar {
                name: "SECRET_TOKEN".into(),
                value: EnvValue::FromHost,
            },
        ];
        DesiredApp::new(
            spec,
            SourceRef {
                file: "apps/web.yaml".into(),
                line: 1,
            },
        )
    }

    fn host_env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("SECRET_TOKEN".to_string(), "s3cr3t".to_string()),
            ("UNUSED".to_string(), "x".to_string()),
        ])
    }

    #[test]
    fn a_request_carries_the_spec_env_and_labels() {
        let d = desired();
        let r =
            container_request(&d, "berth-web-abc".into(), "rev-2", "berth", &host_env()).unwrap();
        assert_eq!(r.name, "berth-web-abc");
        assert_eq!(r.image, "berth-demo:v1");
        assert_eq!(
            r.command,
            Some(vec!["/bin/busybox".to_string(), "httpd".to_string()])
        );
        assert_eq!(
            r.env,
            vec![
                ("MODE".to_string(), "test".to_string()),
                ("SECRET_TOKEN".to_string(), "s3cr3t".to_string()),
            ],
            "valueFrom: sdk takes the host's value; other host values stay out"
        );
        assert_eq!(r.ports, vec![8080, 9090]);
        assert_eq!((r.cpu_millis, r.memory_bytes), (Some(250), Some(32 << 20)));
        assert_eq!(r.network.as_deref(), Some("berth"));
        assert_eq!(
            r.labels,
            BTreeMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_APP.to_string(), "web".to_string()),
                (LABEL_SPEC_HASH.to_string(), d.hash.clone()),
                (LABEL_REVISION.to_string(), "rev-2".to_string()),
                (LABEL_SOURCE_FILE.to_string(), "apps/web.yaml".to_string()),
            ])
        );
        assert!(
            !format!("{r:?}").contains("s3cr3t"),
            "Debug redacts env values"
        );
    }

    #[test]
    fn a_quarantined_app_labels_its_last_good_revision() {
        let mut d = desired();
        d.revision = Some("rev-1".into());
        let r = container_request(&d, "n".into(), "rev-2", "berth", &host_env()).unwrap();
        assert_eq!(r.labels[LABEL_REVISION], "rev-1");
    }

    #[test]
    fn a_missing_host_value_names_the_variable_not_a_value() {
        let err =
            container_request(&desired(), "n".into(), "r", "berth", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err,
            RequestError::MissingHostEnv {
                name: "SECRET_TOKEN".into()
            }
        );
        let text = err.to_string();
        assert!(
            text.starts_with("env SECRET_TOKEN has valueFrom: sdk"),
            "{text}"
        );
        assert!(text.contains("--host-env"), "{text}");
    }
}
