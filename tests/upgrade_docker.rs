//! Upgrading berth under load: `berth serve` is stopped with SIGTERM and started again on
//! the same state dir (what `systemctl restart` and a package upgrade do), and reloaded in
//! place with SIGHUP, while clients keep requesting through its private nginx. Every
//! request must succeed, and the nginx master must be the same process throughout (each
//! berth adopts it through its pid file instead of restarting it).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{http_get, path_with_sbin, Scene};

const SPEC: &str = "apiVersion: v1
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
  replicas: 2
  termination:
    drainSeconds: 1
";

fn start(scene: &Scene, log_name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "--config",
            "none",
            "serve",
            "--dir",
            scene.specs.path().to_str().unwrap(),
            "--state-dir",
            scene.state.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", scene.port),
            "--instance",
            &scene.instance,
            "--network",
            &scene.instance,
            "--interval",
            "1",
            "--api-listen",
            "off",
            "--no-autoscale",
        ])
        .env("PATH", path_with_sbin())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scene.state.path().join(log_name)).unwrap())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "berth exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "berth did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `log` says `needle` `count` times (berth logs one "berth serving" per start).
fn wait_log(scene: &Scene, log: &str, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(scene.state.path().join(log)).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} x{count} in {log}: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nginx_pid(scene: &Scene) -> String {
    std::fs::read_to_string(scene.state.path().join("nginx/nginx.pid"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn restarting_berth_under_load_fails_no_request() {
    let scene = Scene::new("upgrade");
    std::fs::write(scene.specs.path().join("web.yaml"), SPEC).unwrap();
    let mut berth = start(&scene, "berth-1.log");
    let addr = format!("127.0.0.1:{}", scene.port);
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_get(&addr, "/web/", None).map(|r| r.0).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "web never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both replicas ready and the pass that made them so finished.
    std::thread::sleep(Duration::from_secs(3));
    let master = nginx_pid(&scene);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, addr) =
                (stop.clone(), ok.clone(), failures.clone(), addr.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&addr, "/web/", None) {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{status}: {}", body.trim())),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    // Two restarts (SIGTERM, start again on the same state dir) and one in-place reload.
    for round in 2..=3 {
        signal(&berth, "TERM");
        wait_exit(&mut berth);
        std::thread::sleep(Duration::from_millis(500)); // traffic with no berth at all
        let log = format!("berth-{round}.log");
        berth = start(&scene, &log);
        wait_log(&scene, &log, "berth serving", 1);
        std::thread::sleep(Duration::from_secs(3)); // a few passes of the new berth
    }
    signal(&berth, "HUP");
    wait_log(&scene, "berth-3.log", "berth serving", 2);
    std::thread::sleep(Duration::from_secs(3));

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let served = ok.load(Ordering::Relaxed);
    let failed = failures.lock().unwrap().clone();
    eprintln!(
        "upgrade under load: {served} requests ok, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(served > 100, "too little load to prove anything: {served}");
    assert_eq!(
        nginx_pid(&scene),
        master,
        "nginx was restarted instead of adopted"
    );
    for log in ["berth-2.log", "berth-3.log"] {
        let text = std::fs::read_to_string(scene.state.path().join(log)).unwrap();
        assert!(!text.contains("ERROR"), "{log}: {text}");
    }
    signal(&berth, "TERM");
    wait_exit(&mut berth);
}
