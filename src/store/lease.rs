//! The `leader_lease` row (PostgreSQL only): which controller leads, its epoch and when the
//! lease ends, in the database's clock. Owns that row's SQL: one statement that renews the
//! lease for its holder or takes it once it expired (raising the epoch) and answers the row
//! either way, so a renewal, a takeover attempt and learning the current leader are one
//! round trip; and the release on a clean stop. Must not touch: desired-state tables (the
//! fence check is `fence.rs`), the local clock.

use super::{Dialect, Store, StoreError};
use serde::Serialize;

/// What a controller asks for: to hold the lease as `holder` for `duration_ms`, keeping
/// `held_epoch` when it is its current lease (0 when it holds none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTerms<'a> {
    pub holder: &'a str,
    pub held_epoch: i64,
    pub duration_ms: i64,
}

/// The lease row after a `try_lease`, with the database's clock at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    pub holder: String,
    pub epoch: i64,
    /// Unix milliseconds, database clock.
    pub expires_at: i64,
    /// The database's clock when the statement ran (unix milliseconds).
    pub now: i64,
    /// The statement renewed or took the lease for the asking holder (otherwise the row
    /// is another controller's lease, unchanged).
    pub granted: bool,
}

#[derive(sqlx::FromRow)]
struct LeaseRaw {
    holder: String,
    epoch: i64,
    expires_at: i64,
    now_ms: i64,
    granted: bool,
}

/// The database clock in unix milliseconds.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl Store {
    /// Renews the lease when `terms.holder` holds it with `terms.held_epoch` (the epoch
    /// stays), takes it when it expired (epoch + 1), and otherwise changes nothing; answers
    /// the row as it is afterwards. One statement, one round trip. PostgreSQL only.
    pub async fn try_lease(&self, terms: &LeaseTerms<'_>) -> Result<LeaseRow, StoreError> {
        self.require_postgres("taking the leader lease")?;
        let sql = format!(
            "WITH clock AS (SELECT {DB_NOW_MS} AS ms), \
             taken AS ( \
                 UPDATE leader_lease SET \
                     epoch = CASE WHEN holder = $1 AND epoch = $2 THEN epoch ELSE epoch + 1 END, \
                     holder = $1, \
                     expires_at = (SELECT ms FROM clock) + $3 \
                 WHERE id = 1 AND ((holder = $1 AND epoch = $2) \
                                   OR expires_at < (SELECT ms FROM clock)) \
                 RETURNING holder, epoch, expires_at) \
             SELECT holder, epoch, expires_at, (SELECT ms FROM clock) AS now_ms, true AS granted \
             FROM taken \
             UNION ALL \
             SELECT holder, epoch, expires_at, (SELECT ms FROM clock) AS now_ms, false AS granted \
             FROM leader_lease WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM taken)"
        );
        let raw: LeaseRaw = sqlx::query_as(&sql)
            .bind(terms.holder)
            .bind(terms.held_epoch)
            .bind(terms.duration_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(self.query_error("taking the leader lease"))?;
        Ok(LeaseRow {
            holder: raw.holder,
            epoch: raw.epoch,
            expires_at: raw.expires_at,
            now: raw.now_ms,
            granted: raw.granted,
        })
    }

    /// Ends `holder`'s lease of `epoch` now (a clean stop), so another controller takes
    /// over at its next attempt instead of waiting for the expiry. Returns whether it held.
    pub async fn release_lease(&self, holder: &str, epoch: i64) -> Result<bool, StoreError> {
        self.require_postgres("releasing the leader lease")?;
        let result = sqlx::query(
            "UPDATE leader_lease SET expires_at = 0 WHERE id = 1 AND holder = $1 AND epoch = $2",
        )
        .bind(holder)
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map_err(self.query_error("releasing the leader lease"))?;
        Ok(result.rows_affected() > 0)
    }

    fn require_postgres(&self, operation: &'static str) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Postgres => Ok(()),
            Dialect::Sqlite => Err(StoreError::NoLease {
                operation,
                location: self.location.to_string(),
            }),
        }
    }
}
