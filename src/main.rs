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
use berth::reconcile::{self, Controller, Settings};
use berth::runtime::docker::DockerRuntime;
use berth::source::{self, GitConfig, Source, SourceConfig};
use berth::spec;
use berth::store::{HistoryLimits, Store};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Declarative reconciler for one Docker host: App specs in, containers behind nginx out"
)]
struct Cli {
    /// Log format on stderr: human-readable lines, or one JSON object per line
    /// (timestamp, level, fields, target, spans). Secrets are redacted in both.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check spec files or directories; lists every problem with file:line:column and field.
    /// Exit 0 when all are valid, 1 otherwise.
    Validate {
        /// Spec files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show what the next pass would do. Exit 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        common: Common,
        /// Plan against an empty host (no Docker, no nginx, no store needed).
        #[arg(long)]
        observed_empty: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run exactly one reconcile pass and exit (0: converged or nothing to do, 1: errors).
    Apply {
        #[command(flatten)]
        common: Common,
        /// Required: one pass, then exit (continuous mode is `berth serve`).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Reconcile continuously until SIGTERM/Ctrl-C; containers and nginx keep running after.
    /// A --dir source is watched (a burst of saves gives one pass); a --git source is polled.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Seconds between timer-driven passes.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Listen for push webhooks (POST /hooks/git, HMAC-SHA256 signed as GitHub or Gitea
        /// send it) on this address; a valid call polls the git source at once.
        #[arg(long)]
        webhook_listen: Option<String>,
        /// Env var holding the webhook's shared secret (at least 16 bytes).
        #[arg(long, default_value = "BERTH_WEBHOOK_SECRET")]
        webhook_secret_env: String,
        /// Seconds a stop (SIGTERM, Ctrl-C) waits for the pass in flight to finish.
        #[arg(long, default_value_t = 30)]
        shutdown_timeout: u64,
        #[command(flatten)]
        api: ApiServe,
        #[command(flatten)]
        autoscale: AutoscaleArgs,
    },
    /// Show apps (or one app) as the running `berth serve` reports them through its API.
    Status {
        /// One app: its containers, replicas, planned steps and recent events.
        app: Option<String>,
        /// Address of the status API (`--api-listen` of `berth serve`).
        #[arg(long, env = "BERTH_API", default_value = api::DEFAULT_LISTEN)]
        api: String,
        /// File whose first line is the API's bearer token (default: $BERTH_API_TOKEN).
        #[arg(long)]
        api_token_file: Option<PathBuf>,
        /// Recent events shown for one app.
        #[arg(long, default_value_t = 10)]
        events: u32,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the JSON Schema of the App spec (for editors).
    Schema,
}

/// The read-only status API next to the loop.
#[derive(Args, Clone)]
struct ApiServe {
    /// Address of the read-only status API and /metrics; `off` disables it.
    #[arg(long, env = "BERTH_API_LISTEN", default_value = api::DEFAULT_LISTEN)]
    api_listen: String,
    /// File whose first line is the bearer token every API route then requires
    /// (default: $BERTH_API_TOKEN; neither set: no token).
    #[arg(long)]
    api_token_file: Option<PathBuf>,
}

/// The autoscaler (apps with `scaling.policy.mode: auto`).
#[derive(Args, Clone)]
struct AutoscaleArgs {
    /// Seconds between autoscaler ticks (fractions allowed).
    #[arg(long, default_value_t = 15.0, value_parser = positive_seconds)]
    autoscale_tick: f64,
    /// Do not run the autoscaler (overrides already in the store still apply).
    #[arg(long)]
    no_autoscale: bool,
    /// Scale-in stabilization window in seconds [default: each app's windowSeconds].
    #[arg(long)]
    autoscale_stabilization: Option<u32>,
    /// nginx access log in berth's JSON log_format, for production mode (the private
    /// nginx's own log is used by default).
    #[arg(long)]
    autoscale_access_log: Option<PathBuf>,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.1 and 86400"
        )),
    }
}

#[derive(Args, Clone)]
struct Common {
    /// Directory (or file) holding App specs (default examples/apps unless --git is given).
    #[arg(long, conflicts_with = "git")]
    dir: Option<PathBuf>,
    /// Git repository holding App specs: a local path, file://, https:// (token from the
    /// env var named by --git-token-env) or ssh (key from --git-ssh-key).
    #[arg(long, env = "BERTH_GIT")]
    git: Option<String>,
    /// Branch of the --git repository.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Directory (or file) inside the --git repository holding the specs (default: the
    /// repository root).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Seconds between polls of the --git repository.
    #[arg(long, default_value_t = 15)]
    poll: u64,
    /// Env var holding an https token for the --git repository.
    #[arg(long, default_value = source::git::DEFAULT_TOKEN_ENV)]
    git_token_env: String,
    /// Private key (no passphrase) for an ssh --git URL.
    #[arg(long, env = "BERTH_GIT_SSH_KEY")]
    git_ssh_key: Option<PathBuf>,
    /// known_hosts file (OpenSSH format, hashed names allowed) holding the ssh --git
    /// server's host key (default: ~/.ssh/known_hosts when it exists). An unknown or
    /// changed host key is refused.
    #[arg(long, env = "BERTH_GIT_KNOWN_HOSTS")]
    git_known_hosts: Option<PathBuf>,
    /// Extra CA (PEM) trusted for an https --git URL, besides the system CAs (for a Gitea or
    /// GitLab behind a private CA).
    #[arg(long, env = "BERTH_GIT_CA_FILE")]
    git_ca_file: Option<PathBuf>,
    /// Most apps one pass may remove; a pass that would remove more removes none and
    /// records a prune-refused event.
    #[arg(long, default_value_t = 2)]
    max_prune: u32,
    /// Most apps one pass may remove, as a percentage of the apps present.
    #[arg(long, default_value_t = 50)]
    max_prune_percent: u32,
    /// Lift the deletion budget: remove every app that left the source, even all of them.
    #[arg(long, env = "BERTH_ALLOW_MASS_PRUNE")]
    allow_mass_prune: bool,
    /// Where berth keeps its SQLite store and its private nginx.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = ".berth")]
    state_dir: PathBuf,
    /// Address the private nginx listens on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// nginx binary for the private proxy.
    #[arg(long, env = "BERTH_NGINX", default_value = "nginx")]
    nginx_binary: PathBuf,
    /// Production mode: write per-app files into this directory of an nginx you run
    /// (include DIR/*.conf at http level and DIR/*.loc inside your server) instead of
    /// starting berth's private nginx.
    #[arg(long)]
    nginx_conf_dir: Option<PathBuf>,
    /// Production mode: command that checks the config (split on spaces).
    #[arg(long, default_value = "nginx -t")]
    nginx_test_command: String,
    /// Production mode: command that reloads nginx (split on spaces).
    #[arg(long, default_value = "nginx -s reload")]
    nginx_reload_command: String,
    /// Docker network every container joins.
    #[arg(long, default_value = "berth")]
    network: String,
    /// Only manage containers labelled berth.instance=<NAME> (several controllers on one host).
    #[arg(long, env = "BERTH_INSTANCE")]
    instance: Option<String>,
    /// Apps applying their steps at the same time.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// KEY=VALUE file with values for `valueFrom: sdk` env vars (berth's own environment
    /// is used too; the file wins).
    #[arg(long)]
    host_env: Option<PathBuf>,
    /// Seconds a container gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10)]
    stop_timeout: u32,
    /// serve: days of events, scaling decisions and revisions to keep (0: no age limit).
    #[arg(long, default_value_t = 30)]
    history_days: u32,
    /// serve: most rows kept per history table, newest first (0: no row limit).
    #[arg(long, default_value_t = 100_000)]
    history_rows: u64,
}

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
            let report = reconcile::run_pass(&ctl, "apply --once").await?;
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
        let plan = berth::plan::plan(
            &state.desired,
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
    };
    Ok(Controller::new(runtime, proxy, store, settings))
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
