//! nginx: owns the proxy's files and process. Reads the current per-app files
//! (`current_files`), applies a batch of file changes atomically with `nginx -t` before a
//! reload and restores the previous files when the test fails (`apply_files`), and in the
//! default private mode starts and supervises berth's own nginx (system binary, own prefix,
//! own port) so no root-owned config is touched. Rendering lives in `plan::render`.
//! Must not touch: Docker, the store. Mutating calls come only from `reconcile`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nginx rejected the new config, previous files restored: {message}")]
    Rejected { message: String },
    #[error("nginx reload failed: {message}")]
    ReloadFailed { message: String },
    #[error("cannot run {command}: {message} (install nginx: apt-get install nginx, or pass --nginx-binary)")]
    Spawn { command: String, message: String },
    #[error("nginx did not start: {message}")]
    StartFailed { message: String },
    #[error("proxy file {path}: {message}")]
    Io { path: PathBuf, message: String },
}

fn io_error(path: &Path, err: std::io::Error) -> ProxyError {
    ProxyError::Io {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

/// How berth drives nginx.
#[derive(Debug, Clone)]
pub enum ProxyMode {
    /// berth writes a full nginx.conf under `prefix` and runs the system binary itself.
    Private {
        prefix: PathBuf,
        /// nginx `listen` value, e.g. `127.0.0.1:8080`.
        listen: String,
        binary: PathBuf,
    },
    /// berth writes per-app files into `conf_dir` (which the operator's nginx.conf includes:
    /// `*.conf` at http level, `*.loc` inside the server) and runs the given commands.
    External {
        conf_dir: PathBuf,
        listen: String,
        test_command: Vec<String>,
        reload_command: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Proxy {
    pub mode: ProxyMode,
    /// Private mode: the number the last reload published at `/_berth/generation`, so
    /// `reload` can wait until nginx really serves the new files.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Private mode: nginx.conf was written by this process already.
    prepared: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests waiting for the next combined test + reload (see `submit`).
    pending: std::sync::Arc<std::sync::Mutex<Vec<PendingChange>>>,
    /// Held by whoever is applying a combined batch.
    flushing: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Reloads that succeeded (one per combined batch, however many callers shared it).
    reloads: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One caller's file changes waiting to be applied with everybody else's.
#[derive(Debug)]
struct PendingChange {
    writes: Vec<(String, String)>,
    removes: Vec<String>,
    done: tokio::sync::oneshot::Sender<Result<ApplyOutcome, ProxyError>>,
}

/// What `apply_files` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub written: usize,
    pub removed: usize,
    pub reloaded: bool,
}

const MAIN_CONF_TEMPLATE: &str = r#"# berth private nginx: generated, do not edit
worker_processes 1;
pid {{ prefix }}/nginx.pid;
error_log {{ prefix }}/logs/error.log warn;
events { worker_connections 4096; }
http {
    log_format berth escape=json '{"time":$msec,"app":"$berth_app","status":$status,'
        '"request_time":$request_time,"upstream_time":"$upstream_response_time",'
        '"upstream":"$upstream_addr","request_id":"$request_id","method":"$request_method",'
        '"host":"$host","uri":"$uri","connections":$connections_active}';
    access_log {{ prefix }}/logs/access.log berth;
    client_body_temp_path {{ prefix }}/tmp/body;
    proxy_temp_path {{ prefix }}/tmp/proxy;
    fastcgi_temp_path {{ prefix }}/tmp/fastcgi;
    uwsgi_temp_path {{ prefix }}/tmp/uwsgi;
    scgi_temp_path {{ prefix }}/tmp/scgi;
    absolute_redirect off;
    server_tokens off;
    include {{ prefix }}/conf.d/*.conf;
    server {
        listen {{ listen }} default_server;
        set $berth_app "-";
        root {{ prefix }}/empty;
        error_page 403 404 =404 /_berth/not-found;
        location = /_berth/not-found { internal; default_type text/plain; return 404 "no app is routed here\n"; }
        location = /_berth/nginx { default_type text/plain; return 200 "ok\n"; }
        include {{ prefix }}/generation.conf;
        include {{ prefix }}/conf.d/*.loc;
    }
}
"#;

/// The read-only face of a [`Proxy`]: what holders other than `reconcile` may use (the
/// files on disk, the access log's path, the running master's pid, the reload count).
/// Nothing reachable from it writes a file or signals nginx.
#[derive(Debug, Clone, Copy)]
pub struct ProxyReader<'a> {
    proxy: &'a Proxy,
}

impl ProxyReader<'_> {
    pub fn listen(&self) -> &str {
        self.proxy.listen()
    }

    pub fn access_log(&self) -> Option<PathBuf> {
        self.proxy.access_log()
    }

    pub async fn current_files(&self) -> Result<BTreeMap<String, String>, ProxyError> {
        self.proxy.current_files().await
    }

    pub async fn running_pid(&self) -> Option<u32> {
        self.proxy.running_pid().await
    }

    pub fn reloads(&self) -> u64 {
        self.proxy.reloads()
    }
}

impl Proxy {
    pub fn private(prefix: PathBuf, listen: String, binary: PathBuf) -> Self {
        // Seeded from the clock so a restarted berth never reuses a live generation.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Self {
            mode: ProxyMode::Private {
                prefix,
                listen,
                binary,
            },
            generation: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(seed)),
            prepared: Default::default(),
            pending: Default::default(),
            flushing: Default::default(),
            reloads: Default::default(),
        }
    }

    /// Production mode: files into `conf_dir`, the operator's commands to test and reload.
    pub fn external(
        conf_dir: PathBuf,
        listen: String,
        test_command: Vec<String>,
        reload_command: Vec<String>,
    ) -> Self {
        Self {
            mode: ProxyMode::External {
                conf_dir,
                listen,
                test_command,
                reload_command,
            },
            generation: Default::default(),
            prepared: Default::default(),
            pending: Default::default(),
            flushing: Default::default(),
            reloads: Default::default(),
        }
    }

    /// The read-only face of this proxy.
    pub fn reader(&self) -> ProxyReader<'_> {
        ProxyReader { proxy: self }
    }

    pub fn listen(&self) -> &str {
        match &self.mode {
            ProxyMode::Private { listen, .. } | ProxyMode::External { listen, .. } => listen,
        }
    }

    /// Directory holding the per-app files.
    pub fn conf_dir(&self) -> PathBuf {
        match &self.mode {
            ProxyMode::Private { prefix, .. } => prefix.join("conf.d"),
            ProxyMode::External { conf_dir, .. } => conf_dir.clone(),
        }
    }

    /// The access log berth's autoscaler reads (private mode only).
    pub fn access_log(&self) -> Option<PathBuf> {
        match &self.mode {
            ProxyMode::Private { prefix, .. } => Some(prefix.join("logs/access.log")),
            ProxyMode::External { .. } => None,
        }
    }

    /// Private mode: renames `logs/access.log` and `logs/error.log` to `<name>.1` (replacing
    /// the previous `.1`) when they are larger than `max_bytes`, then has nginx reopen its
    /// logs (`-s reopen`). Returns the files rotated. External mode: nothing (the operator's
    /// logrotate owns those logs). The autoscaler's collector finishes the renamed file and
    /// follows the new one.
    pub async fn rotate_logs(&self, max_bytes: u64) -> Result<Vec<PathBuf>, ProxyError> {
        let ProxyMode::Private { prefix, binary, .. } = &self.mode else {
            return Ok(Vec::new());
        };
        let mut rotated = Vec::new();
        for name in ["access.log", "error.log"] {
            let path = prefix.join("logs").join(name);
            let size = match tokio::fs::metadata(&path).await {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&path, e)),
            };
            if size <= max_bytes {
                continue;
            }
            let old = prefix.join("logs").join(format!("{name}.1"));
            tokio::fs::rename(&path, &old)
                .await
                .map_err(|e| io_error(&path, e))?;
            rotated.push(path);
        }
        if rotated.is_empty() || self.running_pid().await.is_none() {
            // A stopped nginx creates fresh files when it starts.
            return Ok(rotated);
        }
        let output = run_command(
            &binary.display().to_string(),
            &private_args(prefix, &["-s", "reopen"]),
        )
        .await?;
        if !output.status.success() {
            return Err(ProxyError::ReloadFailed {
                message: format!(
                    "reopening the logs after rotating them: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(rotated)
    }

    /// Reads every managed file (`*.conf`, `*.loc`) in the conf dir.
    pub async fn current_files(&self) -> Result<BTreeMap<String, String>, ProxyError> {
        let dir = self.conf_dir();
        // One blocking task for the whole directory: a hop to the blocking pool per file
        // cost more than the reads themselves with 1,000 apps.
        tokio::task::spawn_blocking(move || read_conf_dir(&dir))
            .await
            .map_err(|e| ProxyError::Io {
                path: PathBuf::new(),
                message: format!("the read task failed: {e}"),
            })?
    }

    /// Private mode: writes nginx.conf and the directories nginx needs. Idempotent;
    /// true when nginx.conf changed.
    pub async fn prepare(&self) -> Result<bool, ProxyError> {
        let ProxyMode::Private { prefix, listen, .. } = &self.mode else {
            let dir = self.conf_dir();
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| io_error(&dir, e))?;
            return Ok(false);
        };
        for sub in [
            "conf.d",
            "logs",
            "empty",
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            let dir = prefix.join(sub);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| io_error(&dir, e))?;
        }
        // Workers may run as an unprivileged user when berth runs as root.
        set_mode(&prefix.join("tmp"), 0o777).await;
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            set_mode(&prefix.join("tmp").join(sub), 0o777).await;
        }
        let mut context = tera::Context::new();
        context.insert("prefix", &prefix.display().to_string());
        context.insert("listen", listen);
        let text = tera::Tera::one_off(MAIN_CONF_TEMPLATE, &context, false).map_err(|e| {
            ProxyError::StartFailed {
                message: format!("cannot render nginx.conf: {e}"),
            }
        })?;
        let generation = prefix.join("generation.conf");
        if read_optional(&generation).await?.is_none() {
            write_generation(&generation, 0).await?;
        }
        let main_conf = prefix.join("nginx.conf");
        if read_optional(&main_conf).await?.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_atomically(&main_conf, &text).await?;
        Ok(true)
    }

    /// Like `apply_files`, but changes submitted at the same time by several callers (apps
    /// rolling out in parallel) are combined into one `nginx -t` and one reload. If the
    /// combined batch is rejected, each caller's change is tried on its own, so one bad
    /// app cannot block the others.
    pub async fn submit(
        &self,
        writes: Vec<(String, String)>,
        removes: Vec<String>,
    ) -> Result<ApplyOutcome, ProxyError> {
        let (done, mut result) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .push(PendingChange {
                writes,
                removes,
                done,
            });
        let _flushing = self.flushing.lock().await;
        // Let callers started in the same breath (join_all, parallel apps) add theirs.
        tokio::task::yield_now().await;
        // Someone else may have applied our change while we waited for the lock.
        if let Ok(outcome) = result.try_recv() {
            return outcome;
        }
        let batch: Vec<PendingChange> =
            std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        let writes: Vec<(String, String)> = batch.iter().flat_map(|c| c.writes.clone()).collect();
        let removes: Vec<String> = batch.iter().flat_map(|c| c.removes.clone()).collect();
        match self.apply_files(&writes, &removes).await {
            Ok(outcome) => {
                for change in batch {
                    let _ = change.done.send(Ok(outcome.clone()));
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(change) = batch.into_iter().next() {
                    let _ = change.done.send(Err(error));
                }
            }
            Err(_) => {
                for change in batch {
                    let outcome = self.apply_files(&change.writes, &change.removes).await;
                    let _ = change.done.send(outcome);
                }
            }
        }
        result.try_recv().unwrap_or_else(|_| {
            Err(ProxyError::ReloadFailed {
                message: "internal: proxy batch lost a change".to_string(),
            })
        })
    }

    /// Writes and removes files as one batch, tests the whole config, reloads once.
    /// When nginx rejects the result every touched file is put back as it was.
    pub async fn apply_files(
        &self,
        writes: &[(String, String)],
        removes: &[String],
    ) -> Result<ApplyOutcome, ProxyError> {
        let dir = self.conf_dir();
        let mut previous: Vec<(PathBuf, Option<String>)> = Vec::new();
        let mut outcome = ApplyOutcome::default();
        for (file, text) in writes {
            let path = dir.join(file);
            let old = read_optional(&path).await?;
            if old.as_deref() == Some(text.as_str()) {
                continue;
            }
            write_atomically(&path, text).await?;
            previous.push((path, old));
            outcome.written += 1;
        }
        for file in removes {
            let path = dir.join(file);
            let Some(old) = read_optional(&path).await? else {
                continue;
            };
            remove_optional(&path).await?;
            previous.push((path, Some(old)));
            outcome.removed += 1;
        }
        if previous.is_empty() {
            return Ok(outcome);
        }
        if let Err(message) = self.test_config().await {
            for (path, old) in previous.iter().rev() {
                match old {
                    Some(text) => write_atomically(path, text).await?,
                    None => remove_optional(path).await?,
                }
            }
            return Err(ProxyError::Rejected { message });
        }
        self.reload().await?;
        outcome.reloaded = true;
        Ok(outcome)
    }

    /// `nginx -t`: Ok, or nginx's own message.
    pub async fn test_config(&self) -> Result<(), String> {
        let (program, args) = match &self.mode {
            ProxyMode::Private { prefix, binary, .. } => (
                binary.display().to_string(),
                private_args(prefix, &["-t", "-q"]),
            ),
            ProxyMode::External { test_command, .. } => split_command(test_command),
        };
        let output = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(stderr.trim().replace('\n', "; "))
        }
    }

    /// Tells nginx to load the new files (graceful: in-flight requests finish). In private
    /// mode it returns only once nginx answers with the new generation (at most 3 s), so
    /// callers know new connections see the new upstreams.
    pub async fn reload(&self) -> Result<(), ProxyError> {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let mut old_workers = Vec::new();
        if let ProxyMode::Private { prefix, .. } = &self.mode {
            write_generation(&prefix.join("generation.conf"), generation).await?;
            if let Some(master) = self.running_pid().await {
                old_workers = workers_of(master);
            }
        }
        let (program, args) = match &self.mode {
            ProxyMode::Private { prefix, binary, .. } => (
                binary.display().to_string(),
                private_args(prefix, &["-s", "reload"]),
            ),
            ProxyMode::External { reload_command, .. } => split_command(reload_command),
        };
        let output = run_command(&program, &args).await?;
        if !output.status.success() {
            return Err(ProxyError::ReloadFailed {
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        if let ProxyMode::Private { listen, .. } = &self.mode {
            // Done when the new workers answer with the new generation AND no old worker
            // still holds the listening socket (old workers finish their in-flight
            // requests, but accept no new connection with the old upstreams).
            let address = probe_address(listen);
            let inodes = listen_port(listen)
                .map(listening_inodes)
                .unwrap_or_default();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            let expected = generation.to_string();
            loop {
                let answered =
                    get_body(&address, "/_berth/generation").await.as_deref() == Some(&expected);
                if answered
                    && !old_workers
                        .iter()
                        .any(|pid| holds_any_socket(*pid, &inodes))
                {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(generation, "nginx did not confirm the reload within 3 s");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// How many reloads succeeded since this proxy (or the clone it came from) was made.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Private mode: the pid of the running master, if any.
    pub async fn running_pid(&self) -> Option<u32> {
        let ProxyMode::Private { prefix, .. } = &self.mode else {
            return None;
        };
        let text = tokio::fs::read_to_string(prefix.join("nginx.pid"))
            .await
            .ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = tokio::fs::read(format!("/proc/{pid}/cmdline")).await.ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("nginx")
            .then_some(pid)
    }

    /// Private mode: starts nginx when it is not running (first start, or it died) and
    /// waits until it answers. Returns true when it had to start it. External mode: no-op.
    pub async fn ensure_running(&self) -> Result<bool, ProxyError> {
        let ProxyMode::Private { prefix, binary, .. } = &self.mode else {
            return Ok(false);
        };
        if self.running_pid().await.is_some() {
            // Adopted (started by an earlier berth): bring its main config up to date once.
            if !self
                .prepared
                .swap(true, std::sync::atomic::Ordering::SeqCst)
                && self.prepare().await?
            {
                self.test_config()
                    .await
                    .map_err(|message| ProxyError::Rejected { message })?;
                self.reload().await?;
            }
            return Ok(false);
        }
        self.prepare().await?;
        self.prepared
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::fs::remove_file(prefix.join("nginx.pid")).await;
        // A master killed with SIGKILL leaves its workers serving the old config on our
        // port; they would keep the new master from binding. Retire them gracefully.
        if let Some(port) = listen_port(self.listen()) {
            let orphans = orphaned_workers_listening_on(port);
            for pid in &orphans {
                let _ = Command::new("kill")
                    .args(["-QUIT", &pid.to_string()])
                    .status()
                    .await;
            }
            for _ in 0..100 {
                if orphans.iter().all(|pid| exited(*pid)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Err(message) = self.test_config().await {
            return Err(ProxyError::StartFailed { message });
        }
        // nginx daemonizes itself: the master outlives berth, so a berth restart or
        // upgrade never drops traffic; the next berth adopts it through the pid file.
        let output = run_command(&binary.display().to_string(), &private_args(prefix, &[])).await?;
        if !output.status.success() {
            return Err(ProxyError::StartFailed {
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        for _ in 0..100 {
            if self.running_pid().await.is_some() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ProxyError::StartFailed {
            message: format!(
                "no pid file at {} after 2 s; see {}",
                prefix.join("nginx.pid").display(),
                prefix.join("logs/error.log").display()
            ),
        })
    }

    /// Private mode: stops the supervised nginx (used by tests and `berth serve --stop-proxy`).
    pub async fn stop(&self) -> Result<(), ProxyError> {
        let ProxyMode::Private { prefix, binary, .. } = &self.mode else {
            return Ok(());
        };
        let Some(pid) = self.running_pid().await else {
            return Ok(());
        };
        let _ = Command::new(binary)
            .args(private_args(prefix, &["-s", "quit"]))
            .output()
            .await;
        for _ in 0..200 {
            if exited(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

async fn write_generation(path: &Path, generation: u64) -> Result<(), ProxyError> {
    write_atomically(
        path,
        &format!(
            "location = /_berth/generation {{ default_type text/plain; return 200 \"{generation}\"; }}\n"
        ),
    )
    .await
}

/// Where to reach an nginx `listen` value from this host: its IP when it names one,
/// else loopback.
fn probe_address(listen: &str) -> String {
    let port = listen_port(listen).unwrap_or(80);
    match listen.rsplit_once(':') {
        Some((host, _))
            if !host.is_empty() && host != "*" && host != "0.0.0.0" && host != "[::]" =>
        {
            format!("{host}:{port}")
        }
        _ => format!("127.0.0.1:{port}"),
    }
}

/// GET over loopback HTTP/1.1; the body when the status is 200.
async fn get_body(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}

/// The port of an nginx `listen` value (`127.0.0.1:8080`, `8080`, `[::1]:8080`).
fn listen_port(listen: &str) -> Option<u16> {
    listen
        .rsplit(':')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Socket inodes listening on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, inode is field 9.
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// Runs an nginx command (stdin closed) and returns its output; only a failure to start it
/// is an error here, its exit status is the caller's to judge.
async fn run_command(program: &str, args: &[String]) -> Result<std::process::Output, ProxyError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ProxyError::Spawn {
            command: program.to_string(),
            message: e.to_string(),
        })
}

/// Has `pid` exited? Gone from /proc, or a zombie nobody reaped yet: under a PID 1 that does
/// not reap (a container without an init, some sandboxes) a killed master's workers stay
/// zombies forever, and waiting for /proc/<pid> to vanish would always time out. Public so
/// tests and benches that stop an nginx wait the same way.
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Every nginx worker process on the host with its parent pid.
fn nginx_workers() -> Vec<(u32, Option<u32>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut workers = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).starts_with("nginx: worker process") {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        workers.push((pid, parent));
    }
    workers
}

/// Does this process hold one of these socket inodes open?
fn holds_any_socket(pid: u32, inodes: &[String]) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .map(|target| inodes.contains(&target.to_string_lossy().to_string()))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

fn is_nginx_master(pid: u32) -> bool {
    pid != 1
        && String::from_utf8_lossy(
            &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        )
        .starts_with("nginx: master")
}

/// nginx worker processes whose master is gone (parent is init) that still hold a
/// listening socket on `port`: leftovers of a master killed with SIGKILL.
fn orphaned_workers_listening_on(port: u16) -> Vec<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    nginx_workers()
        .into_iter()
        .filter(|(_, parent)| !parent.is_some_and(is_nginx_master))
        .filter(|(pid, _)| holds_any_socket(*pid, &inodes))
        .map(|(pid, _)| pid)
        .collect()
}

/// The workers of one master.
fn workers_of(master: u32) -> Vec<u32> {
    nginx_workers()
        .into_iter()
        .filter(|(_, parent)| *parent == Some(master))
        .map(|(pid, _)| pid)
        .collect()
}

/// The nginx arguments that address a private prefix (`-p`, `-c`, `-e`) plus `extra`; also
/// what an operator (or a test) needs to drive that nginx by hand.
pub fn private_args(prefix: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-p".to_string(),
        format!("{}/", prefix.display()),
        "-c".to_string(),
        prefix.join("nginx.conf").display().to_string(),
        "-e".to_string(),
        prefix.join("logs/error.log").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn split_command(command: &[String]) -> (String, Vec<String>) {
    match command.split_first() {
        Some((program, args)) => (program.clone(), args.to_vec()),
        None => ("true".to_string(), Vec::new()),
    }
}

async fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await;
}

async fn read_optional(path: &Path) -> Result<Option<String>, ProxyError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

async fn remove_optional(path: &Path) -> Result<(), ProxyError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Write to a temp file in the same directory, then rename over the target.
async fn write_atomically(path: &Path, text: &str) -> Result<(), ProxyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io_error(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    tokio::fs::write(&tmp, text)
        .await
        .map_err(|e| io_error(&tmp, e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::exited;

    #[test]
    fn a_running_process_has_not_exited_and_a_zombie_or_missing_one_has() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        assert!(!exited(child.id()), "sleep is running");
        child.kill().expect("kill sleep");
        // Not waited for yet: a zombie until reaped.
        let mut zombie = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
            if stat.is_ok_and(|s| s.contains(") Z ")) {
                zombie = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie, "the killed child is a zombie until waited for");
        assert!(exited(child.id()), "a zombie counts as exited");
        child.wait().expect("reap sleep");
        assert!(exited(child.id()), "a reaped process has exited");
        assert!(exited(u32::MAX), "no such process");
    }
}

/// Every berth-managed file (`*.conf`, `*.loc`, not hidden) in `dir` with its text; an
/// absent directory has none.
fn read_conf_dir(dir: &Path) -> Result<BTreeMap<String, String>, ProxyError> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.ends_with(".conf") || name.ends_with(".loc")) || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        files.insert(name, text);
    }
    Ok(files)
}
