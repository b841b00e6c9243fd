//! berth's Docker volumes: the named volumes of the spec (`berth-<app>-<name>`, labelled
//! `berth.managed`, `berth.app`, `berth.instance`), created when missing (cached like the
//! network), listed with one labelled call, removed only on request (`berth volumes
//! prune`); and the anonymous volumes of a removed app.
//!
//! Must not touch: a volume this runtime does not own (no `berth.managed=true`, or another
//! instance's) — `ensure` refuses to mount one and `remove` refuses to delete one — nor an
//! anonymous volume another container still uses.

use super::connect::map_error;
use super::mapping::owns;
use super::{Counters, DockerRuntime};
use crate::runtime::{ObservedVolume, RuntimeError, LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED};
use bollard::errors::Error as BollardError;
use bollard::volume::{CreateVolumeOptions, ListVolumesOptions, RemoveVolumeOptions};
use std::collections::HashMap;

impl DockerRuntime {
    /// The volume `name` exists and is this runtime's: created with the ownership labels
    /// when missing; a volume of that name without them is refused (never mounted).
    pub(super) async fn ensure_volume_now(
        &self,
        name: &str,
        app: &str,
    ) -> Result<(), RuntimeError> {
        if self
            .known_volumes
            .lock()
            .map(|k| k.contains(name))
            .unwrap_or(false)
        {
            return Ok(());
        }
        Counters::bump(&self.counters.inspect);
        match self.docker.inspect_volume(name).await {
            Ok(v) => {
                if !owns(Some(&v.labels), self.instance.as_deref()) {
                    return Err(RuntimeError::Engine {
                        operation: "create volume".to_string(),
                        message: format!(
                            "volume {name} exists but berth does not own it (no berth.managed label or another berth.instance): rename the spec's volume or remove that volume"
                        ),
                    });
                }
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                let mut labels = HashMap::from([
                    (LABEL_MANAGED.to_string(), "true".to_string()),
                    (LABEL_APP.to_string(), app.to_string()),
                ]);
                if let Some(instance) = &self.instance {
                    labels.insert(LABEL_INSTANCE.to_string(), instance.clone());
                }
                Counters::bump(&self.counters.volume);
                self.docker
                    .create_volume(CreateVolumeOptions {
                        name: name.to_string(),
                        driver: "local".to_string(),
                        labels,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| map_error(&self.endpoint, "create volume", e))?;
                tracing::info!(volume = %name, app, "created volume");
            }
            Err(e) => return Err(map_error(&self.endpoint, "inspect volume", e)),
        }
        if let Ok(mut known) = self.known_volumes.lock() {
            known.insert(name.to_string());
        }
        Ok(())
    }

    /// One labelled list call: this runtime's volumes, of `app` or all, sorted by name.
    pub(super) async fn list_volumes(
        &self,
        app: Option<&str>,
    ) -> Result<Vec<ObservedVolume>, RuntimeError> {
        let mut wanted = vec![format!("{LABEL_MANAGED}=true")];
        if let Some(app) = app {
            wanted.push(format!("{LABEL_APP}={app}"));
        }
        if let Some(instance) = &self.instance {
            wanted.push(format!("{LABEL_INSTANCE}={instance}"));
        }
        Counters::bump(&self.counters.list);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: HashMap::from([("label".to_string(), wanted)]),
            }))
            .await
            .map_err(|e| map_error(&self.endpoint, "list volumes", e))?;
        let instance = self.instance.as_deref();
        let mut out: Vec<ObservedVolume> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| owns(Some(&v.labels), instance))
            .map(|v| ObservedVolume {
                app: v.labels.get(LABEL_APP).cloned().unwrap_or_default(),
                created: v.created_at.map(|d| d.to_string()).unwrap_or_default(),
                name: v.name,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes this runtime's volume `name`; gone is Ok, in use or foreign is an error.
    pub(super) async fn remove_owned_volume(&self, name: &str) -> Result<(), RuntimeError> {
        Counters::bump(&self.counters.inspect);
        match self.docker.inspect_volume(name).await {
            Ok(v) if owns(Some(&v.labels), self.instance.as_deref()) => {}
            Ok(_) => {
                return Err(RuntimeError::Engine {
                    operation: "remove volume".to_string(),
                    message: format!("volume {name} is not berth's: remove it with docker volume rm yourself if you mean to"),
                })
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(map_error(&self.endpoint, "inspect volume", e)),
        }
        Counters::bump(&self.counters.volume);
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => {
                return Err(RuntimeError::Engine {
                    operation: "remove volume".to_string(),
                    message: format!(
                    "volume {name} is still in use ({message}): remove the app's containers first"
                ),
                })
            }
            Err(e) => return Err(map_error(&self.endpoint, "remove volume", e)),
        }
        if let Ok(mut known) = self.known_volumes.lock() {
            known.remove(name);
        }
        tracing::info!(volume = %name, "removed volume");
        Ok(())
    }

    /// After the app's container is gone: an anonymous volume (an image's VOLUME, maybe
    /// carried over from earlier containers) goes unless another container still uses it
    /// (409: an error, the volume stays and a later removal takes it). Only 64-hex names.
    pub(super) async fn remove_anonymous_now(&self, name: &str) -> Result<(), RuntimeError> {
        if !super::mounts::is_anonymous_name(name) {
            return Err(RuntimeError::Engine {
                operation: "remove volume".to_string(),
                message: format!("volume {name} is not an anonymous volume: berth only deletes named volumes through `berth volumes prune`"),
            });
        }
        Counters::bump(&self.counters.volume);
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => {
                tracing::info!(volume = %name, "removed anonymous volume of a removed app");
                Ok(())
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(map_error(&self.endpoint, "remove volume", e)),
        }
    }
}
