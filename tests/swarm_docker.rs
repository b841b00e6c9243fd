//! The swarm backend against the real engine (issue 14). The engine here is not in swarm
//! mode: `support::swarm::SwarmScene` makes it a single-node swarm (`docker swarm init
//! --advertise-addr 127.0.0.1`) for one test at a time (also across processes: the bench's
//! swarm section takes the same lock file) and leaves it again when it initialised it. Every
//! test owns a unique `berth.instance`: its services, overlay network and volumes carry it
//! and are removed on drop, even on failure. Traffic goes to 127.0.0.1 only (berth's nginx,
//! which reaches the local tasks on their host-mode ports).

mod support;

use berth::plan::Step;
use berth::reconcile::{self, Controller};
use berth::runtime::swarm::SwarmRuntime;
use berth::runtime::ContainerObserver;
use berth::store::{EventQuery, EventType};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::swarm::{SwarmLock, SwarmScene};
use support::*;

fn web_yaml(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: web
spec:
  type: http
  image: {image}
  ports:
    - containerPort: 8080
  health:
    httpGet: {{ path: /healthz, port: 8080 }}
    intervalSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 2
  scaling:
    minReplicas: 2
    maxReplicas: 4
    policy:
      mode: auto
  termination:
    gracePeriodSeconds: 2
"#
    )
}

const JOBS_YAML: &str = r#"apiVersion: v1
kind: App
metadata:
  name: jobs
spec:
  type: worker
  image: berth-demo:v1
  replicas: 1
"#;

/// Passes until `done` holds for the last pass (or panics after `secs`).
async fn converge<F: Fn(&reconcile::LastPass) -> bool>(
    ctl: &Arc<Controller<SwarmRuntime>>,
    secs: u64,
    what: &str,
    done: F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Err(e) = reconcile::run_pass(ctl, "test").await {
            eprintln!("pass failed: {e}");
        }
        let last = ctl.last_pass().expect("a pass ran");
        if done(&last) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not reached in {secs} s; last plan:\n{}\nservices: {:#?}",
                berth::plan::display::render_text(&last.plan),
                last.observed.services
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn service<'a>(
    last: &'a reconcile::LastPass,
    app: &str,
) -> Option<&'a berth::runtime::swarm::ObservedService> {
    last.observed.services.iter().find(|s| s.app == app)
}

/// The app's service runs `replicas` tasks of the desired spec, nginx has them all, and
/// Swarm is not moving anything.
fn settled(last: &reconcile::LastPass, app: &str, replicas: u32) -> bool {
    let Some(s) = service(last, app) else {
        return false;
    };
    let summary = &last.plan.apps[app];
    summary.ready_replicas == replicas
        && s.running() == replicas
        && !s.updating()
        && !last.plan.has_changes()
}

async fn events(ctl: &Controller<SwarmRuntime>, kind: EventType) -> Vec<String> {
    ctl.store()
        .events(&EventQuery {
            event_type: Some(kind),
            ..EventQuery::default()
        })
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// A loopback load loop through berth's nginx: counts answers that are not 200.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            move || {
                let addr = format!("127.0.0.1:{port}");
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&addr, path, None) {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => failed
                            .lock()
                            .unwrap()
                            .push(format!("{status}: {}", body.trim())),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.lock().unwrap().clone(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn body(port: u16, path: &str) -> String {
    http_get(&format!("127.0.0.1:{port}"), path, None)
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default()
}

/// Create, serve through nginx, a no-op pass that only lists, a start-first rollout under
/// load with no failed request, a scale by the autoscaler's override, a rollback by Swarm
/// recorded as a failed rollout, and a removal within the deletion budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_serve_roll_scale_roll_back_and_go() {
    let s = SwarmScene::new("swarm");
    s.write("web.yaml", &web_yaml(IMAGE_V1));
    s.write("jobs.yaml", JOBS_YAML);
    let ctl = s.controller().await;
    let port = s.scene.port;
    let (status, detail) = doctor_swarm_check();
    assert_eq!(status, "ok", "{detail}");
    assert!(
        detail.starts_with("this engine is a swarm manager (node "),
        "{detail}"
    );

    // Created and served through nginx on 127.0.0.1.
    converge(&ctl, 90, "two web tasks and one jobs task", |last| {
        settled(last, "web", 2) && settled(last, "jobs", 1)
    })
    .await;
    assert_eq!(body(port, "/web/"), "v1");
    let created = events(&ctl, EventType::Created).await;
    assert!(
        created.iter().any(|m| m.contains("created service berth-")),
        "{created:?}"
    );
    // The services carry the ownership labels; env values never reach labels.
    let web = service(&ctl.last_pass().unwrap(), "web").unwrap().clone();
    let labels = docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        &web.id,
    ]);
    assert!(labels.contains(&format!("\"berth.instance\":\"{}\"", s.scene.instance)));
    assert!(labels.contains("\"berth.managed\":\"true\""));
    assert!(labels.contains("\"berth.spec-hash\""));

    // A no-op pass: one services list, one tasks list, nothing mutating.
    let before = ctl.runtime().calls();
    let report = reconcile::run_pass(&ctl, "test").await.expect("pass");
    let delta = ctl.runtime().calls().since(&before);
    assert_eq!(report.steps_applied, 0);
    assert_eq!(delta.list, 2, "{delta:?}");
    assert_eq!(delta.mutating(), 0, "{delta:?}");
    let (plan, _) = reconcile::plan_only(&ctl).await.expect("plan");
    assert!(
        !plan.has_changes(),
        "{}",
        berth::plan::display::render_text(&plan)
    );

    // Rolled to v2 start-first under load: berth follows the tasks, no request fails.
    let served = Served::start(&ctl, None);
    let load = Load::start(port, "/web/");
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write("web.yaml", &web_yaml(IMAGE_V2));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = ctl.last_pass().unwrap();
        if settled(&last, "web", 2)
            && service(&last, "web").is_some_and(|w| w.image == IMAGE_V2)
            && body(port, "/web/") == "v2"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout to v2 did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failed) = load.finish();
    served.stop().await;
    println!(
        "rolling update under load: {ok} requests answered 200, {} failed",
        failed.len()
    );
    assert!(ok > 50, "the load loop ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "failed requests during the rollout: {failed:?}"
    );
    let started = events(&ctl, EventType::RolloutStarted).await;
    assert!(started.iter().any(|m| m.contains("image")), "{started:?}");

    // Scaled by the autoscaler's override (the plan names it; Swarm adds a task).
    ctl.store()
        .set_replica_override("web", 3, "test", reconcile::now_ms())
        .await
        .expect("override");
    let (plan, _) = reconcile::plan_only(&ctl).await.expect("plan");
    assert!(
        plan.steps.iter().any(|st| matches!(st, Step::UpdateService { changes, .. } if changes == &["replicas 2 -> 3".to_string()])),
        "{}",
        berth::plan::display::render_text(&plan)
    );
    converge(&ctl, 60, "three web tasks", |last| settled(last, "web", 3)).await;
    assert_eq!(ctl.last_pass().unwrap().plan.apps["web"].members.len(), 3);

    // A new image that never gets healthy: Swarm rolls back, berth records the failure
    // and keeps the service on v2 (still served).
    s.write("web.yaml", &web_yaml(IMAGE_BROKEN));
    converge(&ctl, 120, "the failed rollout recorded", |last| {
        last.plan.steps.iter().any(|st| {
            matches!(st, Step::NoOp { app, reason } if app == "web" && reason.contains("Swarm rolled the service back"))
        })
    })
    .await;
    let failed = events(&ctl, EventType::RolloutFailed).await;
    assert!(
        failed
            .iter()
            .any(|m| m.contains("swarm rolled the service")),
        "{failed:?}"
    );
    assert_eq!(ctl.store().failed_rollouts().await.unwrap().len(), 1);
    converge(&ctl, 60, "v2 back on three tasks", |last| {
        service(last, "web")
            .is_some_and(|w| w.image == IMAGE_V2 && w.running() == 3 && !w.updating())
    })
    .await;
    assert_eq!(body(port, "/web/"), "v2");

    // jobs leaves the source: 1 of 2 apps is within the default budget (50%).
    std::fs::remove_file(s.scene.specs.path().join("jobs.yaml")).unwrap();
    converge(&ctl, 60, "jobs removed", |last| {
        service(last, "jobs").is_none()
    })
    .await;
    let removed = events(&ctl, EventType::Removed).await;
    assert!(
        removed.iter().any(|m| m.contains("removed service")),
        "{removed:?}"
    );
    let calls = ctl.runtime().calls();
    assert!(calls.update >= 3, "{calls:?}");
    let left = docker_ok(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=berth.instance={}", s.scene.instance),
    ]);
    assert_eq!(
        left.split_whitespace().count(),
        1,
        "only web is left: {left}"
    );
}

/// GET `path` through the status API's router (no socket) as JSON.
async fn api_json(ctl: &Arc<Controller<SwarmRuntime>>, path: &str) -> serde_json::Value {
    let router = berth::api::router(ctl.clone(), &berth::api::ApiConfig { token: None });
    let answer = tower::ServiceExt::oneshot(
        router,
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200, "{path}");
    let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&body).expect("json")
}

fn placed_yaml(name: &str, constraint: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  type: worker
  image: berth-demo:v1
  replicas: 1
  maxReplicasPerNode: 1
  placement:
    constraints: ["{constraint}"]
    preferences:
      - spread: node.labels.zone
"#
    )
}

/// On one node: a constraint the node meets runs its task; one no node meets leaves the
/// task pending, and the plan, the status API and `berth status` say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_constraints_run_or_leave_tasks_pending() {
    let s = SwarmScene::new("swarm-place");
    s.write(
        "pinned.yaml",
        &placed_yaml("pinned", "node.role == manager"),
    );
    s.write(
        "nowhere.yaml",
        &placed_yaml("nowhere", "node.labels.zone==nowhere"),
    );
    let ctl = s.controller().await;
    converge(&ctl, 90, "pinned runs, nowhere pending", |last| {
        settled(last, "pinned", 1)
            && service(last, "nowhere").is_some_and(|n| {
                n.tasks
                    .iter()
                    .any(|t| t.state == "pending" && t.error.is_some())
            })
    })
    .await;
    let constraints = docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Placement}}",
        &format!("berth-{}-pinned", s.scene.instance),
    ]);
    assert!(constraints.contains("node.role==manager"), "{constraints}");
    assert!(constraints.contains("\"MaxReplicas\":1"), "{constraints}");
    assert!(constraints.contains("node.labels.zone"), "{constraints}");

    let last = ctl.last_pass().unwrap();
    let reason = last
        .plan
        .steps_for("nowhere")
        .find_map(|st| match st {
            Step::NoOp { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a no-op saying why");
    assert!(
        reason.starts_with("0 of 1 tasks running (pending: no suitable node"),
        "{reason}"
    );

    let detail = api_json(&ctl, "/api/v1/apps/nowhere").await;
    let task = &detail["service"]["tasks"][0];
    assert_eq!(task["state"], "pending", "{detail:#}");
    assert!(
        task["error"].as_str().unwrap().contains("no suitable node"),
        "{detail:#}"
    );
    let pinned = api_json(&ctl, "/api/v1/apps/pinned").await;
    assert_eq!(pinned["service"]["tasks"][0]["state"], "running");
    assert_eq!(pinned["service"]["tasks"][0]["local"], true);
    let events = api_json(&ctl, "/api/v1/apps/nowhere/events?limit=5").await;
    let text = berth::api::table::app(&detail, &events, reconcile::now_ms());
    assert!(text.contains("SWARM SERVICE berth-"), "{text}");
    assert!(text.contains("no suitable node"), "{text}");
}

/// An engine that is not a swarm manager is refused with what to do.
#[test]
fn a_plain_engine_is_refused_with_what_to_do() {
    let _lock = SwarmLock::acquire();
    require_docker();
    let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(
        state.trim(),
        "inactive",
        "this test needs the engine outside any swarm (no other swarm test holds the lock)"
    );
    assert_eq!(
        doctor_swarm_check(),
        (
            "fail".to_string(),
            "docker engine error during swarm check: the engine is not a swarm manager: run docker swarm init or use --backend docker".to_string()
        )
    );
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let err = runtime
        .block_on(SwarmRuntime::connect(Some(unique_name("plain"))))
        .expect_err("not a manager");
    assert!(
        err.to_string().contains(
            "the engine is not a swarm manager: run docker swarm init or use --backend docker"
        ),
        "{err}"
    );
}

/// The demo's examples/apps (http apps with path and host routes, a worker, and the shop
/// stack with dependsOn, a named volume and a tmpfs) run unchanged on the swarm backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_apps_run_on_swarm() {
    let s = SwarmScene::new("swarm-ex");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps");
    // The shop's volume name comes from the app name; a demo on this host may own one of
    // that name already: then this copy uses another name, so the test never shares it.
    let demo_volume = docker(&["volume", "inspect", "berth-shop-db-data"])
        .status
        .success();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if demo_volume {
            text = text.replace("{ name: data,", "{ name: data-test,");
        }
        s.write(path.file_name().unwrap().to_str().unwrap(), &text);
    }
    let ctl = s.controller().await;
    let apps = ["api", "shop", "shop-api", "shop-db", "web", "worker"];
    converge(&ctl, 180, "every example app running", |last| {
        apps.iter().all(|app| {
            let want = last.plan.apps.get(*app).map_or(0, |a| a.desired_replicas);
            want > 0 && settled(last, app, want)
        })
    })
    .await;
    let port = s.scene.port;
    assert_eq!(body(port, "/web/"), "v1");
    let (status, api) = http_get(&format!("127.0.0.1:{port}"), "/", Some("api.localhost")).unwrap();
    assert_eq!((status, api.trim()), (200, "v2"));
    let boots = body(port, "/shop-db/data/boots");
    assert_eq!(boots.lines().count(), 1, "{boots}");
    // dependsOn: the shop-db service was created before shop-api's, shop-api's before shop's.
    let created = events(&ctl, EventType::Created).await;
    let position = |app: &str| {
        created
            .iter()
            .rposition(|m| m.contains(&format!("-{app} (image")))
            .unwrap_or_else(|| panic!("no create event for {app}: {created:?}"))
    };
    // Events come newest first.
    assert!(position("shop-db") > position("shop-api"), "{created:?}");
    assert!(position("shop-api") > position("shop"), "{created:?}");
}

/// `berth doctor --backend swarm -o json`: the status and detail of its `swarm` check.
fn doctor_swarm_check() -> (String, String) {
    let state = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "--config",
            "none",
            "doctor",
            "--backend",
            "swarm",
            "--dir",
            examples,
            "--state-dir",
            state.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--api-listen",
            &format!("127.0.0.1:{}", free_port()),
            "-o",
            "json",
        ])
        .env("RUST_LOG", "warn")
        .env("PATH", path_with_sbin())
        .env_remove("BERTH_LISTEN")
        .env_remove("BERTH_CONFIG")
        .output()
        .expect("run berth doctor");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor json: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let check = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "swarm")
        .unwrap_or_else(|| panic!("no swarm check: {json:#}"))
        .clone();
    (
        check["status"].as_str().unwrap().to_string(),
        check["detail"].as_str().unwrap().to_string(),
    )
}
