//! Store tests against a real SQLite file in a temporary directory: the cases both dialects
//! pass (`store_cases/cases.rs`: every method's round trip, event paging and filters,
//! overrides, failed rollouts, concurrent writers, persistence across reopen) and SQLite's
//! own (file and parent dirs created, WAL, in-memory stores, a database file written by
//! the berth before per-dialect migrations still opens). Touches nothing but its own temp
//! dirs.

use tempfile::TempDir;

include!("store_cases/cases.rs");

/// A temp dir with a database path inside a not-yet-existing subdirectory.
fn db_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().join("nested").join("state").join("berth.db");
    (dir, path)
}

/// Opens the database file at `path` (again).
async fn open(path: &std::path::Path) -> Store {
    Store::open(path).await.unwrap()
}

/// An empty migrated store.
async fn fresh() -> Store {
    Store::open_in_memory().await.unwrap()
}

/// Writes an app row without a last good spec behind the store's back (`OLDER_APP_ROW`).
async fn insert_app_without_last_good(path: &std::path::Path, name: &str) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(OLDER_APP_ROW)
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn open_creates_file_and_parent_dirs_and_migrations_are_idempotent() {
    let (_dir, path) = db_path();
    assert!(!path.parent().unwrap().exists());
    let store = Store::open(&path).await.expect("first open");
    assert!(path.exists(), "database file was created");
    assert_eq!(store.location(), path.display().to_string());
    store.ping().await.expect("ping");
    store
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    store.close().await;

    for _ in 0..2 {
        let store = Store::open(&path)
            .await
            .expect("reopen runs migrations again");
        store.ping().await.expect("ping after reopen");
        assert_eq!(
            store.apps().await.unwrap().len(),
            1,
            "data kept across reopen"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn open_uses_wal_mode() {
    let (_dir, path) = db_path();
    let store = Store::open(&path).await.unwrap();
    store
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        wal.exists(),
        "WAL file {} exists while the store is open",
        wal.display()
    );
    store.close().await;
}

#[tokio::test]
async fn open_reports_the_path_when_the_directory_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"file").unwrap();
    let path = blocker.join("berth.db");
    let err = Store::open(&path).await.expect_err("parent is a file");
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&blocker.display().to_string()),
        "{message}"
    );
    assert!(!message.ends_with('.'), "{message}");
}

#[tokio::test]
async fn in_memory_store_is_migrated_and_shared_by_clones() {
    let store = Store::open_in_memory().await.unwrap();
    let clone = store.clone();
    store
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    assert_eq!(clone.apps().await.unwrap().len(), 1);
    assert_eq!(clone.location(), ":memory:");
    let other = Store::open_in_memory().await.unwrap();
    assert!(
        other.apps().await.unwrap().is_empty(),
        "each in-memory store is separate"
    );
}

/// What the berth before per-dialect migrations (`migrations/*.sql`, moved to
/// `migrations/sqlite/` unchanged) recorded in `_sqlx_migrations`: version, description
/// and the SHA-384 checksum of each file. A moved or edited file changes none of these, or
/// every existing database would refuse to open ("migration was previously applied but has
/// been modified").
const APPLIED_BEFORE: [(i64, &str, &str); 2] = [
    (
        20261123000000,
        "store init",
        "34086eef96f8f45797749e33bd53d71fd600b998e0479725a629033268484fff782e64b528023b42af3ce30b80afb3d9",
    ),
    (
        20261201000000,
        "heal state",
        "57c63a01e0b15fa266aeb986bec3ada47060363e689b5f0c295f8659eb60f292a0e0947ccf5f8b21fbf62ec24554b401",
    ),
];

/// Migrations added after the ones in `APPLIED_BEFORE` (`kept_volumes`).
const ADDED_SINCE: i64 = 1;

/// A database file as the berth before `--store` left it (schema, bookkeeping, a row)
/// opens, keeps its row and applies no migration again.
#[tokio::test]
async fn a_database_written_before_per_dialect_migrations_still_opens() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::Executor;
    let (_dir, path) = db_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let old = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    old.execute(
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
    )
    .await
    .unwrap();
    old.execute(include_str!(
        "../migrations/sqlite/20261123000000_store_init.sql"
    ))
    .await
    .unwrap();
    old.execute(include_str!(
        "../migrations/sqlite/20261201000000_heal_state.sql"
    ))
    .await
    .unwrap();
    for (version, description, checksum) in APPLIED_BEFORE {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES ($1, $2, true, $3, 1)",
        )
        .bind(version)
        .bind(description)
        .bind(hex::decode(checksum).unwrap())
        .execute(&old)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO apps (name, spec_json, spec_hash, source_file, revision, status, \
         updated_at) VALUES ('web', '{}', 'h1', 'apps/web.yaml', 'r1', 'synced', 1)",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = Store::open(&path)
        .await
        .expect("a database of the berth before --store opens");
    let apps = store.apps().await.unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].status, AppStatus::Synced);
    // The old ones did not run again; only those added since (kept_volumes) ran once.
    assert_eq!(
        Store::probe(&path).await.unwrap(),
        APPLIED_BEFORE.len() as i64 + ADDED_SINCE,
        "no migration ran again"
    );
    store.close().await;
}
