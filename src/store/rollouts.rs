//! The `failed_rollouts` table: rollouts whose new generation never became healthy, so the
//! planner does not retry the same spec until it changes. Owns that table's SQL. Must not
//! touch: the app status (callers set it with `set_app_status`), events.

use super::{Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;

/// A rollout of `spec_hash` for `app` that failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedRollout {
    pub app: String,
    pub spec_hash: String,
    pub revision: String,
    pub reason: String,
    pub at: i64,
}

#[derive(sqlx::FromRow)]
struct FailedRolloutRaw {
    app: String,
    spec_hash: String,
    revision: String,
    reason: String,
    at: i64,
}

impl Store {
    /// Records that the rollout of `spec_hash` for `app` failed.
    pub async fn mark_rollout_failed(
        &self,
        app: &str,
        spec_hash: &str,
        revision: &str,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.write(
            "recording a failed rollout",
            sqlx::query(
                "INSERT INTO failed_rollouts (app, spec_hash, revision, reason, at) \
             VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(app)
            .bind(spec_hash)
            .bind(revision)
            .bind(reason)
            .bind(at),
        )
        .await?;
        self.overrides_changed();
        Ok(())
    }

    /// The newest failed rollout of each app (greatest `at`; on a tie, the later record).
    pub async fn failed_rollouts(&self) -> Result<BTreeMap<String, FailedRollout>, StoreError> {
        let raws: Vec<FailedRolloutRaw> = sqlx::query_as(
            "SELECT app, spec_hash, revision, reason, at FROM failed_rollouts \
             ORDER BY app, at DESC, id DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_error("listing failed rollouts"))?;
        let mut newest = BTreeMap::new();
        for raw in raws {
            newest.entry(raw.app.clone()).or_insert(FailedRollout {
                app: raw.app,
                spec_hash: raw.spec_hash,
                revision: raw.revision,
                reason: raw.reason,
                at: raw.at,
            });
        }
        Ok(newest)
    }

    /// Forgets every failed rollout of `app`. Returns whether there was any.
    pub async fn clear_failed_rollout(&self, app: &str) -> Result<bool, StoreError> {
        let result = self
            .write(
                "clearing failed rollouts",
                sqlx::query("DELETE FROM failed_rollouts WHERE app = $1").bind(app),
            )
            .await?;
        self.overrides_changed();
        Ok(result.rows_affected() > 0)
    }
}
