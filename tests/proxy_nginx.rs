//! The proxy adapter against a real nginx (private mode): start, adopt, apply a batch with
//! one reload, reject a bad batch and restore the previous files, no reload when nothing
//! changed, restart after nginx is killed. Traffic only to 127.0.0.1.

mod support;

use berth::plan::render;
use berth::proxy::{Proxy, ProxyError};
use berth::spec::{AppSpec, AppType, Resources, Route, Termination};
use std::io::{Read, Write};
use std::time::Duration;
use support::{free_port, nginx_binary};

struct Running {
    proxy: Proxy,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let berth::proxy::ProxyMode::Private { prefix, .. } = &self.proxy.mode {
            if let Ok(pid) = std::fs::read_to_string(prefix.join("nginx.pid")) {
                let _ = std::process::Command::new("kill")
                    .args(["-QUIT", pid.trim()])
                    .status();
            }
        }
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let proxy = support::test_upstreams(Proxy::private(
        dir.path().join("nginx"),
        format!("127.0.0.1:{port}"),
        nginx_binary(),
    ))
    .await;
    assert!(proxy.ensure_running().await.unwrap(), "first start");
    Running {
        proxy,
        port,
        _dir: dir,
    }
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn app(name: &str) -> AppSpec {
    AppSpec {
        name: name.into(),
        app_type: AppType::Http,
        image: "x".into(),
        image_pull_policy: berth::spec::ImagePullPolicy::IfNotPresent,
        command: None,
        ports: vec![8080],
        health: None,
        resources: Resources::default(),
        replicas: Some(1),
        scaling: None,
        env: vec![],
        termination: Termination {
            drain_seconds: 0,
            ..Default::default()
        },
        route: Some(Route {
            host: None,
            path: format!("/{name}"),
            strip_prefix: true,
            proxy: Default::default(),
            tls: None,
        }),
        workload: Default::default(),
    }
}

/// A tiny loopback HTTP server answering every request with `body`.
fn backend(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[tokio::test]
async fn batch_applies_with_one_reload_and_unchanged_text_does_not_reload() {
    let nginx = start().await;
    let upstream = backend("hello");
    let files = render::render_app(
        &app("hello"),
        &[format!("127.0.0.1:{upstream}")],
        nginx.proxy.listen(),
        &Default::default(),
        nginx.proxy.upstreams(),
    );
    let outcome = nginx.proxy.apply_files(&files, &[]).await.unwrap();
    assert_eq!((outcome.written, outcome.reloaded), (files.len(), true));
    // Reload is asynchronous in nginx: new workers pick the config up within moments.
    let mut served = (0, String::new());
    for _ in 0..50 {
        served = get(nginx.port, "/hello/");
        if served.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, (200, "hello".to_string()));
    assert_eq!(get(nginx.port, "/_berth/nginx").0, 200);
    assert_eq!(get(nginx.port, "/nothing-here").0, 404);
    let again = nginx.proxy.apply_files(&files, &[]).await.unwrap();
    assert_eq!((again.written, again.reloaded), (0, false));
    // The access log is machine-readable JSON naming the app.
    let log = std::fs::read_to_string(nginx.proxy.access_log().unwrap()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("\"app\":\"hello\""))
        .expect(&log);
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["status"], 200);
    assert!(value["upstream"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn rejected_batch_restores_previous_files_and_keeps_serving() {
    let nginx = start().await;
    let upstream = backend("kept");
    let good = render::render_app(
        &app("kept"),
        &[format!("127.0.0.1:{upstream}")],
        nginx.proxy.listen(),
        &Default::default(),
        nginx.proxy.upstreams(),
    );
    nginx.proxy.apply_files(&good, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = nginx.proxy.current_files().await.unwrap();

    let bad = vec![
        ("kept.conf".to_string(), "upstream berth_kept {".to_string()),
        ("new.conf".to_string(), "# new file\n".to_string()),
    ];
    let result = nginx
        .proxy
        .apply_files(&bad, &["kept.loc".to_string()])
        .await;
    match result {
        Err(ProxyError::Rejected { message }) => {
            assert!(message.contains("kept.conf"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(nginx.proxy.current_files().await.unwrap(), before);
    assert_eq!(get(nginx.port, "/kept/"), (200, "kept".to_string()));
}

#[tokio::test]
async fn killed_nginx_is_started_again_with_its_config() {
    let nginx = start().await;
    let upstream = backend("back");
    let files = render::render_app(
        &app("back"),
        &[format!("127.0.0.1:{upstream}")],
        nginx.proxy.listen(),
        &Default::default(),
        nginx.proxy.upstreams(),
    );
    nginx.proxy.apply_files(&files, &[]).await.unwrap();
    let pid = nginx.proxy.running_pid().await.unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // The workers exit once their master is gone; wait for the port to be free.
    for _ in 0..100 {
        if nginx.proxy.running_pid().await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(nginx.proxy.running_pid().await.is_none());
    let mut restarted = false;
    for _ in 0..50 {
        match nginx.proxy.ensure_running().await {
            Ok(started) => {
                restarted = started;
                break;
            }
            // The killed master's workers may still hold the port for a moment.
            Err(e) => {
                eprintln!("not restarted yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    assert!(restarted);
    assert!(
        !nginx.proxy.ensure_running().await.unwrap(),
        "adopted, not restarted"
    );
    assert_eq!(get(nginx.port, "/back/"), (200, "back".to_string()));
}

#[tokio::test]
async fn external_mode_writes_into_the_conf_dir_and_runs_the_given_commands() {
    // An operator's nginx: here the private one, driven only through commands.
    let nginx = start().await;
    let berth::proxy::ProxyMode::Private { prefix, .. } = &nginx.proxy.mode else {
        unreachable!()
    };
    let args = |extra: &[&str]| {
        let mut words = vec![nginx_binary().display().to_string()];
        words.extend(berth::proxy::private_args(prefix, extra));
        words
    };
    let mut external = Proxy::external(
        prefix.join("conf.d"),
        nginx.proxy.listen().to_string(),
        args(&["-t", "-q"]),
        args(&["-s", "reload"]),
    );
    if nginx.proxy.upstreams() == berth::proxy::Upstreams::Dynamic {
        // The operator's nginx loads the Lua module itself.
        external = external.with_dynamic_upstreams(Vec::new());
    }
    assert!(
        !external.ensure_running().await.unwrap(),
        "external mode starts nothing"
    );
    let upstream = backend("external");
    let files = render::render_app(
        &app("ext"),
        &[format!("127.0.0.1:{upstream}")],
        external.listen(),
        &Default::default(),
        external.upstreams(),
    );
    let outcome = external.apply_files(&files, &[]).await.unwrap();
    assert!(outcome.reloaded);
    let mut served = (0, String::new());
    for _ in 0..50 {
        served = get(nginx.port, "/ext/");
        if served.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, (200, "external".to_string()));
    let bad = external
        .apply_files(&[("ext.conf".to_string(), "nonsense;".to_string())], &[])
        .await;
    assert!(matches!(bad, Err(ProxyError::Rejected { .. })), "{bad:?}");
    assert_eq!(
        external.current_files().await.unwrap()["ext.conf"],
        files[0].1
    );
}

fn generation(proxy: &Proxy) -> u64 {
    let berth::proxy::ProxyMode::Private { prefix, .. } = &proxy.mode else {
        unreachable!()
    };
    let text = std::fs::read_to_string(prefix.join("generation.conf")).unwrap();
    text.split('"').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn concurrent_changes_share_one_reload_and_a_bad_one_is_isolated() {
    let nginx = start().await;
    let upstream = backend("many");
    let first = render::render_app(
        &app("first"),
        &[],
        nginx.proxy.listen(),
        &Default::default(),
        nginx.proxy.upstreams(),
    );
    nginx.proxy.submit(first, Vec::new()).await.unwrap();
    let before = generation(&nginx.proxy);
    let submits = (0..5).map(|i| {
        let files = render::render_app(
            &app(&format!("app{i}")),
            &[format!("127.0.0.1:{upstream}")],
            nginx.proxy.listen(),
            &Default::default(),
            nginx.proxy.upstreams(),
        );
        nginx.proxy.submit(files, Vec::new())
    });
    let results = futures_util::future::join_all(submits).await;
    assert!(
        results.iter().all(|r| r.as_ref().is_ok_and(|o| o.reloaded)),
        "{results:?}"
    );
    assert_eq!(
        generation(&nginx.proxy),
        before + 1,
        "five changes, one reload"
    );
    assert_eq!(get(nginx.port, "/app3/"), (200, "many".to_string()));

    let good = render::render_app(
        &app("good"),
        &[format!("127.0.0.1:{upstream}")],
        nginx.proxy.listen(),
        &Default::default(),
        nginx.proxy.upstreams(),
    );
    let bad = vec![("bad.conf".to_string(), "upstream {".to_string())];
    let (good_result, bad_result) = tokio::join!(
        nginx.proxy.submit(good, Vec::new()),
        nginx.proxy.submit(bad, Vec::new())
    );
    assert!(good_result.is_ok(), "{good_result:?}");
    assert!(
        matches!(bad_result, Err(ProxyError::Rejected { .. })),
        "{bad_result:?}"
    );
    assert_eq!(get(nginx.port, "/good/"), (200, "many".to_string()));
    assert!(!nginx
        .proxy
        .current_files()
        .await
        .unwrap()
        .contains_key("bad.conf"));
}

#[tokio::test]
async fn oversized_logs_are_rotated_and_nginx_writes_a_fresh_one() {
    let nginx = start().await;
    let log = nginx.proxy.access_log().unwrap();
    let rotated_log = log.with_file_name("access.log.1");
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    for _ in 0..3 {
        assert_eq!(get(nginx.port, "/_berth/nginx").0, 200);
    }
    assert_eq!(lines(&log), 3);
    // Under the limit: nothing happens.
    assert!(nginx.proxy.rotate_logs(1 << 20).await.unwrap().is_empty());
    assert!(!rotated_log.exists());

    let rotated = nginx.proxy.rotate_logs(10).await.unwrap();
    assert!(rotated.contains(&log), "{rotated:?}");
    assert_eq!(
        lines(&rotated_log),
        3,
        "the old lines moved to access.log.1"
    );
    // nginx reopens asynchronously: new requests end up in a fresh access.log.
    let mut fresh = 0;
    for _ in 0..100 {
        assert_eq!(get(nginx.port, "/_berth/nginx").0, 200);
        fresh = lines(&log);
        if fresh > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fresh > 0, "nginx never wrote a new access.log");
    let settled = lines(&rotated_log);
    assert_eq!(get(nginx.port, "/_berth/nginx").0, 200);
    assert_eq!(lines(&rotated_log), settled, "access.log.1 no longer grows");
    assert!(lines(&log) > fresh);
    // Rotating again replaces the previous generation.
    nginx.proxy.rotate_logs(10).await.unwrap();
    assert!(lines(&rotated_log) >= 2);
}

/// Dynamic mode only (`BERTH_TEST_PROXY_MODE=reload` runs the static path instead).
fn dynamic(nginx: &Running) -> bool {
    nginx.proxy.upstreams() == berth::proxy::Upstreams::Dynamic
}

fn members_files(nginx: &Running, name: &str, members: &[String]) -> Vec<(String, String)> {
    render::render_app(
        &app(name),
        members,
        nginx.proxy.listen(),
        &Default::default(),
        nginx.proxy.upstreams(),
    )
}

#[tokio::test]
async fn dynamic_member_changes_are_pushed_without_a_reload() {
    let nginx = start().await;
    if !dynamic(&nginx) {
        return;
    }
    let (one, two) = (backend("one"), backend("two"));
    let first = members_files(&nginx, "dyn", &[format!("127.0.0.1:{one}")]);
    let outcome = nginx.proxy.apply_files(&first, &[]).await.unwrap();
    assert!(outcome.reloaded, "a new app's config is a reload");
    assert_eq!(outcome.pushed, 1);
    assert_eq!(get(nginx.port, "/dyn/"), (200, "one".to_string()));
    let reloads = nginx.proxy.reloads();
    let pushes = nginx.proxy.pushes();

    // Swap the member: a push, confirmed, and no reload.
    let second = members_files(&nginx, "dyn", &[format!("127.0.0.1:{two}")]);
    let outcome = nginx.proxy.apply_files(&second, &[]).await.unwrap();
    assert_eq!(
        (outcome.written, outcome.pushed, outcome.reloaded),
        (1, 1, false)
    );
    assert_eq!(nginx.proxy.reloads(), reloads);
    assert_eq!(nginx.proxy.pushes(), pushes + 1);
    assert_eq!(
        nginx.proxy.held_members("dyn").await.unwrap().as_deref(),
        Some(second[2].1.as_str()),
        "nginx holds what the file says"
    );
    for _ in 0..5 {
        assert_eq!(get(nginx.port, "/dyn/"), (200, "two".to_string()));
    }

    // No member: 503 from the Lua check, still no reload.
    let none = members_files(&nginx, "dyn", &[]);
    nginx.proxy.apply_files(&none, &[]).await.unwrap();
    let (status, body) = get(nginx.port, "/dyn/");
    assert_eq!(status, 503);
    assert!(body.contains("no healthy replicas for app dyn"), "{body}");
    assert_eq!(nginx.proxy.reloads(), reloads);

    // Removing the app forgets its members in nginx too.
    let removes: Vec<String> = none.iter().map(|(f, _)| f.clone()).collect();
    nginx.proxy.apply_files(&[], &removes).await.unwrap();
    assert_eq!(nginx.proxy.held_members("dyn").await.unwrap(), None);
}

#[tokio::test]
async fn dynamic_refused_member_moves_on_to_the_next_within_the_request() {
    let nginx = start().await;
    if !dynamic(&nginx) {
        return;
    }
    let live = backend("live");
    let dead = free_port();
    let files = members_files(
        &nginx,
        "retry",
        &[format!("127.0.0.1:{dead}"), format!("127.0.0.1:{live}")],
    );
    nginx.proxy.apply_files(&files, &[]).await.unwrap();
    for _ in 0..10 {
        assert_eq!(get(nginx.port, "/retry/"), (200, "live".to_string()));
    }
}

#[tokio::test]
async fn dynamic_restarted_nginx_serves_the_members_from_the_file() {
    let nginx = start().await;
    if !dynamic(&nginx) {
        return;
    }
    let (old, new) = (backend("old"), backend("new"));
    let files = members_files(&nginx, "kept", &[format!("127.0.0.1:{old}")]);
    nginx.proxy.apply_files(&files, &[]).await.unwrap();
    let files = members_files(&nginx, "kept", &[format!("127.0.0.1:{new}")]);
    nginx.proxy.apply_files(&files, &[]).await.unwrap();
    let pid = nginx.proxy.running_pid().await.unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    for _ in 0..100 {
        if nginx.proxy.running_pid().await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut restarted = false;
    for _ in 0..50 {
        match nginx.proxy.ensure_running().await {
            Ok(started) => {
                restarted = started;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(restarted);
    let pushes = nginx.proxy.pushes();
    assert_eq!(
        nginx.proxy.held_members("kept").await.unwrap(),
        None,
        "a fresh nginx holds nothing until a request needs the app"
    );
    for _ in 0..3 {
        assert_eq!(get(nginx.port, "/kept/"), (200, "new".to_string()));
    }
    assert_eq!(
        nginx.proxy.pushes(),
        pushes,
        "served from the file, no push"
    );
}

/// A berth killed between a member push and its file write leaves nginx holding a list the
/// file does not show (and the next plan compares against the file). The next berth
/// adopting that nginx pushes what the files say before anything else.
#[tokio::test]
async fn dynamic_adopted_nginx_is_resynced_with_the_member_files() {
    let nginx = start().await;
    if !dynamic(&nginx) {
        return;
    }
    let (old, new) = (backend("old"), backend("new"));
    let old_files = members_files(&nginx, "kept", &[format!("127.0.0.1:{old}")]);
    nginx.proxy.apply_files(&old_files, &[]).await.unwrap();
    let new_files = members_files(&nginx, "kept", &[format!("127.0.0.1:{new}")]);
    nginx.proxy.apply_files(&new_files, &[]).await.unwrap();
    assert_eq!(get(nginx.port, "/kept/"), (200, "new".to_string()));

    // The killed berth's file write never happened: the file still has the old list.
    let (file, old_text) = old_files
        .iter()
        .find(|(file, _)| file.ends_with(".members"))
        .unwrap();
    std::fs::write(nginx.proxy.conf_dir().join(file), old_text).unwrap();

    // The next berth (a new proxy handle on the same prefix) adopts the running nginx.
    let berth::proxy::ProxyMode::Private { prefix, .. } = &nginx.proxy.mode else {
        unreachable!("start() makes a private proxy")
    };
    let next = support::test_upstreams(Proxy::private(
        prefix.clone(),
        nginx.proxy.listen().to_string(),
        nginx_binary(),
    ))
    .await;
    assert!(
        !next.ensure_running().await.unwrap(),
        "adopted, not started"
    );
    assert_eq!(
        next.held_members("kept").await.unwrap().as_deref(),
        Some(old_text.as_str()),
        "nginx holds what the file says"
    );
    for _ in 0..3 {
        assert_eq!(get(nginx.port, "/kept/"), (200, "old".to_string()));
    }
}

/// A berth killed after writing an app's config but before reloading leaves nginx on the
/// old config while the files already match the plan. The next berth adopting that nginx
/// sees a config file newer than the last reload and reloads once.
#[tokio::test]
async fn adopted_nginx_reloads_config_written_by_a_killed_berth() {
    let nginx = start().await;
    let first = backend("first");
    let files = members_files(&nginx, "first", &[format!("127.0.0.1:{first}")]);
    nginx.proxy.apply_files(&files, &[]).await.unwrap();
    assert_eq!(get(nginx.port, "/first/"), (200, "first".to_string()));

    // The killed berth wrote the files of a new app and never reloaded.
    let late = backend("late");
    std::thread::sleep(Duration::from_millis(20));
    for (file, text) in members_files(&nginx, "late", &[format!("127.0.0.1:{late}")]) {
        std::fs::write(nginx.proxy.conf_dir().join(file), text).unwrap();
    }
    assert_ne!(get(nginx.port, "/late/").0, 200, "not loaded yet");

    let berth::proxy::ProxyMode::Private { prefix, .. } = &nginx.proxy.mode else {
        unreachable!("start() makes a private proxy")
    };
    let next = support::test_upstreams(Proxy::private(
        prefix.clone(),
        nginx.proxy.listen().to_string(),
        nginx_binary(),
    ))
    .await;
    assert!(
        !next.ensure_running().await.unwrap(),
        "adopted, not started"
    );
    assert_eq!(next.reloads(), 1, "one reload for the pending files");
    assert_eq!(get(nginx.port, "/late/"), (200, "late".to_string()));
    assert_eq!(get(nginx.port, "/first/"), (200, "first".to_string()));
}
