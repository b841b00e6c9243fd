//! The store: berth's only persistent state, in SQLite through sqlx. Owns all SQL of the
//! project, the schema (top-level `migrations/`, embedded at build time) and the row types
//! other modules read and write: apps with their desired and last-good specs, failed
//! rollouts, replica overrides, self-heal state, events, scaling decisions and source
//! revisions.
//!
//! Rules kept here so a PostgreSQL backend can follow: plain portable SQL with `$n`
//! placeholders, times as INTEGER unix milliseconds handed in by the caller (the store never
//! reads the clock), JSON as TEXT. Must not touch: Docker, nginx, the spec parser, the
//! clock, or any file other than the database (and its `-wal`/`-shm` companions).

mod apps;
mod error;
mod events;
mod heal;
mod history;
mod overrides;
mod revisions;
mod rollouts;
mod scaling;
mod tap;

pub use apps::{AppDesiredRecord, AppRow, AppStatus, LastGood};
pub use error::StoreError;
pub use events::{EventQuery, EventRow, EventType, NewEvent, MAX_EVENT_PAGE};
pub use heal::HealRow;
pub use history::{HistoryLimits, PrunedHistory, DECISIONS_KEPT_PER_APP};
pub use overrides::ReplicaOverrideRow;
pub use revisions::{NewRevision, RevisionRow, RevisionSource, RevisionStatus, MAX_REVISION_PAGE};
pub use rollouts::FailedRollout;
pub use scaling::{NewScalingDecision, OverrideChange, ScalingDecisionRow, MAX_SCALING_PAGE};
pub use tap::{dropped as tap_dropped, Recorded};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection waits for another writer before giving up with `database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a database file. Writers serialise inside SQLite (WAL: one writer, many
/// readers); a few connections let API reads proceed while the loop writes.
const FILE_POOL_CONNECTIONS: u32 = 4;
/// Label used in messages for an in-memory store.
const MEMORY_LOCATION: &str = ":memory:";

/// Handle to the database. Cheap to clone (a pool handle and a shared path); clones share
/// the same connections.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    location: Arc<str>,
    /// The notifier's channel (`tap.rs`), when one listens.
    tap: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Recorded>>>,
}

impl Store {
    /// Opens (creating the file and its parent directory when missing) the SQLite database at
    /// `path` in WAL mode with a busy timeout and foreign keys on, and runs pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let location: Arc<str> = Arc::from(path.display().to_string());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: location.to_string(),
                source,
            })?;
        Self::migrated(pool, location).await
    }

    /// Checks an existing database without changing it (`berth doctor`): opens it read-only
    /// and answers how many migrations it has applied.
    pub async fn probe(path: &Path) -> Result<i64, StoreError> {
        let location = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: location.clone(),
                source,
            })?;
        let applied = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .map_err(|source| StoreError::Open {
                location: location.clone(),
                source,
            });
        pool.close().await;
        applied
    }

    /// A fresh, empty, migrated database that lives only as long as this `Store` and its
    /// clones. For tests of other modules.
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        let location: Arc<str> = Arc::from(MEMORY_LOCATION);
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // Every connection to `:memory:` is a separate database, so keep exactly one and
        // never let the pool close it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: location.to_string(),
                source,
            })?;
        Self::migrated(pool, location).await
    }

    async fn migrated(pool: SqlitePool, location: Arc<str>) -> Result<Store, StoreError> {
        sqlx::migrate!()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                location: location.to_string(),
                source,
            })?;
        Ok(Store {
            pool,
            location,
            tap: Default::default(),
        })
    }

    /// The database path as given to `open`, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Readiness check: one trivial round trip through the pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(self.query_error("ping"))?;
        Ok(())
    }

    /// Waits for in-flight queries and closes every connection (checkpointing the WAL).
    /// Later calls on this store or its clones fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn query_error(&self, operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        let location = self.location.to_string();
        move |source| StoreError::Query {
            operation,
            location,
            source,
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            location: self.location.to_string(),
            detail: detail.into(),
        }
    }

    /// Reads a JSON TEXT column back into a value.
    fn decode_json(&self, what: &str, text: &str) -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(text).map_err(|e| self.corrupt(format!("{what} is not JSON: {e}")))
    }

    /// Reads an INTEGER column that holds a replica count.
    fn decode_replicas(&self, what: &str, value: i64) -> Result<u32, StoreError> {
        u32::try_from(value)
            .map_err(|_| self.corrupt(format!("{what} is {value}, not a replica count")))
    }
}

/// Caps a requested page size at `max` and converts it for binding.
fn page_limit(limit: u32, max: u32) -> i64 {
    i64::from(limit.min(max))
}
