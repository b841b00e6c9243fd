//! Shared fixture of the API tests (`mod api_support;`): a real `Controller` with an
//! in-memory store and a fake container runtime that counts calls and refuses every
//! mutation, filled with apps, containers, events, scaling decisions and a last pass built
//! by hand (no spec parsing); the store is in memory, or a SQLite file in the fixture's
//! temp dir (`fixture_on_disk`). Owns nothing outside the test process: no Docker, no
//! nginx, no files but a temp dir; servers bind 127.0.0.1 only.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use berth::plan::{self, Desired, DesiredApp, Health, Observed, Overrides};
use berth::proxy::Proxy;
use berth::reconcile::{Controller, LastPass, Settings};
use berth::runtime::{
    CallCounts, ContainerObserver, ContainerRequest, ContainerRuntime, ContainerState,
    ObservedContainer, RuntimeError,
};
use berth::spec::{
    AppSpec, AppType, EnvValue, EnvVar, HealthSpec, HttpScaling, Probe, Resources, Scaling,
    ScalingMode, SourceRef, SpecIssue, Termination,
};
use berth::store::{AppDesiredRecord, AppStatus, EventType, NewEvent, NewScalingDecision, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

/// Secret values planted in the fixture; no API answer may contain any of them.
pub const SECRETS: [&str; 5] = ["hunter2", "tok-123", "abc123", "pk-999", "sdk-value"];

/// Time of the fixture's last pass (unix ms).
pub const PASS_AT: i64 = 1_700_000_000_000;
/// Events planted by `fixture` (250 routine + 1 carrying secrets).
pub const EVENTS: usize = 251;

/// A runtime that reports fixed containers and refuses (and counts) everything else.
#[derive(Default)]
pub struct FakeRuntime {
    pub containers: Vec<ObservedContainer>,
    pub calls: Mutex<CallCounts>,
}

fn refused(operation: &str) -> RuntimeError {
    RuntimeError::Engine {
        operation: operation.to_string(),
        message: "the api tests refuse every mutation".to_string(),
    }
}

impl ContainerObserver for FakeRuntime {
    async fn observe(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.calls.lock().unwrap().list += 1;
        Ok(self.containers.clone())
    }
    async fn inspect(&self, _id: &str) -> Result<Option<ObservedContainer>, RuntimeError> {
        self.calls.lock().unwrap().inspect += 1;
        Ok(None)
    }
    async fn stats(
        &self,
        _ids: &[String],
    ) -> Result<Vec<berth::runtime::ContainerStats>, RuntimeError> {
        // Read-only, but the API never asks for stats: count it like a list call.
        self.calls.lock().unwrap().stats += 1;
        Ok(Vec::new())
    }
    fn calls(&self) -> CallCounts {
        *self.calls.lock().unwrap()
    }
    /// Three fixed lines per known container (one carries a secret), oldest first; a
    /// followed stream ends after them like a stopped container's.
    async fn logs(
        &self,
        id: &str,
        _request: &berth::runtime::LogRequest,
    ) -> Result<berth::runtime::LogLines, RuntimeError> {
        use futures_util::StreamExt;
        let Some(n) = self.containers.iter().position(|c| c.id == id) else {
            return Err(RuntimeError::Engine {
                operation: "logs".to_string(),
                message: format!("no such container {id}"),
            });
        };
        let line = |second: usize, text: &str| berth::runtime::LogLine {
            timestamp: format!("2026-01-01T00:00:{:02}.000000000Z", second * 2 + n),
            stderr: false,
            text: text.to_string(),
        };
        let lines = vec![
            Ok(line(0, "listening on :8080")),
            Ok(line(1, "connecting with DB_PASSWORD=hunter2")),
            Ok(line(2, &format!("replica {n} ready"))),
        ];
        Ok(futures_util::stream::iter(lines).boxed())
    }

    async fn volumes(
        &self,
        _app: Option<&str>,
    ) -> Result<Vec<berth::runtime::ObservedVolume>, RuntimeError> {
        self.calls.lock().unwrap().list += 1;
        Ok(Vec::new())
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn create(&self, _request: &ContainerRequest) -> Result<String, RuntimeError> {
        self.calls.lock().unwrap().create += 1;
        Err(refused("create"))
    }
    async fn start(&self, _id: &str) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().start += 1;
        Err(refused("start"))
    }
    async fn stop(&self, _id: &str, _timeout: u32) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().stop += 1;
        Err(refused("stop"))
    }
    async fn remove(
        &self,
        _id: &str,
        _volumes: berth::runtime::RemoveVolumes,
    ) -> Result<Vec<String>, RuntimeError> {
        self.calls.lock().unwrap().remove += 1;
        Err(refused("remove"))
    }
    async fn remove_anonymous_volume(&self, _name: &str) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().volume += 1;
        Err(refused("remove volume"))
    }
    async fn ensure_volume(&self, _name: &str, _app: &str) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().volume += 1;
        Err(refused("create volume"))
    }
    async fn remove_volume(&self, _name: &str) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().volume += 1;
        Err(refused("remove volume"))
    }
    async fn ensure_network(&self, _name: &str) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().network += 1;
        Err(refused("network"))
    }
}

pub fn spec(name: &str) -> AppSpec {
    AppSpec {
        name: name.to_string(),
        app_type: AppType::Http,
        image: format!("{name}:v1"),
        image_pull_policy: berth::spec::ImagePullPolicy::IfNotPresent,
        command: None,
        ports: vec![8080],
        health: Some(HealthSpec {
            probe: Probe::HttpGet {
                path: "/healthz".into(),
                port: 8080,
            },
            interval_seconds: 5,
            timeout_seconds: 2,
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay_seconds: 0,
        }),
        resources: Resources::default(),
        replicas: Some(2),
        scaling: None,
        env: vec![EnvVar {
            name: "NODE_ENV".into(),
            value: EnvValue::Literal("production".into()),
        }],
        termination: Termination {
            drain_seconds: 0,
            ..Default::default()
        },
        route: None,
        workload: Default::default(),
    }
}

/// `api`: autoscaled 1..3, with secret env values of every kind.
pub fn api_spec() -> AppSpec {
    let mut spec = spec("api");
    spec.replicas = None;
    spec.scaling = Some(Scaling {
        min_replicas: 1,
        max_replicas: 3,
        mode: ScalingMode::Auto,
        cooldown_seconds: 30,
        http: Some(HttpScaling {
            target_rps_per_replica: 50.0,
            max_p95_latency_ms: 200.0,
            scale_out_threshold_pct: 80.0,
            scale_in_threshold_pct: 30.0,
            window_seconds: 20,
        }),
    });
    spec.env.extend([
        EnvVar {
            name: "DB_PASSWORD".into(),
            value: EnvValue::Literal("hunter2".into()),
        },
        EnvVar {
            name: "stripe_api_key".into(),
            value: EnvValue::Literal("pk-999".into()),
        },
        EnvVar {
            name: "REDIS_URL".into(),
            value: EnvValue::FromHost,
        },
        EnvVar {
            name: "OPTS".into(),
            value: EnvValue::Literal("--verbose ACCESS_TOKEN=tok-123".into()),
        },
    ]);
    spec
}

pub fn container(app: &str, n: u16, hash: &str) -> ObservedContainer {
    ObservedContainer {
        id: format!("{app}{n:0>60}"),
        name: format!("berth-{app}-{}-{n:06x}", &hash[..6.min(hash.len())]),
        app: app.to_string(),
        image: format!("{app}:v1"),
        image_id: String::new(),
        spec_hash: hash.to_string(),
        revision: "rev1".into(),
        state: ContainerState::Running,
        host_port: Some(32000 + n),
        published: vec![(8080, 32000 + n)],
        created: 1_699_999_000,
    }
}

pub struct Fixture {
    pub ctl: Arc<Controller<FakeRuntime>>,
    pub last: LastPass,
    pub _state: tempfile::TempDir,
}

/// A controller without a last pass, on an in-memory store.
pub async fn empty_controller(containers: Vec<ObservedContainer>) -> Fixture {
    controller_on(containers, false).await
}

/// A controller without a last pass; its store is `<temp dir>/berth.db` when `on_disk`.
async fn controller_on(containers: Vec<ObservedContainer>, on_disk: bool) -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let source = berth::source::SourceConfig::Dir(state.path().join("no-specs-here"));
    controller_with(state, source, containers, on_disk).await
}

/// A controller without a last pass reading `source`, with `state` as its state dir.
pub async fn controller_with_source(
    state: tempfile::TempDir,
    source: berth::source::SourceConfig,
    containers: Vec<ObservedContainer>,
) -> Fixture {
    controller_with(state, source, containers, false).await
}

async fn controller_with(
    state: tempfile::TempDir,
    source: berth::source::SourceConfig,
    containers: Vec<ObservedContainer>,
    on_disk: bool,
) -> Fixture {
    let store = if on_disk {
        Store::open(&state.path().join("berth.db")).await.unwrap()
    } else {
        Store::open_in_memory().await.unwrap()
    };
    let proxy = Proxy::private(
        state.path().join("nginx"),
        "127.0.0.1:1".into(),
        "/nonexistent/nginx".into(),
    );
    let settings = Settings {
        source,
        interval: Duration::from_secs(5),
        network: "berth-api-test".into(),
        parallel_apps: 1,
        host_env: BTreeMap::from([("REDIS_URL".to_string(), "sdk-value".to_string())]),
        stop_timeout_seconds: 1,
        deletion_budget: Default::default(),
        history: Default::default(),
        images: Default::default(),
        spec_policy: Default::default(),
        tls: Default::default(),
    };
    let runtime = FakeRuntime {
        containers,
        ..Default::default()
    };
    Fixture {
        ctl: Controller::new(runtime, proxy, store, settings),
        last: LastPass::default(),
        _state: state,
    }
}

/// Desired `web` (2 replicas, both healthy) and `api` (autoscaled, one old container), a
/// held `broken`, a store-only `gone`; events, decisions, an override, a failed rollout.
pub async fn fixture() -> Fixture {
    fixture_in(false).await
}

/// `fixture` on a real SQLite file (`<temp dir>/berth.db`).
pub async fn fixture_on_disk() -> Fixture {
    fixture_in(true).await
}

async fn fixture_in(on_disk: bool) -> Fixture {
    let web = DesiredApp::new(
        spec("web"),
        SourceRef {
            file: "web.yaml".into(),
            line: 1,
        },
    );
    let api = DesiredApp::new(
        api_spec(),
        SourceRef {
            file: "apps/api.yaml".into(),
            line: 3,
        },
    );
    let containers = vec![
        container("web", 1, &web.hash),
        container("web", 2, &web.hash),
        container("api", 3, "0ldhash0ldhash"),
    ];
    let mut fixture = controller_on(containers.clone(), on_disk).await;
    let desired = Desired {
        revision: "rev2".into(),
        apps: BTreeMap::from([
            ("web".to_string(), web.clone()),
            ("api".to_string(), api.clone()),
        ]),
        held: BTreeMap::from([(
            "broken".to_string(),
            "broken.yaml:4:3: spec.image: missing field".to_string(),
        )]),
        prune_blocked: None,
        proxy_listen: "127.0.0.1:8080".into(),
        proxy_tls: Default::default(),
        upstreams: Default::default(),
        leaving_deps: Default::default(),
    };
    let observed = Observed {
        health: containers
            .iter()
            .map(|c| (c.id.clone(), Health::Healthy))
            .collect(),
        containers,
        proxy_files: BTreeMap::new(),
        heal: BTreeMap::new(),
        retry: BTreeMap::new(),
        images: BTreeMap::new(),
        services: Vec::new(),
    };
    let overrides = Overrides {
        replicas: BTreeMap::from([("api".to_string(), 5)]),
        failed_rollouts: BTreeMap::new(),
    };
    let plan = plan::plan(&desired, &observed, &overrides, PASS_AT);
    let last = LastPass {
        at: PASS_AT,
        trigger: "test".into(),
        desired: desired.into(),
        observed,
        plan,
        issues: vec![
            SpecIssue {
                file: "broken.yaml".into(),
                line: 4,
                column: 3,
                field: "spec.image".into(),
                message: "missing field".into(),
                app: Some("broken".into()),
            },
            SpecIssue {
                file: "notes.yaml".into(),
                line: 1,
                column: 1,
                field: String::new(),
                message: "expected an App document (kind: App): give the file another extension or fix it".into(),
                app: None,
            },
        ],
        duration_ms: 12,
        ..LastPass::default()
    };

    let store = &fixture.ctl.store();
    for (name, app, status, error) in [
        ("web", &web, AppStatus::Synced, None),
        (
            "api",
            &api,
            AppStatus::FailedRollout,
            Some("rollout failed: probe said SECRET_TOKEN=abc123 is wrong"),
        ),
    ] {
        // One pass wrote each row: desired spec, status and error, and last good spec.
        let at = if name == "web" {
            PASS_AT - 500
        } else {
            PASS_AT - 1000
        };
        store
            .record_app_pass(
                &AppDesiredRecord {
                    name: name.into(),
                    spec_json: serde_json::to_string(&app.spec).unwrap(),
                    spec_hash: app.hash.clone(),
                    source_file: app.source.file.display().to_string(),
                    revision: "rev1".into(),
                    at,
                },
                status,
                error,
            )
            .await
            .unwrap();
    }
    let gone = spec("gone");
    store
        .record_app_pass(
            &AppDesiredRecord {
                name: "gone".into(),
                spec_json: serde_json::to_string(&gone).unwrap(),
                spec_hash: "g0neg0ne".into(),
                source_file: "gone.yaml".into(),
                revision: "rev0".into(),
                at: PASS_AT - 3_600_000,
            },
            AppStatus::Progressing,
            None,
        )
        .await
        .unwrap();
    store
        .set_replica_override("api", 5, "rps 240 > 3 x 50 x 80%", PASS_AT - 2000)
        .await
        .unwrap();
    store
        .mark_rollout_failed("api", &api.hash, "rev2", "never healthy", PASS_AT - 900)
        .await
        .unwrap();
    for i in 0..3u32 {
        store
            .record_scaling_decision(&NewScalingDecision {
                app: "api".into(),
                at: PASS_AT - 10_000 + i64::from(i),
                from_replicas: 2 + i,
                to_replicas: 3 + i,
                reason: "rps above target".into(),
                metrics: serde_json::json!({ "rps": 120.5 + f64::from(i), "p95_ms": 80 }),
                factors: serde_json::json!({ "rps": "out" }),
            })
            .await
            .unwrap();
    }
    for i in 0..250i64 {
        let (app, event_type) = match (i % 2, i % 5) {
            (0, 0) => ("web", EventType::RolloutStarted),
            (0, _) => ("web", EventType::Created),
            (_, 0) => ("api", EventType::RolloutStarted),
            _ => ("api", EventType::Created),
        };
        store
            .record_event(&NewEvent {
                app: Some(app.into()),
                event_type,
                message: format!("event {i}"),
                revision: Some("rev2".into()),
                source_file: None,
                details: serde_json::json!({ "n": i }),
                at: PASS_AT - 250_000 + i * 1000,
            })
            .await
            .unwrap();
    }
    store
        .record_event(&NewEvent {
            app: Some("api".into()),
            event_type: EventType::RuntimeError,
            message: "container exited: DB_PASSWORD=hunter2 rejected".into(),
            revision: Some("rev2".into()),
            source_file: Some("apps/api.yaml".into()),
            details: serde_json::json!({
                "env": { "API_TOKEN": "tok-123", "NODE_ENV": "production" },
                "vars": [{ "name": "PRIVATE_KEY", "value": "pk-999" }]
            }),
            at: PASS_AT,
        })
        .await
        .unwrap();
    fixture.ctl.publish_last_pass(last.clone());
    fixture.last = last;
    fixture
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }
}

/// One request through the router, no socket.
pub async fn call(router: &Router, method: &str, path: &str, token: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn get(router: &Router, path: &str) -> Answer {
    call(router, "GET", path, None).await
}

/// Asserts none of the fixture's secrets appears in `text`.
pub fn assert_no_secrets(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
    }
}
