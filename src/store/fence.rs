//! Fencing: every write of desired state (apps, failed rollouts, replica overrides,
//! self-heal state, revisions) by a controller that runs under a leader lease checks, in
//! the write's own transaction, that the lease still has this controller's holder id and
//! epoch. The check takes a share lock on the lease row, so a takeover (which updates that
//! row) waits for the write to commit, and a write that starts after a takeover is refused
//! (`StoreError::Fenced`): a deposed leader's late writes never land. Without a fence
//! (SQLite: one controller) writes go straight to the pool. Owns the check; the epoch
//! itself is kept by the lease task (`crate::leader`). Must not touch: the lease row.

use super::{Store, StoreError};
use sqlx::any::{Any, AnyArguments, AnyQueryResult};
use sqlx::query::Query;
use sqlx::AnyConnection;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The lease a controller writes under: its holder id and the epoch it holds (0 while it
/// holds none). The lease task updates the epoch; every clone of the store reads it.
#[derive(Debug, Clone)]
pub struct Fence {
    holder: Arc<str>,
    epoch: Arc<AtomicI64>,
}

impl Fence {
    pub fn new(holder: &str) -> Fence {
        Fence {
            holder: Arc::from(holder),
            epoch: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The epoch writes are checked against (0: not the leader, every write is refused).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }
}

impl Store {
    /// Makes every later desired-state write (by this store and its clones) check `fence`.
    /// Returns false when a fence was set already.
    pub fn set_fence(&self, fence: Fence) -> bool {
        self.fence.set(fence).is_ok()
    }

    /// Runs one desired-state write, inside a transaction with the fence check when a
    /// fence is set.
    pub(super) async fn write<'q>(
        &self,
        operation: &'static str,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<AnyQueryResult, StoreError> {
        let Some(_) = self.fence.get() else {
            return query
                .execute(&self.pool)
                .await
                .map_err(self.query_error(operation));
        };
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.query_error(operation))?;
        self.check_fence(operation, &mut tx).await?;
        let result = query
            .execute(&mut *tx)
            .await
            .map_err(self.query_error(operation))?;
        tx.commit().await.map_err(self.query_error(operation))?;
        Ok(result)
    }

    /// Inside a write transaction: refuses with `Fenced` unless the lease row still names
    /// this controller's holder and epoch (share-locking the row until the commit). No-op
    /// without a fence.
    pub(super) async fn check_fence(
        &self,
        operation: &'static str,
        conn: &mut AnyConnection,
    ) -> Result<(), StoreError> {
        let Some(fence) = self.fence.get() else {
            return Ok(());
        };
        let epoch = fence.epoch();
        let fenced = || StoreError::Fenced {
            operation,
            location: self.location.to_string(),
            epoch,
        };
        if epoch == 0 {
            return Err(fenced());
        }
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT epoch FROM leader_lease WHERE id = 1 AND holder = $1 AND epoch = $2 \
             FOR SHARE",
        )
        .bind(fence.holder())
        .bind(epoch)
        .fetch_optional(&mut *conn)
        .await
        .map_err(self.query_error(operation))?;
        match held {
            Some(_) => Ok(()),
            None => Err(fenced()),
        }
    }
}
