//! The `berth` binary end to end: validate (ok, malformed, hostile, entries it cannot read),
//! plan exit codes and output, schema, and `serve` converging then leaving containers
//! running on SIGTERM.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{ensure_images, http_get, path_with_sbin, unique_name, DockerCleanup};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run berth")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn examples() -> String {
    format!("{}/examples/apps", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_accepts_the_examples() {
    let out = berth(&["validate", &examples()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
}

#[test]
fn validate_names_file_line_column_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: App\nmetadata:\n  name: bad\nspec:\n  image: x:1\n  ports:\n    - containerPort: 8080\n  replicas: many\n",
    )
    .unwrap();
    let out = berth(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let expected_prefix = format!("{}:9:", file.display());
    assert!(text.contains(&expected_prefix), "{text}");
    assert!(text.contains("spec.replicas"), "{text}");

    let json = berth(&["validate", "-o", "json", file.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["valid"], false);
    assert_eq!(value["issues"][0]["line"], 9);
    assert_eq!(value["issues"][0]["field"], "spec.replicas");
}

#[test]
fn validate_rejects_an_alias_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for name in names {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = name;
    }
    std::fs::write(dir.path().join("bomb.yaml"), bomb).unwrap();
    let out = berth(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("bomb.yaml:"), "{}", stdout(&out));
}

#[test]
fn validate_fails_on_entries_it_cannot_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(format!("{}/web.yaml", examples())).unwrap();
    std::fs::write(dir.path().join("web.yaml"), &good).unwrap();
    // A name that is not UTF-8, and a directory past the depth cap (16 levels).
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
    std::fs::write(dir.path().join(odd), "x: 1").unwrap();
    let deep: std::path::PathBuf = (0..17).map(|_| "d").collect();
    std::fs::create_dir_all(dir.path().join(&deep)).unwrap();
    std::fs::write(dir.path().join(&deep).join("lost.yaml"), &good).unwrap();

    let out = berth(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let root = dir.path().display();
    assert!(
        text.contains(&format!(
            "{root}/caf\u{FFFD}.yaml:1:1: the name is not valid UTF-8"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{root}/{}:1:1: the directory is nested deeper than 16 levels",
            deep.display()
        )),
        "{text}"
    );
    assert!(text.contains("2 problems found"), "{text}");

    let json = berth(&["validate", "-o", "json", dir.path().to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["valid"], false);
    assert_eq!(value["issues"].as_array().unwrap().len(), 2, "{value}");
    assert_eq!(value["apps"], serde_json::json!(["web"]));
}

#[test]
fn plan_against_an_empty_host_exits_2_and_shows_creates() {
    let out = berth(&["plan", "--observed-empty", "--dir", &examples()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("  + web: create container (image berth-demo:v1"),
        "{text}"
    );
    assert!(text.contains("  ~ web: proxy web.loc"), "{text}");
    assert!(text.contains("plan: "), "{text}");
    let json = berth(&[
        "plan",
        "--observed-empty",
        "--dir",
        &examples(),
        "-o",
        "json",
    ]);
    assert_eq!(json.status.code(), Some(2));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(value["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "create"));
}

#[test]
fn plan_on_a_missing_dir_exits_1() {
    let out = berth(&["plan", "--observed-empty", "--dir", "/nonexistent/berth"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/berth"));
}

#[test]
fn schema_is_json_schema() {
    let out = berth(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(value["$schema"].is_string(), "{value}");
    assert!(value.to_string().contains("containerPort"));
}

#[test]
fn serve_converges_and_sigterm_leaves_containers_running() {
    ensure_images();
    let instance = unique_name("cli-serve");
    let network = instance.clone();
    let _cleanup = DockerCleanup::new(&instance);
    let state = tempfile::tempdir().unwrap();
    let specs = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(&examples()).join("web.yaml"),
        specs.path().join("web.yaml"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "serve",
            "--dir",
            specs.path().to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--instance",
            &instance,
            "--network",
            &network,
            "--interval",
            "1",
            "--api-listen",
            "off",
        ])
        .env("PATH", path_with_sbin())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(state.path().join("berth.log")).unwrap())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap();
    let nginx_pid = state.path().join("nginx/nginx.pid");
    let _nginx = scopeguard(nginx_pid.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served = false;
    while Instant::now() < deadline {
        if let Ok((200, body)) = http_get(&format!("127.0.0.1:{port}"), "/web/", None) {
            assert_eq!(body, "v1\n");
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "berth serve did not serve /web/ within 60 s");
    // Let the pass that made it serve finish (its reload confirmation waits for nginx's old
    // workers to leave the socket) so SIGTERM lands between passes, as in normal operation.
    std::thread::sleep(Duration::from_millis(500));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit_deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < exit_deadline,
            "berth did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let ps = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=berth.instance={instance}"),
        ])
        .output()
        .unwrap();
    assert!(
        !stdout(&ps).trim().is_empty(),
        "containers keep running after SIGTERM"
    );
    // nginx keeps serving too.
    let answer = http_get(&format!("127.0.0.1:{port}"), "/web/", None).unwrap();
    assert_eq!(
        answer.0,
        200,
        "{answer:?}; berth's log:\n{}\nnginx error log:\n{}\nconf.d: {:?}",
        std::fs::read_to_string(state.path().join("berth.log")).unwrap_or_default(),
        std::fs::read_to_string(state.path().join("nginx/logs/error.log")).unwrap_or_default(),
        std::fs::read_dir(state.path().join("nginx/conf.d"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default()
    );
}

/// Stops the private nginx started by a `berth serve` child when the test ends.
struct NginxStop(std::path::PathBuf);

impl Drop for NginxStop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-QUIT", pid.trim()]).status();
        }
    }
}

fn scopeguard(pid_file: std::path::PathBuf) -> NginxStop {
    NginxStop(pid_file)
}
