//! The shared builders: what the flags of `Common` become for the library (the spec source
//! and its git settings, the store URL, the lease, the proxy and its mode, the host env, the
//! spec policy, the TLS dirs) and the `Controller` made of them, for `serve`, `apply --once`,
//! `plan`, `volumes prune` and `doctor`. Checks what would fail later (a missing spec dir, a
//! known_hosts or CA file that is not there, a lease renewed no faster than it runs out).
//! Must not touch: the flags (cli.rs), what a command does with what it builds (commands.rs,
//! serve.rs), the engine (only `proxy_mode` runs nginx, to ask for its modules).

use crate::cli::{Common, ProxyModeArg};
use anyhow::{bail, Context, Result};
use berth::leader::Leadership;
use berth::plan::prune::DeletionBudget;
use berth::proxy::Proxy;
use berth::reconcile::tls::{parse_allowed_dir, TlsSettings};
use berth::reconcile::{Controller, ImageSettings, Settings};
use berth::runtime::ContainerRuntime;
use berth::source::{self, GitConfig, SourceConfig};
use berth::spec;
use berth::store::{Dialect, HistoryLimits, Store, StoreUrl};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) fn spec_policy(common: &Common) -> spec::SpecPolicy {
    spec::SpecPolicy {
        allow_host_paths: common.allow_host_path.clone(),
        allow_registries: common.allow_registry.clone(),
    }
}

/// `--allow-tls-dir`, each checked by `tls::parse_allowed_dir`.
pub(crate) fn tls_dirs(common: &Common) -> Result<Vec<PathBuf>> {
    common
        .allow_tls_dir
        .iter()
        .map(|dir| parse_allowed_dir("--allow-tls-dir", dir))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The spec source from --dir or --git (a git mirror lives in `<state-dir>/git`).
pub(crate) fn source_config(common: &Common) -> Result<SourceConfig> {
    let Some(url) = &common.git else {
        let dir = common
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("examples/apps"));
        if !dir.exists() {
            bail!(
                "spec directory {} does not exist: pass --dir PATH or --git URL",
                dir.display()
            );
        }
        return Ok(SourceConfig::Dir(dir));
    };
    std::fs::create_dir_all(&common.state_dir)
        .with_context(|| format!("cannot create state dir {}", common.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&common.state_dir)?;
    let git = git_config(common, url, &state_dir.join("git"))?;
    Ok(SourceConfig::Git(git))
}

/// The --git source's settings with its mirror under `cache_dir`; checks the files named.
pub(crate) fn git_config(common: &Common, url: &str, cache_dir: &Path) -> Result<GitConfig> {
    let mut git = GitConfig::new(url.to_string(), cache_dir.to_path_buf());
    git.branch = common.branch.clone();
    git.path = common.path.clone().unwrap_or_default();
    git.poll = Duration::from_secs(common.poll.max(1));
    git.token_env = Some(common.git_token_env.clone());
    git.ssh_key = common.git_ssh_key.clone();
    git.known_hosts = common.git_known_hosts.clone();
    if let Some(path) = &git.known_hosts {
        if !path.is_file() {
            bail!(
                "--git-known-hosts {} is not a file: pass the known_hosts file that lists the server's host key",
                path.display()
            );
        }
    }
    if let Some(path) = &common.git_ca_file {
        // Checked now so a wrong path fails at start, not at the first fetch.
        if let Err(refusal) = source::trust::load_ca_file(path) {
            bail!("{refusal}");
        }
    }
    git.ca_file = common.git_ca_file.clone();
    Ok(git)
}

pub(crate) async fn controller<R: ContainerRuntime>(
    common: &Common,
    interval: Duration,
    runtime: R,
) -> Result<std::sync::Arc<Controller<R>>> {
    let source = source_config(common)?;
    std::fs::create_dir_all(&common.state_dir)
        .with_context(|| format!("cannot create state dir {}", common.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&common.state_dir)?;
    let store = Store::connect(&store_url(common, &state_dir)?).await?;
    let id = common
        .controller_id
        .clone()
        .unwrap_or_else(berth::leader::default_id);
    let leadership = match store.dialect() {
        Dialect::Sqlite => Leadership::single(&id),
        Dialect::Postgres => Leadership::leased(&id, &store),
    };
    let words = |command: &str| command.split_whitespace().map(str::to_string).collect();
    let proxy = match &common.nginx_conf_dir {
        Some(conf_dir) => Proxy::external(
            conf_dir.clone(),
            common.listen.clone(),
            words(&common.nginx_test_command),
            words(&common.nginx_reload_command),
        ),
        None => Proxy::private(
            state_dir.join("nginx"),
            common.listen.clone(),
            common.nginx_binary.clone(),
        ),
    };
    let proxy = proxy_mode(common, proxy).await?;
    let settings = Settings {
        source,
        interval,
        network: common.network.clone(),
        parallel_apps: common.parallel,
        host_env: host_env(common.host_env.as_deref())?,
        stop_timeout_seconds: common.stop_timeout,
        deletion_budget: DeletionBudget {
            max_apps: common.max_prune,
            max_percent: common.max_prune_percent,
            allow_mass_prune: common.allow_mass_prune,
        },
        history: HistoryLimits {
            max_age_ms: i64::from(common.history_days) * 24 * 3600 * 1000,
            max_rows: common.history_rows,
        },
        images: ImageSettings {
            docker_config: common
                .docker_config
                .clone()
                .unwrap_or_else(berth::runtime::credentials::default_config_dir),
            poll: Duration::from_secs(common.image_poll),
        },
        spec_policy: spec_policy(common),
        tls: TlsSettings {
            listen_tls: common.listen_tls.clone(),
            allowed_dirs: tls_dirs(common)?,
            copies: Some(state_dir.join("tls")),
        },
    };
    Ok(Controller::with_leadership(
        runtime, proxy, store, settings, leadership,
    ))
}

/// `--store`, or the SQLite file in the state directory.
fn store_url(common: &Common, state_dir: &Path) -> Result<StoreUrl> {
    Ok(match &common.store {
        Some(url) => StoreUrl::parse(url)?,
        None => StoreUrl::default_in(state_dir),
    })
}

/// `--lease-duration` and `--lease-renew`.
pub(crate) fn lease_settings(common: &Common) -> Result<berth::leader::LeaseSettings> {
    let duration = Duration::from_secs_f64(common.lease_duration);
    let renew = Duration::from_secs_f64(common.lease_renew);
    if renew >= duration {
        bail!(
            "--lease-renew ({}s) must be shorter than --lease-duration ({}s): a leader renews \
             several times within one lease",
            common.lease_renew,
            common.lease_duration
        );
    }
    Ok(berth::leader::LeaseSettings { duration, renew })
}

/// `--proxy-mode`: dynamic upstreams when asked (the Lua module must load) or, by
/// default, when the private nginx can load it; reload otherwise, with a warning.
async fn proxy_mode(common: &Common, proxy: Proxy) -> Result<Proxy> {
    let external = common.nginx_conf_dir.is_some();
    match common.proxy_mode {
        Some(ProxyModeArg::Reload) => Ok(proxy),
        // The operator's nginx loads the module itself (README: production mode).
        Some(ProxyModeArg::Dynamic) if external => Ok(proxy.with_dynamic_upstreams(Vec::new())),
        Some(ProxyModeArg::Dynamic) => {
            let modules = berth::proxy::lua_modules(&common.nginx_binary)
                .await
                .map_err(|e| anyhow::anyhow!("--proxy-mode dynamic: {e}"))?;
            Ok(proxy.with_dynamic_upstreams(modules))
        }
        None if external => Ok(proxy),
        None => match berth::proxy::lua_modules(&common.nginx_binary).await {
            Ok(modules) => Ok(proxy.with_dynamic_upstreams(modules)),
            Err(e) => {
                tracing::warn!(
                    "proxy mode reload: every upstream change reloads nginx, which closes idle keep-alive connections ({e})"
                );
                Ok(proxy)
            }
        },
    }
}

fn host_env(file: Option<&Path>) -> Result<BTreeMap<String, String>> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read host env file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("{}:{}: expected KEY=VALUE", file.display(), n + 1);
            };
            env.insert(key.trim().to_string(), value.to_string());
        }
    }
    Ok(env)
}
