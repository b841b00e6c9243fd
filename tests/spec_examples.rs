//! spec: the App specs in examples/apps (served by the demo) load without a single issue.

use berth::spec::{load_files, AppType, Probe, Route, ScalingMode};
use std::path::{Path, PathBuf};

fn example_files() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps");
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let rel = p.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(p);
            (rel, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn examples_load_without_issues() {
    let files = example_files();
    assert!(files.len() >= 3, "expected at least 3 example files");
    let loaded = load_files(&files);
    assert!(loaded.issues.is_empty(), "{:#?}", loaded.issues);
    assert!(loaded.unreadable_files.is_empty());
    for name in ["web", "worker", "api"] {
        assert!(loaded.apps.contains_key(name), "missing app {name}");
    }

    let (web, src) = &loaded.apps["web"];
    assert_eq!(src.file, Path::new("web.yaml"));
    assert_eq!(
        (web.app_type, web.image.as_str(), web.ports.as_slice()),
        (AppType::Http, "berth-demo:v1", &[8080u16][..])
    );
    let health = web.health.as_ref().expect("web health");
    assert_eq!(
        health.probe,
        Probe::HttpGet {
            path: "/healthz".into(),
            port: 8080
        }
    );
    assert_eq!(health.interval_seconds, 2);
    let scaling = web.scaling.as_ref().expect("web scaling");
    assert_eq!(
        (scaling.mode, scaling.min_replicas, scaling.max_replicas),
        (ScalingMode::Auto, 1, 4)
    );
    assert!(scaling.http.is_some());
    assert!(web.termination.drain_seconds <= 2);

    let (worker, _) = &loaded.apps["worker"];
    assert_eq!(
        (worker.app_type, worker.image.as_str(), worker.replicas),
        (AppType::Worker, "berth-demo:v1", Some(1))
    );
    assert_eq!(
        worker.command.as_deref(),
        Some(
            &[
                "/bin/busybox".to_string(),
                "sh".into(),
                "-c".into(),
                "while true; do sleep 5; done".into()
            ][..]
        )
    );
    assert!(worker.ports.is_empty() && worker.route.is_none());

    let (api, _) = &loaded.apps["api"];
    assert_eq!(
        (api.image.as_str(), api.replicas),
        ("berth-demo:v2", Some(2))
    );
    assert_eq!(
        api.route,
        Some(Route {
            host: Some("api.localhost".into()),
            path: "/".into(),
            strip_prefix: true,
            proxy: Default::default(),
            tls: None,
        })
    );
    assert!(api.termination.drain_seconds <= 2);
}

#[test]
fn the_shop_stack_uses_volumes_and_depends_on() {
    use berth::spec::{MountSource, Strategy};
    let loaded = load_files(&example_files());
    let (db, src) = &loaded.apps["shop-db"];
    assert_eq!(src.file, Path::new("shop.yaml"));
    assert_eq!(db.workload.strategy, Strategy::Recreate);
    assert_eq!(
        db.workload.volumes[0].source,
        MountSource::Named("data".into())
    );
    assert_eq!(db.workload.volumes[0].mount_path, "/www/data");
    assert_eq!(db.workload.volumes[1].source, MountSource::Tmpfs);
    assert!(db.workload.entrypoint.is_some() && db.command.is_some());
    assert_eq!(loaded.apps["shop-api"].0.workload.depends_on, ["shop-db"]);
    assert_eq!(loaded.apps["shop"].0.workload.depends_on, ["shop-api"]);
}
