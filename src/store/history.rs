//! Retention of the append-only history tables (`events`, `scaling_decisions`,
//! `revisions`), so a controller that runs for months keeps a bounded database. Owns the
//! DELETE statements for those tables; the tables' own modules only insert and read.
//! Must not touch: apps, failed rollouts or replica overrides (state, not history). It
//! never deletes the current (newest) revision, nor any of each app's
//! [`DECISIONS_KEPT_PER_APP`] newest scaling decisions: the autoscaler reads those back at
//! start to find its last change, so its cooldown survives restarts.

use super::{Store, StoreError};

/// Each app's newest scaling decisions that are never pruned (what the autoscaler reads
/// back at start).
pub const DECISIONS_KEPT_PER_APP: u32 = 20;

/// How much history to keep. A row goes when it is older than `max_age_ms` or when at least
/// `max_rows` newer rows of its table exist, so at most `max_rows` remain (a revision
/// recorded in the same millisecond as the first one dropped goes too); 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_age_ms: i64,
    pub max_rows: u64,
}

impl Default for HistoryLimits {
    /// 30 days and 100,000 rows per table.
    fn default() -> Self {
        HistoryLimits {
            max_age_ms: 30 * 24 * 3600 * 1000,
            max_rows: 100_000,
        }
    }
}

/// Rows deleted by one [`Store::prune_history`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedHistory {
    pub events: u64,
    pub scaling_decisions: u64,
    pub revisions: u64,
}

impl PrunedHistory {
    pub fn total(&self) -> u64 {
        self.events + self.scaling_decisions + self.revisions
    }
}

/// Rows per DELETE, so a first prune of a large database never holds the write lock long.
const BATCH: i64 = 5_000;

impl Store {
    /// Deletes history beyond `limits` as of `now` (unix ms), in batches of a few thousand
    /// rows. Safe to run at any time and repeatedly.
    pub async fn prune_history(
        &self,
        limits: HistoryLimits,
        now: i64,
    ) -> Result<PrunedHistory, StoreError> {
        // An `at` below every real timestamp turns the age limit off; an offset past any
        // table size turns the row limit off.
        let cutoff = if limits.max_age_ms > 0 {
            now.saturating_sub(limits.max_age_ms)
        } else {
            i64::MIN
        };
        let keep = if limits.max_rows > 0 {
            i64::try_from(limits.max_rows).unwrap_or(i64::MAX)
        } else {
            i64::MAX
        };
        let events = self
            .delete_batches(
                "pruning events",
                "DELETE FROM events WHERE id IN (SELECT id FROM events \
                 WHERE at < $1 \
                    OR id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $2) \
                 ORDER BY id LIMIT $3)",
                cutoff,
                keep,
                None,
            )
            .await?;
        let scaling_decisions = self
            .delete_batches(
                "pruning scaling decisions",
                "DELETE FROM scaling_decisions WHERE id IN (SELECT id FROM scaling_decisions \
                 WHERE (at < $1 \
                    OR id <= (SELECT id FROM scaling_decisions ORDER BY id DESC LIMIT 1 OFFSET $2)) \
                   AND id NOT IN (SELECT kept.id FROM scaling_decisions AS kept \
                                  WHERE kept.app = scaling_decisions.app \
                                  ORDER BY kept.id DESC LIMIT $4) \
                 ORDER BY id LIMIT $3)",
                cutoff,
                keep,
                Some(i64::from(DECISIONS_KEPT_PER_APP)),
            )
            .await?;
        let revisions = self
            .delete_batches(
                "pruning revisions",
                "DELETE FROM revisions WHERE revision IN (SELECT revision FROM revisions \
                 WHERE (at < $1 \
                    OR at <= (SELECT at FROM revisions ORDER BY at DESC LIMIT 1 OFFSET $2)) \
                   AND revision <> (SELECT revision FROM revisions \
                                    ORDER BY at DESC, first_recorded_at DESC, revision LIMIT 1) \
                 LIMIT $3)",
                cutoff,
                keep,
                None,
            )
            .await?;
        Ok(PrunedHistory {
            events,
            scaling_decisions,
            revisions,
        })
    }

    /// Runs `sql` (binds: cutoff, keep, batch size, then `per_app` when given) until a
    /// batch deletes fewer than [`BATCH`] rows; the number of rows deleted.
    async fn delete_batches(
        &self,
        what: &'static str,
        sql: &'static str,
        cutoff: i64,
        keep: i64,
        per_app: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let mut query = sqlx::query(sql).bind(cutoff).bind(keep).bind(BATCH);
            if let Some(per_app) = per_app {
                query = query.bind(per_app);
            }
            let done = query
                .execute(&self.pool)
                .await
                .map_err(self.query_error(what))?
                .rows_affected();
            deleted += done;
            if done < BATCH as u64 {
                return Ok(deleted);
            }
        }
    }
}
