//! Dynamic upstreams: the Lua side's files (`_berth.conf` at http level, `_berth/berth.lua`),
//! finding the Lua module for the private nginx, and the admin client that pushes an app's
//! members to nginx over the unix socket `<conf dir>/_berth/admin.sock` and confirms nginx
//! holds them. Must not touch: the per-app config files or reloads (mod.rs, confirm.rs).
//!
//! Why a unix socket: its directory is mode 0700, so only berth's user (and root) can
//! connect; nothing listens on a TCP port another local user or a container could reach,
//! and there is no token to keep out of logs, events and `ps`.

use super::files::{set_mode, write_atomically};
use super::{Proxy, ProxyError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Lua module nginx loads (`require "berth"`).
pub const BERTH_LUA: &str = include_str!("berth.lua");

/// The longest unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The http-level config berth keeps next to the per-app files: the maps every route uses
/// (WebSocket upgrade, the request id), and in dynamic mode the Lua set-up and the admin
/// server. File names starting with `_` are never an app's (app names are DNS labels).
pub fn http_conf(conf_dir: &Path, dynamic: bool) -> String {
    let mut text = String::from(
        "# berth: generated, do not edit
map $http_upgrade $berth_connection_upgrade {
    default upgrade;
    \"\" \"\";
}
map $http_x_request_id $berth_request_id {
    default $http_x_request_id;
    \"\" $request_id;
}
",
    );
    if dynamic {
        let dir = conf_dir.display();
        text.push_str(&format!(
            "lua_shared_dict berth_members 8m;
lua_package_path \"{dir}/_berth/?.lua;;\";
init_by_lua_block {{ require(\"berth\").init(\"{dir}\") }}
server {{
    listen unix:{dir}/_berth/admin.sock;
    access_log off;
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    location /members/ {{
        content_by_lua_block {{ require(\"berth\").admin() }}
    }}
    location / {{
        return 404;
    }}
}}
"
        ));
    }
    text
}

/// The `load_module` paths the private nginx needs for Lua (empty when the binary has it
/// built in), after checking that a config using it passes `nginx -t`. The error says
/// what to install.
pub async fn lua_modules(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let version = tokio::process::Command::new(binary)
        .arg("-V")
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let configure = String::from_utf8_lossy(&version.stderr).to_string();
    let modules = if configure.contains("lua-nginx-module") {
        Vec::new()
    } else {
        let dir = configure
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("--modules-path="))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/nginx/modules"));
        let paths = vec![
            dir.join("ndk_http_module.so"),
            dir.join("ngx_http_lua_module.so"),
        ];
        if let Some(missing) = paths.iter().find(|p| !p.exists()) {
            return Err(format!(
                "{} is missing: install the Lua module (apt-get install libnginx-mod-http-lua lua-resty-core)",
                missing.display()
            ));
        }
        paths
    };
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let mut conf = String::new();
    for module in &modules {
        conf.push_str(&format!("load_module {};\n", module.display()));
    }
    conf.push_str(&format!(
        "pid {0}/nginx.pid;\nevents {{}}\nhttp {{ lua_shared_dict berth_probe 1m; init_by_lua_block {{ require \"resty.core\" }} }}\n",
        dir.path().display()
    ));
    std::fs::create_dir_all(dir.path().join("logs"))
        .map_err(|e| format!("cannot make {}: {e}", dir.path().display()))?;
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let output = tokio::process::Command::new(binary)
        .args(super::private_args(dir.path(), &["-t", "-q"]))
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if output.status.success() {
        Ok(modules)
    } else {
        Err(format!(
            "nginx cannot load the Lua module: {} (install libnginx-mod-http-lua and lua-resty-core)",
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .replace('\n', "; ")
        ))
    }
}

impl Proxy {
    /// The admin socket of dynamic mode.
    pub fn admin_socket(&self) -> PathBuf {
        self.conf_dir().join("_berth").join("admin.sock")
    }

    /// Writes `_berth.conf` and (dynamic mode) `_berth/berth.lua`; true when either changed.
    pub(super) async fn prepare_http_conf(&self) -> Result<bool, ProxyError> {
        let dir = self.conf_dir();
        let dynamic = self.is_dynamic();
        let mut changed = false;
        if dynamic {
            let socket = self.admin_socket();
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(ProxyError::SocketPathTooLong {
                    path: socket,
                    max: MAX_SOCKET_PATH,
                });
            }
            let lua_dir = dir.join("_berth");
            tokio::fs::create_dir_all(&lua_dir)
                .await
                .map_err(|e| super::io_error(&lua_dir, e))?;
            // Only berth's user reaches the admin socket. nginx's master (same user, or
            // root) binds it; workers inherit the listening socket.
            set_mode(&lua_dir, 0o700).await;
            changed |= write_if_changed(&lua_dir.join("berth.lua"), BERTH_LUA).await?;
        }
        changed |= write_if_changed(&dir.join("_berth.conf"), &http_conf(&dir, dynamic)).await?;
        Ok(changed)
    }

    /// Sets an app's members in nginx (`text` is the `<app>.members` text) and checks nginx
    /// answers with exactly that text: once this returns, every new request of the app
    /// picks from the new list.
    pub(super) async fn push_members(&self, app: &str, text: &str) -> Result<(), ProxyError> {
        let (status, body) = self.admin("PUT", app, text).await?;
        if status != 200 || body != text {
            return Err(unexpected(app, status, &body));
        }
        self.pushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Pushes every `<app>.members` file on disk to an nginx this process did not start
    /// (adopted after a berth restart, or the operator's): a berth killed between a push
    /// and its file write left nginx holding a list the file (and so the plan) does not
    /// show. Afterwards nginx holds exactly what the files say. No-op in static mode.
    pub(super) async fn resync_members(&self) -> Result<(), ProxyError> {
        if !self.is_dynamic() {
            return Ok(());
        }
        let dir = self.conf_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(super::io_error(&dir, e)),
        };
        let mut files = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| super::io_error(&dir, e))?
        {
            if let Some(name) = entry.file_name().to_str() {
                if crate::plan::render::is_members_file(name) {
                    files.push(name.to_string());
                }
            }
        }
        for file in files {
            let path = dir.join(&file);
            if let Some(text) = super::files::read_optional(&path).await? {
                self.push_members(crate::plan::render::app_of_file(&file), &text)
                    .await?;
            }
        }
        Ok(())
    }

    /// [`Self::resync_members`], and on failure a warning and another try on the next
    /// `ensure_running` (the once-per-process flag is cleared; preparing again is a no-op
    /// when nothing changed).
    pub(super) async fn resync_or_retry(&self) {
        if let Err(e) = self.resync_members().await {
            tracing::warn!(
                "cannot resync nginx's member lists with the files, next pass retries: {e}"
            );
            self.prepared
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Drops an app's members from nginx (its files are gone).
    pub(super) async fn forget_members(&self, app: &str) -> Result<(), ProxyError> {
        let (status, body) = self.admin("DELETE", app, "").await?;
        if status != 200 {
            return Err(unexpected(app, status, &body));
        }
        Ok(())
    }

    /// What nginx holds for an app (the `<app>.members` text it was pushed or loaded), or
    /// None when it holds nothing yet (no request and no push since it started).
    pub async fn held_members(&self, app: &str) -> Result<Option<String>, ProxyError> {
        let (status, body) = self.admin("GET", app, "").await?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => Err(unexpected(app, status, &body)),
        }
    }

    /// One HTTP/1.1 request over the admin socket (hyper's client on the unix stream, one
    /// connection per request), at most 2 s.
    async fn admin(
        &self,
        method: &str,
        app: &str,
        body: &str,
    ) -> Result<(u16, String), ProxyError> {
        let socket = self.admin_socket();
        let failed = |source: AdminError| ProxyError::PushFailed {
            app: app.to_string(),
            source,
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("/members/{app}"))
            .header(hyper::header::HOST, "berth")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                body.to_string(),
            )))
            .map_err(|source| failed(AdminError::Request { source }))?;
        tokio::time::timeout(ADMIN_TIMEOUT, exchange(&socket, request))
            .await
            .map_err(|_| {
                failed(AdminError::Timeout {
                    socket: socket.clone(),
                })
            })?
            .map_err(failed)
    }
}

/// How long one admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong talking to nginx's admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the request could not be built: {source}")]
    Request {
        #[source]
        source: hyper::http::Error,
    },
    #[error("the exchange with {} failed: {source}", socket.display())]
    Http {
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },
    #[error("no answer from {} within 2 s", socket.display())]
    Timeout { socket: PathBuf },
    #[error("nginx answered {status} with {body:?}")]
    Unexpected { status: u16, body: String },
}

/// Sends `request` on a new connection to the admin socket; the answer's status and body.
async fn exchange(
    socket: &Path,
    request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<(u16, String), AdminError> {
    use http_body_util::BodyExt as _;
    let http = |source| AdminError::Http {
        socket: socket.to_path_buf(),
        source,
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| AdminError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http)?;
    // The connection is driven here, beside the request: it ends once the request is
    // answered and `sender` is dropped (no task is spawned).
    let send = async move {
        let answer = sender.send_request(request).await.map_err(http)?;
        let status = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.map_err(http)?.to_bytes();
        drop(sender);
        Ok::<_, AdminError>((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    let (answer, _) = tokio::join!(send, connection);
    answer
}

fn unexpected(app: &str, status: u16, body: &str) -> ProxyError {
    ProxyError::PushFailed {
        app: app.to_string(),
        source: AdminError::Unexpected {
            status,
            body: truncate(body),
        },
    }
}

async fn write_if_changed(path: &Path, text: &str) -> Result<bool, ProxyError> {
    if super::files::read_optional(path).await?.as_deref() == Some(text) {
        return Ok(false);
    }
    write_atomically(path, text).await?;
    set_mode(path, 0o644).await;
    Ok(true)
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}
