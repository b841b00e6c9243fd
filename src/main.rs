//! The `berth` command line: validate, plan, apply --once, serve (with the status API),
//! status, schema; logging (human or JSON lines on stderr, always redacted). The only place
//! that uses anyhow; everything it does is a thin call into the library.

use anyhow::{bail, Context, Result};
use berth::api::{self, client::Client, ApiConfig};
use berth::autoscale::policy::PolicyConfig;
use berth::autoscale::AutoscaleSettings;
use berth::daemon::{self, Daemon};
use berth::plan::display;
use berth::plan::prune::DeletionBudget;
use berth::proxy::Proxy;
use berth::reconcile::{self, Controller, ImageSettings, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::source::{self, GitConfig, Source, SourceConfig};
use berth::spec;
use berth::store::{HistoryLimits, Store};
use clap::Parser;
use cli::{ApiServe, AutoscaleArgs, Cli, Command, Common, LogFormat, Output, ProxyModeArg};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    init_logging(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            match log_format {
                LogFormat::Human => {
                    eprintln!("error: {}", berth::redact::redact_text(&format!("{e:#}")))
                }
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

/// stderr, with `NAME=value` of secret-looking names redacted (`api::redact`). The fmt
/// layer writes each log line in one call, so a line is never split across writes.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(berth::redact::redact_text(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

async fn run(command: Command) -> Result<u8> {
    match command {
        Command::Validate { paths, output } => validate(&paths, output),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&spec::json_schema())?);
            Ok(0)
        }
        Command::Plan {
            common,
            observed_empty,
            output,
        } => plan(&common, observed_empty, output).await,
        Command::Apply { common, .. } => {
            let ctl = controller(&common, Duration::from_secs(5)).await?;
            let report = daemon::apply_once(&ctl).await?;
            if let Some(last) = ctl.last_pass() {
                print!("{}", display::render_text(&last.plan));
            }
            println!(
                "applied {} steps, {} failed, {} nginx reloads",
                report.steps_applied, report.steps_failed, report.reloads
            );
            Ok(if report.steps_failed > 0 { 1 } else { 0 })
        }
        Command::Serve {
            common,
            interval,
            webhook_listen,
            webhook_secret_env,
            shutdown_timeout,
            api,
            autoscale,
        } => {
            serve(
                &common,
                interval,
                webhook_listen,
                &webhook_secret_env,
                Duration::from_secs(shutdown_timeout),
                &api,
                &autoscale,
            )
            .await
        }
        Command::Status {
            app,
            api,
            api_token_file,
            events,
            output,
        } => {
            status(
                app.as_deref(),
                &api,
                api_token_file.as_deref(),
                events,
                output,
            )
            .await
        }
    }
}

async fn serve(
    common: &Common,
    interval: u64,
    webhook_listen: Option<String>,
    webhook_secret_env: &str,
    shutdown_timeout: Duration,
    api_opts: &ApiServe,
    autoscale: &AutoscaleArgs,
) -> Result<u8> {
    // Check the webhook's settings before touching anything.
    let secret = match &webhook_listen {
        Some(_) if common.git.is_none() => {
            bail!("--webhook-listen needs a --git source (a --dir source is watched already)")
        }
        Some(_) => Some(std::env::var(webhook_secret_env).with_context(|| {
            format!("--webhook-listen needs the shared secret in ${webhook_secret_env}")
        })?),
        None => None,
    };
    let ctl = controller(common, Duration::from_secs(interval.max(1))).await?;
    let autoscale = if autoscale.no_autoscale {
        None
    } else {
        if ctl.proxy().access_log().is_none() && autoscale.autoscale_access_log.is_none() {
            tracing::warn!(
                "autoscaler: no nginx access log in production mode, so no request \
                 rate or latency (CPU and memory only); pass --autoscale-access-log"
            );
        }
        Some(AutoscaleSettings {
            tick: Duration::from_secs_f64(autoscale.autoscale_tick),
            policy: PolicyConfig {
                scale_in_stabilization_seconds: autoscale.autoscale_stabilization,
                ..PolicyConfig::default()
            },
            access_log: autoscale.autoscale_access_log.clone(),
        })
    };
    let webhook: Option<daemon::Task> = match (webhook_listen, secret) {
        (Some(addr), Some(secret)) => {
            let (bound, task) =
                source::webhook::bind(&addr, secret.into_bytes(), ctl.source().clone()).await?;
            tracing::info!(addr = %bound, "webhook listener: POST {}", source::webhook::PATH);
            Some(Box::pin(task))
        }
        _ => None,
    };
    let api = if api_opts.api_listen == "off" {
        None
    } else {
        let token = api::load_token(
            std::env::var(api::TOKEN_ENV).ok(),
            api_opts.api_token_file.as_deref(),
        )?;
        let listener = api::bind(&api_opts.api_listen).await?;
        tracing::info!(
            listen = %api_opts.api_listen,
            token = token.is_some(),
            "status api listening (read-only)"
        );
        Some((listener, api::router(ctl.clone(), &ApiConfig { token })))
    };
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("stopping: the pass in flight finishes first");
            shutdown.cancel();
        }
    });
    tracing::info!(
        source = %ctl.settings().source.describe(),
        listen = %common.listen,
        "berth serving; Ctrl-C or SIGTERM stops the loop and leaves containers running"
    );
    daemon::run(
        Daemon {
            controller: ctl,
            autoscale,
            api,
            webhook,
            shutdown_timeout,
        },
        shutdown,
    )
    .await?;
    Ok(0)
}

async fn status(
    app: Option<&str>,
    address: &str,
    token_file: Option<&Path>,
    events: u32,
    output: Output,
) -> Result<u8> {
    let token = api::load_token(std::env::var(api::TOKEN_ENV).ok(), token_file)?;
    let client = Client::new(address, token, Duration::from_secs(10));
    tracing::debug!(api = client.address(), "reading the status api");
    let now = reconcile::now_ms();
    let text = match app {
        None => {
            let list = client.get("/api/v1/apps").await?;
            match output {
                Output::Json => serde_json::to_string_pretty(&list)?,
                Output::Text => api::table::apps(&list, now),
            }
        }
        Some(name) => {
            let path = format!("/api/v1/apps/{}", api::client::encode(name));
            let detail = client.get(&path).await?;
            let recent = client
                .get(&format!("{path}/events?limit={}", events.clamp(1, 1000)))
                .await?;
            match output {
                Output::Json => serde_json::to_string_pretty(&serde_json::json!({
                    "app": detail,
                    "events": recent["events"],
                }))?,
                Output::Text => api::table::app(&detail, &recent, now),
            }
        }
    };
    println!("{}", text.trim_end());
    Ok(0)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

fn validate(paths: &[PathBuf], output: Output) -> Result<u8> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for root in paths {
        let snapshot = source::dir::read_snapshot(root)?;
        let base: &Path = if root.is_dir() {
            root
        } else {
            root.parent().unwrap_or(Path::new(""))
        };
        files.extend(
            snapshot
                .files
                .into_iter()
                .map(|(rel, text)| (base.join(rel), text)),
        );
        unreadable.extend(
            snapshot
                .unreadable
                .into_iter()
                .map(|entry| source::UnreadableEntry {
                    path: base.join(entry.path),
                    reason: entry.reason,
                }),
        );
    }
    let loaded = spec::load_source(&files, &unreadable);
    let valid = loaded.issues.is_empty() && loaded.unreadable_files.is_empty();
    match output {
        Output::Json => {
            let json = serde_json::json!({
                "valid": valid,
                "files": files.len(),
                "apps": loaded.apps.keys().collect::<Vec<_>>(),
                "issues": loaded.issues,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Text => {
            for issue in &loaded.issues {
                println!("{issue}");
            }
            if valid {
                println!(
                    "ok: {} apps in {} files are valid",
                    loaded.apps.len(),
                    files.len()
                );
            } else {
                println!("{} problems found", loaded.issues.len());
            }
        }
    }
    Ok(if valid { 0 } else { 1 })
}

async fn plan(common: &Common, observed_empty: bool, output: Output) -> Result<u8> {
    let (plan, issues) = if observed_empty {
        let snapshot = Source::new(source_config(common)?).snapshot().await?;
        let loaded = spec::load_source(&snapshot.files, &snapshot.unreadable);
        let state = reconcile::desired_from(
            &loaded,
            &snapshot.revision,
            &common.listen,
            &Default::default(),
            &Default::default(),
        );
        let mut desired = state.desired;
        if common.nginx_conf_dir.is_none() && common.proxy_mode != Some(ProxyModeArg::Reload) {
            desired.upstreams = berth::proxy::Upstreams::Dynamic;
        }
        let plan = berth::plan::plan(
            &desired,
            &Default::default(),
            &Default::default(),
            reconcile::now_ms(),
        );
        (plan, loaded.issues)
    } else {
        let ctl = controller(common, Duration::from_secs(5)).await?;
        // plan_only never fetches: sync a git source first (a failed sync falls back to
        // the mirror on disk, or reports why there is nothing to plan from).
        ctl.source().snapshot().await?;
        reconcile::plan_only(&ctl).await?
    };
    for issue in &issues {
        eprintln!("warning: {issue}");
    }
    match output {
        Output::Text => print!("{}", display::render_text(&plan)),
        Output::Json => println!("{}", display::render_json(&plan)),
    }
    Ok(if plan.has_changes() { 2 } else { 0 })
}

/// The spec source from --dir or --git (a git mirror lives in `<state-dir>/git`).
fn source_config(common: &Common) -> Result<SourceConfig> {
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
    let mut git = GitConfig::new(url.clone(), state_dir.join("git"));
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
    Ok(SourceConfig::Git(git))
}

async fn controller(
    common: &Common,
    interval: Duration,
) -> Result<std::sync::Arc<Controller<DockerRuntime>>> {
    let source = source_config(common)?;
    std::fs::create_dir_all(&common.state_dir)
        .with_context(|| format!("cannot create state dir {}", common.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&common.state_dir)?;
    let store = Store::open(&state_dir.join("berth.db")).await?;
    let runtime = DockerRuntime::connect(common.instance.clone()).await?;
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
    };
    Ok(Controller::new(runtime, proxy, store, settings))
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
