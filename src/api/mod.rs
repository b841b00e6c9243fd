//! The read-only status API (axum): apps, app detail, events, scaling decisions, app logs
//! (`logs`), the read-only dashboard at `/` (`dashboard`), the pending plan, health/readiness, Prometheus metrics and the OpenAPI document; plus the client and
//! table rendering behind `berth status`, and the redaction used for every answer and log
//! line.
//!
//! Owns: routes and their JSON (`dto`), `/metrics` text (`metrics`), redaction (`redact`),
//! the bearer-token and read-only guards (`routes`), the catch-panic layer (a panicking
//! handler answers 500 with a JSON error and is logged), the `berth status` / `berth logs` client
//! (`client`, `table`), and the server and client error types (`error`). Must not touch — the invariant: the API never writes. It reaches berth only
//! through `view::StatusView` (reads, copies, a read-only store handle); it never calls a
//! mutating runtime method, a proxy write or reload, or a store write, and anything but
//! GET/HEAD answers 405 before any handler runs.

pub mod client;
pub mod dashboard;
pub mod dto;
mod error;
pub mod logs;
pub mod metrics;
pub use crate::redact;
mod routes;
pub mod table;
pub mod view;

pub use error::{ApiError, ClientError};
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
pub const ROUTES: [&str; 12] = [
    "/api/v1/apps",
    "/api/v1/apps/{name}",
    "/api/v1/apps/{name}/logs",
    "/api/v1/apps/{name}/events",
    "/api/v1/apps/{name}/scaling",
    "/api/v1/events",
    "/api/v1/plan",
    "/api/v1/leader",
    "/api/v1/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// The whole API as a tower service; tests call it without a socket.
pub fn router<S: StatusView>(view: Arc<S>, config: &ApiConfig) -> Router {
    let token = routes::TokenCheck::new(config.token.as_deref());
    let router = Router::new()
        .route("/api/v1/apps", get(routes::list_apps::<S>))
        .route("/api/v1/apps/{name}", get(routes::app_detail::<S>))
        .route("/api/v1/apps/{name}/events", get(routes::app_events::<S>))
        .route("/api/v1/apps/{name}/scaling", get(routes::app_scaling::<S>))
        .route("/api/v1/apps/{name}/logs", get(logs::app_logs::<S>))
        .route("/api/v1/events", get(routes::events::<S>))
        .route("/api/v1/plan", get(routes::plan::<S>))
        .route("/api/v1/leader", get(routes::leader::<S>))
        .route("/api/v1/openapi.json", get(routes::openapi))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz::<S>))
        .route("/metrics", get(routes::prometheus::<S>))
        .merge(dashboard::fragment_routes::<S>())
        .fallback(routes::no_route)
        .with_state(view);
    guarded(router, token).merge(open(dashboard::open_routes()))
}

/// The layers of the dashboard's routes that carry no data: catch-panic and read-only,
/// no token (the page is the login form).
fn open(router: Router) -> Router {
    router
        .layer(axum::middleware::from_fn(routes::read_only))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            routes::panicked,
        ))
}

/// The layers every route sits behind, outermost first: catch-panic (500 JSON, logged),
/// read-only (405), bearer token (401).
fn guarded(router: Router, token: routes::TokenCheck) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            token,
            routes::require_token,
        ))
        .layer(axum::middleware::from_fn(routes::read_only))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            routes::panicked,
        ))
}

/// Binds the API's listener (a clear error when the address is taken).
pub async fn bind(address: &str) -> Result<TcpListener, ApiError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ApiError::Bind {
            address: address.to_string(),
            source,
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
        .map_err(|source| ApiError::Serve { source })
}

/// The bearer token: the first line of `file` when given, else the `BERTH_API_TOKEN` value
/// passed in `env`; None when neither is set (no authentication).
pub fn load_token(env: Option<String>, file: Option<&Path>) -> Result<Option<String>, ApiError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ApiError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            return Err(ApiError::TokenFileEmpty {
                path: path.to_path_buf(),
            });
        }
        return Ok(Some(token));
    }
    Ok(env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("handler bug: DB_PASSWORD=hunter2 at byte 3")
    }

    async fn answer(router: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Log lines written during a test (the subscriber is set on this thread only).
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_and_the_router_keeps_serving() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);
        let router = guarded(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(routes::healthz)),
            routes::TokenCheck::new(Some("t0k")),
        );
        let (status, body) = answer(&router, "/boom", Some("t0k")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["error"], ApiError::Panicked.to_string(), "{body}");
        assert!(!body.contains("hunter2"), "{body}");
        // The token guard still runs before the handler.
        assert_eq!(
            answer(&router, "/boom", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = answer(&router, "/fine", Some("t0k")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("ERROR"), "{logs}");
        assert!(logs.contains("handler panicked"), "{logs}");
        assert!(logs.contains("DB_PASSWORD=<redacted>"), "{logs}");
        assert!(!logs.contains("hunter2"), "{logs}");
    }
}
