//! Converging apps whose images come from a registry: N one-replica http apps, each on its
//! own repository of a local registry (`support::registry`: Debian's docker-registry with
//! htpasswd auth on a loopback port; the repositories share one image, as services built
//! from one base do), none of them on the host at the start. berth (`berth serve`
//! in-process: the loop and the image worker, `IfNotPresent`, credentials from a
//! `DOCKER_CONFIG`) from start to every app answering 200 through nginx, next to
//! `docker-compose up -d` (which pulls what is missing, with the same `DOCKER_CONFIG`) to
//! every service answering 200 on its published port. Before every run the local tags of
//! the registry's images are removed (the image itself stays under its demo tag, so a pull
//! fetches manifests and config, not layers twice).

use crate::support::registry::{untag, Registry};
use crate::support::{ensure_images, test_settings, Scene, Served};
use crate::{cell, ms, wait_all, ComposeGuard, COMPOSE, IMAGE, PARALLEL};
use berth::reconcile::{ImageSettings, Settings};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const APPS: usize = 50;
const RUNS: usize = 3;

fn image(registry: &Registry, i: usize) -> String {
    registry.image(&format!("bench{i:02}/demo:v1"))
}

fn untag_all(registry: &Registry) {
    for i in 0..APPS {
        untag(&image(registry, i));
    }
}

async fn berth_run(registry: &Registry, run: usize) -> f64 {
    untag_all(registry);
    let scene = Scene::new(&format!("bench-reg{run}"));
    for i in 0..APPS {
        let name = format!("app{i:02}");
        let spec = format!(
            "apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  image: {}\n  ports:\n    - containerPort: 8080\n  health:\n    httpGet: {{ path: /healthz, port: 8080 }}\n    intervalSeconds: 5\n  replicas: 1\n  termination:\n    drainSeconds: 0\n",
            image(registry, i)
        );
        std::fs::write(scene.specs.path().join(format!("{name}.yaml")), spec).unwrap();
    }
    let settings = Settings {
        interval: Duration::from_secs(5),
        parallel_apps: PARALLEL,
        images: ImageSettings {
            docker_config: registry.docker_config(),
            poll: Duration::from_secs(300),
        },
        ..test_settings(
            &scene.instance,
            berth::source::SourceConfig::Dir(scene.specs.path().to_path_buf()),
        )
    };
    let ctl = crate::support::docker_controller(
        &scene.instance,
        None,
        scene.state.path(),
        scene.port,
        settings,
    )
    .await;
    ctl.ensure_proxy_running().await.unwrap();
    let started = Instant::now();
    let served = Served::start(&ctl, None);
    let port = scene.port;
    let targets = (0..APPS).map(|i| (port, format!("/app{i:02}/"))).collect();
    let seen = tokio::task::spawn_blocking(move || wait_all(targets, started))
        .await
        .unwrap();
    served.stop().await;
    drop(ctl);
    drop(scene);
    ms(seen)
}

fn compose_run(registry: &Registry, run: usize) -> f64 {
    untag_all(registry);
    let guard = ComposeGuard {
        project: format!("benchreg{run}p{}", std::process::id()),
        dir: tempfile::tempdir().unwrap(),
    };
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..APPS {
        let _ = write!(
            yaml,
            "  app{i:02}:\n    image: {}\n    ports: [\"127.0.0.1::8080\"]\n    labels:\n      berth.instance: {}\n",
            image(registry, i),
            guard.project
        );
    }
    std::fs::write(guard.dir.path().join("docker-compose.yml"), yaml).unwrap();
    let started = Instant::now();
    // compose (docker-py) reads credentials from $DOCKER_CONFIG like the docker CLI.
    let out = std::process::Command::new(COMPOSE)
        .current_dir(guard.dir.path())
        .env("DOCKER_CONFIG", registry.docker_config())
        .args(["-p", &guard.project, "up", "-d"])
        .output()
        .expect("run docker-compose");
    assert!(
        out.status.success(),
        "docker-compose up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={}", guard.project),
            "--format",
            "{{.Ports}}",
        ])
        .output()
        .unwrap();
    let ports: Vec<u16> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter_map(|l| l.split("->").next()?.rsplit(':').next()?.parse().ok())
        .collect();
    assert_eq!(ports.len(), APPS, "published ports: {ports:?}");
    let seen = wait_all(
        ports.into_iter().map(|p| (p, "/".into())).collect(),
        started,
    );
    drop(guard);
    ms(seen)
}

pub async fn section() -> String {
    ensure_images();
    let registry = Registry::start();
    for i in 0..APPS {
        registry.push(IMAGE, &format!("bench{i:02}/demo:v1"));
    }
    let mut berth = Vec::new();
    let mut compose = Vec::new();
    for run in 0..RUNS {
        berth.push(berth_run(&registry, run).await);
        compose.push(compose_run(&registry, run));
    }
    untag_all(&registry);
    let build = if cfg!(debug_assertions) {
        "a debug build (`cargo bench --profile dev`: the other sections use release)"
    } else {
        "a release build"
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Converging {APPS} apps pulled from a local registry\n\n\
         Each app has its own repository on a local registry (docker-registry 2.8, htpasswd \
         auth, plain HTTP on 127.0.0.1), none on the host at the start; all repositories hold \
         the demo image. Start to every app answering 200 (berth through nginx, compose on \
         its published ports), ms, median (min–max) of {RUNS} runs; berth ran from \
         {build}.\n\n\
         | | {APPS} apps |\n|---|---|\n\
         | berth (`IfNotPresent`, pulls in the image worker, ≤ 4 at once) | {} |\n\
         | `docker-compose up -d` (pulls what is missing, then starts) | {} |",
        cell(&berth),
        cell(&compose)
    );
    md
}
