//! The git source over the transports users point berth at, against real servers the tests
//! start on 127.0.0.1 free ports with every file in a temp dir: Debian's `sshd` (own config,
//! host key and authorized_keys, key-only root login) and `git http-backend` behind a
//! private nginx with TLS (a CA and server certificates made with the openssl CLI) and basic
//! auth, through `fcgiwrap` on a unix socket. Cases: good credentials sync the right
//! commit; a wrong key, a wrong token, an unknown or changed host key, an untrusted or
//! expired certificate each give a clear error naming the remote while the last synced
//! commit keeps being served; a busy repository's mirror is compacted. Every server is a
//! child process stopped by pid in a Drop guard.

mod support;

use berth::source::compact::{mirror_stats, MAX_LOOSE, MAX_PACKS};
use berth::source::{GitConfig, Source, SourceConfig, SourceError};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{free_port, nginx_binary};

fn run(program: &str, args: &[&str], cwd: &Path) -> String {
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

fn git(cwd: &Path, args: &[&str]) -> String {
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
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn spawn(name: &'static str, command: &mut Command, log: &Path) -> ChildGuard {
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
    fn wait_listening(&mut self, port: u16, log: &Path) {
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
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(bare: PathBuf, work: PathBuf) -> Repo {
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
    fn commit(&self, text: &str) -> String {
        std::fs::write(self.work.join("web.yaml"), text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", text]);
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Syncs and returns the error (panics when the sync succeeds).
async fn sync_error(source: &Arc<Source>) -> SourceError {
    match source.sync().await {
        Ok(changed) => panic!("the sync succeeded (changed: {changed}), expected a refusal"),
        Err(e) => {
            eprintln!("refused: {e}");
            e
        }
    }
}

/// Asserts the source still serves `revision` and says it is degraded.
async fn keeps_serving(source: &Arc<Source>, revision: &str) {
    assert_eq!(source.snapshot().await.unwrap().revision, revision);
    let status = source.status();
    assert_eq!(status.revision.as_deref(), Some(revision));
    assert!(status.degraded.is_some(), "{status:?}");
    assert!(status.failures >= 1, "{status:?}");
}

// ---------------------------------------------------------------------------------------
// ssh

struct SshServer {
    port: u16,
    dir: PathBuf,
    repo: Repo,
    /// `ssh-ed25519 AAAA...` of the server's host key.
    host_key_pub: String,
    /// The fingerprint `ssh-keygen -l` prints for the host key.
    host_fingerprint: String,
    _sshd: ChildGuard,
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
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
    fn start(dir: &Path) -> SshServer {
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

    fn url(&self) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.port,
            self.repo.bare.display()
        )
    }

    fn config(&self, known_hosts: &Path) -> GitConfig {
        let mut config = GitConfig::new(self.url(), self.dir.join("cache"));
        config.ssh_key = Some(self.dir.join("client_key"));
        config.known_hosts = Some(known_hosts.to_path_buf());
        config.poll = Duration::from_secs(60);
        config
    }
}

#[tokio::test]
async fn ssh_deploy_key_syncs_and_a_wrong_key_keeps_the_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SshServer::start(tmp.path());
    let first = server.repo.commit("image: v1\n");
    // Hashed names, as `ssh-keyscan -H` (and HashKnownHosts) write them.
    let known_hosts = tmp.path().join("known_hosts");
    let scanned = run(
        "ssh-keyscan",
        &[
            "-H",
            "-t",
            "ed25519",
            "-p",
            &server.port.to_string(),
            "127.0.0.1",
        ],
        tmp.path(),
    );
    assert!(scanned.starts_with("|1|"), "{scanned}");
    std::fs::write(&known_hosts, format!("{scanned}\n")).unwrap();
    let source = Source::new(SourceConfig::Git(server.config(&known_hosts)));

    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(snapshot.revision, first);
    assert_eq!(
        snapshot.files,
        vec![(PathBuf::from("web.yaml"), "image: v1\n".to_string())]
    );

    // The deploy key is replaced by one the server does not know.
    let second = server.repo.commit("image: v2\n");
    let key = tmp.path().join("client_key");
    let good_key = std::fs::read(&key).unwrap();
    let stranger = keygen(tmp.path(), "stranger_key");
    std::fs::copy(&stranger, &key).unwrap();
    let error = sync_error(&source).await;
    assert!(matches!(error, SourceError::SshAuth { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(
        text.contains("check --git-ssh-key and that the deploy key is added to the repository"),
        "{text}"
    );
    keeps_serving(&source, &first).await;

    // The right key again: the next sync catches up.
    std::fs::write(&key, good_key).unwrap();
    assert!(source.sync().await.unwrap());
    assert_eq!(source.snapshot().await.unwrap().revision, second);
    assert_eq!(source.status().degraded, None);
}

#[tokio::test]
async fn ssh_unknown_or_changed_host_keys_are_refused_with_the_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SshServer::start(tmp.path());
    let first = server.repo.commit("image: v1\n");
    let known_hosts = tmp.path().join("known_hosts");
    let host = format!("[127.0.0.1]:{}", server.port);

    // No entry for the host (the file does not even exist).
    let source = Source::new(SourceConfig::Git(server.config(&known_hosts)));
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::UnknownHostKey { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&host), "{text}");
    assert!(text.contains(&server.host_fingerprint), "{text}");
    assert!(text.contains("--git-known-hosts"), "{text}");
    assert!(text.contains(&server.url()), "{text}");
    assert_eq!(source.status().revision, None);

    // The host listed with another key: refused as a changed key, naming the line.
    let impostor = keygen(tmp.path(), "impostor_key");
    let impostor_pub = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let impostor_pub = impostor_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &known_hosts,
        format!("# other hosts\nexample.org {impostor_pub}\n{host} {impostor_pub}\n"),
    )
    .unwrap();
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::HostKeyMismatch { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&server.host_fingerprint),
        "{error}"
    );

    // Listed (plain name, among other patterns): synced.
    std::fs::write(
        &known_hosts,
        format!("example.org,{host} {}\n", server.host_key_pub),
    )
    .unwrap();
    assert!(source.sync().await.unwrap());
    assert_eq!(source.snapshot().await.unwrap().revision, first);

    // The key changes under a synced source: refused, the last commit is kept.
    server.repo.commit("image: v2\n");
    std::fs::write(&known_hosts, format!("{host} {impostor_pub}\n")).unwrap();
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::HostKeyMismatch { .. }),
        "{error:?}"
    );
    keeps_serving(&source, &first).await;
}

/// The `berth` binary wires the flags: `plan --observed-empty` (source only, no Docker)
/// over ssh with `--git-ssh-key` and `--git-known-hosts`; an unknown host fails the command
/// with the fingerprint; a CA file or known_hosts file that is not there fails at start.
#[test]
fn berth_plan_over_ssh_uses_the_key_and_known_hosts_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SshServer::start(tmp.path());
    let web = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/apps/web.yaml"
    ))
    .unwrap();
    server.repo.commit(&web);
    let known_hosts = tmp.path().join("known_hosts");
    let berth = |known_hosts: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "plan",
                "--observed-empty",
                "--git",
                &server.url(),
                "--git-ssh-key",
            ])
            .arg(tmp.path().join("client_key"))
            .arg("--git-known-hosts")
            .arg(known_hosts)
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .args(extra)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    std::fs::write(&known_hosts, "").unwrap();
    let (code, text) = berth(&known_hosts, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&server.host_fingerprint), "{text}");

    let host = format!("[127.0.0.1]:{}", server.port);
    std::fs::write(&known_hosts, format!("{host} {}\n", server.host_key_pub)).unwrap();
    let (code, text) = berth(&known_hosts, &[]);
    assert_eq!(code, Some(2), "a plan with changes: {text}");
    assert!(text.contains("web"), "{text}");

    let (code, text) = berth(&tmp.path().join("missing"), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("--git-known-hosts"), "{text}");
    let missing_ca = tmp.path().join("missing-ca.pem");
    let (code, text) = berth(
        &known_hosts,
        &["--git-ca-file", missing_ca.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot use the CA file"), "{text}");
}

// ---------------------------------------------------------------------------------------
// https

struct HttpsServer {
    port: u16,
    dir: PathBuf,
    repo: Repo,
    ca: PathBuf,
    /// Dropped (stopped) before fcgiwrap, whose socket it uses.
    _nginx: ChildGuard,
    _fcgiwrap: ChildGuard,
}

const TOKEN: &str = "s3cret-token";

fn openssl(dir: &Path, args: &[&str]) {
    run("openssl", args, dir);
}

/// A CA (`<name>.crt`/`.key`) that signs a server certificate for 127.0.0.1 valid for
/// `days` days (`-1`: already expired).
fn make_certs(dir: &Path, days: &str) -> PathBuf {
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
    fn start(dir: &Path, cert_days: &str) -> HttpsServer {
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

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/apps.git", self.port)
    }

    /// A config reading the token from a fresh env var holding `token`.
    fn config(&self, ca_file: Option<&Path>, token: &str) -> GitConfig {
        let env = unique("BERTH_TEST_GIT_TOKEN");
        std::env::set_var(&env, token);
        let mut config = GitConfig::new(self.url(), self.dir.join("cache"));
        config.token_env = Some(env);
        config.ca_file = ca_file.map(Path::to_path_buf);
        config.poll = Duration::from_secs(60);
        config
    }
}

#[tokio::test]
async fn https_token_with_the_ca_syncs_and_a_wrong_token_keeps_the_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpsServer::start(tmp.path(), "2");
    let first = server.repo.commit("image: v1\n");
    let config = server.config(Some(&server.ca), TOKEN);
    let env = config.token_env.clone().unwrap();
    let source = Source::new(SourceConfig::Git(config));

    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(snapshot.revision, first);
    assert_eq!(snapshot.files[0].1, "image: v1\n");

    // The token is read at every fetch: a rotated-away token fails clearly.
    let second = server.repo.commit("image: v2\n");
    std::env::set_var(&env, "wrong-token");
    let error = sync_error(&source).await;
    assert!(matches!(error, SourceError::TokenAuth { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(text.contains(&format!("${env}")), "{text}");
    assert!(!text.contains("wrong-token"), "the token leaked: {text}");
    keeps_serving(&source, &first).await;

    std::env::set_var(&env, TOKEN);
    assert!(source.sync().await.unwrap());
    assert_eq!(source.snapshot().await.unwrap().revision, second);
    std::env::remove_var(&env);
}

#[tokio::test]
async fn https_certificate_of_an_unknown_ca_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpsServer::start(tmp.path(), "2");
    server.repo.commit("image: v1\n");

    // No --git-ca-file: the system CAs do not know the test CA.
    let source = Source::new(SourceConfig::Git(server.config(None, TOKEN)));
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::CertificateUntrusted { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(text.contains("--git-ca-file"), "{text}");

    // A CA file with another CA: still refused, with OpenSSL's reason.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_ca = make_certs(&other, "2");
    let source = Source::new(SourceConfig::Git(server.config(Some(&other_ca), TOKEN)));
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::CertificateUntrusted { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("issuer"), "{error}");

    // A CA file that is not PEM: said so, naming the file.
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let source = Source::new(SourceConfig::Git(server.config(Some(&garbage), TOKEN)));
    let error = sync_error(&source).await;
    assert!(matches!(error, SourceError::CaFile { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&garbage.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn https_expired_certificate_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpsServer::start(tmp.path(), "-1");
    server.repo.commit("image: v1\n");
    for ca in [Some(server.ca.as_path()), None] {
        let source = Source::new(SourceConfig::Git(server.config(ca, TOKEN)));
        let error = sync_error(&source).await;
        assert!(
            matches!(error, SourceError::CertificateExpired { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("expired on"), "{text}");
        assert!(text.contains(&server.url()), "{text}");
        assert!(text.contains("renew the server's certificate"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------
// compaction

#[tokio::test]
async fn busy_repository_mirror_is_compacted() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path().join("remote.git"), tmp.path().join("work"));
    let mut config = GitConfig::new(repo.bare.to_str().unwrap(), tmp.path().join("cache"));
    config.poll = Duration::from_secs(60);
    let mirror = config.mirror_dir();
    let source = Source::new(SourceConfig::Git(config));
    let mut peak = mirror_stats(&mirror);
    let mut compactions = 0;
    let mut previous = peak;
    for n in 0..3 * MAX_PACKS {
        let revision = repo.commit(&format!("image: v{n}\n"));
        source.sync().await.unwrap();
        assert_eq!(source.snapshot().await.unwrap().revision, revision);
        let stats = mirror_stats(&mirror);
        assert!(
            stats.packs <= MAX_PACKS && stats.loose <= MAX_LOOSE,
            "fetch {n}: the mirror was not compacted: {stats:?}"
        );
        if stats.packs + stats.loose < previous.packs + previous.loose {
            compactions += 1;
            eprintln!("fetch {n}: compacted {previous:?} -> {stats:?}");
        }
        peak.packs = peak.packs.max(stats.packs);
        peak.loose = peak.loose.max(stats.loose);
        previous = stats;
    }
    assert!(compactions >= 2, "{compactions} compactions, peak {peak:?}");
    // Every fetch added to the store (so without compaction it would have kept growing).
    assert!(peak.packs + peak.loose >= MAX_PACKS, "peak {peak:?}");
    // Compacted into one pack that git itself can still read the branch from.
    let head = git(&mirror, &["rev-parse", "refs/remotes/origin/main"]);
    assert_eq!(head, source.status().revision.unwrap());
    git(&mirror, &["fsck", "--no-progress", "--connectivity-only"]);
}
