//! The status API through its router (no socket): every route, the 405s, the bearer token,
//! redaction, paging, readiness, and that serving every route makes no mutating call.

mod api_support;

use api_support::{
    assert_no_secrets, call, container, empty_controller, fixture, get, Fixture, EVENTS, PASS_AT,
};
use berth::api::{self, ApiConfig, ReadStore, StatusView};
use berth::plan::{display, Plan};
use berth::reconcile::LastPass;
use berth::runtime::ContainerObserver;
use serde_json::Value;
use std::sync::Arc;

fn router(fixture: &Fixture) -> axum::Router {
    api::router(fixture.ctl.clone(), &ApiConfig::default())
}

/// Every route with a concrete path, for the blanket checks.
const PATHS: [&str; 11] = [
    "/api/v1/apps",
    "/api/v1/apps/api",
    "/api/v1/apps/api/events",
    "/api/v1/apps/api/scaling",
    "/api/v1/apps/web/logs",
    "/api/v1/events",
    "/api/v1/plan?source=last",
    "/api/v1/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

fn app<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {list}"))
}

#[tokio::test]
async fn apps_lists_status_replicas_revision_and_source() {
    let f = fixture().await;
    let answer = get(&router(&f), "/api/v1/apps").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    let list = answer.json();
    let names: Vec<&str> = list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "broken", "gone", "web"]);
    assert_eq!(list["revision"], "rev2");
    assert_eq!(list["last_pass_at"], PASS_AT);

    let web = app(&list, "web");
    assert_eq!(web["status"], "synced");
    assert_eq!(web["desired_replicas"], 2);
    assert_eq!(web["ready_replicas"], 2);
    assert_eq!(web["replica_source"], "spec");
    assert_eq!(web["revision"], "rev2");
    assert_eq!(web["source_file"], "web.yaml");
    assert_eq!(web["last_reconciled_at"], PASS_AT);
    assert_eq!(web["containers"], 2);
    assert_eq!(web["in_source"], true);
    assert_eq!(web["spec_hash"], f.last.desired.apps["web"].hash);

    let api = app(&list, "api");
    assert_eq!(api["status"], "failed-rollout");
    assert_eq!(api["desired_replicas"], 3, "override 5 clamped to max 3");
    assert_eq!(
        api["ready_replicas"], 0,
        "its one container runs an old spec"
    );
    assert_eq!(api["replica_source"], "bounds");
    assert_eq!(api["source_file"], "apps/api.yaml");
    assert_eq!(
        api["last_error"],
        "rollout failed: probe said SECRET_TOKEN=<redacted> is wrong"
    );

    let broken = app(&list, "broken");
    assert_eq!(broken["status"], "quarantined");
    assert_eq!(broken["in_source"], false);
    assert!(broken["desired_replicas"].is_null());

    let gone = app(&list, "gone");
    assert_eq!(gone["status"], "progressing");
    assert_eq!(gone["in_source"], false);
    assert_eq!(gone["revision"], "rev0");
    assert_eq!(gone["last_reconciled_at"], PASS_AT - 3_600_000);

    // File-level issues are listed too: notes.yaml defines no app at all.
    let issues = list["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 2, "{list}");
    assert_eq!(issues[0]["file"], "broken.yaml");
    assert_eq!(issues[0]["field"], "spec.image");
    assert_eq!(issues[0]["app"], "broken");
    assert_eq!(issues[1]["file"], "notes.yaml");
    assert_eq!(issues[1]["line"], 1);
    assert!(issues[1]["app"].is_null());
}

#[tokio::test]
async fn app_detail_has_containers_replicas_and_last_error() {
    let f = fixture().await;
    let r = router(&f);
    let web = get(&r, "/api/v1/apps/web").await;
    assert_eq!(web.status, 200, "{}", web.body);
    let web = web.json();
    assert_eq!(web["name"], "web");
    assert_eq!(web["replicas"]["effective"], 2);
    assert_eq!(web["replicas"]["source"], "spec");
    assert_eq!(web["replicas"]["spec"], 2);
    let containers = web["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    let c = &containers[0];
    assert_eq!(c["id"], f.last.observed.containers[0].id);
    assert_eq!(c["image"], "web:v1");
    assert_eq!(c["spec_hash"], f.last.desired.apps["web"].hash);
    assert_eq!(c["health"], "healthy");
    assert_eq!(c["state"], "running");
    assert_eq!(c["address"], "127.0.0.1:32001");
    assert_eq!(c["started_at"], 1_699_999_000_000i64);
    assert_eq!(c["current"], true);
    assert_eq!(web["last_good"]["revision"], "rev1");
    assert!(web["last_error"].is_null());

    let api = get(&r, "/api/v1/apps/api").await.json();
    assert_eq!(api["replicas"]["effective"], 3);
    assert_eq!(api["replicas"]["source"], "bounds");
    assert_eq!(api["replicas"]["detail"]["source"], "override");
    assert_eq!(api["replicas"]["detail"]["requested"], 5);
    assert_eq!(api["replicas"]["detail"]["clamped"], true);
    assert_eq!(api["replicas"]["min"], 1);
    assert_eq!(api["replicas"]["max"], 3);
    assert_eq!(api["replicas"]["mode"], "auto");
    assert_eq!(api["replicas"]["override"]["replicas"], 5);
    assert_eq!(api["containers"][0]["current"], false);
    assert_eq!(api["failed_rollout"]["reason"], "never healthy");
    assert!(api["last_error"]
        .as_str()
        .unwrap()
        .starts_with("rollout failed"));
    let steps: Vec<&str> = api["planned_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["write-proxy", "write-proxy", "replace", "create", "create"],
        "one old container replaced, two created up to 3"
    );

    let broken = get(&r, "/api/v1/apps/broken").await.json();
    assert_eq!(
        broken["held_reason"],
        "broken.yaml:4:3: spec.image: missing field"
    );

    let missing = get(&r, "/api/v1/apps/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["error"],
        "app \"nope\" not found: it is neither in the store nor in the last pass"
    );
}

#[tokio::test]
async fn secrets_are_redacted_in_every_answer() {
    let f = fixture().await;
    let r = router(&f);
    let api = get(&r, "/api/v1/apps/api").await;
    let env = &api.json()["spec"]["env"];
    let value_of = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {env}"))
            .clone()
    };
    assert_eq!(value_of("NODE_ENV")["value"], "production");
    assert_eq!(value_of("DB_PASSWORD")["value"], "<redacted>");
    assert_eq!(value_of("stripe_api_key")["value"], "<redacted>");
    assert_eq!(value_of("REDIS_URL")["valueFrom"], "sdk");
    assert!(value_of("REDIS_URL").get("value").is_none());
    assert_eq!(
        value_of("OPTS")["value"],
        "--verbose ACCESS_TOKEN=<redacted>"
    );

    let events = get(&r, "/api/v1/events?type=runtime-error").await.json();
    let event = &events["events"][0];
    assert_eq!(
        event["message"],
        "container exited: DB_PASSWORD=<redacted> rejected"
    );
    assert_eq!(event["details"]["env"]["API_TOKEN"], "<redacted>");
    assert_eq!(event["details"]["env"]["NODE_ENV"], "production");
    assert_eq!(event["details"]["vars"][0]["value"], "<redacted>");

    for path in PATHS.iter().chain(&[
        "/api/v1/apps/web",
        "/api/v1/apps/gone",
        "/api/v1/events?limit=1000",
        "/api/v1/apps/api/events?limit=1000",
    ]) {
        let answer = get(&r, path).await;
        assert!(
            answer.status.is_success(),
            "{path}: {} {}",
            answer.status,
            answer.body
        );
        assert_no_secrets(path, &answer.body);
    }
}

#[tokio::test]
async fn events_page_through_everything_without_overlap() {
    let f = fixture().await;
    let r = router(&f);
    let mut path = "/api/v1/events?limit=100".to_string();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = get(&r, &path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let page = page.json();
        pages += 1;
        ids.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(page["next_before"], *ids.last().unwrap());
                path = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), EVENTS);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );

    let web = get(&r, "/api/v1/events?app=web&type=rollout-started&limit=1000")
        .await
        .json();
    let web = web["events"].as_array().unwrap();
    assert_eq!(web.len(), 25);
    assert!(web
        .iter()
        .all(|e| e["app"] == "web" && e["event_type"] == "rollout-started"));

    let since = PASS_AT - 10_000;
    let recent = get(&r, &format!("/api/v1/events?since={since}&limit=1000"))
        .await
        .json();
    assert_eq!(recent["events"].as_array().unwrap().len(), 11);
    assert!(recent["next"].is_null());

    // The per-app route keeps its filters in `next`.
    let first = get(&r, "/api/v1/apps/api/events?type=created&limit=50")
        .await
        .json();
    let next = first["next"].as_str().unwrap().to_string();
    assert!(
        next.starts_with("/api/v1/apps/api/events?limit=50&before="),
        "{next}"
    );
    assert!(next.contains("type=created"), "{next}");
    let second = get(&r, &next).await.json();
    assert!(second["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["app"] == "api" && e["event_type"] == "created"));
    assert_eq!(
        first["events"].as_array().unwrap().len() + second["events"].as_array().unwrap().len(),
        100
    );

    for (bad, param) in [
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?limit=5000", "limit"),
        ("/api/v1/events?since=yesterday", "since"),
        ("/api/v1/events?before=x", "before"),
        ("/api/v1/events?ap=web", "ap"),
        ("/api/v1/apps/web/events?app=api", "app"),
    ] {
        let answer = get(&r, bad).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.starts_with(&format!("bad query parameter {param}")),
            "{bad}: {error}"
        );
    }
    assert_eq!(get(&r, "/api/v1/apps/nope/events").await.status, 404);
}

#[tokio::test]
async fn scaling_shows_decisions_with_their_metrics() {
    let f = fixture().await;
    let r = router(&f);
    let scaling = get(&r, "/api/v1/apps/api/scaling").await;
    assert_eq!(scaling.status, 200, "{}", scaling.body);
    let scaling = scaling.json();
    assert_eq!(scaling["app"], "api");
    assert_eq!(scaling["replicas"]["effective"], 3);
    assert_eq!(
        scaling["replicas"]["override"]["reason"],
        "rps 240 > 3 x 50 x 80%"
    );
    assert_eq!(scaling["cooldown_seconds"], 30);
    assert_eq!(scaling["http"]["target_rps_per_replica"], 50.0);
    let decisions = scaling["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions[0]["to_replicas"], 5, "newest first");
    assert_eq!(decisions[0]["metrics"]["rps"], 122.5);
    assert_eq!(decisions[0]["factors"]["rps"], "out");
    let one = get(&r, "/api/v1/apps/api/scaling?limit=1").await.json();
    assert_eq!(one["decisions"].as_array().unwrap().len(), 1);
    let web = get(&r, "/api/v1/apps/web/scaling").await.json();
    assert!(web["decisions"].as_array().unwrap().is_empty());
    assert!(web["replicas"]["min"].is_null());
    assert_eq!(get(&r, "/api/v1/apps/nope/scaling").await.status, 404);
}

/// A view whose fresh plan is fixed, to show `/api/v1/plan` answers whatever
/// `pending_plan` computes, for any `StatusView`.
struct FreshPlan<V> {
    inner: Arc<V>,
    plan: Plan,
}

impl<V: StatusView> StatusView for FreshPlan<V> {
    fn store(&self) -> ReadStore<'_> {
        self.inner.store()
    }
    fn with_last_pass<T>(&self, f: impl FnOnce(Option<&LastPass>) -> T) -> T {
        self.inner.with_last_pass(f)
    }
    fn probe(&self, id: &str) -> Option<berth::health::ProbeRecord> {
        self.inner.probe(id)
    }
    fn metrics(&self) -> berth::metrics::MetricsSnapshot {
        self.inner.metrics()
    }
    fn leader(&self) -> berth::leader::LeaderView {
        self.inner.leader()
    }
    async fn pending_plan(&self) -> Result<Plan, berth::reconcile::ReconcileError> {
        Ok(self.plan.clone())
    }
    async fn containers(
        &self,
    ) -> Result<Vec<berth::runtime::ObservedContainer>, berth::runtime::RuntimeError> {
        self.inner.containers().await
    }
    async fn logs(
        &self,
        id: &str,
        request: &berth::runtime::LogRequest,
    ) -> Result<berth::runtime::LogLines, berth::runtime::RuntimeError> {
        self.inner.logs(id, request).await
    }
}

#[tokio::test]
async fn plan_is_the_same_json_as_berth_plan() {
    let f = fixture().await;
    let expected: Value = serde_json::from_str(&display::render_json(&f.last.plan)).unwrap();
    assert!(!f.last.plan.steps.is_empty());

    let last = get(&router(&f), "/api/v1/plan?source=last").await;
    assert_eq!(last.status, 200, "{}", last.body);
    assert_eq!(last.json(), expected);

    let fresh = api::router(
        Arc::new(FreshPlan {
            inner: f.ctl.clone(),
            plan: f.last.plan.clone(),
        }),
        &ApiConfig::default(),
    );
    let answer = get(&fresh, "/api/v1/plan").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), expected);

    // The controller computes a fresh plan from its source; here the directory is missing.
    let failed = get(&router(&f), "/api/v1/plan").await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    let error = failed.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("cannot compute the pending plan (retry, or ask for ?source=last): "),
        "{error}"
    );
    assert!(error.contains("no-specs-here"), "{error}");

    assert_eq!(get(&router(&f), "/api/v1/plan?source=x").await.status, 400);
    let empty = empty_controller(Vec::new()).await;
    assert_eq!(
        get(&router(&empty), "/api/v1/plan?source=last")
            .await
            .status,
        503
    );
}

#[tokio::test]
async fn fresh_plan_reads_the_source_and_observes_without_mutating() {
    let f = empty_controller(Vec::new()).await;
    let berth::source::SourceConfig::Dir(specs) = &f.ctl.settings().source else {
        unreachable!("the fixture reads a directory")
    };
    std::fs::create_dir_all(specs).unwrap();
    std::fs::write(
        specs.join("web.yaml"),
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: web:v1\n  ports:\n    - containerPort: 8080\n  replicas: 2\n  env:\n    - name: DB_PASSWORD\n      value: hunter2\n",
    )
    .unwrap();
    let answer = get(&router(&f), "/api/v1/plan").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_no_secrets("/api/v1/plan", &answer.body);
    let (plan, issues) = berth::reconcile::plan_only(&f.ctl).await.unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    let expected: Value = serde_json::from_str(&display::render_json(&plan)).unwrap();
    assert_eq!(
        answer.json(),
        expected,
        "the same JSON as berth plan -o json"
    );
    let creates = expected["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "create" && s["app"] == "web")
        .count();
    assert_eq!(creates, 2);
    let calls = f.ctl.runtime().calls();
    assert_eq!(calls.list, 2, "one list call per plan: {calls:?}");
    assert_eq!(calls.mutating() + calls.inspect, 0, "{calls:?}");
    assert!(f.ctl.last_pass().is_none(), "planning is not a pass");
    assert!(
        f.ctl.store().apps().await.unwrap().is_empty(),
        "nothing recorded"
    );
}

/// Regression: a fresh plan used to prune and record into the prober's tracker that the
/// next pass reads, and to fetch a git source that had never synced.
#[tokio::test]
async fn fresh_plan_changes_nothing_the_loop_reads() {
    // A git source that never synced: 503, and nothing fetched into the mirror.
    let state = tempfile::tempdir().unwrap();
    let remote = state.path().join("remote.git");
    let mirror_root = state.path().join("git");
    let git = berth::source::GitConfig::new(remote.to_str().unwrap(), &mirror_root);
    let f = api_support::controller_with_source(
        state,
        berth::source::SourceConfig::Git(git),
        Vec::new(),
    )
    .await;
    let answer = get(&router(&f), "/api/v1/plan").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let error = answer.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("has not synced yet"), "{error}");
    assert!(!mirror_root.exists(), "the api fetched into the mirror");
    assert!(f.ctl.source().status().synced_at.is_none());

    // A container the tracker has never seen is probed into a copy: the loop's tracker
    // still does not know it.
    let web = container("web", 1, "h1");
    let f = empty_controller(vec![web.clone()]).await;
    let berth::source::SourceConfig::Dir(specs) = &f.ctl.settings().source else {
        unreachable!("the fixture reads a directory")
    };
    std::fs::create_dir_all(specs).unwrap();
    std::fs::write(
        specs.join("web.yaml"),
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: web:v1\n  ports:\n    - containerPort: 8080\n  health:\n    tcpSocket: { port: 8080 }\n",
    )
    .unwrap();
    let answer = get(&router(&f), "/api/v1/plan").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let plan: Value = answer.json();
    assert!(
        plan["apps"]["web"].is_object(),
        "the plan covers web: {plan}"
    );
    assert!(f.ctl.probe_record(&web.id).is_none(), "probe recorded");
    assert!(
        f.ctl.source().status().synced_at.is_none(),
        "source status written"
    );
}

#[tokio::test]
async fn healthz_and_readyz() {
    let empty = empty_controller(Vec::new()).await;
    let r = router(&empty);
    let health = get(&r, "/healthz").await;
    assert_eq!(
        (health.status.as_u16(), health.json()["status"].clone()),
        (200, "ok".into())
    );
    let not_ready = get(&r, "/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(
        not_ready.json()["error"],
        "not ready: the first reconcile pass has not finished yet"
    );
    empty.ctl.publish_last_pass(LastPass {
        at: PASS_AT,
        ..Default::default()
    });
    let ready = get(&r, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(ready.json()["last_pass_at"], PASS_AT);

    empty.ctl.store().close().await;
    let closed = get(&r, "/readyz").await;
    assert_eq!(closed.status, 503);
    assert!(closed.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("not ready: the store does not answer"));
    assert_eq!(
        get(&r, "/healthz").await.status,
        200,
        "liveness ignores the store"
    );
    let apps = get(&r, "/api/v1/apps").await;
    assert_eq!(apps.status, 503);
    assert!(apps.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("cannot read the store"));
    let metrics = get(&r, "/metrics").await;
    assert_eq!(metrics.status, 200, "metrics still answer");
    assert!(
        metrics.body.contains("\nberth_store_up 0\n"),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn metrics_cover_the_loop_apps_nginx_source_and_autoscaler() {
    let f = fixture().await;
    let m = &f.ctl.counters();
    m.pass_finished(std::time::Duration::from_millis(30), true);
    m.pass_finished(std::time::Duration::from_secs(2), false);
    m.steps_applied("create", 3);
    m.steps_failed("replace", 1);
    m.nginx_reloads(2);
    m.nginx_reload_failed();
    m.source_error();
    m.event("created");
    m.scaling_decision("api", 2, 5);
    let answer = get(&router(&f), "/metrics").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = answer.body;
    for line in [
        "berth_reconcile_passes_total 2",
        "berth_reconcile_errors_total 1",
        "berth_reconcile_pass_duration_seconds_bucket{le=\"0.05\"} 1",
        "berth_reconcile_pass_duration_seconds_bucket{le=\"+Inf\"} 2",
        "berth_reconcile_pass_duration_seconds_count 2",
        "berth_reconcile_steps_applied_total{kind=\"create\"} 3",
        "berth_reconcile_steps_applied_total{kind=\"remove\"} 0",
        "berth_reconcile_steps_failed_total{kind=\"replace\"} 1",
        "berth_apps{status=\"synced\"} 1",
        "berth_apps{status=\"failed-rollout\"} 1",
        "berth_apps{status=\"quarantined\"} 1",
        "berth_apps{status=\"progressing\"} 1",
        "berth_apps{status=\"degraded\"} 0",
        "berth_app_replicas_desired{app=\"web\"} 2",
        "berth_app_replicas_ready{app=\"web\"} 2",
        "berth_app_replicas_desired{app=\"api\"} 3",
        "berth_app_replicas_ready{app=\"api\"} 0",
        "berth_nginx_reloads_total 2",
        "berth_nginx_reload_failures_total 1",
        "berth_source_revision_info{revision=\"rev2\"} 1",
        "berth_source_errors_total 1",
        "berth_spec_issues 2",
        "berth_events_total{type=\"created\"} 1",
        "berth_autoscaler_decisions_total{app=\"api\",direction=\"out\"} 1",
        "berth_autoscaler_override_replicas{app=\"api\"} 5",
        "berth_reconcile_last_pass_timestamp_seconds 1700000000",
        "berth_store_up 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in\n{text}"
        );
    }
    for family in berth::api::metrics::FAMILIES {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
}

#[tokio::test]
async fn anything_but_get_and_head_is_405_everywhere() {
    let f = fixture().await;
    let open = router(&f);
    let locked = api::router(
        f.ctl.clone(),
        &ApiConfig {
            token: Some("t0ken".into()),
        },
    );
    for path in PATHS.iter().chain(&["/nope", "/api/v1/apps/web/restart"]) {
        for method in [
            "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
        ] {
            for r in [&open, &locked] {
                let answer = call(r, method, path, None).await;
                assert_eq!(answer.status, 405, "{method} {path}: {}", answer.body);
                assert_eq!(answer.headers["allow"], "GET, HEAD");
                assert_eq!(
                    answer.json()["error"],
                    format!(
                        "method {method} not allowed: this api is read-only (GET and HEAD only)"
                    )
                );
            }
        }
        let head = call(&open, "HEAD", path, None).await;
        let expected = if path.starts_with("/nope") || path.ends_with("/restart") {
            404
        } else {
            200
        };
        assert_eq!(head.status, expected, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has no body");
    }
    let unknown = get(&open, "/api/v2/apps").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json()["error"],
        "no route for /api/v2/apps; see /api/v1/openapi.json"
    );
}

#[tokio::test]
async fn a_configured_token_is_required_on_every_route() {
    let f = fixture().await;
    let r = api::router(
        f.ctl.clone(),
        &ApiConfig {
            token: Some("t0ken".into()),
        },
    );
    for path in PATHS {
        for token in [None, Some("wrong"), Some("t0ke"), Some("t0ken ")] {
            let answer = call(&r, "GET", path, token).await;
            if token == Some("t0ken ") {
                // Surrounding whitespace is not part of the token.
                assert_eq!(answer.status, 200, "{path}");
                continue;
            }
            assert_eq!(answer.status, 401, "{path} with {token:?}");
            assert_eq!(answer.headers["www-authenticate"], "Bearer realm=\"berth\"");
            assert!(answer.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("missing or wrong bearer token"));
        }
        let ok = call(&r, "GET", path, Some("t0ken")).await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
    }
    assert_eq!(call(&r, "GET", "/nope", None).await.status, 401);
    assert_eq!(call(&r, "GET", "/nope", Some("t0ken")).await.status, 404);
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes() {
    let f = fixture().await;
    let answer = get(&router(&f), "/api/v1/openapi.json").await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    let mut routes = api::ROUTES.to_vec();
    routes.sort();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    assert_eq!(documented_sorted, routes);
    for (path, item) in paths {
        let methods: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(methods, ["get"], "{path} documents only GET");
    }
    // Every $ref resolves (walked in the parsed document, whatever its spacing).
    fn refs<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    out.push(reference);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "only {} $refs found", found.len());
    for reference in found {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {reference}");
    }
    // The documented statuses are exactly the store's.
    let statuses: Vec<&str> = doc["components"]["schemas"]["Status"]["enum"]
        .as_array()
        .expect("a Status enum")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let known: Vec<&str> = berth::store::AppStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(statuses, known);
}

#[tokio::test]
async fn serving_every_route_mutates_nothing() {
    let f = fixture().await;
    let r = router(&f);
    let before = f.ctl.store().events(&Default::default()).await.unwrap();
    let apps_before = f.ctl.store().apps().await.unwrap();
    for path in PATHS.iter().chain(&["/api/v1/plan", "/api/v1/apps/web"]) {
        let _ = get(&r, path).await;
    }
    let calls = f.ctl.runtime().calls();
    assert_eq!(calls.mutating(), 0, "{calls:?}");
    assert_eq!(calls.inspect, 0);
    assert_eq!(
        f.ctl.store().events(&Default::default()).await.unwrap(),
        before
    );
    assert_eq!(f.ctl.store().apps().await.unwrap(), apps_before);
}

/// The invariant in source form: nothing under src/api/ names a mutating call.
#[test]
fn api_source_names_no_mutating_call() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let forbidden = [
        ".record_event",
        ".record_app_pass",
        ".record_scaling_decision",
        ".record_revision",
        ".record(",
        ".set(",
        ".upsert_",
        ".set_app_status",
        ".set_replica_override",
        ".mark_",
        ".delete_app",
        ".clear_",
        ".apply_files",
        ".reload(",
        ".ensure_running",
        ".ensure_network",
        ".prepare(",
        ".create(",
        ".start(",
        ".stop(",
        ".remove(",
        ".pull(",
        ".request_pull",
        "image_worker",
        "run_pass",
        "reconcile::apply",
        "run_loop",
        "daemon::",
        ".close(",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(
                    !text.contains(word),
                    "{} mentions {word:?}: the api must stay read-only",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "checked {checked} files");
}

#[tokio::test]
async fn logs_merge_replicas_with_a_prefix_and_redact_every_line() {
    let f = fixture().await;
    let r = router(&f);
    let answer = get(&r, "/api/v1/apps/web/logs").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
    assert_no_secrets("logs", &answer.body);
    let lines: Vec<&str> = answer.body.lines().collect();
    // Two replicas, three lines each, merged by the engine's timestamps.
    assert_eq!(lines.len(), 6, "{}", answer.body);
    assert!(lines[0].starts_with("berth-web-") && lines[0].ends_with(" | listening on :8080"));
    assert!(
        lines[2].ends_with(" | connecting with DB_PASSWORD=<redacted>"),
        "{}",
        answer.body
    );
    let first = lines[0].split(" | ").next().unwrap();
    let second = lines[1].split(" | ").next().unwrap();
    assert_ne!(
        first, second,
        "replicas interleave by time: {}",
        answer.body
    );
    // follow streams the same lines and ends when the replicas' streams end.
    let followed = get(&r, "/api/v1/apps/web/logs?follow=true&tail=3&since=10m").await;
    assert_eq!(followed.status, 200, "{}", followed.body);
    assert_eq!(followed.body.lines().count(), 6, "{}", followed.body);
    assert_no_secrets("followed logs", &followed.body);
    assert_eq!(api::logs::open_follows(), 0);
    // Errors are the API's JSON.
    for (path, status) in [
        ("/api/v1/apps/nope/logs", 404),
        ("/api/v1/apps/web/logs?tail=0", 400),
        ("/api/v1/apps/web/logs?follow=1", 400),
        ("/api/v1/apps/web/logs?since=5w", 400),
        ("/api/v1/apps/web/logs?lines=5", 400),
    ] {
        let answer = get(&r, path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{path}");
    }
}

#[tokio::test]
async fn dashboard_page_is_open_but_its_data_needs_the_token() {
    let f = fixture().await;
    let r = api::router(
        f.ctl.clone(),
        &ApiConfig {
            token: Some("t0ken".into()),
        },
    );
    // The page and its assets carry no data and need no token.
    for path in api::dashboard::OPEN_ROUTES {
        let answer = api_support::call(&r, "GET", path, None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        assert!(!answer.body.contains("berth-web-"), "{path} carries data");
        assert_eq!(call_status(&r, "POST", path).await, 405, "{path}");
    }
    let page = api_support::call(&r, "GET", "/", None).await;
    assert!(
        page.body.contains("<form id=\"login-form\""),
        "{}",
        page.body
    );
    // The fragments are API answers: 401 without the token.
    for path in ["/ui/overview", "/ui/apps/web"] {
        let answer = api_support::call(&r, "GET", path, None).await;
        assert_eq!(answer.status, 401, "{path}");
        assert!(!answer.body.contains("berth-web-"));
    }
    let overview = api_support::call(&r, "GET", "/ui/overview", Some("t0ken")).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert_eq!(overview.headers["content-type"], "text/html; charset=utf-8");
    for text in [
        "data-app=\"web\"",
        "data-app=\"api\"",
        "href=\"#/apps/web\"",
        "Spec issues",
        "<code>notes.yaml:1:1</code>",
        "(no valid app in this file)",
    ] {
        assert!(overview.body.contains(text), "{text}: {}", overview.body);
    }
    assert_no_secrets("overview", &overview.body);
    let page = api_support::call(&r, "GET", "/ui/apps/web", Some("t0ken")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for text in [
        "<h2>Containers</h2>",
        "berth-web-",
        "<svg",
        "<h2>Events</h2>",
        "listening on :8080",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert_no_secrets("app page", &page.body);
    let missing = api_support::call(&r, "GET", "/ui/apps/nope", Some("t0ken")).await;
    assert_eq!(missing.status, 404);
}

async fn call_status(r: &axum::Router, method: &str, path: &str) -> u16 {
    api_support::call(r, method, path, None)
        .await
        .status
        .as_u16()
}

/// Browsers polling within one pass and one second share a render; a newly published pass
/// (the store's rows change only inside a pass) is rendered at once.
#[tokio::test]
async fn the_overview_is_rendered_again_for_each_new_pass() {
    let f = fixture().await;
    let r = api::router(
        f.ctl.clone(),
        &ApiConfig {
            token: Some("t0ken".into()),
        },
    );
    let first = api_support::call(&r, "GET", "/ui/overview", Some("t0ken")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("data-app=\"broken\""), "{}", first.body);
    // The next pass no longer holds `broken` nor reports its issue.
    let mut next = (*f.ctl.last_pass().unwrap()).clone();
    next.at += 1_000;
    next.issues.clear();
    f.ctl.publish_last_pass(next);
    let second = api_support::call(&r, "GET", "/ui/overview", Some("t0ken")).await;
    assert_eq!(second.status, 200);
    assert!(first.body.contains("notes.yaml:1:1"), "{}", first.body);
    assert!(!second.body.contains("notes.yaml:1:1"), "{}", second.body);
}
