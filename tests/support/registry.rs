//! A real Docker registry for tests and benches: Debian's `docker-registry` (distribution
//! 2.8) on a free 127.0.0.1 port, its config, storage and htpasswd file (bcrypt, made with
//! `htpasswd -Bbn`) in a temp dir, killed by pid on drop. Plain HTTP: dockerd allows
//! insecure registries on 127.0.0.0/8 by default (and `localhost`), measured on 20.10.
//!
//! [`Registry::docker_config`] is a `DOCKER_CONFIG` dir whose config.json holds the user's
//! credentials for both `127.0.0.1:PORT` and `localhost:PORT`: tests push through the
//! `localhost:PORT` name so the local tags berth pulls (`127.0.0.1:PORT/...`) stay its own.
//! Must not touch: images other than the tags under this registry's two names (removed on
//! drop; the demo images they share IDs with stay), anything off loopback.

use super::{docker, docker_ok, free_port};
use base64::Engine as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "berth";
pub const PASSWORD: &str = "s3cret-pw";

pub struct Registry {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with htpasswd auth for [`USER`]/[`PASSWORD`] and waits until it
    /// answers. Panics when `docker-registry` or `htpasswd` is missing (scripts/setup.sh
    /// installs both).
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("registry temp dir");
        let out = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run htpasswd ({e}): run scripts/setup.sh (apache2-utils)")
            });
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {root}}}\n  delete: {{enabled: true}}\nhttp: {{addr: \"127.0.0.1:{port}\"}}\nauth:\n  htpasswd: {{realm: berth-test, path: {htpasswd}}}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run docker-registry ({e}): run scripts/setup.sh (docker-registry)")
            });
        let registry = Registry { port, child, dir };
        registry.write_config(PASSWORD);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((status, _)) = super::http_get(&format!("127.0.0.1:{port}"), "/v2/", None) {
                assert_eq!(status, 401, "the registry must ask for credentials");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`, the name berth pulls through.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/<repo>`.
    pub fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host())
    }

    /// The `DOCKER_CONFIG` directory berth (and the pushes) read.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// Rewrites config.json with `password` for both names (base64 `auth` entries).
    pub fn write_config(&self, password: &str) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        let dir = self.docker_config();
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            r#"{{"auths": {{"127.0.0.1:{p}": {{"auth": "{auth}"}}, "localhost:{p}": {{"auth": "{auth}"}}}}}}"#,
            p = self.port
        );
        std::fs::write(dir.join("config.json"), text).unwrap();
    }

    /// Pushes the local image `local` as `<repo>` (e.g. `demo:v1`) through the
    /// `localhost:PORT` name (with the right password), then drops that local tag.
    pub fn push(&self, local: &str, repo: &str) {
        let target = format!("localhost:{}/{repo}", self.port);
        docker_ok(&["tag", local, &target]);
        // The push needs the right credentials whatever the test wrote for berth.
        let push_config = self.dir.path().join("push-config");
        std::fs::create_dir_all(&push_config).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        std::fs::write(
            push_config.join("config.json"),
            format!(
                r#"{{"auths": {{"localhost:{}": {{"auth": "{auth}"}}}}}}"#,
                self.port
            ),
        )
        .unwrap();
        let out = docker(&[
            "--config",
            &push_config.display().to_string(),
            "push",
            &target,
        ]);
        let _ = docker(&["rmi", &target]);
        assert!(
            out.status.success(),
            "docker push {target} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// The registry's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Local references under this registry's names: `repo:tag`, and `repo@digest` for
    /// the digest references a pull leaves behind.
    fn local_tags(&self) -> Vec<String> {
        let out = docker(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ]);
        let prefixes = [
            format!("127.0.0.1:{}/", self.port),
            format!("localhost:{}/", self.port),
        ];
        let mut refs = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.split_whitespace();
            let (Some(repo), Some(tag), Some(digest)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !prefixes.iter().any(|p| repo.starts_with(p.as_str())) {
                continue;
            }
            if tag != "<none>" {
                refs.push(format!("{repo}:{tag}"));
            }
            if digest != "<none>" {
                refs.push(format!("{repo}@{digest}"));
            }
        }
        refs
    }
}

/// Removes `image`'s local tag (not the image when other tags hold it).
pub fn untag(image: &str) {
    let _ = docker(&["rmi", image]);
}

/// True when the host has `image`.
pub fn present(image: &str) -> bool {
    docker(&["image", "inspect", image]).status.success()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for tag in self.local_tags() {
            untag(&tag);
        }
    }
}
