//! The store's self-heal rows and event kinds (`store_cases/heal.rs`, which
//! `store_postgres.rs` runs too) against a real SQLite file in a temporary directory.
//! Touches nothing but its own temp dirs.

use berth::store::{
    AppDesiredRecord, AppStatus, EventQuery, EventType, NewEvent, Store, StoreError,
};
use std::path::PathBuf;
use tempfile::TempDir;

fn db_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().join("state").join("berth.db");
    (dir, path)
}

async fn open(path: &std::path::Path) -> Store {
    Store::open(path).await.unwrap()
}

async fn corrupt_heal_repairs(path: &std::path::Path) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE heal_state SET repairs = 'not json'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

include!("store_cases/heal.rs");
