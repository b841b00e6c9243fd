//! Notifications to real local HTTP receivers (axum on 127.0.0.1) from a real SQLite
//! store's tap: the signature verifies with the git webhook's own check, a 500 is retried
//! until accepted, nothing chosen is lost (a quarantine, a failed rollout, a scaling
//! decision), unchosen kinds are not sent; an endpoint that keeps failing becomes a
//! `notify-failed` event and a counted failure, while recording goes on unblocked.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use berth::notify::{self, NotifyConfig};
use berth::store::{EventQuery, EventType, NewEvent, NewScalingDecision, Store};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "notify-secret-of-16+bytes";

#[derive(Default)]
struct Receiver {
    /// Bodies accepted (signature valid).
    accepted: Mutex<Vec<Value>>,
    /// Requests answered 500 on purpose.
    refused: Mutex<u32>,
    /// Requests to refuse before accepting (u32::MAX: always).
    refuse_first: u32,
    bad_signatures: Mutex<u32>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if berth::source::webhook::verify(SECRET.as_bytes(), &headers, &body).is_err() {
        *r.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    {
        let mut refused = r.refused.lock().unwrap();
        if *refused < r.refuse_first {
            *refused += 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    r.accepted
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

async fn receiver(refuse_first: u32) -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver {
        refuse_first,
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

fn event(app: &str, kind: EventType, message: &str) -> NewEvent {
    NewEvent {
        app: Some(app.to_string()),
        event_type: kind,
        message: message.to_string(),
        revision: Some("abc1234".into()),
        source_file: Some(format!("{app}.yaml")),
        details: Value::Null,
        at: berth::clock::now_ms(),
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_signed_retried_and_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
    let (flaky_url, flaky) = receiver(1).await;
    let (dead_url, dead) = receiver(u32::MAX).await;
    let mut config = NotifyConfig::new(
        &[flaky_url.clone(), dead_url.clone()],
        &[
            "rollout-failed".into(),
            "quarantined".into(),
            "scaling".into(),
        ],
        Some(SECRET.to_string()),
    )
    .unwrap();
    config.retries = 3;
    config.backoff = Duration::from_millis(50);
    let task = tokio::spawn(notify::start(&store, config).unwrap());
    let (_, _, failed_before) = notify::counts();

    store
        .record_event(&event(
            "web",
            EventType::Quarantined,
            "running last good spec: DB_PASSWORD=hunter2 rejected",
        ))
        .await
        .unwrap();
    store
        .record_event(&event("api", EventType::Created, "not chosen"))
        .await
        .unwrap();
    store
        .record_event(&event(
            "api",
            EventType::RolloutFailed,
            "health gate timed out",
        ))
        .await
        .unwrap();
    store
        .record_scaling_decision(&NewScalingDecision {
            app: "web".into(),
            at: berth::clock::now_ms(),
            from_replicas: 2,
            to_replicas: 4,
            reason: "rps above target".into(),
            metrics: serde_json::json!({ "rps": 120.0 }),
            factors: serde_json::json!({}),
        })
        .await
        .unwrap();

    wait_until("three notifications at the flaky receiver", || {
        flaky.accepted.lock().unwrap().len() == 3
    })
    .await;
    // The first attempt got a 500 and was retried.
    assert_eq!(*flaky.refused.lock().unwrap(), 1);
    assert_eq!(*flaky.bad_signatures.lock().unwrap(), 0);
    let accepted = flaky.accepted.lock().unwrap().clone();
    let mut kinds: Vec<&str> = accepted
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["quarantined", "rollout-failed", "scaling"]);
    let quarantined = accepted
        .iter()
        .find(|b| b["kind"] == "quarantined")
        .unwrap();
    assert_eq!(quarantined["app"], "web");
    assert!(
        !quarantined.to_string().contains("hunter2"),
        "{quarantined}"
    );
    let scaling = accepted.iter().find(|b| b["kind"] == "scaling").unwrap();
    assert_eq!(scaling["to_replicas"], 4);
    assert!(scaling["text"].as_str().unwrap().contains("2 -> 4"));

    // The dead endpoint: every attempt refused, then one notify-failed event per
    // notification, with the URL, never an error of the recording.
    let failed = |store: Store| async move {
        store
            .events(&EventQuery {
                event_type: Some(EventType::NotifyFailed),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = failed(store.clone()).await;
        if rows.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0].message.contains(&dead_url), "{}", rows[0].message);
    assert!(
        rows[0].message.contains("after 4 attempts"),
        "{}",
        rows[0].message
    );
    assert_eq!(*dead.refused.lock().unwrap(), 12);
    assert!(dead.accepted.lock().unwrap().is_empty());
    assert!(notify::counts().2 >= failed_before + 3);
    // The notify-failed events themselves are not sent (no loop).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(flaky.accepted.lock().unwrap().len(), 3);
    task.abort();
}
