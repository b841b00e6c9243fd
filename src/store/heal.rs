//! The `heal_state` table: each app's self-heal record (recent repairs of one spec hash,
//! quarantine, what the last repaired container did), so a restarted berth keeps a crash
//! loop's backoff and quarantine instead of starting over. Owns that table's SQL. Must not
//! touch: the backoff rules (`plan::heal` decides), app statuses, events.

use super::{Store, StoreError};
use serde::Serialize;

/// One app's stored self-heal state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealRow {
    pub app: String,
    /// Spec hash the repairs were made for.
    pub spec_hash: String,
    /// Unix ms of recent repairs, oldest first.
    pub repairs: Vec<i64>,
    /// Unix ms since self-heal stopped for this spec hash (None while it only backs off).
    pub quarantined_since: Option<i64>,
    /// What the last repaired container did ("exited", "failed its health check: ...").
    pub last_failure: Option<String>,
    /// Unix ms of the write.
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct HealRaw {
    app: String,
    spec_hash: String,
    repairs: String,
    quarantined_since: Option<i64>,
    last_failure: Option<String>,
    updated_at: i64,
}

impl Store {
    /// Sets (or replaces) the self-heal state of `row.app`.
    pub async fn save_heal_state(&self, row: &HealRow) -> Result<(), StoreError> {
        let repairs = serde_json::to_string(&row.repairs).unwrap_or_else(|_| "[]".to_string());
        self.write(
            "saving self-heal state",
            sqlx::query(
                "INSERT INTO heal_state \
                 (app, spec_hash, repairs, quarantined_since, last_failure, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (app) DO UPDATE SET \
                 spec_hash = excluded.spec_hash, \
                 repairs = excluded.repairs, \
                 quarantined_since = excluded.quarantined_since, \
                 last_failure = excluded.last_failure, \
                 updated_at = excluded.updated_at",
            )
            .bind(&row.app)
            .bind(&row.spec_hash)
            .bind(repairs)
            .bind(row.quarantined_since)
            .bind(row.last_failure.as_deref())
            .bind(row.updated_at),
        )
        .await?;
        Ok(())
    }

    /// Every app's self-heal state, ordered by app.
    pub async fn heal_states(&self) -> Result<Vec<HealRow>, StoreError> {
        let raws: Vec<HealRaw> = sqlx::query_as(
            "SELECT app, spec_hash, repairs, quarantined_since, last_failure, updated_at \
             FROM heal_state ORDER BY app",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_error("listing self-heal state"))?;
        raws.into_iter()
            .map(|raw| {
                let repairs: Vec<i64> = serde_json::from_str(&raw.repairs).map_err(|e| {
                    self.corrupt(format!(
                        "the self-heal repairs of app {:?} are not a JSON list of times: {e}",
                        raw.app
                    ))
                })?;
                Ok(HealRow {
                    app: raw.app,
                    spec_hash: raw.spec_hash,
                    repairs,
                    quarantined_since: raw.quarantined_since,
                    last_failure: raw.last_failure,
                    updated_at: raw.updated_at,
                })
            })
            .collect()
    }

    /// Forgets the self-heal state of `app`. Returns whether there was one.
    pub async fn clear_heal_state(&self, app: &str) -> Result<bool, StoreError> {
        let result = self
            .write(
                "clearing self-heal state",
                sqlx::query("DELETE FROM heal_state WHERE app = $1").bind(app),
            )
            .await?;
        Ok(result.rows_affected() > 0)
    }
}
