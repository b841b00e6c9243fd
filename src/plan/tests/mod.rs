//! Data-driven plan tests: desired + observed in, plan text out; plus a convergence test
//! that applies plans to an in-memory observed state until nothing is left to do.

use super::*;
use crate::runtime::{ContainerState, ObservedContainer};
use crate::spec::{
    AppSpec, AppType, EnvValue, EnvVar, HttpScaling, Resources, Route, Scaling, ScalingMode,
    SourceRef, Termination,
};

fn http_app(name: &str, image: &str, replicas: u32) -> AppSpec {
    AppSpec {
        name: name.to_string(),
        app_type: AppType::Http,
        image: image.to_string(),
        image_pull_policy: crate::spec::ImagePullPolicy::IfNotPresent,
        command: None,
        ports: vec![8080],
        health: None,
        resources: Resources::default(),
        replicas: Some(replicas),
        scaling: None,
        env: vec![EnvVar {
            name: "MODE".into(),
            value: EnvValue::Literal("demo".into()),
        }],
        termination: Termination {
            drain_seconds: 3,
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

fn worker_app(name: &str, replicas: u32) -> AppSpec {
    AppSpec {
        app_type: AppType::Worker,
        ports: vec![],
        route: None,
        ..http_app(name, "worker:v1", replicas)
    }
}

fn desired(apps: Vec<AppSpec>) -> Desired {
    Desired {
        revision: "rev1".into(),
        apps: apps
            .into_iter()
            .map(|spec| {
                let source = SourceRef {
                    file: format!("{}.yaml", spec.name).into(),
                    line: 1,
                };
                (spec.name.clone(), DesiredApp::new(spec, source))
            })
            .collect(),
        held: BTreeMap::new(),
        prune_blocked: None,
        proxy_listen: "127.0.0.1:8080".into(),
        proxy_tls: Default::default(),
        upstreams: Default::default(),
        leaving_deps: Default::default(),
    }
}

/// A running, healthy container of `app` at `hash`, created at `created`, on `port`.
fn container(app: &str, hash: &str, n: u16) -> ObservedContainer {
    ObservedContainer {
        id: format!("id-{app}-{n}"),
        name: format!("berth-{app}-{n}"),
        app: app.to_string(),
        image: "img".into(),
        image_id: String::new(),
        spec_hash: hash.to_string(),
        revision: "rev0".into(),
        state: ContainerState::Running,
        host_port: Some(30000 + n),
        published: vec![(8080, 30000 + n)],
        created: n as i64,
    }
}

fn observed(containers: Vec<ObservedContainer>) -> Observed {
    let health = containers
        .iter()
        .map(|c| (c.id.clone(), Health::Healthy))
        .collect();
    Observed {
        containers,
        health,
        ..Observed::default()
    }
}

/// Observed state that matches `desired` exactly: `replicas` healthy containers per app and
/// the proxy files rendered for them.
fn in_sync(desired: &Desired) -> Observed {
    let mut containers = Vec::new();
    let mut n = 0;
    for app in desired.apps.values() {
        for _ in 0..app.spec.replicas.unwrap_or(1) {
            n += 1;
            containers.push(container(&app.spec.name, &app.hash, n));
        }
    }
    let mut obs = observed(containers);
    sync_proxy(desired, &mut obs);
    obs
}

fn sync_proxy(desired: &Desired, obs: &mut Observed) {
    obs.proxy_files.clear();
    for app in desired.apps.values() {
        if app.spec.app_type != AppType::Http {
            continue;
        }
        let mut members: Vec<String> = obs
            .containers
            .iter()
            .filter(|c| c.app == app.spec.name && obs.health_of(&c.id) == Health::Healthy)
            .filter_map(|c| c.address())
            .collect();
        members.sort();
        for (file, text) in render::render_app(
            &app.spec,
            &members,
            &desired.proxy_listen,
            &desired.proxy_tls,
            desired.upstreams,
        ) {
            obs.proxy_files.insert(file, text);
        }
    }
}

fn hash_of(d: &Desired, app: &str) -> String {
    d.apps[app].hash.clone()
}

/// Plan text without diffs (diffs are covered by their own case).
fn text(plan: &Plan) -> String {
    display::render_text(plan)
        .lines()
        .filter(|l| !l.starts_with("      "))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Case {
    name: &'static str,
    desired: Desired,
    observed: Observed,
    overrides: Overrides,
    expected: &'static str,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    let d = desired(vec![http_app("web", "web:v1", 2)]);
    cases.push(Case {
        name: "converge from empty",
        observed: Observed::default(),
        overrides: Overrides::default(),
        expected: "revision rev1
  ~ web: proxy web.conf
  ~ web: proxy web.loc
  + web: create container (image web:v1, spec HASH_web): below replica count
  + web: create container (image web:v1, spec HASH_web): below replica count
plan: 2 to create, 0 to replace, 0 to remove, 2 proxy changes",
        desired: d,
    });

    let d = desired(vec![http_app("web", "web:v1", 2), worker_app("jobs", 1)]);
    cases.push(Case {
        name: "in sync is a no-op",
        observed: in_sync(&d),
        overrides: Overrides::default(),
        expected: "revision rev1\nno changes: 2 apps in sync",
        desired: d,
    });

    let d3 = desired(vec![http_app("web", "web:v1", 3)]);
    let mut obs = in_sync(&d3);
    let d = desired(vec![http_app("web", "web:v1", 1)]);
    obs.health.insert("id-web-2".into(), Health::Starting);
    cases.push(Case {
        name: "scale in keeps the oldest healthy",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
  ~ web: proxy web.conf
  - web: remove berth-web-2: scale in
  - web: remove berth-web-3: scale in
plan: 0 to create, 0 to replace, 2 to remove, 1 proxy changes",
        desired: d,
    });

    let old = desired(vec![http_app("web", "web:v1", 2)]);
    let obs = in_sync(&old);
    let d = desired(vec![http_app("web", "web:v2", 2)]);
    cases.push(Case {
        name: "image change rolls one at a time",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
-/+ web: replace berth-web-1 (1/2, image web:v2): spec HASH_old -> HASH_web
-/+ web: replace berth-web-2 (2/2, image web:v2): spec HASH_old -> HASH_web
plan: 0 to create, 2 to replace, 0 to remove, 0 proxy changes",
        desired: d,
    });

    let old = desired(vec![http_app("web", "web:v1", 2)]);
    let obs = in_sync(&old);
    let d = desired(vec![http_app("web", "web:v3", 2)]);
    let failed = Overrides {
        failed_rollouts: [("web".to_string(), hash_of(&d, "web"))].into(),
        ..Overrides::default()
    };
    cases.push(Case {
        name: "failed rollout keeps the old generation",
        observed: obs,
        overrides: failed,
        expected: "revision rev1
  = web: rollout of spec HASH_web failed earlier; the running containers are kept until the spec changes
no changes: 1 apps in sync",
        desired: d,
    });

    let both = desired(vec![
        http_app("web", "web:v1", 1),
        http_app("gone", "g:v1", 2),
    ]);
    let obs = in_sync(&both);
    let d = desired(vec![http_app("web", "web:v1", 1)]);
    cases.push(Case {
        name: "app removed from source",
        observed: obs.clone(),
        overrides: Overrides::default(),
        expected: "revision rev1
  - gone: remove berth-gone-1: app removed from source
  - gone: remove berth-gone-2: app removed from source
  - gone: proxy gone.conf (delete)
  - gone: proxy gone.loc (delete)
plan: 0 to create, 0 to replace, 2 to remove, 2 proxy changes",
        desired: d.clone(),
    });

    let mut held = d.clone();
    held.held.insert(
        "gone".into(),
        "gone.yaml:3:5: spec.image: expected a string".into(),
    );
    cases.push(Case {
        name: "invalid spec keeps the app running",
        observed: obs.clone(),
        overrides: Overrides::default(),
        expected: "revision rev1
  = gone: kept running: gone.yaml:3:5: spec.image: expected a string
no changes: 1 apps in sync",
        desired: held,
    });

    let mut refused = d.clone();
    refused.prune_blocked = Some(PruneBlocked::DeletionBudget {
        reason: "this pass would remove 3 apps (gone, x, y), more than the budget of 2: pass \
                 --allow-mass-prune (or raise --max-prune) to remove them"
            .into(),
    });
    cases.push(Case {
        name: "a deletion-budget refusal says so and removes nothing",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
  = gone: kept running: the deletion budget refused removing apps in this pass: this pass would remove 3 apps (gone, x, y), more than the budget of 2: pass --allow-mass-prune (or raise --max-prune) to remove them
no changes: 1 apps in sync",
        desired: refused,
    });

    let d = desired(vec![http_app("web", "web:v1", 2)]);
    let mut obs = in_sync(&d);
    obs.containers[1].state = ContainerState::Exited;
    cases.push(Case {
        name: "exited container is replaced",
        observed: obs.clone(),
        overrides: Overrides::default(),
        expected: "revision rev1
  ~ web: proxy web.conf
  + web: create container (image web:v1, spec HASH_web): replaces a stopped container
  - web: remove berth-web-2: not running
plan: 1 to create, 0 to replace, 1 to remove, 1 proxy changes",
        desired: d.clone(),
    });

    let mut backing_off = obs;
    backing_off.heal.insert(
        "web".into(),
        heal::after_repair(None, &hash_of(&d, "web"), 999_000),
    );
    cases.push(Case {
        name: "self-heal backs off after a recent repair",
        observed: backing_off,
        overrides: Overrides::default(),
        expected: "revision rev1
  = web: self-heal backing off for 1000 ms after 1 recent repairs
  ~ web: proxy web.conf
plan: 0 to create, 0 to replace, 0 to remove, 1 proxy changes",
        desired: d.clone(),
    });

    let mut obs = in_sync(&d);
    obs.health.insert("id-web-1".into(), Health::Unhealthy);
    cases.push(Case {
        name: "unhealthy container leaves the upstream and is replaced",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
  ~ web: proxy web.conf
-/+ web: replace berth-web-1 (1/1, image web:v1): unhealthy
plan: 0 to create, 1 to replace, 0 to remove, 1 proxy changes",
        desired: d.clone(),
    });

    let mut scaled = http_app("api", "api:v1", 2);
    scaled.scaling = Some(Scaling {
        min_replicas: 1,
        max_replicas: 3,
        mode: ScalingMode::Auto,
        cooldown_seconds: 30,
        http: Some(HttpScaling {
            target_rps_per_replica: 50.0,
            max_p95_latency_ms: 200.0,
            scale_out_threshold_pct: 80.0,
            scale_in_threshold_pct: 30.0,
            window_seconds: 20,
        }),
    });
    let d = desired(vec![scaled]);
    let obs = in_sync(&d);
    cases.push(Case {
        name: "autoscaler override is clamped to maxReplicas",
        observed: obs,
        overrides: Overrides {
            replicas: [("api".to_string(), 7)].into(),
            ..Overrides::default()
        },
        expected: "revision rev1
  + api: create container (image api:v1, spec HASH_api): below replica count
plan: 1 to create, 0 to replace, 0 to remove, 0 proxy changes",
        desired: d,
    });
    // A followed tag (`Always`) whose registry digest moved: the image worker pulled it and
    // resolved the tag's new local ID; containers of the old ID roll, the spec is the same.
    let mut app = http_app("web", "web:v1", 2);
    app.image_pull_policy = crate::spec::ImagePullPolicy::Always;
    let d = desired(vec![app.clone()]);
    let mut obs = in_sync(&d);
    for c in &mut obs.containers {
        c.image_id = "sha256:old".into();
    }
    let moved = ImageView {
        id: Some("sha256:new".into()),
        pulling: false,
    };
    obs.images.insert("web:v1".into(), moved.clone());
    cases.push(Case {
        name: "a moved tag of an Always app rolls out",
        observed: obs.clone(),
        overrides: Overrides::default(),
        expected: "revision rev1
-/+ web: replace berth-web-1 (1/2, image web:v1): image digest changed
-/+ web: replace berth-web-2 (2/2, image web:v1): image digest changed
plan: 0 to create, 2 to replace, 0 to remove, 0 proxy changes",
        desired: d,
    });
    // The same containers and view, but the app does not follow the tag.
    cases.push(Case {
        name: "IfNotPresent ignores a moved tag",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1\nno changes: 1 apps in sync",
        desired: desired(vec![http_app("web", "web:v1", 2)]),
    });
    // A container from before berth knew the tag's ID (empty image id) is not rolled.
    let d = desired(vec![app]);
    let mut obs = in_sync(&d);
    obs.images.insert("web:v1".into(), moved);
    cases.push(Case {
        name: "an Always app without a known container image is kept",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1\nno changes: 1 apps in sync",
        desired: d,
    });

    // A spec change to an image that is being pulled: the app waits, the old one serves.
    let obs = in_sync(&desired(vec![http_app("web", "web:v1", 2)]));
    let mut obs = obs;
    obs.images.insert(
        "web:v2".into(),
        ImageView {
            id: None,
            pulling: true,
        },
    );
    cases.push(Case {
        name: "an app waits for its image pull",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
  = web: waiting for image web:v2 to be pulled; what runs is kept
no changes: 1 apps in sync",
        desired: desired(vec![http_app("web", "web:v2", 2)]),
    });

    let recreate = |image: &str| {
        let mut app = http_app("web", image, 1);
        app.workload.strategy = crate::spec::Strategy::Recreate;
        app
    };
    let obs = in_sync(&desired(vec![recreate("web:v1")]));
    cases.push(Case {
        name: "recreate says the old one stops first",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
-/+ web: replace berth-web-1 (1/1, image web:v2, recreate: stop old first): spec HASH_old -> HASH_web
plan: 0 to create, 1 to replace, 0 to remove, 0 proxy changes",
        desired: desired(vec![recreate("web:v2")]),
    });

    let mut api = http_app("api", "api:v1", 1);
    api.workload.depends_on = vec!["db".into()];
    let d = desired(vec![api.clone(), http_app("db", "db:v1", 1)]);
    cases.push(Case {
        name: "dependsOn waits for a healthy dependency",
        observed: Observed::default(),
        overrides: Overrides::default(),
        expected: "revision rev1
  = api: waiting for db (dependsOn: no healthy replica yet)
  ~ api: proxy api.conf
  ~ api: proxy api.loc
  ~ db: proxy db.conf
  ~ db: proxy db.loc
  + db: create container (image db:v1, spec HASH_db): below replica count
plan: 1 to create, 0 to replace, 0 to remove, 4 proxy changes",
        desired: d,
    });

    let only_db = desired(vec![http_app("db", "db:v1", 1)]);
    let mut obs = in_sync(&only_db);
    let d = desired(vec![api, http_app("db", "db:v1", 1)]);
    let db_proxy = obs.proxy_files.clone();
    sync_proxy(&d, &mut obs);
    obs.proxy_files.extend(db_proxy);
    cases.push(Case {
        name: "dependsOn lets the app start once the dependency is healthy",
        observed: obs,
        overrides: Overrides::default(),
        expected: "revision rev1
  + api: create container (image api:v1, spec HASH_api): below replica count
plan: 1 to create, 0 to replace, 0 to remove, 0 proxy changes",
        desired: d,
    });
    cases
}

#[test]
fn plan_cases() {
    let mut failures = Vec::new();
    for case in cases() {
        let plan = plan(&case.desired, &case.observed, &case.overrides, 1_000_000);
        let mut expected = case.expected.to_string();
        for (name, app) in &case.desired.apps {
            expected = expected.replace(&format!("HASH_{name}"), &app.hash);
        }
        let old_hash = crate::spec::spec_hash(&http_app("web", "web:v1", 2));
        expected = expected.replace("HASH_old", &old_hash);
        let got = text(&plan);
        if got != expected {
            failures.push(format!(
                "case `{}`\n--- expected\n{expected}\n--- got\n{got}\n",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn proxy_diff_shows_member_changes() {
    let d3 = desired(vec![http_app("web", "web:v1", 2)]);
    let obs = in_sync(&d3);
    let d = desired(vec![http_app("web", "web:v1", 1)]);
    let plan = plan(&d, &obs, &Overrides::default(), 0);
    let shown = display::render_text(&plan);
    assert!(
        shown.contains("      -    server 127.0.0.1:30002 max_fails=1 fail_timeout=2s;"),
        "{shown}"
    );
    assert!(shown.contains("      --- a/web.conf"), "{shown}");
}

#[test]
fn replica_resolution() {
    let mut spec = http_app("a", "a:1", 2);
    assert_eq!(effective_replicas(&spec, Some(5)), (2, ReplicaSource::Spec));
    spec.scaling = Some(Scaling {
        min_replicas: 1,
        max_replicas: 4,
        mode: ScalingMode::Auto,
        cooldown_seconds: 0,
        http: None,
    });
    assert_eq!(
        effective_replicas(&spec, Some(9)),
        (
            4,
            ReplicaSource::Override {
                requested: 9,
                clamped: true
            }
        )
    );
    assert_eq!(effective_replicas(&spec, None), (2, ReplicaSource::Spec));
    spec.replicas = None;
    assert_eq!(
        effective_replicas(&spec, None),
        (1, ReplicaSource::MinReplicas)
    );
    spec.scaling.as_mut().unwrap().mode = ScalingMode::Manual;
    assert_eq!(
        effective_replicas(&spec, Some(3)),
        (1, ReplicaSource::MinReplicas)
    );
    spec.scaling = None;
    assert_eq!(effective_replicas(&spec, None), (1, ReplicaSource::Default));
}

/// Applies a plan to an in-memory world the way `reconcile::apply` would: new containers
/// come up healthy, replaced and removed ones go away, proxy files follow the members.
fn simulate(desired: &Desired, world: &mut Observed, plan: &Plan, next_port: &mut u16) {
    for step in &plan.steps {
        match step {
            Step::Create { app, hash, .. } => {
                *next_port += 1;
                let c = container(app, hash, *next_port);
                world.health.insert(c.id.clone(), Health::Healthy);
                world.containers.push(c);
            }
            Step::Replace {
                app, old_id, hash, ..
            } => {
                world.containers.retain(|c| &c.id != old_id);
                *next_port += 1;
                let c = container(app, hash, *next_port);
                world.health.insert(c.id.clone(), Health::Healthy);
                world.containers.push(c);
            }
            Step::Remove { id, .. } => world.containers.retain(|c| &c.id != id),
            Step::WriteProxy { .. } | Step::RemoveProxy { .. } | Step::NoOp { .. } => {}
            Step::CreateService { .. }
            | Step::UpdateService { .. }
            | Step::RemoveService { .. } => {
                unreachable!("the container plan never plans service steps")
            }
        }
    }
    sync_proxy(desired, world);
}

#[test]
fn applying_a_plan_converges() {
    let first = desired(vec![
        http_app("web", "web:v1", 3),
        http_app("api", "api:v1", 1),
        worker_app("jobs", 2),
    ]);
    let mut world = Observed::default();
    let mut port = 0;
    let changed = desired(vec![
        http_app("web", "web:v2", 2),
        worker_app("jobs", 4),
        http_app("new", "new:v1", 1),
    ]);
    for d in [&first, &changed] {
        let p = plan(d, &world, &Overrides::default(), 0);
        assert!(p.has_changes());
        simulate(d, &mut world, &p, &mut port);
        let again = plan(d, &world, &Overrides::default(), 0);
        assert!(
            !again.has_changes(),
            "second plan is not empty:\n{}",
            display::render_text(&again)
        );
        for (name, app) in &d.apps {
            let running = world.containers.iter().filter(|c| &c.app == name).count();
            assert_eq!(running as u32, app.spec.replicas.unwrap(), "{name}");
        }
    }
    assert!(world.containers.iter().all(|c| c.app != "api"));
    assert!(!world.proxy_files.contains_key("api.conf"));
}

mod rendering;
