//! The autoscaler end to end on the real Docker engine and a real private nginx: a bounded
//! load generator (loopback only) pushes an app past its targetRPSPerReplica, replicas go
//! up within two ticks; the load stops, replicas go back to minReplicas after cooldown;
//! every change has a scaling decision row. Prints the measured reaction times.

mod support;

use berth::autoscale::AutoscaleSettings;
use berth::reconcile::Controller;
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerRuntime, ContainerState};
use berth::store::ScalingDecisionRow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{ensure_images, http_get, unique_name, DockerCleanup, Scene};

/// Autoscaler tick of this test (the default is 15 s).
const TICK: Duration = Duration::from_secs(1);
/// Load generator bounds: threads, requests per second in total, at most this many
/// requests and this long.
const LOAD_THREADS: u32 = 4;
const LOAD_RPS: u32 = 40;
const LOAD_MAX_REQUESTS: u64 = 2_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(40);

/// A controller on its own [`Scene`] (which stops nginx and removes the containers).
struct Harness {
    ctl: Arc<Controller<DockerRuntime>>,
    scene: Scene,
}

impl Harness {
    async fn new(prefix: &str) -> Harness {
        let scene = Scene::new(prefix);
        let settings = scene.dir_settings();
        let ctl = scene.controller_with(settings).await;
        Harness { ctl, scene }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.scene.specs.path().join(file), text).unwrap();
    }

    async fn running(&self, app: &str) -> usize {
        self.ctl
            .runtime()
            .observe()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.app == app && c.state == ContainerState::Running)
            .count()
    }

    /// Ready replicas the last pass saw.
    fn ready(&self, app: &str) -> u32 {
        self.ctl
            .last_pass()
            .and_then(|l| l.plan.apps.get(app).map(|s| s.ready_replicas))
            .unwrap_or(0)
    }

    async fn override_of(&self, app: &str) -> Option<u32> {
        self.ctl
            .store()
            .replica_overrides()
            .await
            .unwrap()
            .get(app)
            .copied()
    }
}

const SPEC: &str = r#"apiVersion: v1
kind: App
metadata:
  name: web
spec:
  type: http
  image: berth-demo:v1
  ports:
    - containerPort: 8080
  health:
    httpGet: { path: /healthz, port: 8080 }
    intervalSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 3
  scaling:
    minReplicas: 1
    maxReplicas: 3
    policy:
      mode: auto
      cooldownSeconds: 2
      http:
        targetRPSPerReplica: 5
        scaleOutThresholdPct: 80
        scaleInThresholdPct: 30
        windowSeconds: 3
  termination:
    drainSeconds: 1
"#;

/// Bounded load: `LOAD_THREADS` threads pacing GETs to `LOAD_RPS` in total through nginx on
/// 127.0.0.1, until `stop`, `LOAD_MAX_REQUESTS` or `LOAD_MAX_TIME`.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let period = Duration::from_secs_f64(f64::from(LOAD_THREADS) / f64::from(LOAD_RPS));
        let threads = (0..LOAD_THREADS)
            .map(|i| {
                let (stop, sent, ok) = (stop.clone(), sent.clone(), ok.clone());
                std::thread::spawn(move || {
                    let addr = format!("127.0.0.1:{port}");
                    let mut next = Instant::now() + period.mul_f64(f64::from(i) / 4.0);
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_MAX_TIME {
                        if sent.fetch_add(1, Ordering::Relaxed) >= LOAD_MAX_REQUESTS {
                            break;
                        }
                        if let Ok((200, _)) = http_get(&addr, "/web/", None) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        next += period;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            ok,
            threads,
        }
    }

    /// Stops and returns (sent, answered 200).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        (
            self.sent.load(Ordering::Relaxed).min(LOAD_MAX_REQUESTS),
            self.ok.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "{what}: not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_out_within_two_ticks_and_back_to_min_after_cooldown() {
    let h = Harness::new("autoscale").await;
    h.write("web.yaml", SPEC);
    let served = support::Served::start(
        &h.ctl,
        Some(AutoscaleSettings {
            tick: TICK,
            ..AutoscaleSettings::default()
        }),
    );

    // Converges to minReplicas with no override written.
    wait_for("one ready replica", Duration::from_secs(60), || async {
        h.ready("web") == 1
            && matches!(
                http_get(&format!("127.0.0.1:{}", h.scene.port), "/web/", None),
                Ok((200, _))
            )
    })
    .await;
    assert_eq!(h.override_of("web").await, None);

    // Load: 40 requests/s against a target of 5 per replica.
    let load = Load::start(h.scene.port);
    let load_started = Instant::now();
    let decided = wait_for("a scale-out override", 4 * TICK, || async {
        h.override_of("web").await.unwrap_or(1) > 1
    })
    .await;
    assert!(
        decided <= 2 * TICK + Duration::from_millis(500),
        "replicas went up {decided:?} after the load started: more than two ticks"
    );
    let scaled = wait_for("3 ready replicas", Duration::from_secs(60), || async {
        h.ready("web") == 3
    })
    .await;
    let ready_after = load_started.elapsed();
    assert_eq!(h.running("web").await, 3);
    // Let the new replicas serve for a moment under load: no further change (at max).
    tokio::time::sleep(3 * TICK).await;
    let (sent, ok) = load.finish();
    assert!(sent <= LOAD_MAX_REQUESTS);
    assert!(ok * 10 >= sent * 9, "{ok} of {sent} requests answered 200");

    // Load gone: back to minReplicas, one replica at a time.
    let back = wait_for("back to 1 replica", Duration::from_secs(90), || async {
        h.override_of("web").await == Some(1) && h.running("web").await == 1
    })
    .await;

    served.stop().await;

    // The decisions of the real ticks are counted and exported on /metrics (the counter
    // once stayed at zero outside tests).
    let text = support::scrape_metrics(&h.ctl).await;
    let counted = |direction: &str| -> u64 {
        let prefix =
            format!("berth_autoscaler_decisions_total{{app=\"web\",direction=\"{direction}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} line in /metrics:\n{text}"))
    };
    let (ups_counted, downs_counted) = (counted("out"), counted("in"));

    // Every change has a row, and the rows chain from 1 up to 3 and down to 1 again, one
    // replica at a time on the way down, at least a cooldown apart.
    let mut rows: Vec<ScalingDecisionRow> =
        h.ctl.store().scaling_decisions("web", 100).await.unwrap();
    rows.reverse();
    let chain: Vec<(u32, u32)> = rows
        .iter()
        .map(|r| (r.from_replicas, r.to_replicas))
        .collect();
    assert_eq!(chain.first().map(|c| c.0), Some(1), "{chain:?}");
    assert_eq!(chain.last().map(|c| c.1), Some(1), "{chain:?}");
    for pair in chain.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "rows do not chain: {chain:?}");
    }
    let ups = chain.iter().take_while(|(from, to)| to > from).count();
    assert_eq!(
        (ups_counted, downs_counted),
        (
            chain.iter().filter(|(from, to)| to > from).count() as u64,
            chain.iter().filter(|(from, to)| to < from).count() as u64
        ),
        "/metrics counts every decision row: {chain:?}"
    );
    assert_eq!(chain[ups - 1].1, 3, "went up to maxReplicas: {chain:?}");
    assert_eq!(chain[ups..], [(3, 2), (2, 1)], "{chain:?}");
    for r in &rows[..ups] {
        assert!(r.reason.starts_with("scale out +"), "{}", r.reason);
        assert!(r.metrics["rps"].as_f64().unwrap() > 4.0, "{}", r.metrics);
        assert_eq!(r.factors["max_metric"], "rps");
    }
    for r in &rows[ups..] {
        assert!(r.reason.starts_with("scale in -1"), "{}", r.reason);
        assert!(
            r.factors["max"].as_f64().unwrap_or(0.0) < 0.27,
            "{}",
            r.factors
        );
    }
    let spacing = (rows[ups + 1].at - rows[ups].at) as f64 / 1000.0;
    assert!(
        spacing >= 2.0,
        "scale-ins {spacing}s apart: cooldown is 2 s"
    );

    eprintln!(
        "autoscale reaction (tick {:?}, window 3 s, cooldown 2 s): override written {:.2} s \
         after the load started, 3 replicas ready {:.2} s after it ({:.2} s after the \
         decision); load of {sent} requests ({ok} x 200); back to 1 replica {:.2} s after \
         the load stopped; decisions {chain:?}",
        TICK,
        decided.as_secs_f64(),
        ready_after.as_secs_f64(),
        scaled.as_secs_f64(),
        back.as_secs_f64(),
    );
}

#[tokio::test]
async fn stats_are_one_shot_read_only_and_skip_gone_containers() {
    use berth::runtime::{ContainerRequest, LABEL_APP, LABEL_REVISION, LABEL_SPEC_HASH};
    ensure_images();
    let instance = unique_name("autoscale-stats");
    let _cleanup = DockerCleanup::new(&instance);
    let rt = DockerRuntime::connect(Some(instance.clone()))
        .await
        .expect("the Docker engine must be reachable for these tests");
    let request = ContainerRequest {
        name: unique_name("stats"),
        image: support::IMAGE_V1.to_string(),
        command: None,
        env: Vec::new(),
        ports: vec![8080],
        cpu_millis: Some(500),
        memory_bytes: Some(64 * 1024 * 1024),
        labels: BTreeMap::from([
            (LABEL_APP.to_string(), "web".to_string()),
            (LABEL_SPEC_HASH.to_string(), "h".to_string()),
            (LABEL_REVISION.to_string(), "r".to_string()),
        ]),
        network: None,
        options: Default::default(),
    };
    let id = rt.create(&request).await.unwrap();
    // Created, not running: left out.
    assert!(rt
        .stats(std::slice::from_ref(&id))
        .await
        .unwrap()
        .is_empty());
    rt.start(&id).await.unwrap();
    let ids = vec![id.clone(), "0123456789ab-gone".to_string()];
    let before = rt.calls();
    let first = rt.stats(&ids).await.unwrap();
    let second = rt.stats(&ids).await.unwrap();
    let made = rt.calls().since(&before);
    assert_eq!(made.stats, 4, "one call per id and round: {made:?}");
    assert_eq!(made.mutating(), 0);
    assert_eq!(made.list + made.inspect, 0);
    assert_eq!(first.len(), 1, "the gone id is left out: {first:?}");
    let (a, b) = (&first[0], &second[0]);
    assert_eq!(a.id, id);
    assert!(
        a.memory_bytes > 0 && a.memory_bytes < a.memory_limit_bytes,
        "{a:?}"
    );
    assert_eq!(a.memory_limit_bytes, 64 * 1024 * 1024);
    assert!(a.online_cpus >= 1);
    assert!(b.system_cpu_ns > a.system_cpu_ns, "{a:?} {b:?}");
    assert!(b.cpu_total_ns >= a.cpu_total_ns);
}
