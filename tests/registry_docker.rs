//! Registry images against a real registry (Debian's docker-registry with htpasswd auth on a
//! free loopback port, `support::registry`), the real Docker engine, a real private nginx
//! and the daemon in-process (`Served`: the loop, the prober and the image worker):
//! pulling with the docker config's credentials (events and /metrics), `IfNotPresent` not
//! pulling an image the host has, credentials from a credential helper (`credHelpers`),
//! a wrong password and an unknown tag as clear per-app errors while the app keeps
//! serving, and a re-pushed tag rolled out with `Always`.
//! Own instance label, network, state dir, nginx port and registry; cleaned up by the
//! guards' Drop, also on failure.

mod support;

use berth::reconcile::{Controller, ImageSettings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::ContainerObserver;
use berth::store::{EventQuery, EventRow, EventType};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::registry::{present, Registry};
use support::{Scene, Served, IMAGE_V1, IMAGE_V2};

fn spec(name: &str, image: &str, policy: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  type: http
  image: {image}
  imagePullPolicy: {policy}
  ports:
    - containerPort: 8080
  health:
    httpGet: {{ path: /healthz, port: 8080 }}
    intervalSeconds: 1
    timeoutSeconds: 1
  replicas: 1
  termination:
    drainSeconds: 0
"#
    )
}

async fn controller(
    scene: &Scene,
    registry: &Registry,
    poll: Duration,
) -> Arc<Controller<DockerRuntime>> {
    let settings = berth::reconcile::Settings {
        images: ImageSettings {
            docker_config: registry.docker_config(),
            poll,
        },
        ..scene.dir_settings()
    };
    scene.controller_with(settings).await
}

fn write(scene: &Scene, file: &str, text: &str) {
    std::fs::write(scene.specs.path().join(file), text).unwrap();
}

/// The body served at `/<app>/` through the scene's nginx (empty when nothing answers).
fn body(scene: &Scene, app: &str) -> String {
    support::http_get(
        &format!("127.0.0.1:{}", scene.port),
        &format!("/{app}/"),
        None,
    )
    .map(|(_, body)| body)
    .unwrap_or_default()
}

async fn events(ctl: &Controller<DockerRuntime>, app: &str, kind: EventType) -> Vec<EventRow> {
    let query = EventQuery {
        app: Some(app.into()),
        event_type: Some(kind),
        ..EventQuery::default()
    };
    ctl.store().events(&query).await.unwrap()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one sample line of the /metrics text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_image_is_pulled_with_the_docker_config_credentials() {
    let registry = Registry::start();
    let scene = Scene::new("reg-pull");
    registry.push(IMAGE_V1, "demo:v1");
    let image = registry.image("demo:v1");
    assert!(
        !present(&image),
        "the host must not have {image} before berth pulls it"
    );

    write(&scene, "web.yaml", &spec("web", &image, "IfNotPresent"));
    let ctl = controller(&scene, &registry, Duration::from_secs(300)).await;
    let served = Served::start(&ctl, None);
    wait_until(
        "web serves the pulled image",
        Duration::from_secs(60),
        || async { body(&scene, "web") == "v1\n" },
    )
    .await;
    assert!(present(&image));
    let pulling = events(&ctl, "web", EventType::ImagePulling).await;
    assert_eq!(pulling.len(), 1, "{pulling:?}");
    assert!(
        pulling[0]
            .message
            .contains(&format!("pulling it from {}", registry.host())),
        "{}",
        pulling[0].message
    );
    let pulled = events(&ctl, "web", EventType::ImagePulled).await;
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert!(
        pulled[0]
            .message
            .starts_with(&format!("pulled image {image} from {}", registry.host())),
        "{}",
        pulled[0].message
    );
    let metrics = support::scrape_metrics(&ctl).await;
    assert_eq!(
        sample(&metrics, "berth_image_pulls_total{result=\"success\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "berth_image_pulls_total{result=\"failure\"}"),
        0.0
    );

    // IfNotPresent: a second app on the same image starts from the host's copy.
    write(&scene, "api.yaml", &spec("api", &image, "IfNotPresent"));
    wait_until("api serves", Duration::from_secs(60), || async {
        body(&scene, "api") == "v1\n"
    })
    .await;
    assert_eq!(
        ctl.runtime().calls().pulls,
        1,
        "IfNotPresent pulled an image the host has"
    );
    assert!(events(&ctl, "api", EventType::ImagePulling)
        .await
        .is_empty());
    let metrics = support::scrape_metrics(&ctl).await;
    assert_eq!(
        sample(&metrics, "berth_image_pulls_total{result=\"success\"}"),
        1.0
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_errors_are_clear_per_app_errors_and_the_app_keeps_serving() {
    let registry = Registry::start();
    let scene = Scene::new("reg-errors");
    registry.push(IMAGE_V2, "demo:v2");
    registry.write_config("wrong-password");
    write(&scene, "web.yaml", &spec("web", IMAGE_V1, "Never"));
    let ctl = controller(&scene, &registry, Duration::from_secs(300)).await;
    let served = Served::start(&ctl, None);
    wait_until("web serves v1", Duration::from_secs(60), || async {
        body(&scene, "web") == "v1\n"
    })
    .await;

    // 401: the wrong password.
    let v2 = registry.image("demo:v2");
    write(&scene, "web.yaml", &spec("web", &v2, "IfNotPresent"));
    let host = registry.host();
    wait_until(
        "a pull-failed event for the wrong password",
        Duration::from_secs(60),
        || async {
            events(&ctl, "web", EventType::ImagePullFailed)
                .await
                .iter()
                .any(|e| {
                    e.message.contains(&format!(
                        "registry {host} refused image {v2} (unauthorized)"
                    )) && e.message.contains(&format!("docker login {host}"))
                })
        },
    )
    .await;
    assert_eq!(
        body(&scene, "web"),
        "v1\n",
        "the app keeps serving what it has"
    );
    // The plan holds the app with the reason until its backoff ends.
    wait_until(
        "the plan says it retries",
        Duration::from_secs(30),
        || async {
            let (plan, _) = berth::reconcile::plan_only(&ctl).await.unwrap();
            let held = plan.steps_for("web").any(|s| match s {
                berth::plan::Step::NoOp { reason, .. } => {
                    reason.starts_with("retrying in") && reason.contains("unauthorized")
                }
                _ => false,
            });
            held
        },
    )
    .await;
    let row = ctl.store().app("web").await.unwrap().unwrap();
    assert_eq!(row.status, berth::store::AppStatus::Degraded, "{row:?}");
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("(unauthorized)"),
        "the app's status says why: {row:?}"
    );

    // 404: the right password, an unknown tag.
    registry.write_config(support::registry::PASSWORD);
    let nope = registry.image("demo:nope");
    write(&scene, "web.yaml", &spec("web", &nope, "IfNotPresent"));
    wait_until(
        "a pull-failed event for the unknown tag",
        Duration::from_secs(60),
        || async {
            events(&ctl, "web", EventType::ImagePullFailed)
                .await
                .iter()
                .any(|e| {
                    e.message
                        .starts_with(&format!("image {nope} was not found on registry {host}"))
                })
        },
    )
    .await;
    assert_eq!(
        body(&scene, "web"),
        "v1\n",
        "the app keeps serving what it has"
    );

    // Unreachable: nothing listens on the registry's address.
    let closed = support::free_port();
    let gone = format!("127.0.0.1:{closed}/demo:v2");
    write(&scene, "web.yaml", &spec("web", &gone, "IfNotPresent"));
    wait_until(
        "a pull-failed event for the unreachable registry",
        Duration::from_secs(60),
        || async {
            events(&ctl, "web", EventType::ImagePullFailed)
                .await
                .iter()
                .any(|e| {
                    e.message.starts_with(&format!(
                        "cannot reach registry 127.0.0.1:{closed} to pull image {gone}"
                    ))
                })
        },
    )
    .await;
    assert_eq!(
        body(&scene, "web"),
        "v1\n",
        "the app keeps serving what it has"
    );

    // Fixed: the app rolls to v2.
    write(&scene, "web.yaml", &spec("web", &v2, "IfNotPresent"));
    wait_until("web serves v2", Duration::from_secs(60), || async {
        body(&scene, "web") == "v2\n"
    })
    .await;
    let metrics = support::scrape_metrics(&ctl).await;
    assert!(
        sample(&metrics, "berth_image_pulls_total{result=\"failure\"}") >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "berth_image_pulls_total{result=\"success\"}"),
        1.0
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repushed_tag_rolls_out_with_always() {
    let registry = Registry::start();
    let scene = Scene::new("reg-always");
    registry.push(IMAGE_V1, "demo:live");
    let image = registry.image("demo:live");
    write(&scene, "web.yaml", &spec("web", &image, "Always"));
    let ctl = controller(&scene, &registry, Duration::from_secs(1)).await;
    let served = Served::start(&ctl, None);
    wait_until("web serves v1", Duration::from_secs(60), || async {
        body(&scene, "web") == "v1\n"
    })
    .await;
    let first = ctl.runtime().observe().await.unwrap();
    assert_eq!(first.len(), 1);
    // An unchanged tag is checked, not pulled again.
    wait_until("an unchanged check", Duration::from_secs(30), || async {
        let m = support::scrape_metrics(&ctl).await;
        sample(&m, "berth_image_checks_total{result=\"unchanged\"}") >= 1.0
    })
    .await;
    let pulls_before = ctl.runtime().calls().pulls;

    registry.push(IMAGE_V2, "demo:live");
    wait_until(
        "web serves the re-pushed tag",
        Duration::from_secs(60),
        || async { body(&scene, "web") == "v2\n" },
    )
    .await;
    assert_eq!(ctl.runtime().calls().pulls, pulls_before + 1);
    // The old replica is drained and removed after the new one joined.
    wait_until(
        "the old replica is gone",
        Duration::from_secs(30),
        || async { ctl.runtime().observe().await.unwrap().len() == 1 },
    )
    .await;
    let now = ctl.runtime().observe().await.unwrap();
    assert_ne!(
        now[0].image_id, first[0].image_id,
        "the new container runs the new image"
    );
    assert_eq!(
        now[0].spec_hash, first[0].spec_hash,
        "the spec did not change"
    );
    let started = events(&ctl, "web", EventType::RolloutStarted).await;
    assert!(
        started
            .iter()
            .any(|e| e.message.contains("image digest changed")),
        "{started:?}"
    );
    let pulled = events(&ctl, "web", EventType::ImagePulled).await;
    assert!(
        pulled
            .iter()
            .any(|e| e.message.contains("the registry's digest of the tag moved")),
        "{pulled:?}"
    );
    let metrics = support::scrape_metrics(&ctl).await;
    assert!(
        sample(&metrics, "berth_image_checks_total{result=\"changed\"}") >= 1.0,
        "{metrics}"
    );
    served.stop().await;
}

/// A registry that accepts connections and never answers: the engine's pull hangs.
struct Blackhole {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((conn, _)) = listener.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Blackhole { port, stop }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_pull_holds_only_its_own_app() {
    let hole = Blackhole::start();
    let registry = Registry::start(); // only for its DOCKER_CONFIG dir
    let scene = Scene::new("reg-hang");
    let stuck = format!("127.0.0.1:{}/demo:v1", hole.port);
    write(&scene, "stuck.yaml", &spec("stuck", &stuck, "IfNotPresent"));
    write(&scene, "web.yaml", &spec("web", IMAGE_V1, "IfNotPresent"));
    let ctl = controller(&scene, &registry, Duration::from_secs(300)).await;
    let served = Served::start(&ctl, None);
    wait_until(
        "web serves while stuck's pull hangs",
        Duration::from_secs(30),
        || async { body(&scene, "web") == "v1\n" },
    )
    .await;
    // A later app is not held either: passes go on while the pull hangs.
    write(&scene, "api.yaml", &spec("api", IMAGE_V2, "IfNotPresent"));
    wait_until(
        "api serves while stuck's pull hangs",
        Duration::from_secs(30),
        || async { body(&scene, "api") == "v2\n" },
    )
    .await;
    let (plan, _) = berth::reconcile::plan_only(&ctl).await.unwrap();
    let waiting = plan.steps_for("stuck").any(|s| {
        matches!(s, berth::plan::Step::NoOp { reason, .. }
            if reason == &format!("waiting for image {stuck} to be pulled; what runs is kept"))
    });
    assert!(waiting, "{:?}", plan.steps);
    assert!(ctl.pulls_pending());
    let row = ctl.store().app("stuck").await.unwrap().unwrap();
    assert_eq!(row.status, berth::store::AppStatus::Progressing, "{row:?}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_once_waits_for_the_pulls_it_asked_for() {
    let registry = Registry::start();
    let scene = Scene::new("reg-once");
    registry.push(IMAGE_V2, "once:v2");
    let image = registry.image("once:v2");
    write(&scene, "web.yaml", &spec("web", &image, "IfNotPresent"));
    let ctl = controller(&scene, &registry, Duration::from_secs(300)).await;
    let report = berth::daemon::apply_once(&ctl).await.unwrap();
    assert_eq!(report.steps_failed, 0, "{report:?}");
    assert_eq!(body(&scene, "web"), "v2\n");
    assert_eq!(ctl.runtime().calls().pulls, 1);
    assert!(!ctl.pulls_pending());
}

/// A registry whose credentials live in a credential helper (`credHelpers` in the docker
/// config, as `docker-credential-ecr-login` or `-gcr` are used): `berth apply --once`, a
/// child process with the helper on its PATH, asks the helper for the registry's
/// credentials and pulls the private image with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_helper_supplies_the_registry_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let registry = Registry::start();
    let scene = Scene::new("reg-helper");
    registry.push(IMAGE_V1, "helped:v1");
    let image = registry.image("helped:v1");
    assert!(!present(&image), "the host must not have {image} yet");

    // The helper answers the registry's credentials and records each question it got.
    let bin = scene.state.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = scene.state.path().join("helper-asked");
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\necho \"$server\" >> '{asked}'\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n",
            asked = asked.display(),
            user = support::registry::USER,
            password = support::registry::PASSWORD,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = scene.state.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        format!(
            r#"{{"credHelpers": {{"{}": "berthtest"}}}}"#,
            registry.host()
        ),
    )
    .unwrap();

    write(&scene, "web.yaml", &spec("web", &image, "IfNotPresent"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["apply", "--once", "--dir"])
        .arg(scene.specs.path())
        .arg("--state-dir")
        .arg(scene.state.path())
        .args(["--listen", &format!("127.0.0.1:{}", scene.port)])
        .args(["--instance", &scene.instance, "--network", &scene.instance])
        .arg("--docker-config")
        .arg(&config)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), support::path_with_sbin()),
        )
        .env("NO_COLOR", "1")
        .output()
        .expect("run berth apply --once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(present(&image), "{stderr}");
    let questions = std::fs::read_to_string(&asked).unwrap_or_default();
    assert!(
        questions.lines().any(|l| l == registry.host()),
        "the helper was asked for {:?}, not {}",
        questions,
        registry.host()
    );
    assert!(
        !stderr.contains(support::registry::PASSWORD),
        "the secret reached the log: {stderr}"
    );
    wait_until(
        "web serves the pulled image",
        Duration::from_secs(30),
        || async { body(&scene, "web") == "v1\n" },
    )
    .await;
}
