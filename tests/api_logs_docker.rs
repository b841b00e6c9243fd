//! App logs through the status API and `berth logs`, against the real Docker engine: a
//! worker app of two replicas whose containers print numbered lines (one carrying a secret
//! env value) is applied by a real controller; the API (on 127.0.0.1, behind a token)
//! serves its lines with a replica prefix, redacted; `--tail`, `--since` and `-f` work
//! through the CLI; a follow ends when the client leaves. Own instance label, cleaned up by
//! the `Scene`'s guards, also on failure.

mod support;

use berth::api::{self, ApiConfig};
use berth::reconcile;
use berth::runtime::ContainerObserver;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::Scene;
use tokio::io::AsyncBufReadExt;

const TOKEN: &str = "logs-t0ken";
const SECRET: &str = "hunter2-in-the-logs";

/// Prints `line N` every 200 ms, and the password once at start (`API_PASSWORD=...` and the
/// bare value).
fn spec() -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: chatty
spec:
  type: worker
  image: berth-demo:v1
  command: ["/bin/busybox", "sh", "-c", "echo starting with API_PASSWORD=$API_PASSWORD; echo raw $API_PASSWORD >&2; i=0; while true; do i=$((i+1)); echo line $i; /bin/busybox sleep 0.2; done"]
  env:
    - name: API_PASSWORD
      value: {SECRET}
  replicas: 2
  termination:
    drainSeconds: 0
"#
    )
}

async fn berth(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_API_TOKEN", TOKEN)
        .env_remove("BERTH_API")
        .output()
        .await
        .expect("run berth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_through_the_api_and_the_cli() {
    let scene = Scene::new("api-logs");
    std::fs::write(scene.specs.path().join("chatty.yaml"), spec()).unwrap();
    let settings = scene.dir_settings();
    let ctl = scene.controller_with(settings).await;
    reconcile::run_pass(&ctl, "test").await.unwrap();
    let names: Vec<String> = ctl
        .runtime()
        .observe()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.app == "chatty")
        .map(|c| c.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let router = api::router(
        ctl.clone(),
        &ApiConfig {
            token: Some(TOKEN.to_string()),
        },
    );
    let server = tokio::spawn(api::serve(listener, router, std::future::pending()));
    // Let each replica print a few lines.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Everything: both replicas, prefixed, the secret redacted in both forms.
    let out = berth(&["logs", "chatty", "--api", &address]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains(SECRET), "{text}");
    for name in &names {
        assert!(
            text.contains(&format!("{name} | starting with API_PASSWORD=<redacted>")),
            "{text}"
        );
        assert!(text.contains(&format!("{name} | raw <redacted>")), "{text}");
        assert!(text.contains(&format!("{name} | line 3")), "{text}");
    }
    for line in text.lines() {
        let prefix = line.split(" | ").next().unwrap();
        assert!(names.iter().any(|n| n == prefix), "{line}");
    }

    // --tail N: N lines per replica, the newest.
    let out = berth(&["logs", "chatty", "--api", &address, "--tail", "2"]).await;
    let tail = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(tail.lines().count(), 4, "{tail}");
    assert!(!tail.contains("starting with"), "{tail}");

    // --since in the future of every line: nothing; a wide window: everything.
    let future = (berth::clock::now_ms() + 3_600_000).to_string();
    let out = berth(&["logs", "chatty", "--api", &address, "--since", &future]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let out = berth(&["logs", "chatty", "--api", &address, "--since", "10m"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("starting with"));

    // Without the token: refused, nothing printed.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", "chatty", "--api", &address])
        .env_remove("BERTH_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );

    // -f: lines written after the command started arrive; the stream ends when the
    // client leaves.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", "chatty", "--api", &address, "-f", "--tail", "1"])
        .env("BERTH_API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut numbers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while numbers.len() < 12 && Instant::now() < deadline {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("a followed line within 5 s")
            .unwrap()
            .expect("the follow does not end while the replicas run");
        assert!(!line.contains(SECRET), "{line}");
        if let Some(n) = line.split(" | line ").nth(1) {
            numbers.push(n.parse::<u32>().unwrap());
        }
    }
    assert!(numbers.len() >= 12, "{numbers:?}");
    assert_eq!(api::logs::open_follows(), 1);
    child.kill().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while api::logs::open_follows() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api::logs::open_follows(),
        0,
        "the server still streams to a client that left"
    );
    server.abort();
}
