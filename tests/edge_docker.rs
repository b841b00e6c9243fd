//! berth's edge against the real Docker engine and the real private nginx: a pass that adds
//! several apps reloads nginx at most once (dynamic upstreams), a real WebSocket round trip
//! through nginx to a container, per-route body size limits. The WebSocket echo server
//! (tests/images/ws_echo.rs) is built with plain `rustc` as a static binary and imported
//! into a local image: no registry. Traffic only to 127.0.0.1.

mod support;

use berth::reconcile::{self, Controller};
use berth::runtime::docker::DockerRuntime;
use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use support::{docker_ok, Scene};
use tokio_tungstenite::tungstenite::Message;

struct Harness {
    ctl: Arc<Controller<DockerRuntime>>,
    scene: Scene,
}

impl Harness {
    async fn new(prefix: &str) -> Harness {
        let scene = Scene::new(prefix);
        let settings = scene.dir_settings();
        let ctl = scene.controller_with(settings).await;
        Harness { ctl, scene }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.scene.specs.path().join(file), text).unwrap();
    }

    async fn pass(&self) -> reconcile::PassReport {
        reconcile::run_pass(&self.ctl, "test").await.expect("pass")
    }

    fn dynamic(&self) -> bool {
        self.ctl.proxy().upstreams() == berth::proxy::Upstreams::Dynamic
    }
}

fn app_spec(name: &str, image: &str, route_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  type: http
  image: {image}
  ports:
    - containerPort: 8080
  health:
    httpGet: {{ path: /healthz, port: 8080 }}
    intervalSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 3
  replicas: 1
  termination:
    drainSeconds: 0
  route:
    path: /{name}
{route_extra}"#
    )
}

/// `berth-ws-echo:<hash of the source>`, built once per source version: the echo server
/// compiled with `rustc` (static, std only) into a one-file rootfs imported with
/// `docker import`.
fn ws_echo_image() -> String {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images/ws_echo.rs");
    let text = std::fs::read(source).unwrap();
    let hash: u64 = text.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    let tag = format!("berth-ws-echo:{:012x}", hash & 0xffff_ffff_ffff);
    if support::docker(&["image", "inspect", &tag])
        .status
        .success()
    {
        return tag;
    }
    let root = tempfile::tempdir().unwrap();
    let binary = root.path().join("ws-echo");
    let built = std::process::Command::new("rustc")
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(&binary)
        .arg(source)
        .output()
        .expect("run rustc");
    assert!(
        built.status.success(),
        "rustc ws_echo.rs: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let import = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - ws-echo | docker import --change 'CMD [\"/ws-echo\"]' - {tag}",
            root.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    tag
}

#[tokio::test]
async fn a_pass_that_adds_apps_reloads_nginx_at_most_once() {
    let h = Harness::new("edgeadd").await;
    for name in ["add1", "add2", "add3"] {
        h.write(
            &format!("{name}.yaml"),
            &app_spec(name, "berth-demo:v1", ""),
        );
    }
    let first = h.pass().await;
    assert_eq!(first.steps_failed, 0, "{first:?}");
    for name in ["add1", "add2", "add3"] {
        assert_eq!(h.scene.get(&format!("/{name}/")), 200, "{name}");
    }
    if h.dynamic() {
        assert!(first.reloads <= 1, "{first:?}");
        assert!(
            h.ctl.proxy().pushes() >= 3,
            "each app's members were pushed"
        );
    }
    let second = h.pass().await;
    assert_eq!(second.reloads, 0, "{second:?}");
}

#[tokio::test]
async fn a_websocket_round_trip_goes_through_nginx_to_the_container() {
    let image = ws_echo_image();
    let h = Harness::new("edgews").await;
    h.write("ws.yaml", &app_spec("ws", &image, ""));
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");
    assert_eq!(h.scene.get("/ws/plain"), 200);

    let url = format!("ws://127.0.0.1:{}/ws/echo", h.scene.port);
    let (mut socket, answer) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("WebSocket handshake through nginx");
    assert_eq!(answer.status().as_u16(), 101);
    for text in ["hello berth", "second message"] {
        socket.send(Message::Text(text.into())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an echo within 5 s")
            .expect("the socket is open")
            .expect("a message");
        assert_eq!(echoed, Message::Text(text.into()));
    }
    let binary = vec![0u8, 1, 2, 255];
    socket.send(Message::Binary(binary.clone())).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::Binary(binary));
    socket.close(None).await.unwrap();
    let _ = docker_ok(&["image", "inspect", &image]);
}

/// POSTs `size` bytes to `path` through the scene's nginx: (status, body).
fn post(port: u16, path: &str, size: usize) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // nginx may answer 413 before it read the whole body and close: ignore write errors.
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        if stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n;
    }
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// GET `path` with extra request header lines; (status, raw response head).
fn get_head(port: u16, path: &str, extra: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    (status, head)
}

#[tokio::test]
async fn route_settings_limit_bodies_add_headers_and_keep_the_request_id() {
    let image = ws_echo_image();
    let h = Harness::new("edgebody").await;
    h.write(
        "up.yaml",
        &app_spec(
            "up",
            &image,
            "    maxBodySize: 3Mi\n    timeouts: {connect: 3, read: 30, send: 30}\n    headers:\n      X-Frame-Options: DENY\n",
        ),
    );
    let report = h.pass().await;
    assert_eq!(report.steps_failed, 0, "{report:?}");

    // Above nginx's 1 MiB default, within the route's 3Mi: reaches the app whole.
    let (status, body) = post(h.scene.port, "/up/upload", 2 << 20);
    assert_eq!((status, body.as_str()), (200, "/upload 2097152\n"));
    // Above the route's limit: nginx answers 413 itself.
    assert_eq!(post(h.scene.port, "/up/upload", 4 << 20).0, 413);

    let (status, head) = get_head(h.scene.port, "/up/", "X-Request-ID: client-chose-this\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("X-Request-ID: client-chose-this"), "{head}");
    assert!(head.contains("X-Frame-Options: DENY"), "{head}");
    let (_, head) = get_head(h.scene.port, "/up/", "");
    let generated = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Request-ID: "))
        .expect("a generated request id");
    assert_eq!(generated.len(), 32, "nginx's $request_id: {head}");
}
