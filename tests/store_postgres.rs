//! The store cases of `store_cases/cases.rs` and `store_cases/heal.rs` (the same ones
//! `store_sqlite.rs` and `store_heal.rs` run) against a real PostgreSQL started by the test
//! binary (`support::postgres`: one server, a database per test), and PostgreSQL's own: the leader lease (take, renew, expiry, takeover with a
//! new epoch, release), fencing of a deposed leader's writes, an unreachable server's
//! error, and TLS (`verify-full` against the server's own certificate). Touches nothing
//! but its own server and temp dir.

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod postgres;

/// The support module's `free_port`, which `postgres.rs` reaches as `super::free_port`.
#[allow(dead_code)]
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

use berth::store::{Fence, LeaseTerms, StoreUrl};

include!("store_cases/cases.rs");
include!("store_cases/heal.rs");

/// Writes `not json` into `heal_state.repairs` behind the store's back (`store_cases/heal.rs`).
async fn corrupt_heal_repairs(url: &std::path::Path) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url.to_str().unwrap())
        .await
        .unwrap();
    sqlx::query("UPDATE heal_state SET repairs = 'not json'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Writes an app row without a last good spec behind the store's back (`OLDER_APP_ROW`,
/// `store_cases/cases.rs`).
async fn insert_app_without_last_good(url: &std::path::Path, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url.to_str().unwrap())
        .await
        .unwrap();
    sqlx::query(OLDER_APP_ROW)
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A fresh database on the shared server: its URL as a "path" (`open` reopens it).
fn db_path() -> ((), PathBuf) {
    ((), PathBuf::from(postgres::shared_database()))
}

async fn open(url: &std::path::Path) -> Store {
    Store::connect(&StoreUrl::parse(url.to_str().unwrap()).unwrap())
        .await
        .unwrap()
}

async fn fresh() -> Store {
    open(&db_path().1).await
}

fn terms(holder: &str, held_epoch: i64, duration_ms: i64) -> LeaseTerms<'_> {
    LeaseTerms {
        holder,
        held_epoch,
        duration_ms,
    }
}

#[tokio::test]
async fn reopening_runs_no_migration_twice_and_keeps_rows() {
    let (_db, url) = db_path();
    let store = open(&url).await;
    store
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    store.close().await;
    let store = open(&url).await;
    assert_eq!(store.apps().await.unwrap().len(), 1);
    let parsed = StoreUrl::parse(url.to_str().unwrap()).unwrap();
    assert_eq!(Store::probe_url(&parsed).await.unwrap(), 4);
    store.close().await;
}

#[tokio::test]
async fn the_lease_is_taken_renewed_and_taken_over_only_after_expiry() {
    let store = fresh().await;
    let a = store.try_lease(&terms("a", 0, 60_000)).await.unwrap();
    assert!(a.granted);
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 1));
    assert!(a.expires_at >= a.now + 59_000);
    // Another controller learns who leads and changes nothing.
    let b = store.try_lease(&terms("b", 0, 60_000)).await.unwrap();
    assert!(!b.granted);
    assert_eq!((b.holder.as_str(), b.epoch), ("a", 1));
    // A renewal keeps the epoch.
    let renewed = store.try_lease(&terms("a", 1, 60_000)).await.unwrap();
    assert!(renewed.granted);
    assert_eq!(renewed.epoch, 1);
    // A short lease expires; then the other controller takes it with a new epoch.
    store.try_lease(&terms("a", 1, 1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let taken = store.try_lease(&terms("b", 0, 60_000)).await.unwrap();
    assert!(taken.granted);
    assert_eq!((taken.holder.as_str(), taken.epoch), ("b", 2));
    // The old leader's renewal of its epoch is refused.
    let late = store.try_lease(&terms("a", 1, 60_000)).await.unwrap();
    assert!(!late.granted);
    assert_eq!(late.holder, "b");
    // A clean stop releases it: the next attempt takes it at once.
    assert!(store.release_lease("b", 2).await.unwrap());
    let next = store.try_lease(&terms("a", 0, 60_000)).await.unwrap();
    assert!(next.granted);
    assert_eq!(next.epoch, 3);
}

#[tokio::test]
async fn a_deposed_leaders_writes_are_refused_by_epoch() {
    let (_db, url) = db_path();
    let leader = open(&url).await;
    let fence = Fence::new("a");
    leader.set_fence(fence.clone());
    // No lease yet: every desired-state write is refused, history is not fenced.
    let err = leader
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Progressing, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    leader
        .record_event(&event(Some("web"), EventType::Created, 1))
        .await
        .unwrap();

    let row = leader.try_lease(&terms("a", 0, 1)).await.unwrap();
    fence.set_epoch(row.epoch);
    leader
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Progressing, None)
        .await
        .unwrap();
    leader
        .set_replica_override("web", 2, "load", 1)
        .await
        .unwrap();

    // The lease expires and another controller takes it: the old epoch's writes fail.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let other = open(&url).await;
    let taken = other.try_lease(&terms("b", 0, 60_000)).await.unwrap();
    assert!(taken.granted);
    for err in [
        leader
            .record_app_pass(&desired("web", "h2", "r2", 2), AppStatus::Synced, None)
            .await
            .unwrap_err(),
        leader.delete_app("web").await.unwrap_err(),
        leader
            .set_replica_override("web", 5, "load", 2)
            .await
            .unwrap_err(),
        leader
            .mark_rollout_failed("web", "h2", "r2", "x", 2)
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        assert!(err.to_string().contains("moved on"), "{err}");
    }
    let apps = other.apps().await.unwrap();
    assert_eq!(
        apps[0].spec_hash, "h1",
        "nothing of the deposed leader landed"
    );
    assert_eq!(other.replica_overrides().await.unwrap()["web"], 2);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_naming_the_url_without_password() {
    let port = free_port();
    let url = StoreUrl::parse(&format!("postgres://berth:hunter2@127.0.0.1:{port}/berth")).unwrap();
    let err = Store::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("PostgreSQL runs"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// `berth doctor -o json --store postgres://...`: the store line of a migrated database,
/// of an unreachable server, and of a URL that is not one.
#[tokio::test]
async fn doctor_checks_the_store_url() {
    let (_db, url) = db_path();
    let url = url.to_str().unwrap().to_string();
    open(std::path::Path::new(&url)).await.close().await;
    let state = tempfile::tempdir().unwrap();
    let check = |store: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "--config",
                "none",
                "doctor",
                "-o",
                "json",
                "--dir",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps"),
                "--state-dir",
                state.path().to_str().unwrap(),
                "--store",
                store,
            ])
            .env("RUST_LOG", "warn")
            .env_remove("BERTH_CONFIG")
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let found = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "store")
            .unwrap()
            .clone();
        (
            found["status"].as_str().unwrap().to_string(),
            found["detail"].as_str().unwrap().to_string(),
        )
    };
    let (status, detail) = check(&url);
    assert_eq!(status, "ok", "{detail}");
    assert!(detail.contains("PostgreSQL"), "{detail}");
    assert!(detail.contains("4 migrations applied"), "{detail}");
    let (status, detail) = check(&format!(
        "postgres://berth:pw@127.0.0.1:{}/berth",
        free_port()
    ));
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("PostgreSQL runs"), "{detail}");
    assert!(!detail.contains(":pw@"), "{detail}");
    let (status, detail) = check("mysql://x/y");
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("sqlite://PATH or"), "{detail}");
}

/// TLS to PostgreSQL (sqlx's native-tls): the test server has a self-signed certificate for
/// 127.0.0.1; `sslmode=verify-full` with it as `sslrootcert` opens the store, and a root
/// that did not sign it is refused with an error naming the server, not the password.
#[tokio::test]
async fn tls_verify_full_trusts_only_the_given_root() {
    let url = postgres::shared_database();
    let ca = postgres::shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .tls_ca();
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let store = Store::connect(&StoreUrl::parse(&verified).unwrap())
        .await
        .expect("verify-full with the server's certificate as the root");
    assert!(store.apps().await.unwrap().is_empty());

    let other = tempfile::tempdir().unwrap();
    postgres::self_signed_for_loopback(
        &other.path().join("other.key"),
        &other.path().join("other.crt"),
    );
    let wrong = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        url.replace("postgres://postgres@", "postgres://postgres:hunter2@"),
        other.path().join("other.crt").display()
    );
    let err = Store::connect(&StoreUrl::parse(&wrong).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
