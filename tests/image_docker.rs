//! berth in a container: `scripts/image.sh` builds a local image (no registry, no base
//! image) from the binary this suite built, and `docker run` with the documented mounts
//! (the Docker socket, the state volume, the config dir, host network) serves a spec
//! through the container's nginx. The image and the berth container carry this test's
//! unique tag and instance label and are removed at the end.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{docker, docker_ok, ensure_images, free_port, http_get, unique_name, DockerCleanup};

/// Removes the test's image (its unique tag) when the test ends.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn the_image_serves_specs_with_the_documented_mounts() {
    ensure_images();
    let instance = unique_name("image");
    let root = env!("CARGO_MANIFEST_DIR");
    let tag = format!("berth-test:{instance}");
    let out = Command::new(format!("{root}/scripts/image.sh"))
        .args(["--bin", env!("CARGO_BIN_EXE_berth"), "--tag", &tag])
        .current_dir(root)
        .output()
        .unwrap();
    let _image = ImageGuard(tag.clone());
    assert!(
        out.status.success(),
        "image.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _cleanup = DockerCleanup::new(&instance);
    let state = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir(config.path().join("apps")).unwrap();
    std::fs::copy(
        Path::new(root).join("examples/apps/web.yaml"),
        config.path().join("apps/web.yaml"),
    )
    .unwrap();
    // The image's default config (state-dir /var/lib/berth, dir /etc/berth/apps) with
    // this test's port, instance and network.
    let listen = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        config.path().join("berth.toml"),
        format!(
            "state-dir = \"/var/lib/berth\"\ndir = \"/etc/berth/apps\"\nlisten = {listen:?}\n\
             api-listen = \"off\"\ninstance = {instance:?}\nnetwork = {instance:?}\ninterval = 1\n"
        ),
    )
    .unwrap();
    let name = format!("berth-{instance}");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--init",
        "--network",
        "host",
        "--label",
        &format!("berth.instance={instance}"),
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/var/lib/berth", state.path().display()),
        "-v",
        &format!("{}:/etc/berth:ro", config.path().display()),
        &tag,
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok((200, body)) = http_get(&listen, "/web/", None) {
            assert_eq!(body, "v1\n");
            break;
        }
        let running = docker_ok(&["inspect", "-f", "{{.State.Running}}", &name]);
        let logs = || String::from_utf8_lossy(&docker(&["logs", &name]).stderr).to_string();
        assert_eq!(running, "true", "berth's container stopped: {}", logs());
        assert!(
            Instant::now() < deadline,
            "not served within 90 s: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The state lives in the volume: the store and the nginx berth runs.
    assert!(state.path().join("berth.db").exists());
    assert!(state.path().join("nginx/nginx.pid").exists());
    docker_ok(&["rm", "-f", &name]);
}
