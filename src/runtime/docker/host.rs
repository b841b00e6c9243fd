//! Read-only facts about the engine for `berth doctor`: its version, API version and clock,
//! and whether a network exists. Must not touch: anything (no mutating call).

use super::connect::map_error;
use super::DockerRuntime;
use crate::runtime::RuntimeError;
use bollard::errors::Error as BollardError;

/// What the engine says about itself.
#[derive(Clone, Debug)]
pub struct EngineFacts {
    pub version: String,
    pub api_version: String,
    /// The engine host's clock (RFC 3339), to compare with berth's.
    pub system_time: Option<String>,
}

impl DockerRuntime {
    /// The engine's version and clock (two read-only calls).
    pub async fn engine_facts(&self) -> Result<EngineFacts, RuntimeError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| map_error(&self.endpoint, "version", e))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| map_error(&self.endpoint, "info", e))?;
        Ok(EngineFacts {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            system_time: info.system_time,
        })
    }

    /// Does a network with this name exist (of any owner)?
    pub async fn network_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_network::<String>(name, None).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(map_error(&self.endpoint, "inspect network", e)),
        }
    }
}
