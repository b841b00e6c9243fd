//! The `replica_overrides` table: replica counts written by the autoscaler (or an operator)
//! that the planner clamps into each app's min..max. Owns that table's SQL. Must not touch:
//! the clamping itself (plan/), scaling history (scaling.rs).

use super::{Store, StoreError};
use serde::Serialize;
use sqlx::{Any, Executor};
use std::collections::BTreeMap;

/// One replica override with why and when it was set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaOverrideRow {
    pub app: String,
    pub replicas: u32,
    pub reason: String,
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct ReplicaOverrideRaw {
    app: String,
    replicas: i64,
    reason: String,
    updated_at: i64,
}

impl Store {
    /// Sets (or replaces) the replica override of `app`.
    pub async fn set_replica_override(
        &self,
        app: &str,
        replicas: u32,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let operation = "setting a replica override";
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.query_error(operation))?;
        self.check_fence(operation, &mut tx).await?;
        upsert_override(&mut *tx, app, replicas, reason, at)
            .await
            .map_err(self.query_error(operation))?;
        tx.commit().await.map_err(self.query_error(operation))?;
        self.overrides_changed();
        Ok(())
    }

    /// Removes the replica override of `app`. Returns whether there was one.
    pub async fn clear_replica_override(&self, app: &str) -> Result<bool, StoreError> {
        let operation = "clearing a replica override";
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.query_error(operation))?;
        self.check_fence(operation, &mut tx).await?;
        let deleted = delete_override(&mut *tx, app)
            .await
            .map_err(self.query_error(operation))?;
        tx.commit().await.map_err(self.query_error(operation))?;
        self.overrides_changed();
        Ok(deleted)
    }

    /// Replica override per app, for the planner.
    pub async fn replica_overrides(&self) -> Result<BTreeMap<String, u32>, StoreError> {
        Ok(self
            .replica_override_rows()
            .await?
            .into_iter()
            .map(|row| (row.app, row.replicas))
            .collect())
    }

    /// Every replica override with its reason and time, ordered by app.
    pub async fn replica_override_rows(&self) -> Result<Vec<ReplicaOverrideRow>, StoreError> {
        let raws: Vec<ReplicaOverrideRaw> = sqlx::query_as(
            "SELECT app, replicas, reason, updated_at FROM replica_overrides ORDER BY app",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.query_error("listing replica overrides"))?;
        raws.into_iter()
            .map(|raw| {
                Ok(ReplicaOverrideRow {
                    replicas: self.decode_replicas(
                        &format!("the replica override of app {:?}", raw.app),
                        raw.replicas,
                    )?,
                    app: raw.app,
                    reason: raw.reason,
                    updated_at: raw.updated_at,
                })
            })
            .collect()
    }
}

/// Sets (or replaces) one override through `executor` (the pool or a transaction).
pub(super) async fn upsert_override<'e>(
    executor: impl Executor<'e, Database = Any>,
    app: &str,
    replicas: u32,
    reason: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO replica_overrides (app, replicas, reason, updated_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (app) DO UPDATE SET \
             replicas = excluded.replicas, \
             reason = excluded.reason, \
             updated_at = excluded.updated_at",
    )
    .bind(app)
    .bind(i64::from(replicas))
    .bind(reason)
    .bind(at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Drops one override through `executor`; returns whether there was one.
pub(super) async fn delete_override<'e>(
    executor: impl Executor<'e, Database = Any>,
    app: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM replica_overrides WHERE app = $1")
        .bind(app)
        .execute(executor)
        .await?;
    Ok(result.rows_affected() > 0)
}
