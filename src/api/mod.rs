//! The read-only status API (axum): apps, app detail, events, scaling decisions, the pending
//! plan, health/readiness, Prometheus metrics and the OpenAPI document; plus the client and
//! table rendering behind `berth status`, and the redaction used for every answer and log
//! line.
//!
//! Owns: routes and their JSON (`dto`), `/metrics` text (`metrics`), redaction (`redact`),
//! the bearer-token and read-only guards (`routes`), the `berth status` client (`client`,
//! `table`). Must not touch — the invariant: the API never writes. It reaches berth only
//! through `view::StatusView` (reads, copies, a read-only store handle); it never calls a
//! mutating runtime method, a proxy write or reload, or a store write, and anything but
//! GET/HEAD answers 405 before any handler runs.

pub mod client;
pub mod dto;
mod error;
pub mod metrics;
pub use crate::redact;
mod routes;
pub mod table;
pub mod view;

pub use error::ApiError;
pub use routes::OPENAPI;
pub use view::{ReadStore, StatusView};

use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Where `berth serve` listens for the API unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Environment variable holding the bearer token (server and `berth status`).
pub const TOKEN_ENV: &str = "BERTH_API_TOKEN";

/// Router settings.
#[derive(Clone, Default)]
pub struct ApiConfig {
    /// When set, every route requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| redact::REDACTED))
            .finish()
    }
}

/// Every route the router serves (all GET/HEAD), as written in `openapi.json`.
pub const ROUTES: [&str; 10] = [
    "/api/v1/apps",
    "/api/v1/apps/{name}",
    "/api/v1/apps/{name}/events",
    "/api/v1/apps/{name}/scaling",
    "/api/v1/events",
    "/api/v1/plan",
    "/api/v1/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// The whole API as a tower service; tests call it without a socket.
pub fn router<S: StatusView>(view: Arc<S>, config: &ApiConfig) -> Router {
    let token = routes::TokenCheck::new(config.token.as_deref());
    Router::new()
        .route("/api/v1/apps", get(routes::list_apps::<S>))
        .route("/api/v1/apps/{name}", get(routes::app_detail::<S>))
        .route("/api/v1/apps/{name}/events", get(routes::app_events::<S>))
        .route("/api/v1/apps/{name}/scaling", get(routes::app_scaling::<S>))
        .route("/api/v1/events", get(routes::events::<S>))
        .route("/api/v1/plan", get(routes::plan::<S>))
        .route("/api/v1/openapi.json", get(routes::openapi))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz::<S>))
        .route("/metrics", get(routes::prometheus::<S>))
        .fallback(routes::no_route)
        .with_state(view)
        .layer(axum::middleware::from_fn_with_state(
            token,
            routes::require_token,
        ))
        .layer(axum::middleware::from_fn(routes::read_only))
}

/// Binds the API's listener (a clear error when the address is taken).
pub async fn bind(address: &str) -> Result<TcpListener, ApiError> {
    TcpListener::bind(address)
        .await
        .map_err(|e| ApiError::Bind {
            address: address.to_string(),
            message: e.to_string(),
        })
}

/// Serves `router` on `listener` until `shutdown` resolves (in-flight requests finish).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ApiError::Serve {
            message: e.to_string(),
        })
}

/// The bearer token: the first line of `file` when given, else the `BERTH_API_TOKEN` value
/// passed in `env`; None when neither is set (no authentication).
pub fn load_token(env: Option<String>, file: Option<&Path>) -> Result<Option<String>, ApiError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ApiError::TokenFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            return Err(ApiError::TokenFile {
                path: path.to_path_buf(),
                message: "the file is empty".to_string(),
            });
        }
        return Ok(Some(token));
    }
    Ok(env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}
