//! Self-heal across a restart, against the real Docker engine, a real private nginx and a
//! real SQLite file: an app whose every container breaks a moment after it became healthy
//! is repaired with backoff until self-heal quarantines it (`crash-looping`, with the
//! reason), and a NEW controller on the same store (a restarted berth) keeps it quarantined
//! instead of starting over. Own instance label, network, state dir and nginx port; cleaned
//! up by the `Scene`'s Drop guards, also on failure.

mod support;

use berth::plan::{heal, Step};
use berth::reconcile::{self, Controller};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerState};
use berth::store::{AppStatus, EventQuery, EventType};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Scene;

/// Serves /healthz for 2 s, then deletes it (every probe answers 404 from then on) and
/// keeps running: each replacement passes its startup probe, joins, and breaks again.
const BREAKING_SPEC: &str = r#"apiVersion: v1
kind: App
metadata:
  name: web
spec:
  type: http
  image: berth-demo:v1
  command: ["/bin/busybox", "sh", "-c", "/bin/busybox httpd -p 8080 -h /www && /bin/busybox sleep 2 && /bin/busybox rm /www/healthz && exec /bin/busybox sleep 3600"]
  ports:
    - containerPort: 8080
  health:
    httpGet: { path: /healthz, port: 8080 }
    intervalSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 1
  replicas: 1
  termination:
    drainSeconds: 0
"#;

async fn controller(scene: &Scene) -> Arc<Controller<DockerRuntime>> {
    let settings = scene.dir_settings();
    scene.controller_with(settings).await
}

async fn events(ctl: &Controller<DockerRuntime>, kind: EventType) -> usize {
    let query = EventQuery {
        app: Some("web".into()),
        event_type: Some(kind),
        since: None,
        before_id: None,
        limit: 100,
    };
    ctl.store().events(&query).await.unwrap().len()
}

async fn web_ids(ctl: &Controller<DockerRuntime>) -> Vec<String> {
    let mut ids: Vec<String> = ctl
        .runtime()
        .observe()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.app == "web")
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_crash_loop_is_reported_and_stays_quarantined_across_a_restart() {
    let scene = Scene::new("heal-loop");
    std::fs::write(scene.specs.path().join("web.yaml"), BREAKING_SPEC).unwrap();

    // First berth: runs the loop (timer, prober, confirm passes) until self-heal gives up.
    // Repairs wait 2, 4, 8 and 16 s after each other: about 35 s to the fifth.
    let first = controller(&scene).await;
    let served = support::Served::start(&first, None);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(150);
    let mut row = None;
    while Instant::now() < deadline {
        let app = first.store().app("web").await.unwrap();
        if app.as_ref().map(|a| a.status) == Some(AppStatus::CrashLooping) {
            row = app;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    served.stop().await;
    let row = row.unwrap_or_else(|| {
        panic!(
            "web was not reported crash-looping within 150 s; heal state: {:?}",
            first.heal_state("web")
        )
    });
    eprintln!(
        "crash-looping after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let reason = row.last_error.clone().expect("crash-looping says why");
    assert!(
        reason.starts_with(&format!(
            "{} repairs within 10 minutes, last: container berth-web-",
            heal::QUARANTINE_AFTER
        )),
        "{reason}"
    );
    // The probe's own error follows: 404 once healthz is gone, or a reset or refused
    // connection when the last probe raced a replacement (its port closing or not yet open).
    let probe_error = reason
        .split_once("failed its health check: ")
        .map(|(_, error)| error)
        .unwrap_or_else(|| panic!("the reason names the failed health check: {reason}"));
    assert!(
        ["HTTP 404", "Connection reset", "Connection refused"]
            .iter()
            .any(|known| probe_error.contains(known)),
        "{reason}"
    );
    let state = first.heal_state("web").unwrap();
    assert_eq!(state.repairs.len(), heal::QUARANTINE_AFTER);
    assert!(state.quarantined_since.is_some());
    // Backoff held: each wait at least doubles from 2 s.
    for (i, pair) in state.repairs.windows(2).enumerate() {
        let wait = pair[1] - pair[0];
        assert!(
            wait >= heal::BACKOFF_BASE_MS << i,
            "repair {} came {wait} ms after the previous one",
            i + 2
        );
    }
    assert_eq!(
        events(&first, EventType::Healed).await,
        heal::QUARANTINE_AFTER
    );
    assert_eq!(events(&first, EventType::CrashLooping).await, 1);
    let stored = first.store().heal_states().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].repairs, state.repairs, "written in the same pass");
    assert_eq!(stored[0].quarantined_since, state.quarantined_since);
    let ids_before = web_ids(&first).await;
    assert_eq!(ids_before.len(), 1, "the last replacement is left as it is");
    first.store().close().await;
    drop(first);

    // A restarted berth: a new controller on the same store file, with nothing in memory.
    // It probes the broken container (404), and self-heal stays off for this spec.
    let second = controller(&scene).await;
    for pass in 0..3 {
        let report = reconcile::run_pass(&second, "test").await.expect("pass");
        assert_eq!(
            (report.steps_applied, report.steps_failed),
            (0, 0),
            "pass {pass} repaired again after the restart"
        );
        let last = second.last_pass().unwrap();
        let held: Vec<&Step> = last.plan.steps_for("web").collect();
        assert!(
            matches!(held.as_slice(), [Step::NoOp { reason, .. }] if reason.starts_with("quarantined")),
            "{held:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        web_ids(&second).await,
        ids_before,
        "no container was replaced"
    );
    let observed = second.runtime().observe().await.unwrap();
    assert!(observed.iter().all(|c| c.state == ContainerState::Running));
    let row = second.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::CrashLooping);
    assert_eq!(row.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(
        second.heal_state("web"),
        Some(state.clone()),
        "loaded from the store"
    );
    assert_eq!(
        events(&second, EventType::Healed).await,
        heal::QUARANTINE_AFTER
    );
    second.store().close().await;
}
