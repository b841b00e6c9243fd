//! The git servers behind `tests/source_git_remote.rs`, each a child process on a free
//! 127.0.0.1 port with all its files in the caller's temp dir: Debian's `sshd` (own config,
//! ed25519 host key, authorized_keys, key-only root login) serving a bare repository, and a
//! private nginx (TLS with a CA and server certificate made by the openssl CLI, basic auth
//! from `openssl passwd -apr1`) in front of `git http-backend` through `fcgiwrap` on a unix
//! socket. Must not touch: anything outside that temp dir except creating sshd's
//! compiled-in `/run/sshd`; processes other than the ones it started (stopped by pid).
#![allow(dead_code)]

use crate::support::{free_port, nginx_binary};
use berth::source::GitConfig;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn run(program: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}): run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn git(cwd: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "-c",
        "user.name=berth-test",
        "-c",
        "user.email=test@berth.invalid",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ];
    all.extend_from_slice(args);
    run("git", &all, cwd)
}

/// A server child process, stopped by pid (SIGTERM, then SIGKILL after 3 s) when dropped.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, command: &mut Command, log: &Path) -> ChildGuard {
        let log = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({e}): run scripts/setup.sh"));
        ChildGuard { name, child }
    }

    /// Waits until the server accepts connections on `port` (panics with its log if it
    /// exits or does not listen within 10 s).
    pub fn wait_listening(&mut self, port: u16, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}): {}",
                    self.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {port}: {}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare repository served by the test and a work clone to commit from.
pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    pub fn new(bare: PathBuf, work: PathBuf) -> Repo {
        let parent = bare.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        git(
            parent,
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(
            parent,
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { bare, work }
    }

    /// Writes `web.yaml` with `text`, commits, pushes; returns the commit sha.
    pub fn commit(&self, text: &str) -> String {
        std::fs::write(self.work.join("web.yaml"), text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", text]);
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// ssh

/// sshd serving `repo` to `root` with the key `<dir>/client_key` only.
pub struct SshServer {
    pub port: u16,
    pub dir: PathBuf,
    pub repo: Repo,
    /// `ssh-ed25519 AAAA...` of the server's host key.
    pub host_key_pub: String,
    /// The fingerprint `ssh-keygen -l` prints for the host key.
    pub host_fingerprint: String,
    _sshd: ChildGuard,
}

pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            name,
            "-f",
            path.to_str().unwrap(),
        ],
        dir,
    );
    path
}

impl SshServer {
    pub fn start(dir: &Path) -> SshServer {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd is not installed: run scripts/setup.sh (apt-get install openssh-server)"
        );
        // sshd's privilege separation directory (compiled in; setup.sh creates it too).
        if !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let host_key = keygen(dir, "host_key");
        let client_key = keygen(dir, "client_key");
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.join("authorized_keys"),
        )
        .unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowUsers root\n\
                 UsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n",
                hk = host_key.display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("sshd.log");
        let mut guard = ChildGuard::spawn(
            "sshd",
            Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .args(["-p", &port.to_string()]),
            &log,
        );
        guard.wait_listening(port, &log);
        let pub_text = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_key_pub = pub_text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let listing = run(
            "ssh-keygen",
            &[
                "-l",
                "-E",
                "sha256",
                "-f",
                host_key.with_extension("pub").to_str().unwrap(),
            ],
            dir,
        );
        let host_fingerprint = listing.split_whitespace().nth(1).unwrap().to_string();
        let repo = Repo::new(dir.join("srv/repo.git"), dir.join("work"));
        SshServer {
            port,
            dir: dir.to_path_buf(),
            repo,
            host_key_pub,
            host_fingerprint,
            _sshd: guard,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.port,
            self.repo.bare.display()
        )
    }

    pub fn config(&self, known_hosts: &Path) -> GitConfig {
        let mut config = GitConfig::new(self.url(), self.dir.join("cache"));
        config.ssh_key = Some(self.dir.join("client_key"));
        config.known_hosts = Some(known_hosts.to_path_buf());
        config.poll = Duration::from_secs(60);
        config
    }
}

// ---------------------------------------------------------------------------------------
// https

/// nginx (TLS, basic auth `x-access-token`:[`TOKEN`]) in front of git http-backend serving
/// `repo` as `/apps.git`.
pub struct HttpsServer {
    pub port: u16,
    pub dir: PathBuf,
    pub repo: Repo,
    pub ca: PathBuf,
    /// Dropped (stopped) before fcgiwrap, whose socket it uses.
    _nginx: ChildGuard,
    _fcgiwrap: ChildGuard,
}

pub const TOKEN: &str = "s3cret-token";

pub fn openssl(dir: &Path, args: &[&str]) {
    run("openssl", args, dir);
}

/// A CA (`ca.crt`/`ca.key` in `dir`) that signs `server.crt` for 127.0.0.1, valid for
/// `days` days (`-1`: already expired); returns the CA's path.
pub fn make_certs(dir: &Path, days: &str) -> PathBuf {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    dir.join("ca.crt")
}

impl HttpsServer {
    pub fn start(dir: &Path, cert_days: &str) -> HttpsServer {
        let fcgiwrap = PathBuf::from("/usr/sbin/fcgiwrap");
        assert!(
            fcgiwrap.exists(),
            "fcgiwrap is not installed: run scripts/setup.sh (apt-get install fcgiwrap)"
        );
        let backend = run("git", &["--exec-path"], dir) + "/git-http-backend";
        let ca = make_certs(dir, cert_days);
        let hash = run("openssl", &["passwd", "-apr1", TOKEN], dir);
        std::fs::write(dir.join("htpasswd"), format!("x-access-token:{hash}\n")).unwrap();
        let repo = Repo::new(dir.join("srv/apps.git"), dir.join("work"));

        let socket = dir.join("fcgiwrap.sock");
        let fcgi_log = dir.join("fcgiwrap.log");
        let fcgi = ChildGuard::spawn(
            "fcgiwrap",
            Command::new(&fcgiwrap)
                .arg("-s")
                .arg(format!("unix:{}", socket.display())),
            &fcgi_log,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "fcgiwrap made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }

        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             fastcgi_temp_path {d}/fastcgi;\n  proxy_temp_path {d}/proxy;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {d}/server.crt;\n    ssl_certificate_key {d}/server.key;\n\
             auth_basic \"git\";\n    auth_basic_user_file {d}/htpasswd;\n\
             location / {{\n      fastcgi_pass unix:{sock};\n\
             fastcgi_param SCRIPT_FILENAME {backend};\n\
             fastcgi_param GIT_PROJECT_ROOT {d}/srv;\n\
             fastcgi_param GIT_HTTP_EXPORT_ALL \"\";\n\
             fastcgi_param PATH_INFO $uri;\n      fastcgi_param REMOTE_USER $remote_user;\n\
             fastcgi_param REQUEST_METHOD $request_method;\n\
             fastcgi_param QUERY_STRING $query_string;\n\
             fastcgi_param CONTENT_TYPE $content_type;\n\
             fastcgi_param CONTENT_LENGTH $content_length;\n\
             fastcgi_param HTTP_GIT_PROTOCOL $http_git_protocol;\n    }}\n  }}\n}}\n",
            sock = socket.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let log = dir.join("nginx.out");
        let mut nginx = ChildGuard::spawn(
            "nginx",
            Command::new(nginx_binary())
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf")),
            &log,
        );
        nginx.wait_listening(port, &log);
        HttpsServer {
            port,
            dir: dir.to_path_buf(),
            repo,
            ca,
            _nginx: nginx,
            _fcgiwrap: fcgi,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/apps.git", self.port)
    }

    /// A config reading the token from a fresh env var holding `token`.
    pub fn config(&self, ca_file: Option<&Path>, token: &str) -> GitConfig {
        let env = unique("BERTH_TEST_GIT_TOKEN");
        std::env::set_var(&env, token);
        let mut config = GitConfig::new(self.url(), self.dir.join("cache"));
        config.token_env = Some(env);
        config.ca_file = ca_file.map(Path::to_path_buf);
        config.poll = Duration::from_secs(60);
        config
    }
}
