//! Highly available controllers (real PostgreSQL, real engine, real nginx, real `berth serve`
//! child processes): two controllers on one PostgreSQL store and one engine elect exactly
//! one leader (both say so through `GET /api/v1/leader`); the follower keeps its own nginx
//! serving the leader's containers; kill -9 of the leader in the middle of a rollout hands
//! over to the other controller, and every round converges with one leader and no duplicate
//! or orphan container; PostgreSQL stopped for a while keeps containers and nginx serving
//! (`/readyz` 503), then everything resumes.
//!
//! Each test has its own instance label and network, state dirs and nginx ports, its own
//! PostgreSQL (temp dir, free port), and cleans up in Drop guards (children SIGKILLed,
//! nginx stopped, containers removed, PostgreSQL stopped by pid) even on failure. The
//! leases are short here (3 s, renewed every 0.5 s) so rounds stay quick; the compare bench
//! measures takeover with the defaults.

mod fault;
mod support;

use fault::{ChildGuard, Rng, Scene};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::postgres::Postgres;
use support::{free_port, http_get, path_with_sbin, NginxGuard};

const LEASE: &str = "3";
const RENEW: &str = "0.5";

/// One `berth serve` controller of the pair: its own state dir (private nginx), nginx port
/// and API port; the scene's specs, instance and network.
struct Node {
    state: tempfile::TempDir,
    port: u16,
    api: u16,
    _nginx: NginxGuard,
}

impl Node {
    fn new() -> Node {
        let state = tempfile::tempdir().unwrap();
        Node {
            _nginx: NginxGuard {
                prefix: state.path().join("nginx"),
            },
            state,
            port: free_port(),
            api: free_port(),
        }
    }

    fn log(&self) -> std::path::PathBuf {
        self.state.path().join("serve.log")
    }

    fn serve(&self, scene: &Scene, store: &str, id: &str) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "serve",
                "--dir",
                scene.specs.path().to_str().unwrap(),
                "--state-dir",
                self.state.path().to_str().unwrap(),
                "--store",
                store,
                "--controller-id",
                id,
                "--lease-duration",
                LEASE,
                "--lease-renew",
                RENEW,
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--instance",
                &scene.instance,
                "--network",
                &scene.instance,
                "--interval",
                "1",
                "--api-listen",
                &format!("127.0.0.1:{}", self.api),
                "--no-autoscale",
                "--stop-timeout",
                "1",
            ])
            .env("PATH", path_with_sbin())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log())
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    }

    /// `GET /api/v1/leader`, or None while the API does not answer.
    fn leader(&self) -> Option<Value> {
        let (status, body) =
            http_get(&format!("127.0.0.1:{}", self.api), "/api/v1/leader", None).ok()?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    fn status(&self, path: &str) -> u16 {
        http_get(&format!("127.0.0.1:{}", self.api), path, None)
            .map(|(s, _)| s)
            .unwrap_or(0)
    }

    fn get(&self, path: &str) -> u16 {
        support::http_status(self.port, path).unwrap_or(0)
    }
}

/// The controllers' answers once exactly one of the live ones leads and all agree on it:
/// (index of the leader, its id, the epoch).
async fn one_leader(nodes: &[&Node], limit: Duration) -> Result<(usize, String, i64), String> {
    let started = Instant::now();
    loop {
        let last = nodes.iter().map(|n| n.leader()).collect::<Vec<_>>();
        if last.iter().all(Option::is_some) {
            let views: Vec<&Value> = last.iter().flatten().collect();
            let leaders: Vec<usize> = (0..views.len())
                .filter(|i| views[*i]["is_leader"] == true)
                .collect();
            let agreed = views
                .iter()
                .all(|v| v["leader"] == views[0]["leader"] && v["epoch"] == views[0]["epoch"]);
            if leaders.len() == 1 && agreed {
                let v = views[leaders[0]];
                return Ok((
                    leaders[0],
                    v["leader"].as_str().unwrap().to_string(),
                    v["epoch"].as_i64().unwrap(),
                ));
            }
            if leaders.len() > 1 {
                return Err(format!("two leaders at once: {views:?}"));
            }
        }
        if started.elapsed() > limit {
            return Err(format!(
                "no single agreed leader within {limit:?}: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `docker ps -a` of the scene's instance: (name, image, state).
fn instance_containers(instance: &str) -> Vec<(String, String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.instance={instance}"),
            "--format",
            "{{.Names}} {{.Image}} {{.State}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace().map(str::to_string);
            (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until the app runs exactly `replicas` containers of `image` (nothing else of the
/// instance, nothing stopped: no duplicate, no orphan) and every node's nginx serves it.
async fn converged(
    scene: &Scene,
    nodes: &[&Node],
    image: &str,
    replicas: usize,
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let seen = instance_containers(&scene.instance);
        let exact = seen.len() == replicas
            && seen
                .iter()
                .all(|(_, i, state)| i == image && state == "running");
        if exact && nodes.iter().all(|n| n.get("/web/") == 200) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            let served: Vec<u16> = nodes.iter().map(|n| n.get("/web/")).collect();
            return Err(format!(
                "not converged to {replicas} x {image} within {limit:?}: {seen:?}, nginx answers {served:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_kill9_of_the_leader_mid_rollout_converges_without_duplicates() {
    let scene = Scene::new("ha-kill");
    let pg = Postgres::start();
    let store = pg.database();
    let nodes = [Node::new(), Node::new()];
    let refs: Vec<&Node> = nodes.iter().collect();
    scene.write("web", "berth-demo:v1", 2);
    let mut children = [
        ChildGuard(Some(nodes[0].serve(&scene, &store, "ctl-a-0"))),
        ChildGuard(Some(nodes[1].serve(&scene, &store, "ctl-b-0"))),
    ];
    let report = |e: String| {
        format!(
            "{e}\n--- a:\n{}\n--- b:\n{}",
            tail(&nodes[0].log()),
            tail(&nodes[1].log())
        )
    };
    let (mut leader, mut id, mut epoch) = one_leader(&refs, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    eprintln!("leader {id} (epoch {epoch})");
    // The follower's nginx serves the leader's containers too.
    converged(&scene, &refs, "berth-demo:v1", 2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    assert_eq!(nodes[1 - leader].status("/readyz"), 200);

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut image = "berth-demo:v1";
    // 3 rounds here; the compare bench runs 50.
    for round in 1..=3 {
        image = if image == "berth-demo:v1" {
            "berth-demo:v2"
        } else {
            "berth-demo:v1"
        };
        scene.write("web", image, 2);
        // Kill the leader once its rollout has begun (a container of the new image exists),
        // after a random extra 0-1 s.
        let started = Instant::now();
        while !instance_containers(&scene.instance)
            .iter()
            .any(|(_, i, _)| i == image)
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next(1000))).await;
        children[leader].kill9();
        let killed = Instant::now();
        // Only the survivor answers for now: it must take over.
        let survivor = 1 - leader;
        let (_, new_id, new_epoch) = one_leader(&[refs[survivor]], Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", report(e)));
        assert_ne!(new_id, id, "round {round}: the dead leader cannot lead");
        assert!(
            new_epoch > epoch,
            "round {round}: a takeover raises the epoch"
        );
        eprintln!(
            "round {round}: {new_id} leads (epoch {new_epoch}) {:?} after the kill",
            killed.elapsed()
        );
        // The killed controller comes back (a new process: a new id) as a follower.
        let side = if leader == 0 { "a" } else { "b" };
        children[leader].0 =
            Some(nodes[leader].serve(&scene, &store, &format!("ctl-{side}-{round}")));
        let (now_leader, now_id, now_epoch) = one_leader(&refs, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", report(e)));
        assert_eq!(
            (now_leader, now_epoch),
            (survivor, new_epoch),
            "round {round}: a restarted controller does not take the lease from a live leader"
        );
        converged(&scene, &refs, image, 2, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {}", report(e)));
        (leader, id, epoch) = (now_leader, now_id, now_epoch);
    }
    // The metrics say who leads, on both controllers.
    let metrics = |n: &Node| {
        http_get(&format!("127.0.0.1:{}", n.api), "/metrics", None)
            .unwrap()
            .1
    };
    let lead = metrics(&nodes[leader]);
    assert!(
        lead.contains(&format!("berth_leader{{id=\"{id}\"}} 1")),
        "{lead}"
    );
    assert!(lead.contains("berth_leader_changes_total 1"), "{lead}");
    let follow = metrics(&nodes[1 - leader]);
    assert!(follow.contains("berth_leader{id=\"ctl-"), "{follow}");
    assert!(follow.contains("} 0\n"), "{follow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_keeps_containers_serving_then_resumes() {
    let scene = Scene::new("ha-outage");
    let mut pg = Postgres::start();
    let store = pg.database();
    let node = Node::new();
    scene.write("web", "berth-demo:v1", 2);
    let _child = ChildGuard(Some(node.serve(&scene, &store, "ctl-outage")));
    let report = |e: String| format!("{e}\n--- log:\n{}", tail(&node.log()));
    one_leader(&[&node], Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    converged(
        &scene,
        &[&node],
        "berth-demo:v1",
        2,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", report(e)));
    let before = instance_containers(&scene.instance);

    // PostgreSQL gone for longer than the lease: containers keep running, nginx keeps
    // serving them, readiness says the store is down, nothing is touched.
    pg.stop();
    scene.write("web", "berth-demo:v2", 2);
    let down = Instant::now();
    let mut saw_not_ready = false;
    while down.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            node.get("/web/"),
            200,
            "{}",
            report("nginx stopped serving".into())
        );
        saw_not_ready |= node.status("/readyz") == 503;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(saw_not_ready, "{}", report("readyz never said 503".into()));
    assert_eq!(
        instance_containers(&scene.instance),
        before,
        "nothing changes while the store is down"
    );
    let follower = node.leader().unwrap();
    assert_eq!(
        follower["is_leader"], false,
        "a leader that cannot renew stops acting"
    );

    // Back: the controller leads again and finishes the change it could not make.
    pg.start_again();
    one_leader(&[&node], Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    converged(
        &scene,
        &[&node],
        "berth-demo:v2",
        2,
        Duration::from_secs(90),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", report(e)));
    let started = Instant::now();
    while node.status("/readyz") != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            report("readyz stayed 503".into())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(node.log()).unwrap();
    assert!(
        log.contains("store down"),
        "{}",
        report("no store down".into())
    );
}

/// A no-op pass of the leader makes no store round trip (the overrides, known apps and
/// self-heal state are kept until this process writes them; the lease is renewed by its own
/// task, never by a pass): counted in the server's statement log.
#[tokio::test]
async fn a_no_op_pass_on_postgres_makes_no_store_round_trip() {
    use berth::leader::{Leadership, LeaseSettings};
    use berth::store::{Store, StoreUrl};
    let scene = Scene::new("ha-noop");
    let pg = Postgres::start();
    let url = pg.database();
    let store = Store::connect(&StoreUrl::parse(&url).unwrap())
        .await
        .unwrap();
    let leadership = Leadership::leased("ctl-noop", &store);
    let lease = LeaseSettings {
        duration: Duration::from_secs(120),
        renew: Duration::from_secs(30),
    };
    berth::leader::take_once(&store, &leadership, &lease)
        .await
        .unwrap();
    let ctl = support::docker_controller_on(
        &scene.instance,
        None,
        scene.state.path(),
        scene.port,
        scene.dir_settings(),
        store,
        leadership,
    )
    .await;
    scene.write("web", "berth-demo:v1", 1);
    for _ in 0..10 {
        let report = berth::reconcile::run_pass(&ctl, "test").await.unwrap();
        if report.steps_applied == 0 && scene.get("/web/") == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(scene.get("/web/"), 200);
    // One more pass records the synced status; then passes change nothing.
    berth::reconcile::run_pass(&ctl, "test").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = pg.statements();
    assert!(
        before > 0,
        "the server logs every statement:
{}",
        pg.log()
    );
    for _ in 0..5 {
        let report = berth::reconcile::run_pass(&ctl, "test").await.unwrap();
        assert_eq!(report.steps_applied, 0, "{report:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = pg.statements() - before;
    assert_eq!(
        during,
        0,
        "5 no-op passes ran statements:\n{}",
        pg.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
