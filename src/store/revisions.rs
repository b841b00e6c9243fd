//! The `revisions` table: one row per source revision berth tried to apply, with the outcome
//! of the latest try. Recording the same revision again updates it in place, so a loop that
//! re-applies every pass does not grow the table. Owns that table's SQL (retention is
//! history.rs). Must not touch: the source (git/dir) itself, events.

use super::{page_limit, Store, StoreError};
use serde::Serialize;
use std::fmt;

/// Largest page `revisions` returns.
pub const MAX_REVISION_PAGE: u32 = 1000;

/// Where a revision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionSource {
    Dir,
    Git,
}

impl RevisionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionSource::Dir => "dir",
            RevisionSource::Git => "git",
        }
    }

    pub fn parse(text: &str) -> Option<RevisionSource> {
        [RevisionSource::Dir, RevisionSource::Git]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for RevisionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How applying a revision went: every app, some apps (others invalid or failed), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionStatus {
    Applied,
    Partial,
    Failed,
}

impl RevisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::Applied => "applied",
            RevisionStatus::Partial => "partial",
            RevisionStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<RevisionStatus> {
        [
            RevisionStatus::Applied,
            RevisionStatus::Partial,
            RevisionStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for RevisionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of applying a revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewRevision {
    pub revision: String,
    pub source: RevisionSource,
    pub status: RevisionStatus,
    pub message: String,
    pub at: i64,
}

/// A stored revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionRow {
    pub revision: String,
    pub source: RevisionSource,
    pub status: RevisionStatus,
    pub message: String,
    /// When this revision was first recorded.
    pub first_recorded_at: i64,
    /// When this revision was last recorded (the outcome above is from then).
    pub at: i64,
}

#[derive(sqlx::FromRow)]
struct RevisionRaw {
    revision: String,
    source: String,
    status: String,
    message: String,
    first_recorded_at: i64,
    at: i64,
}

impl Store {
    /// Records the outcome of applying a revision; a revision already recorded gets the new
    /// source, status, message and `at`, and keeps its `first_recorded_at`.
    pub async fn record_revision(&self, revision: &NewRevision) -> Result<(), StoreError> {
        self.write(
            "recording a revision",
            sqlx::query(
                "INSERT INTO revisions (revision, source, status, message, first_recorded_at, at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (revision) DO UPDATE SET \
                 source = excluded.source, \
                 status = excluded.status, \
                 message = excluded.message, \
                 at = excluded.at",
            )
            .bind(&revision.revision)
            .bind(revision.source.as_str())
            .bind(revision.status.as_str())
            .bind(&revision.message)
            .bind(revision.at),
        )
        .await?;
        Ok(())
    }

    /// The `limit` (capped at `MAX_REVISION_PAGE`) most recently recorded revisions, newest
    /// first.
    pub async fn revisions(&self, limit: u32) -> Result<Vec<RevisionRow>, StoreError> {
        let raws: Vec<RevisionRaw> = sqlx::query_as(
            "SELECT revision, source, status, message, first_recorded_at, at FROM revisions \
             ORDER BY at DESC, first_recorded_at DESC, revision LIMIT $1",
        )
        .bind(page_limit(limit, MAX_REVISION_PAGE))
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_error("listing revisions"))?;
        raws.into_iter()
            .map(|raw| {
                let source = RevisionSource::parse(&raw.source).ok_or_else(|| {
                    self.corrupt(format!(
                        "revision {:?} has unknown source {:?}",
                        raw.revision, raw.source
                    ))
                })?;
                let status = RevisionStatus::parse(&raw.status).ok_or_else(|| {
                    self.corrupt(format!(
                        "revision {:?} has unknown status {:?}",
                        raw.revision, raw.status
                    ))
                })?;
                Ok(RevisionRow {
                    revision: raw.revision,
                    source,
                    status,
                    message: raw.message,
                    first_recorded_at: raw.first_recorded_at,
                    at: raw.at,
                })
            })
            .collect()
    }
}
