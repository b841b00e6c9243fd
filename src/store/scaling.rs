//! The `scaling_decisions` table: the append-only history of autoscaler decisions with the
//! metrics and factors behind each. Owns that table's SQL, and `record_scaling_change`,
//! which writes an override change and its decision row in one transaction. Must not
//! touch: the policy that decides (autoscale/). Retention (deleting
//! old rows) is history.rs.

use super::overrides::{delete_override, upsert_override};
use super::{page_limit, Store, StoreError};
use serde::Serialize;
use sqlx::{Any, Executor};

/// Largest page `scaling_decisions` returns.
pub const MAX_SCALING_PAGE: u32 = 1000;

/// A scaling decision to append.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewScalingDecision {
    pub app: String,
    pub at: i64,
    pub from_replicas: u32,
    pub to_replicas: u32,
    pub reason: String,
    /// The measurements the policy saw (RPS, p95, CPU, ...).
    pub metrics: serde_json::Value,
    /// How each input pushed the decision.
    pub factors: serde_json::Value,
}

/// A stored scaling decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingDecisionRow {
    pub id: i64,
    pub app: String,
    pub at: i64,
    pub from_replicas: u32,
    pub to_replicas: u32,
    pub reason: String,
    pub metrics: serde_json::Value,
    pub factors: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct ScalingDecisionRaw {
    id: i64,
    app: String,
    at: i64,
    from_replicas: i64,
    to_replicas: i64,
    reason: String,
    metrics: String,
    factors: String,
}

/// What a scaling change does to the replica override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideChange {
    /// Set (or replace) the override to this many replicas.
    Set(u32),
    /// Drop the override (the spec's count applies again).
    Clear,
}

impl Store {
    /// Changes the replica override of `decision.app` and appends the decision that explains
    /// it, in one transaction: either both are stored or neither is. Returns the decision's id.
    pub async fn record_scaling_change(
        &self,
        change: OverrideChange,
        decision: &NewScalingDecision,
    ) -> Result<i64, StoreError> {
        let err = || self.query_error("recording a scaling change");
        let mut tx = self.pool.begin().await.map_err(err())?;
        self.check_fence("recording a scaling change", &mut tx)
            .await?;
        match change {
            OverrideChange::Set(replicas) => {
                upsert_override(
                    &mut *tx,
                    &decision.app,
                    replicas,
                    &decision.reason,
                    decision.at,
                )
                .await
                .map_err(err())?;
            }
            OverrideChange::Clear => {
                delete_override(&mut *tx, &decision.app)
                    .await
                    .map_err(err())?;
            }
        }
        let id = insert_decision(&mut *tx, decision).await.map_err(err())?;
        tx.commit().await.map_err(err())?;
        self.overrides_changed();
        self.tell(|| super::Recorded::Scaling(decision.clone()));
        Ok(id)
    }

    /// Appends a scaling decision and returns its id.
    pub async fn record_scaling_decision(
        &self,
        decision: &NewScalingDecision,
    ) -> Result<i64, StoreError> {
        let id = insert_decision(&self.pool, decision)
            .await
            .map_err(self.query_error("recording a scaling decision"))?;
        self.tell(|| super::Recorded::Scaling(decision.clone()));
        Ok(id)
    }

    /// The newest `limit` (capped at `MAX_SCALING_PAGE`) decisions for `app`, newest first.
    pub async fn scaling_decisions(
        &self,
        app: &str,
        limit: u32,
    ) -> Result<Vec<ScalingDecisionRow>, StoreError> {
        let raws: Vec<ScalingDecisionRaw> = sqlx::query_as(
            "SELECT id, app, at, from_replicas, to_replicas, reason, metrics, factors \
             FROM scaling_decisions WHERE app = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(app)
        .bind(page_limit(limit, MAX_SCALING_PAGE))
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_error("listing scaling decisions"))?;
        raws.into_iter()
            .map(|raw| {
                let what = |field: &str| format!("{field} of scaling decision {}", raw.id);
                Ok(ScalingDecisionRow {
                    id: raw.id,
                    at: raw.at,
                    from_replicas: self
                        .decode_replicas(&what("from_replicas"), raw.from_replicas)?,
                    to_replicas: self.decode_replicas(&what("to_replicas"), raw.to_replicas)?,
                    metrics: self.decode_json(&what("metrics"), &raw.metrics)?,
                    factors: self.decode_json(&what("factors"), &raw.factors)?,
                    app: raw.app,
                    reason: raw.reason,
                })
            })
            .collect()
    }
}

/// Appends one decision row through `executor` (the pool or a transaction).
async fn insert_decision<'e>(
    executor: impl Executor<'e, Database = Any>,
    decision: &NewScalingDecision,
) -> Result<i64, sqlx::Error> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO scaling_decisions \
             (app, at, from_replicas, to_replicas, reason, metrics, factors) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING id",
    )
    .bind(&decision.app)
    .bind(decision.at)
    .bind(i64::from(decision.from_replicas))
    .bind(i64::from(decision.to_replicas))
    .bind(&decision.reason)
    .bind(decision.metrics.to_string())
    .bind(decision.factors.to_string())
    .fetch_one(executor)
    .await?;
    Ok(id)
}
