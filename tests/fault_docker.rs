//! Fault suite (bounded, real engine + real nginx): berth killed with SIGKILL at many points
//! of its reconciles then restarted; the Docker engine unreachable then back; nginx killed
//! and a proxy file deleted by hand; a hostile spec corpus dropped next to a running app.
//! Each test has its own instance label, network, state dir and nginx port, and cleans up
//! in Drop guards. The scenarios live in tests/fault/mod.rs, which the compare bench runs
//! at length (`cargo bench --bench compare -- --only faults`).

mod fault;
mod support;

use berth::reconcile;
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerRuntime, ContainerState};
use fault::{containers, DockerLink, Rng, Scene};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{ensure_images, http_get, unique_name, DockerCleanup};

#[tokio::test]
async fn sigkill_during_reconciles_then_restart_converges_without_orphans_or_duplicates() {
    let scene = Scene::new("fault-kill");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 12 rounds here; the bench runs 200.
    let report = fault::kill_rounds(
        &scene,
        &["alpha", "beta", "gamma"],
        12,
        &mut rng,
        Duration::from_secs(90),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:?}");
    assert_eq!(report.kills, 12);
    assert!(report.containers >= 3, "{report:?}");
}

#[tokio::test]
async fn docker_unreachable_then_back_keeps_serving_then_converges() {
    let scene = Scene::new("fault-engine");
    let link = DockerLink::start(scene.state.path().join("docker.sock"));
    let host = link.host();
    let port = scene.port;
    let ctl = scene.controller(Some(&host)).await;

    scene.write("web", "berth-demo:v1", 1);
    reconcile::run_pass(&ctl, "test").await.unwrap();
    reconcile::run_pass(&ctl, "test").await.unwrap();
    assert_eq!(scene.get("/web/"), 200);

    // Engine gone: passes fail with a clear error, nothing running is touched, traffic goes on.
    link.set(false);
    scene.write("web", "berth-demo:v2", 2);
    let failed = reconcile::run_pass(&ctl, "test").await;
    let message = failed
        .expect_err("a pass without the engine fails")
        .to_string();
    assert!(
        message.contains("docker") || message.contains("engine"),
        "{message}"
    );
    assert_eq!(
        scene.get("/web/"),
        200,
        "nginx keeps serving while the engine is away"
    );

    // Engine back: the change made meanwhile is applied.
    link.set(true);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(report) = reconcile::run_pass(&ctl, "test").await {
            if !report.changed {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no convergence after the engine came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running: Vec<_> = containers(&ctl)
        .await
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .collect();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|c| c.image == "berth-demo:v2"));
    assert_eq!(
        http_get(&format!("127.0.0.1:{port}"), "/web/", None)
            .unwrap()
            .1,
        "v2\n"
    );
}

#[tokio::test]
async fn killed_nginx_and_a_deleted_proxy_file_are_restored() {
    let scene = Scene::new("fault-nginx");
    let state = &scene.state;
    let ctl = scene.controller(None).await;
    scene.write("web", "berth-demo:v1", 1);
    reconcile::run_pass(&ctl, "test").await.unwrap();
    assert_eq!(scene.get("/web/"), 200);

    // SIGKILL the master (its workers are orphaned and keep the port) and delete a file.
    let pid = ctl.proxy().running_pid().await.unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    std::fs::remove_file(state.path().join("nginx/conf.d/web.loc")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The killed master's orphaned workers may still answer for a moment: done only
        // when a new master runs and serves the restored files.
        let pass = reconcile::run_pass(&ctl, "test").await;
        let master = ctl.proxy().running_pid().await;
        if pass.is_ok() && master.is_some_and(|m| m != pid) && scene.get("/web/") == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "nginx not restored: {pass:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(state.path().join("nginx/conf.d/web.loc").exists());
}

#[tokio::test]
async fn a_hostile_spec_corpus_is_refused_with_clear_errors_and_disturbs_nothing() {
    let scene = Scene::new("fault-hostile");
    let specs = &scene.specs;
    let ctl = scene.controller(None).await;
    scene.write("web", "berth-demo:v1", 1);
    reconcile::run_pass(&ctl, "test").await.unwrap();
    reconcile::run_pass(&ctl, "test").await.unwrap();
    let before: Vec<String> = containers(&ctl).await.into_iter().map(|c| c.id).collect();
    assert_eq!(scene.get("/web/"), 200);

    let corpus = fault::hostile_corpus();
    for (file, text) in &corpus {
        std::fs::write(specs.path().join(file), text).unwrap();
    }
    let started = Instant::now();
    let report = reconcile::run_pass(&ctl, "test").await.unwrap();
    let took = started.elapsed();
    eprintln!("pass with the hostile corpus: {took:?}");
    assert_eq!(report.steps_failed, 0, "{report:?}");

    let last = ctl.last_pass().unwrap();
    for (file, _) in &corpus {
        assert!(
            last.issues
                .iter()
                .any(|i| i.file.to_string_lossy().ends_with(file) && i.line >= 1),
            "no issue names {file}: {:#?}",
            last.issues
        );
    }
    // The duplicate "web" holds web as it runs: same containers, still served.
    let after: Vec<String> = containers(&ctl).await.into_iter().map(|c| c.id).collect();
    assert_eq!(after, before, "nothing running was disturbed");
    assert_eq!(scene.get("/web/"), 200);
}

/// Creates a network named `name` straight through the engine API with Docker's duplicate
/// check off: what two berth processes racing on one name produce.
fn create_network_unchecked(name: &str, instance: &str) {
    use std::io::{Read, Write};
    let body = format!(
        r#"{{"Name":"{name}","CheckDuplicate":false,"Labels":{{"berth.managed":"true","berth.instance":"{instance}"}}}}"#
    );
    let mut socket = std::os::unix::net::UnixStream::connect("/var/run/docker.sock").unwrap();
    write!(
        socket,
        "POST /v1.41/networks/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn duplicate_networks_left_by_racing_berths_are_repaired() {
    ensure_images();
    let instance = unique_name("fault-net");
    let _cleanup = DockerCleanup::new(&instance);
    create_network_unchecked(&instance, &instance);
    create_network_unchecked(&instance, &instance);
    let count = || {
        let out = Command::new("docker")
            .args([
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("label=berth.instance={instance}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(count(), 2);
    let runtime = DockerRuntime::connect(Some(instance.clone()))
        .await
        .unwrap();
    runtime.ensure_network(&instance).await.unwrap();
    assert_eq!(count(), 1, "one network of that name is left");
    // And containers can attach to it by name again.
    let attach = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            &format!("berth.instance={instance}"),
            "--network",
            &instance,
            "berth-demo:v1",
            "/bin/busybox",
            "true",
        ])
        .output()
        .unwrap();
    assert!(attach.status.success(), "{attach:?}");
}

/// Regression: SIGTERM used to cut a pass wherever it was (between writing nginx files and
/// `nginx -t`, or with a new container created but not yet healthy). Now the pass in flight
/// finishes and berth exits after it: the rollout completes, nginx's config is valid and no
/// container is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_rollout_waits_on_health_exits_after_the_pass() {
    let scene = Scene::new("fault-term");
    let ctl = scene.controller(None).await;
    scene.write("web", "berth-demo:v1", 1);
    let mut child = fault::ChildGuard(Some(scene.serve()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while scene.get("/web/") != 200 {
        assert!(Instant::now() < deadline, "v1 never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // v2 answers its probe only after 2 s: the pass waits on its health gate.
    let slow = fault::app_spec("web", "berth-demo:v2", 1).replace(
        "  ports:\n",
        "  command: [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 2; exec /bin/busybox httpd -f -p 8080 -h /www\"]\n  ports:\n",
    );
    std::fs::write(scene.specs.path().join("web.yaml"), slow).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = containers(&ctl).await;
        if all.iter().any(|c| c.image == "berth-demo:v2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the v2 container was never created"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.0.as_ref().unwrap().id();
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "berth did not exit within --shutdown-timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.0 = None;
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(scene.serve_log()).unwrap();
    assert!(
        log.contains("the pass in flight finishes first"),
        "no shutdown line in the log:\n{log}"
    );
    // The pass finished: exactly one web container, running the new spec, none left over.
    let all = containers(&ctl).await;
    assert_eq!(all.len(), 1, "containers after SIGTERM: {all:?}");
    assert_eq!(all[0].image, "berth-demo:v2", "{all:?}");
    assert_eq!(all[0].state, ContainerState::Running);
    // nginx's files pass `nginx -t` and it serves v2.
    let prefix = scene.state.path().join("nginx");
    let test = Command::new(support::nginx_binary())
        .args(berth::proxy::private_args(&prefix, &["-t"]))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "nginx -t after SIGTERM: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let (code, body) = http_get(&format!("127.0.0.1:{}", scene.port), "/web/", None).unwrap();
    assert_eq!((code, body.as_str()), (200, "v2\n"));
}
