// The store cases both dialects must pass, included (`include!`) by tests/store_sqlite.rs
// and tests/store_postgres.rs. Each binary defines `db_path()` (a fresh database and
// something that keeps it alive), `open(&path)` (opens that database again: a reopen sees
// the same rows), `fresh()` (an empty migrated store) and
// `insert_app_without_last_good(&path, name)` (runs `OLDER_APP_ROW` with a raw connection
// of its dialect) before including this file.

use berth::store::{
    AppDesiredRecord, AppStatus, EventQuery, EventType, HistoryLimits, LastGood, NewEvent,
    NewRevision, NewScalingDecision, PrunedHistory, RevisionSource, RevisionStatus, Store,
    StoreError, DECISIONS_KEPT_PER_APP, MAX_EVENT_PAGE,
};
use serde_json::json;
use std::path::PathBuf;

fn desired(name: &str, hash: &str, revision: &str, at: i64) -> AppDesiredRecord {
    AppDesiredRecord {
        name: name.to_string(),
        spec_json: format!(r#"{{"name":"{name}","hash":"{hash}"}}"#),
        spec_hash: hash.to_string(),
        source_file: format!("apps/{name}.yaml"),
        revision: revision.to_string(),
        at,
    }
}

/// An `apps` row as a berth before `record_app_pass` wrote it for a new app: desired spec
/// and status, no last good spec. `$1` is the app's name.
const OLDER_APP_ROW: &str = "INSERT INTO apps (name, spec_json, spec_hash, source_file, \
     revision, status, updated_at) \
     VALUES ($1, '{}', 'h1', 'apps/old.yaml', 'r1', 'progressing', 1)";

fn event(app: Option<&str>, event_type: EventType, at: i64) -> NewEvent {
    NewEvent {
        app: app.map(str::to_string),
        event_type,
        message: format!("something happened at {at}"),
        revision: Some("rev1".to_string()),
        source_file: app.map(|a| format!("apps/{a}.yaml")),
        details: json!({ "at": at, "nested": { "list": [1, 2, 3] } }),
        at,
    }
}

#[tokio::test]
async fn apps_round_trip() {
    let (_db, path) = db_path();
    let store = open(&path).await;

    assert_eq!(store.app("web").await.unwrap(), None);
    store
        .record_app_pass(&desired("web", "h1", "r1", 100), AppStatus::Progressing, None)
        .await
        .unwrap();
    store
        .record_app_pass(
            &desired("api", "h9", "r1", 110),
            AppStatus::Degraded,
            Some("1 of 2 containers unhealthy"),
        )
        .await
        .unwrap();

    // A new app's pass writes its desired spec, status, error and (the spec is valid) its
    // last good spec in one row.
    let web = store.app("web").await.unwrap().expect("web exists");
    assert_eq!(web.name, "web");
    assert_eq!(web.spec_json, r#"{"name":"web","hash":"h1"}"#);
    assert_eq!(web.spec_hash, "h1");
    assert_eq!(web.source_file, "apps/web.yaml");
    assert_eq!(web.revision, "r1");
    assert_eq!(web.status, AppStatus::Progressing);
    assert_eq!(web.last_error, None);
    assert_eq!(
        web.last_good_spec_json.as_deref(),
        Some(r#"{"name":"web","hash":"h1"}"#)
    );
    assert_eq!(web.last_good_hash.as_deref(), Some("h1"));
    assert_eq!(web.last_good_revision.as_deref(), Some("r1"));
    assert_eq!(web.last_good_source_file.as_deref(), Some("apps/web.yaml"));
    assert_eq!(web.last_good_at, Some(100));
    assert_eq!(web.updated_at, 100);
    assert_eq!(web.last_reconciled_at, None);
    let api = store.app("api").await.unwrap().expect("api exists");
    assert_eq!(api.status, AppStatus::Degraded);
    assert_eq!(
        api.last_error.as_deref(),
        Some("1 of 2 containers unhealthy")
    );
    assert_eq!(api.last_good_hash.as_deref(), Some("h9"));
    assert_eq!(api.last_good_at, Some(110));

    // Every status round-trips; the desired and last good spec stay.
    for (i, status) in AppStatus::ALL.into_iter().enumerate() {
        let err = format!("error {i}");
        store
            .set_app_status("web", status, Some(&err), 200 + i as i64)
            .await
            .unwrap();
        let row = store.app("web").await.unwrap().unwrap();
        assert_eq!(row.status, status);
        assert_eq!(row.last_error.as_deref(), Some(err.as_str()));
        assert_eq!(row.updated_at, 200 + i as i64);
        assert_eq!(row.spec_hash, "h1");
        assert_eq!(row.last_good_hash.as_deref(), Some("h1"));
        assert_eq!(row.last_good_at, Some(100));
    }
    store.mark_reconciled("web", 320).await.unwrap();

    // A new spec's pass replaces the desired columns, the status and error and the last good
    // spec together; the last reconcile time stays.
    store
        .record_app_pass(
            &desired("web", "h2", "r2", 400),
            AppStatus::FailedRollout,
            Some("never healthy"),
        )
        .await
        .unwrap();
    let web = store.app("web").await.unwrap().unwrap();
    assert_eq!(web.spec_hash, "h2");
    assert_eq!(web.revision, "r2");
    assert_eq!(web.spec_json, r#"{"name":"web","hash":"h2"}"#);
    assert_eq!(web.status, AppStatus::FailedRollout);
    assert_eq!(web.last_error.as_deref(), Some("never healthy"));
    assert_eq!(
        web.last_good_spec_json.as_deref(),
        Some(r#"{"name":"web","hash":"h2"}"#)
    );
    assert_eq!(web.last_good_hash.as_deref(), Some("h2"));
    assert_eq!(web.last_good_revision.as_deref(), Some("r2"));
    assert_eq!(web.last_good_source_file.as_deref(), Some("apps/web.yaml"));
    assert_eq!(web.last_good_at, Some(400));
    assert_eq!(web.updated_at, 400);
    assert_eq!(web.last_reconciled_at, Some(320));

    // The next pass of the same spec clears the error (`None`).
    store
        .record_app_pass(&desired("web", "h2", "r2", 450), AppStatus::Synced, None)
        .await
        .unwrap();
    let web = store.app("web").await.unwrap().unwrap();
    assert_eq!(web.status, AppStatus::Synced);
    assert_eq!(web.last_error, None);
    assert_eq!(web.last_good_at, Some(450));

    // A broken edit quarantines the app: its desired and last good spec stay what it runs.
    store
        .set_app_status("web", AppStatus::Quarantined, Some("spec.image: missing"), 500)
        .await
        .unwrap();
    let web = store.app("web").await.unwrap().unwrap();
    assert_eq!(web.status, AppStatus::Quarantined);
    assert_eq!(web.spec_hash, "h2");
    assert_eq!(web.last_good_hash.as_deref(), Some("h2"));
    assert_eq!(web.last_good_at, Some(450));
    assert_eq!(web.updated_at, 500);

    let names: Vec<String> = store
        .apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["api", "web"], "apps are ordered by name");

    assert_eq!(
        store.last_good_specs().await.unwrap(),
        vec![
            LastGood {
                name: "api".to_string(),
                spec_json: r#"{"name":"api","hash":"h9"}"#.to_string(),
                spec_hash: "h9".to_string(),
                revision: "r1".to_string(),
                source_file: "apps/api.yaml".to_string(),
                at: 110,
            },
            LastGood {
                name: "web".to_string(),
                spec_json: r#"{"name":"web","hash":"h2"}"#.to_string(),
                spec_hash: "h2".to_string(),
                revision: "r2".to_string(),
                source_file: "apps/web.yaml".to_string(),
                at: 450,
            },
        ],
        "ordered by name, each app's newest valid spec"
    );

    // Row serialises with kebab-case status for the API.
    store
        .set_app_status("web", AppStatus::FailedRollout, Some("unhealthy"), 600)
        .await
        .unwrap();
    let value = serde_json::to_value(store.app("web").await.unwrap().unwrap()).unwrap();
    assert_eq!(value["status"], "failed-rollout");
}

/// A row an older berth wrote (its desired spec without a last good one) still reads back,
/// is left out of `last_good_specs`, and gets its last good spec from the next pass.
#[tokio::test]
async fn a_row_without_a_last_good_spec_is_left_out_until_its_next_pass() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    store
        .record_app_pass(&desired("api", "h9", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    insert_app_without_last_good(&path, "web").await;

    let web = store.app("web").await.unwrap().expect("web reads back");
    assert_eq!(web.status, AppStatus::Progressing);
    assert_eq!(web.last_good_spec_json, None);
    assert_eq!(web.last_good_at, None);
    let good: Vec<String> = store
        .last_good_specs()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(good, ["api"], "apps without a last good spec are left out");

    store
        .record_app_pass(&desired("web", "h2", "r2", 5), AppStatus::Synced, None)
        .await
        .unwrap();
    let good = store.last_good_specs().await.unwrap();
    assert_eq!(good.len(), 2);
    assert_eq!(
        (good[1].name.as_str(), good[1].spec_hash.as_str(), good[1].at),
        ("web", "h2", 5)
    );
}

#[tokio::test]
async fn app_updates_on_unknown_apps_say_so() {
    let store = fresh().await;
    let err = store
        .set_app_status("ghost", AppStatus::Synced, None, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AppNotFound { name } if name == "ghost"),
        "{err:?}"
    );
    assert!(err.to_string().contains("record_app_pass"), "{err}");
    assert!(!err.to_string().ends_with('.'), "{err}");
    assert!(matches!(
        store.mark_reconciled("ghost", 1).await,
        Err(StoreError::AppNotFound { .. })
    ));
    assert_eq!(store.app("ghost").await.unwrap(), None, "nothing was created");

    // A deleted app is unknown again.
    store
        .record_app_pass(&desired("ghost", "h1", "r1", 2), AppStatus::Synced, None)
        .await
        .unwrap();
    store.mark_reconciled("ghost", 3).await.unwrap();
    assert!(store.delete_app("ghost").await.unwrap());
    assert!(matches!(
        store
            .set_app_status("ghost", AppStatus::Degraded, None, 4)
            .await,
        Err(StoreError::AppNotFound { .. })
    ));
    assert!(matches!(
        store.mark_reconciled("ghost", 4).await,
        Err(StoreError::AppNotFound { .. })
    ));
}

#[tokio::test]
async fn delete_app_removes_app_and_its_current_state_but_keeps_history() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    store
        .record_app_pass(&desired("web", "h1", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    store
        .record_app_pass(&desired("api", "h1", "r1", 1), AppStatus::Synced, None)
        .await
        .unwrap();
    store
        .set_replica_override("web", 3, "load", 2)
        .await
        .unwrap();
    store
        .set_replica_override("api", 2, "load", 2)
        .await
        .unwrap();
    store
        .mark_rollout_failed("web", "h1", "r1", "unhealthy", 3)
        .await
        .unwrap();
    store
        .record_event(&event(Some("web"), EventType::Removed, 4))
        .await
        .unwrap();

    assert!(store.delete_app("web").await.unwrap());
    assert!(
        !store.delete_app("web").await.unwrap(),
        "second delete finds nothing"
    );
    assert_eq!(store.app("web").await.unwrap(), None);
    assert!(store.app("api").await.unwrap().is_some());
    let overrides = store.replica_overrides().await.unwrap();
    assert_eq!(overrides.get("web"), None);
    assert_eq!(overrides.get("api"), Some(&2));
    assert!(store.failed_rollouts().await.unwrap().is_empty());
    let events = store
        .events(&EventQuery {
            app: Some("web".to_string()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "events survive deletion");
}

#[tokio::test]
async fn last_good_survives_reopen() {
    let (_db, path) = db_path();
    {
        let store = open(&path).await;
        store
            .record_app_pass(
                &AppDesiredRecord {
                    spec_json: r#"{"image":"web:1"}"#.to_string(),
                    ..desired("web", "h1", "r1", 2)
                },
                AppStatus::Synced,
                None,
            )
            .await
            .unwrap();
        store
            .set_app_status("web", AppStatus::Quarantined, Some("spec.image: missing"), 3)
            .await
            .unwrap();
        store.close().await;
    }
    let store = open(&path).await;
    let good = store.last_good_specs().await.unwrap();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].spec_json, r#"{"image":"web:1"}"#);
    assert_eq!(good[0].spec_hash, "h1");
    assert_eq!(good[0].at, 2);
    let web = store.app("web").await.unwrap().unwrap();
    assert_eq!(web.status, AppStatus::Quarantined);
    assert_eq!(web.last_error.as_deref(), Some("spec.image: missing"));
}

#[tokio::test]
async fn failed_rollouts_newest_wins_and_clear_works() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    assert!(store.failed_rollouts().await.unwrap().is_empty());

    store
        .mark_rollout_failed("web", "h1", "r1", "never healthy", 100)
        .await
        .unwrap();
    store
        .mark_rollout_failed("web", "h2", "r2", "crashed", 200)
        .await
        .unwrap();
    // Recorded later but with an older time: does not win.
    store
        .mark_rollout_failed("web", "h0", "r0", "late report", 150)
        .await
        .unwrap();
    store
        .mark_rollout_failed("api", "a1", "r2", "port closed", 120)
        .await
        .unwrap();
    // Same time: the later record wins.
    store
        .mark_rollout_failed("api", "a2", "r3", "tie", 120)
        .await
        .unwrap();

    let failed = store.failed_rollouts().await.unwrap();
    assert_eq!(failed.len(), 2);
    let web = &failed["web"];
    assert_eq!(
        (
            web.app.as_str(),
            web.spec_hash.as_str(),
            web.revision.as_str(),
            web.reason.as_str(),
            web.at
        ),
        ("web", "h2", "r2", "crashed", 200)
    );
    assert_eq!(failed["api"].spec_hash, "a2");

    assert!(store.clear_failed_rollout("web").await.unwrap());
    assert!(!store.clear_failed_rollout("web").await.unwrap());
    let failed = store.failed_rollouts().await.unwrap();
    assert_eq!(failed.keys().collect::<Vec<_>>(), ["api"]);
}

#[tokio::test]
async fn replica_overrides_set_replace_clear() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    assert!(store.replica_overrides().await.unwrap().is_empty());

    store
        .set_replica_override("web", 3, "rps above target", 10)
        .await
        .unwrap();
    store
        .set_replica_override("api", 0, "idle", 11)
        .await
        .unwrap();
    store
        .set_replica_override("web", u32::MAX, "extreme", 12)
        .await
        .unwrap();
    store
        .set_replica_override("web", 5, "p95 above target", 13)
        .await
        .unwrap();

    let overrides = store.replica_overrides().await.unwrap();
    assert_eq!(overrides.len(), 2);
    assert_eq!(overrides["web"], 5);
    assert_eq!(overrides["api"], 0);
    let rows = store.replica_override_rows().await.unwrap();
    assert_eq!(rows[1].app, "web");
    assert_eq!(rows[1].reason, "p95 above target");
    assert_eq!(rows[1].updated_at, 13);

    store
        .set_replica_override("big", u32::MAX, "extreme", 14)
        .await
        .unwrap();
    assert_eq!(store.replica_overrides().await.unwrap()["big"], u32::MAX);

    assert!(store.clear_replica_override("web").await.unwrap());
    assert!(!store.clear_replica_override("web").await.unwrap());
    let overrides = store.replica_overrides().await.unwrap();
    assert_eq!(overrides.get("web"), None);
    assert_eq!(overrides["api"], 0);
}

#[tokio::test]
async fn events_round_trip() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    let new = event(Some("web"), EventType::RolloutFailed, 42);
    let id = store.record_event(&new).await.unwrap();
    let host_wide = NewEvent {
        app: None,
        event_type: EventType::Other("source-unreachable".to_string()),
        message: "git fetch failed".to_string(),
        revision: None,
        source_file: None,
        details: serde_json::Value::Null,
        at: 43,
    };
    let id2 = store.record_event(&host_wide).await.unwrap();
    assert!(id2 > id);

    let rows = store.events(&EventQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 2);
    let (second, first) = (&rows[0], &rows[1]);
    assert_eq!(first.id, id);
    assert_eq!(first.app, new.app);
    assert_eq!(first.event_type, EventType::RolloutFailed);
    assert_eq!(first.message, new.message);
    assert_eq!(first.revision, new.revision);
    assert_eq!(first.source_file, new.source_file);
    assert_eq!(first.details, new.details);
    assert_eq!(first.at, 42);
    assert_eq!(second.id, id2);
    assert_eq!(second.app, None);
    assert_eq!(
        second.event_type,
        EventType::Other("source-unreachable".to_string())
    );
    assert_eq!(second.details, serde_json::Value::Null);

    let value = serde_json::to_value(first).unwrap();
    assert_eq!(value["event_type"], "rollout-failed");
    assert_eq!(value["details"]["nested"]["list"][2], 3);

    // Every listed type round-trips through its text.
    for t in [
        EventType::Created,
        EventType::Removed,
        EventType::RolloutStarted,
        EventType::RolloutSucceeded,
        EventType::RolloutFailed,
        EventType::ProxyReloaded,
        EventType::ProxyRejected,
        EventType::SpecInvalid,
        EventType::RuntimeError,
        EventType::Healed,
        EventType::Quarantined,
    ] {
        assert_eq!(EventType::parse(t.as_str()), t);
        let id = store
            .record_event(&event(Some("t"), t.clone(), 50))
            .await
            .unwrap();
        let rows = store
            .events(&EventQuery {
                before_id: Some(id + 1),
                limit: 1,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(rows[0].event_type, t);
    }
}

#[tokio::test]
async fn events_page_by_before_id_and_filter() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    let mut ids = Vec::new();
    for i in 0..25_i64 {
        let app = if i % 2 == 0 { Some("web") } else { Some("api") };
        let app = if i % 5 == 4 { None } else { app };
        let kind = if i % 3 == 0 {
            EventType::Healed
        } else {
            EventType::Created
        };
        ids.push(
            store
                .record_event(&event(app, kind, 1000 + i))
                .await
                .unwrap(),
        );
    }

    // Keyset paging walks every event exactly once, newest first.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .events(&EventQuery {
                before_id,
                limit: 7,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        assert!(page.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        before_id = Some(page.last().unwrap().id);
        seen.extend(page.into_iter().map(|e| e.id));
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    // Filter by app.
    let web = store
        .events(&EventQuery {
            app: Some("web".to_string()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(!web.is_empty());
    assert!(web.iter().all(|e| e.app.as_deref() == Some("web")));
    let expected_web = (0..25).filter(|i| i % 2 == 0 && i % 5 != 4).count();
    assert_eq!(web.len(), expected_web);

    // Filter by type.
    let healed = store
        .events(&EventQuery {
            event_type: Some(EventType::Healed),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(healed.len(), (0..25).filter(|i| i % 3 == 0).count());
    assert!(healed.iter().all(|e| e.event_type == EventType::Healed));

    // Filter by since (inclusive).
    let recent = store
        .events(&EventQuery {
            since: Some(1020),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        recent.iter().map(|e| e.at).collect::<Vec<_>>(),
        [1024, 1023, 1022, 1021, 1020]
    );

    // Filters combine, and paging works with them.
    let combined = store
        .events(&EventQuery {
            app: Some("web".to_string()),
            event_type: Some(EventType::Created),
            since: Some(1004),
            before_id: Some(ids[20]),
            limit: 2,
        })
        .await
        .unwrap();
    let expected: Vec<i64> = (4..20_usize)
        .rev()
        .filter(|i| i % 2 == 0 && i % 5 != 4 && i % 3 != 0)
        .take(2)
        .map(|i| ids[i])
        .collect();
    assert_eq!(combined.iter().map(|e| e.id).collect::<Vec<_>>(), expected);

    // Limit 0 returns nothing.
    let none = store
        .events(&EventQuery {
            limit: 0,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn events_limit_is_capped() {
    let store = fresh().await;
    for i in 0..(MAX_EVENT_PAGE as i64 + 5) {
        store
            .record_event(&event(None, EventType::Healed, i))
            .await
            .unwrap();
    }
    let page = store
        .events(&EventQuery {
            limit: u32::MAX,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), MAX_EVENT_PAGE as usize);
}

#[tokio::test]
async fn scaling_decisions_round_trip() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    let mut ids = Vec::new();
    for i in 0..5_u32 {
        let decision = NewScalingDecision {
            app: "web".to_string(),
            at: 1000 + i64::from(i),
            from_replicas: i,
            to_replicas: i + 1,
            reason: format!("rps {i}"),
            metrics: json!({ "rps": 10.5 * f64::from(i), "p95_ms": 120 }),
            factors: json!(["rps", { "weight": i }]),
        };
        ids.push(store.record_scaling_decision(&decision).await.unwrap());
    }
    store
        .record_scaling_decision(&NewScalingDecision {
            app: "api".to_string(),
            at: 2000,
            from_replicas: 2,
            to_replicas: 1,
            reason: "idle".to_string(),
            metrics: json!({}),
            factors: json!({}),
        })
        .await
        .unwrap();

    let rows = store.scaling_decisions("web", 3).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[4], ids[3], ids[2]]
    );
    let newest = &rows[0];
    assert_eq!(newest.app, "web");
    assert_eq!(newest.at, 1004);
    assert_eq!(newest.from_replicas, 4);
    assert_eq!(newest.to_replicas, 5);
    assert_eq!(newest.reason, "rps 4");
    assert_eq!(newest.metrics, json!({ "rps": 42.0, "p95_ms": 120 }));
    assert_eq!(newest.factors, json!(["rps", { "weight": 4 }]));
    assert_eq!(store.scaling_decisions("web", 100).await.unwrap().len(), 5);
    assert_eq!(store.scaling_decisions("api", 100).await.unwrap().len(), 1);
    assert!(store
        .scaling_decisions("nope", 100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn revisions_round_trip_and_update_in_place() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    let rec = |revision: &str, source, status, at| NewRevision {
        revision: revision.to_string(),
        source,
        status,
        message: format!("{revision} at {at}"),
        at,
    };
    store
        .record_revision(&rec(
            "abc",
            RevisionSource::Git,
            RevisionStatus::Partial,
            10,
        ))
        .await
        .unwrap();
    store
        .record_revision(&rec("def", RevisionSource::Dir, RevisionStatus::Failed, 20))
        .await
        .unwrap();
    // The same revision applied again later, now fully.
    store
        .record_revision(&rec(
            "abc",
            RevisionSource::Git,
            RevisionStatus::Applied,
            30,
        ))
        .await
        .unwrap();

    let rows = store.revisions(10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].revision, "abc");
    assert_eq!(rows[0].source, RevisionSource::Git);
    assert_eq!(rows[0].status, RevisionStatus::Applied);
    assert_eq!(rows[0].message, "abc at 30");
    assert_eq!(rows[0].first_recorded_at, 10);
    assert_eq!(rows[0].at, 30);
    assert_eq!(rows[1].revision, "def");
    assert_eq!(rows[1].source, RevisionSource::Dir);
    assert_eq!(rows[1].status, RevisionStatus::Failed);
    assert_eq!(rows[1].first_recorded_at, 20);
    assert_eq!(store.revisions(1).await.unwrap().len(), 1);

    let value = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(value["source"], "git");
    assert_eq!(value["status"], "applied");
}

fn decision(app: &str, at: i64) -> NewScalingDecision {
    NewScalingDecision {
        app: app.to_string(),
        at,
        from_replicas: 1,
        to_replicas: 2,
        reason: format!("at {at}"),
        metrics: json!({}),
        factors: json!({}),
    }
}

fn revision(name: &str, at: i64) -> NewRevision {
    NewRevision {
        revision: name.to_string(),
        source: RevisionSource::Git,
        status: RevisionStatus::Applied,
        message: String::new(),
        at,
    }
}

async fn all_events(store: &Store) -> Vec<i64> {
    let query = EventQuery {
        limit: MAX_EVENT_PAGE,
        ..EventQuery::default()
    };
    let mut ats: Vec<i64> = store
        .events(&query)
        .await
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    ats.sort();
    ats
}

#[tokio::test]
async fn prune_history_drops_old_and_surplus_rows_but_keeps_what_is_read_as_state() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    // Events at t = 0..20; "web" decided at t = 0..25 (25 rows), "api" once at 3 (old, but
    // its only decision); revisions r0..r9 at 10..19.
    for at in 0..20 {
        store
            .record_event(&event(Some("web"), EventType::Created, at))
            .await
            .unwrap();
    }
    for at in 0..25 {
        store
            .record_scaling_decision(&decision("web", at))
            .await
            .unwrap();
    }
    store
        .record_scaling_decision(&decision("api", 3))
        .await
        .unwrap();
    for i in 0..10 {
        store
            .record_revision(&revision(&format!("r{i}"), 10 + i))
            .await
            .unwrap();
    }

    // Nothing older than 5 ms at t = 20 survives, except each app's 20 newest decisions.
    let limits = HistoryLimits {
        max_age_ms: 5,
        max_rows: 0,
    };
    let pruned = store.prune_history(limits, 20).await.unwrap();
    assert_eq!(
        pruned,
        PrunedHistory {
            events: 15,
            scaling_decisions: 5,
            revisions: 5,
        }
    );
    assert_eq!(all_events(&store).await, (15..20).collect::<Vec<_>>());
    let web_decisions = |store: Store| async move {
        let mut ats: Vec<i64> = store
            .scaling_decisions("web", 100)
            .await
            .unwrap()
            .iter()
            .map(|d| d.at)
            .collect();
        ats.sort();
        ats
    };
    assert_eq!(
        web_decisions(store.clone()).await,
        (5..25).collect::<Vec<_>>(),
        "web keeps its {DECISIONS_KEPT_PER_APP} newest"
    );
    assert_eq!(store.scaling_decisions("api", 10).await.unwrap().len(), 1);
    let revisions: Vec<String> = store
        .revisions(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(revisions, ["r9", "r8", "r7", "r6", "r5"]);

    // Row limit: the 3 newest of each table stay.
    let limits = HistoryLimits {
        max_age_ms: 0,
        max_rows: 3,
    };
    let pruned = store.prune_history(limits, 20).await.unwrap();
    assert_eq!(pruned.events, 2);
    assert_eq!(pruned.revisions, 2);
    assert_eq!(pruned.scaling_decisions, 0, "all are their app's newest 20");
    assert_eq!(all_events(&store).await, [17, 18, 19]);
    assert_eq!(store.revisions(100).await.unwrap().len(), 3);

    // Everything far in the future is old, yet the newest revision stays; running again
    // deletes nothing more; both limits off deletes nothing.
    let far = HistoryLimits {
        max_age_ms: 1,
        max_rows: 0,
    };
    store.prune_history(far, 1_000_000).await.unwrap();
    assert!(all_events(&store).await.is_empty());
    let kept: Vec<String> = store
        .revisions(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(kept, ["r9"]);
    assert_eq!(web_decisions(store.clone()).await.len(), 20);
    assert_eq!(store.scaling_decisions("api", 10).await.unwrap().len(), 1);
    assert_eq!(
        store.prune_history(far, 1_000_000).await.unwrap().total(),
        0
    );
    let off = HistoryLimits {
        max_age_ms: 0,
        max_rows: 0,
    };
    assert_eq!(store.prune_history(off, i64::MAX).await.unwrap().total(), 0);
}

#[tokio::test]
async fn prune_history_deletes_more_than_one_batch() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    for at in 0..12_000 {
        store
            .record_event(&event(None, EventType::Other("tick".into()), at))
            .await
            .unwrap();
    }
    let limits = HistoryLimits {
        max_age_ms: 0,
        max_rows: 100,
    };
    let pruned = store.prune_history(limits, 0).await.unwrap();
    assert_eq!(pruned.events, 11_900);
    let newest = all_events(&store).await;
    assert_eq!(newest.len(), 100);
    assert_eq!(newest.first(), Some(&11_900));
}

/// Many tasks writing through clones of one store, plus a second store on the same file (as
/// a second process would), must all succeed without `database is locked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_do_not_hit_database_is_locked() {
    let (_db, path) = db_path();
    let store = open(&path).await;
    let second = open(&path).await;
    const TASKS: usize = 12;
    const WRITES: i64 = 40;

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = if t % 3 == 0 {
            second.clone()
        } else {
            store.clone()
        };
        handles.push(tokio::spawn(async move {
            let app = format!("app-{t}");
            for i in 0..WRITES {
                store
                    .record_app_pass(
                        &desired(&app, &format!("h{i}"), "r", i),
                        AppStatus::Synced,
                        None,
                    )
                    .await?;
                store
                    .set_app_status(&app, AppStatus::Progressing, Some("working"), i)
                    .await?;
                store
                    .record_event(&event(Some(&app), EventType::RolloutStarted, i))
                    .await?;
                store
                    .set_replica_override(&app, i as u32, "load", i)
                    .await?;
                if i % 10 == 0 {
                    store.mark_rollout_failed(&app, "h", "r", "x", i).await?;
                    store.delete_app(&app).await?;
                    store
                        .record_app_pass(
                            &desired(&app, &format!("h{i}"), "r", i),
                            AppStatus::Synced,
                            None,
                        )
                        .await?;
                }
                // Interleave reads with the writes.
                store.apps().await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle
            .await
            .expect("task panicked")
            .unwrap_or_else(|e| panic!("concurrent write failed: {e}"));
    }

    let events = store
        .events(&EventQuery {
            limit: MAX_EVENT_PAGE,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), TASKS * WRITES as usize);
    assert_eq!(store.apps().await.unwrap().len(), TASKS);
    let overrides = store.replica_overrides().await.unwrap();
    assert_eq!(overrides.len(), TASKS);
    assert!(overrides.values().all(|&r| r == (WRITES - 1) as u32));
    store.close().await;
    second.close().await;
}
