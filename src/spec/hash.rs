//! The spec hash: a short, stable digest of the container-relevant part of an `AppSpec`
//! (image, command, env, ports, resources, and the container options of `workload`: mounts,
//! published ports, entrypoint, workingDir, user, labels, logging, stop signal). A running
//! container whose `berth.spec-hash` label differs from this is replaced by a rollout.
//! Health, scaling, route, drain, grace period, strategy, dependsOn and the swarm placement
//! (`placement`, `maxReplicasPerNode`: the swarm plan compares them itself) are deliberately
//! left out: changing them never restarts containers. The workload part enters the digest only
//! when it differs from the defaults, so specs without it keep the hash older versions of
//! berth gave them (upgrading berth rolls nothing out).

use super::model::{AppSpec, EnvValue, Placement, Strategy, Workload};
use sha2::{Digest, Sha256};

pub fn spec_hash(app: &AppSpec) -> String {
    let env: Vec<(String, String)> = app
        .env
        .iter()
        .map(|e| {
            let v = match &e.value {
                EnvValue::Literal(v) => format!("={v}"),
                EnvValue::FromHost => "<from-host>".to_string(),
            };
            (e.name.clone(), v)
        })
        .collect();
    let mut relevant = serde_json::json!({
        "image": app.image,
        "command": app.command,
        "env": env,
        "ports": app.ports,
        "cpu_millis": app.resources.cpu_millis,
        "memory_bytes": app.resources.memory_bytes,
    });
    let w = &app.workload;
    let containers = Workload {
        depends_on: Vec::new(),
        strategy: Strategy::default(),
        placement: Placement::default(),
        max_replicas_per_node: None,
        ..w.clone()
    };
    if containers != Workload::default() || app.termination.stop_signal.is_some() {
        relevant["workload"] = serde_json::json!({
            "entrypoint": w.entrypoint,
            "working_dir": w.working_dir,
            "user": w.user,
            "volumes": w.volumes,
            "published": w.published,
            "labels": w.labels,
            "logging": w.logging,
            "stop_signal": app.termination.stop_signal,
        });
    }
    let digest = Sha256::digest(relevant.to_string().as_bytes());
    hex::encode(&digest[..6])
}
