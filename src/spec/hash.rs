//! The spec hash: a short, stable digest of the container-relevant part of an `AppSpec`
//! (image, command, env, ports, resources). A running container whose `berth.spec-hash`
//! label differs from this is replaced by a rollout. Health, scaling, route and
//! termination settings are deliberately left out: changing them never restarts containers.

use super::model::{AppSpec, EnvValue};
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
    let relevant = serde_json::json!({
        "image": app.image,
        "command": app.command,
        "env": env,
        "ports": app.ports,
        "cpu_millis": app.resources.cpu_millis,
        "memory_bytes": app.resources.memory_bytes,
    });
    let digest = Sha256::digest(relevant.to_string().as_bytes());
    hex::encode(&digest[..6])
}
