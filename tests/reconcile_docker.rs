//! The reconcile loop against the real Docker engine and a real (private) nginx:
//! converge, no-op, self-heal, foreign containers, scaling, zero-downtime rollout under
//! load, failed rollout, nginx -t rejection. Every test uses its own instance label,
//! network, state dir and nginx port, and cleans up in Drop guards.

mod support;

use berth::plan::{Health, Step};
use berth::proxy::ProxyError;
use berth::reconcile::{self, Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerState};
use berth::store::{AppStatus, EventQuery, EventType};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{http_get, unique_name, Scene};

/// A controller on its own [`Scene`] (which stops nginx and removes the containers).
struct Harness {
    ctl: Arc<Controller<DockerRuntime>>,
    scene: Scene,
}

impl Harness {
    async fn new(prefix: &str) -> Harness {
        let scene = Scene::new(prefix);
        let settings = Settings {
            host_env: BTreeMap::from([("SECRET_TOKEN".to_string(), "s3cr3t".to_string())]),
            ..scene.dir_settings()
        };
        let ctl = scene.controller_with(settings).await;
        Harness { ctl, scene }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.scene.specs.path().join(file), text).unwrap();
    }

    async fn pass(&self) -> reconcile::PassReport {
        reconcile::run_pass(&self.ctl, "test").await.expect("pass")
    }

    async fn running(&self, app: &str) -> Vec<berth::runtime::ObservedContainer> {
        self.ctl
            .runtime()
            .observe()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.app == app && c.state == ContainerState::Running)
            .collect()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("127.0.0.1:{}", self.scene.port), path, None)
            .unwrap_or((0, String::new()))
    }

    fn get_host(&self, host: &str, path: &str) -> (u16, String) {
        http_get(&format!("127.0.0.1:{}", self.scene.port), path, Some(host))
            .unwrap_or((0, String::new()))
    }
}

fn web_spec(image: &str, replicas: u32) -> String {
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
    failureThreshold: 3
  replicas: {replicas}
  env:
    - name: MODE
      value: test
    - name: SECRET_TOKEN
      valueFrom: sdk
  termination:
    drainSeconds: 1
"#
    )
}

const WORKER_SPEC: &str = r#"apiVersion: v1
kind: App
metadata:
  name: jobs
spec:
  type: worker
  image: berth-demo:v1
  command: ["/bin/busybox", "sh", "-c", "while true; do sleep 1; done"]
  replicas: 1
"#;

#[tokio::test]
async fn converges_from_empty_then_a_second_pass_is_a_no_op() {
    let h = Harness::new("converge").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 2));
    h.write("jobs.yaml", WORKER_SPEC);

    let first = h.pass().await;
    assert_eq!(first.steps_failed, 0, "{first:?}");
    assert_eq!(h.running("web").await.len(), 2);
    assert_eq!(h.running("jobs").await.len(), 1);
    let (status, body) = h.get("/web/");
    assert_eq!((status, body.as_str()), (200, "v1\n"));
    // Host env reached the container; labels carry the revision.
    let web = &h.running("web").await[0];
    assert_eq!(web.revision, first.revision);
    let env = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            &web.id,
        ])
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&env.stdout);
    assert!(env.lines().any(|l| l == "SECRET_TOKEN=s3cr3t"), "{env}");
    assert!(env.lines().any(|l| l == "MODE=test"), "{env}");

    let row = h
        .ctl
        .store()
        .app("web")
        .await
        .unwrap()
        .expect("web recorded");
    assert_eq!(
        row.status,
        AppStatus::Progressing,
        "steps applied, not yet observed"
    );
    assert_eq!(row.revision, first.revision);

    let before = h.ctl.runtime().calls();
    let second = h.pass().await;
    let made = h.ctl.runtime().calls().since(&before);
    assert_eq!(made.list, 1, "a no-op pass lists once: {made:?}");
    assert_eq!(made.mutating(), 0, "a no-op pass mutates nothing: {made:?}");
    assert_eq!(made.inspect, 0, "{made:?}");
    assert_eq!(second.reloads, 0);
    assert!(!second.changed);
    let row = h.ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Synced, "observed healthy: synced");
    assert_eq!(row.last_good_hash.as_deref(), Some(row.spec_hash.as_str()));
    let last = h.ctl.last_pass().unwrap();
    assert!(!last.plan.has_changes(), "{:?}", last.plan.steps);
}

#[tokio::test]
async fn hand_removed_and_stopped_containers_come_back_and_foreign_ones_are_untouched() {
    let h = Harness::new("heal").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 2));
    // A foreign container: same image, no berth label (and one pretending to be an app).
    let foreign = unique_name("foreign");
    let created = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &foreign,
            "--label",
            "berth.app=web",
            "berth-demo:v1",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let _foreign_guard = support::ForeignContainer(foreign.clone());

    h.pass().await;
    let containers = h.running("web").await;
    assert_eq!(containers.len(), 2);

    // Removed by hand.
    let gone = &containers[0];
    let rm = std::process::Command::new("docker")
        .args(["rm", "-f", &gone.id])
        .output()
        .unwrap();
    assert!(rm.status.success());
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    let after = h.running("web").await;
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|c| c.id != gone.id));

    // Stopped by hand.
    let stopped = &after[0];
    let stop = std::process::Command::new("docker")
        .args(["stop", "-t", "1", &stopped.id])
        .output()
        .unwrap();
    assert!(stop.status.success());
    h.pass().await;
    let healed = h.running("web").await;
    assert_eq!(healed.len(), 2);
    assert!(healed.iter().all(|c| c.id != stopped.id));
    assert_eq!(h.get("/web/").0, 200);

    // The foreign container is still there, running.
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &foreign])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), "true");
}

#[tokio::test]
async fn scales_one_to_three_to_one() {
    let h = Harness::new("scale").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 1));
    h.pass().await;
    assert_eq!(h.running("web").await.len(), 1);
    for (replicas, expected_servers) in [(3, 3), (1, 1)] {
        h.write("web.yaml", &web_spec("berth-demo:v1", replicas));
        // Scaling out and in happens under load: no request may fail.
        let stop = Arc::new(AtomicBool::new(false));
        let load = load_loop(h.scene.port, stop.clone());
        let report = h.pass().await;
        stop.store(true, Ordering::Relaxed);
        let (_, failed, bodies) = load.join().unwrap();
        assert_eq!(
            failed, 0,
            "failed requests while scaling to {replicas}: {bodies:?}"
        );
        assert_eq!(report.steps_failed, 0, "{report:?}");
        assert_eq!(h.running("web").await.len(), replicas as usize);
        let files = h.ctl.proxy().current_files().await.unwrap();
        let members = upstream_members(&files, "web");
        assert_eq!(members.len(), expected_servers, "{files:?}");
        assert_eq!(h.get("/web/").0, 200);
    }
}

/// The members of an app's upstream on disk: its `<app>.members` (dynamic upstreams) or the
/// `server` lines of its `<app>.conf` (reload mode).
fn upstream_members(files: &std::collections::BTreeMap<String, String>, app: &str) -> Vec<String> {
    let file = files
        .get(&format!("{app}.members"))
        .or_else(|| files.get(&format!("{app}.conf")))
        .cloned()
        .unwrap_or_default();
    berth::plan::render::members_in(&file)
}

/// Sends sequential requests through nginx until `stop`, counting failures.
fn load_loop(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64, Vec<String>)> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut bodies = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && ok + failed < 200_000 {
            match http_get(&format!("127.0.0.1:{port}"), "/web/", None) {
                Ok((200, body)) => {
                    ok += 1;
                    if bodies.last() != Some(&body) {
                        bodies.push(body);
                    }
                }
                Ok((status, body)) => {
                    failed += 1;
                    bodies.push(format!("HTTP {status}: {body}"));
                }
                Err(e) => {
                    failed += 1;
                    bodies.push(format!("error: {e}"));
                }
            }
        }
        (ok, failed, bodies)
    })
}

#[tokio::test]
async fn rolling_update_under_load_has_no_failed_requests_and_a_broken_version_rolls_back() {
    let h = Harness::new("rollout").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 2));
    h.pass().await;
    assert_eq!(h.get("/web/").1, "v1\n");

    let stop = Arc::new(AtomicBool::new(false));
    let load = load_loop(h.scene.port, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.write("web.yaml", &web_spec("berth-demo:v2", 2));
    let report = h.pass().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, bodies) = load.join().unwrap();
    assert_eq!(report.steps_failed, 0, "{report:?}");
    if h.ctl.proxy().upstreams() == berth::proxy::Upstreams::Dynamic {
        // Member changes are pushed to nginx's balancer: no reload at all.
        assert_eq!(report.reloads, 0, "{report:?}");
    } else {
        // One reload per replaced replica: the new one in and the old one out together.
        assert_eq!(report.reloads, 2, "{report:?}");
    }
    assert_eq!(failed, 0, "failed requests during the rollout: {bodies:?}");
    assert!(ok > 20, "the load loop ran: {ok} requests");
    assert_eq!(bodies.first().map(String::as_str), Some("v1\n"));
    assert_eq!(bodies.last().map(String::as_str), Some("v2\n"));
    let v2 = h.running("web").await;
    assert_eq!(v2.len(), 2);

    // v3 never passes its health check: the rollout fails, v2 keeps serving.
    h.write("web.yaml", &web_spec("berth-demo:broken", 2));
    let broken = h.pass().await;
    assert!(broken.steps_failed > 0, "{broken:?}");
    let still = h.running("web").await;
    let mut ids: Vec<_> = still.iter().map(|c| c.id.clone()).collect();
    let mut v2_ids: Vec<_> = v2.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    v2_ids.sort();
    assert_eq!(ids, v2_ids, "only the v2 containers run");
    assert_eq!(h.get("/web/").1, "v2\n");
    let failed = h.ctl.store().failed_rollouts().await.unwrap();
    assert!(failed.contains_key("web"), "{failed:?}");
    let row = h.ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::FailedRollout);
    let why = row.last_error.unwrap_or_default();
    assert!(
        why.contains("startup window") && why.contains("HTTP 404"),
        "{why}"
    );
    let events = h
        .ctl
        .store()
        .events(&EventQuery {
            app: Some("web".into()),
            event_type: Some(EventType::RolloutFailed),
            since: None,
            before_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0]
        .message
        .contains("previous containers keep serving"));

    // Not retried until the spec changes: the next pass creates nothing.
    let before = h.ctl.runtime().calls();
    let again = h.pass().await;
    assert_eq!(h.ctl.runtime().calls().since(&before).create, 0);
    assert_eq!(again.steps_failed, 0);
    let last = h.ctl.last_pass().unwrap();
    assert!(last
        .plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::NoOp { reason, .. } if reason.contains("failed earlier"))));
}

#[tokio::test]
async fn config_rejected_by_nginx_keeps_the_old_config_and_traffic() {
    let h = Harness::new("nginxt").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 1));
    h.pass().await;
    assert_eq!(h.get("/web/").0, 200);
    let before = h.ctl.proxy().current_files().await.unwrap();

    // Directly, through a second handle on the same private nginx (the controller's own
    // proxy is private to reconcile): a broken file is refused and the old one restored.
    let proxy = berth::proxy::Proxy::private(
        h.scene.state.path().join("nginx"),
        format!("127.0.0.1:{}", h.scene.port),
        support::nginx_binary(),
    );
    let result = proxy
        .apply_files(
            &[("web.conf".to_string(), "upstream broken {".to_string())],
            &[],
        )
        .await;
    assert!(
        matches!(result, Err(ProxyError::Rejected { .. })),
        "{result:?}"
    );
    assert_eq!(h.ctl.proxy().current_files().await.unwrap(), before);
    assert_eq!(h.get("/web/").0, 200);

    // Through specs: a second app claiming the same path (which nginx -t would reject as a
    // duplicate location) is caught before nginx: both apps are held, nothing is written.
    let clash = web_spec("berth-demo:v2", 1)
        .replace("name: web", "name: clash")
        .replace("  termination:", "  route:\n    path: /web\n  termination:");
    h.write("clash.yaml", &clash);
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    let last = h.ctl.last_pass().unwrap();
    assert!(
        last.desired.held.contains_key("clash"),
        "{:?}",
        last.desired.held
    );
    assert!(
        last.issues
            .iter()
            .any(|i| i.file.ends_with("clash.yaml") && i.message.contains("/web")),
        "{:?}",
        last.issues
    );
    let (status, body) = h.get("/web/");
    assert_eq!((status, body.as_str()), (200, "v1\n"));
    assert!(!h
        .ctl
        .proxy()
        .current_files()
        .await
        .unwrap()
        .contains_key("clash.loc"));
}

#[tokio::test]
async fn host_routes_and_health_state() {
    let h = Harness::new("hostroute").await;
    let api = web_spec("berth-demo:v2", 1)
        .replace("name: web", "name: api")
        .replace(
            "  termination:",
            "  route:\n    host: api.localhost\n    path: /\n  termination:",
        );
    h.write("api.yaml", &api);
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    assert_eq!(h.get_host("api.localhost", "/").1, "v2\n");
    assert_eq!(h.get("/").0, 404);
    let container = &h.running("api").await[0];
    assert_eq!(
        h.ctl
            .probe_record(&container.id)
            .and_then(|r| r.health)
            .unwrap_or(Health::Starting),
        Health::Healthy
    );
}

#[tokio::test]
async fn unhealthy_container_is_replaced_by_the_running_loop() {
    let h = Harness::new("unhealthy").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 1));
    h.pass().await;
    let original = h.running("web").await[0].clone();

    let served = support::Served::start(&h.ctl, None);
    // Break its health endpoint: probes get 404 from now on.
    let broke = std::process::Command::new("docker")
        .args(["exec", &original.id, "/bin/busybox", "rm", "/www/healthz"])
        .output()
        .unwrap();
    assert!(broke.status.success(), "{broke:?}");

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut replaced = false;
    while Instant::now() < deadline {
        let now = h.running("web").await;
        if now.len() == 1 && now[0].id != original.id {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        replaced,
        "the unhealthy container was not replaced within 40 s"
    );
    // The event is written right after the old container is removed: wait for it before
    // stopping the loop (stopping aborts a pass in flight).
    let query = EventQuery {
        app: Some("web".into()),
        event_type: Some(EventType::Healed),
        since: None,
        before_id: None,
        limit: 10,
    };
    let mut healed = Vec::new();
    for _ in 0..50 {
        healed = h.ctl.store().events(&query).await.unwrap();
        if !healed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served.stop().await;
    assert_eq!(h.get("/web/").0, 200);
    assert_eq!(healed.len(), 1, "{healed:?}");
    let heal = h.ctl.heal_state("web").unwrap();
    assert_eq!(heal.repairs.len(), 1);
}

/// An http app `ghost` (route /ghost) whose image is not on the host and may not be pulled
/// (`imagePullPolicy: Never`: a missing image is a setup error, retried with backoff).
fn ghost_spec() -> String {
    web_spec("berth-demo:does-not-exist", 1)
        .replace("name: web", "name: ghost")
        .replace(
            "  image: berth-demo:does-not-exist\n",
            "  image: berth-demo:does-not-exist\n  imagePullPolicy: Never\n",
        )
        .replace(
            "  termination:",
            "  route:\n    path: /ghost\n  termination:",
        )
}

#[tokio::test]
async fn a_missing_image_is_reported_once_and_other_apps_go_on() {
    let h = Harness::new("noimage").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 1));
    h.write("ghost.yaml", &ghost_spec());
    let first = h.pass().await;
    assert_eq!(first.steps_failed, 1, "{first:?}");
    assert_eq!(h.get("/web/"), (200, "v1\n".to_string()));
    assert!(h.running("ghost").await.is_empty());
    let query = EventQuery {
        app: Some("ghost".into()),
        event_type: Some(EventType::RuntimeError),
        since: None,
        before_id: None,
        limit: 10,
    };
    let events = h.ctl.store().events(&query).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].message.contains("berth-demo:does-not-exist")
            && events[0].message.contains("docker load"),
        "{}",
        events[0].message
    );
    let row = h.ctl.store().app("ghost").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Degraded);
    // Backs off instead of failing every pass: the next pass holds it (and says when it
    // retries), and asks the loop to come back when the backoff ends.
    let second = h.pass().await;
    assert_eq!(second.steps_failed, 0, "{second:?}");
    let requeue = second.requeue_at.expect("a requeue time for the backoff");
    let last = h.ctl.last_pass().unwrap();
    assert!(
        last.plan
            .steps_for("ghost")
            .any(|s| matches!(s, Step::NoOp { reason, .. } if reason.starts_with("retrying in"))),
        "{:?}",
        last.plan.steps
    );
    let row = h.ctl.store().app("ghost").await.unwrap().unwrap();
    assert_eq!(row.status, AppStatus::Degraded);
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("does-not-exist"),
        "{row:?}"
    );
    // Retried once the backoff is over (the image may have been loaded), reported once.
    let wait = requeue - berth::clock::now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 50)).await;
    let third = h.pass().await;
    assert_eq!(third.steps_failed, 1, "{third:?}");
    assert_eq!(h.ctl.store().events(&query).await.unwrap().len(), 1);
    // Not a failed rollout: loading the image is enough, no spec change needed.
    assert!(!h
        .ctl
        .store()
        .failed_rollouts()
        .await
        .unwrap()
        .contains_key("ghost"));
}

/// Every metric family on /metrics follows what real passes did (the autoscaler's counter
/// is checked the same way in tests/autoscale_docker.rs): one running app, one whose image
/// is missing, one file that does not parse.
#[tokio::test]
async fn metrics_follow_what_real_passes_did() {
    let h = Harness::new("metrics").await;
    h.write("web.yaml", &web_spec("berth-demo:v1", 1));
    h.write("ghost.yaml", &ghost_spec());
    h.write(
        "oops.yaml",
        &web_spec("berth-demo:v1", 1)
            .replace("name: web", "name: oops")
            .replace("  replicas: 1\n", "  replicas: 1\n  replica: 2\n"),
    );
    let mut reports = vec![h.pass().await, h.pass().await];
    // The second pass held ghost (retry backoff); a third confirms nothing changes.
    reports.push(h.pass().await);
    let applied: usize = reports.iter().map(|r| r.steps_applied).sum();
    let failed: usize = reports.iter().map(|r| r.steps_failed).sum();
    let reloads: usize = reports.iter().map(|r| r.reloads).sum();
    assert_eq!(failed, 1, "{reports:?}");

    let text = support::scrape_metrics(&h.ctl).await;
    let samples: BTreeMap<String, f64> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect();
    let get = |key: &str| -> f64 {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no {key} on /metrics:\n{text}"))
    };
    assert_eq!(get("berth_reconcile_passes_total"), 3.0);
    assert_eq!(get("berth_reconcile_errors_total"), 0.0);
    assert_eq!(get("berth_reconcile_pass_duration_seconds_count"), 3.0);
    assert!(get("berth_reconcile_last_pass_timestamp_seconds") > 1.7e9);
    assert_eq!(get("berth_store_up"), 1.0);
    let applied_kinds: f64 = ["create", "replace", "remove", "write-proxy", "remove-proxy"]
        .iter()
        .map(|k| {
            get(&format!(
                "berth_reconcile_steps_applied_total{{kind=\"{k}\"}}"
            ))
        })
        .sum();
    assert_eq!(applied_kinds, applied as f64, "applied steps by kind");
    assert_eq!(
        get("berth_reconcile_steps_applied_total{kind=\"create\"}"),
        1.0
    );
    assert_eq!(
        get("berth_reconcile_steps_failed_total{kind=\"create\"}"),
        1.0
    );
    assert_eq!(get("berth_nginx_reloads_total"), reloads as f64);
    assert!(reloads >= 1, "{reports:?}");
    assert_eq!(get("berth_nginx_reload_failures_total"), 0.0);
    assert_eq!(get("berth_source_errors_total"), 0.0);
    assert_eq!(
        get(&format!(
            "berth_source_revision_info{{revision=\"{}\"}}",
            reports[2].revision
        )),
        1.0
    );
    assert_eq!(get("berth_spec_issues"), 1.0);
    assert_eq!(get("berth_events_total{type=\"runtime-error\"}"), 1.0);
    assert_eq!(get("berth_events_total{type=\"spec-invalid\"}"), 1.0);
    assert!(get("berth_events_total{type=\"created\"}") >= 1.0);
    assert_eq!(get("berth_apps{status=\"synced\"}"), 1.0);
    assert_eq!(get("berth_apps{status=\"degraded\"}"), 1.0);
    assert_eq!(get("berth_app_replicas_desired{app=\"web\"}"), 1.0);
    assert_eq!(get("berth_app_replicas_ready{app=\"web\"}"), 1.0);
    assert!(get("berth_app_last_reconcile_timestamp_seconds{app=\"web\"}") > 1.7e9);
}
