//! Swarm scenes for tests and benches (issue 14): `SwarmGuard` makes the engine a
//! single-node swarm (`docker swarm init --advertise-addr 127.0.0.1`) for one user at a
//! time (a process-wide mutex and a lock file across processes) and leaves it on drop
//! when it created it; `ServiceCleanup` removes an instance's
//! services; `SwarmScene` is a `Scene` plus both and builds a swarm-backend controller.

use super::*;
use berth::reconcile::Controller;
use berth::runtime::swarm::SwarmRuntime;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Swarm tests run one at a time: they share the engine's swarm membership.
pub static SWARM_LOCK: Mutex<()> = Mutex::new(());

/// The lock file that serializes swarm users across processes (the swarm tests and the
/// bench's swarm section), besides [`SWARM_LOCK`] within one.
pub const SWARM_LOCK_FILE: &str = "/tmp/berth-swarm-tests.lock";

/// Both locks: this process's mutex and an exclusive `flock` on [`SWARM_LOCK_FILE`]
/// (released when the file closes, also when the process dies).
pub struct SwarmLock {
    _file: std::fs::File,
    _lock: MutexGuard<'static, ()>,
}

impl SwarmLock {
    pub fn acquire() -> SwarmLock {
        let lock = SWARM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SWARM_LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {SWARM_LOCK_FILE}: {e}"));
        file.lock()
            .unwrap_or_else(|e| panic!("cannot lock {SWARM_LOCK_FILE}: {e}"));
        SwarmLock {
            _file: file,
            _lock: lock,
        }
    }
}

/// Holds the locks; makes the engine a swarm manager when it is not one, and leaves the
/// swarm on drop only when this guard created it (removing the `docker_gwbridge` network
/// `swarm init` created, which `swarm leave` keeps).
struct SwarmGuard {
    initialised: bool,
    gateway_bridge_created: bool,
    _lock: SwarmLock,
}

const GATEWAY_BRIDGE: &str = "docker_gwbridge";

fn gateway_bridge_exists() -> bool {
    docker(&["network", "inspect", "--format", "{{.Id}}", GATEWAY_BRIDGE])
        .status
        .success()
}

impl SwarmGuard {
    fn acquire() -> SwarmGuard {
        let lock = SwarmLock::acquire();
        require_docker();
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let initialised = state.trim() == "inactive";
        let mut gateway_bridge_created = false;
        if initialised {
            let had_bridge = gateway_bridge_exists();
            docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            gateway_bridge_created = !had_bridge;
        }
        SwarmGuard {
            initialised,
            gateway_bridge_created,
            _lock: lock,
        }
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if self.initialised {
            let out = docker(&["swarm", "leave", "--force"]);
            if !out.status.success() {
                eprintln!(
                    "SwarmGuard: docker swarm leave failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return;
            }
            // The ingress sandbox may hold its endpoint for a moment after the leave.
            for _ in 0..20 {
                if !self.gateway_bridge_created || !gateway_bridge_exists() {
                    return;
                }
                if docker(&["network", "rm", GATEWAY_BRIDGE]).status.success() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            eprintln!("SwarmGuard: cannot remove {GATEWAY_BRIDGE}, which swarm init created");
        }
    }
}

/// Removes the instance's services (their tasks stop), then waits for their containers to
/// go so the overlay network can be removed by the scene's `DockerCleanup`.
struct ServiceCleanup {
    instance: String,
}

impl Drop for ServiceCleanup {
    fn drop(&mut self) {
        let filter = format!("label=berth.instance={}", self.instance);
        let ids = docker_ok(&["service", "ls", "-q", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["service", "rm"];
        args.extend(ids.iter().copied());
        let _ = docker(&args);
        let deadline = Instant::now() + Duration::from_secs(30);
        let prefix = format!("berth-{}-", self.instance);
        while Instant::now() < deadline {
            let left = docker_ok(&["ps", "-aq", "--filter", &format!("name={prefix}")]);
            if left.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A scene on a swarm: fields drop in order (services, then nginx, dirs, network and
/// volumes, then the swarm itself).
pub struct SwarmScene {
    _services: ServiceCleanup,
    pub scene: Scene,
    _swarm: SwarmGuard,
}

impl SwarmScene {
    pub fn new(prefix: &str) -> SwarmScene {
        let swarm = SwarmGuard::acquire();
        let scene = Scene::new(prefix);
        SwarmScene {
            _services: ServiceCleanup {
                instance: scene.instance.clone(),
            },
            scene,
            _swarm: swarm,
        }
    }

    pub async fn controller(&self) -> Arc<Controller<SwarmRuntime>> {
        let s = &self.scene;
        let store = berth::store::Store::open(&s.state.path().join("berth.db"))
            .await
            .expect("open the store");
        let runtime = SwarmRuntime::connect(Some(s.instance.clone()))
            .await
            .expect("the engine is a swarm manager");
        let proxy = test_upstreams(berth::proxy::Proxy::private(
            s.state.path().join("nginx"),
            format!("127.0.0.1:{}", s.port),
            nginx_binary(),
        ))
        .await;
        Controller::new(runtime, proxy, store, s.dir_settings())
    }

    pub fn write(&self, name: &str, yaml: &str) {
        std::fs::write(self.scene.specs.path().join(name), yaml).expect("write spec");
    }
}
