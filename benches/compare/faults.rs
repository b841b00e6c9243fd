//! The long versions of the fault suite (tests/fault_docker.rs runs the bounded ones in CI),
//! on the same scenarios (tests/fault/mod.rs): 200 SIGKILLs of `berth serve` during
//! reconciles, the Docker engine cut and restored 10 times, nginx SIGKILLed with a proxy
//! file deleted 10 times, and the hostile corpus next to a running app. Any broken
//! guarantee panics with what was seen; the table only reports runs that held.

use crate::fault::{containers, DockerLink, Rng, Scene};
use berth::reconcile;
use berth::runtime::ContainerState;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

/// SIGKILL rounds in all, checked for convergence every [`BLOCK`] rounds.
const KILLS: usize = 200;
const BLOCK: usize = 50;
const CYCLES: usize = 10;

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

async fn kills(md: &mut String) {
    let scene = Scene::new("bench-kill");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let _ = writeln!(
        md,
        "\n#### kill -9 of `berth serve` during reconciles ({KILLS} kills, 3 apps)\n\n\
         Each round changes the three specs (random image v1/v2, 1–3 replicas), starts `berth \
         serve` and SIGKILLs it after 0–1.5 s; every {BLOCK} rounds berth is started once more \
         and must converge: each app at its wanted image and count, running, served through \
         nginx, no other container under the instance label, no duplicate, nothing stopped \
         left over.\n\n\
         | rounds | kills mid-pass | converged after restart (s) | containers at the end | orphans | duplicates |\n\
         |---|---|---|---|---|---|"
    );
    let started = Instant::now();
    let mut mid = 0;
    for block in 0..KILLS / BLOCK {
        let report = crate::fault::kill_rounds(
            &scene,
            &["alpha", "beta", "gamma"],
            BLOCK,
            &mut rng,
            Duration::from_secs(120),
        )
        .await
        .unwrap_or_else(|e| panic!("kill block {block}: {e}"));
        mid += report.kills_mid_pass;
        eprintln!("kill block {block}: {report:?}");
        let _ = writeln!(
            md,
            "| {}–{} | {} | {} | {} | 0 | 0 |",
            block * BLOCK + 1,
            (block + 1) * BLOCK,
            report.kills_mid_pass,
            secs(report.converge_after_restart),
            report.containers
        );
    }
    let _ = writeln!(
        md,
        "\n{KILLS} kills ({mid} while a pass was applying changes) in {:.0} s.",
        started.elapsed().as_secs_f64()
    );
}

async fn engine(md: &mut String) {
    let scene = Scene::new("bench-engine");
    let link = DockerLink::start(scene.state.path().join("docker.sock"));
    let ctl = scene.controller(Some(&link.host())).await;
    scene.write("web", "berth-demo:v1", 1);
    converge(&ctl, Duration::from_secs(60)).await;
    let _ = writeln!(
        md,
        "\n#### Docker engine unreachable, then back ({CYCLES} cycles)\n\n\
         berth talks to the engine through a unix-socket forwarder that is cut for ~2 s: a \
         spec change (image and replica count) is made while it is cut, a pass runs and must \
         fail with an error naming the engine, nginx keeps answering for the running \
         replicas; then the link comes back and passes run until the plan is empty.\n\n\
         | cycle | pass error while cut | `/web/` answers 200 while cut | converged after the engine came back (s) |\n\
         |---|---|---|---|"
    );
    for cycle in 0..CYCLES {
        let (image, replicas) = if cycle % 2 == 0 {
            ("berth-demo:v2", 2)
        } else {
            ("berth-demo:v1", 1)
        };
        link.set(false);
        scene.write("web", image, replicas);
        let error = reconcile::run_pass(&ctl, "bench")
            .await
            .expect_err("a pass without the engine fails")
            .to_string();
        assert!(
            error.contains("docker") || error.contains("engine"),
            "unclear error: {error}"
        );
        let mut served = (0, 0);
        let cut = Instant::now();
        while cut.elapsed() < Duration::from_secs(2) {
            served.1 += 1;
            if scene.get("/web/") == 200 {
                served.0 += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        link.set(true);
        let back = Instant::now();
        converge(&ctl, Duration::from_secs(60)).await;
        let took = back.elapsed();
        let running: Vec<_> = containers(&ctl)
            .await
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        assert_eq!(
            running.len(),
            replicas as usize,
            "cycle {cycle}: {running:?}"
        );
        assert!(running.iter().all(|c| c.image == image));
        let error = error.replace(&link.path.display().to_string(), "<cut socket>");
        let short: String = error.chars().take(70).collect();
        let _ = writeln!(
            md,
            "| {} | `{}…` | {} of {} | {} |",
            cycle + 1,
            short.replace('|', "\\|").replace('`', "'"),
            served.0,
            served.1,
            secs(took)
        );
    }
}

async fn nginx(md: &mut String) {
    let scene = Scene::new("bench-nginx");
    let ctl = scene.controller(None).await;
    scene.write("web", "berth-demo:v1", 1);
    converge(&ctl, Duration::from_secs(60)).await;
    let _ = writeln!(
        md,
        "\n#### nginx SIGKILLed and a proxy file deleted ({CYCLES} cycles)\n\n\
         The private nginx master gets SIGKILL and `conf.d/web.loc` is deleted; passes run \
         every 200 ms until a new master serves the restored file. Under `berth serve` the \
         next timer pass does this (`--interval`, 5 s by default), so add up to one interval \
         to these times.\n\n\
         | cycle | restored, serving 200 (s) |\n|---|---|"
    );
    for cycle in 0..CYCLES {
        let pid = ctl.proxy().running_pid().await.expect("nginx running");
        assert!(Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        std::fs::remove_file(scene.state.path().join("nginx/conf.d/web.loc")).unwrap();
        let killed = Instant::now();
        loop {
            let pass = reconcile::run_pass(&ctl, "bench").await;
            let master = ctl.proxy().running_pid().await;
            if pass.is_ok() && master.is_some_and(|m| m != pid) && scene.get("/web/") == 200 {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "cycle {cycle}: nginx not restored: {pass:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(scene.state.path().join("nginx/conf.d/web.loc").exists());
        let _ = writeln!(md, "| {} | {} |", cycle + 1, secs(killed.elapsed()));
    }
}

async fn hostile(md: &mut String) {
    let scene = Scene::new("bench-hostile");
    let ctl = scene.controller(None).await;
    scene.write("web", "berth-demo:v1", 1);
    converge(&ctl, Duration::from_secs(60)).await;
    let before: Vec<String> = containers(&ctl).await.into_iter().map(|c| c.id).collect();
    let corpus = crate::fault::hostile_corpus();
    for (file, text) in &corpus {
        std::fs::write(scene.specs.path().join(file), text).unwrap();
    }
    let started = Instant::now();
    let report = reconcile::run_pass(&ctl, "bench").await.unwrap();
    let took = started.elapsed();
    assert_eq!(report.steps_failed, 0, "{report:?}");
    let last = ctl.last_pass().unwrap();
    let after: Vec<String> = containers(&ctl).await.into_iter().map(|c| c.id).collect();
    assert_eq!(after, before, "nothing running was disturbed");
    assert_eq!(scene.get("/web/"), 200);
    let _ = writeln!(
        md,
        "\n#### Hostile spec corpus next to a running app\n\n\
         One pass over the running app plus {} hostile files took {:.0} ms; every file got \
         an issue with its file and line, the running container and its route were untouched.\n\n\
         | file | first issue berth reported |\n|---|---|",
        corpus.len(),
        took.as_secs_f64() * 1000.0
    );
    for (file, _) in &corpus {
        let issue = last
            .issues
            .iter()
            .find(|i| i.file.to_string_lossy().ends_with(file.as_str()))
            .unwrap_or_else(|| panic!("no issue names {file}"));
        let text: String = format!("line {}: {}", issue.line, issue)
            .chars()
            .take(140)
            .collect();
        let _ = writeln!(md, "| `{file}` | {} |", text.replace('|', "\\|"));
    }
}

/// Passes until the plan is empty.
async fn converge(
    ctl: &std::sync::Arc<berth::reconcile::Controller<berth::runtime::docker::DockerRuntime>>,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        if let Ok(report) = reconcile::run_pass(ctl, "bench").await {
            if !report.changed {
                return;
            }
        }
        assert!(started.elapsed() < limit, "no convergence in {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn section() -> String {
    let mut md = String::from("\n### Fault suite, long versions\n");
    kills(&mut md).await;
    engine(&mut md).await;
    nginx(&mut md).await;
    hostile(&mut md).await;
    md
}
