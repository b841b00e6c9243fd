//! `/metrics` passes `promtool check metrics` (Debian package `prometheus`, installed by
//! scripts/setup.sh). Fails, never skips, when promtool is missing.

mod api_support;

use api_support::{fixture, get};
use berth::api::{self, ApiConfig};
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool() -> String {
    for candidate in ["promtool", "/usr/bin/promtool", "/usr/local/bin/promtool"] {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return candidate.to_string();
        }
    }
    panic!(
        "promtool is not installed: run scripts/setup.sh (apt-get install prometheus); \
         this test checks /metrics with it and fails instead of skipping on purpose"
    );
}

#[tokio::test]
async fn metrics_pass_promtool_check_metrics() {
    let promtool = promtool();
    let f = fixture().await;
    let m = &f.ctl.counters();
    m.pass_finished(std::time::Duration::from_millis(40), true);
    m.pass_finished(std::time::Duration::from_secs(400), false);
    for kind in ["create", "replace", "remove", "write-proxy", "remove-proxy"] {
        m.steps_applied(kind, 1);
    }
    m.steps_failed("create", 1);
    m.nginx_reloads(3);
    m.nginx_reload_failed();
    m.source_error();
    m.event("created");
    m.event("proxy-reloaded");
    m.scaling_decision("api", 2, 3);
    m.scaling_decision("api", 3, 2);
    m.nginx_member_pushes(4);
    let mut requests = berth::metrics::RequestTally::default();
    requests.add("web", 200, 0.012);
    requests.add("web", 200, 0.7);
    requests.add("web", 503, 0.0);
    requests.add("api", 404, 42.0);
    m.add_requests(requests);
    let router = api::router(f.ctl.clone(), &ApiConfig::default());
    let answer = get(&router, "/metrics").await;
    assert_eq!(answer.status, 200);
    let text = answer.body.clone();
    assert!(
        text.contains(r#"berth_app_requests_total{app="web",code="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"berth_app_request_duration_seconds_bucket{app="web",le="0.025"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"berth_app_request_duration_seconds_count{app="api"} 1"#),
        "{text}"
    );

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics complained (exit {:?}):\n{report}\n--- metrics ---\n{}",
        out.status.code(),
        answer.body
    );
}
