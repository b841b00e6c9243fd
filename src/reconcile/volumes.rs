//! `berth volumes prune APP`: the one way berth deletes a named volume. What may go is
//! decided here (the app is not in the source, no file of the source is unreadable, the app
//! has no container left); the deletion goes through the mutating runtime like every other
//! engine change. Must not touch: volumes of apps still in the source, anonymous volumes,
//! containers, nginx, the store.

use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::spec::LoadedSpecs;

/// Why nothing was pruned.
#[derive(Debug, thiserror::Error)]
pub enum VolumePruneError {
    #[error("app {app} is still in the source (or a spec file cannot be read): remove it from the source and let berth remove its containers first")]
    InSource { app: String },
    #[error("app {app} still has containers: wait until berth has removed them (berth serve or apply --once), then prune")]
    HasContainers { app: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The named volumes of `app` that may be deleted now (empty: none left).
pub async fn prunable_volumes<R: ContainerRuntime>(
    runtime: &R,
    loaded: &LoadedSpecs,
    app: &str,
) -> Result<Vec<String>, VolumePruneError> {
    let named = loaded.apps.contains_key(app)
        || loaded.issues.iter().any(|i| i.app.as_deref() == Some(app));
    if named || !loaded.unreadable_files.is_empty() {
        return Err(VolumePruneError::InSource {
            app: app.to_string(),
        });
    }
    if runtime.observe().await?.iter().any(|c| c.app == app) {
        return Err(VolumePruneError::HasContainers {
            app: app.to_string(),
        });
    }
    Ok(runtime
        .volumes(Some(app))
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect())
}

/// Deletes `names` (from [`prunable_volumes`]), stopping at the first failure.
pub async fn prune_volumes<R: ContainerRuntime>(
    runtime: &R,
    names: &[String],
) -> Result<(), VolumePruneError> {
    for name in names {
        runtime.remove_volume(name).await?;
    }
    Ok(())
}
