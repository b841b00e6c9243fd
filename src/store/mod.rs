//! The store: berth's only persistent state, in SQLite (the zero-setup default) or
//! PostgreSQL (several controllers on one store, `lease.rs`), through sqlx's `Any` driver.
//! Owns all SQL of the project, the schema (`migrations/sqlite/` and `migrations/postgres/`,
//! embedded at build time) and the row types other modules read and write: apps with their
//! desired and last-good specs, failed rollouts, replica overrides, self-heal state, events,
//! scaling decisions, source revisions, kept anonymous volumes and the leader lease.
//!
//! Rules that keep one set of statements valid in both dialects: plain portable SQL with
//! `$n` placeholders, times as integer unix milliseconds handed in by the caller (the store
//! never reads the clock; the lease's expiry is the database's own clock), JSON as TEXT.
//! Writes of desired state go through `write`/`fenced_tx`, which check the leader lease's
//! epoch when a fence is set (`fence.rs`). Must not touch: Docker, nginx, the spec parser,
//! the clock, or any file other than the database (and its `-wal`/`-shm` companions).

mod apps;
mod error;
mod events;
mod fence;
mod heal;
mod history;
mod kept_volumes;
mod lease;
mod overrides;
mod revisions;
mod rollouts;
mod scaling;
mod tap;
mod url;

pub use apps::{AppDesiredRecord, AppRow, AppStatus, LastGood};
pub use error::StoreError;
pub use events::{EventQuery, EventRow, EventType, NewEvent, MAX_EVENT_PAGE};
pub use fence::Fence;
pub use heal::HealRow;
pub use history::{HistoryLimits, PrunedHistory, DECISIONS_KEPT_PER_APP};
pub use lease::{LeaseRow, LeaseTerms};
pub use overrides::ReplicaOverrideRow;
pub use revisions::{NewRevision, RevisionRow, RevisionSource, RevisionStatus, MAX_REVISION_PAGE};
pub use rollouts::FailedRollout;
pub use scaling::{NewScalingDecision, OverrideChange, ScalingDecisionRow, MAX_SCALING_PAGE};
pub use tap::{dropped as tap_dropped, Recorded};
pub use url::{Dialect, StoreUrl};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::Executor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection waits for another writer before giving up with `database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a database file. Writers serialise inside SQLite (WAL: one writer, many
/// readers); a few connections let API reads proceed while the loop writes.
const FILE_POOL_CONNECTIONS: u32 = 4;
/// Connections to a PostgreSQL server: the loop, the API, the autoscaler and the lease.
const SERVER_POOL_CONNECTIONS: u32 = 6;
/// How long a query waits for a connection (or a new one to a server that went away)
/// before it fails: a lost PostgreSQL makes passes and `/readyz` fail fast, not hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Label used in messages for an in-memory store.
const MEMORY_LOCATION: &str = ":memory:";
/// Set on every SQLite connection (the `Any` driver takes only a URL, which cannot carry
/// them). The page cache is 512 KiB per connection (SQLite's default is 2 MiB): berth's
/// database is small and the OS caches the file anyway.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA cache_size = -512;";

/// Handle to the database. Cheap to clone (a pool handle and a shared path); clones share
/// the same connections, the tap and the fence.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    location: Arc<str>,
    dialect: Dialect,
    /// The notifier's channel (`tap.rs`), when one listens.
    tap: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Recorded>>>,
    /// The leader lease this controller writes under (`fence.rs`), when it has one.
    fence: Arc<std::sync::OnceLock<Fence>>,
    /// Bumped after every committed write of what `Overrides` are read from (replica
    /// overrides, failed rollouts, app deletion) through this store or a clone: a reader
    /// that saw the same generation before its read may keep what it read.
    overrides_generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Opens (creating the file and its parent directory when missing) the SQLite database at
    /// `path` in WAL mode with a busy timeout and foreign keys on, and runs pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Self::connect(&StoreUrl::Sqlite(path.to_path_buf())).await
    }

    /// Opens the store `url` names and runs pending migrations: a SQLite file as `open`
    /// does, or a PostgreSQL database (which must exist; an unreachable server is an
    /// `Open` error naming the URL without its password).
    pub async fn connect(url: &StoreUrl) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let location: Arc<str> = Arc::from(url.display());
        let open_error = |source| StoreError::Open {
            location: location.to_string(),
            dialect: url.dialect(),
            source,
        };
        let pool = match url {
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await.map_err(|source| {
                        StoreError::CreateDir {
                            dir: dir.to_path_buf(),
                            source,
                        }
                    })?;
                }
                let pool = sqlite_pool(FILE_POOL_CONNECTIONS)
                    .connect(url.connect_url(false).as_str())
                    .await
                    .map_err(open_error)?;
                // Persistent in the file: readers never wait for the writer.
                pool.execute("PRAGMA journal_mode = WAL")
                    .await
                    .map_err(open_error)?;
                pool
            }
            StoreUrl::Postgres(_) => AnyPoolOptions::new()
                .max_connections(SERVER_POOL_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url.connect_url(false).as_str())
                .await
                .map_err(open_error)?,
        };
        Self::migrated(pool, location, url.dialect()).await
    }

    /// Checks an existing database without changing it (`berth doctor`): opens it (a SQLite
    /// file read-only) and answers how many migrations it has applied.
    pub async fn probe(path: &Path) -> Result<i64, StoreError> {
        Self::probe_url(&StoreUrl::Sqlite(path.to_path_buf())).await
    }

    /// `probe` for any store URL.
    pub async fn probe_url(url: &StoreUrl) -> Result<i64, StoreError> {
        sqlx::any::install_default_drivers();
        let location = url.display();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            dialect: url.dialect(),
            source,
        };
        let options = match url {
            StoreUrl::Sqlite(_) => sqlite_pool(1),
            StoreUrl::Postgres(_) => AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT),
        };
        let pool = options
            .connect(url.connect_url(true).as_str())
            .await
            .map_err(open_error)?;
        let applied = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .map_err(open_error);
        pool.close().await;
        applied
    }

    /// A fresh, empty, migrated database that lives only as long as this `Store` and its
    /// clones. For tests of other modules.
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let location: Arc<str> = Arc::from(MEMORY_LOCATION);
        // Every connection to `:memory:` is a separate database, so keep exactly one and
        // never let the pool close it.
        let pool = sqlite_pool(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .map_err(|source| StoreError::Open {
                location: location.to_string(),
                dialect: Dialect::Sqlite,
                source,
            })?;
        Self::migrated(pool, location, Dialect::Sqlite).await
    }

    async fn migrated(
        pool: AnyPool,
        location: Arc<str>,
        dialect: Dialect,
    ) -> Result<Store, StoreError> {
        let migrator = match dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                location: location.to_string(),
                source,
            })?;
        Ok(Store {
            pool,
            location,
            dialect,
            tap: Default::default(),
            fence: Default::default(),
            overrides_generation: Default::default(),
        })
    }

    /// The generation of the override tables' writes through this store (see the field).
    /// Read it before reading the overrides; the same value later means nothing changed
    /// through this process since.
    pub fn overrides_generation(&self) -> u64 {
        self.overrides_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn overrides_changed(&self) {
        self.overrides_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Which SQL dialect this store speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The database path as given to `open`, the URL without its password, or `:memory:`.
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

/// Pool options for a SQLite database with berth's pragmas on every connection.
fn sqlite_pool(connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(BUSY_TIMEOUT)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                Ok(())
            })
        })
}

/// Caps a requested page size at `max` and converts it for binding.
fn page_limit(limit: u32, max: u32) -> i64 {
    i64::from(limit.min(max))
}
