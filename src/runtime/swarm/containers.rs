//! The swarm backend's container face (issue 14): the API, the prober and the autoscaler
//! hold a `ContainerObserver`, so `SwarmRuntime` gives them the local node's running tasks
//! as containers (stats and volumes from this node's engine). The pass never asks it for
//! container steps; a container create/start/stop/remove is refused with what to do.
//! Must not touch: services (the service traits in `mod.rs` do).

use super::{engine_error, ObservedService, ServiceObserver, ServiceRuntime, SwarmRuntime};
use crate::runtime::{
    CallCounts, ContainerObserver, ContainerRequest, ContainerRuntime, ContainerState,
    ContainerStats, LogLines, LogRequest, ObservedContainer, ObservedVolume, RemoveVolumes,
    RuntimeError,
};
use std::future::Future;

/// The local node's running tasks as containers (for the API, the prober and the
/// autoscaler): id = the task's container, name = `<service>.<slot>`.
pub fn local_containers(services: &[ObservedService]) -> Vec<ObservedContainer> {
    let mut out = Vec::new();
    for s in services {
        for t in s
            .tasks
            .iter()
            .filter(|t| t.local && t.desired_state == "running")
        {
            let Some(id) = &t.container_id else { continue };
            let state = match t.state.as_str() {
                "running" => ContainerState::Running,
                "starting" | "preparing" | "ready" | "accepted" | "assigned" => {
                    ContainerState::Created
                }
                "complete" | "shutdown" | "failed" | "rejected" => ContainerState::Exited,
                _ => ContainerState::Unknown,
            };
            out.push(ObservedContainer {
                id: id.clone(),
                name: format!("{}.{}", s.name, t.slot.unwrap_or_default()),
                app: s.app.clone(),
                image: t.image.clone(),
                image_id: String::new(),
                spec_hash: t.spec_hash.clone(),
                revision: s.revision.clone(),
                state,
                host_port: t.host_port,
                published: Vec::new(),
                created: 0,
            });
        }
    }
    out
}

fn no_containers(operation: &str) -> RuntimeError {
    engine_error(
        operation,
        "the swarm backend runs services, not containers: berth plans service steps with --backend swarm",
    )
}

impl ContainerObserver for SwarmRuntime {
    async fn observe(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        Ok(local_containers(&self.services().await?))
    }

    async fn inspect(&self, id: &str) -> Result<Option<ObservedContainer>, RuntimeError> {
        Ok(self.observe().await?.into_iter().find(|c| c.id == id))
    }

    fn stats(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerStats>, RuntimeError>> + Send {
        // Only the local node's task containers come from `observe`.
        self.local.stats(ids)
    }

    fn calls(&self) -> CallCounts {
        let local = self.local.calls();
        let swarm = self.service_calls();
        CallCounts {
            list: local.list + swarm.list,
            inspect: local.inspect + swarm.inspect,
            create: local.create + swarm.create,
            update: local.update + swarm.update,
            remove: local.remove + swarm.remove,
            network: local.network + swarm.network,
            ..local
        }
    }

    fn logs(
        &self,
        id: &str,
        request: &LogRequest,
    ) -> impl Future<Output = Result<LogLines, RuntimeError>> + Send {
        let _ = (id, request);
        async {
            Err(engine_error(
                "logs",
                "the swarm backend does not serve task logs yet: use docker service logs",
            ))
        }
    }

    fn volumes(
        &self,
        app: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ObservedVolume>, RuntimeError>> + Send {
        self.local.volumes(app)
    }
}

impl ContainerRuntime for SwarmRuntime {
    async fn create(&self, _request: &ContainerRequest) -> Result<String, RuntimeError> {
        Err(no_containers("create"))
    }

    async fn start(&self, _id: &str) -> Result<(), RuntimeError> {
        Err(no_containers("start"))
    }

    async fn stop(&self, _id: &str, _timeout_seconds: u32) -> Result<(), RuntimeError> {
        Err(no_containers("stop"))
    }

    async fn remove(
        &self,
        _id: &str,
        _volumes: RemoveVolumes,
    ) -> Result<Vec<String>, RuntimeError> {
        Err(no_containers("remove"))
    }

    fn ensure_network(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.ensure_overlay(name)
    }

    fn ensure_volume(
        &self,
        name: &str,
        app: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.local.ensure_volume(name, app)
    }

    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.local.remove_volume(name)
    }

    fn remove_anonymous_volume(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.local.remove_anonymous_volume(name)
    }

    fn swarm(&self) -> Option<&SwarmRuntime> {
        Some(self)
    }
}
