//! `GET /api/v1/apps/{name}/logs`: the log lines of every replica of one app, each prefixed
//! with its container's name (`NAME | line`), redacted line by line like every answer
//! (`NAME=value` of a secret name, and the literal values of the app's own secret env
//! vars). Without `follow` the replicas' lines are merged by the engine's timestamps; with
//! `follow=true` the answer is streamed (chunked) as lines arrive and ends when every
//! replica's stream ends or the client leaves (the engine streams are dropped with it).
//!
//! Must not touch: anything but the `StatusView` (an observer list call and the observer's
//! read-only `logs`).

use super::error::ApiError;
use super::redact;
use super::routes::{app_name, digits, ensure_known, parse_since, query, RawPath, RawQuery};
use super::view::StatusView;
use crate::clock::now_ms;
use crate::runtime::{LogLine, LogRequest, ObservedContainer};
use crate::spec::EnvValue;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Lines per replica unless `tail` says otherwise.
pub const DEFAULT_TAIL: u32 = 200;
/// Most lines per replica one request may ask for.
pub const MAX_TAIL: u32 = 10_000;
const TEXT: &str = "text/plain; charset=utf-8";

static OPEN_FOLLOWS: AtomicUsize = AtomicUsize::new(0);

/// Followed log answers still streaming in this process (tests check that a client leaving
/// ends its stream).
pub fn open_follows() -> usize {
    OPEN_FOLLOWS.load(Ordering::SeqCst)
}

/// Counts one open follow while alive.
struct FollowGuard;

impl FollowGuard {
    fn new() -> Self {
        OPEN_FOLLOWS.fetch_add(1, Ordering::SeqCst);
        FollowGuard
    }
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        OPEN_FOLLOWS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The query: `tail` (1..=MAX_TAIL), `since` (the API's grammar; empty: none), `follow`
/// (`true`/`false`).
fn log_request(params: &BTreeMap<String, String>) -> Result<LogRequest, ApiError> {
    let tail = match params.get("tail") {
        None => DEFAULT_TAIL,
        Some(text) => match digits(text) {
            Some(n) if (1..=u64::from(MAX_TAIL)).contains(&n) => n as u32,
            _ => {
                return Err(ApiError::bad_query(
                    "tail",
                    format!("must be a whole number from 1 to {MAX_TAIL}, got {text:?}"),
                ))
            }
        },
    };
    let since_seconds = params
        .get("since")
        .filter(|s| !s.is_empty())
        .map(|s| parse_since(s, now_ms()).map(|ms| ms / 1000))
        .transpose()?;
    let follow = match params.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_query(
                "follow",
                format!("must be true or false, got {other:?}"),
            ))
        }
    };
    Ok(LogRequest {
        tail: Some(tail),
        since_seconds,
        follow,
    })
}

/// Redacts one output line: `NAME=value` pairs, then the app's literal secret values.
fn redacted(line: &str, secrets: &[String]) -> String {
    let mut text = redact::redact_text(line).into_owned();
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), redact::REDACTED);
        }
    }
    text
}

pub(crate) fn render(container: &str, line: &LogLine, secrets: &[String]) -> String {
    let mut text = redacted(&format!("{container} | {}", line.text), secrets);
    text.push('\n');
    text
}

/// Literal values of the app's env vars with a secret name (at least 4 bytes, so a short
/// value cannot blank out ordinary text), longest first.
pub(crate) fn secret_values<S: StatusView>(view: &S, app: &str) -> Vec<String> {
    let mut values: Vec<String> = view.with_last_pass(|last| {
        last.and_then(|l| l.desired.apps.get(app))
            .map(|d| {
                d.spec
                    .env
                    .iter()
                    .filter(|v| redact::is_secret_name(&v.name))
                    .filter_map(|v| match &v.value {
                        EnvValue::Literal(value) if value.len() >= 4 => Some(value.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

pub(crate) async fn app_logs<S: StatusView>(
    State(view): State<Arc<S>>,
    OriginalUri(uri): OriginalUri,
    raw_name: RawPath,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    let name = app_name(raw_name, &uri)?;
    let params = query(raw, &["tail", "since", "follow"])?;
    let request = log_request(&params)?;
    ensure_known(view.as_ref(), &name).await?;
    let containers: Vec<ObservedContainer> = view
        .containers()
        .await
        .map_err(|source| ApiError::Logs {
            container: format!("app {name}"),
            source,
        })?
        .into_iter()
        .filter(|c| c.app == name)
        .collect();
    let secrets = secret_values(view.as_ref(), &name);
    let mut streams = Vec::with_capacity(containers.len());
    for container in &containers {
        let lines = view
            .logs(&container.id, &request)
            .await
            .map_err(|source| ApiError::Logs {
                container: container.name.clone(),
                source,
            })?;
        streams.push((container.name.clone(), lines));
    }
    if request.follow {
        return Ok(followed(streams, secrets));
    }
    let mut all: Vec<(String, usize, String)> = Vec::new();
    for (container, lines) in streams {
        let lines: Vec<_> = lines.collect().await;
        for (i, line) in lines.into_iter().enumerate() {
            let line = line.map_err(|source| ApiError::Logs {
                container: container.clone(),
                source,
            })?;
            all.push((
                line.timestamp.clone(),
                i,
                render(&container, &line, &secrets),
            ));
        }
    }
    // Stable: the engine's timestamps order replicas; ties keep each replica's order.
    all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let body: String = all.into_iter().map(|(_, _, text)| text).collect();
    Ok((StatusCode::OK, [(CONTENT_TYPE, TEXT)], body).into_response())
}

/// The chunked answer of `follow=true`: lines as they arrive from any replica.
fn followed(streams: Vec<(String, crate::runtime::LogLines)>, secrets: Vec<String>) -> Response {
    let secrets = Arc::new(secrets);
    let merged = futures_util::stream::select_all(streams.into_iter().map(|(container, lines)| {
        let secrets = secrets.clone();
        lines
            .map(move |line| match line {
                Ok(line) => render(&container, &line, &secrets),
                Err(e) => redacted(
                    &format!("{container} | berth: the log stream ended: {e}\n"),
                    &secrets,
                ),
            })
            .boxed()
    }));
    let guard = FollowGuard::new();
    let body = merged.map(move |text| {
        let _alive = &guard;
        Ok::<_, std::convert::Infallible>(Bytes::from(text))
    });
    (
        StatusCode::OK,
        [(CONTENT_TYPE, TEXT)],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_values() {
        let r = log_request(&params(&[])).unwrap();
        assert_eq!(r.tail, Some(DEFAULT_TAIL));
        assert!(!r.follow);
        assert_eq!(r.since_seconds, None);
        let r = log_request(&params(&[
            ("tail", "5"),
            ("follow", "true"),
            ("since", "1000"),
        ]))
        .unwrap();
        assert_eq!(
            (r.tail, r.follow, r.since_seconds),
            (Some(5), true, Some(1))
        );
        assert_eq!(
            log_request(&params(&[("since", "")]))
                .unwrap()
                .since_seconds,
            None
        );
        for bad in [
            ("tail", "0"),
            ("tail", "10001"),
            ("tail", "-1"),
            ("follow", "yes"),
            ("follow", ""),
            ("since", "5w"),
        ] {
            assert!(log_request(&params(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lines_are_redacted() {
        let line = LogLine {
            timestamp: "t".into(),
            stderr: false,
            text: "connecting with DB_PASSWORD=hunter2 and token s3cr3t-value".into(),
        };
        let text = render("berth-web-1", &line, &["s3cr3t-value".to_string()]);
        assert_eq!(
            text,
            "berth-web-1 | connecting with DB_PASSWORD=<redacted> and token <redacted>\n"
        );
    }
}
