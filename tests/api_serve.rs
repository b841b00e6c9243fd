//! `berth serve` with its status API against the real engine and a real nginx: the API is
//! up next to the loop, reports the app once it converged, `berth status` reads it, the
//! token is enforced, secrets stay out of answers and JSON logs, and SIGTERM stops both.
//! Needs Docker (fails with a clear message, never skips, without it).

mod support;

use berth::api::client::Client;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{ensure_images, free_port, path_with_sbin, unique_name, DockerCleanup};

const TOKEN: &str = "serve-t0ken";

/// Stops the private nginx the child started, and the child itself, when the test ends.
struct Guard {
    pid_file: std::path::PathBuf,
    child: std::process::Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").args(["-QUIT", pid.trim()]).status();
        }
    }
}

fn raw_request(address: &str, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_api_next_to_the_loop() {
    ensure_images();
    let instance = unique_name("api-serve");
    let _cleanup = DockerCleanup::new(&instance);
    let state = tempfile::tempdir().unwrap();
    let specs = tempfile::tempdir().unwrap();
    let web = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps/web.yaml"),
    )
    .unwrap();
    let env_marker = "  env:\n";
    assert!(
        web.contains(env_marker),
        "examples/apps/web.yaml has an env list"
    );
    let web = web.replacen(
        env_marker,
        "  env:\n    - name: DB_PASSWORD\n      value: hunter2\n",
        1,
    );
    std::fs::write(specs.path().join("web.yaml"), web).unwrap();
    let api_address = format!("127.0.0.1:{}", free_port());
    let log_path = state.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--dir",
            specs.path().to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--instance",
            &instance,
            "--network",
            &instance,
            "--interval",
            "1",
            "--api-listen",
            &api_address,
        ])
        .env("BERTH_API_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .env("PATH", path_with_sbin())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard {
        pid_file: state.path().join("nginx/nginx.pid"),
        child,
    };

    let client = Client::new(&api_address, Some(TOKEN.into()), Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(90);
    let web = loop {
        if let Ok(list) = client.get("/api/v1/apps").await {
            let web = list["apps"]
                .as_array()
                .and_then(|apps| apps.iter().find(|a| a["name"] == "web").cloned());
            if let Some(web) = web.filter(|w| w["status"] == "synced") {
                break web;
            }
        }
        assert!(
            Instant::now() < deadline,
            "web not synced through the api within 90 s; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(web["ready_replicas"], web["desired_replicas"]);
    assert_eq!(web["source_file"], "web.yaml");
    assert_eq!(client.get("/readyz").await.unwrap()["ready"], true);

    let detail = client.get("/api/v1/apps/web").await.unwrap();
    let container = &detail["containers"][0];
    assert_eq!(container["health"], "healthy", "{detail}");
    assert!(container["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let body = detail.to_string();
    assert!(!body.contains("hunter2"), "{body}");
    assert!(body.contains("<redacted>"), "{body}");

    let plan = client.get("/api/v1/plan").await.unwrap();
    assert!(plan["steps"].is_array(), "{plan}");

    let denied = Client::new(&api_address, None, Duration::from_secs(5))
        .get("/api/v1/apps")
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("answered 401"), "{denied}");
    let post = raw_request(
        &api_address,
        "POST /api/v1/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["status", "--api", &api_address])
        .env("BERTH_API_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert_eq!(status.status.code(), Some(0));
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("synced")),
        "{table}"
    );

    let metrics = raw_request(
        &api_address,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("\nberth_app_replicas_ready{app=\"web\"} "),
        "{metrics}"
    );
    let passes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_reconcile_passes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(passes >= 1, "{metrics}");
    assert!(metrics.contains("berth_reconcile_steps_applied_total{kind=\"create\"} "));

    // SIGTERM stops the loop and the api together.
    let pid = guard.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit_deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < exit_deadline,
            "berth did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        std::net::TcpStream::connect(&api_address).is_err(),
        "the api stopped with the loop"
    );

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("status api listening"), "{log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("log line is not json ({e}): {line}"));
    }
}
