//! The `events` table: the append-only history of what berth did and why, read by the API
//! newest first with keyset paging on `id`. Owns that table's SQL and the `EventType`
//! vocabulary. Must not touch: app rows or any other table; it never updates or deletes
//! events (retention is `history.rs`).

use super::{page_limit, Store, StoreError};
use serde::{Serialize, Serializer};
use std::fmt;

/// Largest page `events` returns, whatever `EventQuery::limit` asks for.
pub const MAX_EVENT_PAGE: u32 = 1000;

/// Kind of event, stored as lowercase kebab-case text; the text is the identity (equality
/// and hashing compare it), so stored rows and API filters keep working whatever the variant.
/// `Other` exists only to read back a kind this berth does not know (a newer berth wrote it,
/// or a test's own kind); berth itself records the listed variants.
#[derive(Debug, Clone)]
pub enum EventType {
    Created,
    Removed,
    RolloutStarted,
    RolloutSucceeded,
    RolloutFailed,
    ProxyReloaded,
    ProxyRejected,
    /// berth (re)started its private nginx.
    ProxyStarted,
    SpecInvalid,
    RuntimeError,
    Healed,
    /// A running container failed its health check (the prober's threshold was crossed).
    Unhealthy,
    /// Self-heal gave up on an app whose containers keep breaking (see `AppStatus::CrashLooping`).
    CrashLooping,
    Quarantined,
    /// The deletion budget refused this pass's removals.
    PruneRefused,
    /// The spec source cannot be read (berth serves the last revision it has).
    SourceDegraded,
    /// The spec source can be read again.
    SourceRecovered,
    /// berth started pulling an app's image from its registry.
    ImagePulling,
    /// An image pull (or a moving tag's new digest) finished.
    ImagePulled,
    /// A pull or a registry check failed: which image, which registry, what to do.
    ImagePullFailed,
    /// An app was removed and its named volumes were kept (`berth volumes prune` deletes them).
    VolumeKept,
    /// A notification (`--notify-url`) could not be delivered after its retries.
    NotifyFailed,
    Other(String),
}

impl EventType {
    /// Every kind berth records.
    pub const KNOWN: [EventType; 22] = [
        EventType::Created,
        EventType::Removed,
        EventType::RolloutStarted,
        EventType::RolloutSucceeded,
        EventType::RolloutFailed,
        EventType::ProxyReloaded,
        EventType::ProxyRejected,
        EventType::ProxyStarted,
        EventType::SpecInvalid,
        EventType::RuntimeError,
        EventType::Healed,
        EventType::Unhealthy,
        EventType::CrashLooping,
        EventType::Quarantined,
        EventType::PruneRefused,
        EventType::SourceDegraded,
        EventType::SourceRecovered,
        EventType::ImagePulling,
        EventType::ImagePulled,
        EventType::ImagePullFailed,
        EventType::VolumeKept,
        EventType::NotifyFailed,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventType::Created => "created",
            EventType::Removed => "removed",
            EventType::RolloutStarted => "rollout-started",
            EventType::RolloutSucceeded => "rollout-succeeded",
            EventType::RolloutFailed => "rollout-failed",
            EventType::ProxyReloaded => "proxy-reloaded",
            EventType::ProxyRejected => "proxy-rejected",
            EventType::ProxyStarted => "proxy-started",
            EventType::SpecInvalid => "spec-invalid",
            EventType::RuntimeError => "runtime-error",
            EventType::Healed => "healed",
            EventType::Unhealthy => "unhealthy",
            EventType::CrashLooping => "crash-looping",
            EventType::Quarantined => "quarantined",
            EventType::PruneRefused => "prune-refused",
            EventType::SourceDegraded => "source-degraded",
            EventType::SourceRecovered => "source-recovered",
            EventType::ImagePulling => "image-pulling",
            EventType::ImagePulled => "image-pulled",
            EventType::ImagePullFailed => "image-pull-failed",
            EventType::VolumeKept => "volume-kept",
            EventType::NotifyFailed => "notify-failed",
            EventType::Other(text) => text,
        }
    }

    /// The variant for a stored kind; `Other` only for kinds not listed.
    pub fn parse(text: &str) -> EventType {
        EventType::KNOWN
            .into_iter()
            .find(|t| t.as_str() == text)
            .unwrap_or_else(|| EventType::Other(text.to_string()))
    }
}

impl PartialEq for EventType {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventType {}

impl std::hash::Hash for EventType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    /// `None` for host-wide events (proxy, source).
    pub app: Option<String>,
    pub event_type: EventType,
    pub message: String,
    pub revision: Option<String>,
    pub source_file: Option<String>,
    /// Structured context; `Value::Null` when there is none.
    pub details: serde_json::Value,
    pub at: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub app: Option<String>,
    pub event_type: EventType,
    pub message: String,
    pub revision: Option<String>,
    pub source_file: Option<String>,
    pub details: serde_json::Value,
    pub at: i64,
}

/// Filters and page for `events`. All filters are optional and combine with AND.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventQuery {
    pub app: Option<String>,
    pub event_type: Option<EventType>,
    /// Only events with `at >= since`.
    pub since: Option<i64>,
    /// Only events with `id < before_id`: pass the smallest id of the previous page.
    pub before_id: Option<i64>,
    /// Page size, capped at `MAX_EVENT_PAGE`.
    pub limit: u32,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            app: None,
            event_type: None,
            since: None,
            before_id: None,
            limit: 100,
        }
    }
}

#[derive(sqlx::FromRow)]
struct EventRaw {
    id: i64,
    app: Option<String>,
    event_type: String,
    message: String,
    revision: Option<String>,
    source_file: Option<String>,
    details: String,
    at: i64,
}

impl Store {
    /// Appends an event and returns its id. Ids only grow.
    pub async fn record_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO events (app, event_type, message, revision, source_file, details, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING id",
        )
        .bind(event.app.as_deref())
        .bind(event.event_type.as_str())
        .bind(&event.message)
        .bind(event.revision.as_deref())
        .bind(event.source_file.as_deref())
        .bind(event.details.to_string())
        .bind(event.at)
        .fetch_one(&self.pool)
        .await
        .map_err(self.query_error("recording an event"))?;
        self.tell(|| super::Recorded::Event(event.clone()));
        Ok(id)
    }

    /// Events matching `query`, newest (highest id) first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<EventRow>, StoreError> {
        // `$n` placeholders written here: sqlx's `QueryBuilder<Any>` writes `?`, which
        // PostgreSQL does not take.
        let mut sql = String::from(
            "SELECT id, app, event_type, message, revision, source_file, details, at \
             FROM events WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = |column: &str, op: &str| {
            n += 1;
            format!(" AND {column} {op} ${n}")
        };
        if query.app.is_some() {
            sql.push_str(&next("app", "="));
        }
        if query.event_type.is_some() {
            sql.push_str(&next("event_type", "="));
        }
        if query.since.is_some() {
            sql.push_str(&next("at", ">="));
        }
        if query.before_id.is_some() {
            sql.push_str(&next("id", "<"));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
        let mut select = sqlx::query_as::<_, EventRaw>(&sql);
        if let Some(app) = &query.app {
            select = select.bind(app.clone());
        }
        if let Some(event_type) = &query.event_type {
            select = select.bind(event_type.as_str().to_string());
        }
        if let Some(since) = query.since {
            select = select.bind(since);
        }
        if let Some(before_id) = query.before_id {
            select = select.bind(before_id);
        }
        let raws: Vec<EventRaw> = select
            .bind(page_limit(query.limit, MAX_EVENT_PAGE))
            .fetch_all(&self.pool)
            .await
            .map_err(self.query_error("listing events"))?;
        raws.into_iter()
            .map(|raw| {
                Ok(EventRow {
                    details: self
                        .decode_json(&format!("the details of event {}", raw.id), &raw.details)?,
                    id: raw.id,
                    app: raw.app,
                    event_type: EventType::parse(&raw.event_type),
                    message: raw.message,
                    revision: raw.revision,
                    source_file: raw.source_file,
                    at: raw.at,
                })
            })
            .collect()
    }
}
