//! Real workloads against the real Docker engine (issue 12): data in a named volume and in
//! an image's VOLUME survives a rollout, a controller restart and the removal + re-adding of
//! the app; `berth volumes prune` deletes it; apps reach each other by name; dependsOn
//! orders creation; entrypoint/workingDir/user/labels/logging reach the container; hostPath
//! is refused outside `--allow-host-path`; `strategy: recreate` stops the old replica before
//! the new one is created; a scaled-in replica's anonymous volume is kept and deleted with
//! the app; the stateful app's data also survives SIGKILLs of `berth serve`
//! in the middle of its recreate rollouts. Every test has its own instance label (containers, network,
//! volumes) and cleans up in Drop guards.

mod fault;
mod support;

use berth::reconcile::{self, Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerObserver, ContainerState, ObservedContainer};
use berth::store::{EventQuery, EventType};
use std::process::Command;
use std::sync::Arc;
use support::{docker, docker_ok, unique_name, Scene};

async fn controller(scene: &Scene, settings: Settings) -> Arc<Controller<DockerRuntime>> {
    scene.controller_with(settings).await
}

fn settings(scene: &Scene) -> Settings {
    let mut s = scene.dir_settings();
    // Removing the only app is what these tests do on purpose.
    s.deletion_budget.allow_mass_prune = true;
    s
}

fn write(scene: &Scene, file: &str, text: &str) {
    std::fs::write(scene.specs.path().join(file), text).unwrap();
}

async fn pass(ctl: &Arc<Controller<DockerRuntime>>) -> reconcile::PassReport {
    reconcile::run_pass(ctl, "test").await.expect("pass")
}

async fn running(ctl: &Arc<Controller<DockerRuntime>>, app: &str) -> Vec<ObservedContainer> {
    ctl.runtime()
        .observe()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.app == app && c.state == ContainerState::Running)
        .collect()
}

/// Passes until `app` runs exactly one container whose spec hash differs from `not`.
async fn converge_one(
    ctl: &Arc<Controller<DockerRuntime>>,
    app: &str,
    not: Option<&str>,
) -> ObservedContainer {
    for _ in 0..15 {
        pass(ctl).await;
        let all: Vec<ObservedContainer> = ctl
            .runtime()
            .observe()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.app == app)
            .collect();
        if all.len() == 1
            && all[0].state == ContainerState::Running
            && Some(all[0].spec_hash.as_str()) != not
        {
            return all[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("app {app} did not converge to one new container");
}

fn exec(id: &str, script: &str) -> (bool, String) {
    let out = docker(&["exec", id, "/bin/sh", "-c", script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// A local image built from the demo image with `docker commit` (no registry): `changes`
/// are Dockerfile instructions (`VOLUME ["/anon"]`, `ENTRYPOINT [...]`). Removed on drop.
struct LocalImage {
    tag: String,
}

impl LocalImage {
    fn new(instance: &str, changes: &[&str]) -> LocalImage {
        let tag = format!("berth-wl-{instance}:t");
        let label = format!("berth.instance={instance}");
        let id = docker_ok(&["create", "--label", &label, support::IMAGE_V1]);
        let mut args = vec!["commit"];
        for c in changes {
            args.push("--change");
            args.push(c);
        }
        args.push(id.trim());
        args.push(&tag);
        docker_ok(&args);
        docker_ok(&["rm", "-f", id.trim()]);
        LocalImage { tag }
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = docker(&["image", "rm", "-f", &self.tag]);
    }
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).status.success()
}

/// The anonymous volume mounted at `path` in container `id`.
fn volume_at(id: &str, path: &str) -> String {
    let format = format!(
        "{{{{range .Mounts}}}}{{{{if eq .Destination \"{path}\"}}}}{{{{.Name}}}}{{{{end}}}}{{{{end}}}}"
    );
    docker_ok(&["inspect", "--format", &format, id])
        .trim()
        .to_string()
}

fn stateful_spec(app: &str, image: &str, generation: u32) -> String {
    format!(
        "apiVersion: v1
kind: App
metadata: {{name: {app}}}
spec:
  image: {image}
  strategy: recreate
  ports: [{{containerPort: 8080}}]
  health: {{httpGet: {{path: /healthz, port: 8080}}, intervalSeconds: 1}}
  volumes:
    - {{name: data, mountPath: /data}}
  env: [{{name: GEN, value: \"{generation}\"}}]
  termination: {{drainSeconds: 0, gracePeriodSeconds: 1}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_data_survives_rollout_restart_and_readding_and_prune_deletes_it() {
    let scene = Scene::new("wl-data");
    let image = LocalImage::new(&scene.instance, &[r#"VOLUME ["/anon"]"#]);
    // Volume names are `berth-<app>-<name>` on the whole host: a unique app name.
    let app = format!("db{}", &unique_name("x").replace('-', "")[1..12]);
    let volume = format!("berth-{app}-data");
    write(&scene, "db.yaml", &stateful_spec(&app, &image.tag, 1));
    let ctl = controller(&scene, settings(&scene)).await;

    let first = converge_one(&ctl, &app, None).await;
    assert!(volume_exists(&volume), "the named volume is created");
    let labels = docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{index .Labels \"berth.managed\"}} {{index .Labels \"berth.app\"}} {{index .Labels \"berth.instance\"}}",
        &volume,
    ]);
    assert_eq!(
        labels.trim(),
        format!("true {app} {}", scene.instance),
        "ownership labels"
    );
    let anon = volume_at(&first.id, "/anon");
    assert_eq!(anon.len(), 64, "the image's VOLUME is an anonymous volume");
    let (ok, _) = exec(&first.id, "echo named > /data/x && echo anon > /anon/y");
    assert!(ok, "write into both volumes");

    // A rollout (recreate) keeps both: the new container mounts the old one's anonymous
    // volume at the same path.
    write(&scene, "db.yaml", &stateful_spec(&app, &image.tag, 2));
    let second = converge_one(&ctl, &app, Some(&first.spec_hash)).await;
    assert_ne!(second.id, first.id);
    assert_eq!(exec(&second.id, "cat /data/x /anon/y").1, "named\nanon");
    assert_eq!(volume_at(&second.id, "/anon"), anon);
    assert!(volume_exists(&anon), "a rollout never deletes a volume");

    // berth killed and restarted: a new controller on the same state changes nothing.
    drop(ctl);
    let ctl = controller(&scene, settings(&scene)).await;
    pass(&ctl).await;
    let after = running(&ctl, &app).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].id, second.id,
        "a restarted berth keeps the container"
    );
    assert_eq!(exec(&second.id, "cat /data/x").1, "named");

    // Self-heal of a stopped replica: the replacement takes over its anonymous volume.
    docker_ok(&["stop", "-t", "1", &second.id]);
    let healed = converge_one(&ctl, &app, None).await;
    assert_ne!(healed.id, second.id, "the stopped replica was replaced");
    assert_eq!(exec(&healed.id, "cat /data/x /anon/y").1, "named\nanon");
    assert_eq!(volume_at(&healed.id, "/anon"), anon);

    // Removing the app keeps the named volume (with an event) and deletes the anonymous one.
    std::fs::remove_file(scene.specs.path().join("db.yaml")).unwrap();
    pass(&ctl).await;
    assert!(running(&ctl, &app).await.is_empty(), "the app is removed");
    assert!(volume_exists(&volume), "the named volume outlives the app");
    assert!(
        !volume_exists(&anon),
        "the app's anonymous volume goes with it"
    );
    let kept = ctl
        .store()
        .events(&EventQuery {
            app: Some(app.clone()),
            event_type: Some(EventType::VolumeKept),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "one volume-kept event");
    assert!(kept[0].message.contains(&volume), "{}", kept[0].message);

    // Re-added: the data of the named volume is back.
    write(&scene, "db.yaml", &stateful_spec(&app, &image.tag, 2));
    let third = converge_one(&ctl, &app, None).await;
    assert_eq!(exec(&third.id, "cat /data/x").1, "named");

    // `berth volumes prune` refuses while the app is in the source, then deletes.
    let berth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .output()
            .expect("run berth")
    };
    let dir = scene.specs.path().to_str().unwrap().to_string();
    let prune = [
        "volumes",
        "prune",
        app.as_str(),
        "--yes",
        "--dir",
        dir.as_str(),
        "--instance",
        scene.instance.as_str(),
    ];
    let refused = berth(&prune);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("still in the source"), "{err}");
    assert!(volume_exists(&volume));

    let ls = berth(&["volumes", "ls", &app, "--instance", &scene.instance]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&volume));

    std::fs::remove_file(scene.specs.path().join("db.yaml")).unwrap();
    pass(&ctl).await;
    // Without --yes and without a terminal to ask on, nothing is deleted.
    let no_yes: Vec<&str> = prune.iter().copied().filter(|a| *a != "--yes").collect();
    let asked = berth(&no_yes);
    assert!(!asked.status.success());
    let err = String::from_utf8_lossy(&asked.stderr);
    assert!(err.contains("pass --yes"), "{err}");
    assert!(volume_exists(&volume));
    let pruned = berth(&prune);
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert!(!volume_exists(&volume), "prune deletes the volume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_reach_each_other_by_name_on_the_berth_network() {
    let scene = Scene::new("wl-dns");
    for app in ["front", "back"] {
        write(
            &scene,
            &format!("{app}.yaml"),
            &format!(
                "apiVersion: v1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  image: {}\n  ports: [{{containerPort: 8080}}]\n  replicas: 1\n  termination: {{drainSeconds: 0}}\n",
                support::IMAGE_V1
            ),
        );
    }
    let ctl = controller(&scene, settings(&scene)).await;
    pass(&ctl).await;
    let front = running(&ctl, "front").await;
    assert_eq!(front.len(), 1);
    assert_eq!(running(&ctl, "back").await.len(), 1);
    let (ok, body) = exec(&front[0].id, "wget -q -O - http://back:8080/");
    assert!(ok, "front reaches back by its app name");
    assert_eq!(body, "v1");
}

fn created_at(id: &str) -> jiff::Timestamp {
    docker_ok(&["inspect", "--format", "{{.Created}}", id])
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_creates_dependencies_first() {
    let scene = Scene::new("wl-deps");
    let spec = |app: &str, deps: &str| {
        format!(
            "apiVersion: v1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  image: {}\n  ports: [{{containerPort: 8080}}]\n  dependsOn: [{deps}]\n  health: {{httpGet: {{path: /healthz, port: 8080}}, intervalSeconds: 1}}\n  termination: {{drainSeconds: 0}}\n",
            support::IMAGE_V1
        )
    };
    write(&scene, "web.yaml", &spec("web", "api"));
    write(&scene, "api.yaml", &spec("api", "db"));
    write(&scene, "db.yaml", &spec("db", ""));
    let ctl = controller(&scene, settings(&scene)).await;
    let plan = reconcile::plan_only(&ctl).await.unwrap().0;
    let text = berth::plan::display::render_text(&plan);
    assert!(text.contains("= api: waiting for db"), "{text}");
    assert!(text.contains("= web: waiting for api"), "{text}");
    assert!(text.contains("+ db: create container"), "{text}");
    for _ in 0..6 {
        pass(&ctl).await;
        if !running(&ctl, "web").await.is_empty() {
            break;
        }
    }
    let id = |app: &'static str| {
        let ctl = ctl.clone();
        async move { running(&ctl, app).await[0].id.clone() }
    };
    let (db, api, web) = (id("db").await, id("api").await, id("web").await);
    assert!(created_at(&db) < created_at(&api), "db before api");
    assert!(created_at(&api) < created_at(&web), "api before web");

    // Removed together: in reverse order (web, then api, then db).
    let since = docker_ok(&["system", "info", "--format", "{{.SystemTime}}"]);
    for file in ["web.yaml", "api.yaml", "db.yaml"] {
        std::fs::remove_file(scene.specs.path().join(file)).unwrap();
    }
    pass(&ctl).await;
    let until = docker_ok(&["system", "info", "--format", "{{.SystemTime}}"]);
    let filter = format!("label=berth.instance={}", scene.instance);
    let events = docker_ok(&[
        "events",
        "--since",
        since.trim(),
        "--until",
        until.trim(),
        "--filter",
        &filter,
        "--filter",
        "type=container",
        "--filter",
        "event=destroy",
        "--format",
        "{{.Actor.ID}}",
    ]);
    let order: Vec<&str> = events.lines().collect();
    assert_eq!(
        order,
        vec![web.as_str(), api.as_str(), db.as_str()],
        "dependents go first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_options_reach_the_engine_and_entrypoint_replaces_the_images() {
    let scene = Scene::new("wl-opts");
    // An image whose own ENTRYPOINT exits at once: only the spec's entrypoint makes it serve.
    let image = LocalImage::new(&scene.instance, &[r#"ENTRYPOINT ["/bin/false"]"#]);
    write(
        &scene,
        "opts.yaml",
        &format!(
            "apiVersion: v1
kind: App
metadata: {{name: opts}}
spec:
  image: {}
  entrypoint: [/bin/busybox, httpd, -f, -p, \"8080\"]
  command: [-h, /www]
  workingDir: /www
  user: \"65534:65534\"
  labels: {{team: payments}}
  logging: {{maxSize: 1Mi, maxFiles: 2}}
  volumes:
    - {{tmpfs: true, mountPath: /scratch}}
  ports: [{{containerPort: 8080}}]
  health: {{httpGet: {{path: /healthz, port: 8080}}, intervalSeconds: 1}}
  termination: {{drainSeconds: 0, stopSignal: SIGINT, gracePeriodSeconds: 3}}
",
            image.tag
        ),
    );
    let ctl = controller(&scene, settings(&scene)).await;
    let report = pass(&ctl).await;
    assert_eq!(report.steps_failed, 0, "the entrypoint override serves");
    let c = &running(&ctl, "opts").await[0];
    let got = docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.Config.WorkingDir}}|{{.Config.User}}|{{index .Config.Labels \"team\"}}|{{.Config.StopSignal}}|{{index .HostConfig.LogConfig.Config \"max-size\"}}|{{index .HostConfig.LogConfig.Config \"max-file\"}}|{{range .Mounts}}{{.Type}}:{{.Destination}}{{end}}",
        &c.id,
    ]);
    assert_eq!(
        got.trim(),
        r#"["/bin/busybox","httpd","-f","-p","8080"]|["-h","/www"]|/www|65534:65534|payments|SIGINT|1048576|2|tmpfs:/scratch"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_is_refused_outside_the_allowed_prefix() {
    let scene = Scene::new("wl-host");
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(allowed.path().join("hello"), "from the host\n").unwrap();
    let inside = allowed.path().to_str().unwrap().to_string();
    let spec = |host: &str| {
        format!(
            "apiVersion: v1\nkind: App\nmetadata: {{name: media}}\nspec:\n  image: {}\n  ports: [{{containerPort: 8080}}]\n  volumes:\n    - {{hostPath: {host}, mountPath: /media, readOnly: true}}\n  termination: {{drainSeconds: 0}}\n",
            support::IMAGE_V1
        )
    };
    // Outside the prefix: refused with file, line and the flag; nothing is created.
    write(&scene, "media.yaml", &spec("/etc"));
    let mut s = settings(&scene);
    s.spec_policy.allow_host_paths = vec![inside.clone()];
    let ctl = controller(&scene, s.clone()).await;
    pass(&ctl).await;
    assert!(running(&ctl, "media").await.is_empty());
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["validate", "--allow-host-path", &inside])
        .arg(scene.specs.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "spec.volumes[0].hostPath: hostPath /etc is not under an --allow-host-path prefix"
        ),
        "{text}"
    );
    assert!(
        text.contains("media.yaml:8:"),
        "names file and line: {text}"
    );

    // The Docker socket is refused even under an allowed prefix.
    write(&scene, "media.yaml", &spec("/var/run"));
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["validate", "--allow-host-path", "/var"])
        .arg(scene.specs.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Docker socket"), "{text}");

    // Inside the prefix: mounted read-only.
    write(&scene, "media.yaml", &spec(&inside));
    pass(&ctl).await;
    let c = &running(&ctl, "media").await[0];
    assert_eq!(exec(&c.id, "cat /media/hello").1, "from the host");
    assert!(!exec(&c.id, "touch /media/x").0, "readOnly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_the_old_replica_before_creating_the_new_one() {
    let scene = Scene::new("wl-recreate");
    let spec = |generation: u32| {
        format!(
            "apiVersion: v1\nkind: App\nmetadata: {{name: solo}}\nspec:\n  image: {}\n  strategy: recreate\n  ports: [{{containerPort: 8080}}]\n  health: {{httpGet: {{path: /healthz, port: 8080}}, intervalSeconds: 1}}\n  env: [{{name: GEN, value: \"{generation}\"}}]\n  termination: {{drainSeconds: 0}}\n",
            support::IMAGE_V1
        )
    };
    write(&scene, "solo.yaml", &spec(1));
    let ctl = controller(&scene, settings(&scene)).await;
    let old = converge_one(&ctl, "solo", None).await;
    let since = docker_ok(&["system", "info", "--format", "{{.SystemTime}}"]);
    write(&scene, "solo.yaml", &spec(2));
    let plan = reconcile::plan_only(&ctl).await.unwrap().0;
    let text = berth::plan::display::render_text(&plan);
    assert!(text.contains("recreate: stop old first"), "{text}");
    let new = converge_one(&ctl, "solo", Some(&old.spec_hash)).await;
    let until = docker_ok(&["system", "info", "--format", "{{.SystemTime}}"]);
    let filter = format!("label=berth.instance={}", scene.instance);
    let events = docker_ok(&[
        "events",
        "--since",
        since.trim(),
        "--until",
        until.trim(),
        "--filter",
        &filter,
        "--filter",
        "type=container",
        "--format",
        "{{.Action}} {{.Actor.ID}}",
    ]);
    let lines: Vec<&str> = events.lines().collect();
    let at = |action: &str, id: &str| {
        lines
            .iter()
            .position(|l| *l == format!("{action} {id}"))
            .unwrap_or_else(|| panic!("no `{action} {id}` in {lines:?}"))
    };
    assert!(
        at("stop", &old.id) < at("create", &new.id),
        "old stopped before the new one was created: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_host_port_is_published_and_rebound_by_a_recreate_rollout() {
    let scene = Scene::new("wl-port");
    let host_port = support::free_port();
    let spec = |image: &str| {
        format!(
            "apiVersion: v1\nkind: App\nmetadata: {{name: fixed}}\nspec:\n  type: worker\n  image: {image}\n  strategy: recreate\n  command: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /www]\n  ports:\n  - {{containerPort: 8080, hostPort: {host_port}}}\n  termination: {{drainSeconds: 0}}\n"
        )
    };
    write(&scene, "fixed.yaml", &spec(support::IMAGE_V1));
    let ctl = controller(&scene, settings(&scene)).await;
    let first = converge_one(&ctl, "fixed", None).await;
    let addr = format!("127.0.0.1:{host_port}");
    let bound = docker_ok(&["port", &first.id, "8080/tcp"]);
    assert_eq!(bound.trim(), addr, "published on 127.0.0.1 by default");
    let body = || support::http_get(&addr, "/", None).map(|(_, b)| b);
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(b) = body() {
            got = b;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got.trim(), "v1");

    // recreate frees the port before the new container binds it.
    write(&scene, "fixed.yaml", &spec(support::IMAGE_V2));
    let report = pass(&ctl).await;
    assert_eq!(
        report.steps_failed, 0,
        "the new container binds the same port"
    );
    let second = converge_one(&ctl, "fixed", Some(&first.spec_hash)).await;
    assert_eq!(docker_ok(&["port", &second.id, "8080/tcp"]).trim(), addr);
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(b) = body() {
            got = b;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got.trim(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_sigkills_of_berth_serve_during_recreate_rollouts() {
    let scene = Scene::new("wl-kill");
    let image = LocalImage::new(&scene.instance, &[r#"VOLUME ["/anon"]"#]);
    let app = format!("db{}", &unique_name("x").replace('-', "")[1..12]);
    write(&scene, "db.yaml", &stateful_spec(&app, &image.tag, 1));
    let observer = controller(&scene, settings(&scene)).await;
    let mut serve = fault::ChildGuard(Some(scene.serve()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let first = loop {
        let up = running(&observer, &app).await;
        if let Some(c) = up.first() {
            break c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the app never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let (ok, _) = exec(&first.id, "echo named > /data/x && echo anon > /anon/y");
    assert!(ok);
    // Each round: a new generation (a recreate rollout starts), then SIGKILL at some point
    // of it, then a fresh `berth serve`.
    let mut rng = fault::Rng(0x5eed_1234);
    for generation in 2..6 {
        write(
            &scene,
            "db.yaml",
            &stateful_spec(&app, &image.tag, generation),
        );
        tokio::time::sleep(std::time::Duration::from_millis(300 + rng.next(1500))).await;
        serve.kill9();
        serve = fault::ChildGuard(Some(scene.serve()));
    }
    // Converged on the last generation, with both volumes' data.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let last = loop {
        let all: Vec<ObservedContainer> = observer
            .runtime()
            .observe()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.app == app)
            .collect();
        // The container may be removed between the list and the inspect (berth is still
        // converging): an inspect that fails just means "not yet".
        let env = all
            .first()
            .map(|c| docker(&["inspect", "--format", "{{json .Config.Env}}", &c.id]))
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).to_string())
            .unwrap_or_default();
        if all.len() == 1 && all[0].state == ContainerState::Running && env.contains("GEN=5") {
            break all[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no convergence: {all:?}\n{}",
            std::fs::read_to_string(scene.serve_log()).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    serve.kill9();
    assert_eq!(exec(&last.id, "cat /data/x /anon/y").1, "named\nanon");
    // Removing the app deletes its anonymous volumes, also those the killed serves left
    // on the host and recorded in the store, so nothing unlabelled stays behind.
    let anon = volume_at(&last.id, "/anon");
    std::fs::remove_file(scene.specs.path().join("db.yaml")).unwrap();
    pass(&observer).await;
    assert!(
        running(&observer, &app).await.is_empty(),
        "the app is removed"
    );
    assert!(!volume_exists(&anon), "its anonymous volume goes with it");
    assert!(
        observer
            .store()
            .kept_volumes(&app)
            .await
            .unwrap()
            .is_empty(),
        "every recorded anonymous volume is gone"
    );
}

/// Removes the named (unlabelled) anonymous volumes on drop, even when the test fails.
struct AnonymousVolumes(Vec<String>);

impl Drop for AnonymousVolumes {
    fn drop(&mut self) {
        for volume in &self.0 {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_volumes_of_scaled_in_replicas_are_kept_then_deleted_with_the_app() {
    let scene = Scene::new("wl-scalein");
    let image = LocalImage::new(&scene.instance, &[r#"VOLUME ["/anon"]"#]);
    let app = format!("si{}", &unique_name("x").replace('-', "")[1..12]);
    let spec = |replicas: u32| {
        format!(
            "apiVersion: v1
kind: App
metadata: {{name: {app}}}
spec:
  image: {}
  replicas: {replicas}
  ports: [{{containerPort: 8080}}]
  health: {{httpGet: {{path: /healthz, port: 8080}}, intervalSeconds: 1}}
  termination: {{drainSeconds: 0, gracePeriodSeconds: 1}}
",
            image.tag
        )
    };
    write(&scene, "app.yaml", &spec(2));
    let ctl = controller(&scene, settings(&scene)).await;
    let mut two = Vec::new();
    for _ in 0..15 {
        pass(&ctl).await;
        two = running(&ctl, &app).await;
        if two.len() == 2 {
            break;
        }
    }
    assert_eq!(two.len(), 2, "two replicas run");
    let volumes: Vec<String> = two.iter().map(|c| volume_at(&c.id, "/anon")).collect();
    let _guard = AnonymousVolumes(volumes.clone());
    assert!(volumes.iter().all(|v| v.len() == 64), "{volumes:?}");

    // Scale-in: the removed replica's volume stays on the host and is recorded.
    write(&scene, "app.yaml", &spec(1));
    let one = converge_one(&ctl, &app, None).await;
    let left = volume_at(&one.id, "/anon");
    let removed: Vec<String> = volumes.iter().filter(|v| **v != left).cloned().collect();
    assert_eq!(removed.len(), 1, "{volumes:?} vs {left}");
    assert!(
        volume_exists(&removed[0]),
        "scale-in never deletes a volume"
    );
    assert_eq!(
        ctl.store().kept_volumes(&app).await.unwrap(),
        removed,
        "the scaled-in replica's volume is recorded"
    );

    // Removing the app deletes both: its last container's and the recorded one.
    std::fs::remove_file(scene.specs.path().join("app.yaml")).unwrap();
    pass(&ctl).await;
    assert!(running(&ctl, &app).await.is_empty(), "the app is removed");
    for volume in &volumes {
        assert!(!volume_exists(volume), "{volume} goes with the app");
    }
    assert!(
        ctl.store().kept_volumes(&app).await.unwrap().is_empty(),
        "the record goes with the volume"
    );
}
