//! Outgoing notifications: a JSON POST to each `--notify-url` for the events an operator
//! wants to hear about (failed rollouts, quarantines, crash loops, refused prunes, source
//! degraded/recovered, scaling decisions; `--notify-on` chooses), signed with HMAC-SHA256
//! in the git webhook's header format (`X-Hub-Signature-256: sha256=<hex>`) when a secret is
//! set, retried with exponential backoff. Fed by the store's tap (a bounded channel filled
//! after each record is committed, never waiting), drained by one task the daemon starts;
//! deliveries run concurrently inside that task. A delivery that still fails after its
//! retries is recorded as a `notify-failed` event and counted; it is never an error of a
//! pass.
//!
//! Must not touch: Docker, nginx, the spec; the store only to tap it and to record the
//! `notify-failed` event.

use crate::clock::now_ms;
use crate::redact;
use crate::store::{EventType, NewEvent, Recorded, Store};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// What `--notify-on` accepts (and its default: all of them).
pub const KINDS: [&str; 8] = [
    "rollout-failed",
    "quarantined",
    "crash-looping",
    "prune-refused",
    "source-degraded",
    "source-recovered",
    "scaling",
    "all",
];
/// Records waiting for the notifier; more are dropped (and counted) rather than waited for.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// The event kind recorded when a delivery gave up.
pub const FAILED_EVENT: &str = "notify-failed";
/// Header carrying the signature (the same as GitHub's webhooks and berth's own webhook).
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

static SENT: AtomicU64 = AtomicU64::new(0);
static RETRIED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Deliveries so far in this process: (sent, retried attempts, given up).
pub fn counts() -> (u64, u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        RETRIED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

/// Prometheus text of the notifier's counters (appended to `/metrics`).
pub fn prometheus_text() -> String {
    let (sent, retried, failed) = counts();
    format!(
        "# HELP berth_notify_deliveries_total Notification deliveries by outcome (sent, or failed after every retry).\n\
         # TYPE berth_notify_deliveries_total counter\n\
         berth_notify_deliveries_total{{outcome=\"sent\"}} {sent}\n\
         berth_notify_deliveries_total{{outcome=\"failed\"}} {failed}\n\
         # HELP berth_notify_retries_total Notification attempts that failed and were retried.\n\
         # TYPE berth_notify_retries_total counter\n\
         berth_notify_retries_total {retried}\n\
         # HELP berth_notify_dropped_total Records not offered to the notifier because its queue was full.\n\
         # TYPE berth_notify_dropped_total counter\n\
         berth_notify_dropped_total {}\n",
        crate::store::tap_dropped()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("unknown --notify-on kind {kind:?}; choose from {}", KINDS.join(", "))]
    UnknownKind { kind: String },
    #[error("bad --notify-url {url:?}: give an http:// or https:// url")]
    BadUrl { url: String },
    #[error("the store already has a listener; start one notifier per store")]
    AlreadyTapped,
}

/// Where and what to send.
#[derive(Clone)]
pub struct NotifyConfig {
    pub urls: Vec<reqwest::Url>,
    /// HMAC-SHA256 key (`BERTH_NOTIFY_SECRET`).
    pub secret: Option<String>,
    /// Kinds to send (`KINDS` without "all").
    pub kinds: BTreeSet<String>,
    /// Attempts after the first one.
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field(
                "urls",
                &self.urls.iter().map(display_url).collect::<Vec<_>>(),
            )
            .field("secret", &self.secret.as_ref().map(|_| redact::REDACTED))
            .field("kinds", &self.kinds)
            .finish()
    }
}

/// A URL as berth shows it: without user and password (they may hold a token).
pub fn display_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

impl NotifyConfig {
    /// From the command line: URLs, the kinds (empty: all), the secret.
    pub fn new(
        urls: &[String],
        kinds: &[String],
        secret: Option<String>,
    ) -> Result<NotifyConfig, NotifyError> {
        let urls = urls
            .iter()
            .map(|u| {
                reqwest::Url::parse(u)
                    .ok()
                    .filter(|p| matches!(p.scheme(), "http" | "https"))
                    .ok_or_else(|| NotifyError::BadUrl {
                        url: redact::redact_text(u).into_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut chosen = BTreeSet::new();
        for kind in kinds {
            if !KINDS.contains(&kind.as_str()) {
                return Err(NotifyError::UnknownKind { kind: kind.clone() });
            }
            chosen.insert(kind.clone());
        }
        if chosen.is_empty() || chosen.contains("all") {
            chosen = KINDS[..KINDS.len() - 1]
                .iter()
                .map(|k| k.to_string())
                .collect();
        }
        Ok(NotifyConfig {
            urls,
            secret: secret.filter(|s| !s.is_empty()),
            kinds: chosen,
            retries: 5,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        })
    }
}

/// The JSON body for a record, when its kind is chosen (pure).
pub fn body_of(record: &Recorded, kinds: &BTreeSet<String>) -> Option<Value> {
    let mut body = match record {
        Recorded::Event(event) => {
            let kind = event.event_type.as_str();
            if !kinds.contains(kind) {
                return None;
            }
            let subject = event.app.as_deref().unwrap_or("source");
            json!({
                "kind": kind,
                "app": event.app,
                "message": event.message,
                "revision": event.revision,
                "source_file": event.source_file,
                "at": event.at,
                "details": event.details,
                "text": format!("berth: {subject}: {kind}: {}", event.message),
            })
        }
        Recorded::Scaling(decision) => {
            if !kinds.contains("scaling") {
                return None;
            }
            json!({
                "kind": "scaling",
                "app": decision.app,
                "message": decision.reason,
                "at": decision.at,
                "from_replicas": decision.from_replicas,
                "to_replicas": decision.to_replicas,
                "details": { "metrics": decision.metrics, "factors": decision.factors },
                "text": format!(
                    "berth: {}: scaled {} -> {} replicas: {}",
                    decision.app, decision.from_replicas, decision.to_replicas, decision.reason
                ),
            })
        }
    };
    redact::redact_json(&mut body);
    Some(body)
}

/// Taps `store` and returns the task that drains it (the daemon runs it).
pub fn start(
    store: &Store,
    config: NotifyConfig,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, NotifyError> {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    if !store.tap(sender) {
        return Err(NotifyError::AlreadyTapped);
    }
    Ok(run(store.clone(), Arc::new(config), receiver))
}

async fn run(store: Store, config: Arc<NotifyConfig>, mut receiver: mpsc::Receiver<Recorded>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(config.timeout)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a plain http client builds");
    let mut deliveries = JoinSet::new();
    while let Some(record) = receiver.recv().await {
        let Some(body) = body_of(&record, &config.kinds) else {
            continue;
        };
        let bytes = Arc::new(serde_json::to_vec(&body).expect("json serializes"));
        for url in &config.urls {
            while deliveries.len() >= MAX_IN_FLIGHT {
                deliveries.join_next().await;
            }
            deliveries.spawn(deliver(
                client.clone(),
                store.clone(),
                config.clone(),
                url.clone(),
                bytes.clone(),
                body["app"].as_str().map(str::to_string),
            ));
        }
        while deliveries.try_join_next().is_some() {}
    }
    while deliveries.join_next().await.is_some() {}
}

async fn deliver(
    client: reqwest::Client,
    store: Store,
    config: Arc<NotifyConfig>,
    url: reqwest::Url,
    body: Arc<Vec<u8>>,
    app: Option<String>,
) {
    let signature = config
        .secret
        .as_ref()
        .map(|s| crate::source::webhook::sign(s.as_bytes(), &body));
    let mut wait = config.backoff;
    let mut last_error = String::new();
    for attempt in 0..=config.retries {
        if attempt > 0 {
            RETRIED.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(Duration::from_secs(300));
        }
        let mut request = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body.as_ref().clone());
        if let Some(signature) = &signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => {
                SENT.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(answer) => last_error = format!("answered {}", answer.status()),
            Err(e) => last_error = redact::redact_text(&e.without_url().to_string()).into_owned(),
        }
        tracing::debug!(url = %display_url(&url), attempt, error = %last_error, "notification not delivered yet");
    }
    FAILED.fetch_add(1, Ordering::Relaxed);
    let shown = display_url(&url);
    tracing::warn!(url = %shown, error = %last_error, "notification failed after every retry");
    let event = NewEvent {
        app,
        event_type: EventType::NotifyFailed,
        message: format!(
            "notification to {shown} failed after {} attempts: {last_error}; check the endpoint",
            config.retries + 1
        ),
        revision: None,
        source_file: None,
        details: json!({ "url": shown }),
        at: now_ms(),
    };
    if let Err(e) = store.record_event(&event).await {
        tracing::warn!(error = %e, "cannot record the failed notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_urls_are_checked() {
        let c = NotifyConfig::new(&["http://127.0.0.1:1/x".into()], &[], None).unwrap();
        assert_eq!(c.kinds.len(), KINDS.len() - 1);
        let c = NotifyConfig::new(
            &["https://h/x".into()],
            &["quarantined".into()],
            Some(String::new()),
        )
        .unwrap();
        assert_eq!(c.kinds.iter().collect::<Vec<_>>(), ["quarantined"]);
        assert!(c.secret.is_none());
        assert!(NotifyConfig::new(&["ftp://h/x".into()], &[], None).is_err());
        let e = NotifyConfig::new(&[], &["nope".into()], None).unwrap_err();
        assert!(e.to_string().contains("rollout-failed"), "{e}");
        let url = reqwest::Url::parse("https://bot:t0k@hooks.example/a").unwrap();
        assert_eq!(display_url(&url), "https://hooks.example/a");
    }

    #[test]
    fn bodies_only_for_chosen_kinds_and_redacted() {
        let kinds: BTreeSet<String> = ["rollout-failed".to_string()].into();
        let event = |t: EventType| {
            Recorded::Event(NewEvent {
                app: Some("web".into()),
                event_type: t,
                message: "probe failed with API_TOKEN=abc".into(),
                revision: Some("r1".into()),
                source_file: None,
                details: Value::Null,
                at: 5,
            })
        };
        let body = body_of(&event(EventType::RolloutFailed), &kinds).unwrap();
        assert_eq!(body["kind"], "rollout-failed");
        assert_eq!(body["app"], "web");
        assert!(!body.to_string().contains("abc"), "{body}");
        assert!(body["text"]
            .as_str()
            .unwrap()
            .starts_with("berth: web: rollout-failed: "));
        assert!(body_of(&event(EventType::Created), &kinds).is_none());
    }
}
