//! The HTTP handlers, the two guards every request passes: `read_only` (anything but
//! GET/HEAD answers 405) and `require_token` (when a token is configured, every route needs
//! `Authorization: Bearer <token>`), and `panicked`, the catch-panic answer. Every JSON body
//! goes through `json`, which redacts it as a whole. Query values are parsed strictly, to
//! the grammar `openapi.json` declares, without slicing strings at byte offsets (a request
//! must never panic). Must not touch: anything but the `StatusView` it is handed (reads
//! only).

use super::client::encode;
use super::dto;
use super::error::ApiError;
use super::metrics::{self, Scrape};
use super::redact;
use super::view::StatusView;
use crate::clock::now_ms;
use crate::store::{EventQuery, EventRow, EventType, MAX_EVENT_PAGE, MAX_SCALING_PAGE};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The OpenAPI document served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const DEFAULT_EVENT_PAGE: u32 = 100;
const DEFAULT_SCALING_PAGE: u32 = 50;

type Handled = Result<Response, ApiError>;
pub(crate) type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;
pub(crate) type RawPath = Result<Path<String>, PathRejection>;

/// Most digits a `since` number may have (10^15 ms is ~31,700 years).
const MAX_SINCE_DIGITS: usize = 15;
/// `since` units and their length in milliseconds.
const SINCE_UNITS: [(char, i64); 4] = [
    ('s', 1_000),
    ('m', 60_000),
    ('h', 3_600_000),
    ('d', 86_400_000),
];

/// Serializes, redacts and answers with `application/json`.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut value = serde_json::to_value(body).unwrap_or_else(
        |e| serde_json::json!({ "error": format!("cannot serialize the answer: {e}") }),
    );
    redact::redact_json(&mut value);
    let bytes = serde_json::to_vec(&value).expect("a json value serializes");
    (status, [(CONTENT_TYPE, "application/json")], bytes).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json(self.status(), &serde_json::json!({ "error": self.chain() }));
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"berth\""),
                );
            }
            ApiError::MethodNotAllowed { .. } => {
                headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        response
    }
}

/// The catch-panic layer's answer: 500 with the API's JSON error body; the panic message
/// (redacted) goes to the log, never to the client.
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(not a string)");
    tracing::error!(
        panic = %redact::redact_text(message),
        "an api request handler panicked; answered 500 and kept serving"
    );
    ApiError::Panicked.into_response()
}

/// Outermost guard: the API is read-only, so anything but GET and HEAD is 405, on every
/// path (known or not), before authentication.
pub(crate) async fn read_only(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed {
            method: method.to_string(),
        }
        .into_response();
    }
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "api request"
    );
    response
}

/// The configured token, kept as a digest so the comparison takes the same time whatever
/// the candidate.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    digest: Option<Arc<[u8; 32]>>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl TokenCheck {
    pub(crate) fn new(token: Option<&str>) -> Self {
        Self {
            digest: token.map(|t| Arc::new(digest(t))),
        }
    }

    fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(expected) = &self.digest else {
            return true;
        };
        let Some(candidate) = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        let got = digest(candidate);
        got.iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

pub(crate) async fn require_token(
    State(check): State<TokenCheck>,
    request: Request,
    next: Next,
) -> Response {
    if check.allows(request.headers().get(AUTHORIZATION)) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The query's parameters: each at most once, each one of `allowed`.
pub(crate) fn query(raw: RawQuery, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(pairs) = raw.map_err(|e| ApiError::bad_query("(query string)", e.body_text()))?;
    let mut params = BTreeMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad_query(
                &name,
                format!("unknown parameter; allowed: {}", allowed.join(", ")),
            ));
        }
        if params.contains_key(&name) {
            return Err(ApiError::bad_query(
                &name,
                "given more than once; give it once",
            ));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// A whole number written as plain ASCII digits (no sign, no spaces), as OpenAPI's
/// `integer` means it.
pub(crate) fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn limit(params: &BTreeMap<String, String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => match digits(text) {
            Some(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u32),
            _ => Err(ApiError::bad_query(
                "limit",
                format!("must be a whole number from 1 to {max}, got {text:?}"),
            )),
        },
    }
}

fn before(params: &BTreeMap<String, String>) -> Result<Option<i64>, ApiError> {
    params
        .get("before")
        .map(|text| {
            digits(text)
                .and_then(|id| i64::try_from(id).ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    ApiError::bad_query("before", format!("must be an event id, got {text:?}"))
                })
        })
        .transpose()
}

/// `since`: unix milliseconds, or a duration back from now (`90s`, `15m`, `2h`, `7d`): 1 to
/// 15 ASCII digits and an optional unit, the pattern `openapi.json` declares. A duration
/// reaching before 1970 means 0. The empty value is "no filter" and never reaches here.
pub(crate) fn parse_since(text: &str, now_ms: i64) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_query(
            "since",
            format!(
                "must be unix milliseconds or a duration like 90s, 15m, 2h, 7d (at most {MAX_SINCE_DIGITS} digits); got {text:?}"
            ),
        )
    };
    // `strip_suffix` with a char never cuts inside a multi-byte character.
    let (number, unit_ms) = SINCE_UNITS
        .iter()
        .find_map(|(unit, ms)| text.strip_suffix(*unit).map(|n| (n, Some(*ms))))
        .unwrap_or((text, None));
    if number.len() > MAX_SINCE_DIGITS {
        return Err(bad());
    }
    let number = digits(number)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(bad)?;
    Ok(match unit_ms {
        None => number,
        Some(ms) => now_ms.saturating_sub(number.saturating_mul(ms)).max(0),
    })
}

/// The app name from the path; a path that does not decode to UTF-8 is a 400 in the API's
/// JSON, not axum's plain-text rejection.
pub(crate) fn app_name(raw: RawPath, uri: &axum::http::Uri) -> Result<String, ApiError> {
    raw.map(|Path(name)| name).map_err(|e| ApiError::BadPath {
        path: uri.path().to_string(),
        message: e.body_text(),
    })
}

/// A page of events and where the next one starts.
#[derive(Debug, Serialize)]
struct EventPage {
    events: Vec<EventRow>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
    /// The next page's URL (same filters, `since` resolved), or null.
    next: Option<String>,
}

async fn event_page<S: StatusView>(
    view: &S,
    path: &str,
    app: Option<String>,
    params: &BTreeMap<String, String>,
) -> Handled {
    let limit = limit(params, DEFAULT_EVENT_PAGE, MAX_EVENT_PAGE)?;
    // An empty `since=` is no filter, like an empty `type=` or `app=` (openapi.json says so).
    let since = params
        .get("since")
        .filter(|s| !s.is_empty())
        .map(|s| parse_since(s, now_ms()))
        .transpose()?;
    let before_id = before(params)?;
    let event_type = params
        .get("type")
        .filter(|t| !t.is_empty())
        .map(|t| EventType::parse(t));
    let query = EventQuery {
        app: app.clone(),
        event_type: event_type.clone(),
        since,
        before_id,
        limit,
    };
    let events = view.store().events(&query).await?;
    let next_before = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    let next = next_before.map(|before| {
        let mut url = format!("{path}?limit={limit}&before={before}");
        if params.contains_key("app") {
            if let Some(app) = &app {
                url.push_str(&format!("&app={}", encode(app)));
            }
        }
        if let Some(t) = &event_type {
            url.push_str(&format!("&type={}", encode(t.as_str())));
        }
        if let Some(since) = since {
            url.push_str(&format!("&since={since}"));
        }
        url
    });
    Ok(json(
        StatusCode::OK,
        &EventPage {
            events,
            next_before,
            next,
        },
    ))
}

pub(crate) async fn ensure_known<S: StatusView>(view: &S, name: &str) -> Result<(), ApiError> {
    let row = view.store().app(name).await?;
    if view.with_last_pass(|last| dto::app_known(name, row.as_ref(), last)) {
        Ok(())
    } else {
        Err(ApiError::AppNotFound {
            name: name.to_string(),
        })
    }
}

pub(crate) async fn list_apps<S: StatusView>(State(view): State<Arc<S>>) -> Handled {
    let rows = view.store().apps().await?;
    let list = view.with_last_pass(|last| dto::app_list(&rows, last));
    Ok(json(StatusCode::OK, &list))
}

pub(crate) async fn app_detail<S: StatusView>(
    State(view): State<Arc<S>>,
    OriginalUri(uri): OriginalUri,
    raw_name: RawPath,
) -> Handled {
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
        dto::app_known(&name, row.as_ref(), last)
            .then(|| dto::app_detail(&name, row.as_ref(), last, override_, failed))
    });
    let Some(mut detail) = detail else {
        return Err(ApiError::AppNotFound { name });
    };
    dto::fill_probes(&mut detail, |id| view.probe(id));
    Ok(json(StatusCode::OK, &detail))
}

pub(crate) async fn app_events<S: StatusView>(
    State(view): State<Arc<S>>,
    OriginalUri(uri): OriginalUri,
    raw_name: RawPath,
    raw: RawQuery,
) -> Handled {
    let name = app_name(raw_name, &uri)?;
    let params = query(raw, &["type", "since", "before", "limit"])?;
    ensure_known(view.as_ref(), &name).await?;
    event_page(view.as_ref(), uri.path(), Some(name), &params).await
}

pub(crate) async fn events<S: StatusView>(State(view): State<Arc<S>>, raw: RawQuery) -> Handled {
    let params = query(raw, &["app", "type", "since", "before", "limit"])?;
    let app = params.get("app").filter(|a| !a.is_empty()).cloned();
    event_page(view.as_ref(), "/api/v1/events", app, &params).await
}

pub(crate) async fn app_scaling<S: StatusView>(
    State(view): State<Arc<S>>,
    OriginalUri(uri): OriginalUri,
    raw_name: RawPath,
    raw: RawQuery,
) -> Handled {
    let name = app_name(raw_name, &uri)?;
    let params = query(raw, &["limit"])?;
    let limit = limit(&params, DEFAULT_SCALING_PAGE, MAX_SCALING_PAGE)?;
    ensure_known(view.as_ref(), &name).await?;
    let store = view.store();
    let override_ = store
        .replica_override_rows()
        .await?
        .into_iter()
        .find(|r| r.app == name);
    let decisions = store.scaling_decisions(&name, limit).await?;
    let body = view.with_last_pass(|last| dto::scaling(&name, last, override_, decisions));
    Ok(json(StatusCode::OK, &body))
}

pub(crate) async fn plan<S: StatusView>(State(view): State<Arc<S>>, raw: RawQuery) -> Handled {
    let params = query(raw, &["source"])?;
    let plan = match params.get("source").map(String::as_str) {
        None | Some("fresh") => view
            .pending_plan()
            .await
            .map_err(|source| ApiError::Plan { source })?,
        Some("last") => view
            .with_last_pass(|last| last.map(|l| l.plan.clone()))
            .ok_or_else(|| ApiError::NotReady {
                reason: "no reconcile pass has finished yet".to_string(),
            })?,
        Some(other) => {
            return Err(ApiError::bad_query(
                "source",
                format!("must be fresh or last, got {other:?}"),
            ))
        }
    };
    Ok(json(StatusCode::OK, &plan))
}

/// `GET /api/v1/leader`: who leads, the lease's epoch and expiry, and whether this
/// controller is the leader (always, with a SQLite store).
pub(crate) async fn leader<S: StatusView>(State(view): State<Arc<S>>) -> Response {
    json(StatusCode::OK, &view.leader())
}

pub(crate) async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

pub(crate) async fn readyz<S: StatusView>(State(view): State<Arc<S>>) -> Handled {
    if let Err(e) = view.store().ping().await {
        return Err(ApiError::NotReady {
            reason: format!("the store does not answer: {e}"),
        });
    }
    let Some(at) = view.with_last_pass(|last| last.map(|l| l.at)) else {
        return Err(ApiError::NotReady {
            reason: "the first reconcile pass has not finished yet".to_string(),
        });
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "ready": true, "last_pass_at": at }),
    ))
}

pub(crate) async fn prometheus<S: StatusView>(State(view): State<Arc<S>>) -> Response {
    let store = view.store();
    let rows = store.apps().await;
    let overrides = store.replica_override_rows().await.unwrap_or_default();
    let store_up = rows.is_ok();
    let rows = rows.unwrap_or_default();
    let counters = view.metrics();
    let text = view.with_last_pass(|last| {
        let list = dto::app_list(&rows, last);
        metrics::render(&Scrape {
            counters: &counters,
            apps: &list.apps,
            overrides: &overrides,
            revision: last.map(|l| l.desired.revision.as_str()),
            last_pass_at: last.map(|l| l.at),
            spec_issues: last.map(|l| l.issues.len()),
            store_up,
            version: env!("CARGO_PKG_VERSION"),
        })
    });
    let mut text = redact::redact_text(&text).into_owned();
    text.push_str(&crate::notify::prometheus_text());
    (
        StatusCode::OK,
        [(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

pub(crate) async fn no_route(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NoRoute {
        path: uri.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_ms_and_durations() {
        let now = 10_000_000_000;
        assert_eq!(parse_since("1234", now).unwrap(), 1234);
        assert_eq!(parse_since("90s", now).unwrap(), now - 90_000);
        assert_eq!(parse_since("15m", now).unwrap(), now - 900_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_since("1d", now).unwrap(), now - 86_400_000);
        assert_eq!(
            parse_since("999999999999999d", now).unwrap(),
            0,
            "before 1970"
        );
        assert_eq!(parse_since("0", now).unwrap(), 0);
        for bad in [
            "",
            "x",
            "5w",
            "-3",
            "-3m",
            "m",
            "+5",
            " 5",
            "5 ",
            "5\n",
            "1234567890123456",
            "\u{d8}",
            "5\u{d8}",
            "\u{d8}m",
            "m\u{d8}",
            "\u{663}",
            "1.5h",
            "5mm",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_plain_ascii_digits() {
        assert_eq!(digits("42"), Some(42));
        assert_eq!(digits("007"), Some(7));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1.0",
            "\u{663}",
            "99999999999999999999999",
        ] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn token_check() {
        let open = TokenCheck::new(None);
        assert!(open.allows(None));
        let check = TokenCheck::new(Some("s3cret"));
        let header = |v: &'static str| HeaderValue::from_static(v);
        assert!(check.allows(Some(&header("Bearer s3cret"))));
        assert!(check.allows(Some(&header("bearer s3cret"))));
        assert!(!check.allows(Some(&header("Bearer s3cre"))));
        assert!(!check.allows(Some(&header("Basic s3cret"))));
        assert!(!check.allows(Some(&header("s3cret"))));
        assert!(!check.allows(None));
    }
}
