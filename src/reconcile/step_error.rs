//! `StepError`: why one step of an app failed. The step functions of apply (`app_run.rs`,
//! `app_retire.rs`, `swarm.rs`) and the image worker return it, and `ApplyReport::errors`
//! keeps the last one per app; the status and events show its text. Typed sources, shared
//! through `Arc` so a report stays cheap to clone. Must not touch: anything (types only).

use crate::proxy::ProxyError;
use crate::runtime::credentials::CredentialError;
use crate::runtime::RuntimeError;
use std::sync::Arc;

use super::request::RequestError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// An engine call failed (create, start, stop, remove, a volume, a service, a pull or a
    /// registry check).
    #[error(transparent)]
    Runtime(Arc<RuntimeError>),
    /// The registry credentials for a pull could not be read.
    #[error(transparent)]
    Credentials(Arc<CredentialError>),
    /// nginx refused or could not take the app's proxy change.
    #[error(transparent)]
    Proxy(Arc<ProxyError>),
    /// The container request could not be built (e.g. a missing host env value).
    #[error(transparent)]
    Request(Arc<RequestError>),
    /// The new container started but never became healthy, or exited (the probe's or the
    /// engine's words).
    #[error("{0}")]
    NeverHealthy(String),
    /// This controller lost its lease during the pass: the leader finishes the change.
    #[error("controller {controller} is not the leader any more (its lease was not renewed); the leader finishes this change")]
    NotLeader { controller: String },
}

impl StepError {
    /// Whether the spec's own containers failed (marks a rollout failed), rather than
    /// anything around them (retried on later passes).
    pub fn never_healthy(&self) -> bool {
        matches!(self, StepError::NeverHealthy(_))
    }
}

/// `From<Source>` for each typed source, wrapped in its variant's `Arc`.
macro_rules! from_sources {
    ($($source:ty => $variant:ident),* $(,)?) => {
        $(impl From<$source> for StepError {
            fn from(e: $source) -> Self {
                StepError::$variant(Arc::new(e))
            }
        })*
    };
}

from_sources! {
    RuntimeError => Runtime,
    CredentialError => Credentials,
    ProxyError => Proxy,
    RequestError => Request,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn the_source_is_kept_and_the_text_is_the_sources() {
        let e = StepError::from(RequestError::MissingHostEnv {
            name: "TOKEN".to_string(),
        });
        assert!(
            e.to_string().starts_with("env TOKEN has valueFrom: sdk"),
            "{e}"
        );
        assert!(!e.never_healthy());
        let never = StepError::NeverHealthy("probe failed: 503".to_string());
        assert!(never.never_healthy());
        assert_eq!(never.to_string(), "probe failed: 503");
        let lost = StepError::NotLeader {
            controller: "c1".to_string(),
        };
        assert!(lost.to_string().contains("controller c1 is not the leader"));
        assert!(lost.source().is_none());
    }
}
