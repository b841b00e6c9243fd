//! Integration tests of `runtime::docker::DockerRuntime` against the real Docker engine.
//!
//! Owns: nothing but its own containers/networks, each test scoped by a unique
//! `berth.instance` label and cleaned up by a `DockerCleanup` guard (also on panic).
//! Must not touch: other containers, networks or images; non-loopback addresses.
//! Without a reachable engine these tests fail (never skip).

mod support;

use berth::runtime::docker::DockerRuntime;
use berth::runtime::{
    CallCounts, ContainerObserver, ContainerRequest, ContainerRuntime, ContainerState,
    RemoveVolumes, RuntimeError, LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED, LABEL_REVISION,
    LABEL_SPEC_HASH,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{
    docker, docker_ok, ensure_images, http_get, unique_name, wait_http, DockerCleanup,
    ForeignContainer, IMAGE_V1,
};

fn request(name: &str, image: &str, network: Option<&str>) -> ContainerRequest {
    ContainerRequest {
        name: name.to_string(),
        image: image.to_string(),
        command: None,
        env: vec![("GREETING".to_string(), "not-logged".to_string())],
        ports: vec![8080],
        cpu_millis: Some(500),
        memory_bytes: Some(64 * 1024 * 1024),
        labels: BTreeMap::from([
            (LABEL_APP.to_string(), "web".to_string()),
            (LABEL_SPEC_HASH.to_string(), "hash-1".to_string()),
            (LABEL_REVISION.to_string(), "rev-1".to_string()),
        ]),
        network: network.map(str::to_string),
        options: Default::default(),
    }
}

/// A test's world: a unique instance, its cleanup guard and a runtime scoped to it.
async fn setup(prefix: &str) -> (String, DockerCleanup, DockerRuntime) {
    ensure_images();
    let instance = unique_name(prefix);
    let guard = DockerCleanup::new(&instance);
    let runtime = DockerRuntime::connect(Some(instance.clone()))
        .await
        .unwrap_or_else(|e| panic!("docker engine unreachable: {e}"));
    (instance, guard, runtime)
}

fn exists(name: &str) -> bool {
    docker(&["inspect", "--format", "{{.Id}}", name])
        .status
        .success()
}

#[tokio::test]
async fn create_start_observe_serves_v1() {
    let (instance, _guard, rt) = setup("rt-serve").await;
    rt.ensure_network(&instance).await.expect("ensure_network");
    let name = unique_name("web");

    let t0 = Instant::now();
    let id = rt
        .create(&request(&name, IMAGE_V1, Some(&instance)))
        .await
        .expect("create");
    let created = t0.elapsed();
    rt.start(&id).await.expect("start");
    let started = t0.elapsed();
    eprintln!("timing: create {created:?}, create+start {started:?}");

    let observed = rt.observe().await.expect("observe");
    assert_eq!(observed.len(), 1, "{observed:?}");
    let c = &observed[0];
    assert_eq!(c.id, id);
    assert_eq!(c.name, name);
    assert_eq!(c.app, "web");
    assert_eq!(c.spec_hash, "hash-1");
    assert_eq!(c.revision, "rev-1");
    assert_eq!(c.image, IMAGE_V1);
    assert_eq!(c.state, ContainerState::Running);
    assert!(c.created > 1_600_000_000, "created = {}", c.created);
    let addr = c.address().expect("a 127.0.0.1 host port is published");
    assert_eq!(c.published, vec![(8080, c.host_port.unwrap())]);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, body) =
        wait_http(&addr, "/", Some(200), Duration::from_secs(10)).expect("http get /");
    assert_eq!((status, body.as_str()), (200, "v1\n"));
    eprintln!("timing: create+start+first 200 {:?}", t0.elapsed());
    let (status, body) = http_get(&addr, "/healthz", None).expect("http get /healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // inspect agrees with the list call.
    let inspected = rt.inspect(&id).await.expect("inspect").expect("exists");
    assert_eq!(inspected.host_port, c.host_port);
    assert_eq!(inspected.published, c.published);
    assert_eq!(inspected.state, ContainerState::Running);
    assert_eq!(inspected.app, "web");
    assert_eq!(inspected.image, IMAGE_V1);
    assert!((inspected.created - c.created).abs() <= 1);

    // Labels forced, limits, restart policy and network as requested.
    let fmt = format!(
        "{{{{index .Config.Labels \"{LABEL_MANAGED}\"}}}}|{{{{index .Config.Labels \"{LABEL_INSTANCE}\"}}}}|{{{{.HostConfig.NanoCpus}}}}|{{{{.HostConfig.Memory}}}}|{{{{.HostConfig.RestartPolicy.Name}}}}|{{{{.HostConfig.NetworkMode}}}}|{{{{.HostConfig.Init}}}}"
    );
    let got = docker_ok(&["inspect", "--format", &fmt, &id]);
    assert_eq!(
        got,
        format!("true|{instance}|500000000|67108864|unless-stopped|{instance}|true")
    );
    // The limits reach the cgroup (v1 here): CFS quota 50 ms per 100 ms, memory 64 MiB.
    let cgroup = docker_ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max",
    ]);
    eprintln!("cgroup limits inside the container: {cgroup:?}");
    assert!(cgroup.contains("50000"), "cpu quota not applied: {cgroup}");
    assert!(
        cgroup.contains("67108864"),
        "memory limit not applied: {cgroup}"
    );
}

#[tokio::test]
async fn create_twice_with_same_name_returns_same_id() {
    let (_instance, _guard, rt) = setup("rt-idem").await;
    let name = unique_name("web");
    let req = request(&name, IMAGE_V1, None);
    let first = rt.create(&req).await.expect("first create");
    let before = rt.calls();
    let second = rt.create(&req).await.expect("second create is Ok");
    assert_eq!(first, second);
    let delta = rt.calls().since(&before);
    assert_eq!((delta.create, delta.inspect), (1, 1), "{delta:?}");
    assert_eq!(rt.observe().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_first_start_of_a_container_it_created_needs_no_inspect() {
    let (_instance, _guard, rt) = setup("rt-fresh").await;
    let req = request(&unique_name("web"), IMAGE_V1, None);
    let id = rt.create(&req).await.expect("create");
    let before = rt.calls();
    rt.start(&id).await.expect("start");
    let delta = rt.calls().since(&before);
    assert_eq!((delta.start, delta.inspect), (1, 0), "{delta:?}");
    // Any later start checks ownership (and sees it running) again.
    let before = rt.calls();
    rt.start(&id).await.expect("start again");
    let delta = rt.calls().since(&before);
    assert_eq!((delta.start, delta.inspect), (0, 1), "{delta:?}");
    rt.remove(&id, RemoveVolumes::Keep).await.expect("remove");
}

#[tokio::test]
async fn stop_and_remove_are_idempotent() {
    let (_instance, _guard, rt) = setup("rt-stop").await;
    let name = unique_name("web");
    let id = rt.create(&request(&name, IMAGE_V1, None)).await.unwrap();
    rt.start(&id).await.unwrap();
    rt.start(&id)
        .await
        .expect("start when already running is Ok");

    // With docker-init as PID 1, httpd gets SIGTERM and exits at once (no 10 s wait + KILL).
    let t0 = Instant::now();
    rt.stop(&id, 10).await.expect("first stop");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &id]);
    assert_eq!(code, "143", "terminated by SIGTERM, not killed");
    rt.stop(&id, 2).await.expect("second stop");
    let observed = rt.observe().await.unwrap();
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].state, ContainerState::Exited);
    assert_eq!(
        observed[0].host_port, None,
        "a stopped container has no port"
    );

    rt.remove(&id, RemoveVolumes::Anonymous)
        .await
        .expect("first remove");
    rt.remove(&id, RemoveVolumes::Anonymous)
        .await
        .expect("second remove");
    rt.stop(&id, 2).await.expect("stop when gone is Ok");
    assert!(rt.observe().await.unwrap().is_empty());
    assert_eq!(rt.inspect(&id).await.unwrap(), None);
    assert!(!exists(&id));
    match rt.start(&id).await {
        Err(RuntimeError::Engine { operation, message }) => {
            assert_eq!(operation, "start");
            assert!(message.contains("does not exist"), "{message}");
        }
        other => panic!("start of a removed container: {other:?}"),
    }
}

#[tokio::test]
async fn remove_of_a_running_container_forces_it() {
    let (_instance, _guard, rt) = setup("rt-rmrun").await;
    let id = rt
        .create(&request(&unique_name("web"), IMAGE_V1, None))
        .await
        .unwrap();
    rt.start(&id).await.unwrap();
    rt.remove(&id, RemoveVolumes::Anonymous)
        .await
        .expect("remove running");
    assert!(!exists(&id));
}

#[tokio::test]
async fn foreign_containers_are_invisible_and_untouched() {
    let (instance, _guard, rt) = setup("rt-foreign").await;
    // No berth.managed label (the instance label only lets the guard clean it up).
    let foreign = unique_name("foreign");
    docker_ok(&[
        "create",
        "--name",
        &foreign,
        "--label",
        &format!("{LABEL_INSTANCE}={instance}"),
        IMAGE_V1,
    ]);
    // Managed, but by another berth instance.
    let other_instance = unique_name("rt-other");
    let _other_guard = DockerCleanup::new(&other_instance);
    let other = unique_name("other");
    docker_ok(&[
        "create",
        "--name",
        &other,
        "--label",
        &format!("{LABEL_MANAGED}=true"),
        "--label",
        &format!("{LABEL_INSTANCE}={other_instance}"),
        IMAGE_V1,
    ]);

    assert!(rt.observe().await.unwrap().is_empty());
    for target in [&foreign, &other] {
        for result in [
            rt.stop(target, 1).await,
            rt.remove(target, RemoveVolumes::Keep).await.map(|_| ()),
            rt.start(target).await,
        ] {
            match result {
                Err(RuntimeError::NotOwned { id }) => assert_eq!(&id, target),
                other => panic!("expected NotOwned for {target}, got {other:?}"),
            }
        }
        assert!(matches!(
            rt.inspect(target).await,
            Err(RuntimeError::NotOwned { .. })
        ));
        // A create that collides with the foreign name is refused, not adopted.
        match rt.create(&request(target, IMAGE_V1, None)).await {
            Err(RuntimeError::Engine { operation, message }) => {
                assert_eq!(operation, "create");
                assert!(message.contains("does not own"), "{message}");
            }
            other => panic!("create over foreign name {target}: {other:?}"),
        }
        assert!(exists(target), "{target} must survive");
    }
    let state = docker_ok(&["inspect", "--format", "{{.State.Status}}", &foreign]);
    assert_eq!(state, "created", "the foreign container was not started");
    // Explicit cleanup of the foreign containers (the guards would also do it).
    docker_ok(&["rm", "-f", &foreign, &other]);
}

#[tokio::test]
async fn missing_image_is_image_missing() {
    let (_instance, _guard, rt) = setup("rt-noimg").await;
    let image = format!("{}:absent", unique_name("berth-no-such-image"));
    let before = rt.calls();
    match rt.create(&request(&unique_name("web"), &image, None)).await {
        Err(RuntimeError::ImageMissing { image: got }) => assert_eq!(got, image),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    let delta = rt.calls().since(&before);
    assert_eq!(delta.create, 1, "one create attempt, no retries: {delta:?}");
    assert!(rt.observe().await.unwrap().is_empty());
}

fn dead_unix_socket() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    // Bind then drop: the socket file stays, nobody listens (connection refused).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let endpoint = format!("unix://{}", path.display());
    (dir, endpoint)
}

fn assert_unreachable(result: Result<DockerRuntime, RuntimeError>, endpoint: &str) {
    match result {
        Err(e @ RuntimeError::Unreachable { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(endpoint),
                "message must name {endpoint}: {text}"
            );
            eprintln!("unreachable message: {text}");
        }
        Err(other) => panic!("expected Unreachable, got {other:?}"),
        Ok(rt) => panic!("connected to {endpoint}?! {rt:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoints_are_reported_with_the_endpoint() {
    let (_dir, dead) = dead_unix_socket();
    assert_unreachable(DockerRuntime::connect_to(Some(&dead), None).await, &dead);

    let missing = "unix:///nonexistent/berth/docker.sock";
    assert_unreachable(
        DockerRuntime::connect_to(Some(missing), None).await,
        missing,
    );

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let tcp = format!("tcp://127.0.0.1:{port}");
    assert_unreachable(DockerRuntime::connect_to(Some(&tcp), None).await, &tcp);
}

/// Child half of `docker_host_env_pointing_at_a_dead_socket_is_unreachable`: runs in a
/// separate process (so DOCKER_HOST is never changed under the other tests' feet).
#[tokio::test]
#[ignore = "helper: run by docker_host_env_pointing_at_a_dead_socket_is_unreachable"]
async fn child_connect_uses_docker_host_env() {
    let endpoint = std::env::var("DOCKER_HOST").expect("the parent sets DOCKER_HOST");
    assert_unreachable(DockerRuntime::connect(None).await, &endpoint);
}

#[test]
fn docker_host_env_pointing_at_a_dead_socket_is_unreachable() {
    let (_dir, dead) = dead_unix_socket();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_connect_uses_docker_host_env",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DOCKER_HOST", &dead)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains(&dead), "{stderr}");
}

#[tokio::test]
async fn observe_is_exactly_one_list_call() {
    let (_instance, _guard, rt) = setup("rt-count").await;
    for _ in 0..2 {
        let id = rt
            .create(&request(&unique_name("web"), IMAGE_V1, None))
            .await
            .unwrap();
        rt.start(&id).await.unwrap();
    }
    let before = rt.calls();
    let observed = rt.observe().await.unwrap();
    assert_eq!(observed.len(), 2);
    assert!(observed.iter().all(|c| c.host_port.is_some()));
    let delta = rt.calls().since(&before);
    assert_eq!(
        delta,
        CallCounts {
            list: 1,
            ..CallCounts::default()
        }
    );
    assert_eq!(delta.mutating(), 0);
    rt.observe().await.unwrap();
    assert_eq!(rt.calls().since(&before).list, 2);
}

#[tokio::test]
async fn ensure_network_is_idempotent_and_cached() {
    let (instance, _guard, rt) = setup("rt-net").await;
    rt.ensure_network(&instance).await.expect("create network");
    rt.ensure_network(&instance).await.expect("again");
    assert_eq!(rt.calls().network, 1, "cached after the first success");
    let driver = docker_ok(&["network", "inspect", "--format", "{{.Driver}}", &instance]);
    assert_eq!(driver, "bridge");

    // A fresh runtime sees "already exists" and is fine with it.
    let rt2 = DockerRuntime::connect(Some(instance.clone()))
        .await
        .unwrap();
    rt2.ensure_network(&instance).await.expect("exists = Ok");
    assert_eq!(rt2.calls().network, 1);
}

/// Creates a network named `name` labelled as `instance`'s, skipping the engine's
/// duplicate-name check (what two racing creates can do on Docker 20.10); returns its id.
async fn create_duplicate_network(name: &str, instance: &str) -> String {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker client");
    let options = bollard::network::CreateNetworkOptions {
        name: name.to_string(),
        check_duplicate: false,
        driver: "bridge".to_string(),
        labels: std::collections::HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), instance.to_string()),
        ]),
        ..Default::default()
    };
    let created = docker
        .create_network(options)
        .await
        .expect("the engine accepts a duplicate name without CheckDuplicate");
    created.id
}

/// Ids of the networks named exactly `name`.
fn networks_named(name: &str) -> Vec<String> {
    let filter = format!("name=^{name}$");
    docker_ok(&["network", "ls", "--no-trunc", "-q", "--filter", &filter])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn duplicate_network_repair_removes_only_this_instances_duplicates() {
    let (instance, _guard, rt) = setup("rt-dupnet").await;
    let other = unique_name("rt-dupnet-other");
    let _other_guard = DockerCleanup::new(&other);
    // The network is named after this instance (so the guard removes every copy).
    rt.ensure_network(&instance).await.expect("create network");
    let original = networks_named(&instance);
    assert_eq!(original.len(), 1);
    let theirs = create_duplicate_network(&instance, &other).await;
    let ours = create_duplicate_network(&instance, &instance).await;
    assert_eq!(
        networks_named(&instance).len(),
        3,
        "the engine made duplicates"
    );

    // A fresh runtime of this instance (nothing cached) repairs the name.
    let fresh = DockerRuntime::connect(Some(instance.clone()))
        .await
        .unwrap();
    fresh.ensure_network(&instance).await.expect("repair");
    let left = networks_named(&instance);
    assert!(left.contains(&original[0]), "the oldest is kept: {left:?}");
    assert!(
        left.contains(&theirs),
        "another instance's network survives: {left:?}"
    );
    assert!(
        !left.contains(&ours),
        "this instance's duplicate is removed: {left:?}"
    );
    assert_eq!(left.len(), 2);
    // One create attempt (409), one list, one removal.
    let calls = fresh.calls();
    assert_eq!((calls.network, calls.list), (2, 1), "{calls:?}");

    // The other instance's runtime removes its own younger copy and never ours: the name
    // ends up unambiguous.
    let theirs_rt = DockerRuntime::connect(Some(other.clone())).await.unwrap();
    theirs_rt.ensure_network(&instance).await.expect("repair");
    assert_eq!(networks_named(&instance), original);
}

#[test]
fn http_get_handles_chunked_bodies_and_refuses_non_loopback() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        req
    });
    let (status, body) = http_get(&addr, "/x", Some("app.example.com")).unwrap();
    assert_eq!((status, body.as_str()), (404, "abcde"));
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /x HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("Host: app.example.com\r\n"), "{req}");
    assert!(req.contains("Connection: close\r\n"), "{req}");

    let err = http_get("10.1.2.3:80", "/", None).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
}

#[test]
fn docker_cleanup_forces_leftover_endpoints_off_its_network() {
    ensure_images();
    let instance = unique_name("rt-net-endpoint");
    // Declared before the outsider: on a panic the outsider goes first, then the network.
    let guard = DockerCleanup::new(&instance);
    docker_ok(&["network", "create", &instance]);
    // A container the guard does not own (no instance label) keeps an endpoint on the
    // network, as a stale endpoint left by a dockerd restart does.
    let outsider = ForeignContainer(unique_name("rt-outsider"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &outsider.0,
        "--network",
        &instance,
        IMAGE_V1,
    ]);
    drop(guard);
    let left = docker(&["network", "inspect", "--format", "{{.Id}}", &instance]);
    assert!(
        !left.status.success(),
        "the guard left the network {instance} behind"
    );
    assert!(
        exists(&outsider.0),
        "the guard must not remove a container it does not own"
    );
}
