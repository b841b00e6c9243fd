// The self-heal rows (`heal_state`), event kinds and kept anonymous volumes, included (`include!`) by
// tests/store_heal.rs (SQLite) and tests/store_postgres.rs: round trip, replace, survive a
// reopen, go with `delete_app`, refuse a corrupt row, and every event kind's text reads
// back as its variant. Each binary defines `db_path()`, `open(&path)` and
// `corrupt_heal_repairs(&path)` (writes `not json` into `heal_state.repairs` with a raw
// connection of its dialect) before including this file.

use berth::store::HealRow;

/// An app's first pass record (spec hash h1, revision r1, at 1), for the rows the heal
/// state and statuses hang off.
fn synced_app(name: &str) -> AppDesiredRecord {
    AppDesiredRecord {
        name: name.to_string(),
        spec_json: "{}".to_string(),
        spec_hash: "h1".to_string(),
        source_file: format!("{name}.yaml"),
        revision: "r1".to_string(),
        at: 1,
    }
}

fn row(app: &str, hash: &str, repairs: &[i64], quarantined: Option<i64>) -> HealRow {
    HealRow {
        app: app.to_string(),
        spec_hash: hash.to_string(),
        repairs: repairs.to_vec(),
        quarantined_since: quarantined,
        last_failure: quarantined.map(|_| "container c kept exiting".to_string()),
        updated_at: repairs.last().copied().unwrap_or(0),
    }
}

#[tokio::test]
async fn heal_rows_round_trip_replace_and_survive_a_reopen() {
    let (_dir, path) = db_path();
    {
        let store = open(&path).await;
        assert!(store.heal_states().await.unwrap().is_empty());
        store
            .save_heal_state(&row("web", "h1", &[10], None))
            .await
            .unwrap();
        store
            .save_heal_state(&row("api", "h7", &[5], None))
            .await
            .unwrap();
        // The next repair replaces the row: one per app.
        let quarantined = row("web", "h1", &[10, 20, 40, 80, 160], Some(160));
        store.save_heal_state(&quarantined).await.unwrap();
        assert_eq!(
            store.heal_states().await.unwrap(),
            vec![row("api", "h7", &[5], None), quarantined.clone()],
            "ordered by app, the newest state of each"
        );
        store.close().await;
    }
    let store = open(&path).await;
    let rows = store.heal_states().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].repairs, vec![10, 20, 40, 80, 160]);
    assert_eq!(rows[1].quarantined_since, Some(160));
    assert_eq!(
        rows[1].last_failure.as_deref(),
        Some("container c kept exiting")
    );
    assert!(store.clear_heal_state("api").await.unwrap());
    assert!(!store.clear_heal_state("api").await.unwrap());
    assert_eq!(store.heal_states().await.unwrap().len(), 1);
}

#[tokio::test]
async fn delete_app_forgets_its_heal_state() {
    let (_dir, path) = db_path();
    let store = open(&path).await;
    for name in ["web", "api"] {
        store
            .record_app_pass(&synced_app(name), AppStatus::Synced, None)
            .await
            .unwrap();
        store
            .save_heal_state(&row(name, "h1", &[2], None))
            .await
            .unwrap();
    }
    assert!(store.delete_app("web").await.unwrap());
    let left: Vec<String> = store
        .heal_states()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.app)
        .collect();
    assert_eq!(left, vec!["api".to_string()]);
}

#[tokio::test]
async fn a_corrupt_repairs_column_is_reported_with_the_app() {
    let (_dir, path) = db_path();
    let store = open(&path).await;
    store
        .save_heal_state(&row("web", "h1", &[1], None))
        .await
        .unwrap();
    store.close().await;
    // Damage the row behind the store's back, as a bad manual edit would.
    corrupt_heal_repairs(&path).await;
    let store = open(&path).await;
    match store.heal_states().await {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("\"web\""), "{detail}");
        }
        other => panic!("expected a corrupt-row error, got {other:?}"),
    }
}

#[tokio::test]
async fn crash_looping_is_a_stored_status() {
    let (_dir, path) = db_path();
    let store = open(&path).await;
    store
        .record_app_pass(&synced_app("web"), AppStatus::Synced, None)
        .await
        .unwrap();
    let why = "5 repairs within 10 minutes; self-heal stopped until the spec changes";
    store
        .set_app_status("web", AppStatus::CrashLooping, Some(why), 2)
        .await
        .unwrap();
    let app = store.app("web").await.unwrap().unwrap();
    assert_eq!(app.status, AppStatus::CrashLooping);
    assert_eq!(app.status.as_str(), "crash-looping");
    assert_eq!(app.last_error.as_deref(), Some(why));
    assert_eq!(
        AppStatus::parse("crash-looping"),
        Some(AppStatus::CrashLooping)
    );
}

#[tokio::test]
async fn every_event_kind_reads_back_as_its_variant() {
    let (_dir, path) = db_path();
    let store = open(&path).await;
    for (at, kind) in EventType::KNOWN.iter().enumerate() {
        store
            .record_event(&NewEvent {
                app: None,
                event_type: kind.clone(),
                message: format!("kind {kind}"),
                revision: None,
                source_file: None,
                details: serde_json::Value::Null,
                at: at as i64,
            })
            .await
            .unwrap();
    }
    let rows = store
        .events(&EventQuery {
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), EventType::KNOWN.len());
    for row in rows {
        assert!(
            !matches!(row.event_type, EventType::Other(_)),
            "{} read back as Other",
            row.event_type
        );
        assert_eq!(row.message, format!("kind {}", row.event_type));
    }
    // The texts stored rows and API filters use did not change.
    for (kind, text) in [
        (EventType::ProxyStarted, "proxy-started"),
        (EventType::PruneRefused, "prune-refused"),
        (EventType::SourceDegraded, "source-degraded"),
        (EventType::SourceRecovered, "source-recovered"),
        (EventType::Unhealthy, "unhealthy"),
        (EventType::CrashLooping, "crash-looping"),
    ] {
        assert_eq!(kind.as_str(), text);
        assert_eq!(EventType::parse(text), kind);
    }
    // A kind named by its text (as older code and filters did) is the same kind.
    assert_eq!(
        EventType::Other("prune-refused".into()),
        EventType::PruneRefused
    );
    let filtered = store
        .events(&EventQuery {
            event_type: Some(EventType::Other("crash-looping".into())),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].event_type, EventType::CrashLooping);
    // Unknown kinds still read back.
    assert_eq!(
        EventType::parse("from-a-newer-berth"),
        EventType::Other("from-a-newer-berth".into())
    );
}

#[tokio::test]
async fn kept_volumes_are_recorded_per_app_once_and_forgotten() {
    let (_dir, path) = db_path();
    let a = "a".repeat(64);
    let b = "b".repeat(64);
    {
        let store = open(&path).await;
        assert!(store.kept_volumes("web").await.unwrap().is_empty());
        store
            .record_kept_volumes("web", &[b.clone(), a.clone()], 10)
            .await
            .unwrap();
        // Recorded again (the old side of a later rollout): still one row per volume.
        store
            .record_kept_volumes("web", std::slice::from_ref(&a), 20)
            .await
            .unwrap();
        store
            .record_kept_volumes("api", &["c".repeat(64)], 30)
            .await
            .unwrap();
        assert_eq!(
            store.kept_volumes("web").await.unwrap(),
            vec![a.clone(), b.clone()]
        );
    }
    let store = open(&path).await;
    assert_eq!(store.kept_volumes("web").await.unwrap().len(), 2, "kept across a reopen");
    store
        .forget_kept_volumes(std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(store.kept_volumes("web").await.unwrap(), vec![b]);
    assert_eq!(store.kept_volumes("api").await.unwrap().len(), 1);
}
