//! nginx: owns the proxy's files and process. Reads the current per-app files
//! (`current_files`), applies a batch of file changes atomically with `nginx -t` before a
//! reload and restores the previous files when the test fails (`apply_files`), and in the
//! default private mode starts and supervises berth's own nginx (system binary, own prefix,
//! own port) so no root-owned config is touched. Rendering lives in `plan::render`.
//! In dynamic mode (`Upstreams::Dynamic`) `<app>.members` files are not part of nginx's
//! config: a batch pushes them to nginx's Lua balancer (dynamic.rs) after any config
//! reload, so a member change alone never reloads.
//! Must not touch: Docker, the store. Mutating calls come only from `reconcile`.

mod confirm;
mod dynamic;
mod files;
mod process;

pub use crate::plan::render::Upstreams;
pub use dynamic::{http_conf, lua_modules, BERTH_LUA};
pub use process::{exited, private_args};

use crate::plan::render::{app_of_file, is_members_file};

use confirm::write_generation;
use files::{read_optional, remove_optional, set_mode, write_atomically};
use process::split_command;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nginx rejected the new config, previous files restored: {message}")]
    Rejected { message: String },
    #[error("nginx reload failed: {message}")]
    ReloadFailed { message: String },
    #[error("cannot run {command}: {source} (install nginx: apt-get install nginx, or pass --nginx-binary)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the http client that confirms reloads: {source} (check the system's TLS and resolver set-up)")]
    ConfirmClient {
        #[source]
        source: reqwest::Error,
    },
    #[error("nginx did not start: {message}")]
    StartFailed { message: String },
    #[error("proxy file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin socket path {} is longer than {max} bytes: use a shorter --state-dir or --nginx-conf-dir", path.display())]
    SocketPathTooLong { path: PathBuf, max: usize },
    #[error("berth's {what} task failed: {source} (a bug: please report it with the log)")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot hand the upstream members of app {app} to nginx: {source} (is berth's nginx running with the Lua module? see its error.log)")]
    PushFailed {
        app: String,
        #[source]
        source: dynamic::AdminError,
    },
}

fn io_error(path: &Path, err: std::io::Error) -> ProxyError {
    ProxyError::Io {
        path: path.to_path_buf(),
        source: err,
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
    /// Member lists nginx confirmed (dynamic mode).
    pushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// How members reach nginx.
    upstreams: Upstreams,
    /// Private dynamic mode: `load_module` paths for nginx.conf (ndk + lua).
    lua_modules: Vec<PathBuf>,
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
    /// Member lists pushed to nginx (dynamic mode).
    pub pushed: usize,
}

const MAIN_CONF_TEMPLATE: &str = r#"# berth private nginx: generated, do not edit
{% for module in lua_modules %}load_module {{ module }};
{% endfor %}worker_processes 1;
pid {{ prefix }}/nginx.pid;
error_log {{ prefix }}/logs/error.log warn;
events { worker_connections 4096; }
http {
    log_format berth escape=json '{"time":$msec,"app":"$berth_app","status":$status,'
        '"request_time":$request_time,"upstream_time":"$upstream_response_time",'
        '"upstream":"$upstream_addr","request_id":"$berth_request_id","method":"$request_method",'
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

    pub fn pushes(&self) -> u64 {
        self.proxy.pushes()
    }

    pub fn upstreams(&self) -> Upstreams {
        self.proxy.upstreams()
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
            pushes: Default::default(),
            upstreams: Upstreams::Static,
            lua_modules: Vec::new(),
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
            pushes: Default::default(),
            upstreams: Upstreams::Static,
            lua_modules: Vec::new(),
        }
    }

    /// Dynamic upstreams: members are pushed to nginx's Lua balancer instead of reloading.
    /// `lua_modules` are the `load_module` paths the private nginx needs (from
    /// [`lua_modules`]); an external nginx must load the module itself.
    pub fn with_dynamic_upstreams(mut self, lua_modules: Vec<PathBuf>) -> Self {
        self.upstreams = Upstreams::Dynamic;
        self.lua_modules = lua_modules;
        self
    }

    pub fn upstreams(&self) -> Upstreams {
        self.upstreams
    }

    fn is_dynamic(&self) -> bool {
        self.upstreams == Upstreams::Dynamic
    }

    /// Member lists nginx confirmed since this proxy was made.
    pub fn pushes(&self) -> u64 {
        self.pushes.load(std::sync::atomic::Ordering::Relaxed)
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

    /// Private mode: writes nginx.conf and the directories nginx needs. Idempotent;
    /// true when nginx.conf changed.
    pub async fn prepare(&self) -> Result<bool, ProxyError> {
        let ProxyMode::Private { prefix, listen, .. } = &self.mode else {
            let dir = self.conf_dir();
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| io_error(&dir, e))?;
            return self.prepare_http_conf().await;
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
        let modules: Vec<String> = self
            .lua_modules
            .iter()
            .map(|m| m.display().to_string())
            .collect();
        context.insert("lua_modules", &modules);
        let text = tera::Tera::one_off(MAIN_CONF_TEMPLATE, &context, false).map_err(|e| {
            ProxyError::StartFailed {
                message: format!("cannot render nginx.conf: {e}"),
            }
        })?;
        let generation = prefix.join("generation.conf");
        if read_optional(&generation).await?.is_none() {
            write_generation(&generation, 0).await?;
        }
        let http_changed = self.prepare_http_conf().await?;
        let main_conf = prefix.join("nginx.conf");
        if read_optional(&main_conf).await?.as_deref() == Some(text.as_str()) {
            return Ok(http_changed);
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
        let (member_writes, writes): (Vec<_>, Vec<_>) =
            writes.iter().partition(|(file, _)| is_members_file(file));
        let (member_removes, removes): (Vec<_>, Vec<_>) =
            removes.iter().partition(|file| is_members_file(file));
        let mut outcome = self.apply_config(&writes, &removes).await?;
        self.apply_members(&member_writes, &member_removes, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// Member lists: pushed to nginx (and confirmed) first, then written to disk, so the
    /// file never claims a list nginx does not hold (a failed write is retried next pass:
    /// the plan sees the old file). In static mode (stale files of an earlier dynamic run)
    /// they are only written or removed.
    async fn apply_members(
        &self,
        writes: &[&(String, String)],
        removes: &[&String],
        outcome: &mut ApplyOutcome,
    ) -> Result<(), ProxyError> {
        let dir = self.conf_dir();
        for (file, text) in writes {
            let path = dir.join(file);
            if read_optional(&path).await?.as_deref() == Some(text.as_str()) {
                continue;
            }
            if self.is_dynamic() {
                self.push_members(app_of_file(file), text).await?;
                outcome.pushed += 1;
            }
            write_atomically(&path, text).await?;
            // nginx's workers (an unprivileged user when berth is root) read it after a
            // restart.
            set_mode(&path, 0o644).await;
            outcome.written += 1;
        }
        for file in removes {
            let path = dir.join(file);
            if read_optional(&path).await?.is_none() {
                continue;
            }
            if self.is_dynamic() {
                self.forget_members(app_of_file(file)).await?;
            }
            remove_optional(&path).await?;
            outcome.removed += 1;
        }
        Ok(())
    }

    /// Config files: written, tested, reloaded once; restored when nginx rejects them.
    async fn apply_config(
        &self,
        writes: &[&(String, String)],
        removes: &[&String],
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

    /// `nginx -t`: Ok, or nginx's own message (which the callers put into their
    /// `ProxyError`).
    async fn test_config(&self) -> Result<(), String> {
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

    /// How many reloads succeeded since this proxy (or the clone it came from) was made.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }
}
