//! The autoscaler loop against an in-memory store, a fake runtime that refuses every
//! mutating call, and an access log file written by the test.

use super::*;
use crate::plan::{Health, Observed, Overrides};
use crate::reconcile::desired_from;
use crate::runtime::{ContainerStats, ObservedContainer, Observer};
use crate::store::Store;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct FakeRuntime {
    stats_calls: AtomicU64,
    stats_ids: Mutex<Vec<String>>,
}

/// Implements only the observer half: a mutating call from the autoscaler would not compile.
impl ContainerObserver for FakeRuntime {
    async fn observe(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        panic!("the autoscaler reads the last pass, it does not observe");
    }
    async fn inspect(&self, _: &str) -> Result<Option<ObservedContainer>, RuntimeError> {
        panic!("the autoscaler does not inspect");
    }
    async fn volumes(
        &self,
        _: Option<&str>,
    ) -> Result<Vec<crate::runtime::ObservedVolume>, RuntimeError> {
        panic!("the autoscaler does not list volumes");
    }
    fn calls(&self) -> crate::runtime::CallCounts {
        crate::runtime::CallCounts {
            stats: self.stats_calls.load(Ordering::Relaxed),
            ..Default::default()
        }
    }
    async fn stats(&self, ids: &[String]) -> Result<Vec<ContainerStats>, RuntimeError> {
        let n = self.stats_calls.fetch_add(1, Ordering::Relaxed) + 1;
        *self.stats_ids.lock().unwrap() = ids.to_vec();
        // Each call: +0.1 s of container CPU per 1 s of wall time on 2 CPUs.
        Ok(ids
            .iter()
            .map(|id| ContainerStats {
                id: id.clone(),
                cpu_total_ns: n * 100_000_000,
                system_cpu_ns: Some(n * 2_000_000_000),
                online_cpus: 2,
                memory_bytes: 32 << 20,
                memory_limit_bytes: 128 << 20,
            })
            .collect())
    }
}

fn spec_yaml(mode: &str, min: u32, max: u32, replicas: Option<u32>) -> String {
    let replicas = replicas.map_or(String::new(), |r| format!("  replicas: {r}\n"));
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: web
spec:
  type: http
  image: berth-demo:v1
  ports:
    - containerPort: 8080
  resources: {{ cpu: 0.5 }}
{replicas}  scaling:
    minReplicas: {min}
    maxReplicas: {max}
    policy:
      mode: {mode}
      cooldownSeconds: 30
      http:
        targetRPSPerReplica: 10
        windowSeconds: 20
"#
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    runtime: Arc<FakeRuntime>,
    last: watch::Sender<Option<Arc<LastPass>>>,
    deps: AutoscaleDeps<Observer<FakeRuntime>>,
    log: PathBuf,
}

const NOW: i64 = 1_700_000_100_000;

/// Autoscaler dependencies whose last pass saw `ready` healthy containers of `yaml`.
async fn setup(yaml: &str, ready: u16) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("nginx/logs/access.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let store = Store::open_in_memory().await.unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let last = watch::Sender::new(None);
    let deps = AutoscaleDeps {
        store: store.clone(),
        stats: Observer::new(runtime.clone()),
        last_pass: last.subscribe(),
        counters: Arc::new(Counters::default()),
        leadership: crate::leader::Leadership::single("test"),
    };
    set_last_pass(&store, &last, yaml, ready).await;
    Setup {
        _dir: dir,
        store,
        runtime,
        last,
        deps,
        log,
    }
}

async fn set_last_pass(
    store: &Store,
    last: &watch::Sender<Option<Arc<LastPass>>>,
    yaml: &str,
    ready: u16,
) {
    let loaded = crate::spec::load_files(&[(PathBuf::from("web.yaml"), yaml.to_string())]);
    assert!(loaded.issues.is_empty(), "{:?}", loaded.issues);
    let desired = desired_from(
        &loaded,
        "rev1",
        "127.0.0.1:1",
        &BTreeMap::new(),
        &Default::default(),
    )
    .desired;
    let hash = desired.apps["web"].hash.clone();
    let mut observed = Observed::default();
    for n in 0..ready {
        let c = ObservedContainer {
            id: format!("id{n}"),
            name: format!("berth-web-{n}"),
            app: "web".into(),
            image: "berth-demo:v1".into(),
            image_id: String::new(),
            spec_hash: hash.clone(),
            revision: "rev1".into(),
            state: ContainerState::Running,
            host_port: Some(30000 + n),
            published: vec![(8080, 30000 + n)],
            created: 1,
        };
        observed.health.insert(c.id.clone(), Health::Healthy);
        observed.containers.push(c);
    }
    let overrides = Overrides {
        replicas: store.replica_overrides().await.unwrap(),
        ..Overrides::default()
    };
    let plan = crate::plan::plan(&desired, &observed, &overrides, NOW);
    last.send_replace(Some(Arc::new(LastPass {
        at: NOW,
        trigger: "test".into(),
        desired: desired.into(),
        observed,
        plan,
        issues: Vec::new(),
        duration_ms: 1,
        ..LastPass::default()
    })));
}

/// `rps` requests per second for `app` over the `seconds` before `now`, round-robin over
/// the given upstream ports.
fn write_load(log: &Path, app: &str, rps: u32, seconds: u32, now: i64, ports: &[u16]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let total = rps * seconds;
    let mut text = String::new();
    for i in 0..total {
        let at = now - i64::from(seconds) * 1000 + i64::from(i) * 1000 / i64::from(rps);
        let port = ports[i as usize % ports.len()];
        text.push_str(&format!(
            "{{\"time\":{}.{:03},\"app\":\"{app}\",\"status\":200,\"request_time\":0.005,\
             \"upstream_time\":\"0.004\",\"upstream\":\"127.0.0.1:{port}\",\"request_id\":\"x\",\
             \"method\":\"GET\",\"host\":\"h\",\"uri\":\"/\",\"connections\":2}}\n",
            at / 1000,
            at % 1000
        ));
    }
    f.write_all(text.as_bytes()).unwrap();
}

use std::path::Path;

#[tokio::test]
async fn load_above_target_writes_an_override_and_a_decision_row() {
    let s = setup(&spec_yaml("auto", 1, 4, None), 1).await;
    write_load(&s.log, "web", 30, 20, NOW, &[30000]);
    write_load(&s.log, "other", 100, 20, NOW, &[40000]);
    let mut scaler = Autoscaler::new(AutoscaleSettings::default(), Some(s.log.clone()));
    // A first tick only takes a CPU baseline; the load is already above target.
    let report = scaler.tick(&s.deps, NOW).await.unwrap();
    assert_eq!(report.written, 1, "{:?}", report.decisions);
    assert_eq!(
        report.ingest.ignored, 2000,
        "the other app's lines are ignored"
    );
    let d = &report.decisions["web"];
    assert_eq!((d.from, d.to), (1, 4), "{}", d.reason);
    assert_eq!(s.store.replica_overrides().await.unwrap()["web"], 4);
    let rows = s.store.scaling_decisions("web", 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!((row.from_replicas, row.to_replicas, row.at), (1, 4, NOW));
    assert!(
        row.reason.starts_with("scale out +3: rps factor 3.00"),
        "{}",
        row.reason
    );
    assert_eq!(row.metrics["rps"], 30.0);
    assert_eq!(row.metrics["requests"], 600);
    assert_eq!(row.metrics["ready"], 1);
    assert_eq!(
        row.metrics["upstreams"]["127.0.0.1:30000"]["container"],
        "berth-web-0"
    );
    assert_eq!(
        row.metrics["cpu_pct"],
        serde_json::Value::Null,
        "no CPU on the first sample"
    );
    assert_eq!(row.metrics["memory_pct"], 25.0);
    assert_eq!(row.factors["rps"], 3.0);
    assert_eq!(row.factors["max_metric"], "rps");
    assert_eq!(row.factors["action"], "scale-out");
    // The decision is counted for /metrics (berth_autoscaler_decisions_total).
    let counted = s.deps.counters.snapshot().scaling_decisions;
    assert_eq!(
        counted.get(&("web".to_string(), "out")).copied(),
        Some(1),
        "{counted:?}"
    );
    // Stats were asked for the ready container only, through the read-only call.
    assert_eq!(
        *s.runtime.stats_ids.lock().unwrap(),
        vec!["id0".to_string()]
    );

    // Next tick: 4 replicas share the load (the three new ones count although the last
    // pass has not seen them ready yet), and CPU now has two samples: 0.1 core of a 0.5
    // limit = 20%.
    let report = scaler.tick(&s.deps, NOW + 1000).await.unwrap();
    assert_eq!(report.written, 0);
    let d = &report.decisions["web"];
    assert_eq!(d.basis, 4);
    assert!(
        d.reason.starts_with("within thresholds: rps factor 0.71"),
        "{}",
        d.reason
    );
    assert!(
        (d.factors["cpu"] - 20.0 / 70.0).abs() < 1e-9,
        "{:?}",
        d.factors
    );
}

#[tokio::test]
async fn manual_mode_and_missing_scaling_clear_a_stale_override() {
    let s = setup(&spec_yaml("manual", 1, 4, Some(2)), 2).await;
    s.store
        .set_replica_override("web", 4, "old", 1)
        .await
        .unwrap();
    let mut scaler = Autoscaler::new(AutoscaleSettings::default(), None);
    let report = scaler.tick(&s.deps, NOW).await.unwrap();
    assert_eq!((report.cleared, report.written), (1, 0));
    assert!(report.decisions.is_empty());
    assert!(s.store.replica_overrides().await.unwrap().is_empty());
    let rows = s.store.scaling_decisions("web", 10).await.unwrap();
    assert_eq!((rows[0].from_replicas, rows[0].to_replicas), (4, 2));
    assert!(
        rows[0].reason.contains("mode is manual"),
        "{}",
        rows[0].reason
    );
    // Nothing stored, nothing to do: a second tick writes no row.
    let report = scaler.tick(&s.deps, NOW + 1000).await.unwrap();
    assert_eq!(report.cleared, 0);
    assert_eq!(s.store.scaling_decisions("web", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn bounds_lowered_in_git_clamp_the_override() {
    let s = setup(&spec_yaml("auto", 1, 3, None), 3).await;
    s.store
        .set_replica_override("web", 7, "old", 1)
        .await
        .unwrap();
    set_last_pass(&s.store, &s.last, &spec_yaml("auto", 1, 3, None), 3).await;
    let mut scaler = Autoscaler::new(AutoscaleSettings::default(), None);
    let report = scaler.tick(&s.deps, NOW).await.unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(s.store.replica_overrides().await.unwrap()["web"], 3);
    let rows = s.store.scaling_decisions("web", 10).await.unwrap();
    assert_eq!((rows[0].from_replicas, rows[0].to_replicas), (7, 3));
    assert_eq!(rows[0].factors["action"], "clamp");
    // No log and no load: holds afterwards.
    let report = scaler.tick(&s.deps, NOW + 1000).await.unwrap();
    assert_eq!(report.written, 0);
}

#[tokio::test]
async fn nothing_happens_before_the_first_pass_or_without_metrics() {
    let s = setup(&spec_yaml("auto", 1, 4, None), 1).await;
    s.last.send_replace(None);
    let mut scaler = Autoscaler::new(AutoscaleSettings::default(), Some(s.log.clone()));
    let report = scaler.tick(&s.deps, NOW).await.unwrap();
    assert!(report.decisions.is_empty());
    assert_eq!(s.runtime.stats_calls.load(Ordering::Relaxed), 0);
    set_last_pass(&s.store, &s.last, &spec_yaml("auto", 1, 4, None), 1).await;
    // No access log file yet (nginx not started): memory only, within thresholds.
    let report = scaler.tick(&s.deps, NOW).await.unwrap();
    assert_eq!(report.written, 0);
    assert!(s
        .store
        .scaling_decisions("web", 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn cooldown_survives_a_restart_through_the_store() {
    let s = setup(&spec_yaml("auto", 1, 4, None), 1).await;
    s.store
        .record_scaling_decision(&NewScalingDecision {
            app: "web".into(),
            at: NOW - 5_000,
            from_replicas: 2,
            to_replicas: 1,
            reason: "scale in".into(),
            metrics: json!({}),
            factors: json!({ "action": "scale-in" }),
        })
        .await
        .unwrap();
    write_load(&s.log, "web", 30, 20, NOW, &[30000]);
    let mut scaler = Autoscaler::new(AutoscaleSettings::default(), Some(s.log.clone()));
    let report = scaler.tick(&s.deps, NOW).await.unwrap();
    assert_eq!(report.written, 0);
    assert!(report.decisions["web"]
        .reason
        .contains("cooldown: 25s left"));
    write_load(&s.log, "web", 30, 20, NOW + 25_000, &[30000]);
    let report = scaler.tick(&s.deps, NOW + 25_000).await.unwrap();
    assert_eq!(report.written, 1, "{:?}", report.decisions["web"].reason);
}
