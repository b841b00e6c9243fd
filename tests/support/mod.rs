//! Shared helpers for berth's integration tests (include with `mod support;`) and its
//! benches (through `#[path = "../tests/support/mod.rs"]`).
//!
//! Owns: building the demo images once per test process ([`ensure_images`]), unique names,
//! the [`DockerCleanup`] Drop guard, and a loopback-only HTTP GET ([`http_get`]).
//! Must not touch: containers or networks outside the guard's `berth.instance` (cleanup is
//! strictly label/name scoped), any address other than loopback, and images (never removed).
//! Docker tests must fail, not skip, when no engine is reachable: [`ensure_images`] panics.
#![allow(dead_code)]

pub mod postgres;
pub mod registry;
pub mod swarm;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The demo images built by `examples/images/build.sh`.
pub const IMAGE_V1: &str = "berth-demo:v1";
pub const IMAGE_V2: &str = "berth-demo:v2";
pub const IMAGE_BROKEN: &str = "berth-demo:broken";

/// Runs the docker CLI; never panics (check `status` yourself).
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e}); install docker-ce-cli"))
}

/// Runs the docker CLI and returns trimmed stdout; panics with stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Panics with a clear message unless a Docker engine answers.
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "Docker engine unreachable (DOCKER_HOST={}): {}. These tests need a real engine; \
             start dockerd and re-run (they fail instead of skipping on purpose).",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset".into()),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => {
            panic!("cannot run the docker CLI ({e}); these tests need docker + a running engine")
        }
    }
}

/// Builds the demo images once per process (fast when they already exist).
/// Panics when Docker is unreachable or the build fails.
pub fn ensure_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "examples", "images", "build.sh"]
            .iter()
            .collect();
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `<prefix>-<pid>-<n>-<time>`: unique across tests, processes and runs; valid as a container
/// name, a network name and a label value (lowercase `[a-z0-9-]`).
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Drop guard: removes every container labelled `berth.instance=<instance>` (owned or not)
/// with its anonymous volumes, the volumes labelled with the instance, then networks labelled
/// with the instance and the network named `<instance>` (leftover endpoints forced off, retried).
/// Uses the docker CLI, so it works after a panic and outside any async runtime.
/// Convention: name a test's network after its instance (or let `DockerRuntime` create it,
/// which labels it).
#[derive(Debug)]
pub struct DockerCleanup {
    pub instance: String,
}

impl DockerCleanup {
    pub fn new(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let filter = format!("label=berth.instance={}", self.instance);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        // Anonymous volumes (an image's VOLUME, also carried over between containers, which
        // `rm -v` leaves because they are mounted by name) and the instance's named volumes.
        let mut volumes: Vec<String> = Vec::new();
        if !ids.is_empty() {
            let mut args = vec![
                "inspect",
                "--format",
                "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
            ];
            args.extend(ids.iter().map(String::as_str));
            let out = docker(&args);
            volumes.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_string),
            );
        }
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let out = docker(&args);
            if !out.status.success() {
                eprintln!(
                    "DockerCleanup({}): docker rm failed: {}",
                    self.instance,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let labelled = docker(&["volume", "ls", "-q", "--filter", &filter]);
        volumes.extend(
            String::from_utf8_lossy(&labelled.stdout)
                .split_whitespace()
                .map(str::to_string),
        );
        for volume in volumes {
            let _ = docker(&["volume", "rm", &volume]);
        }
        let nets = docker(&["network", "ls", "-q", "--filter", &filter]);
        let mut nets: Vec<String> = String::from_utf8_lossy(&nets.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let named = docker(&["network", "inspect", "--format", "{{.Id}}", &self.instance]);
        if named.status.success() {
            nets.push(self.instance.clone());
        }
        for net in nets {
            let mut out = docker(&["network", "rm", &net]);
            // Endpoints can outlive their containers (a stale one after a dockerd restart, or
            // one the engine releases late): force them off the network and try again, for
            // up to ~5 s. An endpoint count the engine leaked is beyond this: only a dockerd
            // restart clears it.
            for _ in 0..10 {
                if out.status.success()
                    || !String::from_utf8_lossy(&out.stderr).contains("active endpoints")
                {
                    break;
                }
                let endpoints = docker(&[
                    "network",
                    "inspect",
                    "--format",
                    "{{range .Containers}}{{.Name}} {{end}}",
                    &net,
                ]);
                for endpoint in String::from_utf8_lossy(&endpoints.stdout).split_whitespace() {
                    let _ = docker(&["network", "disconnect", "-f", &net, endpoint]);
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
                out = docker(&["network", "rm", &net]);
            }
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                if !err.contains("No such network") && !err.contains("not found") {
                    eprintln!(
                        "DockerCleanup({}): docker network rm {net} failed: {}",
                        self.instance,
                        err.trim()
                    );
                }
            }
        }
    }
}

/// Drop guard for a container a test started outside any instance label (so
/// [`DockerCleanup`] does not own it): removes it by name or id, also when the test panics.
pub struct ForeignContainer(pub String);

impl Drop for ForeignContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

fn loopback_addr(addr: &str) -> std::io::Result<SocketAddr> {
    let resolved = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: no address"),
        )
    })?;
    if !resolved.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("tests only talk to loopback, refusing {resolved}"),
        ));
    }
    Ok(resolved)
}

/// One HTTP/1.1 GET over a raw TcpStream to a loopback `addr` ("127.0.0.1:8080") with
/// `Connection: close`; returns (status, body). `host` overrides the Host header.
/// Handles Content-Length, chunked and read-to-close bodies. 5 s timeouts.
pub fn http_get(addr: &str, path: &str, host: Option<&str>) -> std::io::Result<(u16, String)> {
    let target = loopback_addr(addr)?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        host.unwrap_or(addr)
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("incomplete http response ({} bytes)", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if name == "content-length" {
                length = value.parse().ok();
            }
        }
    }
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(n) = length {
        body.truncate(n);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// The status of `GET path` on 127.0.0.1:`port` ([`http_get`]), or None when nothing
/// answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(&format!("127.0.0.1:{port}"), path, None)
        .ok()
        .map(|(status, _)| status)
}

/// CPU time (user + system) this process has used, in seconds, from /proc/self/stat
/// (clock ticks, 100 Hz on Linux): for benches that report CPU per pass.
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat (`self` for this
/// one); 0 when it is gone.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Retries [`http_get`] until it yields a response with `expected_status` (or any response
/// when `None`) or `timeout` passes; returns the last response or error.
pub fn wait_http(
    addr: &str,
    path: &str,
    expected_status: Option<u16>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = http_get(addr, path, None);
        let done = match &result {
            Ok((status, _)) => expected_status.is_none_or(|s| s == *status),
            Err(_) => false,
        };
        if done || Instant::now() >= deadline {
            return result;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released) for a test's private nginx.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral loopback port")
        .local_addr()
        .expect("read the bound address")
        .port()
}

/// Debian's nginx binary; panics with what to do when nginx is not installed.
pub fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is not installed: run scripts/setup.sh (apt-get install nginx)")
}

/// The proxy mode tests run in: `BERTH_TEST_PROXY_MODE=reload` keeps static upstreams
/// (every member change reloads nginx); anything else (the default) uses dynamic
/// upstreams and needs the Lua module (scripts/setup.sh installs it).
pub async fn test_upstreams(proxy: berth::proxy::Proxy) -> berth::proxy::Proxy {
    if std::env::var("BERTH_TEST_PROXY_MODE").as_deref() == Ok("reload") {
        return proxy;
    }
    let modules = berth::proxy::lua_modules(&nginx_binary())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "dynamic upstreams need the Lua module: {e} (or set BERTH_TEST_PROXY_MODE=reload)"
            )
        });
    proxy.with_dynamic_upstreams(modules)
}

/// Stops a test's private nginx (prefix `prefix`) when dropped, even when the test panics.
/// Declare it before the temp dir holding `prefix`, so it drops (and reads the pid file)
/// before that dir is deleted.
pub struct NginxGuard {
    pub prefix: PathBuf,
}

impl Drop for NginxGuard {
    /// QUIT, then wait (at most 2 s) until the master has exited (a zombie counts).
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.prefix.join("nginx.pid")) else {
            return;
        };
        let _ = Command::new("kill").args(["-QUIT", pid.trim()]).status();
        let Ok(pid) = pid.trim().parse::<u32>() else {
            return;
        };
        for _ in 0..100 {
            if berth::proxy::exited(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `$PATH` with /usr/sbin and /sbin appended, for a `berth serve` child: Debian's nginx
/// lives in /usr/sbin, which a non-login shell's PATH may lack.
pub fn path_with_sbin() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The settings the Docker tests start from: a 1 s timer, 4 apps in parallel, a 2 s stop
/// timeout, the network named after the instance, no host env, the default deletion budget
/// and history limits. Change fields with struct update syntax.
pub fn test_settings(
    instance: &str,
    source: berth::source::SourceConfig,
) -> berth::reconcile::Settings {
    berth::reconcile::Settings {
        source,
        interval: Duration::from_secs(1),
        network: instance.to_string(),
        parallel_apps: 4,
        host_env: Default::default(),
        stop_timeout_seconds: 2,
        deletion_budget: Default::default(),
        history: Default::default(),
        images: Default::default(),
        spec_policy: Default::default(),
        tls: Default::default(),
    }
}

/// A controller on the real engine (through `docker_host` when given, else `DOCKER_HOST` or
/// the default socket) managing the
/// `instance` label: its store at `<state>/berth.db`, its private nginx under
/// `<state>/nginx` listening on 127.0.0.1:`port`. Panics when the engine is unreachable.
pub async fn docker_controller(
    instance: &str,
    docker_host: Option<&str>,
    state: &std::path::Path,
    port: u16,
    settings: berth::reconcile::Settings,
) -> std::sync::Arc<berth::reconcile::Controller<berth::runtime::docker::DockerRuntime>> {
    let store = berth::store::Store::open(&state.join("berth.db"))
        .await
        .expect("open the store");
    let leadership = berth::leader::Leadership::single("test");
    docker_controller_on(
        instance,
        docker_host,
        state,
        port,
        settings,
        store,
        leadership,
    )
    .await
}

/// [`docker_controller`] on a given store and leadership (a PostgreSQL store shared by
/// controllers).
pub async fn docker_controller_on(
    instance: &str,
    docker_host: Option<&str>,
    state: &std::path::Path,
    port: u16,
    settings: berth::reconcile::Settings,
    store: berth::store::Store,
    leadership: std::sync::Arc<berth::leader::Leadership>,
) -> std::sync::Arc<berth::reconcile::Controller<berth::runtime::docker::DockerRuntime>> {
    let instance_label = Some(instance.to_string());
    let runtime = match docker_host {
        Some(host) => {
            berth::runtime::docker::DockerRuntime::connect_to(Some(host), instance_label).await
        }
        None => berth::runtime::docker::DockerRuntime::connect(instance_label).await,
    }
    .expect("the Docker engine must be reachable");
    let proxy = test_upstreams(berth::proxy::Proxy::private(
        state.join("nginx"),
        format!("127.0.0.1:{port}"),
        nginx_binary(),
    ))
    .await;
    berth::reconcile::Controller::with_leadership(runtime, proxy, store, settings, leadership)
}

/// What a Docker test or bench runs in: an instance label (and network), a state dir for
/// the store and the private nginx, a spec dir and a free nginx port. Fields drop in order:
/// nginx stops before the state dir holding its pid file is deleted; containers and the
/// network are removed last.
pub struct Scene {
    _nginx: NginxGuard,
    pub instance: String,
    pub state: tempfile::TempDir,
    pub specs: tempfile::TempDir,
    pub port: u16,
    _cleanup: DockerCleanup,
}

impl Scene {
    /// A scene whose instance is `unique_name(prefix)`; builds the demo images first.
    pub fn new(prefix: &str) -> Scene {
        ensure_images();
        let instance = unique_name(prefix);
        let state = tempfile::tempdir().expect("create the state dir");
        Scene {
            _nginx: NginxGuard {
                prefix: state.path().join("nginx"),
            },
            _cleanup: DockerCleanup::new(&instance),
            instance,
            state,
            specs: tempfile::tempdir().expect("create the spec dir"),
            port: free_port(),
        }
    }

    /// [`test_settings`] for this scene's instance, watching its spec directory.
    pub fn dir_settings(&self) -> berth::reconcile::Settings {
        test_settings(
            &self.instance,
            berth::source::SourceConfig::Dir(self.specs.path().to_path_buf()),
        )
    }

    /// A controller on the local engine for this scene (its instance, state dir and nginx
    /// port) with `settings`.
    pub async fn controller_with(
        &self,
        settings: berth::reconcile::Settings,
    ) -> std::sync::Arc<berth::reconcile::Controller<berth::runtime::docker::DockerRuntime>> {
        docker_controller(&self.instance, None, self.state.path(), self.port, settings).await
    }

    /// Status of `GET path` through the scene's nginx; 0 when nothing answered.
    pub fn get(&self, path: &str) -> u16 {
        http_status(self.port, path).unwrap_or(0)
    }
}

/// `berth serve` in-process: the composition root (loop, prober, source task, optional
/// autoscaler) on `ctl` until `stop` is awaited or the guard drops.
pub struct Served {
    cancel: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), berth::daemon::DaemonError>>>,
}

impl Served {
    pub fn start<R: berth::runtime::ContainerRuntime>(
        ctl: &std::sync::Arc<berth::reconcile::Controller<R>>,
        autoscale: Option<berth::autoscale::AutoscaleSettings>,
    ) -> Served {
        let cancel = tokio_util::sync::CancellationToken::new();
        let daemon = berth::daemon::Daemon {
            controller: ctl.clone(),
            autoscale,
            api: None,
            webhook: None,
            notifier: None,
            shutdown_timeout: std::time::Duration::from_secs(30),
            lease: Default::default(),
        };
        let task = tokio::spawn(berth::daemon::run(daemon, cancel.clone()));
        Served {
            cancel,
            task: Some(task),
        }
    }

    /// Cancels and waits for the pass in flight to finish; panics if a task failed.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task").expect("daemon");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The /metrics text the status API would serve for `ctl`, through its router (no socket).
pub async fn scrape_metrics(
    ctl: &std::sync::Arc<berth::reconcile::Controller<berth::runtime::docker::DockerRuntime>>,
) -> String {
    let router = berth::api::router(ctl.clone(), &berth::api::ApiConfig { token: None });
    let answer = tower::ServiceExt::oneshot(
        router,
        axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}
