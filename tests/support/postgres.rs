//! A real PostgreSQL for tests and benches: Debian's `postgresql` binaries
//! (`/usr/lib/postgresql/*/bin`), never the system cluster. `initdb` + `pg_ctl` run as the
//! `postgres` user (`runuser`) on a data directory in a temp dir owned by postgres, on a
//! free 127.0.0.1 port with trust auth (loopback only, no unix socket outside the temp
//! dir), TLS on with a self-signed certificate ([`Postgres::tls_ca`]), fsync off, every
//! statement logged ([`Postgres::statements`] counts them). One database per test
//! ([`Postgres::database`]).
//!
//! Stopping: `pg_ctl stop -m immediate` (the server's pid from `postmaster.pid`, killed by
//! pid if pg_ctl fails) on drop, and a reaper process started with the server stops it when
//! the test process is gone (a panic that aborts, a server kept in a `static`, a SIGKILL).
//! Must not touch: the system cluster, any other PostgreSQL, anything off loopback.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
    /// The postmaster's pid while it runs.
    pid: Option<u32>,
}

/// The newest PostgreSQL's bin directory; panics saying what to install.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|e| {
            panic!("no /usr/lib/postgresql ({e}): run scripts/setup.sh (postgresql)")
        })
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql: run scripts/setup.sh")
}

/// Runs `program args` as the postgres user; panics with its output when it fails.
fn as_postgres(program: &Path, args: &[&str]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run runuser ({e}); the tests run as root"));
    assert!(
        out.status.success(),
        "{} {} failed: {}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a new key and a self-signed certificate for 127.0.0.1 (IP SAN), valid 2 days,
/// with the openssl CLI.
pub fn self_signed_for_loopback(key: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("run openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Creates a cluster in a temp dir and starts it; waits until it accepts connections.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("postgres temp dir");
        // postgres must reach its data directory and socket dir inside root's temp dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        for d in [&data, &run] {
            std::fs::create_dir(d).unwrap();
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(d)
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", d.display());
        }
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // TLS: a self-signed certificate for 127.0.0.1 (its own CA), so clients on the
        // default `sslmode=prefer` talk TLS and a test can ask for `verify-full`.
        self_signed_for_loopback(&data.join("server.key"), &data.join("server.crt"));
        for file in ["server.key", "server.crt"] {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join(file))
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {file}");
        }
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut pg = Postgres {
            port: free_port(),
            bin,
            data,
            dir,
            pid: None,
        };
        pg.start_again();
        pg
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&mut self) {
        assert!(self.pid.is_none(), "postgres already runs");
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -F -c max_connections=200 -c full_page_writes=off \
             -c log_statement=all -c ssl=on",
            self.port,
            self.dir.path().join("run").display()
        );
        let log = self.dir.path().join("run").join("postgres.log");
        as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        let pid: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        self.pid = Some(pid);
        self.reaper(pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "postgres did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A process that kills this server (by pid) once the test process is gone.
    fn reaper(&self, pid: u32) {
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null",
            me = std::process::id()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`; by pid when that fails).
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        let stopped = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's self-signed certificate: the CA a `verify-full` client trusts.
    pub fn tls_ca(&self) -> PathBuf {
        self.data.join("server.crt")
    }

    /// A new, empty database (unique name); its URL.
    pub fn database(&self) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "berth_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let port = self.port.to_string();
        as_postgres(
            &self.bin.join("createdb"),
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name],
        );
        self.url(&name)
    }

    /// Statements the server ran so far (it logs every one: `log_statement=all`).
    pub fn statements(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("LOG:  statement: ") || l.contains("LOG:  execute "))
            .count()
    }

    /// The server's log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run").join("postgres.log"))
            .unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server shared by every test of a test binary (each takes its own database); the
/// reaper stops it when the binary exits.
pub fn shared() -> &'static std::sync::Mutex<Postgres> {
    static SERVER: std::sync::OnceLock<std::sync::Mutex<Postgres>> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| std::sync::Mutex::new(Postgres::start()))
}

/// A fresh database on the shared server.
pub fn shared_database() -> String {
    shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .database()
}
