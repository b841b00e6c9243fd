//! The `berth` binary's config file and `berth doctor`: precedence flag > env > file >
//! default as `berth config show` reports it, file errors with line numbers, completions
//! and man pages; doctor green on this machine and failing, with what to fix, on a missing
//! nginx binary or a state dir it cannot write (text and `-o json`).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::{free_port, path_with_sbin};

fn berth(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env("PATH", path_with_sbin())
        .env_remove("BERTH_LISTEN")
        .env_remove("BERTH_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run berth")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `listen` entry of `berth config show -o json`: (value, origin kind).
fn shown_listen(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = berth(args, env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "listen")
        .unwrap()
        .clone();
    (
        key["values"][0].as_str().unwrap().to_string(),
        key["origin"]["kind"].as_str().unwrap().to_string(),
    )
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "# test\nlisten = \"127.0.0.1:1111\"\n").unwrap();
    let f = file.to_str().unwrap();
    let env = [("BERTH_LISTEN", "127.0.0.1:2222")];
    assert_eq!(
        shown_listen(
            &[
                "--config",
                f,
                "config",
                "show",
                "-o",
                "json",
                "--listen",
                "127.0.0.1:3333"
            ],
            &env
        ),
        ("127.0.0.1:3333".into(), "flag".into())
    );
    assert_eq!(
        shown_listen(&["--config", f, "config", "show", "-o", "json"], &env),
        ("127.0.0.1:2222".into(), "env".into())
    );
    assert_eq!(
        shown_listen(&["--config", f, "config", "show", "-o", "json"], &[]),
        ("127.0.0.1:1111".into(), "file".into())
    );
    // BERTH_CONFIG names the file too; `none` reads no file.
    assert_eq!(
        shown_listen(&["config", "show", "-o", "json"], &[("BERTH_CONFIG", f)]),
        ("127.0.0.1:1111".into(), "file".into())
    );
    assert_eq!(
        shown_listen(&["--config", "none", "config", "show", "-o", "json"], &[]),
        ("127.0.0.1:8080".into(), "default".into())
    );
    // The text form says where each value came from.
    let out = berth(&["--config", f, "config", "show"], &env);
    let shown = text(&out);
    assert!(shown.contains(&format!("# config file: {f}")), "{shown}");
    assert!(shown.contains("listen = \"127.0.0.1:2222\""), "{shown}");
    assert!(shown.contains("# env BERTH_LISTEN"), "{shown}");
    assert!(shown.contains("interval = 5"), "{shown}");
    assert!(shown.contains("# default"), "{shown}");
}

#[test]
fn file_errors_name_the_line_and_stop_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "state-dir = \"/tmp\"\n\nlistn = \"127.0.0.1:1\"\n").unwrap();
    let f = file.to_str().unwrap();
    for args in [
        vec!["--config", f, "serve"],
        vec!["--config", f, "config", "show"],
    ] {
        let out = berth(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = text(&out);
        assert!(
            err.contains(&format!(
                "{f}:3:1: unknown key `listn` (did you mean `listen`?)"
            )),
            "{err}"
        );
    }
    std::fs::write(&file, "interval = \"often\"\n").unwrap();
    let out = berth(&["--config", f, "config", "show"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!("{f}:1:1: interval: invalid value 'often'")),
        "{}",
        text(&out)
    );
    let out = berth(
        &["--config", "/nonexistent/berth.toml", "config", "show"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot read config file /nonexistent/berth.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    for (shell, needle) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let out = berth(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(
            script.contains("doctor") && script.contains("state-dir"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = berth(&["man", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(dir.path().join("berth.1")).unwrap();
    assert!(page.contains(".TH berth 1"), "{page}");
    let serve = std::fs::read_to_string(dir.path().join("berth-serve.1")).unwrap();
    assert!(serve.contains("state\\-dir"), "{serve}");
}

fn doctor_args(state: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--config",
        "none",
        "doctor",
        "--dir",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps"),
        "--state-dir",
        state.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--listen".into());
    args.push(format!("127.0.0.1:{}", free_port()));
    args.push("--api-listen".into());
    args.push(format!("127.0.0.1:{}", free_port()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn doctor_is_green_on_this_machine() {
    let state = tempfile::tempdir().unwrap();
    let args = doctor_args(state.path(), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    for name in [
        "docker",
        "network",
        "nginx",
        "lua-module",
        "port",
        "state-dir",
        "store",
        "source",
        "registry",
        "clock",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "no {name} line: {report}"
        );
    }
    assert!(
        report.contains("ready: berth serve can run on this host"),
        "{report}"
    );
    assert!(!report.contains("FAIL"), "{report}");
    // The store check reads an existing database without changing it.
    let mut json_args = args.clone();
    json_args.extend(["-o", "json"]);
    let out = berth(&json_args, &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true, "{json}");
}

#[test]
fn doctor_fails_and_says_what_to_fix() {
    let state = tempfile::tempdir().unwrap();
    let args = doctor_args(state.path(), &["--nginx-binary", "/nonexistent/nginx"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args, &[]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = report
        .lines()
        .find(|l| l.starts_with("FAIL  nginx"))
        .expect(&report);
    assert!(line.contains("/nonexistent/nginx"), "{line}");
    assert!(
        line.contains("install nginx") && line.contains("--nginx-binary"),
        "{line}"
    );
    assert!(report.contains("1 checks failed"), "{report}");

    // A state dir nobody can write (not even root): under /proc.
    let mut args = doctor_args(Path::new("/proc/1/berth-state"), &["-o", "json"]);
    args.retain(|a| !a.is_empty());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    let check = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "state-dir")
        .unwrap();
    assert_eq!(check["status"], "fail", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains("chown"),
        "{check}"
    );

    // doctor reads the config file like serve does.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "nginx-binary = \"/nonexistent/from-file\"\n").unwrap();
    let out = berth(
        &[
            "--config",
            file.to_str().unwrap(),
            "doctor",
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/from-file"),
        "{}",
        text(&out)
    );
}

#[test]
fn doctor_fetches_a_git_source_into_a_temporary_mirror() {
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@localhost")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@localhost")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps/web.yaml"),
        repo.path().join("web.yaml"),
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "web"]);
    let state = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());
    let mut args = doctor_args(state.path(), &["--git", &url, "-o", "json"]);
    // doctor_args gives --dir; a --git source replaces it.
    let at = args.iter().position(|a| a == "--dir").unwrap();
    args.drain(at..at + 2);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args_ref, &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "source")
        .unwrap()
        .clone();
    assert_eq!(source["status"], "ok", "{source}");
    assert!(
        source["detail"].as_str().unwrap().contains("reachable"),
        "{source}"
    );
    // The mirror was temporary: nothing was written into the state dir.
    assert!(!state.path().join("git").exists());

    let missing = format!("file://{}/nothing-here", repo.path().display());
    let args: Vec<String> = args
        .into_iter()
        .map(|a| if a == url { missing.clone() } else { a })
        .collect();
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args_ref, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "source")
        .unwrap()
        .clone();
    assert_eq!(source["status"], "fail", "{source}");
}

/// The `store` check of `berth doctor -o json` on this state dir: (status, detail).
fn store_check(state: &Path) -> (String, String) {
    let mut args = doctor_args(state, &["-o", "json"]);
    args.retain(|a| !a.is_empty());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = berth(&args, &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "store")
        .unwrap()
        .clone();
    (
        check["status"].as_str().unwrap().to_string(),
        check["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn doctor_reads_the_store_without_changing_it() {
    // A real store, made by berth itself (plan opens and migrates it).
    let state = tempfile::tempdir().unwrap();
    let out = berth(
        &[
            "--config",
            "none",
            "plan",
            "--dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps"),
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(2),
        "{}",
        text(&out)
    );
    let db = state.path().join("berth.db");
    let before = std::fs::read(&db).unwrap();
    let (status, detail) = store_check(state.path());
    assert_eq!(status, "ok", "{detail}");
    assert!(detail.contains("migrations applied"), "{detail}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "doctor changed the store"
    );

    // A file that is not a SQLite database fails, saying what to do.
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("berth.db"), "not a database, just text").unwrap();
    let (status, detail) = store_check(broken.path());
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("move it away"), "{detail}");
}

#[test]
fn doctor_reads_registry_credentials_like_the_pulls_do() {
    let state = tempfile::tempdir().unwrap();
    let docker = tempfile::tempdir().unwrap();
    let dir = docker.path().to_str().unwrap();
    let registry = |config: &str| {
        std::fs::write(docker.path().join("config.json"), config).unwrap();
        let mut args = doctor_args(state.path(), &["--docker-config", dir, "-o", "json"]);
        args.retain(|a| !a.is_empty());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = berth(&args, &[]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "registry")
            .unwrap()
            .clone()
    };
    let found = registry(r#"{"auths": {"127.0.0.1:5000": {"auth": "dTpw"}}}"#);
    assert_eq!(found["status"], "ok", "{found}");
    assert!(
        found["detail"].as_str().unwrap().contains("1 registries"),
        "{found}"
    );
    assert!(!found.to_string().contains("dTpw"), "{found}");
    let none = registry("{}");
    assert_eq!(none["status"], "warn", "{none}");
    let broken = registry("{not json");
    assert_eq!(broken["status"], "fail", "{broken}");
}
