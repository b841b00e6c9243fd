//! The `berth` command line: validate, plan, apply --once, serve (with the status API;
//! SIGHUP re-executes it with the re-read config), status, schema, volumes, doctor, config show,
//! completions, man; the config file layered under the flags (config.rs); logging (human
//! or JSON lines on stderr, always redacted). The only place that uses anyhow; everything
//! it does is a thin call into the library.

use anyhow::{bail, Context, Result};
use berth::api::{self, client::Client, ApiConfig};
use berth::autoscale::policy::PolicyConfig;
use berth::autoscale::AutoscaleSettings;
use berth::daemon::{self, Daemon};
use berth::leader::Leadership;
use berth::plan::display;
use berth::plan::prune::DeletionBudget;
use berth::proxy::Proxy;
use berth::reconcile::tls::{parse_allowed_dir, TlsSettings};
use berth::reconcile::{self, Controller, ImageSettings, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::swarm::SwarmRuntime;
use berth::runtime::ContainerObserver;
use berth::runtime::ContainerRuntime;
use berth::source::{self, GitConfig, Source, SourceConfig};
use berth::spec;
use berth::store::{Dialect, HistoryLimits, Store, StoreUrl};
use clap::{CommandFactory, FromArgMatches};
use cli::{
    BackendArg, Cli, Command, Common, ConfigCommand, LogFormat, Output, ProxyModeArg, ServeArgs,
    VolumesCommand,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod cli;
mod config;
mod doctor;

fn main() -> ExitCode {
    // The command line with the config file layered under it (flag > env > file > default).
    let layered = match config::layer(Cli::command(), std::env::args_os().collect()) {
        Ok(layered) => layered,
        Err(config::ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let cli = match Cli::from_arg_matches(&layered.matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let log_format = cli.log_format;
    init_logging(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command, &layered)) {
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

async fn run(command: Command, layered: &config::Layered) -> Result<u8> {
    match command {
        Command::Doctor { serve, output } => doctor::run(&serve, output).await,
        Command::Config {
            command: ConfigCommand::Show { output, .. },
        } => {
            match output {
                Output::Text => print!(
                    "{}",
                    config::render_text(layered.file.as_deref(), &layered.effective)
                ),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "file": layered.file,
                        "keys": layered.effective,
                    }))?
                ),
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut script);
            write_stdout(&script)?;
            Ok(0)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            Ok(0)
        }
        Command::Validate {
            paths,
            output,
            allow_host_path,
            allow_registry,
            allow_tls_dir,
        } => validate(
            &paths,
            output,
            spec::SpecPolicy {
                allow_host_paths: allow_host_path,
                allow_registries: allow_registry,
            },
            allow_tls_dir,
        ),
        Command::Volumes { command } => volumes(command).await,
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&spec::json_schema())?);
            Ok(0)
        }
        Command::Plan {
            common,
            observed_empty,
            output,
        } => plan(&common, observed_empty, output).await,
        Command::Apply { common, .. } => match common.backend {
            BackendArg::Docker => {
                let runtime = DockerRuntime::connect(common.instance.clone()).await?;
                apply(
                    controller(&common, Duration::from_secs(5), runtime).await?,
                    lease_settings(&common)?,
                )
                .await
            }
            BackendArg::Swarm => {
                let runtime = SwarmRuntime::connect(common.instance.clone()).await?;
                apply(
                    controller(&common, Duration::from_secs(5), runtime).await?,
                    lease_settings(&common)?,
                )
                .await
            }
        },
        Command::Serve { serve: args } => {
            match &layered.file {
                Some(file) => tracing::info!(file = %file.display(), "config file read"),
                None => tracing::info!("no config file (flags, env and defaults only)"),
            }
            let reload = match args.common.backend {
                BackendArg::Docker => {
                    let runtime = DockerRuntime::connect(args.common.instance.clone()).await?;
                    serve(&args, runtime).await?
                }
                BackendArg::Swarm => {
                    let runtime = SwarmRuntime::connect(args.common.instance.clone()).await?;
                    serve(&args, runtime).await?
                }
            };
            if reload {
                // SIGHUP: the new config was checked; start again in place (same pid, so
                // systemd keeps tracking it). nginx and the containers kept running.
                return Err(reexec());
            }
            Ok(0)
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
        Command::Logs {
            app,
            follow,
            tail,
            since,
            api,
            api_token_file,
        } => {
            logs(
                &app,
                follow,
                tail,
                since.as_deref(),
                &api,
                api_token_file.as_deref(),
            )
            .await
        }
    }
}

/// `berth apply --once`: one pass (and the pulls it asked for), the plan it applied.
async fn apply<R: ContainerRuntime>(
    ctl: std::sync::Arc<Controller<R>>,
    lease: berth::leader::LeaseSettings,
) -> Result<u8> {
    // With a shared store, `apply --once` acts only if it can take the lease.
    berth::leader::take_once(ctl.store(), ctl.leadership(), &lease).await?;
    let renewals = ctl.leadership().is_leased().then(|| {
        tokio::spawn(berth::leader::run(
            ctl.store().clone(),
            ctl.leadership().clone(),
            lease,
            ctl.waker(),
        ))
    });
    let report = daemon::apply_once(&ctl).await;
    if let Some(renewals) = renewals {
        renewals.abort();
    }
    berth::leader::release(ctl.store(), ctl.leadership()).await;
    let report = report?;
    if let Some(last) = ctl.last_pass() {
        print!("{}", display::render_text(&last.plan));
    }
    println!(
        "applied {} steps, {} failed, {} nginx reloads",
        report.steps_applied, report.steps_failed, report.reloads
    );
    Ok(if report.steps_failed > 0 { 1 } else { 0 })
}

/// `berth logs`: streams the API's text answer to stdout as it arrives.
async fn logs(
    app: &str,
    follow: bool,
    tail: u32,
    since: Option<&str>,
    address: &str,
    token_file: Option<&Path>,
) -> Result<u8> {
    use std::io::Write;
    let token = api::load_token(std::env::var(api::TOKEN_ENV).ok(), token_file)?;
    let client = Client::new(address, token, Duration::from_secs(10));
    let mut path = format!("/api/v1/apps/{}/logs?tail={tail}", api::client::encode(app));
    if let Some(since) = since {
        path.push_str(&format!("&since={}", api::client::encode(since)));
    }
    if follow {
        path.push_str("&follow=true");
    }
    let stdout = std::io::stdout();
    client
        .stream(&path, follow, |chunk| {
            let mut out = stdout.lock();
            out.write_all(chunk)?;
            out.flush()
        })
        .await?;
    Ok(0)
}

/// Serves until SIGTERM/Ctrl-C (false) or a SIGHUP with a valid config (true: re-exec).
async fn serve<R: ContainerRuntime>(args: &ServeArgs, runtime: R) -> Result<bool> {
    let common = &args.common;
    let interval = args.interval;
    let webhook_listen = args.webhook_listen.clone();
    let webhook_secret_env = args.webhook_secret_env.as_str();
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let api_opts = &args.api;
    let autoscale = &args.autoscale;
    let notify_config = (!args.notify.notify_url.is_empty())
        .then(|| {
            berth::notify::NotifyConfig::new(
                &args.notify.notify_url,
                &args.notify.notify_on,
                std::env::var("BERTH_NOTIFY_SECRET").ok(),
            )
        })
        .transpose()?;
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
    let lease = lease_settings(common)?;
    let ctl = controller(common, Duration::from_secs(interval.max(1)), runtime).await?;
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
    let notifier: Option<daemon::Task> = match notify_config {
        Some(config) => {
            tracing::info!(?config, "notifications on");
            Some(Box::pin(berth::notify::start(ctl.store(), config)?))
        }
        None => None,
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
    let reload = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = tokio::spawn({
        let shutdown = shutdown.clone();
        let reload_flag = reload.clone();
        async move {
            let reload = shutdown_signal().await;
            reload_flag.store(reload, std::sync::atomic::Ordering::SeqCst);
            if reload {
                tracing::info!("reloading: the pass in flight finishes, then berth starts again with the new config");
                berth::service::notify_reloading();
            } else {
                tracing::info!("stopping: the pass in flight finishes first");
                berth::service::notify_stopping();
            }
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
            notifier,
            shutdown_timeout,
            lease,
        },
        shutdown,
    )
    .await?;
    stop.abort();
    Ok(reload.load(std::sync::atomic::Ordering::SeqCst))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Replaces this process with the same binary and arguments (the config file is read
/// again). Returns only when exec failed.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .exec();
    anyhow::anyhow!("cannot restart berth for the reload: {error}; start it again")
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
                Output::Text => {
                    // HA (a shared PostgreSQL store): who leads, above the apps. An older
                    // berth without the route, or a SQLite store (epoch 0), shows nothing.
                    let leader = client.get("/api/v1/leader").await.ok();
                    let head = leader
                        .filter(|l| l["epoch"].as_i64().unwrap_or(0) > 0)
                        .map(|l| {
                            format!(
                                "leader: {} (epoch {}; this controller is {})\n",
                                l["leader"].as_str().unwrap_or("?"),
                                l["epoch"],
                                if l["is_leader"].as_bool() == Some(true) {
                                    "the leader"
                                } else {
                                    "a follower"
                                }
                            )
                        })
                        .unwrap_or_default();
                    head + &api::table::apps(&list, now)
                }
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

/// Waits for SIGTERM or Ctrl-C (false), or for a SIGHUP whose config file is valid (true).
/// A SIGHUP with a broken config file is logged and berth keeps running as it is.
async fn shutdown_signal() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return false;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return false,
            _ = term.recv() => return false,
            _ = hup.recv() => {
                match config::layer(Cli::command(), std::env::args_os().collect()) {
                    Ok(_) => return true,
                    Err(e) => {
                        tracing::error!("reload refused, berth keeps its current config: {}", berth::redact::redact_text(&e.to_string()));
                        berth::service::notify_ready();
                    }
                }
            }
        }
    }
}

/// `berth volumes ls|prune`.
async fn volumes(command: VolumesCommand) -> Result<u8> {
    match command {
        VolumesCommand::Ls {
            app,
            instance,
            output,
        } => {
            let runtime = DockerRuntime::connect(instance).await?;
            let list = runtime.volumes(app.as_deref()).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Text => {
                    println!("{:<40} {:<24} CREATED", "VOLUME", "APP");
                    for v in &list {
                        println!("{:<40} {:<24} {}", v.name, v.app, v.created);
                    }
                }
            }
            Ok(0)
        }
        VolumesCommand::Prune { app, yes, common } => {
            let snapshot = Source::new(source_config(&common)?).snapshot().await?;
            let policy = spec_policy(&common);
            let loaded = spec::load_source_with(&snapshot.files, &snapshot.unreadable, &policy);
            let runtime = DockerRuntime::connect(common.instance.clone()).await?;
            let names = reconcile::volumes::prunable_volumes(&runtime, &loaded, &app).await?;
            if names.is_empty() {
                println!("app {app} has no volumes");
                return Ok(0);
            }
            if !yes {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    bail!(
                        "refusing to delete {} without a terminal to ask on: pass --yes",
                        names.join(", ")
                    );
                }
                print!("delete {} (their data is lost)? [y/N] ", names.join(", "));
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    println!("nothing deleted");
                    return Ok(1);
                }
            }
            reconcile::volumes::prune_volumes(&runtime, &names).await?;
            for name in &names {
                println!("deleted volume {name}");
            }
            Ok(0)
        }
    }
}

fn spec_policy(common: &Common) -> spec::SpecPolicy {
    spec::SpecPolicy {
        allow_host_paths: common.allow_host_path.clone(),
        allow_registries: common.allow_registry.clone(),
    }
}

fn validate(
    paths: &[PathBuf],
    output: Output,
    policy: spec::SpecPolicy,
    allow_tls_dirs: Vec<PathBuf>,
) -> Result<u8> {
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
    let loaded = spec::load_source_with(&files, &unreadable, &policy);
    // route.tls files are read and checked as a pass checks them (a failure is the app's
    // issue, with the line of its `tls` field).
    let tls = TlsSettings {
        allowed_dirs: allow_tls_dirs,
        ..TlsSettings::default()
    };
    let loaded =
        match berth::reconcile::tls::check_routes(&loaded, &files, &tls, reconcile::now_ms()) {
            Some((checked, _)) => checked,
            None => loaded,
        };
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
        let loaded =
            spec::load_source_with(&snapshot.files, &snapshot.unreadable, &spec_policy(common));
        // The TLS files are checked as a pass checks them (no copies are written).
        let tls = TlsSettings {
            listen_tls: common.listen_tls.clone(),
            allowed_dirs: tls_dirs(common)?,
            copies: None,
        };
        let loaded = match berth::reconcile::tls::check_routes(
            &loaded,
            &snapshot.files,
            &tls,
            reconcile::now_ms(),
        ) {
            Some((checked, _)) => checked,
            None => loaded,
        };
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
        let plan = match common.backend {
            BackendArg::Docker => berth::plan::plan(
                &desired,
                &Default::default(),
                &Default::default(),
                reconcile::now_ms(),
            ),
            BackendArg::Swarm => berth::plan::swarm::plan(
                &desired,
                &Default::default(),
                &Default::default(),
                &Default::default(),
                reconcile::now_ms(),
            ),
        };
        (plan, loaded.issues)
    } else {
        match common.backend {
            BackendArg::Docker => {
                let runtime = DockerRuntime::connect(common.instance.clone()).await?;
                plan_now(controller(common, Duration::from_secs(5), runtime).await?).await?
            }
            BackendArg::Swarm => {
                let runtime = SwarmRuntime::connect(common.instance.clone()).await?;
                plan_now(controller(common, Duration::from_secs(5), runtime).await?).await?
            }
        }
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

/// `--allow-tls-dir`, each checked by `tls::parse_allowed_dir`.
fn tls_dirs(common: &Common) -> Result<Vec<PathBuf>> {
    common
        .allow_tls_dir
        .iter()
        .map(|dir| parse_allowed_dir("--allow-tls-dir", dir))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))
}

/// What the next pass would do (the store, the engine and nginx are only read).
async fn plan_now<R: ContainerRuntime>(
    ctl: std::sync::Arc<Controller<R>>,
) -> Result<(berth::plan::Plan, Vec<spec::SpecIssue>)> {
    // plan_only never fetches: sync a git source first (a failed sync falls back to the
    // mirror on disk, or reports why there is nothing to plan from).
    ctl.source().snapshot().await?;
    Ok(reconcile::plan_only(&ctl).await?)
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
    let git = git_config(common, url, &state_dir.join("git"))?;
    Ok(SourceConfig::Git(git))
}

/// The --git source's settings with its mirror under `cache_dir`; checks the files named.
fn git_config(common: &Common, url: &str, cache_dir: &Path) -> Result<GitConfig> {
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

async fn controller<R: ContainerRuntime>(
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
fn lease_settings(common: &Common) -> Result<berth::leader::LeaseSettings> {
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
