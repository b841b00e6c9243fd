//! Connecting to the engine and what a failed call means: parsing `DOCKER_HOST` the way the
//! docker CLI does (unix:// and tcp://, plain http), the ping and API version negotiation
//! behind [`DockerRuntime::connect`], and turning bollard errors into [`RuntimeError`]
//! (lowercase text, the innermost cause for connection failures).
//!
//! Must not touch: containers, networks or stats (the other files of `docker/` do those);
//! it makes no engine call but the ping and the version query.

use super::{Counters, DockerRuntime};
use crate::runtime::RuntimeError;
use bollard::errors::Error as BollardError;
use bollard::{Docker, API_DEFAULT_VERSION};
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// Where the docker CLI looks when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Per-request timeout (seconds); `stop` extends it by its own grace period.
pub(super) const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Port the docker CLI assumes for `tcp://host` without a port (plain HTTP).
const DEFAULT_TCP_PORT: u16 = 2375;

/// A parsed `DOCKER_HOST` value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(String),
    Tcp(String),
}

/// Parses a `DOCKER_HOST` value the way the docker CLI does for the schemes berth supports.
fn parse_docker_host(host: &str) -> Result<Endpoint, String> {
    let host = host.trim();
    if host.is_empty() {
        return parse_docker_host(DEFAULT_DOCKER_HOST);
    }
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("unix:// needs a socket path".to_string());
        }
        return Ok(Endpoint::Unix(path.to_string()));
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(host.to_string()));
    }
    let rest = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"));
    if let Some(rest) = rest {
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("cannot parse tcp address {host:?}"));
        }
        // host:port, [v6]:port, or a bare host (CLI default port 2375).
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[..i].ends_with(':') && !authority.ends_with(']'),
            None => false,
        };
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{DEFAULT_TCP_PORT}")
        };
        return Ok(Endpoint::Tcp(format!("tcp://{authority}")));
    }
    let scheme = host.split("://").next().unwrap_or(host);
    Err(format!(
        "unsupported DOCKER_HOST scheme {scheme:?}: berth supports unix:// and tcp://"
    ))
}

impl DockerRuntime {
    /// Connects like the docker CLI: `DOCKER_HOST` (unix:// or tcp://), else the default unix
    /// socket. Pings the engine and negotiates the API version (this engine speaks 1.41).
    /// `instance` scopes everything to containers labelled `berth.instance=<instance>`.
    pub async fn connect(instance: Option<String>) -> Result<Self, RuntimeError> {
        let host = std::env::var("DOCKER_HOST").ok();
        Self::connect_to(host.as_deref(), instance).await
    }

    /// Like [`connect`](Self::connect) with an explicit `DOCKER_HOST`-style address instead of
    /// the environment (`None` = default socket).
    pub async fn connect_to(
        host: Option<&str>,
        instance: Option<String>,
    ) -> Result<Self, RuntimeError> {
        let endpoint = match host {
            Some(h) if !h.trim().is_empty() => h.trim().to_string(),
            _ => DEFAULT_DOCKER_HOST.to_string(),
        };
        let unreachable = |message: String| RuntimeError::Unreachable {
            endpoint: endpoint.clone(),
            message,
        };
        let parsed = parse_docker_host(&endpoint).map_err(&unreachable)?;
        if matches!(parsed, Endpoint::Tcp(_))
            && std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty())
        {
            return Err(unreachable(
                "DOCKER_TLS_VERIFY is set but berth only speaks plain http to tcp:// engines"
                    .to_string(),
            ));
        }
        let docker = match &parsed {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            Endpoint::Tcp(addr) => {
                Docker::connect_with_http(addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
        }
        .map_err(|e| unreachable(root_cause(&e)))?;
        docker
            .ping()
            .await
            .map_err(|e| unreachable(root_cause(&e)))?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            unreachable(format!(
                "api version negotiation failed: {}",
                error_text(&e)
            ))
        })?;
        let version = docker.client_version();
        tracing::debug!(
            endpoint = %endpoint,
            api = %format!("{}.{}", version.major_version, version.minor_version),
            instance = ?instance,
            "connected to docker engine"
        );
        Ok(Self {
            docker,
            init: true,
            endpoint,
            instance,
            counters: Counters::default(),
            cfs_refused: AtomicBool::new(false),
            known_networks: Mutex::new(HashSet::new()),
            known_volumes: Mutex::new(HashSet::new()),
            created: Mutex::new(HashSet::new()),
        })
    }
}

/// What a failed engine call means for berth: an unreachable engine (the connection broke),
/// a timeout, or the engine's own answer (lowercased, with its http status).
pub(crate) fn map_error(endpoint: &str, operation: &str, err: BollardError) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Engine {
            operation: operation.to_string(),
            message: format!("{} (http {status_code})", lower_first(message.trim())),
        },
        BollardError::RequestTimeoutError => RuntimeError::Engine {
            operation: operation.to_string(),
            message: "the request timed out".to_string(),
        },
        e @ (BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::SocketNotFoundError(_)) => RuntimeError::Unreachable {
            endpoint: endpoint.to_string(),
            message: format!("{operation}: {}", root_cause(&e)),
        },
        other => RuntimeError::Engine {
            operation: operation.to_string(),
            message: error_text(&other),
        },
    }
}

pub(super) fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The innermost cause of a connection failure ("connection refused (os error 111)"),
/// without the http client's wrapper messages.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    lower_first(current.to_string().trim())
}

/// The error and its sources, deduplicated, lowercase first letters.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = lower_first(e.to_string().trim());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_parsing_follows_the_cli() {
        assert_eq!(
            parse_docker_host(""),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            parse_docker_host("unix:///tmp/d.sock"),
            Ok(Endpoint::Unix("/tmp/d.sock".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://127.0.0.1:2375"),
            Ok(Endpoint::Tcp("tcp://127.0.0.1:2375".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://localhost"),
            Ok(Endpoint::Tcp("tcp://localhost:2375".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://[::1]"),
            Ok(Endpoint::Tcp("tcp://[::1]:2375".into()))
        );
        assert_eq!(
            parse_docker_host("tcp://[::1]:1234/"),
            Ok(Endpoint::Tcp("tcp://[::1]:1234".into()))
        );
        assert!(parse_docker_host("ssh://me@host")
            .unwrap_err()
            .contains("unsupported"));
        assert!(parse_docker_host("unix://").is_err());
    }

    #[test]
    fn error_text_is_lowercase_and_chained() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = BollardError::from(io);
        assert_eq!(error_text(&e), "connection refused");
        assert_eq!(root_cause(&e), "connection refused");
    }

    #[test]
    fn engine_answers_and_broken_connections_map_apart() {
        let answer = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "Something broke".into(),
        };
        match map_error("unix:///x.sock", "start", answer) {
            RuntimeError::Engine { operation, message } => {
                assert_eq!(operation, "start");
                assert_eq!(message, "something broke (http 500)");
            }
            other => panic!("{other:?}"),
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        match map_error("unix:///x.sock", "list containers", BollardError::from(io)) {
            RuntimeError::Unreachable { endpoint, message } => {
                assert_eq!(endpoint, "unix:///x.sock");
                assert_eq!(message, "list containers: connection refused");
            }
            other => panic!("{other:?}"),
        }
    }
}
