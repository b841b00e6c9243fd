//! The read-only dashboard on the status API's listener. `GET /` (and `/ui/assets/*`)
//! serve a page with no data: a login form, the stylesheet and the script, embedded with
//! `include_str!` (no CDN, no npm). The data comes from `GET /ui/overview` and
//! `GET /ui/apps/{name}`: HTML fragments rendered on the server with tera from the same
//! DTOs as the JSON API, redacted, behind the same bearer-token guard as every API route;
//! the script fetches them with the token kept in the tab's sessionStorage and polls every
//! 2 s (a restarting controller is retried, not fatal). The overview is rendered once per
//! published pass and second, however many browsers poll (`OverviewMemo`).
//!
//! Must not touch: anything but the `StatusView` (reads only); GET/HEAD only like the API.

pub mod chart;
pub mod render;

use super::error::ApiError;
use super::logs;
use super::routes::{app_name, RawPath};
use super::view::StatusView;
use crate::clock::now_ms;
use crate::runtime::LogRequest;
use crate::store::EventQuery;
use axum::extract::{OriginalUri, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use std::sync::Arc;

/// Routes of the dashboard that need no token (they carry no data).
pub const OPEN_ROUTES: [&str; 3] = ["/", "/ui/assets/app.js", "/ui/assets/style.css"];
/// Routes of the dashboard behind the token (HTML fragments with data).
pub const FRAGMENT_ROUTES: [&str; 2] = ["/ui/overview", "/ui/apps/{name}"];

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
/// Events shown on an app page.
const APP_EVENTS: u32 = 30;
/// Log lines per replica on an app page.
const APP_LOG_LINES: u32 = 20;
/// Same-origin scripts and styles only: fragments are inserted with innerHTML, so nothing
/// inline may run even if a value escaped the template's escaping.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn with_headers(content_type: &'static str, body: impl Into<String>, cache: bool) -> Response {
    let mut response = (StatusCode::OK, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if cache { "max-age=300" } else { "no-store" }),
    );
    response
}

async fn shell() -> Response {
    with_headers("text/html; charset=utf-8", render::shell(), false)
}

async fn app_js() -> Response {
    with_headers("text/javascript; charset=utf-8", APP_JS, true)
}

async fn style_css() -> Response {
    with_headers("text/css; charset=utf-8", STYLE_CSS, true)
}

/// The routes that carry no data (no token needed).
pub fn open_routes() -> Router {
    Router::new()
        .route("/", get(shell))
        .route("/ui/assets/app.js", get(app_js))
        .route("/ui/assets/style.css", get(style_css))
}

/// The fragments (behind the token guard, like the API).
pub fn fragment_routes<S: StatusView>() -> Router<Arc<S>> {
    let memo = Arc::new(OverviewMemo::default());
    Router::new()
        .route(
            "/ui/overview",
            get(move |State(view): State<Arc<S>>| {
                let memo = memo.clone();
                async move { overview(view, &memo).await }
            }),
        )
        .route("/ui/apps/{name}", get(app_page::<S>))
}

/// The overview last rendered, keyed by the published pass and the wall-clock second: every
/// browser polling within the same second of the same pass gets the same text, rendered
/// once. This controller's own passes write the app rows before they publish, so a new pass
/// is always rendered fresh; rows written by another writer (the autoscaler's overrides, an
/// HA leader seen from a follower) show at most a second late. Only this router's own
/// memory; nothing of berth's state is written.
#[derive(Default)]
struct OverviewMemo(std::sync::Mutex<Option<(OverviewKey, String)>>);

/// (time of the published pass, wall-clock second).
type OverviewKey = (Option<i64>, i64);

impl OverviewMemo {
    fn get(&self, key: OverviewKey) -> Option<String> {
        let memo = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memo.as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, body)| body.clone())
    }

    fn put(&self, key: OverviewKey, body: &str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, body.to_string()));
    }
}

fn html(result: Result<String, tera::Error>) -> Result<Response, ApiError> {
    result
        .map(|body| with_headers("text/html; charset=utf-8", body, false))
        .map_err(|e| ApiError::Render {
            message: e.to_string(),
        })
}

async fn overview<S: StatusView>(view: Arc<S>, memo: &OverviewMemo) -> Result<Response, ApiError> {
    let now = now_ms();
    let key = (view.with_last_pass(|last| last.map(|l| l.at)), now / 1000);
    if let Some(body) = memo.get(key) {
        return Ok(with_headers("text/html; charset=utf-8", body, false));
    }
    let rows = view.store().apps().await?;
    let context = view.with_last_pass(|last| render::overview(&rows, last, now));
    let rendered = render::render("overview.html", context);
    if let Ok(body) = &rendered {
        memo.put(key, body);
    }
    html(rendered)
}

async fn app_page<S: StatusView>(
    State(view): State<Arc<S>>,
    OriginalUri(uri): OriginalUri,
    raw_name: RawPath,
) -> Result<Response, ApiError> {
    let name = app_name(raw_name, &uri)?;
    let store = view.store();
    let row = store.app(&name).await?;
    let override_ = store
        .replica_override_rows()
        .await?
        .into_iter()
        .find(|r| r.app == name);
    let failed = store.failed_rollouts().await?.get(&name).cloned();
    let detail = view.with_last_pass(|last| {
        super::dto::app_known(&name, row.as_ref(), last)
            .then(|| super::dto::app_detail(&name, row.as_ref(), last, override_, failed))
    });
    let Some(mut detail) = detail else {
        return Err(ApiError::AppNotFound { name });
    };
    super::dto::fill_probes(&mut detail, |id| view.probe(id));
    let events = store
        .events(&EventQuery {
            app: Some(name.clone()),
            event_type: None,
            since: None,
            before_id: None,
            limit: APP_EVENTS,
        })
        .await?;
    let decisions = store.scaling_decisions(&name, 500).await?;
    let logs = recent_logs(view.as_ref(), &name).await;
    let extras = render::AppExtras {
        events,
        decisions,
        logs,
    };
    let now = now_ms();
    let context = view.with_last_pass(|last| render::app(&detail, &extras, last, now));
    html(render::render("app.html", context))
}

/// The newest lines of each replica, merged by time (the same text as the logs route).
async fn recent_logs<S: StatusView>(view: &S, app: &str) -> Result<Vec<String>, String> {
    let containers = view.containers().await.map_err(|e| e.to_string())?;
    let request = LogRequest {
        tail: Some(APP_LOG_LINES),
        since_seconds: None,
        follow: false,
    };
    let secrets = logs::secret_values(view, app);
    let mut all = Vec::new();
    for c in containers.iter().filter(|c| c.app == app) {
        let lines = view
            .logs(&c.id, &request)
            .await
            .map_err(|e| e.to_string())?;
        let lines: Vec<_> = lines.collect().await;
        for line in lines.into_iter().flatten() {
            let text = logs::render(&c.name, &line, &secrets);
            all.push((line.timestamp, text.trim_end().to_string()));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all.into_iter().map(|(_, text)| text).collect())
}
