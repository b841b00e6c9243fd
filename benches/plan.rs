//! plan() over 10,000 apps x 3 replicas: in sync (the steady state every timer pass hits),
//! and with every app needing a rollout. Goal: <= 50 ms for the in-sync case.

use berth::plan::{plan, render, Desired, DesiredApp, Health, Observed, Overrides};
use berth::runtime::{ContainerState, ObservedContainer};
use berth::spec::{AppSpec, AppType, Resources, Route, SourceRef, Termination};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;

const APPS: usize = 10_000;
const REPLICAS: usize = 3;

fn spec(i: usize, image: &str) -> AppSpec {
    let name = format!("app-{i:05}");
    AppSpec {
        route: Some(Route {
            host: None,
            path: format!("/{name}"),
            strip_prefix: true,
            proxy: Default::default(),
            tls: None,
        }),
        name,
        app_type: AppType::Http,
        image: image.to_string(),
        image_pull_policy: berth::spec::ImagePullPolicy::IfNotPresent,
        command: None,
        ports: vec![8080],
        health: None,
        resources: Resources::default(),
        replicas: Some(REPLICAS as u32),
        scaling: None,
        env: vec![],
        termination: Termination {
            drain_seconds: 5,
            ..Default::default()
        },
        workload: Default::default(),
    }
}

fn world(image: &str) -> (Desired, Observed) {
    let mut desired = Desired {
        revision: "bench".into(),
        apps: BTreeMap::new(),
        held: BTreeMap::new(),
        prune_blocked: None,
        proxy_listen: "127.0.0.1:8080".into(),
        proxy_tls: Default::default(),
        upstreams: Default::default(),
        leaving_deps: Default::default(),
    };
    let mut observed = Observed::default();
    let mut port: u32 = 0;
    for i in 0..APPS {
        let app = DesiredApp::new(
            spec(i, image),
            SourceRef {
                file: "bench.yaml".into(),
                line: 1,
            },
        );
        let mut members = Vec::new();
        for r in 0..REPLICAS {
            port += 1;
            let c = ObservedContainer {
                id: format!("{i:05}-{r}"),
                name: format!("berth-{}-{r}", app.spec.name),
                app: app.spec.name.clone(),
                image: "img:v1".into(),
                image_id: String::new(),
                spec_hash: app.hash.clone(),
                revision: "bench".into(),
                state: ContainerState::Running,
                host_port: Some((10_000 + port % 50_000) as u16),
                published: vec![(8080, (10_000 + port % 50_000) as u16)],
                created: r as i64,
            };
            members.push(c.address().unwrap());
            observed.health.insert(c.id.clone(), Health::Healthy);
            observed.containers.push(c);
        }
        members.sort();
        for (file, text) in render::render_app(
            &app.spec,
            &members,
            &desired.proxy_listen,
            &desired.proxy_tls,
            desired.upstreams,
        ) {
            observed.proxy_files.insert(file, text);
        }
        desired.apps.insert(app.spec.name.clone(), app);
    }
    (desired, observed)
}

fn bench_plan(c: &mut Criterion) {
    let (desired, observed) = world("img:v1");
    let overrides = Overrides::default();
    assert!(!plan(&desired, &observed, &overrides, 0).has_changes());
    let mut group = c.benchmark_group("plan_10k_apps_x3");
    group.sample_size(10);
    group.bench_function("in_sync", |b| {
        b.iter(|| plan(&desired, &observed, &overrides, 0))
    });
    let (rolled, _) = world("img:v2");
    group.bench_function("all_rolling", |b| {
        b.iter(|| plan(&rolled, &observed, &overrides, 0))
    });
    let members = vec!["127.0.0.1:30001".to_string(), "127.0.0.1:30002".to_string()];
    let one = spec(1, "img:v1");
    group.bench_function("render_10k_apps", |b| {
        b.iter(|| {
            for _ in 0..APPS {
                std::hint::black_box(render::render_app(
                    &one,
                    &members,
                    "127.0.0.1:8080",
                    &Default::default(),
                    render::Upstreams::Static,
                ));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
