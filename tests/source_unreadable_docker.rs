//! Sources fail closed, end to end on the real engine and a real (private) nginx: a running
//! app whose spec file becomes a dangling symlink (half of a ConfigMap-style swap) keeps
//! running untouched, the store, the events and the status API name the path and why, and
//! fixing the link syncs the app again. Needs Docker; own instance label, network, state
//! dir and nginx port, cleaned up by `support::Scene` even on failure.

mod support;

use berth::api::{router, ApiConfig};
use berth::reconcile::{self, Controller};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerState, ObservedContainer};
use berth::source::SourceConfig;
use berth::store::{AppStatus, EventQuery, EventType};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{http_get, test_settings, Scene};
use tower::ServiceExt;

fn http_spec(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  type: http\n  image: {image}\n  ports:\n    - containerPort: 8080\n  health:\n    httpGet: {{ path: /healthz, port: 8080 }}\n    intervalSeconds: 1\n    timeoutSeconds: 1\n    failureThreshold: 3\n  replicas: 1\n  termination:\n    drainSeconds: 0\n"
    )
}

async fn running(ctl: &Controller<DockerRuntime>, app: &str) -> Vec<ObservedContainer> {
    ctl.runtime()
        .observe()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.app == app && c.state == ContainerState::Running)
        .collect()
}

async fn pass(ctl: &Arc<Controller<DockerRuntime>>) -> reconcile::PassReport {
    let report = reconcile::run_pass(ctl, "test").await.expect("pass");
    assert_eq!(report.steps_failed, 0, "{report:?}");
    report
}

/// Waits until GET `path` through the scene's nginx answers 200 with `body`.
async fn wait_body(scene: &Scene, path: &str, body: &str) {
    let (addr, path, body) = (
        format!("127.0.0.1:{}", scene.port),
        path.to_string(),
        body.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let got = http_get(&addr, &path, None).unwrap_or((0, String::new()));
            if got == (200, body.clone()) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "GET {path}: wanted 200 {body:?}, still {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
}

/// GET `path` on the status API (no socket: the router itself), as JSON.
async fn api_get(ctl: &Arc<Controller<DockerRuntime>>, path: &str) -> serde_json::Value {
    let request = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router(ctl.clone(), &ApiConfig { token: None })
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangling_spec_link_holds_its_app_until_the_link_is_fixed() {
    let scene = Scene::new("src-dangling");
    let specs = scene.specs.path();
    // The spec lives outside the watched directory; the directory holds a link to it.
    let versions = tempfile::tempdir().unwrap();
    let target = versions.path().join("web.yaml");
    std::fs::write(&target, http_spec("web", "berth-demo:v1")).unwrap();
    std::os::unix::fs::symlink(&target, specs.join("web.yaml")).unwrap();
    std::fs::write(specs.join("api.yaml"), http_spec("api", "berth-demo:v1")).unwrap();
    let settings = test_settings(&scene.instance, SourceConfig::Dir(specs.to_path_buf()));
    let ctl = scene.controller_with(settings).await;
    pass(&ctl).await;
    pass(&ctl).await; // converged: records the last good specs
    let before = running(&ctl, "web").await;
    assert_eq!(before.len(), 1);
    wait_body(&scene, "/web/", "v1\n").await;

    // Half of a swap: the link's target disappears. api changes in the same pass.
    std::fs::remove_file(&target).unwrap();
    std::fs::write(specs.join("api.yaml"), http_spec("api", "berth-demo:v2")).unwrap();
    let broken = pass(&ctl).await;
    pass(&ctl).await;
    wait_body(&scene, "/api/", "v2\n").await;
    let after = running(&ctl, "web").await;
    assert_eq!(after.len(), 1, "web keeps running");
    assert_eq!(after[0].id, before[0].id, "web's container is untouched");
    wait_body(&scene, "/web/", "v1\n").await;

    let row = ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Quarantined);
    let why = row.last_error.unwrap();
    assert!(
        why.starts_with("web.yaml could not be read or parsed"),
        "{why}"
    );
    assert!(why.contains("cannot be followed"), "{why}");
    let invalid = ctl
        .store()
        .events(&EventQuery {
            app: Some("web.yaml".into()),
            event_type: Some(EventType::SpecInvalid),
            since: None,
            before_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(invalid.len(), 1, "one event, not one per pass: {invalid:?}");
    let message = &invalid[0].message;
    assert!(
        message.starts_with(&format!(
            "web.yaml:1:1: is a symlink to `{}`",
            target.display()
        )),
        "{message}"
    );
    assert_eq!(
        invalid[0].revision.as_deref(),
        Some(broken.revision.as_str())
    );

    // The status API says the same.
    let detail = api_get(&ctl, "/api/v1/apps/web").await;
    assert_eq!(detail["status"], "quarantined", "{detail}");
    let shown = detail["last_error"].as_str().unwrap_or_default();
    assert!(shown.contains("cannot be followed"), "{detail}");
    let events = api_get(&ctl, "/api/v1/events?type=spec-invalid").await;
    let text = events.to_string();
    assert!(text.contains("web.yaml:1:1: is a symlink to"), "{text}");

    // The link is fixed (with a new version): web syncs again.
    std::fs::write(&target, http_spec("web", "berth-demo:v2")).unwrap();
    pass(&ctl).await;
    wait_body(&scene, "/web/", "v2\n").await;
    pass(&ctl).await;
    let row = ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Synced, "{:?}", row.last_error);
    assert_eq!(running(&ctl, "web").await[0].image, "berth-demo:v2");
}
