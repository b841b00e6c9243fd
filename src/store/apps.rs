//! The `apps` table: one row per app berth knows about, holding the desired spec from the
//! source, the reconcile status with its last error, and the last spec that parsed and
//! validated. Owns the SQL for that table and `delete_app`'s cleanup of per-app state. Must
//! not touch: spec parsing or hashing (specs arrive as JSON text and a ready hash), events
//! or any other history table.

use super::{Store, StoreError};
use serde::Serialize;
use std::fmt;

/// Reconcile status of an app, stored as lowercase kebab-case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppStatus {
    Synced,
    Progressing,
    Degraded,
    Quarantined,
    FailedRollout,
    /// Self-heal gave up: its containers kept crashing or failing their probes (see
    /// `plan::heal`), so berth leaves them alone until the spec changes.
    CrashLooping,
    Removed,
}

impl AppStatus {
    pub const ALL: [AppStatus; 7] = [
        AppStatus::Synced,
        AppStatus::Progressing,
        AppStatus::Degraded,
        AppStatus::Quarantined,
        AppStatus::FailedRollout,
        AppStatus::CrashLooping,
        AppStatus::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Synced => "synced",
            AppStatus::Progressing => "progressing",
            AppStatus::Degraded => "degraded",
            AppStatus::Quarantined => "quarantined",
            AppStatus::FailedRollout => "failed-rollout",
            AppStatus::CrashLooping => "crash-looping",
            AppStatus::Removed => "removed",
        }
    }

    pub fn parse(text: &str) -> Option<AppStatus> {
        AppStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for AppStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The desired state of one app as read from the source in one pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppDesiredRecord {
    pub name: String,
    /// The validated spec serialised as JSON text.
    pub spec_json: String,
    pub spec_hash: String,
    pub source_file: String,
    pub revision: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// One row of `apps`. The `last_good_*` fields are all `Some` in a row `record_app_pass` wrote
/// (a row an older berth wrote may lack them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppRow {
    pub name: String,
    pub spec_json: String,
    pub spec_hash: String,
    pub source_file: String,
    pub revision: String,
    pub status: AppStatus,
    pub last_error: Option<String>,
    pub last_good_spec_json: Option<String>,
    pub last_good_hash: Option<String>,
    pub last_good_revision: Option<String>,
    pub last_good_source_file: Option<String>,
    pub last_good_at: Option<i64>,
    /// Time of the last write by `record_app_pass` or `set_app_status`.
    pub updated_at: i64,
    /// Time of the last `mark_reconciled`.
    pub last_reconciled_at: Option<i64>,
}

/// The last spec of an app that parsed and validated (what a quarantined app keeps running).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastGood {
    pub name: String,
    pub spec_json: String,
    pub spec_hash: String,
    pub revision: String,
    pub source_file: String,
    pub at: i64,
}

#[derive(sqlx::FromRow)]
struct AppRaw {
    name: String,
    spec_json: String,
    spec_hash: String,
    source_file: String,
    revision: String,
    status: String,
    last_error: Option<String>,
    last_good_spec_json: Option<String>,
    last_good_hash: Option<String>,
    last_good_revision: Option<String>,
    last_good_source_file: Option<String>,
    last_good_at: Option<i64>,
    updated_at: i64,
    last_reconciled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct LastGoodRaw {
    name: String,
    last_good_spec_json: String,
    last_good_hash: String,
    last_good_revision: String,
    last_good_source_file: String,
    last_good_at: i64,
}

const APP_COLUMNS: &str = "name, spec_json, spec_hash, source_file, revision, status, \
     last_error, last_good_spec_json, last_good_hash, last_good_revision, \
     last_good_source_file, last_good_at, updated_at, last_reconciled_at";

impl Store {
    /// What one reconcile pass learned about a valid app, in one statement (atomic): its
    /// desired spec, its status and last error, and (because the spec parsed and validated)
    /// its last good spec. Recording the last good spec in the pass that read it means a broken edit
    /// right after a rollout quarantines the app on the spec it runs, never an older one.
    pub async fn record_app_pass(
        &self,
        record: &AppDesiredRecord,
        status: AppStatus,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(
            "recording an app's pass",
            sqlx::query(
                "INSERT INTO apps (name, spec_json, spec_hash, source_file, revision, status, \
                 last_error, last_good_spec_json, last_good_hash, last_good_revision, \
                 last_good_source_file, last_good_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $2, $3, $5, $4, $8, $8) \
             ON CONFLICT (name) DO UPDATE SET \
                 spec_json = excluded.spec_json, \
                 spec_hash = excluded.spec_hash, \
                 source_file = excluded.source_file, \
                 revision = excluded.revision, \
                 status = excluded.status, \
                 last_error = excluded.last_error, \
                 last_good_spec_json = excluded.last_good_spec_json, \
                 last_good_hash = excluded.last_good_hash, \
                 last_good_revision = excluded.last_good_revision, \
                 last_good_source_file = excluded.last_good_source_file, \
                 last_good_at = excluded.last_good_at, \
                 updated_at = excluded.updated_at",
            )
            .bind(&record.name)
            .bind(&record.spec_json)
            .bind(&record.spec_hash)
            .bind(&record.source_file)
            .bind(&record.revision)
            .bind(status.as_str())
            .bind(last_error)
            .bind(record.at),
        )
        .await?;
        Ok(())
    }

    /// Sets the status and replaces the last error (`None` clears it) of an app the store
    /// holds (`record_app_pass` writes the row); `AppNotFound` otherwise. The desired and
    /// last good spec stay.
    pub async fn set_app_status(
        &self,
        name: &str,
        status: AppStatus,
        last_error: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        let result = self
            .write(
                "setting the status of an app",
                sqlx::query(
                    "UPDATE apps SET status = $2, last_error = $3, updated_at = $4 WHERE name = $1",
                )
                .bind(name)
                .bind(status.as_str())
                .bind(last_error)
                .bind(at),
            )
            .await?;
        found(result.rows_affected(), name)
    }

    /// Notes that a reconcile pass finished for this app; `AppNotFound` when the store does
    /// not hold it.
    pub async fn mark_reconciled(&self, name: &str, at: i64) -> Result<(), StoreError> {
        let result = self
            .write(
                "marking an app reconciled",
                sqlx::query("UPDATE apps SET last_reconciled_at = $2 WHERE name = $1")
                    .bind(name)
                    .bind(at),
            )
            .await?;
        found(result.rows_affected(), name)
    }

    /// Every app, ordered by name.
    pub async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        let raws: Vec<AppRaw> =
            sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))
                .fetch_all(&self.pool)
                .await
                .map_err(self.query_error("listing apps"))?;
        raws.into_iter().map(|raw| self.app_row(raw)).collect()
    }

    /// One app, or `None` when the store does not know it.
    pub async fn app(&self, name: &str) -> Result<Option<AppRow>, StoreError> {
        let raw: Option<AppRaw> =
            sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(self.query_error("reading an app"))?;
        raw.map(|raw| self.app_row(raw)).transpose()
    }

    /// The last good spec of every app that has one, ordered by name.
    pub async fn last_good_specs(&self) -> Result<Vec<LastGood>, StoreError> {
        let raws: Vec<LastGoodRaw> = sqlx::query_as(
            "SELECT name, last_good_spec_json, last_good_hash, last_good_revision, \
                 last_good_source_file, last_good_at \
             FROM apps \
             WHERE last_good_spec_json IS NOT NULL AND last_good_hash IS NOT NULL \
                 AND last_good_revision IS NOT NULL AND last_good_source_file IS NOT NULL \
                 AND last_good_at IS NOT NULL \
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_error("listing last good specs"))?;
        Ok(raws
            .into_iter()
            .map(|raw| LastGood {
                name: raw.name,
                spec_json: raw.last_good_spec_json,
                spec_hash: raw.last_good_hash,
                revision: raw.last_good_revision,
                source_file: raw.last_good_source_file,
                at: raw.last_good_at,
            })
            .collect())
    }

    /// Forgets an app and its current per-app state (replica override, failed-rollout marks,
    /// self-heal state) in one transaction. History (events, scaling decisions) is kept. Returns whether the
    /// app existed.
    pub async fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        let err = || self.query_error("deleting an app");
        // Writes only, first statement a write: the transaction takes the write lock up
        // front (waiting on the busy timeout) instead of upgrading a read snapshot.
        let mut tx = self.pool.begin().await.map_err(err())?;
        self.check_fence("deleting an app", &mut tx).await?;
        let deleted = sqlx::query("DELETE FROM apps WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(err())?
            .rows_affected();
        sqlx::query("DELETE FROM replica_overrides WHERE app = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(err())?;
        sqlx::query("DELETE FROM failed_rollouts WHERE app = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(err())?;
        sqlx::query("DELETE FROM heal_state WHERE app = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(err())?;
        tx.commit().await.map_err(err())?;
        self.overrides_changed();
        Ok(deleted > 0)
    }

    fn app_row(&self, raw: AppRaw) -> Result<AppRow, StoreError> {
        let status = AppStatus::parse(&raw.status).ok_or_else(|| {
            self.corrupt(format!(
                "app {:?} has unknown status {:?}",
                raw.name, raw.status
            ))
        })?;
        Ok(AppRow {
            name: raw.name,
            spec_json: raw.spec_json,
            spec_hash: raw.spec_hash,
            source_file: raw.source_file,
            revision: raw.revision,
            status,
            last_error: raw.last_error,
            last_good_spec_json: raw.last_good_spec_json,
            last_good_hash: raw.last_good_hash,
            last_good_revision: raw.last_good_revision,
            last_good_source_file: raw.last_good_source_file,
            last_good_at: raw.last_good_at,
            updated_at: raw.updated_at,
            last_reconciled_at: raw.last_reconciled_at,
        })
    }
}

fn found(rows_affected: u64, name: &str) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(StoreError::AppNotFound {
            name: name.to_string(),
        })
    } else {
        Ok(())
    }
}
