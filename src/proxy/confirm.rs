//! Reload and its confirmation: `nginx -s reload` returns before the new workers serve, so
//! in private mode a reload publishes a generation number at `/_berth/generation` and waits
//! (at most 3 s) until nginx answers with it and no old worker still holds the listening
//! socket. Must not touch: the per-app files (files.rs), starting nginx (process.rs).

use super::files::write_atomically;
use super::process::{
    holds_any_socket, listen_port, listening_inodes, private_args, run_command, split_command,
    workers_of,
};
use super::{Proxy, ProxyError, ProxyMode};
use std::path::Path;
use std::time::Duration;

impl Proxy {
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
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(1))
                .build()
                .map_err(|source| ProxyError::ConfirmClient { source })?;
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            let expected = generation.to_string();
            loop {
                let answered = get_body(&client, &address, "/_berth/generation")
                    .await
                    .as_deref()
                    == Some(&expected);
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
}

pub(super) async fn write_generation(path: &Path, generation: u64) -> Result<(), ProxyError> {
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

/// GET over loopback HTTP; the body when the status is 200. A fresh connection each time
/// (no pool): after a reload only a new connection reaches a new worker.
async fn get_body(client: &reqwest::Client, address: &str, path: &str) -> Option<String> {
    let answer = client
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .ok()?;
    if answer.status() != reqwest::StatusCode::OK {
        return None;
    }
    answer.text().await.ok()
}
