//! Data-driven swarm plan tests: desired apps + observed services in, plan text out.

use super::*;
use crate::plan::{Desired, DesiredApp, PruneBlocked};
use crate::runtime::swarm::{ObservedService, ObservedTask, UpdateState};
use crate::spec::{AppSpec, AppType, Resources, SourceRef, Termination};

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
        env: vec![],
        termination: Termination::default(),
        route: None,
        workload: Default::default(),
    }
}

fn worker(name: &str, image: &str, replicas: u32) -> AppSpec {
    AppSpec {
        app_type: AppType::Worker,
        ports: vec![],
        ..http_app(name, image, replicas)
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
        proxy_listen: "127.0.0.1:8080".into(),
        upstreams: render::Upstreams::Dynamic,
        ..Desired::default()
    }
}

fn task(n: u16, hash: &str, state: &str, desired_state: &str, local: bool) -> ObservedTask {
    ObservedTask {
        id: format!("task{n}"),
        slot: Some(u32::from(n)),
        node: if local { "node-a" } else { "node-b" }.into(),
        local,
        state: state.into(),
        desired_state: desired_state.into(),
        health: None,
        image: "img".into(),
        spec_hash: hash.into(),
        error: None,
        message: String::new(),
        container_id: Some(format!("c{n}")),
        host_port: Some(30000 + n),
        created: String::new(),
    }
}

/// A service observed in sync with `app` (same image, hash, replicas) with `tasks`.
fn service_of(app: &DesiredApp, replicas: u32, tasks: Vec<ObservedTask>) -> ObservedService {
    ObservedService {
        id: format!("svc-{}", app.spec.name),
        name: format!("berth-{}", app.spec.name),
        app: app.spec.name.clone(),
        version: 7,
        image: app.spec.image.clone(),
        spec_hash: app.hash.clone(),
        revision: "rev0".into(),
        sections: BTreeMap::new(),
        replicas: Some(replicas),
        update: None,
        tasks,
    }
}

/// The plan text (display) with the proxy diffs left out: one line per step.
fn lines(plan: &Plan) -> Vec<String> {
    display::render_text(plan)
        .lines()
        .filter(|l| !l.starts_with("      "))
        .map(str::to_string)
        .collect()
}

/// Observed proxy files as the plan would write them, so only service steps remain.
fn proxy_in_sync(d: &Desired, observed: &mut Observed) {
    let plan = plan(d, observed, &Overrides::default(), &BTreeMap::new(), 0);
    for step in plan.steps {
        if let Step::WriteProxy { file, text, .. } = step {
            observed.proxy_files.insert(file, text);
        }
    }
}

/// (app, image of the observed service when it differs, replicas, tasks as
/// (state, desired state, local)).
type SeenService = (
    &'static str,
    Option<&'static str>,
    u32,
    Vec<(&'static str, &'static str, bool)>,
);

#[test]
fn cases() {
    struct Case {
        name: &'static str,
        desired: Vec<AppSpec>,
        /// (app, image override for the observed service, replicas, tasks)
        observed: Vec<SeenService>,
        overrides: Vec<(&'static str, u32)>,
        expect: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "new app: create service",
            desired: vec![worker("jobs", "w:v1", 2)],
            observed: vec![],
            overrides: vec![],
            expect: vec![
                "revision rev1",
                "  + jobs: create service berth-jobs (image w:v1, 2 replicas, spec HASH)",
                "plan: 1 to create, 0 to replace, 0 to remove, 0 proxy changes",
            ],
        },
        Case {
            name: "in sync: no changes",
            desired: vec![worker("jobs", "w:v1", 1)],
            observed: vec![("jobs", None, 1, vec![("running", "running", true)])],
            overrides: vec![],
            expect: vec!["revision rev1", "no changes: 1 apps in sync"],
        },
        Case {
            name: "new image and replicas: one update naming both",
            desired: vec![worker("jobs", "w:v2", 3)],
            observed: vec![("jobs", Some("w:v1"), 1, vec![("running", "running", true)])],
            overrides: vec![],
            expect: vec![
                "revision rev1",
                "  ~ jobs: update service berth-jobs: image, replicas 1 -> 3 (spec OLD -> HASH)",
                "plan: 0 to create, 1 to replace, 0 to remove, 0 proxy changes",
            ],
        },
        Case {
            name: "autoscaler override scales the service (clamped)",
            desired: vec![{
                let mut a = worker("jobs", "w:v1", 1);
                a.replicas = None;
                a.scaling = Some(crate::spec::Scaling {
                    min_replicas: 1,
                    max_replicas: 4,
                    mode: crate::spec::ScalingMode::Auto,
                    cooldown_seconds: 0,
                    http: None,
                });
                a
            }],
            observed: vec![("jobs", None, 1, vec![("running", "running", true)])],
            overrides: vec![("jobs", 9)],
            expect: vec![
                "revision rev1",
                "  ~ jobs: update service berth-jobs: replicas 1 -> 4",
                "plan: 0 to create, 1 to replace, 0 to remove, 0 proxy changes",
            ],
        },
        Case {
            name: "pending tasks: say why",
            desired: vec![worker("jobs", "w:v1", 1)],
            observed: vec![("jobs", None, 1, vec![("pending", "running", false)])],
            overrides: vec![],
            expect: vec![
                "revision rev1",
                "  = jobs: 0 of 1 tasks running (pending: no suitable node (scheduling constraints not satisfied on 1 node))",
                "no changes: 1 apps in sync",
            ],
        },
        Case {
            name: "app left the source: remove service",
            desired: vec![worker("jobs", "w:v1", 1)],
            observed: vec![
                ("jobs", None, 1, vec![("running", "running", true)]),
                ("old", None, 1, vec![("running", "running", true)]),
            ],
            overrides: vec![],
            expect: vec![
                "revision rev1",
                "  - old: remove service berth-old: app removed from source",
                "plan: 0 to create, 0 to replace, 1 to remove, 0 proxy changes",
            ],
        },
    ];
    for case in cases {
        let d = desired(case.desired);
        let mut observed = Observed::default();
        for (app, image, replicas, tasks) in case.observed {
            let wanted_app = d.apps.get(app).cloned().unwrap_or_else(|| {
                DesiredApp::new(
                    worker(app, "w:v1", 1),
                    SourceRef {
                        file: "x.yaml".into(),
                        line: 1,
                    },
                )
            });
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(i, (state, desired_state, local))| {
                    let mut t = task(i as u16 + 1, &wanted_app.hash, state, desired_state, local);
                    if state == "pending" {
                        t.error = Some(
                            "no suitable node (scheduling constraints not satisfied on 1 node)"
                                .into(),
                        );
                    }
                    t
                })
                .collect();
            let mut s = service_of(&wanted_app, replicas, tasks);
            if let Some(image) = image {
                s.image = image.into();
                s.spec_hash = "OLD".into();
            }
            observed.services.push(s);
        }
        let overrides = Overrides {
            replicas: case
                .overrides
                .iter()
                .map(|(a, n)| (a.to_string(), *n))
                .collect(),
            ..Overrides::default()
        };
        let p = plan(&d, &observed, &overrides, &BTreeMap::new(), 0);
        let hash = d
            .apps
            .values()
            .next()
            .map(|a| a.hash.clone())
            .unwrap_or_default();
        let got: Vec<String> = lines(&p)
            .into_iter()
            .map(|l| l.replace(&hash, "HASH"))
            .collect();
        assert_eq!(got, case.expect, "case: {}", case.name);
    }
}

#[test]
fn http_members_are_the_local_running_tasks() {
    let d = desired(vec![http_app("web", "demo:v1", 2)]);
    let app = d.apps["web"].clone();
    let mut observed = Observed::default();
    observed.services.push(service_of(
        &app,
        2,
        vec![
            task(1, &app.hash, "running", "running", true),
            // Being replaced: Swarm wants it gone, nginx must stop sending to it.
            task(2, &app.hash, "running", "shutdown", true),
            // Another node: not reachable on this node's loopback.
            task(3, &app.hash, "running", "running", false),
            task(4, &app.hash, "starting", "running", true),
        ],
    ));
    let p = plan(&d, &observed, &Overrides::default(), &BTreeMap::new(), 0);
    assert_eq!(p.apps["web"].members, vec!["127.0.0.1:30001"]);
    assert_eq!(p.apps["web"].ready_replicas, 2);
    let members = p
        .steps
        .iter()
        .find_map(|s| match s {
            Step::WriteProxy { file, text, .. } if file == "web.members" => Some(text.clone()),
            _ => None,
        })
        .expect("members file written");
    assert!(members.contains("127.0.0.1:30001") && !members.contains("30002"));
    // Once nginx has them, the plan is a no-op.
    proxy_in_sync(&d, &mut observed);
    let again = plan(&d, &observed, &Overrides::default(), &BTreeMap::new(), 0);
    assert!(!again.has_changes(), "{:?}", again.steps);
}

#[test]
fn sections_name_what_changed_and_a_failed_rollout_holds() {
    let d = desired(vec![worker("jobs", "w:v1", 1)]);
    let app = d.apps["jobs"].clone();
    let mut s = service_of(
        &app,
        1,
        vec![task(1, &app.hash, "running", "running", true)],
    );
    s.sections = BTreeMap::from([
        ("env".to_string(), "aaaaaa".to_string()),
        ("placement".to_string(), "bbbbbb".to_string()),
    ]);
    let wanted = BTreeMap::from([(
        "jobs".to_string(),
        Wanted {
            service: "berth-jobs".into(),
            sections: BTreeMap::from([
                ("env".to_string(), "aaaaaa".to_string()),
                ("placement".to_string(), "cccccc".to_string()),
            ]),
        },
    )]);
    let observed = Observed {
        services: vec![s.clone()],
        ..Observed::default()
    };
    let p = plan(&d, &observed, &Overrides::default(), &wanted, 0);
    assert_eq!(
        lines(&p)[1],
        "  ~ jobs: update service berth-jobs: placement"
    );

    // Swarm rolled the new spec back: the service runs the old one, the mark holds it.
    s.sections = wanted["jobs"].sections.clone();
    s.spec_hash = "0ld0ld".into();
    s.update = Some(UpdateState {
        state: "rollback_completed".into(),
        message: "rollback completed".into(),
    });
    let observed = Observed {
        services: vec![s],
        ..Observed::default()
    };
    let overrides = Overrides {
        failed_rollouts: BTreeMap::from([("jobs".to_string(), app.hash.clone())]),
        ..Overrides::default()
    };
    let p = plan(&d, &observed, &overrides, &wanted, 0);
    assert!(!p.has_changes());
    assert!(
        lines(&p)[1].contains("failed and Swarm rolled the service back to spec 0ld0ld"),
        "{:?}",
        lines(&p)
    );
}

#[test]
fn removals_respect_the_deletion_budget_and_held_apps() {
    let mut d = desired(vec![]);
    let gone = DesiredApp::new(
        worker("gone", "w:v1", 1),
        SourceRef {
            file: "x.yaml".into(),
            line: 1,
        },
    );
    let observed = Observed {
        services: vec![service_of(&gone, 1, vec![])],
        ..Observed::default()
    };
    d.prune_blocked = Some(PruneBlocked::DeletionBudget {
        reason: "too many".into(),
    });
    let p = plan(&d, &observed, &Overrides::default(), &BTreeMap::new(), 0);
    assert!(!p.has_changes());
    assert!(lines(&p)[1].contains("kept running: the deletion budget refused"));
    d.prune_blocked = None;
    d.held
        .insert("gone".into(), "its file cannot be read".into());
    let p = plan(&d, &observed, &Overrides::default(), &BTreeMap::new(), 0);
    assert!(!p.has_changes());
    assert_eq!(
        lines(&p)[1],
        "  = gone: kept running: its file cannot be read"
    );
}

#[test]
fn an_update_in_progress_is_followed_not_repeated() {
    let d = desired(vec![worker("jobs", "w:v2", 2)]);
    let app = d.apps["jobs"].clone();
    let mut s = service_of(
        &app,
        2,
        vec![
            task(1, &app.hash, "running", "running", true),
            task(2, "old", "running", "running", true),
        ],
    );
    s.update = Some(UpdateState {
        state: "updating".into(),
        message: "update in progress".into(),
    });
    let observed = Observed {
        services: vec![s],
        ..Observed::default()
    };
    let p = plan(&d, &observed, &Overrides::default(), &BTreeMap::new(), 0);
    assert!(!p.has_changes());
    assert_eq!(
        lines(&p)[1],
        "  = jobs: swarm is rolling the service (updating): 2 of 2 tasks running"
    );
    assert_eq!(p.apps["jobs"].ready_replicas, 1);
}

#[test]
fn a_failed_service_step_waits_out_its_backoff() {
    let d = desired(vec![worker("jobs", "w:v1", 1)]);
    let app = d.apps["jobs"].clone();
    let mut observed = Observed::default();
    observed.retry.insert(
        "jobs".into(),
        crate::plan::RetryState {
            hash: app.hash.clone(),
            failures: 1,
            retry_at: 2_000,
            error: "docker engine error during create service: refused".into(),
        },
    );
    let p = plan(
        &d,
        &observed,
        &Overrides::default(),
        &BTreeMap::new(),
        1_000,
    );
    assert!(!p.has_changes());
    assert_eq!(
        lines(&p)[1],
        "  = jobs: retrying in 1 s after 1 failed attempt: docker engine error during create service: refused"
    );
    let p = plan(
        &d,
        &observed,
        &Overrides::default(),
        &BTreeMap::new(),
        2_000,
    );
    assert!(matches!(p.steps[0], Step::CreateService { .. }));
}
