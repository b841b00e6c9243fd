//! spec: the workload options (issue 12): the full example parses to the model; every rule
//! reports file:line and field; cross-app rules (dependsOn cycles and unknown apps, one host
//! port claimed by two apps) name both places; hostPath follows `--allow-host-path`, images
//! `--allow-registry`.

use berth::spec::{
    load_files, load_source_with, parse_file, spec_hash, Logging, Mount, MountSource, Protocol,
    PublishedPort, SpecPolicy, Strategy,
};
use std::path::{Path, PathBuf};

fn http_app(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  image: web:1\n  ports:\n  - containerPort: 8080\n{extra}"
    )
}

const FULL: &str = r#"apiVersion: v1
kind: App
metadata: {name: db}
spec:
  image: postgres:16
  entrypoint: ["/bin/app"]
  command: ["serve", "--port", "8080"]
  workingDir: /srv
  user: "1000:1000"
  volumes:
    - { name: data, mountPath: /var/lib/app }
    - { hostPath: /srv/media, mountPath: /media, readOnly: true }
    - { tmpfs: true, mountPath: /tmp }
  strategy: recreate
  ports:
    - { containerPort: 5432, hostPort: 15432, hostIP: 127.0.0.1, protocol: tcp }
  termination: { drainSeconds: 5, gracePeriodSeconds: 30, stopSignal: SIGTERM }
  labels: { team: payments }
  logging: { maxSize: 10Mi, maxFiles: 3 }
"#;

#[test]
fn the_issue_example_parses_with_the_host_path_allowed() {
    let policy = SpecPolicy {
        allow_host_paths: vec!["/srv".into()],
        ..SpecPolicy::default()
    };
    let loaded = load_source_with(
        &[(PathBuf::from("db.yaml"), FULL.to_string())],
        &[],
        &policy,
    );
    assert!(loaded.issues.is_empty(), "{:#?}", loaded.issues);
    let (app, _) = &loaded.apps["db"];
    let w = &app.workload;
    assert_eq!(w.entrypoint, Some(vec!["/bin/app".to_string()]));
    assert_eq!(app.command.as_ref().unwrap()[0], "serve");
    assert_eq!(w.working_dir.as_deref(), Some("/srv"));
    assert_eq!(w.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        w.volumes,
        vec![
            Mount {
                source: MountSource::Named("data".into()),
                mount_path: "/var/lib/app".into(),
                read_only: false
            },
            Mount {
                source: MountSource::HostPath("/srv/media".into()),
                mount_path: "/media".into(),
                read_only: true
            },
            Mount {
                source: MountSource::Tmpfs,
                mount_path: "/tmp".into(),
                read_only: false
            },
        ]
    );
    assert_eq!(w.strategy, Strategy::Recreate);
    assert_eq!(
        app.ports,
        vec![5432],
        "a tcp port of an http app is routed too"
    );
    assert_eq!(
        w.published,
        vec![PublishedPort {
            container_port: 5432,
            host_port: 15432,
            host_ip: "127.0.0.1".into(),
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(app.termination.grace_period_seconds, Some(30));
    assert_eq!(app.termination.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(w.labels["team"], "payments");
    assert_eq!(w.logging, Logging::default(), "10Mi x 3 are the defaults");

    // Without the prefix the same spec is refused at the hostPath's line.
    let loaded = load_files(&[(PathBuf::from("db.yaml"), FULL.to_string())]);
    assert!(loaded.apps.is_empty());
    let issue = &loaded.issues[0];
    assert_eq!(
        (issue.line, issue.field.as_str()),
        (12, "spec.volumes[1].hostPath")
    );
    assert!(issue.to_string().contains("--allow-host-path"), "{issue}");
}

#[test]
fn workload_defaults_keep_the_old_spec_hash() {
    let plain = parse_file(Path::new("a.yaml"), &http_app("")).apps[0]
        .0
        .clone();
    // The hash of this spec before issue 12 (image, command, env, ports, resources only).
    let mut with_defaults = plain.clone();
    with_defaults.workload.strategy = Strategy::Recreate;
    with_defaults.workload.depends_on = vec!["db".into()];
    with_defaults.termination.grace_period_seconds = Some(3);
    assert_eq!(
        spec_hash(&plain),
        spec_hash(&with_defaults),
        "strategy, dependsOn and the grace period never restart containers"
    );
    let mut labelled = plain.clone();
    labelled.workload.labels.insert("team".into(), "a".into());
    assert_ne!(spec_hash(&plain), spec_hash(&labelled));
    let mut mounted = plain.clone();
    mounted.workload.volumes.push(Mount {
        source: MountSource::Tmpfs,
        mount_path: "/tmp".into(),
        read_only: false,
    });
    assert_ne!(spec_hash(&plain), spec_hash(&mounted));
}

struct Case {
    what: &'static str,
    extra: &'static str,
    line: usize,
    field: &'static str,
    says: &'static str,
}

#[test]
#[rustfmt::skip]
fn every_workload_rule_names_line_and_field() {
    let cases = [
        Case { what: "reserved label", extra: "  labels:\n    berth.app: x\n", line: 10, field: "spec.labels.berth.app", says: "is reserved" },
        Case { what: "hostPort rolling", extra: "  - containerPort: 5432\n    hostPort: 15432\n", line: 10, field: "spec.ports[1].hostPort", says: "set `strategy: recreate`" },
        Case { what: "hostPort replicas", extra: "  - containerPort: 5432\n    hostPort: 15432\n  strategy: recreate\n  replicas: 2\n", line: 10, field: "spec.ports[1].hostPort", says: "one replica only" },
        Case { what: "hostIP alone", extra: "  - containerPort: 5432\n    hostIP: 0.0.0.0\n", line: 10, field: "spec.ports[1].hostIP", says: "needs a hostPort" },
        Case { what: "hostIP garbage", extra: "  - containerPort: 5432\n    hostPort: 1\n    hostIP: localhost\n  strategy: recreate\n", line: 11, field: "spec.ports[1].hostIP", says: "not an IP address" },
        Case { what: "udp unpublished", extra: "  - containerPort: 53\n    protocol: udp\n", line: 10, field: "spec.ports[1].protocol", says: "publish them with `hostPort`" },
        Case { what: "two sources", extra: "  volumes:\n  - name: data\n    tmpfs: true\n    mountPath: /d\n", line: 10, field: "spec.volumes[0]", says: "exactly one of" },
        Case { what: "relative mount", extra: "  volumes:\n  - name: data\n    mountPath: data\n", line: 11, field: "spec.volumes[0].mountPath", says: "not absolute" },
        Case { what: "dotdot mount", extra: "  volumes:\n  - name: data\n    mountPath: /a/../b\n", line: 11, field: "spec.volumes[0].mountPath", says: "not normalized" },
        Case { what: "mount twice", extra: "  volumes:\n  - name: a\n    mountPath: /d\n  - tmpfs: true\n    mountPath: /d\n", line: 13, field: "spec.volumes[1].mountPath", says: "mounted twice" },
        Case { what: "bad volume name", extra: "  volumes:\n  - name: Data_1\n    mountPath: /d\n", line: 10, field: "spec.volumes[0].name", says: "not a valid volume name" },
        Case { what: "host path not allowed", extra: "  volumes:\n  - hostPath: /srv\n    mountPath: /srv\n", line: 10, field: "spec.volumes[0].hostPath", says: "start berth with --allow-host-path PREFIX" },
        Case { what: "docker socket", extra: "  volumes:\n  - hostPath: /var/run/docker.sock\n    mountPath: /s\n", line: 10, field: "spec.volumes[0].hostPath", says: "Docker socket" },
        Case { what: "root", extra: "  volumes:\n  - hostPath: /\n    mountPath: /host\n", line: 10, field: "spec.volumes[0].hostPath", says: "Docker socket" },
        Case { what: "tmpfs false", extra: "  volumes:\n  - tmpfs: false\n    mountPath: /t\n", line: 10, field: "spec.volumes[0].tmpfs", says: "mounts nothing" },
        Case { what: "empty entrypoint", extra: "  entrypoint: []\n", line: 9, field: "spec.entrypoint", says: "must not be empty" },
        Case { what: "relative workingDir", extra: "  workingDir: srv\n", line: 9, field: "spec.workingDir", says: "not absolute" },
        Case { what: "bad user", extra: "  user: \"a b\"\n", line: 9, field: "spec.user", says: "is not a user" },
        Case { what: "self dependency", extra: "  dependsOn:\n  - web\n", line: 10, field: "spec.dependsOn[0]", says: "cannot depend on itself" },
        Case { what: "duplicate dependency", extra: "  dependsOn:\n  - db\n  - db\n", line: 11, field: "spec.dependsOn[1]", says: "listed twice" },
        Case { what: "stop signal", extra: "  termination:\n    stopSignal: SIGFOO\n", line: 10, field: "spec.termination.stopSignal", says: "not a stop signal" },
        Case { what: "grace", extra: "  termination:\n    gracePeriodSeconds: 7200\n", line: 10, field: "spec.termination.gracePeriodSeconds", says: "from 0 to 3600" },
        Case { what: "log files", extra: "  logging:\n    maxFiles: 0\n", line: 10, field: "spec.logging.maxFiles", says: "from 1 to 100" },
        Case { what: "log size", extra: "  logging:\n    maxSize: 10\n", line: 10, field: "spec.logging.maxSize", says: "between 1Ki and 1Ti" },
        Case { what: "strategy", extra: "  strategy: blue-green\n", line: 9, field: "spec.strategy", says: "unknown value `blue-green`" },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let parsed = parse_file(Path::new("apps/test.yaml"), &http_app(case.extra));
        let got: Vec<String> = parsed.issues.iter().map(|i| i.to_string()).collect();
        let ok = parsed.issues.len() == 1
            && parsed.issues[0].line == case.line
            && parsed.issues[0].field == case.field
            && parsed.issues[0].message.contains(case.says)
            && parsed.apps.is_empty();
        if !ok {
            failures.push(format!(
                "{}: want line {} field {} saying {:?}; got {got:?}",
                case.what, case.line, case.field, case.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_worker_may_publish_ports_but_not_route_them() {
    let worker = "apiVersion: v1\nkind: App\nmetadata: {name: mq}\nspec:\n  type: worker\n  image: mq:1\n  strategy: recreate\n  ports:\n  - {containerPort: 5672, hostPort: 5672}\n  - {containerPort: 53, hostPort: 5353, protocol: udp, hostIP: 0.0.0.0}\n";
    let parsed = parse_file(Path::new("mq.yaml"), worker);
    assert!(parsed.issues.is_empty(), "{:#?}", parsed.issues);
    let app = &parsed.apps[0].0;
    assert!(app.ports.is_empty(), "nothing routed");
    assert_eq!(app.workload.published.len(), 2);
    assert_eq!(app.workload.published[1].protocol, Protocol::Udp);
    let unpublished = worker.replace(", hostPort: 5672", "");
    let parsed = parse_file(Path::new("mq.yaml"), &unpublished);
    assert_eq!(parsed.issues[0].field, "spec.ports[0].containerPort");
    assert!(parsed.issues[0]
        .message
        .contains("publish this port with `hostPort`"));
}

fn app(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  image: x:1\n  ports:\n  - containerPort: 8080\n{extra}")
}

#[test]
fn depends_on_cycles_and_unknown_apps_are_refused() {
    let loaded = load_files(&[
        (PathBuf::from("a.yaml"), app("a", "  dependsOn: [b]\n")),
        (PathBuf::from("b.yaml"), app("b", "  dependsOn: [c]\n")),
        (PathBuf::from("c.yaml"), app("c", "  dependsOn: [a]\n")),
        (PathBuf::from("d.yaml"), app("d", "  dependsOn: [nope]\n")),
        (PathBuf::from("e.yaml"), app("e", "  dependsOn: [a]\n")),
    ]);
    assert_eq!(
        loaded.apps.keys().collect::<Vec<_>>(),
        vec!["e"],
        "e depends on a cycle member but is no part of it: it waits"
    );
    let texts: Vec<String> = loaded.issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    assert!(
        texts[0]
            .starts_with("a.yaml:9:3: spec.dependsOn: dependsOn forms a cycle (a -> b -> c -> a)"),
        "{texts:#?}"
    );
    assert!(texts[1].starts_with("b.yaml:9:3: spec.dependsOn: dependsOn forms a cycle"));
    assert!(texts[2].starts_with("c.yaml:9:3:"));
    assert!(
        texts[3].contains("d.yaml:9:3: spec.dependsOn: depends on `nope`, which no spec defines"),
        "{texts:#?}"
    );
}

#[test]
fn one_host_port_in_two_apps_names_both_files() {
    let publish = |ip: &str| {
        format!("  - containerPort: 5432\n    hostPort: 15432\n    hostIP: {ip}\n  strategy: recreate\n")
    };
    let loaded = load_files(&[
        (PathBuf::from("a.yaml"), app("a", &publish("127.0.0.1"))),
        (PathBuf::from("b.yaml"), app("b", &publish("127.0.0.1"))),
        (PathBuf::from("c.yaml"), app("c", &publish("127.0.0.2"))),
    ]);
    assert_eq!(loaded.apps.keys().collect::<Vec<_>>(), vec!["c"]);
    let texts: Vec<String> = loaded.issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(texts.len(), 2, "{texts:#?}");
    assert!(
        texts[0].starts_with("a.yaml:7:3: spec.ports: host port 127.0.0.1:15432/tcp is also published by `b` (b.yaml:7)"),
        "{texts:#?}"
    );
    assert!(texts[1].starts_with("b.yaml:7:3:") && texts[1].contains("`a` (a.yaml:7)"));
    // 0.0.0.0 overlaps every address.
    let loaded = load_files(&[
        (PathBuf::from("c.yaml"), app("c", &publish("127.0.0.2"))),
        (PathBuf::from("w.yaml"), app("w", &publish("0.0.0.0"))),
    ]);
    assert!(loaded.apps.is_empty(), "{:#?}", loaded.issues);
}

#[test]
fn an_allowed_prefix_cannot_be_escaped() {
    let policy = SpecPolicy {
        allow_host_paths: vec!["/srv".into()],
        ..SpecPolicy::default()
    };
    let load = |host: &str| {
        let text = http_app(&format!(
            "  volumes:\n  - hostPath: {host}\n    mountPath: /x\n"
        ));
        load_source_with(&[(PathBuf::from("a.yaml"), text)], &[], &policy)
    };
    for (host, says) in [
        ("/srv/../etc", "not normalized"),
        (
            "/srv2",
            "not under an --allow-host-path prefix (allowed: /srv)",
        ),
        ("/srvx/y", "not under an --allow-host-path prefix"),
        ("srv/a", "not absolute"),
        ("/", "Docker socket"),
    ] {
        let loaded = load(host);
        assert!(loaded.apps.is_empty(), "{host}");
        assert!(
            loaded.issues[0].message.contains(says),
            "{host}: {}",
            loaded.issues[0]
        );
        assert_eq!(loaded.issues[0].field, "spec.volumes[0].hostPath");
    }
    for ok in ["/srv", "/srv/media/a"] {
        assert!(load(ok).issues.is_empty(), "{ok}");
    }
}

/// `--allow-registry`: an image from a registry the operator did not allow is an issue on
/// `spec.image` with its line; Docker Hub's names are one registry; no list allows any.
#[test]
fn images_come_only_from_allowed_registries() {
    let spec = |image: &str| {
        format!(
            "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  image: {image}\n  ports:\n  - containerPort: 8080\n"
        )
    };
    let load = |image: &str, allowed: &[&str]| {
        let policy = SpecPolicy {
            allow_registries: allowed.iter().map(|r| r.to_string()).collect(),
            ..SpecPolicy::default()
        };
        load_source_with(&[(PathBuf::from("web.yaml"), spec(image))], &[], &policy)
    };
    for image in ["localhost:5000/web:1", "ghcr.io/acme/web:1", "busybox"] {
        let loaded = load(image, &[]);
        assert!(loaded.issues.is_empty(), "{image}: {:?}", loaded.issues);
    }
    let ok = load("localhost:5000/web:1", &["localhost:5000"]);
    assert!(ok.issues.is_empty(), "{:?}", ok.issues);
    let refused = load("ghcr.io/acme/web:1", &["localhost:5000"]);
    assert!(refused.apps.is_empty());
    let issue = refused.issues[0].to_string();
    assert!(
        issue.starts_with("web.yaml:6:")
            && issue.contains("spec.image")
            && issue.contains("`ghcr.io`")
            && issue.contains("--allow-registry localhost:5000"),
        "{issue}"
    );
    // A short name is Docker Hub's, under any of its names.
    let hub = load("busybox", &["localhost:5000"]);
    assert!(
        hub.issues[0].message.contains("`docker.io`"),
        "{:?}",
        hub.issues
    );
    for image in ["busybox:1.36", "index.docker.io/library/busybox:1.36"] {
        let loaded = load(image, &["docker.io"]);
        assert!(loaded.issues.is_empty(), "{image}: {:?}", loaded.issues);
    }
}
