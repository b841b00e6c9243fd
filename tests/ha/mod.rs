//! Highly available controllers' scenarios, shared by tests/ha_postgres.rs (bounded) and the
//! compare bench's `ha` section (50 rounds, default lease): a [`Node`] (a `berth serve`
//! child with its own state dir, private nginx and API port on the scene's specs, instance
//! and network), [`one_leader`] (exactly one live controller leads and all agree),
//! [`converged`] (exact containers, none stopped, every node's nginx serves the app) and
//! [`kill_leader_rounds`] (kill -9 of the leader mid-rollout, takeover time per round).
//! Include next to `mod support; mod fault;`.
//! Must not touch: anything outside the scene's instance label, network and temp dirs.
#![allow(dead_code)]

use crate::fault::{ChildGuard, Rng, Scene};
use crate::support::{free_port, http_get, path_with_sbin, NginxGuard};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One `berth serve` controller of the pair: its own state dir (private nginx), nginx port
/// and API port; the scene's specs, instance and network.
pub struct Node {
    /// First: fields drop in order, and the guard reads the pid file in `state`.
    _nginx: NginxGuard,
    pub state: tempfile::TempDir,
    pub port: u16,
    pub api: u16,
}

impl Node {
    pub fn new() -> Node {
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

    pub fn log(&self) -> std::path::PathBuf {
        self.state.path().join("serve.log")
    }

    /// Starts `berth serve` on this node with lease `(duration, renewal)` in seconds.
    pub fn serve(
        &self,
        scene: &Scene,
        store: &str,
        id: &str,
        lease: (&str, &str),
    ) -> std::process::Child {
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
                lease.0,
                "--lease-renew",
                lease.1,
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
    pub fn leader(&self) -> Option<Value> {
        let (status, body) =
            http_get(&format!("127.0.0.1:{}", self.api), "/api/v1/leader", None).ok()?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    pub fn status(&self, path: &str) -> u16 {
        http_get(&format!("127.0.0.1:{}", self.api), path, None)
            .map(|(s, _)| s)
            .unwrap_or(0)
    }

    pub fn get(&self, path: &str) -> u16 {
        crate::support::http_status(self.port, path).unwrap_or(0)
    }
}

/// The controllers' answers once exactly one of the live ones leads and all agree on it:
/// (index of the leader, its id, the epoch).
pub async fn one_leader(nodes: &[&Node], limit: Duration) -> Result<(usize, String, i64), String> {
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
pub fn instance_containers(instance: &str) -> Vec<(String, String, String)> {
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
pub async fn converged(
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

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Two controllers and what [`kill_leader_rounds`] left: the nodes, their children (killed
/// on drop), the leader's index and id, and each round's takeover time (kill -9 of the
/// leader -> the survivor says it leads, i.e. acts).
pub struct HaRun {
    /// Before `nodes`: the children die before their nginx and state dirs go.
    pub children: [ChildGuard; 2],
    pub nodes: [Node; 2],
    pub leader: usize,
    pub id: String,
    pub takeovers: Vec<Duration>,
}

impl HaRun {
    pub fn report(&self, e: String) -> String {
        format!(
            "{e}\n--- a:\n{}\n--- b:\n{}",
            tail(&self.nodes[0].log()),
            tail(&self.nodes[1].log())
        )
    }
}

/// Two `berth serve` on `store` with `lease`; the app `web` (2 replicas) converges; then
/// `rounds` times: flip its image, kill -9 the leader once the rollout has begun (plus
/// 0-1 s), require the survivor to take over with a higher epoch, restart the killed one as
/// a follower (a new id), and require one agreed leader and convergence (no duplicate,
/// no orphan, both nginx serving).
pub async fn kill_leader_rounds(
    scene: &Scene,
    store: &str,
    lease: (&str, &str),
    rounds: usize,
    rng: &mut Rng,
) -> Result<HaRun, String> {
    let nodes = [Node::new(), Node::new()];
    scene.write("web", "berth-demo:v1", 2);
    let children = [
        ChildGuard(Some(nodes[0].serve(scene, store, "ctl-a-0", lease))),
        ChildGuard(Some(nodes[1].serve(scene, store, "ctl-b-0", lease))),
    ];
    let mut run = HaRun {
        children,
        nodes,
        leader: 0,
        id: String::new(),
        takeovers: Vec::new(),
    };
    let takeover_limit = Duration::from_secs_f64(
        lease.0.parse::<f64>().unwrap() + 2.0 * lease.1.parse::<f64>().unwrap() + 10.0,
    );
    let refs: Vec<&Node> = run.nodes.iter().collect();
    let (leader, id, mut epoch) = one_leader(&refs, Duration::from_secs(30))
        .await
        .map_err(|e| run.report(e))?;
    drop(refs);
    (run.leader, run.id) = (leader, id);
    {
        let refs: Vec<&Node> = run.nodes.iter().collect();
        converged(scene, &refs, "berth-demo:v1", 2, Duration::from_secs(60))
            .await
            .map_err(|e| run.report(e))?;
    }
    let mut image = "berth-demo:v1";
    for round in 1..=rounds {
        image = if image == "berth-demo:v1" {
            "berth-demo:v2"
        } else {
            "berth-demo:v1"
        };
        scene.write("web", image, 2);
        let started = Instant::now();
        while !instance_containers(&scene.instance)
            .iter()
            .any(|(_, i, _)| i == image)
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next(1000))).await;
        let leader = run.leader;
        run.children[leader].kill9();
        let killed = Instant::now();
        let survivor = 1 - leader;
        let (_, new_id, new_epoch) = one_leader(&[&run.nodes[survivor]], takeover_limit)
            .await
            .map_err(|e| run.report(format!("round {round}: {e}")))?;
        run.takeovers.push(killed.elapsed());
        if new_id == run.id || new_epoch <= epoch {
            return Err(run.report(format!(
                "round {round}: {new_id} (epoch {new_epoch}) after {} (epoch {epoch})",
                run.id
            )));
        }
        if rounds <= 20 {
            eprintln!(
                "round {round}: {new_id} leads (epoch {new_epoch}) {:?} after the kill",
                killed.elapsed()
            );
        }
        let side = if leader == 0 { "a" } else { "b" };
        run.children[leader].0 =
            Some(run.nodes[leader].serve(scene, store, &format!("ctl-{side}-{round}"), lease));
        let refs: Vec<&Node> = run.nodes.iter().collect();
        let (now_leader, now_id, now_epoch) = one_leader(&refs, Duration::from_secs(30))
            .await
            .map_err(|e| run.report(format!("round {round}: {e}")))?;
        if (now_leader, now_epoch) != (survivor, new_epoch) {
            return Err(run.report(format!(
                "round {round}: the restarted controller took the lease from a live leader"
            )));
        }
        converged(scene, &refs, image, 2, Duration::from_secs(90))
            .await
            .map_err(|e| run.report(format!("round {round}: {e}")))?;
        drop(refs);
        (run.leader, run.id, epoch) = (now_leader, now_id, now_epoch);
    }
    Ok(run)
}
