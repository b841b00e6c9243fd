//! `berth status` against a real API server on loopback (the fixture's controller, no
//! Docker), the token on the client side, and `--log-format json` with redacted logs.

mod api_support;

use api_support::{assert_no_secrets, fixture};
use berth::api::{self, ApiConfig};
use std::process::Output;

async fn berth(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env_remove("BERTH_API_TOKEN")
        .env_remove("BERTH_API")
        .env("RUST_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().await.expect("run berth")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Serves the fixture on 127.0.0.1:<ephemeral> until the test ends.
async fn server(token: Option<&str>) -> (String, api_support::Fixture) {
    let f = fixture().await;
    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let router = api::router(
        f.ctl.clone(),
        &ApiConfig {
            token: token.map(str::to_string),
        },
    );
    tokio::spawn(api::serve(listener, router, std::future::pending()));
    (address, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_table_and_json() {
    let (address, _f) = server(None).await;
    let out = berth(&["status", "--api", &address], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("APP "), "{text}");
    for column in [
        "STATUS",
        "READY",
        "REPLICAS FROM",
        "REVISION",
        "RECONCILED",
        "SOURCE",
    ] {
        assert!(lines[0].contains(column), "{column}: {text}");
    }
    let web = lines.iter().find(|l| l.starts_with("web ")).expect(&text);
    assert!(
        web.contains("synced") && web.contains("2/2") && web.contains("web.yaml"),
        "{web}"
    );
    let api_line = lines.iter().find(|l| l.starts_with("api ")).expect(&text);
    assert!(
        api_line.contains("failed-rollout") && api_line.contains("0/3"),
        "{api_line}"
    );
    assert!(text.contains("4 apps; revision rev2"), "{text}");
    assert_no_secrets("berth status", &text);

    let json = berth(
        &[
            "status",
            "--api",
            &format!("http://{address}/"),
            "-o",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["apps"].as_array().unwrap().len(), 4);

    let one = berth(&["status", "api", "--api", &address, "--events", "3"], &[]).await;
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let text = stdout(&one);
    for needle in [
        "failed-rollout\n",
        "effective 3, from bounds, override asked 5, bounds 1..3 (auto)",
        "CONTAINERS",
        "127.0.0.1:32003",
        "RECENT EVENTS",
        "runtime-error",
        "DB_PASSWORD=<redacted>",
        "PLANNED AT THE LAST PASS",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    assert_no_secrets("berth status api", &text);
    let events_shown = text
        .split("RECENT EVENTS\n")
        .nth(1)
        .unwrap()
        .lines()
        .count();
    assert_eq!(events_shown, 3, "{text}");

    let one_json = berth(&["status", "web", "--api", &address, "-o", "json"], &[]).await;
    let value: serde_json::Value = serde_json::from_slice(&one_json.stdout).unwrap();
    assert_eq!(value["app"]["name"], "web");
    assert_eq!(value["events"].as_array().unwrap().len(), 10);

    let missing = berth(&["status", "nope", "--api", &address], &[]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("answered 404: app \"nope\" not found"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sends_the_token_from_env_or_file() {
    let (address, _f) = server(Some("s3cr3t-t0ken")).await;
    let denied = berth(&["status", "--api", &address], &[]).await;
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains("answered 401: missing or wrong bearer token"),
        "{}",
        stderr(&denied)
    );
    let env = berth(
        &["status", "--api", &address],
        &[("BERTH_API_TOKEN", "s3cr3t-t0ken")],
    )
    .await;
    assert_eq!(env.status.code(), Some(0), "{}", stderr(&env));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cr3t-t0ken\n").unwrap();
    let from_file = berth(
        &[
            "status",
            "--api",
            &address,
            "--api-token-file",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(from_file.status.code(), Some(0), "{}", stderr(&from_file));
}

#[tokio::test]
async fn unreachable_api_is_a_clear_error_and_json_logs_are_json() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let human = berth(&["status", "--api", &address], &[]).await;
    assert_eq!(human.status.code(), Some(1));
    let text = stderr(&human);
    assert!(
        text.starts_with(&format!("error: cannot reach the berth api at {address}")),
        "{text}"
    );
    assert!(text.contains("is `berth serve` running?"), "{text}");

    let json = berth(
        &["--log-format", "json", "status", "--api", &address],
        &[("RUST_LOG", "debug")],
    )
    .await;
    assert_eq!(json.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stderr(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "a debug line and the error: {lines:?}");
    let error = lines.last().unwrap();
    assert_eq!(error["level"], "ERROR");
    assert!(error["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot reach the berth api"));
}

#[tokio::test]
async fn logs_and_errors_are_redacted() {
    let missing = "/nonexistent/API_KEY=hunter2";
    for format in ["human", "json"] {
        let out = berth(
            &[
                "--log-format",
                format,
                "status",
                "--api-token-file",
                missing,
            ],
            &[],
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        let text = stderr(&out);
        assert!(text.contains("API_KEY=<redacted>"), "{format}: {text}");
        assert_no_secrets(format, &text);
    }
}
