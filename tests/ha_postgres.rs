//! Highly available controllers (real PostgreSQL, real engine, real nginx, real `berth serve`
//! child processes): two controllers on one PostgreSQL store and one engine elect exactly
//! one leader (both say so through `GET /api/v1/leader`); the follower keeps its own nginx
//! serving the leader's containers; kill -9 of the leader in the middle of a rollout hands
//! over to the other controller, and every round converges with one leader and no duplicate
//! or orphan container; three controllers elect one leader and, when it is SIGKILLed, one of
//! the other two takes over; PostgreSQL stopped for 20 s keeps containers and nginx serving
//! (`/readyz` 503), then everything resumes.
//!
//! Each test has its own instance label and network, state dirs and nginx ports, its own
//! PostgreSQL (temp dir, free port), and cleans up in Drop guards (children SIGKILLed,
//! nginx stopped, containers removed, PostgreSQL stopped by pid) even on failure. The
//! leases are short here (3 s, renewed every 0.5 s) so rounds stay quick; the compare bench
//! measures takeover with the defaults.

mod fault;
mod ha;
mod support;

use fault::{ChildGuard, Rng, Scene};
use ha::{converged, instance_containers, one_leader, tail, Node};
use std::time::{Duration, Instant};
use support::http_get;
use support::postgres::Postgres;

/// A short lease (3 s, renewed every 0.5 s) keeps the rounds quick.
const LEASE: (&str, &str) = ("3", "0.5");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_kill9_of_the_leader_mid_rollout_converges_without_duplicates() {
    let scene = Scene::new("ha-kill");
    let pg = Postgres::start();
    let store = pg.database();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // 3 rounds here; the compare bench runs 50 with the default lease.
    let run = ha::kill_leader_rounds(&scene, &store, LEASE, 3, &mut rng)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.takeovers.len(), 3);
    assert_eq!(run.nodes[1 - run.leader].status("/readyz"), 200);
    // The metrics say who leads, on both controllers.
    let metrics = |n: &Node| {
        http_get(&format!("127.0.0.1:{}", n.api), "/metrics", None)
            .unwrap()
            .1
    };
    let lead = metrics(&run.nodes[run.leader]);
    assert!(
        lead.contains(&format!("berth_leader{{id=\"{}\"}} 1", run.id)),
        "{lead}"
    );
    assert!(lead.contains("berth_leader_changes_total 1"), "{lead}");
    let follow = metrics(&run.nodes[1 - run.leader]);
    assert!(follow.contains("berth_leader{id=\"ctl-"), "{follow}");
    assert!(follow.contains("} 0\n"), "{follow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_elect_one_leader_and_hand_over_on_kill9() {
    let scene = Scene::new("ha-three");
    let pg = Postgres::start();
    let store = pg.database();
    let nodes = [Node::new(), Node::new(), Node::new()];
    scene.write("web", "berth-demo:v1", 2);
    let mut children: Vec<ChildGuard> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            ChildGuard(Some(node.serve(
                &scene,
                &store,
                &format!("ctl-three-{i}"),
                LEASE,
            )))
        })
        .collect();
    let report = |e: String| {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.api, tail(&n.log())))
            .collect();
        format!("{e}\n{}", logs.join("\n"))
    };
    let all: Vec<&Node> = nodes.iter().collect();
    let (leader, id, epoch) = one_leader(&all, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    converged(&scene, &all, "berth-demo:v1", 2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));

    // The leader dies; exactly one of the other two leads, under a new epoch, and a change
    // made meanwhile converges with no duplicate or orphan container.
    children[leader].kill9();
    scene.write("web", "berth-demo:v2", 2);
    let rest: Vec<&Node> = (0..3).filter(|i| *i != leader).map(|i| &nodes[i]).collect();
    let (_, next_id, next_epoch) = one_leader(&rest, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    assert_ne!(
        next_id,
        id,
        "{}",
        report("the dead controller still leads".into())
    );
    assert!(next_epoch > epoch, "{next_epoch} after {epoch}");
    converged(&scene, &rest, "berth-demo:v2", 2, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{}", report(e)));
    let containers = instance_containers(&scene.instance);
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert!(
        containers
            .iter()
            .all(|(_, image, state)| image == "berth-demo:v2" && state == "running"),
        "{containers:?}"
    );
    drop(children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_keeps_containers_serving_then_resumes() {
    let scene = Scene::new("ha-outage");
    let mut pg = Postgres::start();
    let store = pg.database();
    let node = Node::new();
    scene.write("web", "berth-demo:v1", 2);
    let _child = ChildGuard(Some(node.serve(&scene, &store, "ctl-outage", LEASE)));
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

    // PostgreSQL gone for 20 s (several leases). Until its lease would run out the leader
    // may still act; then it stops. From then on containers keep running, nginx keeps
    // serving them, readiness says the store is down, and a spec change touches nothing.
    pg.stop();
    let down = Instant::now();
    while node.leader().is_none_or(|l| l["is_leader"] == true) {
        assert!(
            down.elapsed() < Duration::from_secs(15),
            "{}",
            report("the leader kept acting without its store".into())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = instance_containers(&scene.instance);
    scene.write("web", "berth-demo:v2", 2);
    let mut saw_not_ready = false;
    let mut saw_store_down = false;
    while down.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            node.get("/web/"),
            200,
            "{}",
            report("nginx stopped serving".into())
        );
        saw_not_ready |= node.status("/readyz") == 503;
        saw_store_down |= http_get(&format!("127.0.0.1:{}", node.api), "/metrics", None)
            .is_ok_and(|(_, text)| text.contains("berth_store_up 0"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(saw_not_ready, "{}", report("readyz never said 503".into()));
    assert!(
        saw_store_down,
        "{}",
        report("berth_store_up never said 0".into())
    );
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
